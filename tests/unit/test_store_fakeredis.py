"""The store's scripts and bulk paths on fakeredis (with Lua): fast feedback; the same
behaviours are checked against real Redis in tests/integration/test_store.py."""

from __future__ import annotations

import fakeredis
import pytest

from wsctl.registry.instances import InstanceRecord, write_record
from wsctl.registry.model import Registration, utcnow
from wsctl.registry.store import DeleteOutcome, RegistryStore, TouchOutcome


@pytest.fixture
def store() -> RegistryStore:
    return RegistryStore(fakeredis.FakeAsyncRedis(decode_responses=True), batch_size=3)


async def test_register_then_fenced_delete(store: RegistryStore) -> None:
    await store.register("r1", Registration("r1", "gw", "c1", utcnow()).to_hash())
    entry = await store.get("r1")
    assert entry is not None and entry.conn_id == "c1"
    assert await store.delete_observed([entry]) == [DeleteOutcome.DELETED]
    assert await store.get("r1") is None


async def test_fenced_delete_keeps_a_changed_heartbeat(store: RegistryStore) -> None:
    await store.register("r1", Registration("r1", "gw", "c1", utcnow()).to_hash())
    entry = await store.get("r1")
    assert entry is not None
    await store.client.hset("ws_conn:r1", "last_heartbeat", "later")
    assert await store.delete_observed([entry]) == [DeleteOutcome.CHANGED]


async def test_batches_cover_every_key_and_report_wrong_types(store: RegistryStore) -> None:
    for i in range(7):
        await store.client.hset(
            f"ws_conn:r{i}", mapping={"instance_id": "i", "last_heartbeat": "1"}
        )
    await store.client.rpush("ws_conn:list", "x")
    batches = [b async for b in store.iter_batches()]
    assert all(len(b) <= 3 for b in batches)
    entries = {e.robot_id: e for b in batches for e in b}
    assert len(entries) == 8 and entries["list"].key_type == "list"


async def test_touch_reports_superseded_and_reregisters_missing(store: RegistryStore) -> None:
    reg = Registration("r1", "gw", "c1", utcnow()).to_hash()
    assert await store.touch_many([("r1", "c1", "t", reg)]) == [TouchOutcome.REREGISTERED]
    assert await store.touch_many([("r1", "c1", "t2", reg)]) == [TouchOutcome.REFRESHED]
    assert await store.touch_many([("r1", "other", "t3", reg)]) == [TouchOutcome.SUPERSEDED]


async def test_write_many_absent_and_replace(store: RegistryStore) -> None:
    assert await store.write_many([("a", {"x": "1"}), ("b", {"x": "2"})], replace=False) == [
        True,
        True,
    ]
    assert await store.write_many([("a", {"x": "3"})], replace=False) == [False]
    assert await store.write_many([("a", {"y": "4"})], replace=True) == [True]
    assert await store.client.hgetall("ws_conn:a") == {"y": "4"}


async def test_compare_and_delete_with_absent_expectation(store: RegistryStore) -> None:
    await store.client.hset("ws_conn:r1", mapping={"instance_id": "i"})
    assert await store.delete_if("r1", {"conn_id": "c"}) is DeleteOutcome.CHANGED
    assert (
        await store.delete_if("r1", {"conn_id": None, "instance_id": "i"}) is DeleteOutcome.DELETED
    )
    assert await store.delete_if("r1", {"conn_id": None}) is DeleteOutcome.GONE


async def test_stopping_early_leaves_no_read_ahead_task_behind(store: RegistryStore) -> None:
    import asyncio

    for i in range(10):
        await store.client.hset(
            f"ws_conn:r{i}", mapping={"instance_id": "i", "last_heartbeat": "1"}
        )
    batches = store.iter_batches()
    first = await anext(batches)
    assert len(first) == 3
    await batches.aclose()
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not [t for t in others if "read_keys" in repr(t.get_coro())]


async def test_existing_says_which_robots_have_a_key(store: RegistryStore) -> None:
    await store.client.hset("ws_conn:a", mapping={"x": "1"})
    await store.client.set("ws_conn:odd", "x")
    assert await store.existing(["a", "b", "odd"]) == [True, False, True]
    assert await store.existing([]) == []


async def test_instance_records_through_the_store(store: RegistryStore) -> None:
    await write_record(store.client, store.keys, InstanceRecord("gw-a", port=8001), ttl=60)
    assert (await store.instance_record("gw-a")) == InstanceRecord("gw-a", port=8001)
    assert await store.instance_record("gw-b") is None
    assert [r.instance_id async for r in store.instance_records()] == ["gw-a"]


async def test_single_node_cluster_view_counts_only_when_asked(store: RegistryStore) -> None:
    await store.client.hset("ws_conn:a", mapping={"x": "1"})
    assert await store.cluster_view(count_single_node=False) == (None, {})
    cluster, per_node = await store.cluster_view()
    assert cluster is None and list(per_node.values()) == [1]
