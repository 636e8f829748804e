"""Bulk CLI commands record an event for every robot they touch, past the old caps (reap's
report keeps 1,000 items, import used to keep 10,000 ids), streamed in bounded batches; on real
Redis (single node and the 3+3 cluster)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.conftest import Backend, ainvoke, open_test_store
from wsctl.ops.reap import MAX_ITEMS_REPORTED
from wsctl.registry.keys import Keyspace

KEYS = Keyspace()
COUNT = 12_000  # above both old caps


async def _fill(client: Any, count: int) -> None:
    old = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        robot = f"bulk-{i}"
        pipe.hset(
            KEYS.conn_key(robot),
            mapping={
                "instance_id": "gw-old",
                "robot_id": robot,
                "conn_id": f"c{i}",
                "connected_at": old,
                "last_heartbeat": old,
            },
        )
        if len(pipe) >= 2000:
            await pipe.execute()
            pipe = client.pipeline(transaction=False)
    await pipe.execute()


async def _robot_events(client: Any, count: int) -> list[list[str]]:
    """Per robot, the event names in its own stream."""
    out: list[list[str]] = []
    for start in range(0, count, 2000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(count, start + 2000)):
            pipe.xrange(KEYS.robot_events_key(f"bulk-{i}"))
        out.extend([[f["event"] for _, f in page] for page in await pipe.execute()])
    return out


async def test_reap_and_restore_record_an_event_for_every_robot(
    backend: Backend, tmp_path: Path
) -> None:
    assert COUNT > MAX_ITEMS_REPORTED and COUNT > 10_000
    backup = tmp_path / "reap.jsonl"
    async with open_test_store(backend) as store:
        await _fill(store.client, COUNT)
        res = await ainvoke(
            ["reap", "--timeout", "60", "--backup", str(backup), "-o", "json"], backend.env
        )
        assert res.code == 0, res.err
        report = json.loads(res.out)
        assert report["reaped"] == COUNT and len(report["items"]) == MAX_ITEMS_REPORTED
        per_robot = await _robot_events(store.client, COUNT)
        missing = [i for i, events in enumerate(per_robot) if events != ["reaped"]]
        assert not missing, f"{len(missing)} robots without their reaped event"
        assert report["events_recorded"] == COUNT + 1  # every robot, and the summary
        assert report["events_not_recorded"] == 0 and "warning" not in res.err

        res = await ainvoke(["registry", "restore", str(backup), "-o", "json"], backend.env)
        assert res.code == 0, res.err
        result = json.loads(res.out)
        assert result["written"] == COUNT and result["events_recorded"] == COUNT + 1
        per_robot = await _robot_events(store.client, COUNT)
        assert all(events == ["reaped", "imported"] for events in per_robot)
        last = await store.client.xrevrange(KEYS.robot_events_key(f"bulk-{COUNT - 1}"), count=1)
        assert json.loads(last[0][1]["detail"])["file"] == str(backup)


async def test_a_stalled_redis_costs_one_timeout_and_every_event_is_counted_lost(
    single: Backend,
) -> None:
    """After the first write that fails, nothing more is sent (each would wait for the
    timeout): the rest are counted, so a bulk command on a frozen Redis reports them in one
    warning and does not hang for a timeout per chunk."""
    import time

    from tests.faults import frozen
    from wsctl.events import Event
    from wsctl.ops.events import EventRecorder

    assert single.single is not None
    async with open_test_store(single) as store:
        recorder = EventRecorder(store.client, KEYS, chunk=100, timeout=0.5)
        with frozen(single.single):
            started = time.monotonic()
            await recorder.add(Event("reaped", robot_id=f"st-{i}") for i in range(1000))
            outcome = await recorder.close()
            took = time.monotonic() - started
    assert outcome.written == 0 and outcome.lost == 1000
    assert outcome.error is not None and "Timeout" in outcome.error
    assert took < 2.0, took  # one timeout, not ten
