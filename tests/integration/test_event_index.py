"""The event log's writer index (``ws_events_streams``) on real Redis (single node and the 3+3
cluster): ``wsctl reap`` and every gateway's event writer prune the names of writers' streams
that are gone, keep live ones, and readers tolerate a name whose stream vanished."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.conftest import Backend, ainvoke, open_test_store
from tests.fleet import wait_for
from wsctl.eventlog.index import prune_index
from wsctl.eventlog.model import Event
from wsctl.gateway import events as sink_module
from wsctl.ops.events import record_events
from wsctl.registry.keys import Keyspace

KEYS = Keyspace()
DAY_MS = 86_400_000


async def _index(client: Any) -> set[str]:
    return {str(m) for m in await client.smembers(KEYS.events_index)}


async def _seed(client: Any) -> dict[str, str]:
    """Index names of every kind: live, gone, not a stream, old without expiry, old with one."""
    names = {w: KEYS.events_key(w) for w in ("live", "gone", "wrongtype", "old-forever", "old-ttl")}
    now_ms = int(time.time() * 1000)
    await client.xadd(names["live"], {"at": "x", "event": "connected"})
    await client.expire(names["live"], 3600)
    await client.set(names["wrongtype"], "x")
    await client.xadd(names["old-forever"], {"event": "connected"}, id=f"{now_ms - 30 * DAY_MS}-0")
    await client.xadd(names["old-ttl"], {"event": "connected"}, id=f"{now_ms - 30 * DAY_MS}-0")
    await client.expire(names["old-ttl"], 3600)
    await client.sadd(KEYS.events_index, *names.values())
    return names


async def test_reap_unlists_gone_writers_and_keeps_live_and_expiring_streams(
    backend: Backend,
) -> None:
    async with open_test_store(backend) as store:
        names = await _seed(store.client)
        res = await ainvoke(["reap", "--timeout", "60", "-o", "json", "--no-backup"], backend.env)
        assert res.code == 0, res.err
        assert json.loads(res.out)["events_index_pruned"] == 3
        # the streams themselves are left alone (a stream with no expiry is only unlisted)
        assert await _index(store.client) == {names["live"], names["old-ttl"]}
        assert await store.client.exists(names["old-forever"]) == 1
        dry = await ainvoke(["reap", "--dry-run", "-o", "json"], backend.env)
        assert dry.code == 0 and json.loads(dry.out)["events_index_pruned"] == 0


async def test_readers_tolerate_index_names_whose_stream_vanished(backend: Backend) -> None:
    async with open_test_store(backend) as store:
        await _seed(store.client)
        res = await ainvoke(["events", "-o", "jsonl"], backend.env)
        assert res.code == 0, res.err
        assert {json.loads(line)["stream"] for line in res.out.splitlines()} == {
            "live",
            "old-forever",
            "old-ttl",
        }
        follow = await ainvoke(["events", "--follow", "--for", "1", "-o", "jsonl"], backend.env)
        assert follow.code == 0 and "Traceback" not in follow.err, follow.err
        gone = await ainvoke(["events", "--instance", "gone", "-o", "jsonl"], backend.env)
        assert gone.code == 0 and gone.out == "", (gone.out, gone.err)


async def test_a_prune_racing_a_writer_never_leaves_its_written_stream_unlisted(
    backend: Backend,
) -> None:
    """The CLI writer's stream expired and its name is pruned; writing again lists it again
    (writers add the name after every batch), and a name written between a prune's check and
    its removal is put back by the prune's second look."""
    async with open_test_store(backend) as store:
        client = store.client
        cli_stream = KEYS.events_key("@cli")
        await client.sadd(KEYS.events_index, cli_stream)
        outcome = await prune_index(client, KEYS)
        assert outcome.pruned == 1 and cli_stream not in await _index(client)
        written = await record_events(client, KEYS, [Event("set", robot_id="r-1")])
        assert written.written == 1 and written.error is None
        assert cli_stream in await _index(client)

        # the race itself: the stream appears after the prune's first look
        original = client.srem

        async def srem_then_write(*args: Any) -> Any:
            result = await original(*args)
            await client.xadd(KEYS.events_key("late"), {"event": "connected"})
            return result

        await client.sadd(KEYS.events_index, KEYS.events_key("late"))
        client.srem = srem_then_write
        try:
            outcome = await prune_index(client, KEYS)
        finally:
            del client.srem
        assert outcome.pruned == 0 and outcome.kept_back == 1
        assert KEYS.events_key("late") in await _index(client)


async def test_a_gateway_prunes_the_index_after_start_and_relists_its_own_stream(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.integration.test_gateway_core import FakeSocket, running_core

    monkeypatch.setattr(sink_module, "PRUNE_FIRST", 0.2)
    async with open_test_store(backend) as store:
        client = store.client
        await client.sadd(KEYS.events_index, KEYS.events_key("long-gone"))
        async with running_core(backend.env, name="gw-prune") as core:
            await wait_for(lambda: core.events.index_pruned == 1, timeout=10)
            assert KEYS.events_key("long-gone") not in await _index(client)
            assert 'wsctl_gateway_events_index_pruned_total{instance_id="gw-prune"} 1' in (
                core.metrics_text()
            )
            # the gateway's own stream vanished meanwhile (expired while it was idle, say) and
            # a prune unlisted it: its next batch of events lists it again
            own = KEYS.events_key("gw-prune")
            await client.delete(own)
            await prune_index(client, KEYS)
            assert own not in await _index(client)
            await core.open_session("relisted", FakeSocket())
            await wait_for(lambda: _listed(client, own), timeout=10)
            res = await ainvoke(["events", "-o", "jsonl"], backend.env)  # read via the index
            assert res.code == 0 and '"relisted"' in res.out


async def _listed(client: Any, name: str) -> bool:
    return name in await _index(client)
