"""Redis over TLS end to end: a TLS-terminating proxy (tests/tlsproxy.py) with certificates from
a throw-away CA in front of real redis-server processes, a single node and a 3+3 cluster whose
nodes announce the proxies' ports."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.conftest import Backend, TlsSingle, ainvoke, invoke, open_test_store
from tests.fleet import running_fleet, wait_for
from tests.seedlike import seed_store_connection
from wsctl.config import load_settings, tls_env
from wsctl.sandbox.gateways import GatewayProcess


def _one_line_exit_3(res: object, needle: str) -> None:
    code, err = res.code, res.err  # type: ignore[attr-defined]
    assert code == 3, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert needle in err, err


# ------------------------------------------------------------------ single node: happy paths


async def test_gateway_process_over_tls_serves_list_send_doctor_and_reap(
    tls: TlsSingle, tmp_path: Path
) -> None:
    """A real `wsctl gateway` process reaches Redis through TLS with a private CA (given to it
    as WSCTL_TLS_* by tls_env); list, send (pub/sub), doctor and reap work through TLS."""
    backend = tls.backend()
    settings = load_settings(env=backend.env)
    gw = GatewayProcess(
        redis_url=backend.env["WSCTL_REDIS_URL"], instance_id="gw-tls", extra_env=tls_env(settings)
    ).start(tmp_path)
    try:
        async with open_test_store(backend) as store, connect(f"{gw.url}/ws/tls-bot") as robot:
            await wait_for(lambda: store.get("tls-bot"), timeout=10)
            res = await ainvoke(["list", "connections", "-o", "json"], env=backend.env)
            assert res.code == 0, res.err
            rows = json.loads(res.out)
            assert [(r["robot_id"], r["instance_id"]) for r in rows] == [("tls-bot", "gw-tls")]

            res = await ainvoke(["send", "tls-bot", "over tls", "-o", "json"], env=backend.env)
            assert res.code == 0, res.out + res.err
            assert json.loads(res.out)["route"] == ["gw-tls"]
            assert await asyncio.wait_for(robot.recv(), 5) == "over tls"

            res = await ainvoke(["doctor", "-o", "json"], env=backend.env)
            assert res.code == 0, res.out + res.err

            await seed_store_connection(store.client, "gone-bot", "gw-dead", age_s=500)
            res = await ainvoke(["reap", "--no-backup", "-o", "json"], env=backend.env)
            assert res.code == 0, res.err
            assert json.loads(res.out)["reaped"] == 1
            assert await store.get("gone-bot") is None and await store.get("tls-bot")
    finally:
        gw.stop()
    assert gw.proc is not None and gw.proc.returncode == 0


async def test_simulate_through_gateways_on_tls_redis(tls: TlsSingle) -> None:
    backend = tls.backend()
    async with running_fleet(backend.env) as fleet:
        urls = [arg for gw in fleet.values() for arg in ("--gateway", gw.ws_url)]
        res = await ainvoke(
            ["simulate", "--robots", "20", "--duration", "2", *urls, "-o", "json"],
            env=backend.env,
        )
    assert res.code == 0, res.out + res.err
    assert json.loads(res.out)["ok"] is True


async def test_bulk_read_fast_path_runs_on_tls_connections(tls: TlsSingle) -> None:
    """The raw pipelined reader needs a plain asyncio stream under the connection; a TLS
    connection has one too, so bulk reads keep their fast path over TLS."""
    from wsctl.redis.factory import connect, target_from_settings
    from wsctl.redis.internals import bulk_execute

    target = target_from_settings(load_settings(env=tls.env()))
    async with connect(target) as client:
        await client.hset("ws_conn:fast", mapping={"instance_id": "gw-f", "robot_id": "fast"})
        replies = await bulk_execute(
            client, [("ws_conn:fast", ("HGETALL", "ws_conn:fast")), ("x", ("HGETALL", "x"))]
        )
        first = replies[0]  # a flat list (RESP2) or a map (RESP3)
        fields = (
            first if isinstance(first, dict) else dict(zip(first[::2], first[1::2], strict=True))
        )
        assert fields == {"instance_id": "gw-f", "robot_id": "fast"} and not replies[1]
        pool = client.connection_pool  # type: ignore[union-attr]
        conn = await pool.get_connection()
        try:
            assert conn.ssl_context is not None  # really TLS
            assert isinstance(conn._reader, asyncio.StreamReader)  # the fast path's condition
        finally:
            await pool.release(conn)


def test_tls_flag_with_host_and_port_settings(tls: TlsSingle) -> None:
    env = {
        "REDIS_HOST": "localhost",
        "REDIS_PORT": str(tls.port),
        "WSCTL_REDIS_TLS": "true",
        "WSCTL_TLS_CA_CERT": str(tls.pki.ca),  # type: ignore[attr-defined]
    }
    res = invoke(["list", "robots", "-o", "json"], env=env)
    assert res.code == 0 and json.loads(res.out) == [], res.err
    res = invoke(
        ["--tls", "--tls-ca-cert", str(tls.pki.ca), "list", "robots"],  # type: ignore[attr-defined]
        env={"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(tls.port)},
    )
    assert res.code == 0, res.err


def test_redis_py_url_query_form_still_works(tls: TlsSingle) -> None:
    url = f"rediss://localhost:{tls.port}/0?ssl_ca_certs={tls.pki.ca}"  # type: ignore[attr-defined]
    res = invoke(["--redis-url", url, "list", "robots", "-o", "json"])
    assert res.code == 0 and json.loads(res.out) == [], res.err


def test_mutual_tls_with_a_client_certificate(tls: TlsSingle) -> None:
    pki = tls.pki
    env = tls.env(
        tls.mtls_port,
        WSCTL_TLS_CERT=str(pki.client_cert),  # type: ignore[attr-defined]
        WSCTL_TLS_KEY=str(pki.client_key),  # type: ignore[attr-defined]
    )
    res = invoke(["registry", "set", "mtls-bot", "instance_id=gw-m", "--create"], env=env)
    assert res.code == 0, res.err
    res = invoke(["show", "mtls-bot", "-o", "json"], env=env)
    assert res.code == 0 and json.loads(res.out)["instance_id"] == "gw-m", res.err


def test_context_for_a_managed_service_with_certificates_beside_the_file(
    tls: TlsSingle, tmp_path: Path
) -> None:
    certs = tmp_path / "conf" / "certs"
    certs.mkdir(parents=True)
    pki = tls.pki
    for name in ("ca", "client_cert", "client_key"):
        (certs / f"{name}.pem").write_bytes(Path(getattr(pki, name)).read_bytes())
    conf = tmp_path / "conf" / "wsctl.toml"
    conf.write_text(
        f'[contexts.managed]\nredis_url = "rediss://localhost:{tls.mtls_port}/0"\n'
        'tls_ca_cert = "certs/ca.pem"\ntls_cert = "certs/client_cert.pem"\n'
        'tls_key = "certs/client_key.pem"\n'
    )
    res = invoke(["--config", str(conf), "--context", "managed", "list", "robots"])
    assert res.code == 0, res.err


def test_insecure_skips_verification_and_warns_every_time(tls: TlsSingle) -> None:
    env = {"WSCTL_REDIS_URL": f"rediss://localhost:{tls.untrusted_port}/0"}
    for _ in range(2):
        res = invoke(["--tls-insecure", "list", "robots", "-o", "json"], env=env)
        assert res.code == 0 and json.loads(res.out) == [], res.err
        assert res.err.count("warning: TLS certificate verification is off") == 1, res.err
    res = invoke(["list", "robots"], env={**env, "WSCTL_TLS_INSECURE": "1"})
    assert res.code == 0 and "verification is off" in res.err


def test_config_show_lists_tls_paths_and_their_sources(tls: TlsSingle) -> None:
    env = tls.env(WSCTL_TLS_CERT="/etc/wsctl/client.pem", WSCTL_TLS_KEY="/etc/wsctl/client.key")
    res = invoke(["--tls", "config", "show", "-o", "json"], env=env)
    rows = {r["setting"]: r for r in json.loads(res.out)}
    assert rows["tls_ca_cert"]["value"] == str(tls.pki.ca)  # type: ignore[attr-defined]
    assert rows["tls_ca_cert"]["source"] == "env WSCTL_TLS_CA_CERT"
    assert rows["tls_key"]["value"] == "/etc/wsctl/client.key"
    assert rows["redis_tls"] == {"setting": "redis_tls", "value": "True", "source": "flag"}
    assert rows["redis"]["value"].startswith("rediss://localhost:")


# ------------------------------------------------------------------ single node: each failure


def test_gateway_with_an_untrusted_redis_certificate_exits_3_at_start(tls: TlsSingle) -> None:
    """A gateway that could never register fails fast with the TLS reason, rather than serving
    robots it cannot record (a Redis that is merely down is still retried)."""
    import subprocess
    import sys

    url = f"rediss://localhost:{tls.port}/0"
    done = subprocess.run(
        [sys.executable, "-m", "wsctl", "--redis-url", url, "gateway", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 3, done.stderr
    assert "is not trusted" in done.stderr and "Traceback" not in done.stderr


async def test_embedded_fleet_core_logs_which_tls_failure_it_met(
    tls: TlsSingle, caplog: pytest.LogCaptureFixture
) -> None:
    """A gateway embedding the fleet core (no exit code to give) logs the same TLS reason."""
    from wsctl.gateway.server import Gateway, GatewayConfig
    from wsctl.redis.factory import target_from_settings

    env = {"WSCTL_REDIS_URL": f"rediss://localhost:{tls.untrusted_port}/0"}
    env["WSCTL_TLS_CA_CERT"] = str(tls.pki.ca)  # type: ignore[attr-defined]
    gw = Gateway(
        GatewayConfig(port=0, instance_id="gw-log"), target_from_settings(load_settings(env=env))
    )
    with caplog.at_level("WARNING", logger="wsctl.gateway"):
        await gw.start()
        await gw.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "wsctl.gateway"]
    assert any("is not trusted" in line for line in lines), lines


def test_private_ca_not_given_is_certificate_not_trusted(tls: TlsSingle) -> None:
    res = invoke(["list", "robots"], env={"WSCTL_REDIS_URL": f"rediss://localhost:{tls.port}/0"})
    _one_line_exit_3(res, "is not trusted")
    assert "--tls-ca-cert" in res.err


def test_server_certificate_from_another_ca_is_not_trusted(tls: TlsSingle) -> None:
    _one_line_exit_3(invoke(["list", "robots"], env=tls.env(tls.untrusted_port)), "is not trusted")


def test_certificate_for_another_host_is_a_host_name_mismatch(tls: TlsSingle) -> None:
    res = invoke(["list", "robots"], env=tls.env(tls.wrong_name_port))
    _one_line_exit_3(res, "is not valid for the host name")


def test_missing_client_certificate_says_one_is_required(tls: TlsSingle) -> None:
    res = invoke(["list", "robots"], env=tls.env(tls.mtls_port))
    _one_line_exit_3(res, "requires a client certificate")
    assert "--tls-cert" in res.err


@pytest.mark.parametrize("client_cert", [False, True])
def test_a_reset_that_lost_the_alert_is_explained_by_a_probe(
    tls: TlsSingle, client_cert: bool
) -> None:
    """Under load the client's first command can cross the server's close after a refused
    client certificate: the client sees only a reset. A probe that reads right after the
    handshake gets the alert and says which."""
    from redis.exceptions import ConnectionError

    from wsctl.redis.errors import tls_problem
    from wsctl.redis.factory import target_from_settings

    pki = tls.pki
    extra = (
        {
            "WSCTL_TLS_CERT": str(pki.untrusted_client_cert),  # type: ignore[attr-defined]
            "WSCTL_TLS_KEY": str(pki.untrusted_client_key),  # type: ignore[attr-defined]
        }
        if client_cert
        else {}
    )
    target = target_from_settings(load_settings(env=tls.env(tls.mtls_port, **extra)))
    reset = ConnectionError(
        "Error while reading from localhost : (104, 'Connection reset by peer')"
    )
    line = tls_problem(target, reset) or ""
    needle = "rejected the client certificate" if client_cert else "requires a client certificate"
    assert needle in line, line
    assert tls_problem(target, reset, probe=False) is None


def _mtls_target(tls: TlsSingle, port: int, client_cert: bool):  # type: ignore[no-untyped-def]
    from wsctl.redis.factory import target_from_settings

    pki = tls.pki
    extra = (
        {
            "WSCTL_TLS_CERT": str(pki.untrusted_client_cert),  # type: ignore[attr-defined]
            "WSCTL_TLS_KEY": str(pki.untrusted_client_key),  # type: ignore[attr-defined]
        }
        if client_cert
        else {}
    )
    return target_from_settings(load_settings(env=tls.env(port, **extra)))


# What redis-py raises when the server's refusal closed the connection before the alert was
# read: each must lead to the probe, whichever comes first on a given run.
_CLOSED_TEXTS = [
    "Connection closed by the server before write",
    "Connection closed by the server while writing",
    "Connection closed by server.",
    "Error while reading from localhost : (104, 'Connection reset by peer')",
    "Error 32 while writing to socket. Broken pipe.",
]


@pytest.mark.parametrize("text", _CLOSED_TEXTS)
@pytest.mark.parametrize("client_cert", [False, True])
def test_every_way_a_refused_client_certificate_closes_the_connection_is_probed(
    tls: TlsSingle, client_cert: bool, text: str
) -> None:
    from redis.exceptions import ConnectionError

    from wsctl.redis.errors import tls_problem

    target = _mtls_target(tls, tls.mtls_port, client_cert)
    line = tls_problem(target, ConnectionError(text)) or ""
    needle = "rejected the client certificate" if client_cert else "requires a client certificate"
    assert needle in line, line


@pytest.mark.parametrize("client_cert", [False, True])
def test_a_refusal_sent_late_is_still_found_by_the_probe(tls: TlsSingle, client_cert: bool) -> None:
    """A server slow to check the client certificate (its alert comes a second after the
    TLS 1.3 handshake completed): the probe does not take silence for acceptance; a TLS 1.2
    handshake gets the refusal inside the handshake itself."""
    from redis.exceptions import ConnectionError

    from wsctl.redis.errors import tls_problem

    target = _mtls_target(tls, tls.slow_mtls_port, client_cert)
    line = tls_problem(target, ConnectionError("Connection closed by server.")) or ""
    if client_cert:
        assert "rejected the client certificate" in line, line
    else:
        assert "client certificate" in line and "--tls-cert" in line, line


@pytest.mark.parametrize("client_cert", [False, True])
def test_a_refusal_without_any_alert_still_names_the_client_certificate(
    tls: TlsSingle, client_cert: bool
) -> None:
    """The server resets every connection whose client certificate it refuses, right after
    the TLS 1.3 handshake, never sending an alert: the line says the server closed the
    connection after the handshake and names the certificate (or its absence)."""
    pki = tls.pki
    extra = (
        {
            "WSCTL_TLS_CERT": str(pki.untrusted_client_cert),  # type: ignore[attr-defined]
            "WSCTL_TLS_KEY": str(pki.untrusted_client_key),  # type: ignore[attr-defined]
        }
        if client_cert
        else {}
    )
    res = invoke(["list", "robots"], env=tls.env(tls.silent_mtls_port, **extra))
    _one_line_exit_3(res, "closed the connection right after the TLS handshake")
    if client_cert:
        assert str(pki.untrusted_client_cert) in res.err  # type: ignore[attr-defined]
    else:
        assert "client certificate" in res.err and "--tls-cert" in res.err


def test_client_certificate_from_an_unknown_ca_is_rejected(tls: TlsSingle) -> None:
    pki = tls.pki
    env = tls.env(
        tls.mtls_port,
        WSCTL_TLS_CERT=str(pki.untrusted_client_cert),  # type: ignore[attr-defined]
        WSCTL_TLS_KEY=str(pki.untrusted_client_key),  # type: ignore[attr-defined]
    )
    res = invoke(["list", "robots"], env=env)
    _one_line_exit_3(res, "rejected the client certificate")


def test_plain_redis_behind_a_rediss_url_says_it_does_not_speak_tls(tls: TlsSingle) -> None:
    # redis-server waits for the end of a line that the TLS hello never sends: the handshake
    # times out (WSCTL_SOCKET_TIMEOUT bounds it), then a plain PING tells why
    res = invoke(["list", "robots"], env=tls.env(tls.server.port, WSCTL_SOCKET_TIMEOUT="1"))
    _one_line_exit_3(res, "does not speak TLS")


def test_plain_redis_behind_a_rediss_url_is_told_long_before_the_retries_time_out(
    tls: TlsSingle,
) -> None:
    """With the default 5 s socket timeout and two retries the handshake alone fails only after
    15 s; a plain PING probe sent after one second tells the mistake within a few seconds."""
    started = time.monotonic()
    res = invoke(["list", "robots"], env=tls.env(tls.server.port, WSCTL_SOCKET_TIMEOUT="5"))
    elapsed = time.monotonic() - started
    _one_line_exit_3(res, "does not speak TLS")
    assert elapsed < 8, elapsed


def test_redis_url_to_a_tls_port_says_it_expects_tls(tls: TlsSingle) -> None:
    res = invoke(["list", "robots"], env={"WSCTL_REDIS_URL": f"redis://localhost:{tls.port}/0"})
    _one_line_exit_3(res, "expects TLS")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"WSCTL_TLS_CA_CERT": "/nonexistent/ca.pem"}, "tls_ca_cert /nonexistent/ca.pem: no such"),
        ({"WSCTL_TLS_KEY": "/k.pem"}, "without tls_cert"),
        ({"WSCTL_REDIS_TLS": "false"}, "redis_tls is false"),
    ],
)
def test_unusable_tls_settings_are_config_errors(
    tls: TlsSingle, extra: dict[str, str], needle: str
) -> None:
    _one_line_exit_3(invoke(["list", "robots"], env=tls.env(**extra)), needle)


def test_a_key_that_is_not_the_certificates_is_a_config_error(tls: TlsSingle) -> None:
    pki = tls.pki
    env = tls.env(
        tls.mtls_port,
        WSCTL_TLS_CERT=str(pki.client_cert),  # type: ignore[attr-defined]
        WSCTL_TLS_KEY=str(pki.untrusted_client_key),  # type: ignore[attr-defined]
    )
    _one_line_exit_3(invoke(["list", "robots"], env=env), "does not belong to tls_cert")


def test_tls_options_without_tls_are_an_error_not_a_silent_plain_connection(
    tls: TlsSingle,
) -> None:
    env = {
        "WSCTL_REDIS_URL": f"redis://127.0.0.1:{tls.server.port}/0",
        "WSCTL_TLS_CA_CERT": str(tls.pki.ca),  # type: ignore[attr-defined]
    }
    _one_line_exit_3(invoke(["list", "robots"], env=env), "but TLS is off")


# ------------------------------------------------------------------ cluster


def _cluster_env(tls_cluster, pki, first_only: bool = True) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Settings for the mutual-TLS cluster: one start-up node (the rest come from the slot
    map), the test CA, and the client certificate every node requires."""
    startup = tls_cluster.startup.split(",")[0] if first_only else tls_cluster.startup
    return {
        "REDIS_USE_CLUSTER": "true",
        "REDIS_NODES": startup,
        "WSCTL_REDIS_TLS": "true",
        "WSCTL_TLS_CA_CERT": str(pki.ca),
        "WSCTL_TLS_CERT": str(pki.client_cert),
        "WSCTL_TLS_KEY": str(pki.client_key),
    }


