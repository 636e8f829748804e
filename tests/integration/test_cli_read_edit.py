"""The read and edit commands end to end: real Redis, the real entry point, exit codes."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from tests.conftest import Backend, invoke, open_test_store
from tests.seedlike import seed_hash, seed_store_connection


async def _seed(backend: Backend, n: int = 6) -> None:
    async with open_test_store(backend) as store:
        for i in range(n):
            await seed_store_connection(
                store.client, f"r{i}", "gw-a" if i % 2 else "gw-b", age_s=i * 40
            )
        await store.client.set("ws_conn:broken", "x")


async def test_list_connections_jsonl_has_every_entry_with_state(backend: Backend) -> None:
    await _seed(backend)
    res = invoke(["list", "connections", "-o", "jsonl"], env=backend.env)
    assert res.code == 0, res.err
    rows = {r["robot_id"]: r for r in map(json.loads, res.out.splitlines())}
    assert set(rows) == {"r0", "r1", "r2", "r3", "r4", "r5", "broken"}
    assert rows["r0"]["state"] == "online" and rows["r3"]["state"] == "stale"
    assert rows["broken"]["state"] == "malformed" and "not a hash" in rows["broken"]["reason"]


async def test_list_filters_by_instance_state_and_age(backend: Backend) -> None:
    await _seed(backend)
    res = invoke(
        ["list", "connections", "--instance", "gw-a", "--stale", "-o", "json"], env=backend.env
    )
    assert {r["robot_id"] for r in json.loads(res.out)} == {"r3", "r5"}
    res = invoke(["list", "connections", "--older-than", "100", "-o", "json"], env=backend.env)
    assert {r["robot_id"] for r in json.loads(res.out)} == {"r3", "r4", "r5"}
    res = invoke(
        ["list", "connections", "--fresh", "--timeout", "30", "-o", "json"], env=backend.env
    )
    assert {r["robot_id"] for r in json.loads(res.out)} == {"r0"}


async def test_list_sort_and_limit(backend: Backend) -> None:
    await _seed(backend)
    res = invoke(
        ["list", "connections", "--sort", "heartbeat", "--limit", "2", "-o", "jsonl"],
        env=backend.env,
    )
    assert [json.loads(x)["robot_id"] for x in res.out.splitlines()] == ["r0", "r1"]


async def test_table_and_csv_outputs(backend: Backend) -> None:
    await _seed(backend)
    table = invoke(["list", "connections"], env=backend.env)
    assert "ROBOT" in table.out and "r5" in table.out and "\x1b[" not in table.out
    rows = list(
        csv.DictReader(io.StringIO(invoke(["list", "robots", "-o", "csv"], env=backend.env).out))
    )
    assert {r["robot_id"] for r in rows} >= {"r0", "broken"}


async def test_tables_are_capped_with_a_note_and_streams_are_not(
    single: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table shows the first TABLE_ROWS rows by robot and says on stderr how many matched;
    --limit lifts the cap (and the note still says how many matched); jsonl and csv stream
    every entry."""
    from wsctl.cli import read_cmd

    monkeypatch.setattr(read_cmd, "TABLE_ROWS", 4)
    await _seed(single, n=9)  # r0..r8 and the malformed "broken"
    table = invoke(["list", "connections"], env=single.env)
    assert table.code == 0, table.err
    shown = [r for r in (f"r{i}" for i in range(9)) if f" {r} " in table.out]
    assert ["broken" in table.out, *shown] == [True, "r0", "r1", "r2"]
    assert "showing 4 of 10 entries (sorted by robot)" in table.err
    robots = invoke(["list", "robots"], env=single.env)
    assert "showing 4 of 10 robots" in robots.err
    wider = invoke(["list", "connections", "--limit", "6", "--sort", "heartbeat"], env=single.env)
    assert " r5 " in wider.out and " r6 " not in wider.out
    # an explicit --limit still says how many matched, without suggesting --limit
    assert "showing 6 of 10 entries (sorted by heartbeat)" in wider.err
    assert "--limit N" not in wider.err
    rows = invoke(["list", "connections", "-o", "jsonl"], env=single.env).out.splitlines()
    assert len(rows) == 10


