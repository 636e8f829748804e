"""Hostile registry data and hostile files against real Redis, through the CLI (issue #15):
any value of any field is survivable, imports never report success for nothing, backups
restore every key they deleted, exports never truncate what they would replace, and what
`set` and `import` write is judged like every listing judges it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Backend, invoke, open_test_store
from tests.seedlike import seed_hash, seed_store_connection
from wsctl.registry.store import DeleteOutcome

HOSTILE = {
    "huge-ts": {"instance_id": "gw-a", "last_heartbeat": "99999999999999999999"},
    "huge-ca": {
        "instance_id": "gw-a",
        "last_heartbeat": "2026-01-01T00:00:00",
        "connected_at": "1e300",
    },
    "y9999": {"instance_id": "gw-a", "last_heartbeat": "9999-12-31T23:59:59"},
    "y0001": {
        "instance_id": "gw-a",
        "last_heartbeat": "2026-01-01T00:00:00",
        "connected_at": "0001-01-01T00:00:00",
    },
    "neg": {"instance_id": "gw-a", "last_heartbeat": "-1e300"},
}


def _ok(res) -> None:  # type: ignore[no-untyped-def]
    assert res.code not in (70,) and "internal error" not in res.err, res
    assert "Traceback" not in res.err


async def test_one_entry_with_an_out_of_range_time_breaks_no_command(
    backend: Backend, tmp_path: Path
) -> None:
    async with open_test_store(backend) as store:
        for robot, fields in HOSTILE.items():
            await store.client.hset(f"ws_conn:{robot}", mapping=fields)
        await seed_store_connection(store.client, "fine", "gw-a")
    env = backend.env
    for args in (
        ["list", "connections"],
        ["list", "connections", "-o", "wide"],
        ["list", "connections", "-o", "json"],
        ["list", "connections", "--sort", "heartbeat"],
        ["list", "connections", "--sort", "connected"],
        ["list", "robots"],
        ["list", "instances"],
        ["list", "instances", "-o", "json"],
        ["reap", "--dry-run"],
        ["doctor"],
        ["registry", "export"],
    ):
        res = invoke(args, env=env)
        _ok(res)
        assert res.code in (0, 1), (args, res)
    rows = json.loads(invoke(["list", "connections", "-o", "json"], env=env).out)
    states = {r["robot_id"]: (r["state"], r["reason"]) for r in rows}
    for robot in HOSTILE:
        assert states[robot][0] == "malformed" and states[robot][1], robot
    assert states["fine"][0] == "online"
    for robot in HOSTILE:
        res = invoke(["show", robot], env=env)
        _ok(res)
        assert res.code == 0 and "malformed" in res.out
        res = invoke(["registry", "set", robot, "status=checked"], env=env)
        _ok(res)
        assert res.code == 0, res
    backup = tmp_path / "b.jsonl"
    res = invoke(["reap", "--include-malformed", "--backup", str(backup)], env=env)
    _ok(res)
    assert res.code == 0
    res = invoke(["registry", "restore", str(backup), "-o", "json"], env=env)
    assert res.code == 0 and json.loads(res.out)["written"] == len(HOSTILE), res
    res = invoke(["registry", "rm", *HOSTILE, "--no-backup"], env=env)
    _ok(res)
    assert res.code == 0


def test_import_from_a_pipe_reads_everything(single: Backend, tmp_path: Path) -> None:
    """`wsctl registry import <(cat file)`: validation used to drain the pipe, then the write
    pass read nothing and the command exited 0 ("records 30, written 0")."""
    file = tmp_path / "export.jsonl"
    lines = [{"robot_id": f"p{i}", "fields": seed_hash(f"p{i}", "gw-a")} for i in range(30)]
    file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    wsctl = f"{sys.executable} -m wsctl"
    proc = subprocess.run(
        ["bash", "-c", f"{wsctl} registry import <(cat {file}) -o json"],
        capture_output=True,
        text=True,
        env={**os.environ, **single.env},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["records"] == 30 and result["written"] == 30
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    lines2 = [{"robot_id": f"q{i}", "fields": seed_hash(f"q{i}", "gw-a")} for i in range(5)]
    writer = subprocess.Popen(["bash", "-c", f"cat > {fifo}"], stdin=subprocess.PIPE, text=True)
    assert writer.stdin is not None
    writer.stdin.write("".join(json.dumps(line) + "\n" for line in lines2))
    writer.stdin.close()
    res = invoke(["registry", "import", str(fifo), "-o", "json"], env=single.env)
    writer.wait(timeout=10)
    assert res.code == 0 and json.loads(res.out)["written"] == 5, res


async def test_a_reap_backup_restores_keys_of_every_type(backend: Backend, tmp_path: Path) -> None:
    async with open_test_store(backend) as store:
        client = store.client
        await client.set("ws_conn:junk-1", "précieux \x00 value")
        await client.rpush("ws_conn:junk-list", "a", "b", "c")
        await client.sadd("ws_conn:junk-set", "x", "y")
        for i in range(3):
            await seed_store_connection(client, f"old{i}", "gw-gone", age_s=600)
    backup = tmp_path / "reap.jsonl"
    res = invoke(["reap", "--include-malformed", "--backup", str(backup)], env=backend.env)
    assert res.code == 0, res
    records = [json.loads(line) for line in backup.read_text().splitlines()]
    junk = [r for r in records if r.get("key_type") == "string"]
    assert len(records) == 6 and junk and junk[0]["dump"]
    async with open_test_store(backend) as store:
        assert [e async for e in store.iter_entries()] == []
    res = invoke(["registry", "restore", str(backup), "-o", "json"], env=backend.env)
    assert res.code == 0 and json.loads(res.out)["written"] == 6, res
    async with open_test_store(backend) as store:
        client = store.client
        assert await client.get("ws_conn:junk-1") == "précieux \x00 value"
        assert await client.lrange("ws_conn:junk-list", 0, -1) == ["a", "b", "c"]
        assert await client.smembers("ws_conn:junk-set") == {"x", "y"}
        assert await client.hget("ws_conn:old1", "instance_id") == "gw-gone"
    # restoring again: every key exists, nothing is replaced
    res = invoke(["registry", "restore", str(backup), "-o", "json"], env=backend.env)
    assert res.code == 0 and json.loads(res.out)["skipped_existing"] == 6


async def test_a_changed_value_of_a_non_hash_key_is_not_deleted(
    single: Backend, tmp_path: Path
) -> None:
    """The fenced delete of a key that is not a hash requires the value that was backed up."""
    from wsctl.ops.reap import ReapOptions, reap

    async with open_test_store(single) as store:
        await store.client.set("ws_conn:junk-1", "v1")
        (entry,) = [e async for e in store.iter_entries()]
        await store.attach_dumps([entry])
        await store.client.set("ws_conn:junk-1", "v2")
        assert await store.delete_observed([entry]) == [DeleteOutcome.CHANGED]
        report = await reap(store, ReapOptions(include_malformed=True, backup=tmp_path / "b.jsonl"))
        assert report.reaped == 1


async def test_an_old_backup_without_values_restores_all_it_can(
    single: Backend, tmp_path: Path
) -> None:
    """A backup line of a string key written without its value (older wsctl): the command
    says which line could not be restored (exit 1) and restores every other entry."""
    import base64

    garbage = base64.b64encode(b"not a DUMP payload").decode()
    backup = tmp_path / "old.jsonl"
    backup.write_text(
        json.dumps({"robot_id": "junk-1", "fields": {}, "key_type": "string", "reason": "m"})
        + "\n"
        + json.dumps({"robot_id": "junk-2", "fields": {}, "key_type": "string", "dump": garbage})
        + "\n"
        + "".join(
            json.dumps({"robot_id": f"r{i}", "fields": seed_hash(f"r{i}", "gw")}) + "\n"
            for i in range(3)
        )
    )
    res = invoke(["registry", "restore", str(backup), "-o", "json"], env=single.env)
    assert res.code == 1, res
    out = json.loads(res.out)
    assert out["written"] == 3 and out["not_restored"] == 2
    assert "not restored: line 1, robot 'junk-1'" in res.err
    assert "not restored: line 2, robot 'junk-2'" in res.err  # RESTORE refused the payload
    async with open_test_store(single) as store:
        assert len([e async for e in store.iter_entries()]) == 3


async def test_export_to_a_file_never_truncates_it_on_failure(
    single: Backend, tmp_path: Path
) -> None:
    precious = tmp_path / "precious.jsonl"
    precious.write_text('{"robot_id":"keep","fields":{"a":"b"}}\n')
    res = invoke(
        ["registry", "export", "-f", str(precious)],
        env={"WSCTL_REDIS_URL": "redis://127.0.0.1:1/0"},
    )
    assert res.code == 3
    assert precious.read_text() == '{"robot_id":"keep","fields":{"a":"b"}}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.jsonl"]  # no temp left
    async with open_test_store(single) as store:
        await seed_store_connection(store.client, "r1", "gw-a")
    res = invoke(["registry", "export", "-f", str(precious)], env=single.env)
    assert res.code == 0 and json.loads(precious.read_text())["robot_id"] == "r1"
    res = invoke(["registry", "export", "-f", "/dev/null"], env=single.env)
    assert res.code == 0 and Path("/dev/null").is_char_device()


@pytest.mark.parametrize("dry_run", [False, True])
def test_import_refuses_what_set_refuses(single: Backend, dry_run: bool) -> None:
    good = seed_hash("r1", "gw-a")
    cases = {
        "already on line 1": [
            {"robot_id": "r1", "fields": good},
            {"robot_id": "r1", "fields": {**good, "status": "x"}},
        ],
        "robot_id field 'other' does not match key": [
            {"robot_id": "r1", "fields": {**good, "robot_id": "other"}}
        ],
        "bad last_heartbeat: 'yesterday'": [
            {"robot_id": "r1", "fields": {**good, "last_heartbeat": "yesterday"}}
        ],
        "in the future": [
            {"robot_id": "r1", "fields": {**good, "last_heartbeat": "9999-12-31T23:59:59+00:00"}}
        ],
        "missing instance_id": [{"robot_id": "r1", "fields": {"last_heartbeat": "1"}}],
    }
    extra = ["--dry-run"] if dry_run else []
    for needle, lines in cases.items():
        text = "".join(json.dumps(line) + "\n" for line in lines)
        for flag in ([], ["--overwrite"]):
            res = invoke(["registry", "import", "-", *flag, *extra], env=single.env, stdin=text)
            assert res.code == 2 and needle in res.err and "<stdin>:" in res.err, (needle, res)
            assert len(res.err.splitlines()) == 1
    assert invoke(["show", "r1"], env=single.env).code == 1
    text = json.dumps({"robot_id": "r1", "fields": {**good, "last_heartbeat": "yesterday"}})
    res = invoke(["registry", "import", "-", *extra], env=single.env, stdin=text)
    assert "--allow-malformed writes what a registry held" in res.err
    # an export of a registry holding malformed entries still imports, when asked to
    text = json.dumps({"robot_id": "r1", "fields": {**good, "last_heartbeat": "yesterday"}})
    res = invoke(
        ["registry", "import", "-", "--allow-malformed", "-o", "json", *extra],
        env=single.env,
        stdin=text,
    )
    assert res.code == 0 and json.loads(res.out)["would_write" if dry_run else "written"] == 1


async def test_restore_of_a_backup_holding_a_robot_twice_keeps_the_last(
    single: Backend, tmp_path: Path
) -> None:
    backup = tmp_path / "b.jsonl"
    first = {"robot_id": "r1", "fields": seed_hash("r1", "gw-old")}
    second = {"robot_id": "r1", "fields": seed_hash("r1", "gw-new")}
    backup.write_text(json.dumps(first) + "\n" + json.dumps(second) + "\n")
    res = invoke(["registry", "restore", str(backup), "-o", "json"], env=single.env)
    out = json.loads(res.out)
    assert res.code == 0 and out["written"] == 1 and out["superseded"] == 1
    async with open_test_store(single) as store:
        assert await store.client.hget("ws_conn:r1", "instance_id") == "gw-new"


async def test_set_refuses_values_that_make_the_entry_malformed(single: Backend) -> None:
    async with open_test_store(single) as store:
        await seed_store_connection(store.client, "robot-1", "gw-a")
        before = await store.client.hgetall("ws_conn:robot-1")
    for assignment, needle in (
        ("last_heartbeat=9999-12-31T23:59:59", "last_heartbeat"),
        ("last_heartbeat=9999-12-31T23:59:59+00:00", "in the future"),
        ("connected_at=0001-01-01T00:00:00", "connected_at"),
        ("last_heartbeat=99999999999999999999", "out of the representable time range"),
        ("last_heartbeat=yesterday", "not an ISO time"),
        ("instance_id=", "missing instance_id"),
        ("robot_id=robot-2", "robot_id"),
    ):
        res = invoke(["registry", "set", "robot-1", assignment], env=single.env)
        assert res.code == 2 and needle in res.err, (assignment, res)
        assert "year 0" not in res.err and len(res.err.splitlines()) == 1
    res = invoke(["registry", "set", "robot-2", "status=x", "--create"], env=single.env)
    assert res.code == 2 and "missing instance_id" in res.err
    async with open_test_store(single) as store:
        assert await store.client.hgetall("ws_conn:robot-1") == before
        assert await store.client.exists("ws_conn:robot-2") == 0
    res = invoke(["registry", "set", "robot-1", "status=maintenance", "--touch"], env=single.env)
    assert res.code == 0, res


async def test_unusable_backup_paths_are_refused_before_anything_is_deleted(
    single: Backend, tmp_path: Path
) -> None:
    async with open_test_store(single) as store:
        await seed_store_connection(store.client, "old", "gw-gone", age_s=600)
    for target in (str(tmp_path), "/dev/full", "/dev/null"):
        for args in (["reap", "--backup", target], ["registry", "rm", "old", "--backup", target]):
            res = invoke(args, env=single.env)
            assert res.code == 2 and "backup" in res.err, (args, res)
            assert len(res.err.splitlines()) == 1
    async with open_test_store(single) as store:
        assert await store.client.exists("ws_conn:old") == 1


EVIL = "ok\x1b]0;pwned\x07\x1b[2J"


async def test_escape_sequences_in_registry_data_never_reach_the_terminal(
    single: Backend,
) -> None:
    """Review: `ok\\x1b]0;pwned\\x07\\x1b[2J` in a field or key reached the terminal raw
    through show, list -o wide and doctor (window title set, screen cleared)."""
    async with open_test_store(single) as store:
        await store.client.hset(
            "ws_conn:evil", mapping={**seed_hash("evil", EVIL, age_s=500), "status": EVIL}
        )
        await store.client.hset(f"ws_conn:key{EVIL}", mapping=seed_hash(f"key{EVIL}", "gw-a"))
        await store.client.hset(
            "ws_conn:r2", mapping=seed_hash("r2", "gw a;touch /tmp/PWNED", age_s=500)
        )
    for args in (
        ["show", "evil"],
        ["list", "connections"],
        ["list", "connections", "-o", "wide"],
        ["list", "robots"],
        ["list", "instances", "-o", "wide"],
        ["doctor"],
        ["reap", "--dry-run"],
        ["send", "evil", "hi"],
        ["registry", "rm", "evil", "--if-instance", "gw-a", "--dry-run"],
    ):
        res = invoke(args, env=single.env)
        for text in (res.out, res.err):
            assert "\x1b" not in text and "\x07" not in text, (args, text)
        assert "\\x1b" in res.out + res.err, args  # shown, escaped
    doctor = invoke(["doctor"], env=single.env).out
    steps = doctor.split("next steps:\n")[1].splitlines()
    assert "  wsctl reap --timeout 90 --instance 'gw a;touch /tmp/PWNED' --dry-run" in steps
    assert "  wsctl reap --timeout 90 --instance $'ok\\x1b]0;pwned\\x07\\x1b[2J' --dry-run" in steps
    rows = json.loads(invoke(["list", "connections", "-o", "json"], env=single.env).out)
    assert {r["instance_id"] for r in rows} >= {EVIL}  # machine formats stay exact


# Ids only a registry can hold (wsctl never writes them): a restore puts each back byte-exact.
REGISTRY_ONLY_IDS = [
    "old-\x1b]0;pwned\x07",  # control characters
    "x" * 300,  # longer than any id wsctl accepts
    "",  # the key is the bare prefix
    "bad-\udcff\udcfe",  # bytes that are not UTF-8 (surrogateescape)
    "bidi-\u202e-\x9b",  # a bidi override and a C1 control
]


async def _snapshot(backend: Backend) -> dict[bytes, tuple[str, object]]:
    """Every ws_conn: key as bytes -> (type, value): what `restore` must give back exactly."""
    snap: dict[bytes, tuple[str, object]] = {}
    async with open_test_store(backend) as store:
        async for entry in store.iter_entries():
            key = store.keys.conn_key(entry.robot_id)
            if entry.key_type == "hash":
                value: object = dict(entry.fields)
            else:
                value = await store.client.get(key)
            snap[key.encode("utf-8", "surrogateescape")] = (entry.key_type, value)
    return snap


async def _plant_registry_only_ids(backend: Backend) -> None:
    async with open_test_store(backend) as store:
        client = store.client
        for robot in REGISTRY_ONLY_IDS:
            await client.hset(
                f"ws_conn:{robot}",
                mapping={"instance_id": "gw-old", "last_heartbeat": "2020-01-01T00:00:00"},
            )
        await seed_store_connection(client, "old-1", "gw-old", age_s=600)
        await client.set("ws_conn:junk-1", "value \udcff kept")
        # field names and values are registry data too: not UTF-8, empty, control characters
        await client.hset(
            "ws_conn:odd-fields",
            mapping={
                "instance_id": "gw-old",
                "last_heartbeat": "2020-01-01T00:00:00",
                "note-\udcff": "v-\udcfe\x1b[2J",
                "": "an empty field name",
            },
        )


async def test_a_reap_backup_restores_ids_only_a_registry_can_hold(
    backend: Backend, tmp_path: Path
) -> None:
    """reap --include-malformed deleted entries whose ids `registry set` would refuse (control
    characters, 300 bytes, empty, not UTF-8); its printed undo used to refuse the whole backup
    for one such line and restore nothing. Every key comes back byte-exact."""
    await _plant_registry_only_ids(backend)
    before = await _snapshot(backend)
    assert len(before) == len(REGISTRY_ONLY_IDS) + 3
    backup = tmp_path / "bk.jsonl"
    res = invoke(["reap", "--include-malformed", "--backup", str(backup)], env=backend.env)
    assert res.code == 0, res
    assert await _snapshot(backend) == {}
    assert f"undo: wsctl registry restore {backup}" in res.err
    res = invoke(["registry", "restore", str(backup), "-o", "json"], env=backend.env)
    assert res.code == 0, res
    assert json.loads(res.out)["written"] == len(before)
    assert await _snapshot(backend) == before


async def test_export_then_import_allow_malformed_reproduces_ids_only_a_registry_can_hold(
    backend: Backend, tmp_path: Path
) -> None:
    await _plant_registry_only_ids(backend)
    async with open_test_store(backend) as store:
        await store.client.delete("ws_conn:junk-1")  # export skips keys that are not hashes
    before = await _snapshot(backend)
    file = tmp_path / "export.jsonl"
    res = invoke(["registry", "export", "-f", str(file)], env=backend.env)
    assert res.code == 0, res
    res = invoke(["reap", "--include-malformed", "--no-backup"], env=backend.env)
    assert res.code == 0 and await _snapshot(backend) == {}, res
    res = invoke(["registry", "import", str(file), "--allow-malformed"], env=backend.env)
    assert res.code == 0, res
    assert await _snapshot(backend) == before
    # without --allow-malformed such ids are still refused, and nothing is written
    await _flush_conn(backend)
    res = invoke(["registry", "import", str(file)], env=backend.env)
    assert res.code == 2 and "nothing imported" in res.err and "--allow-malformed" in res.err
    assert await _snapshot(backend) == {}


async def _flush_conn(backend: Backend) -> None:
    async with open_test_store(backend) as store:
        async for entry in store.iter_entries():
            await store.client.delete(store.keys.conn_key(entry.robot_id))


async def test_restore_puts_back_every_good_line_and_lists_the_bad_ones(
    single: Backend, tmp_path: Path
) -> None:
    """A restore is never all-or-nothing: lines that are not JSON, have no robot id, or hold
    text no registry could hold are listed (exit 1); every other key is restored."""
    good = [{"robot_id": f"g{i}", "fields": seed_hash(f"g{i}", "gw-a")} for i in range(3)]
    lines = [
        json.dumps(good[0]),
        "{not json",
        json.dumps({"fields": {"a": "b"}}),
        json.dumps(good[1]),
        '{"robot_id": "lone-\\ud800", "fields": {"instance_id": "gw-a"}}',
        json.dumps({"robot_id": "nofields", "fields": {}}),
        json.dumps(good[2]),
    ]
    backup = tmp_path / "b.jsonl"
    backup.write_text("\n".join(lines) + "\n")
    res = invoke(["registry", "restore", str(backup), "-o", "json"], env=single.env)
    assert res.code == 1, res
    out = json.loads(res.out)
    assert out["written"] == 3 and out["not_restored"] == 4
    assert sorted(item["line"] for item in out["not_restored_items"]) == [2, 3, 5, 6]
    for line in (2, 3, 5, 6):
        assert f"not restored: line {line}" in res.err
    async with open_test_store(single) as store:
        assert {e.robot_id async for e in store.iter_entries()} == {"g0", "g1", "g2"}


async def test_show_and_rm_address_ids_only_a_registry_can_hold(single: Backend) -> None:
    """`list` shows such ids, so `show`, `doctor ROBOT` and `registry rm` take them by their
    exact bytes (the empty id names the key that is the bare prefix)."""
    await _plant_registry_only_ids(single)
    for robot in REGISTRY_ONLY_IDS:
        res = invoke(["show", robot], env=single.env)
        assert res.code == 0 and "gw-old" in res.out, (robot, res)
        assert "\x1b" not in res.out + res.err and "\x07" not in res.out
        res = invoke(["doctor", robot], env=single.env)
        assert res.code in (0, 1) and "internal error" not in res.err, (robot, res)
        res = invoke(["registry", "rm", robot, "-o", "json"], env=single.env)
        assert res.code == 0 and json.loads(res.out)[0]["result"] == "removed", (robot, res)
    async with open_test_store(single) as store:
        left = {e.robot_id async for e in store.iter_entries()}
    assert left == {"old-1", "junk-1", "odd-fields"}
    res = invoke(["registry", "rm", "", "-o", "json"], env=single.env)
    assert res.code == 1 and json.loads(res.out)[0]["result"] == "not found"