async def test_cluster_slot_map_and_moved_replies_name_tls_endpoints(tls_cluster, tls_pki) -> None:  # type: ignore[no-untyped-def]
    from redis.asyncio import Redis
    from redis.exceptions import ResponseError

    proxy_ports = {p.port for p in tls_cluster.proxies}
    first = tls_cluster.proxies[0].port
    client = Redis(
        port=first,
        ssl=True,
        ssl_ca_certs=str(tls_pki.ca),
        ssl_certfile=str(tls_pki.client_cert),
        ssl_keyfile=str(tls_pki.client_key),
    )
    try:
        slots = await client.execute_command("CLUSTER", "SLOTS")
        named = {int(node[1]) for entry in slots for node in entry[2:]}
        primaries = {int(entry[2][1]) for entry in slots}
        # every node named is a TLS endpoint (a replica that a busy machine made miss a ping
        # may be left out for a moment, so not all six are required)
        assert named <= proxy_ports and len(primaries) == 3
        moved = []
        for n in range(50):
            try:
                await client.get(f"probe-{n}")
            except ResponseError as exc:
                moved.append(int(str(exc).rsplit(":", 1)[1]))
        assert moved and set(moved) <= proxy_ports
    finally:
        await client.aclose()


async def test_cluster_over_tls_every_node_including_learnt_ones(tls_cluster, tls_pki) -> None:  # type: ignore[no-untyped-def]
    """Only one start-up node is given: the other primaries come from the slot map, and are
    reached over TLS too (their plain ports are never announced)."""
    env = _cluster_env(tls_cluster, tls_pki)
    backend = Backend("cluster-tls", env)
    async with open_test_store(backend) as store:
        for port in tls_cluster.primary_ports():  # flush through the plain ports
            from redis.asyncio import Redis

            plain = Redis(port=port)
            await plain.flushall()
            await plain.aclose()
        for i in range(60):
            await seed_store_connection(store.client, f"c{i}", "gw-x", age_s=1)
        per_node = {
            node.name: 0
            for node in store.client.get_primaries()  # type: ignore[union-attr]
        }
        assert {int(name.rsplit(":", 1)[1]) for name in per_node} <= {
            p.port for p in tls_cluster.proxies
        }
    res = await ainvoke(["list", "connections", "-o", "json"], env=env)
    assert res.code == 0, res.err
    assert len(json.loads(res.out)) == 60
    res = await ainvoke(["list", "instances", "-o", "json"], env=env)
    assert res.code == 0, res.err


