"""The rule that decides which writer stream names leave the event log's index (pure)."""

from __future__ import annotations

from wsctl.eventlog.model import index_entry_stale

NOW = 1_800_000_000.0
WEEK = 7 * 86400.0


def _id(seconds_ago: float) -> str:
    return f"{int((NOW - seconds_ago) * 1000)}-0"


def test_a_stream_that_is_gone_or_not_a_stream_is_stale() -> None:
    assert index_entry_stale(None, None, NOW, WEEK)
    assert index_entry_stale(None, -2, NOW, WEEK)


def test_a_stream_that_still_expires_by_itself_stays_listed_however_old() -> None:
    assert not index_entry_stale(_id(30 * 86400), 3_600_000, NOW, WEEK)
    assert not index_entry_stale(_id(1), 0, NOW, WEEK)


def test_a_stream_without_expiry_is_stale_once_its_newest_event_is_past_the_retention() -> None:
    assert index_entry_stale(_id(WEEK + 1), -1, NOW, WEEK)
    assert not index_entry_stale(_id(WEEK - 60), -1, NOW, WEEK)
    assert index_entry_stale("garbage", None, NOW, WEEK)  # an id that is not a time: epoch 0
