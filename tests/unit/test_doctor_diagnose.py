"""doctor's pure diff: each planted fault becomes exactly the expected finding."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from wsctl.ops.doctor.diagnose import Facts, Finding, Kind, Session, Severity, diagnose, healthy
from wsctl.registry.instances import InstanceRecord
from wsctl.registry.model import entry_from_hash, format_ts, wrong_type_entry

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
ASKED = NOW.timestamp()


def entry(
    robot: str, instance: str, age: float = 1.0, conn: str | None = "c", connected_age: float = 600
):  # type: ignore[no-untyped-def]
    fields = {
        "instance_id": instance,
        "robot_id": robot,
        "last_heartbeat": format_ts(NOW - timedelta(seconds=age)),
        "connected_at": format_ts(NOW - timedelta(seconds=connected_age)),
    }
    if conn:
        fields["conn_id"] = conn
    return entry_from_hash(robot, fields, UTC)


def record(instance: str, age: float = 1.0) -> InstanceRecord:
    return InstanceRecord(instance, last_seen=format_ts(NOW - timedelta(seconds=age)))


def facts(**kw):  # type: ignore[no-untyped-def]
    base = Facts(asked_at=ASKED)
    for key, value in kw.items():
        setattr(base, key, value)
    return base


def kinds(findings) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(f.kind.value for f in findings)


def test_healthy_fleet_has_no_findings() -> None:
    f = facts(
        entries={"r1": entry("r1", "gw-a")},
        records={"gw-a": record("gw-a")},
        listening={"gw-a": True},
        inventories={"gw-a": [Session("r1", "c", ASKED - 600)]},
    )
    assert diagnose(f, NOW, 90, "ws_conn:") == []


def test_ghost_orphan_and_split_owner() -> None:
    f = facts(
        entries={"ghost": entry("ghost", "gw-a"), "split": entry("split", "gw-b")},
        records={"gw-a": record("gw-a"), "gw-b": record("gw-b")},
        listening={"gw-a": True, "gw-b": True},
        inventories={
            "gw-a": [Session("orphan", "x", ASKED - 60), Session("split", "y", ASKED - 60)],
            "gw-b": [],
        },
    )
    found = diagnose(f, NOW, 90, "ws_conn:")
    assert kinds(found) == ["ghost", "ghost", "orphan", "split_owner"]
    assert {f.robot_id for f in found if f.kind is Kind.GHOST} == {"ghost", "split"}


def test_fresh_differences_are_in_flight_not_faults() -> None:
    f = facts(
        entries={"new": entry("new", "gw-a", connected_age=0.5)},
        records={"gw-a": record("gw-a")},
        listening={"gw-a": True},
        inventories={"gw-a": [Session("arriving", "z", ASKED - 0.5)]},
    )
    assert diagnose(f, NOW, 90, "ws_conn:") == []


def test_dead_owner_only_when_reap_dead_instances_would_call_it_dead() -> None:
    """Dead: not listening and no record while its entries carry conn_id (a protocol gateway),
    or an expired record. An owner with no record and no conn_id may be a live original-design
    gateway, even in a fleet where others write records: unknown."""
    entries = {"r1": entry("r1", "gw-gone", conn=None)}
    with_records = facts(
        entries=entries,
        records={"gw-a": record("gw-a")},
        listening={"gw-a": True, "gw-gone": False},
        inventories={"gw-a": []},
    )
    found = {f.kind for f in diagnose(with_records, NOW, 90, "ws_conn:")}
    assert Kind.UNKNOWN_OWNER in found and Kind.DEAD_OWNER not in found
    with_records.entries = {"r1": entry("r1", "gw-gone", conn="c")}
    assert Kind.DEAD_OWNER in {f.kind for f in diagnose(with_records, NOW, 90, "ws_conn:")}
    with_records.entries = {"r1": entry("r1", "gw-gone", conn=None)}
    with_records.records = {"gw-a": record("gw-a"), "gw-gone": record("gw-gone", age=600)}
    assert Kind.DEAD_OWNER in {f.kind for f in diagnose(with_records, NOW, 90, "ws_conn:")}
    seed_fleet = facts(entries=entries, listening={"gw-gone": False})
    found = {f.kind: f for f in diagnose(seed_fleet, NOW, 90, "ws_conn:")}
    assert set(found) == {Kind.UNKNOWN_OWNER, Kind.NOT_CHECKED}
    assert {f.severity.value for f in found.values()} == {"info"}


def test_alive_but_not_subscribed_and_no_reply() -> None:
    f = facts(
        records={"gw-z": record("gw-z"), "gw-s": record("gw-s")},
        listening={"gw-z": False, "gw-s": True},
        no_reply={"gw-s"},
    )
    found = diagnose(f, NOW, 90, "ws_conn:")
    assert kinds(found) == ["no_reply", "not_checked", "not_checked", "not_subscribed"]
    unchecked = {f.instance_id: f.detail for f in found if f.kind is Kind.NOT_CHECKED}
    assert "did not answer the inventory request" in unchecked["gw-s"]
    assert "alive (fresh liveness record) but nobody listens" in unchecked["gw-z"]


def test_doctor_says_which_checks_it_could_not_make_for_an_original_design_instance() -> None:
    f = facts(
        entries={"r1": entry("r1", "gw-a"), "r2": entry("r2", "orig-b", conn=None)},
        records={"gw-a": record("gw-a")},
        listening={"gw-a": True, "orig-b": False},
        inventories={"gw-a": [Session("r1", "c", ASKED - 600)]},
    )
    found = [f for f in diagnose(f, NOW, 90, "ws_conn:") if f.kind is Kind.NOT_CHECKED]
    (only,) = found
    assert only.instance_id == "orig-b" and only.severity.value == "info"
    assert only.detail.startswith(
        "could not check its sockets against the registry (ghosts, orphans, split owners) "
        "and its liveness: orig-b does not speak wsctl's control protocol"
    )
    assert "docs/protocol.md" in only.fix and "FastAPI adapter" in only.fix


def test_an_instance_without_a_liveness_record_that_listens_misses_only_that_check() -> None:
    f = facts(
        entries={"r1": entry("r1", "gw-a")},
        listening={"gw-a": True},
        inventories={"gw-a": [Session("r1", "c", ASKED - 600)]},
    )
    (only,) = diagnose(f, NOW, 90, "ws_conn:")
    assert only.kind is Kind.NOT_CHECKED
    assert only.detail == "could not check its liveness: it writes no liveness record"


def test_clock_skew_malformed_and_stale() -> None:
    f = facts(
        entries={
            "future": entry("future", "gw-a", age=-3600),
            "junk": wrong_type_entry("junk", "string"),
            "old": entry("old", "gw-a", age=500),
        },
        records={"gw-a": record("gw-a")},
        listening={"gw-a": True},
        inventories={"gw-a": [Session("future", "c", 0), Session("old", "c", 0)]},
    )
    assert kinds(diagnose(f, NOW, 90, "ws_conn:")) == ["clock_skew", "malformed", "stale"]


def test_a_malformed_entry_whose_reason_says_future_is_not_clock_skew() -> None:
    """Fixed bug: clock skew was recognised by the word "future" in the reason, so a robot_id
    field naming a robot called ``future-1`` made a malformed entry read as clock skew."""
    wrong_id = entry("r1", "gw-a")
    wrong_id = entry_from_hash("r1", {**wrong_id.fields, "robot_id": "future-1"}, UTC)
    f = facts(
        entries={"r1": wrong_id},
        records={"gw-a": record("gw-a")},
        listening={"gw-a": True},
        inventories={"gw-a": [Session("r1", "c", 0)]},
    )
    assert kinds(diagnose(f, NOW, 90, "ws_conn:")) == ["malformed"]


def test_doctor_is_healthy_with_informational_findings_only() -> None:
    info = Finding(Kind.NOT_CHECKED, Severity.INFO, "could not check", "")
    warning = Finding(Kind.STALE, Severity.WARNING, "stale", "")
    assert healthy([]) and healthy([info])
    assert not healthy([info, warning])


def test_prefix_collision_when_foreign_writers_share_the_prefix() -> None:
    f = facts(
        entries={"mine": entry("mine", "gw-a"), "theirs": entry("theirs", "other-team", conn=None)},
        records={"gw-a": record("gw-a")},
        listening={"gw-a": True, "other-team": False},
        inventories={"gw-a": [Session("mine", "c", 0)]},
    )
    assert "prefix_collision" in kinds(diagnose(f, NOW, 90, "ws_conn:"))


def test_uncovered_cluster_slots_are_an_error() -> None:
    f = facts(cluster={"uncovered_slots": 10, "uncovered_ranges": ["0-9"], "primaries": []})
    (only,) = diagnose(f, NOW, 90, "ws_conn:")
    assert only.kind is Kind.UNCOVERED_SLOTS and "0-9" in only.detail


async def test_ghosts_that_changed_since_the_read_are_not_reported() -> None:
    import fakeredis

    from wsctl.ops.deployment import Deployment
    from wsctl.ops.doctor.diagnose import Finding, Severity
    from wsctl.ops.doctor.fleet import confirm_ghosts

    store = Deployment(fakeredis.FakeAsyncRedis(decode_responses=True))
    seen = {r: entry(r, "gw-a", conn=f"{r}-c1") for r in ("same", "moved", "gone")}
    for robot, conn in (("same", "same-c1"), ("moved", "moved-c2")):
        await store.client.hset(f"ws_conn:{robot}", mapping={**seen[robot].fields, "conn_id": conn})
    findings = [
        Finding(Kind.GHOST, Severity.WARNING, "x", "y", robot_id=r, instance_id="gw-a")
        for r in seen
    ]
    kept = await confirm_ghosts(store, findings, facts(entries=dict(seen)))
    assert [f.robot_id for f in kept] == ["same"]


def test_every_suggested_command_quotes_ids_holding_shell_syntax() -> None:
    """Review: doctor suggested `wsctl reap --dead-instances --instance gw a;touch /tmp/PWNED`
    for an instance id holding shell syntax. Every command-shaped fix is quoted."""
    import shlex

    evil = "gw a;touch /tmp/PWNED"
    robot = "r $(id)"
    f = facts(
        entries={
            robot: entry(robot, evil),
            "stale": entry("stale", evil, age=600),
            "ghost": entry("ghost", "gw-b"),
        },
        records={"gw-b": record("gw-b"), "gw-x": record("gw-x")},
        listening={"gw-b": True, "gw-x": True},
        inventories={"gw-b": [], "gw-x": [Session("split y", "s", ASKED - 60)]},
    )
    f.entries["split y"] = entry("split y", "gw-b")
    found = diagnose(f, NOW, 90, "ws_conn:")
    commands = [x.fix for x in found if x.fix and "wsctl " in x.fix]
    assert commands
    for fix in commands:
        command = fix[fix.index("wsctl ") :].split(" (")[0].rstrip(")").split(" to find")[0]
        words = shlex.split(command)
        assert not any(";" in w and w != evil for w in words), fix
        for ident in (evil, robot, "split y"):
            if ident.split()[0] in command and ident in fix:
                assert shlex.quote(ident) in fix, fix
    assert any(shlex.quote(evil) in fix for fix in commands)
    assert not any("run wsctl gateway instances" in (x.fix or "") for x in found)