async def test_gateways_and_send_on_a_tls_cluster(tls_cluster, tls_pki) -> None:  # type: ignore[no-untyped-def]
    env = _cluster_env(tls_cluster, tls_pki)
    async with (
        running_fleet(env) as fleet,
        open_test_store(Backend("cluster-tls", env)) as store,
        connect(f"{fleet['gw-b'].ws_url}/ws/cl-bot") as robot,
    ):
        await wait_for(lambda: store.get("cl-bot"), timeout=10)
        res = await ainvoke(["send", "cl-bot", "hi", "--via", "gw-a", "-o", "json"], env=env)
        assert res.code == 0, res.out + res.err
        assert json.loads(res.out)["route"] == ["gw-a", "gw-b"]
        assert await asyncio.wait_for(robot.recv(), 5) == "hi"


def test_cluster_without_the_ca_is_certificate_not_trusted(tls_cluster, tls_pki) -> None:  # type: ignore[no-untyped-def]
    env = _cluster_env(tls_cluster, tls_pki)
    del env["WSCTL_TLS_CA_CERT"]
    _one_line_exit_3(invoke(["list", "robots"], env=env), "is not trusted")


# ------------------------------------------------------------------ the FastAPI adapter


async def test_fastapi_adapter_reaches_redis_over_tls(tls: TlsSingle, tmp_path: Path) -> None:
    """examples/fastapi_gateway.py under uvicorn builds its client through the same factory:
    with WSCTL_REDIS_TLS and a private CA it registers robots and takes sends over TLS."""
    from tests.fastapi_fleet import fastapi_gateways

    tls_settings = {
        "REDIS_HOST": "localhost",
        "REDIS_PORT": str(tls.port),
        "WSCTL_REDIS_TLS": "true",
        "WSCTL_TLS_CA_CERT": str(tls.pki.ca),  # type: ignore[attr-defined]
    }
    backend = tls.backend()
    with fastapi_gateways(backend, tmp_path, names=("fa-tls",), extra_env=tls_settings) as (gw,):
        async with open_test_store(backend) as store, connect(f"{gw.ws_url}/ws/fa-bot") as robot:
            await wait_for(lambda: store.get("fa-bot"), timeout=10)
            entry = await store.get("fa-bot")
            assert entry is not None and entry.instance_id == "fa-tls"
            res = await ainvoke(["send", "fa-bot", "via fastapi", "-o", "json"], env=backend.env)
            assert res.code == 0, res.out + res.err
            assert await asyncio.wait_for(robot.recv(), 5) == "via fastapi"


