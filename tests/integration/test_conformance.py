"""``wsctl conformance`` against real gateways on 127.0.0.1 and a real Redis: the reference
gateway and the FastAPI example reach level 2 with every check passing, the original
design's app reaches level 0, gateways broken on purpose fail exactly the check that covers
their fault, a gateway that hangs ends the run without hanging it, and Ctrl-C stops it within
a second; every run leaves none of its keys or sockets behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from tests.conformance_gateways import FAULTS, broken_gateway
from tests.conftest import Backend, ainvoke, open_test_store
from tests.fastapi_fleet import fastapi_gateways
from tests.fleet import running_fleet, wait_for
from tests.original_fleet import original_gateways
from wsctl.conformance.checks import check_ids
from wsctl.conformance.options import ConformanceOptions
from wsctl.conformance.runner import ROBOT_PREFIX, run_conformance
from wsctl.registry.keys import Keyspace
from wsctl.sandbox.gateways import GatewayProcess

FREEZE = ("faults.redis_frozen", "faults.redis_frozen_control")
INTERVAL = 0.3  # the in-process gateways' heartbeat interval (tests/fleet.py)


def _args(url: str, *extra: str, interval: float | None = None) -> list[str]:
    """The kit's command line; without ``interval`` it takes the one the gateway's liveness
    record states."""
    stated = [] if interval is None else ["--heartbeat-interval", str(interval)]
    gateway = f"{url}/ws/{{robot_id}}"
    return ["conformance", "--gateway", gateway, "--timeout", "2", "-o", "json", *stated, *extra]


def _freeze(backend: Backend) -> list[str]:
    """Freeze the single node (never the shared cluster: its failover would outlive the
    test)."""
    if backend.single is None or backend.single.pid is None:
        return []
    return ["--freeze-redis-pid", str(backend.single.pid), "--freeze-seconds", "2"]


def _by_id(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in report["checks"]}


async def _run_keys(backend: Backend, *, events: bool = True) -> list[str]:
    """Every key a conformance run may make, on every primary (with what a stream holds, so
    a failure says who wrote it when); ``events=False``: not the robots' event streams."""
    found: list[str] = []
    patterns = ("ws_conn:", "ws_revents:", "ws_inst:") if events else ("ws_conn:", "ws_inst:")
    async with open_test_store(backend) as store:
        for pattern in patterns:
            async for key in store.client.scan_iter(match=f"{pattern}{ROBOT_PREFIX}*"):
                found.append(key)
                if pattern == "ws_revents:":
                    found.append(str(await store.client.xrange(key)))
    return found


def _assert_all_passed(report: dict[str, Any], backend: Backend) -> None:
    checks = _by_id(report)
    assert list(checks) == check_ids(2)
    not_passed = {i: c for i, c in checks.items() if c["result"] != "pass"}
    if backend.single is None:  # nothing to freeze on the shared cluster
        assert set(not_passed) == set(FREEZE), not_passed
        assert all(c["result"] == "n/a" and "not asked" in c["detail"] for c in not_passed.values())
    else:
        assert not_passed == {}
    assert report["level"] == 2 and report["ok"]
    assert report["keys_removed"] > 0 and report["left_behind"] == []


async def test_wsctl_gateway_reaches_level_2_with_every_check_passing(
    backend: Backend, tmp_path: Path
) -> None:
    junit = tmp_path / "conformance.xml"
    async with running_fleet(backend.env, names=("gw-conf",)) as gateways:
        gw = gateways["gw-conf"]
        res = await ainvoke(
            _args(gw.ws_url, "--junit", str(junit), *_freeze(backend)), env=backend.env
        )
        assert res.code == 0, res.out + res.err
        report = json.loads(res.out)
        _assert_all_passed(report, backend)
        assert report["instance_id"] == "gw-conf"
        assert report["heartbeat_interval_s"] == INTERVAL  # as its liveness record states
        await wait_for(lambda: len(gw.local) == 0)  # every socket of the run closed
    assert await _run_keys(backend) == []
    suite = ElementTree.parse(junit).getroot()
    assert suite.get("tests") == str(len(check_ids(2))) and suite.get("failures") == "0"
    names = [c.get("name", "") for c in suite]
    assert names[0].startswith("L0 registry.entry (§3)")


async def test_the_fastapi_example_reaches_level_2_with_every_check_passing(
    backend: Backend, tmp_path: Path
) -> None:
    with fastapi_gateways(backend, tmp_path, names=("fa-conf",)) as (fa,):
        res = await ainvoke(_args(fa.ws_url, *_freeze(backend)), env=backend.env)
        assert res.code == 0, res.out + res.err
        report = json.loads(res.out)
        _assert_all_passed(report, backend)
        assert "robot ping unsupported" in _by_id(report)["control.ping"]["detail"]
    assert await _run_keys(backend) == []


