"""Bulk CLI commands (reap, registry import/restore) record a per-robot event for the first
--robot-events robots of a run (a default count, `all` or `none`), streamed in bounded
batches, and one summary event; on real Redis (single node and the 3+3 cluster)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.conftest import Backend, ainvoke, open_test_store
from wsctl.eventlog.model import DEFAULT_ROBOT_EVENTS
from wsctl.ops.reap import MAX_ITEMS_REPORTED
from wsctl.registry.keys import CLI_WRITER, Keyspace

KEYS = Keyspace()
COUNT = 12_000  # above reap's report cap and above the default per-robot event count


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
    assert COUNT > MAX_ITEMS_REPORTED and COUNT > DEFAULT_ROBOT_EVENTS
    backup = tmp_path / "reap.jsonl"
    every = ["--robot-events", "all", "-o", "json"]
    async with open_test_store(backend) as store:
        await _fill(store.client, COUNT)
        res = await ainvoke(
            ["reap", "--timeout", "60", "--backup", str(backup), *every], backend.env
        )
        assert res.code == 0, res.err
        report = json.loads(res.out)
        assert report["reaped"] == COUNT and len(report["items"]) == MAX_ITEMS_REPORTED
        per_robot = await _robot_events(store.client, COUNT)
        missing = [i for i, events in enumerate(per_robot) if events != ["reaped"]]
        assert not missing, f"{len(missing)} robots without their reaped event"
        assert report["events_recorded"] == COUNT + 1  # every robot, and the summary
        assert report["events_not_recorded"] == 0 and report["events_capped"] == 0
        assert "warning" not in res.err and "per-robot events" not in res.err

        res = await ainvoke(["registry", "restore", str(backup), *every], backend.env)
        assert res.code == 0, res.err
        result = json.loads(res.out)
        assert result["written"] == COUNT and result["events_recorded"] == COUNT + 1
        per_robot = await _robot_events(store.client, COUNT)
        assert all(events == ["reaped", "imported"] for events in per_robot)
        last = await store.client.xrevrange(KEYS.robot_events_key(f"bulk-{COUNT - 1}"), count=1)
        assert json.loads(last[0][1]["detail"])["file"] == str(backup)


async def _summaries(client: Any) -> list[dict[str, Any]]:
    """The details of the CLI's summary events (no robot), oldest first."""
    entries = await client.xrange(KEYS.events_key(CLI_WRITER))
    return [json.loads(f["detail"]) for _, f in entries if not f["robot_id"]]


async def test_reap_and_restore_record_the_first_robots_by_default_and_say_so(
    backend: Backend, tmp_path: Path
) -> None:
    """By default a run gives its first DEFAULT_ROBOT_EVENTS robots their own event; the
    summary event counts them all, -o json says how many were left out, and one stderr line
    says how to record every one."""
    count = DEFAULT_ROBOT_EVENTS + 300
    left_out = count - DEFAULT_ROBOT_EVENTS
    line = (
        f"wsctl: per-robot events recorded for the first {DEFAULT_ROBOT_EVENTS:,} of "
        f"{count:,} robots; --robot-events all records every one\n"
    )
    backup = tmp_path / "reap.jsonl"
    async with open_test_store(backend) as store:
        await _fill(store.client, count)
        res = await ainvoke(
            ["reap", "--timeout", "60", "--backup", str(backup), "-o", "json"], backend.env
        )
        assert res.code == 0, res.err
        assert res.err == line
        report = json.loads(res.out)
        assert report["reaped"] == count
        assert report["events_recorded"] == DEFAULT_ROBOT_EVENTS + 1  # and the summary
        assert report["events_capped"] == report["events_not_recorded"] == left_out
        per_robot = await _robot_events(store.client, count)
        assert sorted(map(tuple, per_robot)) == sorted(
            [("reaped",)] * DEFAULT_ROBOT_EVENTS + [()] * left_out
        )
        (summary,) = await _summaries(store.client)
        assert summary["reaped"] == count and summary["robot_events"] == DEFAULT_ROBOT_EVENTS

        res = await ainvoke(["registry", "restore", str(backup), "-o", "json"], backend.env)
        assert res.code == 0, res.err
        assert res.err == line
        result = json.loads(res.out)
        assert result["written"] == count
        assert result["events_recorded"] == DEFAULT_ROBOT_EVENTS + 1
        assert result["events_capped"] == result["events_not_recorded"] == left_out
        per_robot = await _robot_events(store.client, count)
        assert sum("imported" in events for events in per_robot) == DEFAULT_ROBOT_EVENTS
        summary = (await _summaries(store.client))[-1]
        assert summary["written"] == count and summary["robot_events"] == DEFAULT_ROBOT_EVENTS


async def test_robot_events_none_records_only_the_summary_and_says_nothing(
    single: Backend, tmp_path: Path
) -> None:
    count = 50
    backup = tmp_path / "reap.jsonl"
    none = ["--robot-events", "none", "-o", "json"]
    async with open_test_store(single) as store:
        await _fill(store.client, count)
        res = await ainvoke(["reap", "--timeout", "60", "--backup", str(backup), *none], single.env)
        assert res.code == 0 and res.err == "", res.err
        report = json.loads(res.out)
        assert report["reaped"] == count and report["events_recorded"] == 1
        assert report["events_capped"] == report["events_not_recorded"] == count
        res = await ainvoke(["registry", "restore", str(backup), *none], single.env)
        assert res.code == 0 and res.err == "", res.err
        assert json.loads(res.out)["events_recorded"] == 1
        assert await _robot_events(store.client, count) == [[]] * count
        reaped, imported = await _summaries(store.client)
        assert reaped["reaped"] == count and reaped["robot_events"] == 0
        assert imported["written"] == count and imported["robot_events"] == 0


async def test_robot_events_takes_an_explicit_count(single: Backend, tmp_path: Path) -> None:
    async with open_test_store(single) as store:
        await _fill(store.client, 30)
        res = await ainvoke(
            ["reap", "--timeout", "60", "--robot-events", "7", "--no-backup", "-o", "json"],
            single.env,
        )
        assert res.code == 0, res.err
        assert "for the first 7 of 30 robots" in res.err
        assert json.loads(res.out)["events_capped"] == 23
        assert sum(map(bool, await _robot_events(store.client, 30))) == 7


async def test_a_robot_events_value_that_is_not_a_count_all_or_none_exits_2(
    single: Backend, tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("")
    for args in (
        ["reap"],
        ["registry", "import", str(source)],
        ["registry", "restore", str(source)],
    ):
        res = await ainvoke([*args, "--robot-events", "many"], single.env)
        assert res.code == 2, (args, res.err)
        assert res.err == (
            "wsctl: error: --robot-events takes a count, 'all' or 'none', not 'many'\n"
        ), res.err


async def test_a_stalled_redis_costs_one_timeout_and_every_event_is_counted_lost(
    single: Backend,
) -> None:
    """After the first write that fails, nothing more is sent (each would wait for the
    timeout): the rest are counted, so a bulk command on a frozen Redis reports them in one
    warning and does not hang for a timeout per chunk."""
    import time

    from tests.faults import frozen
    from wsctl.eventlog.model import Event
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