async def test_list_instances_counts_fresh_and_stale(backend: Backend) -> None:
    await _seed(backend)
    res = invoke(["list", "instances", "-o", "json"], env=backend.env)
    rows = {r["instance_id"]: r for r in json.loads(res.out)}
    assert rows["gw-b"]["connections"] == 3 and rows["gw-b"]["stale"] == 1
    assert rows["gw-a"]["fresh"] == 1 and rows["gw-a"]["stale"] == 2
    assert rows["gw-a"]["liveness"] == "unknown"


async def test_list_instances_fits_80_columns_leaving_out_the_heartbeat_ages(
    backend: Backend,
) -> None:
    async with open_test_store(backend) as store:
        for i in range(4):
            await seed_store_connection(store.client, f"r{i}", f"gateway-prod-eu-{i % 2}")
    res = invoke(["list", "instances"], env={**backend.env, "COLUMNS": "80"})
    assert res.code == 0, res.err
    lines = res.out.splitlines()
    assert lines and all(len(line) <= 80 for line in lines)
    header = next(line for line in lines if "INSTANCE" in line).split()
    assert header == ["INSTANCE", "LIVENESS", "DRAINING", "CONNS", "FRESH", "STALE", "MALFORMED"]
    assert "NEWEST HB, OLDEST HB left out to fit 80 columns" in res.err
    wide = invoke(["list", "instances"], env={**backend.env, "COLUMNS": "200"})
    assert "OLDEST HB" in wide.out and "left out" not in wide.err


async def test_show_glob_id_means_that_one_robot(backend: Backend) -> None:
    async with open_test_store(backend) as store:
        await store.client.hset("ws_conn:robot*", mapping=seed_hash("robot*", "i"))
        await store.client.hset("ws_conn:robot-2", mapping=seed_hash("robot-2", "j"))
    res = invoke(["show", "robot*", "-o", "json"], env=backend.env)
    assert res.code == 0
    assert json.loads(res.out)["instance_id"] == "i"
    missing = invoke(["show", "robot?"], env=backend.env)
    assert missing.code == 1 and "no registry entry" in missing.err


def test_an_id_wsctl_would_not_create_is_refused_for_writes_and_looked_up_for_reads(
    single: Backend,
) -> None:
    res = invoke(["registry", "set", "bad\nid", "a=b", "--create"], env=single.env)
    assert res.code == 2 and "control character" in res.err and "Traceback" not in res.err
    res = invoke(["show", "bad\nid"], env=single.env)  # a registry may hold it: looked up
    assert res.code == 1 and "no registry entry" in res.err and "\n" not in res.err.rstrip("\n")


async def test_set_keeps_other_fields_and_validates_times(backend: Backend) -> None:
    await _seed(backend, 1)
    assert invoke(["registry", "set", "r0", "status=maint", "fw=9"], env=backend.env).code == 0
    bad = invoke(["registry", "set", "r0", "last_heartbeat=soon"], env=backend.env)
    assert bad.code == 2
    async with open_test_store(backend) as store:
        fields = await store.client.hgetall("ws_conn:r0")
    assert fields["status"] == "maint" and fields["fw"] == "9" and fields["instance_id"] == "gw-b"
    assert invoke(["registry", "set", "nobody", "a=b"], env=backend.env).code == 1
    assert (
        invoke(["registry", "set", "nobody", "instance_id=x", "--create"], env=backend.env).code
        == 0
    )


async def test_set_dry_run_changes_nothing(backend: Backend) -> None:
    await _seed(backend, 1)
    res = invoke(["registry", "set", "r0", "status=x", "--dry-run"], env=backend.env)
    assert res.code == 0 and "would set" in res.err
    async with open_test_store(backend) as store:
        assert await store.client.hget("ws_conn:r0", "status") == "connected"


