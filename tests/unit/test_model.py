"""Tolerant parsing of entries and staleness, with ``now`` passed in (no Redis)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsctl.registry.model import (
    Registration,
    State,
    assess,
    entry_from_hash,
    format_ts,
    parse_timestamp,
    wrong_type_entry,
)

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


def seed_fields(heartbeat: str, **extra: str) -> dict[str, str]:
    return {
        "instance_id": "a1b2c3d4e5f60718",
        "robot_id": "r1",
        "connected_at": heartbeat,
        "last_heartbeat": heartbeat,
        "status": "connected",
        "websocket_state": "active",
        **extra,
    }


def test_naive_timestamps_are_read_in_the_configured_zone() -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    parsed = parse_timestamp("2026-11-27T20:00:00.123456", shanghai)
    assert parsed == datetime(2026, 11, 27, 12, 0, 0, 123456, tzinfo=UTC)


def test_naive_timestamps_default_to_local_time() -> None:
    naive = datetime(2026, 1, 2, 3, 4, 5)
    assert parse_timestamp(naive.isoformat(), None) == naive.astimezone(UTC)


@pytest.fixture
def berlin_local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local zone is Europe/Berlin (DST) for one test; caches start empty."""
    import time

    from wsctl.registry import model

    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    model._local_offsets.clear()
    model._parsed.clear()
    yield
    monkeypatch.undo()
    time.tzset()
    model._local_offsets.clear()
    model._parsed.clear()


NAIVE_FORMS = [
    "2026-03-29T01:59:59.999999",  # the last winter second (+01:00)
    "2026-03-29T03:00:00",  # the first summer second (+02:00)
    "2026-03-29T00:30:00",
    "2026-07-01T12:00:00.5",
    "2026-07-01 12:00:00",
    "2026-10-25T01:30:00",
    "2026-10-25T03:30:00",
    "2026-12-31",
    "20260701T120000",
    "2026-07-01T12",
]


def test_naive_local_times_convert_like_astimezone_across_dst(berlin_local_time: None) -> None:
    """Offsets are cached per hour of local time; every form, on each side of a DST change,
    read cold and then from the caches, converts exactly as ``datetime.astimezone`` does."""
    for _ in range(2):
        for raw in NAIVE_FORMS:
            parsed = parse_timestamp(raw, None)
            assert parsed == datetime.fromisoformat(raw).astimezone(UTC), raw
            assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "raw",
    [
        "2026-11-27T12:00:00+00:00",
        "2026-11-27T12:00:00Z",
        "2026-11-27T13:00:00+01:00",
        "1795780800",
        "1795780800.0",
        "1795780800000",
        "17957808.00e+02",
    ],
)
def test_aware_iso_and_epoch_seconds_or_millis_parse_to_the_same_instant(raw: str) -> None:
    assert parse_timestamp(raw, UTC) == NOW


def test_tiny_epoch_seconds_in_e_notation_are_numbers_not_iso_dates() -> None:
    """ "1.5e-05" has a dash where an ISO date has one; it is still epoch seconds."""
    assert parse_timestamp("1.5e-05", UTC) == datetime(1970, 1, 1, 0, 0, 0, 15, tzinfo=UTC)


