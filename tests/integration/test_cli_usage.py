"""How the CLI meets ordinary mistakes and ordinary environments (issue #15): usage errors
are one line with exit 2, bad flag values are usage errors, the original design's REDIS_*
variables alone configure a Redis, and compact listings are compact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Backend, invoke, open_test_store
from tests.seedlike import seed_store_connection
from wsctl.sandbox.local import SandboxInfo, write_sandbox_file
from wsctl.sandbox.redis_servers import RedisServer


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["reap", "--timeout", "-1"], "invalid --timeout -1.0: must be greater than 0"),
        (
            ["drain", "gw-a", "--interval", "-1"],
            "invalid --interval -1.0: must be 0 or from 0.001 to 86400 seconds",
        ),
        (["list", "connections", "--timeout", "-5"], "invalid --timeout -5.0"),
        (["gateway", "--heartbeat-interval", "0"], "invalid --heartbeat-interval 0.0"),
        (["--naive-tz", "Mars/Base", "list", "robots"], "invalid --naive-tz 'Mars/Base'"),
        (["list", "connections", "--bogus"], "No such option: --bogus"),
        (["reap", "--timeout", "abc"], "'abc' is not a valid float"),
        (["show"], "Missing argument 'robot_id'"),
        (["shw"], "No such command 'shw'"),
        (["list", "connections", "--limit", "0"], "0 is not in the range"),
        # click kept the last of a repeated one-value option: this sent to b* alone
        (["send", "hi", "--robot", "a*", "--robot", "b*"], "--robot given more than once"),
        (["--context", "a", "--context", "b", "doctor"], "--context given more than once"),
        (["list", "connections", "-o", "json", "--output", "csv"], "--output given more"),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(args: list[str], needle: str) -> None:
    res = invoke(args, env={"WSCTL_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert res.code == 2, res
    assert needle in res.err and len(res.err.splitlines()) == 1, res.err
    assert res.err.startswith("wsctl: error: ")


def test_flags_and_repeatable_options_may_be_given_more_than_once() -> None:
    env = {"WSCTL_REDIS_URL": "redis://127.0.0.1:1/0"}
    res = invoke(["simulate", "--slo", "p99<50ms", "--slo", "bogus"], env=env)
    assert res.code == 2 and "bad --slo 'bogus'" in res.err, res.err  # read every --slo
    res = invoke(["send", "hi", "--robot", "a*", "--dry-run", "--dry-run"], env=env)
    assert "given more than once" not in res.err and "127.0.0.1:1" in res.err, res.err


def test_usage_errors_are_one_line_as_a_process() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "wsctl", "list", "connections", "--bogus"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "see wsctl list connections --help" in proc.stderr


async def test_redis_port_and_password_alone_configure_a_redis(
    redis_server: RedisServer, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """`REDIS_PORT=16402 REDIS_PASSWORD=… wsctl list instances` without REDIS_HOST used the
    running sandbox (or said no Redis was configured)."""
    with RedisServer(password="p@ss:w/rd") as secured:
        env = {"REDIS_PORT": str(secured.port), "REDIS_PASSWORD": "p@ss:w/rd"}
        backend = Backend("single", {"WSCTL_REDIS_URL": secured.url})
        async with open_test_store(backend) as store:
            await seed_store_connection(store.client, "robot-1", "gw-real")
        # a running sandbox elsewhere must not win over the configured Redis
        write_sandbox_file(SandboxInfo(redis_url=redis_server.url, pid=os.getpid()))
        res = invoke(["list", "instances", "-o", "json"], env=env)
        assert res.code == 0, res
        assert [row["instance_id"] for row in json.loads(res.out)] == ["gw-real"]
        res = invoke(["list", "robots", "-o", "json"], env={"REDIS_PORT": str(secured.port)})
        assert res.code == 3 and "p@ss" not in res.err  # the right server, no password
        res = invoke(["config", "show"], env={"REDIS_DB": "0"})
        assert res.code == 0


async def test_list_robots_shows_robot_state_instance(single: Backend) -> None:
    async with open_test_store(single) as store:
        await seed_store_connection(store.client, "robot-1", "gw-a")
    res = invoke(["list", "robots"], env=single.env)
    header = res.out.strip().splitlines()[0].split()
    assert res.code == 0 and header == ["ROBOT", "STATE", "INSTANCE"], res.out
    for fmt in ("json", "jsonl"):
        res = invoke(["list", "robots", "-o", fmt], env=single.env)
        row = json.loads(res.out)[0] if fmt == "json" else json.loads(res.out)
        assert row == {"robot_id": "robot-1", "state": "online", "instance_id": "gw-a"}
    res = invoke(["list", "robots", "-o", "csv"], env=single.env)
    assert res.out.splitlines()[0] == "robot_id,state,instance_id"


def test_doctor_calls_an_unknown_robot_not_registered_not_a_ghost(single: Backend) -> None:
    res = invoke(["doctor", "no-such-robot", "-o", "json"], env=single.env)
    assert res.code == 1
    kinds = [f["kind"] for f in json.loads(res.out)["findings"]]
    assert kinds == ["not_registered"]
    res = invoke(["doctor", "no-such-robot"], env=single.env)
    assert "ghost" not in res.out and "not_registered" in res.out


# Every duration flag of the CLI, with the arguments its command needs.
DURATION_FLAGS = [
    (["send", "robot-1", "hi"], "--timeout"),
    (["kick", "robot-1"], "--timeout"),
    (["ping", "gw-a"], "--timeout"),
    (["drain", "gw-a"], "--timeout"),
    (["drain", "gw-a"], "--interval"),
    (["reap"], "--timeout"),
    (["reap"], "--every"),
    (["doctor"], "--timeout"),
    (["list", "connections"], "--timeout"),
    (["list", "connections"], "--older-than"),
    (["list", "connections", "--watch"], "--interval"),
    (["list", "robots"], "--timeout"),
    (["events", "--follow"], "--for"),
    (["gateway"], "--heartbeat-interval"),
    (["gateway"], "--timeout"),
    (["simulate"], "--duration"),
    (["simulate"], "--robot-heartbeat-every"),
    (["sandbox"], "--heartbeat-interval"),
    ([], "--request-timeout"),
]
BAD_SECONDS = ["nan", "inf", "-inf", "-1", "1e-300", "1e12"]


@pytest.mark.parametrize(("args", "flag"), DURATION_FLAGS)
def test_every_duration_flag_refuses_nan_inf_negative_tiny_and_huge(
    args: list[str], flag: str
) -> None:
    """One rule for every duration flag (finite, 1 ms to a day for waits or ten years for ages),
    checked before anything runs: `kick --timeout nan` used to kick the robot, then report a
    timeout."""
    for value in BAD_SECONDS:
        argv = [flag, value, "list", "robots"] if not args else [*args, flag, value]
        res = invoke(argv, env={"WSCTL_REDIS_URL": "redis://127.0.0.1:1/0"})
        assert res.code == 2, (argv, res)
        assert res.err.startswith(f"wsctl: error: invalid {flag} "), res.err
        assert len(res.err.splitlines()) == 1, res.err
    if flag != "--interval" or args[0] != "drain":  # drain --interval 0: all at once
        argv = [flag, "0", "list", "robots"] if not args else [*args, flag, "0"]
        res = invoke(argv, env={"WSCTL_REDIS_URL": "redis://127.0.0.1:1/0"})
        assert res.code == 2 and "greater than 0" in res.err, (argv, res)


# Every rate flag of the CLI (per second; 0 means no pacing), with the arguments it needs.
RATE_FLAGS = [
    (["send", "hi", "--robot", "robot-*"], "--rate"),
    (["simulate"], "--rate"),
    (["simulate"], "--ramp"),
    (["simulate"], "--churn"),
]


@pytest.mark.parametrize(("args", "flag"), RATE_FLAGS)
def test_every_rate_flag_refuses_nan_inf_negative_tiny_and_huge(args: list[str], flag: str) -> None:
    """A rate of nan compared false everywhere and paced at an undefined speed; every rate flag
    now takes 0 (no pacing) to a million per second, checked before anything runs."""
    for value in ["nan", "inf", "-inf", "-1", "1e12", "1e-9"]:
        res = invoke([*args, flag, value], env={"WSCTL_REDIS_URL": "redis://127.0.0.1:1/0"})
        assert res.code == 2, (args, flag, value, res)
        assert res.err.startswith(f"wsctl: error: invalid {flag} "), res.err
        assert "per second" in res.err and len(res.err.splitlines()) == 1, res.err


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1", "1e-300"])
@pytest.mark.parametrize("where", ["WSCTL_TIMEOUT", "WSCTL_SOCKET_TIMEOUT", "file"])
def test_duration_settings_follow_the_same_rule_with_exit_3(
    value: str, where: str, tmp_path: object
) -> None:
    import pathlib

    env = {"WSCTL_REDIS_URL": "redis://127.0.0.1:1/0"}
    if where == "file":
        pathlib.Path("wsctl.toml").write_text(f'timeout = "{value}"\n')
    else:
        env[where] = value
    res = invoke(["list", "robots"], env=env)
    assert res.code == 3 and len(res.err.splitlines()) == 1, res
    assert "invalid" in res.err


async def test_a_limited_listing_says_how_many_matched(single: Backend) -> None:
    async with open_test_store(single) as store:
        for i in range(5):
            await seed_store_connection(store.client, f"r{i}", "gw-a")
    res = invoke(["list", "connections", "--limit", "3"], env=single.env)
    assert res.code == 0 and "showing 3 of 5 entries (sorted by robot)" in res.err
    assert "--limit N shows more" not in res.err  # the operator chose the limit
    res = invoke(["list", "connections", "--limit", "3", "-o", "jsonl"], env=single.env)
    assert len(res.out.splitlines()) == 3
    assert "showing the first 3 entries found (--limit); more may match" in res.err
    res = invoke(["list", "connections", "--limit", "5"], env=single.env)
    assert res.code == 0 and res.err == ""


async def test_counts_read_in_the_right_number(single: Backend) -> None:
    async with open_test_store(single) as store:
        await seed_store_connection(store.client, "only", "gw-a", age_s=600)
    res = invoke(["doctor"], env=single.env)
    assert "1 entry" in res.out and "1 entries" not in res.out + res.err, res.out


async def test_show_and_restore_tables_read_as_a_person_reads(
    single: Backend, tmp_path: object
) -> None:
    """`show` printed `heartbeat_age_s -3599.496`; `restore` printed its not-restored items as
    a JSON blob in a table cell."""
    import pathlib

    from wsctl.registry.model import format_ts, utcnow

    async with open_test_store(single) as store:
        await seed_store_connection(store.client, "r1", "gw-a", age_s=125)
        future = format_ts(utcnow().replace(microsecond=0)).replace("2026", "2027", 1)
        await store.client.hset("ws_conn:r-future", mapping={"instance_id": "gw-a"})
        await store.client.hset("ws_conn:r-future", "last_heartbeat", future)
    res = invoke(["show", "r1"], env=single.env)
    line = next(x for x in res.out.splitlines() if x.startswith("heartbeat_age_s"))
    assert line.split()[-1] == "2m05s", line
    res = invoke(["show", "r-future"], env=single.env)
    line = next(x for x in res.out.splitlines() if x.startswith("heartbeat_age_s"))
    assert " in " in line and "-" not in line.split()[-1], line
    backup = pathlib.Path(str(tmp_path)) / "b.jsonl"
    backup.write_text("{not json\n" + json.dumps({"robot_id": "x", "fields": {"a": "b"}}) + "\n")
    res = invoke(["registry", "restore", str(backup)], env=single.env)
    assert res.code == 1
    items = [x for x in res.out.splitlines() if "not JSON" in x]
    assert items and "{" not in items[0] and "line 1" in items[0], res.out


@pytest.mark.parametrize("value", ["bogus", "uvloop"])
@pytest.mark.parametrize("args", [["list", "robots"], ["simulate", "--robots", "2"]])
def test_a_bad_event_loop_choice_is_one_line_and_exit_3_before_anything_starts(
    value: str, args: list[str], tmp_path: Path
) -> None:
    """WSCTL_EVENT_LOOP=bogus (or uvloop when it is not installed) used to print the error and
    then Python's "coroutine was never awaited" warning; simulate started its sandbox and each
    gateway died of it (exit 1). A real process, with no Redis configured (the sandbox path)."""
    import importlib.util

    if value == "uvloop" and importlib.util.find_spec("uvloop") is not None:
        pytest.skip("uvloop is installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WSCTL_", "REDIS_", "SERVER_"))}
    env.update(WSCTL_EVENT_LOOP=value, HOME=str(tmp_path), WSCTL_STATE_DIR=str(tmp_path))
    res = subprocess.run(
        [sys.executable, "-m", "wsctl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert res.returncode == 3, res
    assert res.stderr.startswith("wsctl: error: WSCTL_EVENT_LOOP"), res.stderr
    assert len(res.stderr.splitlines()) == 1, res.stderr
