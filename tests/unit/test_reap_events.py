"""Reap passes with their event log (ops.reap_events) on fakeredis, and the CLI's lines about
how a pass's events went."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.seedlike import seed_hash
from wsctl.cli.eventlog import warn_pass_events
from wsctl.ops.events import IndexPrune, RecordOutcome
from wsctl.ops.reap import ReapOptions
from wsctl.ops.reap_events import PassEvents, reap_recorded
from wsctl.registry.store import RegistryStore


class NoIndexRedis(fakeredis.FakeAsyncRedis):
    """The event log's index cannot be read (SSCAN fails); everything else works."""

    async def sscan(self, *args: Any, **kwargs: Any) -> Any:
        raise RedisConnectionError("Connection reset by peer")


async def _stale(client: fakeredis.FakeAsyncRedis, count: int) -> RegistryStore:
    for i in range(count):
        await client.hset(f"ws_conn:r{i}", mapping=seed_hash(f"r{i}", "gw-a", age_s=600))
    return RegistryStore(client, batch_size=2)


async def test_a_pass_records_a_reaped_event_per_robot_and_a_summary() -> None:
    client = fakeredis.FakeAsyncRedis(decode_responses=True)
    store = await _stale(client, 3)
    report, events = await reap_recorded(store, client, ReapOptions(timeout=90), None)
    assert report.reaped == 3
    assert events is not None and events.index.error is None and events.cap_note is None
    assert events.recorded.written == report.events_recorded == 4  # 3 robots + the summary
    assert report.events_not_recorded == 0


async def test_the_robot_events_count_leaves_robots_out_and_says_so() -> None:
    client = fakeredis.FakeAsyncRedis(decode_responses=True)
    store = await _stale(client, 3)
    report, events = await reap_recorded(store, client, ReapOptions(timeout=90), 1)
    assert events is not None and events.cap_note is not None
    assert "first 1 of 3 robots" in events.cap_note
    assert (report.events_recorded, report.events_capped) == (2, 2)


async def test_an_index_that_cannot_be_pruned_is_named_and_the_pass_stands() -> None:
    client = NoIndexRedis(decode_responses=True)
    store = await _stale(client, 3)
    report, events = await reap_recorded(store, client, ReapOptions(timeout=90), None)
    assert report.reaped == 3 and await client.keys("ws_conn:*") == []
    assert events is not None and events.index == IndexPrune(error="ConnectionError")
    assert report.events_index_pruned == 0


async def test_a_dry_run_records_no_events() -> None:
    client = fakeredis.FakeAsyncRedis(decode_responses=True)
    store = await _stale(client, 2)
    report, events = await reap_recorded(store, client, ReapOptions(timeout=90, dry_run=True))
    assert report.candidates == 2 and events is None
    assert await client.keys("ws_*events:*") == []


def test_the_cli_warns_about_lost_events_the_count_and_the_index_in_that_order(
    capsys: pytest.CaptureFixture[str],
) -> None:
    warn_pass_events(
        PassEvents(
            RecordOutcome(written=1, lost=2, error="ConnectionError: gone"),
            "per-robot events recorded for the first 1 of 3 robots",
            IndexPrune(error="TimeoutError"),
        )
    )
    warn_pass_events(None)
    assert capsys.readouterr().err.splitlines() == [
        "wsctl: warning: 2 event(s) not recorded in the event log (ConnectionError: gone)",
        "wsctl: per-robot events recorded for the first 1 of 3 robots",
        "wsctl: warning: event log index not pruned (TimeoutError)",
    ]
