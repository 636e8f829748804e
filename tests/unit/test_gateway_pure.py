"""The gateway's pure parts: tokens, the local table, metrics, advertised URL."""

from __future__ import annotations

import socket

from wsctl.gateway.identity import robot_token, token_ok
from wsctl.gateway.local import LocalConn, LocalConnections, Metrics
from wsctl.gateway.server import Gateway, GatewayConfig
from wsctl.redis.target import Target


def test_tokens_are_per_robot_and_per_secret() -> None:
    token = robot_token("s", "r1")
    assert token_ok("s", "r1", token)
    assert not token_ok("s", "r2", token) and not token_ok("t", "r1", token)
    assert not token_ok("s", "r1", None)


def test_local_table_keeps_the_newest_session_only() -> None:
    table = LocalConnections()
    old, new = LocalConn("r", "c1", sock=None), LocalConn("r", "c2", sock=None)
    assert table.add(old) is None and table.add(new) is old
    assert not table.remove(old) and table.get("r") is new
    assert [c["conn_id"] for c in table.inventory()] == ["c2"]
    assert table.remove(new) and len(table) == 0


def test_metrics_render_as_prometheus_text() -> None:
    metrics = Metrics(messages_delivered=3)
    text = metrics.render("gw-a", connections=2, redis_ok=False)
    assert 'wsctl_gateway_messages_delivered_total{instance_id="gw-a"} 3' in text
    assert 'wsctl_gateway_redis_up{instance_id="gw-a"} 0' in text


def test_wildcard_bind_advertises_the_host_name_or_the_given_url() -> None:
    wildcard = Gateway(GatewayConfig(host="0.0.0.0", port=9000), Target("tcp"))
    assert wildcard.ws_url == f"ws://{socket.gethostname()}:9000"
    proxied = Gateway(GatewayConfig(port=9000, advertise_url="wss://gw.example/"), Target("tcp"))
    assert proxied.ws_url == "wss://gw.example"


def test_the_request_timeout_reaches_the_core_of_both_adapters() -> None:
    """``--request-timeout`` / ``WSCTL_SOCKET_TIMEOUT`` bounds the gateways' Redis calls too."""
    from wsctl.gateway.asgi import Fleet
    from wsctl.gateway.server import Gateway, GatewayConfig
    from wsctl.redis.target import Target

    gw = Gateway(GatewayConfig(instance_id="gw-t", socket_timeout=1.5), Target("tcp"))
    assert gw.core.config.socket_timeout == 1.5
    fleet = Fleet.from_env({"WSCTL_SOCKET_TIMEOUT": "2.5", "SERVER_INSTANCE_ID": "gw-f"})
    assert fleet.core.config.socket_timeout == 2.5