async def test_the_original_design_reaches_level_0_exactly_and_says_why_not_more(
    single: Backend,
) -> None:
    with original_gateways(single, names=("orig-conf",)) as (orig,):
        # no liveness record states its interval: the kit is told one
        res = await ainvoke(_args(orig.ws_url, interval=0.5), env=single.env)
        level0 = await ainvoke(_args(orig.ws_url, "--level", "0"), env=single.env)
    assert res.code == 1 and level0.code == 0, res.err + level0.err
    report = json.loads(res.out)
    assert report["level"] == 0 and not report["ok"]
    assert "conformance: level 2 not reached; failed: fencing.conn_id" in res.err
    checks = _by_id(report)
    assert all(c["result"] == "pass" for c in checks.values() if c["level"] == 0)
    # naive timestamps parse; the kit notes that they lack an offset
    assert "has no UTC offset" in checks["registry.timestamps"]["detail"]
    failed = {i for i, c in checks.items() if c["result"] == "fail"}
    assert {
        "fencing.conn_id",
        "fencing.late_disconnect",
        "fencing.supersede_local",
        "heartbeat.refresh",
        "heartbeat.reregister",
        "heartbeat.superseded",
        "liveness.record",
        "control.listening",
    } <= failed
    for check in (checks[i] for i in failed):
        assert check["expected"] and check["seen"], check
    assert checks["control.listening"]["seen"] == "nobody is subscribed"
    assert checks["fencing.late_disconnect"]["seen"].startswith("no entry: the old session's")
    # what needs the control channel was not run, and says why
    assert checks["send.delivered"]["blocked_by"] == "control.replies"
    assert checks["control.replies"]["blocked_by"] == "control.listening"
    assert json.loads(level0.out)["level"] == 0
    assert await _run_keys(single) == []


async def test_gateways_broken_on_purpose_each_fail_exactly_the_check_that_covers_the_fault(
    single: Backend,
) -> None:
    """Ten gateways, one fault each, checked at the same time (each run on a client of its
    own)."""
    from wsctl.config import load_settings
    from wsctl.redis.factory import connect, target_from_settings

    target = target_from_settings(load_settings(env=single.env))

    async def check(fault: str, url: str) -> tuple[str, list[tuple[str, str, str]]]:
        options = ConformanceOptions(
            gateway=f"{url}/ws/{{robot_id}}", timeout=2, default_interval=60
        )
        async with connect(target) as client:
            report = await run_conformance(client, Keyspace(), options)
        failed = [
            (r.id, r.expected or "", r.seen or "")
            for r in report.results
            if r.verdict.value == "fail"
        ]
        return fault, failed

    async with contextlib.AsyncExitStack() as stack:
        urls = {
            fault: (await stack.enter_async_context(broken_gateway(single.env, fault))).ws_url
            for fault in FAULTS
        }
        outcomes = await asyncio.gather(*(check(f, u) for f, u in urls.items()))
    for fault, failed in outcomes:
        assert [f[0] for f in failed] == [FAULTS[fault]], (fault, failed)
        (_, expected, seen) = failed[0]
        assert expected and seen
    seen = dict((fault, failed[0][2]) for fault, failed in outcomes)
    assert seen["no_fencing"] == "no entry: the old session's disconnect deleted it"
    assert seen["resurrect"].startswith("the entry came back")
    assert "1 reply(ies) without it arrived" in seen["reply_without_id"]
    assert seen["no_hop_limit"].endswith("with hops 3")
    assert seen["drain_accepts"] == "the handshake was accepted"
    # held 3 s: late by the kit's clock, whatever replied_at says (restamps stamps it late)
    for fault in ("holds_too_long", "restamps"):
        assert re.fullmatch(r"batch [1-4] answered \d+ ms after its publish", seen[fault]), seen
    # the drop comes in place of the entry's first refresh: the kit sees the entry gone with
    # the session, or (a busy machine delaying its first read past that beat) no entry at all
    assert seen["closes_mid_check"] in ("no entry", "the entry is gone")


async def test_a_gateway_that_hangs_mid_run_fails_the_check_then_the_run_ends_and_cleans_up(
    single: Backend, tmp_path: Path
) -> None:
    assert single.single is not None
    gateway = GatewayProcess(single.single.url, "hang-conf", heartbeat_interval=INTERVAL)
    gateway.start(tmp_path)
    try:
        run = asyncio.create_task(ainvoke(_args(gateway.url), env=single.env))
        async with open_test_store(single) as store:

            async def started() -> bool:
                return any([k async for k in store.iter_keys(f"{ROBOT_PREFIX}*")])

            await wait_for(started, timeout=10)
        await asyncio.sleep(0.8)  # into the checks that run together
        assert gateway.pid is not None
        os.kill(gateway.pid, signal.SIGSTOP)  # hangs: sockets open, nothing answered
        began = time.monotonic()
        res = await run
        elapsed = time.monotonic() - began
    finally:
        gateway.kill()
    assert res.code == 1, res.out + res.err
    report = json.loads(res.out)
    checks = _by_id(report)
    failed = [c for c in checks.values() if c["result"] == "fail"]
    assert failed, checks
    not_run = [c for c in checks.values() if "stopped answering" in c["detail"]]
    assert not_run and all(c["result"] == "n/a" for c in not_run)
    assert checks["events.log"] in not_run
    # each check bounded by its timeouts, the whole run too
    assert elapsed < 25, elapsed
    assert report["left_behind"] == []
    assert await _run_keys(single) == []


