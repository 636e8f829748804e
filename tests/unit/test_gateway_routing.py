"""The routing decision (pure): local, forward, hop limit, stale owner, local socket dead."""

from __future__ import annotations

import pytest

from wsctl.gateway.routing import LocalSocket, Route, decide
from wsctl.protocol.envelopes import MAX_HOPS, Status


def test_an_open_local_socket_is_used_whatever_the_registry_says() -> None:
    for owner in (None, "gw-a", "gw-b"):
        assert decide(self_id="gw-a", local=LocalSocket.OPEN, owner=owner, hops=5).route is (
            Route.LOCAL
        )


def test_a_robot_on_another_instance_is_forwarded_to_its_owner() -> None:
    decision = decide(self_id="gw-a", local=LocalSocket.NONE, owner="gw-b", hops=0)
    assert decision.route is Route.FORWARD and decision.target == "gw-b"
    assert decision.status is None


def test_forwarding_stops_at_the_hop_limit() -> None:
    below = decide(self_id="gw-a", local=LocalSocket.NONE, owner="gw-b", hops=MAX_HOPS - 1)
    assert below.route is Route.FORWARD
    at = decide(self_id="gw-a", local=LocalSocket.NONE, owner="gw-b", hops=MAX_HOPS)
    assert at.route is Route.HOP_LIMIT and at.status is Status.REJECTED
    assert "hop limit" in (at.reason or "") and "gw-b" in (at.reason or "")


def test_no_entry_means_not_connected() -> None:
    decision = decide(self_id="gw-a", local=LocalSocket.NONE, owner=None, hops=0)
    assert decision.route is Route.NOT_CONNECTED and decision.status is Status.NOT_CONNECTED


def test_registry_naming_this_instance_without_a_socket_is_a_stale_owner() -> None:
    decision = decide(self_id="gw-a", local=LocalSocket.NONE, owner="gw-a", hops=1)
    assert decision.route is Route.STALE_OWNER and decision.status is Status.NOT_CONNECTED


@pytest.mark.parametrize(
    ("owner", "route"),
    [(None, Route.NOT_CONNECTED), ("gw-a", Route.STALE_OWNER), ("gw-b", Route.FORWARD)],
)
def test_a_dead_local_socket_falls_back_to_the_registry(owner: str | None, route: Route) -> None:
    decision = decide(self_id="gw-a", local=LocalSocket.DEAD, owner=owner, hops=0)
    assert decision.route is route
    if route is not Route.FORWARD:
        assert "dead" in (decision.reason or "")


def test_hop_limit_is_a_parameter() -> None:
    decision = decide(self_id="a", local=LocalSocket.NONE, owner="b", hops=1, max_hops=1)
    assert decision.route is Route.HOP_LIMIT
