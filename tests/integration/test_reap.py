"""`wsctl reap` on real Redis: atomicity against concurrent writers, backups, seed registries."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import Backend, ainvoke, invoke, open_test_store, wsctl_process
from tests.fleet import running_fleet
from tests.seedlike import seed_hash, seed_store_connection
from wsctl.errors import UsageError
from wsctl.ops.reap import ReapOptions, reap
from wsctl.registry.model import format_ts, utcnow
from wsctl.registry.store import RegistryStore


class PausingStore(RegistryStore):
    """Pauses between the reaper's read and its delete, so writers can act in that window."""

    def __init__(self, inner: RegistryStore, window: asyncio.Event, resume: asyncio.Event) -> None:
        super().__init__(inner.client, inner.keys, batch_size=inner.batch_size)
        self.window, self.resume = window, resume

    async def delete_observed(self, entries):  # type: ignore[no-untyped-def]
        self.window.set()
        await self.resume.wait()
        return await super().delete_observed(entries)


async def test_entries_refreshed_or_reconnected_after_judgement_are_never_reaped(
    backend: Backend, tmp_path: Path
) -> None:
    rng = random.Random(7)
    async with open_test_store(backend) as store:
        stale = [f"stale-{i}" for i in range(40)]
        lazarus = [f"laz-{i}" for i in range(40)]
        for rid in stale + lazarus:
            fields = {**seed_hash(rid, "gw-x", age_s=600), "conn_id": uuid.uuid4().hex}
            await store.client.hset(store.keys.conn_key(rid), mapping=fields)
        window, resume = asyncio.Event(), asyncio.Event()
        pausing = PausingStore(store, window, resume)
        pausing.batch_size = 1000  # one batch: everything judged before any delete
        task = asyncio.create_task(
            reap(pausing, ReapOptions(timeout=90, backup=tmp_path / "b.jsonl"))
        )
        await asyncio.wait_for(window.wait(), 10)
        # in the window: each lazarus robot heartbeats, or reconnects (new session, same old time)
        for rid in lazarus:
            key = store.keys.conn_key(rid)
            if rng.random() < 0.5:
                await store.client.hset(key, "last_heartbeat", format_ts(utcnow()))
            else:
                await store.client.hset(key, "conn_id", uuid.uuid4().hex)
        resume.set()
        report = await asyncio.wait_for(task, 10)
        remaining = {e.robot_id async for e in store.iter_entries()}
    assert remaining == set(lazarus)
    assert report.reaped == 40 and report.skipped_refreshed == 40
    backed_up = [json.loads(x)["robot_id"] for x in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert set(backed_up) == set(stale + lazarus)  # backed up before the delete was attempted


async def test_looping_reaper_against_busy_writers_never_deletes_a_live_robot(
    backend: Backend,
) -> None:
    """Stress: a reaper looping with a short timeout while writers keep refreshing and
    reconnecting live robots; truly stale robots go, live ones all stay."""
    rng = random.Random(11)
    live = [f"live-{i}" for i in range(30)]
    dead = [f"dead-{i}" for i in range(60)]
    async with open_test_store(backend) as store:
        for rid in dead:
            await seed_store_connection(store.client, rid, "gw-x", age_s=30)
        for rid in live:
            await store.client.hset(
                store.keys.conn_key(rid),
                mapping={**seed_hash(rid, "gw-y"), "last_heartbeat": format_ts(utcnow())},
            )
        stop = asyncio.Event()

        async def writer() -> None:
            for _ in range(10_000):  # bounded; stops when the reaper is done
                if stop.is_set():
                    return
                rid = rng.choice(live)
                mapping = {"last_heartbeat": format_ts(utcnow())}
                if rng.random() < 0.3:
                    mapping["conn_id"] = uuid.uuid4().hex
                await store.client.hset(store.keys.conn_key(rid), mapping=mapping)  # type: ignore[arg-type]

        writers = [asyncio.create_task(writer()) for _ in range(3)]
        small = RegistryStore(store.client, store.keys, batch_size=7, scan_count=10)
        for _ in range(15):
            await reap(small, ReapOptions(timeout=2.0))
        stop.set()
        await asyncio.gather(*writers)
        remaining = {e.robot_id async for e in store.iter_entries()}
    assert remaining == set(live)


async def test_seed_registry_is_reaped_and_the_backup_restores_it_exactly(
    backend: Backend, tmp_path: Path
) -> None:
    async with open_test_store(backend) as store:
        for i in range(30):
            await seed_store_connection(
                store.client, f"r{i}", "abcdef0123456789", age_s=200 if i % 3 else 5
            )
        before = {e.robot_id: dict(e.fields) async for e in store.iter_entries()}
    backup = tmp_path / "reap.jsonl"
    res = await ainvoke(["reap", "--backup", str(backup), "-o", "json"], env=backend.env)
    assert res.code == 0, res.err
    report = json.loads(res.out)
    assert report["reaped"] == 20 and report["by_reason"] == {"stale_heartbeat": 20}
    assert report["by_instance"] == {"abcdef0123456789": 20}
    async with open_test_store(backend) as store:
        assert {e.robot_id async for e in store.iter_entries()} == {
            f"r{i}" for i in range(0, 30, 3)
        }
    res = await ainvoke(["registry", "import", str(backup), "-o", "json"], env=backend.env)
    assert json.loads(res.out)["written"] == 20
    async with open_test_store(backend) as store:
        after = {e.robot_id: dict(e.fields) async for e in store.iter_entries()}
    assert after == before


async def test_a_backup_that_cannot_be_made_durable_deletes_nothing(
    single: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's deletes start only once its backup is fsync'ed: when that fails (a full or
    failing disk), the reap fails and every entry is still there."""
    import wsctl.ops.backup

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(wsctl.ops.backup.os, "fsync", failing_fsync)
    async with open_test_store(single) as store:
        for i in range(25):
            await seed_store_connection(store.client, f"r{i}", "abcdef0123456789", age_s=600)
        store.batch_size = 10
        with pytest.raises(UsageError, match="Input/output error; entries not backed up"):
            await reap(store, ReapOptions(timeout=90, backup=tmp_path / "b.jsonl"))
        assert len([e async for e in store.iter_entries()]) == 25


async def test_restore_skips_robots_that_re_registered_since(
    backend: Backend, tmp_path: Path
) -> None:
    async with open_test_store(backend) as store:
        await seed_store_connection(store.client, "r1", "old", age_s=500)
    backup = tmp_path / "b.jsonl"
    reaped = await ainvoke(["reap", "--backup", str(backup)], env=backend.env)
    assert reaped.code == 0 and f"undo: wsctl registry restore {backup}" in reaped.err
    async with open_test_store(backend) as store:
        await seed_store_connection(store.client, "r1", "new")
    res = await ainvoke(["registry", "restore", str(backup), "-o", "json"], env=backend.env)
    assert json.loads(res.out)["skipped_existing"] == 1
    async with open_test_store(backend) as store:
        assert await store.client.hget("ws_conn:r1", "instance_id") == "new"


async def test_dry_run_lists_what_would_go_and_changes_nothing(backend: Backend) -> None:
    async with open_test_store(backend) as store:
        await seed_store_connection(store.client, "old", "i", age_s=500)
        await seed_store_connection(store.client, "new", "i")
    res = await ainvoke(["reap", "--dry-run"], env=backend.env)
    assert res.code == 0 and "old" in res.out and "would reap 1" in res.err
    async with open_test_store(backend) as store:
        assert await store.client.exists("ws_conn:old") == 1


async def test_malformed_entries_listed_and_deleted_only_when_asked(backend: Backend) -> None:
    async with open_test_store(backend) as store:
        await store.client.set("ws_conn:junk", "x")
        await store.client.hset("ws_conn:nohb", mapping={"instance_id": "i"})
    res = await ainvoke(["reap", "-o", "json", "--no-backup"], env=backend.env)
    report = json.loads(res.out)
    assert report["malformed_kept"] == 2 and report["reaped"] == 0
    res = await ainvoke(
        ["reap", "-o", "json", "--include-malformed", "--no-backup"], env=backend.env
    )
    assert json.loads(res.out)["by_reason"] == {"malformed": 2}
    async with open_test_store(backend) as store:
        assert [e async for e in store.iter_entries()] == []


async def test_timeout_flag_instance_filter_and_limit(backend: Backend) -> None:
    async with open_test_store(backend) as store:
        for i in range(10):
            await seed_store_connection(store.client, f"a{i}", "gw-a", age_s=40)
            await seed_store_connection(store.client, f"b{i}", "gw-b", age_s=40)
    res = await ainvoke(["reap", "-o", "json", "--no-backup"], env=backend.env)
    assert json.loads(res.out)["reaped"] == 0  # 40 s is fresh under the default 90 s
    res = await ainvoke(
        [
            "reap",
            "--timeout",
            "30",
            "--instance",
            "gw-a",
            "--limit",
            "4",
            "-o",
            "json",
            "--no-backup",
        ],
        env=backend.env,
    )
    assert json.loads(res.out)["reaped"] == 4
    res = await ainvoke(
        ["reap", "--timeout", "30", "-o", "json", "--no-backup"],
        env=backend.env,
    )
    assert json.loads(res.out)["reaped"] == 16


async def test_dead_instances_reaps_fresh_entries_of_gone_instances_only(backend: Backend) -> None:
    """Fresh entries go only when their owner is known dead: a protocol-style entry (conn_id)
    of an instance with no liveness record, or an instance whose record expired. A seed-style
    entry (no conn_id) of an instance without a record may belong to a live original-design
    gateway: kept."""
    from wsctl.registry.instances import InstanceRecord, write_record

    async with (
        running_fleet(backend.env, names=("gw-live",)) as fleet,
        open_test_store(backend) as store,
    ):
        await seed_store_connection(store.client, "ghost-of-dead", "gw-dead")
        await store.client.hset("ws_conn:ghost-of-dead", "conn_id", "c-1")
        await seed_store_connection(store.client, "ghost-of-expired", "gw-expired")
        old = format_ts(utcnow() - timedelta(seconds=600))
        await write_record(
            store.client, store.keys, InstanceRecord("gw-expired", last_seen=old), ttl=60
        )
        await seed_store_connection(store.client, "seed-style-live", "gw-live")
        await seed_store_connection(store.client, "seed-style-unknown", "gw-original")
        res = await ainvoke(
            ["reap", "--dead-instances", "-o", "json", "--no-backup"], env=backend.env
        )
        report = json.loads(res.out)
        assert report["by_reason"] == {"dead_instance": 2}, report
        remaining = {e.robot_id async for e in store.iter_entries()}
        assert remaining == {"seed-style-live", "seed-style-unknown"}
        assert fleet["gw-live"].subscribed


async def test_dead_instances_never_reaps_live_robots_of_original_design_gateways(
    backend: Backend,
) -> None:
    """The original design's gateways (real uvicorn processes) write no liveness record and no
    conn_id and listen on no control channel: `reap --dead-instances` used to call them dead
    and delete their live robots' entries."""
    from websockets.asyncio.client import connect

    from tests.fleet import wait_for
    from tests.original_fleet import original_gateways

    robots = [f"orig-robot-{i}" for i in range(4)]
    with original_gateways(backend) as (orig_a, orig_b):
        async with open_test_store(backend) as store, contextlib.AsyncExitStack() as stack:
            for i, robot in enumerate(robots):
                gw = orig_a if i % 2 else orig_b
                await stack.enter_async_context(connect(f"{gw.ws_url}/ws/{robot}"))
            for robot in robots:
                await wait_for(lambda robot=robot: store.get(robot))  # type: ignore[misc]
            before = {e.robot_id async for e in store.iter_entries()}
            assert before == set(robots)
            for args in (["--dry-run"], ["--no-backup"]):
                res = await ainvoke(
                    ["reap", "--dead-instances", "-o", "json", *args], env=backend.env
                )
                assert res.code == 0, res
                report = json.loads(res.out)
                assert report["candidates"] == 0 and report["reaped"] == 0, report
            assert {e.robot_id async for e in store.iter_entries()} == before


def test_reap_against_unreachable_redis_exits_3() -> None:
    res = invoke(["reap"], env={"WSCTL_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert res.code == 3 and "Traceback" not in res.err


async def test_every_runs_passes_until_sigterm(single: Backend, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    async with open_test_store(single) as store:
        await seed_store_connection(store.client, "old", "i", age_s=500)
    env = {**os.environ, **single.env, "WSCTL_STATE_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsctl", "reap", "--every", "0.2", "-o", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        first = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 15)  # type: ignore[union-attr]
        second = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 15)  # type: ignore[union-attr]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
    assert json.loads(first)["reaped"] == 1 and json.loads(second)["reaped"] == 0
    assert code == 0
    # every pass says when it ran (a long-lived reaper's log), in JSON and in text
    from datetime import datetime

    assert datetime.fromisoformat(json.loads(first)["at"]).tzinfo is not None
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsctl", "reap", "--every", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stderr.readline), 15)  # type: ignore[union-attr]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    stamp, rest = line.split(" ", 1)
    assert datetime.fromisoformat(stamp).tzinfo is not None and rest.startswith("reap: examined")


def test_ctrl_c_part_way_names_the_backup_of_what_was_removed(
    single: Backend, tmp_path: Path
) -> None:
    """Ctrl-C of a reap that had removed 107,000 of 200,000 entries said only `wsctl:
    interrupted`: the operator was not told that entries were gone, nor where their backup
    was. Redis is frozen once the backup holds something, so the reap is caught part-way."""
    import signal
    import subprocess
    import time

    from tests.faults import fill, frozen

    assert single.single is not None
    fill(single.single, 30_000, age_s=3600)
    backups = tmp_path / "state" / "backups"
    env = {**single.env, "WSCTL_STATE_DIR": str(tmp_path / "state")}
    proc = wsctl_process(
        ["reap", "--timeout", "90", "--robot-events", "none"],
        env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
            p.stat().st_size for p in (backups.glob("reap-*.jsonl") if backups.is_dir() else [])
        ):
            time.sleep(0.005)
        with frozen(single.single):
            assert proc.poll() is None, "the reap ended before it could be caught part-way"
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    (backup,) = backups.glob("reap-*.jsonl")
    assert proc.returncode == 130, err
    assert err == (
        f"wsctl: error: interrupted; entries removed before it are backed up in {backup} "
        f"(undo: wsctl registry restore {backup})\n"
    )
