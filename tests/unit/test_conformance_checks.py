"""The conformance kit's pure core: the catalogue, levels reached, requirements, gateway URLs
and the judgements of entries, liveness records, replies and events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from wsctl.conformance.checks import CHECKS, Phase, Verdict, check_ids, spec
from wsctl.conformance.judgements import (
    entry_problems,
    event_problems,
    record_problems,
    reply_problems,
    stated_interval,
    timestamp_problems,
)
from wsctl.conformance.options import gateway_url, robot_url
from wsctl.conformance.probes import PROBES
from wsctl.conformance.results import CheckResult, ConformanceReport, blocked, level_reached
from wsctl.errors import UsageError
from wsctl.protocol.envelopes import Envelope, Hop, Op, Reply, Status

NOW = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)


def _results(**verdicts: Verdict) -> list[CheckResult]:
    out = [CheckResult(i, Verdict.PASS) for i in check_ids()]
    for result in out:
        key = result.id.replace(".", "__")
        if key in verdicts:
            result.verdict = verdicts[key]
    return out


def test_every_check_is_reported_by_exactly_one_probe() -> None:
    reported = [i for probe in PROBES for i in probe.ids]
    assert sorted(reported) == sorted(check_ids())
    assert len(reported) == len(set(reported))


def test_a_probe_reports_checks_of_one_phase() -> None:
    for probe in PROBES:
        assert len({spec(i).phase for i in probe.ids}) == 1, probe.ids


def test_a_requirement_is_a_check_of_the_same_or_a_lower_level_that_runs_before() -> None:
    for check in CHECKS:
        for need in check.requires:
            required = spec(need)
            assert required.level <= check.level, check.id
            probe_of = {i: p for p in PROBES for i in p.ids}
            same_probe = probe_of[need] is probe_of[check.id]
            assert (
                same_probe
                or required.phase < check.phase
                or (
                    required.phase is check.phase is Phase.GATE
                    and check_ids().index(need) < check_ids().index(check.id)
                )
            ), (check.id, need)


def test_every_level_has_checks_and_ids_are_area_dot_name() -> None:
    assert {c.level for c in CHECKS} == {0, 1, 2}
    assert all(c.id.count(".") == 1 and c.section.startswith("§") for c in CHECKS)
    assert check_ids(0) == [c.id for c in CHECKS if c.level == 0]


def test_the_level_reached_stops_below_the_first_level_with_a_failure() -> None:
    assert level_reached(_results(), 2) == 2
    assert level_reached(_results(send__hop_limit=Verdict.FAIL), 2) == 1
    assert level_reached(_results(fencing__late_disconnect=Verdict.FAIL), 2) == 0
    assert level_reached(_results(registry__entry=Verdict.FAIL), 2) == -1
    # a failure above the level asked does not count
    assert level_reached(_results(send__hop_limit=Verdict.FAIL), 1) == 1


def test_not_applicable_reaches_its_level_but_not_run_does_not() -> None:
    results = _results(batch__send=Verdict.NA)
    assert level_reached(results, 2) == 2
    (batch,) = [r for r in results if r.id == "batch.send"]
    batch.blocked_by = "control.replies"
    assert level_reached(results, 2) == 1


def test_blocked_names_the_first_requirement_that_did_not_pass_outside_the_probe() -> None:
    results = {r.id: r for r in _results(control__replies=Verdict.FAIL)}
    assert blocked("send.delivered", results) == "control.replies"
    assert blocked("kick.superseded", results) is None
    assert blocked("registry.fields", {}) == "registry.entry"
    assert blocked("registry.fields", {}, inside=("registry.entry",)) is None


def test_report_summary_and_json() -> None:
    report = ConformanceReport("ws://g:1/ws/{robot_id}", 2, "abc", "gw-a")
    report.results = _results(send__hop_limit=Verdict.FAIL, batch__send=Verdict.NA)
    assert report.level == 1 and not report.ok
    assert report.summary().startswith("level 1 reached (asked: 2): ")
    data = report.as_dict()
    assert data["counts"] == {"pass": len(CHECKS) - 2, "fail": 1, "n/a": 1}
    first = data["checks"][0]
    assert first["doc"] == "docs/protocol.md#3-keys-and-fields" and first["level"] == 0
    empty = ConformanceReport("ws://g:1/ws/{robot_id}", 0, "abc")
    empty.results = _results(registry__entry=Verdict.FAIL)
    assert empty.summary().startswith("no level reached (asked: 0)")


@pytest.mark.parametrize(
    ("given", "template"),
    [
        ("ws://h:1/ws/{robot_id}", "ws://h:1/ws/{robot_id}"),
        ("wss://h/robots/{robot_id}/socket", "wss://h/robots/{robot_id}/socket"),
        ("ws://h:8080", "ws://h:8080/ws/{robot_id}"),
        ("ws://h:8080/", "ws://h:8080/ws/{robot_id}"),
    ],
)
def test_gateway_url_takes_a_template_or_a_base_url(given: str, template: str) -> None:
    assert gateway_url(given) == template


@pytest.mark.parametrize(
    "given",
    [
        "http://h:1/ws/{robot_id}",
        "ws:///ws/{robot_id}",
        "ws://h:99999",
        "ws://h:1/ws",
        "ws://h:1/{robot_id}/{robot_id}",
        "ws://h:1/ws/{robot_id}?token=x",
    ],
)
def test_gateway_url_refuses_what_is_no_robot_url(given: str) -> None:
    with pytest.raises(UsageError):
        gateway_url(given)


def test_robot_url_percent_encodes_the_id_and_adds_the_token() -> None:
    url = robot_url("ws://h:1/ws/{robot_id}", "a b/ü?#")
    assert url == "ws://h:1/ws/a%20b%2F%C3%BC%3F%23"
    assert robot_url("ws://h:1/ws/{robot_id}", "r", "ab12").endswith("/ws/r?token=ab12")


def _entry(**over: str) -> dict[str, str]:
    fields = {
        "instance_id": "gw",
        "robot_id": "r1",
        "connected_at": "2026-11-27T09:59:00+00:00",
        "last_heartbeat": "2026-11-27T09:59:30+00:00",
        "status": "connected",
        "websocket_state": "active",
    }
    fields.update(over)
    return {k: v for k, v in fields.items() if v != "-"}


def test_entry_problems_name_missing_fields_and_wrong_values() -> None:
    assert entry_problems(_entry(), "r1") == []
    problems = entry_problems(_entry(status="online", websocket_state="-", robot_id="r2"), "r1")
    assert problems == [
        "no websocket_state",
        "robot_id is 'r2', not the robot's id",
        "status is 'online', not 'connected'",
    ]


def test_naive_timestamps_parse_with_a_note_future_and_garbage_do_not() -> None:
    assert timestamp_problems(_entry(), NOW) == ([], [])
    problems, notes = timestamp_problems(_entry(connected_at="2026-11-27T09:59:00"), NOW, UTC)
    assert problems == [] and notes == [
        "connected_at '2026-11-27T09:59:00' has no UTC offset (§3: write one)"
    ]
    future = (NOW + timedelta(seconds=30)).isoformat()
    problems, _ = timestamp_problems(_entry(last_heartbeat=future, connected_at="soon"), NOW)
    assert problems[0].startswith("connected_at 'soon' does not parse")
    assert problems[1].endswith("is 30.0s in the future")
    assert timestamp_problems(_entry(last_heartbeat="1795773600"), NOW)[0] == []


def _record(**over: str) -> dict[str, str]:
    record = {
        "instance_id": "gw",
        "host": "h",
        "port": "8765",
        "pid": "42",
        "ws_url": "ws://h:8765",
        "started_at": "2026-11-27T09:00:00+00:00",
        "last_seen": "2026-11-27T09:59:59+00:00",
        "version": "1.0",
        "connections": "3",
        "protocol": "2",
        "draining": "0",
    }
    record.update(over)
    return {k: v for k, v in record.items() if v != "-"}


def test_record_problems_check_fields_freshness_and_the_ttl() -> None:
    assert record_problems(_record(), "gw", NOW, 90, 30, 60_000) == []
    assert record_problems(_record(protocol="-", draining="-"), "gw", NOW, 90, 30, 60_000) == []
    problems = record_problems(
        _record(port="80a", ws_url="http://h", last_seen="2026-11-27T09:50:00+00:00", version="-"),
        "gw",
        NOW,
        90,
        30,
        -1,
    )
    assert problems == [
        "no version",
        "port '80a' is not a decimal integer",
        "ws_url 'http://h' is not a ws:// or wss:// URL",
        "last_seen is 600.0s old (written every 30s)",
        "no TTL (PEXPIRE it to the fleet's timeout)",
    ]
    assert record_problems(_record(protocol="3"), "gw", NOW, 90, 30, 200_000) == [
        "protocol '3' is neither 1 nor 2",
        "TTL 200.0s is longer than the fleet's timeout 90s",
    ]


def test_reply_problems_check_the_instance_route_sent_at_and_robot() -> None:
    request = Envelope(op=Op.PING, sent_at=100.0)
    good = Reply(
        id=request.id, status=Status.PONG, instance="gw", route=(Hop("gw", 100.1),), sent_at=100.0
    )
    assert reply_problems(good, request, "gw") == []
    bad = Reply(id=request.id, status=Status.PONG, instance="x", sent_at=99.0, robot_id="r")
    assert reply_problems(bad, request, "gw") == [
        "instance is 'x', not 'gw'",
        "route does not end at 'gw' (last hop None)",
        "sent_at 99.0 is not the request's 100.0",
        "robot_id 'r' is not the request's",
    ]


def test_event_problems_check_fields_names_times_and_detail() -> None:
    event = {
        "at": "2026-11-27T10:00:00.1+00:00",
        "event": "disconnected",
        "robot_id": "r",
        "instance_id": "gw",
        "conn_id": "c",
        "detail": '{"code": 1000}',
    }
    assert event_problems(event) == []
    assert event_problems(
        {**event, "event": "exploded", "at": "2026-11-27T10:00:00", "detail": "[]"}
    ) == [
        "unknown event 'exploded'",
        "at '2026-11-27T10:00:00' is not ISO 8601 with an offset",
        "detail '[]' is not a JSON object",
    ]
    assert event_problems({"event": "connected"}) == [
        "no at",
        "no robot_id",
        "no instance_id",
        "no conn_id",
        "no detail",
    ]


def test_the_interval_a_record_states_is_a_positive_number_of_seconds() -> None:
    assert stated_interval({"heartbeat_interval": "0.3"}) == 0.3
    for bad in (
        {},
        {"heartbeat_interval": ""},
        {"heartbeat_interval": "fast"},
        {"heartbeat_interval": "0"},
        {"heartbeat_interval": "nan"},
        {"heartbeat_interval": "inf"},
    ):
        assert stated_interval(bad) is None, bad
    assert record_problems(_record(heartbeat_interval="2"), "gw", NOW, 90, 30, 60_000) == []
    assert record_problems(_record(heartbeat_interval="x"), "gw", NOW, 90, 30, 60_000) == [
        "heartbeat_interval 'x' is not a number of seconds"
    ]
