"""Batched routing decisions and the owner cache, without Redis or a clock."""

from __future__ import annotations

from wsctl.gateway.batching import OwnerCache, route_items
from wsctl.gateway.routing import LocalSocket
from wsctl.protocol.batch import Item
from wsctl.protocol.envelopes import Status


def _items(*robots: str) -> list[Item]:
    return [Item(str(n), r, f"m{n}") for n, r in enumerate(robots)]


def test_items_are_grouped_per_owner_in_batch_order() -> None:
    items = _items("a", "b", "a", "c", "b")
    plan = route_items(
        self_id="gw-1",
        hops=0,
        pending=[(i, LocalSocket.NONE) for i in items],
        owners={"a": "gw-2", "b": "gw-3", "c": "gw-2"},
    )
    assert {o: [i.id for i in its] for o, its in plan.forward.items()} == {
        "gw-2": ["0", "2", "3"],
        "gw-3": ["1", "4"],
    }
    assert plan.failed == [] and plan.stale == []


def test_no_entry_is_not_connected_and_a_ghost_is_named_once() -> None:
    items = _items("gone", "ghost", "ghost")
    plan = route_items(
        self_id="gw-1",
        hops=0,
        pending=[(i, LocalSocket.NONE) for i in items],
        owners={"gone": None, "ghost": "gw-1"},
    )
    assert [(o.id, o.status) for o in plan.failed] == [
        ("0", Status.NOT_CONNECTED),
        ("1", Status.NOT_CONNECTED),
        ("2", Status.NOT_CONNECTED),
    ]
    assert plan.stale == ["ghost"] and plan.forward == {}


def test_the_hop_limit_rejects_instead_of_forwarding() -> None:
    (item,) = _items("a")
    plan = route_items(
        self_id="gw-1", hops=2, pending=[(item, LocalSocket.NONE)], owners={"a": "gw-2"}
    )
    assert plan.forward == {} and plan.failed[0].status is Status.REJECTED
    assert "hop limit 2" in (plan.failed[0].reason or "")


def test_a_dead_local_socket_routes_to_the_registry_owner() -> None:
    (item,) = _items("a")
    plan = route_items(
        self_id="gw-1", hops=0, pending=[(item, LocalSocket.DEAD)], owners={"a": "gw-2"}
    )
    assert list(plan.forward) == ["gw-2"]


def test_the_owner_cache_expires_invalidates_and_stays_bounded() -> None:
    cache = OwnerCache(ttl=1.0, size=2)
    cache.put("a", "gw-2", now=10.0)
    assert cache.get("a", now=10.5) == "gw-2"
    assert cache.get("a", now=11.5) is None  # expired
    cache.put("a", "gw-2", now=20.0)
    cache.invalidate(["a"])
    assert cache.get("a", now=20.1) is None
    for n, robot in enumerate("xyz"):
        cache.put(robot, "gw", now=30.0 + n)
    assert len(cache) == 2 and cache.get("x", now=32.0) is None  # the oldest went first
    assert (cache.hits, cache.misses) == (1, 3)


def test_a_zero_ttl_owner_cache_remembers_nothing() -> None:
    cache = OwnerCache(ttl=0.0)
    cache.put("a", "gw-2", now=1.0)
    assert cache.get("a", now=1.0) is None and len(cache) == 0


def test_a_delivery_by_the_cached_owner_refreshes_its_entry() -> None:
    cache = OwnerCache(ttl=10.0)
    cache.put("r1", "gw-b", now=0.0)
    cache.put("r2", "gw-b", now=0.0)
    assert cache.confirm("r1", "gw-b", now=9.0)
    assert cache.get("r1", now=18.0) == "gw-b"  # 9 s after the confirmation: still fresh
    assert cache.get("r2", now=18.0) is None  # never confirmed: expired
    assert cache.confirm("r2", "gw-b", now=18.0)  # an expired entry naming it comes back
    assert cache.get("r2", now=19.0) == "gw-b"


def test_a_delivery_confirms_no_entry_naming_another_owner_or_none() -> None:
    cache = OwnerCache(ttl=10.0)
    cache.put("r1", "gw-c", now=0.0)  # newer: the robot moved to gw-c
    assert not cache.confirm("r1", "gw-b", now=9.0)
    assert cache.get("r1", now=11.0) is None  # not refreshed by gw-b's answer
    assert not cache.confirm("r2", "gw-b", now=1.0)  # invalidated/unknown: not made up
    assert len(cache) == 1


def test_a_hint_corrects_only_an_entry_naming_the_hinting_instance() -> None:
    cache = OwnerCache(ttl=1.0)
    cache.put("moved", "gw-a", 0.0)
    cache.put("gone", "gw-a", 0.0)
    cache.put("newer", "gw-c", 0.0)
    assert cache.correct("moved", "gw-a", "gw-b", 5.0)  # expired or not: corrected
    assert cache.get("moved", 5.5) == "gw-b"  # fresh as of the hint
    assert cache.correct("gone", "gw-a", None, 5.0)
    assert cache.get("gone", 5.0) is None and len(cache) == 2
    assert not cache.correct("newer", "gw-a", "gw-b", 5.0)  # someone else's entry: kept
    assert cache.get("newer", 0.5) == "gw-c"
    assert not cache.correct("unknown", "gw-a", "gw-b", 5.0) and len(cache) == 2


def test_recent_payloads_drop_a_copy_within_the_window_only() -> None:
    from wsctl.gateway.dedup import RecentPayloads

    recent = RecentPayloads(size=100, window=10.0)
    assert not recent.seen('{"v":2,"id":"a"}', now=0.0)
    assert recent.seen('{"v":2,"id":"a"}', now=5.0)
    assert recent.seen(b'{"v":2,"id":"a"}', now=5.0)  # bytes or text: the same payload
    assert not recent.seen('{"v":2,"id":"b"}', now=5.0)
    assert not recent.seen('{"v":2,"id":"a"}', now=10.5)  # forgotten after the window
    assert recent.dropped == 2


def test_recent_payloads_memory_is_bounded_by_count() -> None:
    from wsctl.gateway.dedup import RecentPayloads

    recent = RecentPayloads(size=3, window=1000.0)
    for n in range(10):
        assert not recent.seen(f"m{n}", now=float(n))
    assert len(recent) == 3
    assert not recent.seen("m0", now=11.0)  # the oldest went first
    assert recent.seen("m9", now=11.0)
