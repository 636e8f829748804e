"""RegistryStore against real Redis: single node and a real 3+3 cluster (parametrized)."""

from __future__ import annotations

from tests.conftest import Backend, open_test_store
from tests.seedlike import seed_hash, seed_store_connection
from wsctl.registry.keys import escape_glob
from wsctl.registry.model import Registration, State, assess, utcnow
from wsctl.registry.store import DeleteOutcome, TouchOutcome


async def test_iter_entries_reads_every_seed_entry_across_batches(backend: Backend) -> None:
    async with open_test_store(backend) as store:
        for i in range(230):
            await seed_store_connection(store.client, f"r{i}", "inst-a")
        seen = [e async for e in store.iter_entries()]
    assert sorted(e.robot_id for e in seen) == sorted(f"r{i}" for i in range(230))
    assert all(not e.problems for e in seen)


async def test_non_hash_key_under_prefix_is_reported_not_dropped(backend: Backend) -> None:
    async with open_test_store(backend) as store:
        await store.client.set("ws_conn:weird", "x")
        await seed_store_connection(store.client, "ok", "i")
        found = {e.robot_id: e for e in await _all(store)}
    assert found["weird"].key_type == "string" and found["weird"].problems
    assert not found["ok"].problems


async def test_glob_characters_in_ids_are_literal_for_get(backend: Backend) -> None:
    async with open_test_store(backend) as store:
        for rid in ("robot*", "robot-1", "robot?"):
            await store.client.hset(store.keys.conn_key(rid), mapping=seed_hash(rid, "i"))
        entry = await store.get("robot*")
        assert entry is not None and entry.robot_id == "robot*"
        exact = [
            k
            async for k in store.client.scan_iter(match=escape_glob(store.keys.conn_key("robot*")))
        ]
    assert exact == ["ws_conn:robot*"]


async def test_compare_and_delete_keeps_an_entry_that_changed(backend: Backend) -> None:
    async with open_test_store(backend) as store:
        await seed_store_connection(store.client, "r1", "i", age_s=200)
        judged = await store.get("r1")
        assert judged is not None
        # a heartbeat lands between the read and the delete
        await store.client.hset("ws_conn:r1", "last_heartbeat", utcnow().isoformat())
        assert await store.delete_observed([judged]) == [DeleteOutcome.CHANGED]
        assert await store.client.exists("ws_conn:r1") == 1
        fresh = await store.get("r1")
        assert fresh is not None
        assert await store.delete_observed([fresh]) == [DeleteOutcome.DELETED]
        assert await store.delete_observed([fresh]) == [DeleteOutcome.GONE]


async def test_observed_delete_keeps_an_entry_whose_type_changed(backend: Backend) -> None:
    async with open_test_store(backend) as store:
        await seed_store_connection(store.client, "r1", "i")
        observed = await store.get("r1")
        assert observed is not None
        await store.client.delete("ws_conn:r1")
        await store.client.set("ws_conn:r1", "now a string")
        assert await store.delete_observed([observed]) == [DeleteOutcome.CHANGED]
        odd = await store.get("r1")
        assert odd is not None and odd.key_type == "string"
        assert await store.delete_observed([odd]) == [DeleteOutcome.DELETED]


async def test_observed_delete_requires_a_seed_entry_to_still_lack_conn_id(
    backend: Backend,
) -> None:
    async with open_test_store(backend) as store:
        await seed_store_connection(store.client, "r1", "i")
        observed = await store.get("r1")
        assert observed is not None
        await store.client.hset("ws_conn:r1", "conn_id", "new-session")
        assert await store.delete_observed([observed]) == [DeleteOutcome.CHANGED]


async def test_compare_and_delete_on_absent_field_expectation(backend: Backend) -> None:
    async with open_test_store(backend) as store:
        await seed_store_connection(store.client, "r1", "i")
        assert await store.delete_if("r1", {"conn_id": "c1"}) is DeleteOutcome.CHANGED
        assert await store.delete_if("r1", {"conn_id": None}) is DeleteOutcome.DELETED


async def test_delete_many_if_spans_slots_on_cluster(backend: Backend) -> None:
    async with open_test_store(backend) as store:
        ids = [f"bot-{i}" for i in range(40)]
        for rid in ids:
            await seed_store_connection(store.client, rid, "i")
        entries = [await store.get(r) for r in ids]
        results = await store.delete_observed([e for e in entries if e])
        assert results == [DeleteOutcome.DELETED] * 40
        assert [e async for e in store.iter_entries()] == []


async def test_scripts_recover_from_script_flush(backend: Backend) -> None:
    """EVALSHA falls back to EVAL on NOSCRIPT (a restarted or newly promoted node)."""
    async with open_test_store(backend) as store:
        await seed_store_connection(store.client, "r1", "i")
        await store.client.script_flush()
        assert await store.delete_if("r1", {"conn_id": None}) is DeleteOutcome.DELETED


async def test_write_absent_skips_existing_and_replace_drops_extra_fields(backend: Backend) -> None:
    async with open_test_store(backend) as store:
        await store.client.hset("ws_conn:r1", mapping={**seed_hash("r1", "i"), "extra": "1"})
        assert await store.write("r1", {"instance_id": "j"}, replace=False) is False
        assert await store.write("r1", {"instance_id": "j", "last_heartbeat": "1"}, replace=True)
        assert await store.client.hgetall("ws_conn:r1") == {
            "instance_id": "j",
            "last_heartbeat": "1",
        }


async def test_register_returns_previous_session_and_keeps_extra_fields(backend: Backend) -> None:
    async with open_test_store(backend) as store:
        await store.client.hset("ws_conn:r1", mapping={**seed_hash("r1", "old"), "fw": "2"})
        prev = await store.register("r1", Registration("r1", "new", "c2", utcnow()).to_hash())
        assert prev == ("old", "")
        entry = await store.get("r1")
        assert entry is not None and entry.conn_id == "c2" and entry.fields["fw"] == "2"
        assert (
            await store.register("r2", Registration("r2", "new", "c3", utcnow()).to_hash()) is None
        )


async def test_touch_refreshes_own_session_reregisters_missing_and_yields_to_newer(
    backend: Backend,
) -> None:
    async with open_test_store(backend) as store:
        reg = Registration("r1", "gw", "c1", utcnow()).to_hash()
        await store.register("r1", reg)
        stamp = "2030-01-01T00:00:00+00:00"
        assert await store.touch_many([("r1", "c1", stamp, reg)]) == [TouchOutcome.REFRESHED]
        assert await store.client.hget("ws_conn:r1", "last_heartbeat") == stamp
        await store.client.delete("ws_conn:r1")
        assert await store.touch_many([("r1", "c1", stamp, reg)]) == [TouchOutcome.REREGISTERED]
        entry = await store.get("r1")
        assert entry is not None and entry.conn_id == "c1"
        await store.register("r1", Registration("r1", "gw2", "c9", utcnow()).to_hash())
        assert await store.touch_many([("r1", "c1", stamp, reg)]) == [TouchOutcome.SUPERSEDED]


async def test_seed_entries_are_assessed_with_local_naive_time(backend: Backend) -> None:
    async with open_test_store(backend) as store:
        await seed_store_connection(store.client, "fresh", "i", age_s=1)
        await seed_store_connection(store.client, "old", "i", age_s=300)
        states = {e.robot_id: assess(e, utcnow(), 90).state for e in await _all(store)}
    assert states == {"fresh": State.ONLINE, "old": State.STALE}


async def _all(store):  # type: ignore[no-untyped-def]
    return [e async for e in store.iter_entries()]