async def test_rm_is_conditional_and_backs_up(backend: Backend, tmp_path: Path) -> None:
    await _seed(backend, 3)
    kept = invoke(["registry", "rm", "r1", "--if-instance", "gw-b", "-o", "json"], env=backend.env)
    assert kept.code == 1 and json.loads(kept.out)[0]["result"] == "kept"
    backup = tmp_path / "b.jsonl"
    res = invoke(
        ["registry", "rm", "r1", "r2", "--backup", str(backup), "-o", "json"], env=backend.env
    )
    assert res.code == 0 and [r["result"] for r in json.loads(res.out)] == ["removed", "removed"]
    lines = [json.loads(x) for x in backup.read_text().splitlines()]
    assert {x["robot_id"] for x in lines} == {"r1", "r2"} and lines[0]["reason"] == "rm"
    # the backup restores exactly ("restore" is "import" under the name an operator looks for)
    assert invoke(["registry", "restore", str(backup)], env=backend.env).code == 0
    async with open_test_store(backend) as store:
        for line in lines:
            assert await store.client.hgetall(f"ws_conn:{line['robot_id']}") == line["fields"]


async def test_rm_default_backup_path_is_printed(backend: Backend) -> None:
    await _seed(backend, 1)
    res = invoke(["registry", "rm", "r0"], env=backend.env)
    assert res.code == 0 and "backup: " in res.err
    path = Path(res.err.split("backup: ")[1].splitlines()[0].strip())
    assert f"undo: wsctl registry restore {path}" in res.err
    assert path.exists() and "r0" in path.read_text()


async def test_export_then_import_onto_empty_redis_is_exact(
    backend: Backend, tmp_path: Path
) -> None:
    await _seed(backend, 20)
    async with open_test_store(backend) as store:
        await store.client.hset(
            "ws_conn:机器人*", mapping={**seed_hash("机器人*", "i"), "extra": "é"}
        )
        before = {
            e.robot_id: dict(e.fields) async for e in store.iter_entries() if e.key_type == "hash"
        }
    dump = tmp_path / "dump.jsonl"
    res = invoke(["registry", "export", "-f", str(dump)], env=backend.env)
    assert res.code == 0 and "exported 21 entries" in res.err and "skipped 1" in res.err
    async with open_test_store(backend) as store:
        async for key in store.iter_keys():
            await store.client.delete(key)
    res = invoke(["registry", "import", str(dump), "-o", "json"], env=backend.env)
    assert res.code == 0 and json.loads(res.out)["written"] == 21
    async with open_test_store(backend) as store:
        after = {e.robot_id: dict(e.fields) async for e in store.iter_entries()}
    assert after == before


async def test_import_skips_existing_by_default_and_overwrites_on_request(backend: Backend) -> None:
    await _seed(backend, 1)
    line = json.dumps({"robot_id": "r0", "fields": {"instance_id": "new", "last_heartbeat": "1"}})
    res = invoke(["registry", "import", "-", "-o", "json"], env=backend.env, stdin=line)
    assert json.loads(res.out)["skipped_existing"] == 1
    dry = invoke(
        ["registry", "import", "-", "--overwrite", "--dry-run", "-o", "json"],
        env=backend.env,
        stdin=line,
    )
    assert json.loads(dry.out)["would_write"] == 1
    async with open_test_store(backend) as store:
        assert await store.client.hget("ws_conn:r0", "instance_id") == "gw-b"
    invoke(["registry", "import", "-", "--overwrite"], env=backend.env, stdin=line)
    async with open_test_store(backend) as store:
        assert await store.client.hgetall("ws_conn:r0") == {
            "instance_id": "new",
            "last_heartbeat": "1",
        }