async def test_fastapi_adapter_with_tls_insecure_warns_on_stderr(
    tls: TlsSingle, tmp_path: Path
) -> None:
    from tests.fastapi_fleet import fastapi_gateways

    settings = {
        "REDIS_HOST": "localhost",
        "REDIS_PORT": str(tls.untrusted_port),
        "WSCTL_REDIS_TLS": "true",
        "WSCTL_TLS_INSECURE": "true",
    }
    with fastapi_gateways(tls.backend(), tmp_path, names=("fa-insecure",), extra_env=settings) as (
        gw,
    ):
        async with open_test_store(tls.backend()) as store, connect(f"{gw.ws_url}/ws/fa-i"):
            await wait_for(lambda: store.get("fa-i"), timeout=10)  # it registers, unverified
        log = gw.log.read_text()
    assert log.count("TLS certificate verification is off") == 1, log


def test_tls_settings_from_a_config_file_do_not_reach_the_plain_sandbox(
    tls: TlsSingle, tmp_path: Path
) -> None:
    """With no Redis configured, commands use the running sandbox (plain, embedded): a config
    file's TLS settings, meant for real Redis, are not applied to it."""
    import os

    from wsctl.sandbox.local import SandboxInfo, write_sandbox_file

    (tmp_path / "wsctl.toml").write_text(
        f'tls_ca_cert = "{tls.pki.ca}"\nredis_tls = true\n'  # type: ignore[attr-defined]
    )
    write_sandbox_file(SandboxInfo(redis_url=tls.server.url, pid=os.getpid()))
    res = invoke(["list", "robots", "-o", "json"])
    assert res.code == 0 and json.loads(res.out) == [], res.err