@contextlib.asynccontextmanager
async def _kit_process(env: dict[str, str], url: str) -> AsyncIterator[Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wsctl",
        *_args(url),
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_ctrl_c_stops_the_run_within_a_second_and_removes_what_it_made(
    single: Backend,
) -> None:
    async with (
        running_fleet(single.env, names=("gw-int",)) as gateways,
        open_test_store(single) as store,
    ):
        gw = gateways["gw-int"]
        async with _kit_process(single.env, gw.ws_url) as proc:

            async def busy() -> bool:
                return len(gw.local) >= 10  # the checks that run together are on

            await wait_for(busy, timeout=15)
            proc.send_signal(signal.SIGINT)
            began = time.monotonic()
            _, err = await asyncio.wait_for(proc.communicate(), 10)
            elapsed = time.monotonic() - began
        assert proc.returncode == 130, err
        assert elapsed < 1.5, elapsed
        assert b"interrupted" in err
        await wait_for(lambda: len(gw.local) == 0)  # every socket of the run is gone

        async def no_entries() -> bool:
            return not [k async for k in store.iter_keys(f"{ROBOT_PREFIX}*")]

        await wait_for(no_entries)
    # the events a gateway writes about the dropped robots after the kit stopped (a second
    # is not enough for a slow one) may outlive the run: what the kit wrote does not
    assert await _run_keys(single, events=False) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gateway", "http://127.0.0.1:1"], "must be a ws:// or wss:// URL"),
        (["--gateway", "ws://127.0.0.1:1/robots"], "say where the robot id goes"),
        (["--gateway", "ws://h:1", "--level", "3"], "--level"),
        (["--gateway", "ws://h:1", "-o", "csv"], "conformance supports -o table or json"),
        (["--gateway", "ws://h:1", "--freeze-redis-pid", str(os.getpid())], "not a redis-server"),
        (["--gateway", "ws://h:1", "--timeout", "0"], "--timeout"),
    ],
)
async def test_bad_options_are_one_line_usage_errors(args: list[str], message: str) -> None:
    res = await ainvoke(["conformance", *args], env={"WSCTL_REDIS_URL": "redis://127.0.0.1:1"})
    assert res.code == 2, res.err
    assert message in res.err and len(res.err.strip().splitlines()) == 1


async def test_a_redis_that_cannot_be_reached_exits_3() -> None:
    res = await ainvoke(
        ["conformance", "--gateway", "ws://127.0.0.1:1"],
        env={"WSCTL_REDIS_URL": "redis://127.0.0.1:1"},
    )
    assert res.code == 3 and "cannot connect to Redis" in res.err


async def test_an_interrupted_run_removes_its_own_entries_before_waiting_on_the_gateway(
    single: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # waits that outlast the clean-up's second (a slow gateway, a busy machine) must not
    # keep the kit's own entries (of its fleet peer) from being removed
    from wsctl.config import load_settings
    from wsctl.conformance import runner
    from wsctl.redis.factory import connect, target_from_settings

    monkeypatch.setattr(runner, "FAST_EVENTS", 2.0)
    target = target_from_settings(load_settings(env=single.env))
    async with running_fleet(single.env, names=("gw-tmo",)) as gateways:
        gw = gateways["gw-tmo"]
        options = ConformanceOptions(gateway=f"{gw.ws_url}/ws/{{robot_id}}", timeout=2)
        async with connect(target) as client:
            run = asyncio.create_task(run_conformance(client, Keyspace(), options))

            async def peer_entries() -> bool:  # the kit's own entries of a fleet peer are on
                return bool([k async for k in client.scan_iter(match="ws_conn:*-forward")])

            await wait_for(peer_entries, timeout=15)
            run.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(run, 5)
    assert await _run_keys(single, events=False) == []


async def test_ctrl_c_during_the_clean_up_of_a_finished_run_still_removes_its_own_entries(
    single: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wsctl.config import load_settings
    from wsctl.conformance import runner
    from wsctl.redis.factory import connect, target_from_settings

    monkeypatch.setattr(runner, "EVENTS_SETTLE", 3.0)  # the clean-up's wait, made long
    target = target_from_settings(load_settings(env=single.env))
    done: list[str] = []
    async with running_fleet(single.env, names=("gw-late",)) as gateways:
        gw = gateways["gw-late"]
        options = ConformanceOptions(gateway=f"{gw.ws_url}/ws/{{robot_id}}", timeout=2)
        async with connect(target) as client:
            run = asyncio.create_task(
                run_conformance(client, Keyspace(), options, lambda r: done.append(r.id))
            )

            async def checked() -> bool:
                return len(done) == len(check_ids(2))

            await wait_for(checked, timeout=60)
            await asyncio.sleep(0.5)  # the clean-up is waiting for the last events
            run.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(run, 5)
    assert await _run_keys(single, events=False) == []