@pytest.mark.parametrize("raw", ["", "yesterday", "nan", "inf", "2026-13-45"])
def test_garbage_timestamps_raise_value_error(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(raw, UTC)


def test_wsctl_writes_aware_utc_iso() -> None:
    moment = datetime(2026, 11, 27, 20, 0, tzinfo=timezone(timedelta(hours=8)))
    assert format_ts(moment) == "2026-11-27T12:00:00+00:00"


def test_seed_entry_is_online_then_stale_after_timeout() -> None:
    entry = entry_from_hash("r1", seed_fields("2026-11-27T12:00:00"), UTC)
    assert not entry.problems and entry.conn_id is None
    assert assess(entry, NOW + timedelta(seconds=90), 90).state is State.ONLINE
    verdict = assess(entry, NOW + timedelta(seconds=90.5), 90)
    assert verdict.state is State.STALE and verdict.heartbeat_age == 90.5


def test_missing_required_fields_make_a_malformed_entry_with_reasons() -> None:
    entry = entry_from_hash("r1", {"robot_id": "r1"}, UTC)
    verdict = assess(entry, NOW, 90)
    assert verdict.state is State.MALFORMED
    assert "missing instance_id" in verdict.reason and "missing last_heartbeat" in verdict.reason


def test_unparsable_heartbeat_is_malformed_not_a_crash() -> None:
    entry = entry_from_hash("r1", seed_fields("soon"), UTC)
    assert assess(entry, NOW, 90).state is State.MALFORMED


def test_future_heartbeat_beyond_skew_is_reported_as_clock_skew() -> None:
    entry = entry_from_hash("r1", seed_fields("2026-11-27T12:01:00"), UTC)
    verdict = assess(entry, NOW, 90)
    assert verdict.state is State.MALFORMED and "future" in verdict.reason
    assert verdict.clock_skew
    assert assess(entry, NOW + timedelta(seconds=57), 90).state is State.ONLINE


def test_robot_id_field_that_disagrees_with_key_is_malformed() -> None:
    entry = entry_from_hash("r2", seed_fields("2026-11-27T12:00:00"), UTC)
    assert "does not match key" in assess(entry, NOW, 90).reason
    assert not assess(entry, NOW, 90).clock_skew


def test_non_hash_key_is_malformed_with_its_type() -> None:
    verdict = assess(wrong_type_entry("r1", "string"), NOW, 90)
    assert verdict.state is State.MALFORMED and "type string" in verdict.reason


def test_extra_fields_are_kept_on_the_entry() -> None:
    entry = entry_from_hash("r1", seed_fields("2026-11-27T12:00:00", firmware="1.2"), UTC)
    assert entry.fields["firmware"] == "1.2"


def test_registration_writes_seed_fields_plus_conn_id() -> None:
    record = Registration("r1", "gw-a", "c-1", NOW).to_hash()
    assert record["conn_id"] == "c-1" and record["last_heartbeat"] == "2026-11-27T12:00:00+00:00"
    assert {"instance_id", "robot_id", "connected_at", "status", "websocket_state"} <= set(record)


@given(st.floats(min_value=0, max_value=10_000), st.floats(min_value=1, max_value=1000))
def test_stale_exactly_when_age_exceeds_timeout(age: float, timeout: float) -> None:
    heartbeat = NOW - timedelta(seconds=age)
    entry = entry_from_hash("r1", seed_fields(format_ts(heartbeat)), UTC)
    verdict = assess(entry, NOW, timeout)
    expected = State.STALE if verdict.heartbeat_age > timeout else State.ONLINE  # type: ignore[operator]
    assert verdict.state is expected
    assert abs(verdict.heartbeat_age - age) < 1e-3  # type: ignore[operator]


HOSTILE_TIMES = [
    "99999999999999999999",  # epoch beyond datetime (OSError errno 75 / OverflowError)
    "1e300",
    "-1e300",
    "-99999999999",
    "9999-12-31T23:59:59",  # naive, moved across the local offset
    "0001-01-01T00:00:00",  # "year 0 is out of range"
    "0001-01-01T00:00:00+05:00",
    "9999-12-31T23:59:59-05:00",
    "1e11",
    "2026-02-30T00:00:00",
    "x" * 10_000,
]


@pytest.mark.parametrize("raw", HOSTILE_TIMES)
@pytest.mark.parametrize(
    "zone", [None, UTC, ZoneInfo("Pacific/Kiritimati"), ZoneInfo("Etc/GMT+12")]
)
def test_hostile_timestamps_make_a_malformed_entry_never_an_exception(raw: str, zone) -> None:  # type: ignore[no-untyped-def]
    from wsctl.ops.views import connection_row

    for name in ("last_heartbeat", "connected_at"):
        fields = seed_fields("2026-11-27T11:59:59+00:00", **{name: raw})
        entry = entry_from_hash("r1", fields, zone)
        row = connection_row(entry, NOW, 90)
        if entry.problems:
            assert row["state"] == "malformed" and name in row["reason"]
            assert len(row["reason"]) < 200  # a huge value cannot make a huge reason
        else:
            assert row["state"] in ("online", "stale", "malformed")


@given(st.dictionaries(st.sampled_from(list(seed_fields("x"))) | st.text(), st.text()))
def test_any_value_of_any_field_is_survivable(fields: dict[str, str]) -> None:
    from wsctl.ops.views import connection_row

    row = connection_row(entry_from_hash("r1", fields), NOW, 90)
    assert row["state"] in ("online", "stale", "malformed")


@given(st.from_regex(r"-?[0-9]{1,25}(\.[0-9]{0,5})?(e[-+]?[0-9]{1,4})?", fullmatch=True))
def test_any_epoch_number_parses_or_is_refused_with_a_reason(raw: str) -> None:
    try:
        parse_timestamp(raw)
    except ValueError as exc:
        assert str(exc)


def test_reasons_give_durations_in_human_units() -> None:
    """Review found "no heartbeat for 28461161s" and "-2912112d14h"."""
    stale = entry_from_hash("r1", seed_fields(format_ts(NOW - timedelta(days=329, hours=10))))
    assert assess(stale, NOW, 90).reason == "no heartbeat for 329d10h"
    ahead = entry_from_hash("r1", seed_fields(format_ts(NOW + timedelta(minutes=5))))
    assert assess(ahead, NOW, 90).reason.startswith("last_heartbeat is 5m00s in the future")