async def test_cluster_nodes_learnt_from_the_slot_map_get_the_client_certificate_too(
    tls_cluster, tls_pki
) -> None:  # type: ignore[no-untyped-def]
    """Every node requires a client certificate: without one the first node already refuses;
    with it, keys on every primary (two of them known only from the slot map) are reachable."""
    env = _cluster_env(tls_cluster, tls_pki)
    without = {k: v for k, v in env.items() if k not in ("WSCTL_TLS_CERT", "WSCTL_TLS_KEY")}
    _one_line_exit_3(invoke(["list", "robots"], env=without), "requires a client certificate")
    from bisect import bisect

    from redis.crc import key_slot

    robots = [f"m{n}" for n in range(30)]  # redis-cli gives the primaries 0-5460, -10922, -16383
    assert {bisect([5461, 10923], key_slot(f"ws_conn:{r}".encode())) for r in robots} == {0, 1, 2}
    async with open_test_store(Backend("cluster-mtls", env)) as store:
        for robot in robots:  # writes land on every primary, over mutual TLS
            await seed_store_connection(store.client, robot, "gw-m", age_s=1)
    res = await ainvoke(["list", "robots", "-o", "json"], env=env)
    assert res.code == 0, res.err
    assert {r["robot_id"] for r in json.loads(res.out)} >= set(robots)