def test_import_reports_every_bad_line_and_writes_nothing(single: Backend) -> None:
    text = "\n".join(
        [
            json.dumps({"robot_id": "ok", "fields": seed_hash("ok", "gw-a")}),
            "{not json",
            json.dumps({"robot_id": "", "fields": {"a": "b"}}),
            json.dumps({"robot_id": "x", "fields": {"a": 1}}),
        ]
    )
    res = invoke(["registry", "import", "-"], env=single.env, stdin=text)
    assert res.code == 2
    assert "3 bad line(s)" in res.err and "<stdin>:2" in res.err and "<stdin>:4" in res.err
    assert invoke(["show", "ok"], env=single.env).code == 1


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        (
            {"WSCTL_REDIS_URL": "redis://127.0.0.1:1/0"},
            "cannot connect to Redis at redis://127.0.0.1:1/0",
        ),
        (
            {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": "1", "REDIS_PASSWORD": "s3cr@t:/&#"},
            "127.0.0.1:1",
        ),
    ],
)
def test_unreachable_redis_is_exit_3_one_line_no_secret(env: dict[str, str], needle: str) -> None:
    res = invoke(["list", "connections"], env=env)
    assert res.code == 3 and needle in res.err
    assert (
        len(res.err.strip().splitlines()) == 1
        and "s3cr" not in res.err
        and "Traceback" not in res.err
    )


def test_wrong_password_is_an_auth_error(tmp_path: Path) -> None:
    from wsctl.sandbox.redis_servers import RedisServer

    with RedisServer(password="right:p@ss/&#") as server:
        ok = invoke(
            ["list", "robots"],
            env={
                "REDIS_HOST": "127.0.0.1",
                "REDIS_PORT": str(server.port),
                "REDIS_PASSWORD": "right:p@ss/&#",
            },
        )
        assert ok.code == 0, ok.err
        assert invoke(["list", "robots"], env={"WSCTL_REDIS_URL": server.url}).code == 0
        bad = invoke(
            ["list", "robots"],
            env={
                "REDIS_HOST": "127.0.0.1",
                "REDIS_PORT": str(server.port),
                "REDIS_PASSWORD": "wrong-secret",
            },
        )
    assert bad.code == 3 and "authentication failed" in bad.err and "wrong-secret" not in bad.err


def test_cluster_flag_against_single_node_says_what_to_fix(single: Backend) -> None:
    res = invoke(["--cluster", "list", "robots"], env=single.env)
    assert res.code == 3 and "not a Redis Cluster" in res.err


def test_single_node_settings_against_a_cluster_say_what_to_fix(redis_cluster) -> None:  # type: ignore[no-untyped-def]
    port = redis_cluster.primary_ports()[0]
    res = invoke(["list", "robots"], env={"WSCTL_REDIS_URL": f"redis://127.0.0.1:{port}/0"})
    assert res.code == 3 and "is a Redis Cluster node" in res.err


def test_no_redis_configured_and_no_sandbox_is_a_clear_error() -> None:
    res = invoke(["list", "connections"])
    assert res.code == 3 and "no Redis configured" in res.err


def test_config_show_redacts_and_names_sources() -> None:
    res = invoke(
        ["config", "show", "-o", "json"],
        env={"REDIS_PASSWORD": "hunter2", "WSCTL_REDIS_URL": "redis://u:pa%40ss@h:1/0"},
    )
    rows = {r["setting"]: r for r in json.loads(res.out)}
    assert "hunter2" not in res.out and "pa%40ss" not in res.out and "pa@ss" not in res.out
    assert rows["redis_password"]["value"] == "***"
    assert rows["redis_url"]["source"] == "env WSCTL_REDIS_URL"


def test_bad_output_format_is_usage_error(single: Backend) -> None:
    res = invoke(["list", "connections", "-o", "yaml"], env=single.env)
    assert res.code == 2 and "unknown output format" in res.err


async def test_robot_glob_filters_and_export_by_instance(backend: Backend) -> None:
    await _seed(backend, 12)
    res = invoke(["list", "connections", "--robot", "r1*", "-o", "jsonl"], env=backend.env)
    assert {json.loads(x)["robot_id"] for x in res.out.splitlines()} == {"r1", "r10", "r11"}
    res = invoke(["list", "robots", "--robot", "r?", "-o", "json"], env=backend.env)
    assert len(json.loads(res.out)) == 10
    res = invoke(["registry", "export", "--instance", "gw-a"], env=backend.env)
    exported = [json.loads(x) for x in res.out.splitlines()]
    assert exported and all(r["fields"]["instance_id"] == "gw-a" for r in exported)
    assert len(exported) == 6
