"""wsctl as a real process: entry points, signals, stdin."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import Backend, ainvoke, invoke, open_test_store
from tests.fleet import running_fleet, wait_for
from wsctl import __version__
from wsctl.sandbox.gateways import GatewayProcess


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wsctl", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_help_and_version_work_as_a_process() -> None:
    assert _run("--version").stdout.strip() == f"wsctl {__version__}"
    helped = _run("--help")
    assert helped.returncode == 0 and "simulate" in helped.stdout and "doctor" in helped.stdout
    commands = [
        ("list", "connections"),
        ("list", "instances"),
        ("show",),
        ("registry", "rm"),
        ("registry", "import"),
        ("send",),
        ("reap",),
        ("doctor",),
        ("simulate",),
        ("gateway",),
        ("sandbox",),
        ("token",),
        ("config", "show"),
        ("list",),
        ("registry",),
        ("config",),
        ("registry", "restore"),
        ("registry", "export"),
        ("registry", "set"),
        ("list", "robots"),
        ("completion",),
    ]
    for command in commands:
        text = _run(*command, "--help").stdout
        assert "Example" in text, command
        assert "seed" not in text, command  # the original design is called that everywhere


def test_debug_shows_a_traceback_and_default_does_not() -> None:
    env = {**os.environ, "WSCTL_REDIS_URL": "redis://127.0.0.1:1/0"}
    plain = _run("list", "robots", env=env)
    assert plain.returncode == 3 and "Traceback" not in plain.stderr
    debug = _run("--debug", "list", "robots", env=env)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


async def test_gateway_process_sigterm_closes_1001_removes_entries_exits_0(
    single: Backend, tmp_path: Path
) -> None:
    gw = GatewayProcess(redis_url=single.env["WSCTL_REDIS_URL"], instance_id="gw-term").start(
        tmp_path
    )
    try:
        async with open_test_store(single) as store:
            robot = await connect(f"{gw.url}/ws/term-1")
            await wait_for(lambda: store.get("term-1"))
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(robot.recv(), 10)
            except ConnectionClosed as closed:
                assert closed.rcvd is not None and closed.rcvd.code == 1001
            code = await asyncio.to_thread(gw.proc.wait, 15)
            assert code == 0
            assert await store.get("term-1") is None
            assert await store.client.exists("ws_inst:gw-term") == 0
    finally:
        gw.stop()


async def test_send_reads_the_message_from_stdin(single: Backend) -> None:
    async with (
        running_fleet(single.env, names=("gw-a",)) as fleet,
        open_test_store(single) as store,
    ):
        async with connect(f"{fleet['gw-a'].ws_url}/ws/stdin-bot") as robot:
            await wait_for(lambda: store.get("stdin-bot"))
            res = await ainvoke(["send", "stdin-bot", "-"], env=single.env, stdin="from stdin\n")
            assert res.code == 0, res.out + res.err
            assert await asyncio.wait_for(robot.recv(), 5) == "from stdin\n"


def test_watch_needs_a_table(single: Backend) -> None:
    res = invoke(["list", "connections", "--watch", "-o", "json"], env=single.env)
    assert res.code == 2 and "--watch needs" in res.err


def test_keys_that_are_not_utf8_print_escaped_and_round_trip_byte_for_byte(
    single: Backend, tmp_path: Path
) -> None:
    import redis

    raw = redis.Redis(port=single.single.port)  # type: ignore[union-attr]
    raw.hset(b"ws_conn:bot\xff\xfe", mapping={b"instance_id": b"gw\xff", b"last_heartbeat": b"1"})
    env = {**os.environ, **single.env, "PYTHONIOENCODING": "utf-8"}
    listed = _run("list", "connections", "-o", "jsonl", env=env)
    assert listed.returncode == 0, listed.stderr
    assert '"robot_id": "bot\\udcff\\udcfe"' in listed.stdout
    dump = tmp_path / "dump.jsonl"
    assert _run("registry", "export", "-f", str(dump), env=env).returncode == 0
    assert "bot\\udcff\\udcfe" in dump.read_text(encoding="utf-8")  # valid UTF-8 JSON
    raw.flushall()
    assert _run("registry", "import", str(dump), env=env).returncode == 0
    assert raw.hgetall(b"ws_conn:bot\xff\xfe") == {
        b"instance_id": b"gw\xff",
        b"last_heartbeat": b"1",
    }
    raw.close()


def test_ids_that_are_not_utf8_are_their_own_bytes_in_csv_and_shell_words_for_people(
    single: Backend, tmp_path: Path
) -> None:
    """An id of bytes ff fe was written to CSV as the 12 characters \\udcff\\udcfe, and
    tables and errors showed that Python escape. CSV (for machines) now carries the bytes;
    people see $'...' words, which bash turns back into those bytes."""
    import redis

    raw = redis.Redis(port=single.single.port)  # type: ignore[union-attr]
    raw.hset(b"ws_conn:bot\xff\xfe", mapping={b"instance_id": b"gw\xff", b"last_heartbeat": b"1"})
    raw.close()
    env = {**os.environ, **single.env}

    def run(*args: str | bytes) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "wsctl", *args], capture_output=True, env=env, timeout=60
        )

    for listing in (("list", "connections"), ("list", "robots")):
        csv = run(*listing, "-o", "csv")
        assert csv.returncode == 0, csv.stderr
        assert b"\nbot\xff\xfe," in csv.stdout and b",gw\xff" in csv.stdout
        assert b"\\udc" not in csv.stdout
        table = run(*listing)
        assert b"$'bot\\xff\\xfe'" in table.stdout and b"$'gw\\xff'" in table.stdout
        assert b"udc" not in table.stdout
    missing = run("show", b"nobody\xff")
    assert missing.returncode == 1
    assert b"robot $'nobody\\xff' has no registry entry" in missing.stderr
    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"bot\xff\xfe\nnot-there\xff\n")
    for extra in ((), ("--dry-run",)):
        sent = run("send", "hi", "--robots-from", str(ids), "-o", "csv", *extra)
        assert b"\nnot-there\xff," in sent.stdout and b"\nbot\xff\xfe," in sent.stdout, extra
        assert b"\\udc" not in sent.stdout
    listed = run("send", "hi", "--robots-from", str(ids), "--dry-run")
    assert b"$'not-there\\xff'" in listed.stdout and b"$'bot\\xff\\xfe'" in listed.stdout


def test_gateway_bad_port_and_busy_port_are_usage_errors(single: Backend) -> None:
    env = {**os.environ, **single.env}
    bad = _run("gateway", "--port", "99999", env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    busy = _run("gateway", "--port", str(single.single.port), env=env)  # type: ignore[union-attr]
    assert busy.returncode == 2 and "cannot listen on" in busy.stderr


def test_watch_needs_a_terminal(single: Backend) -> None:
    """`--watch` redraws in place; piped or redirected it wrote nothing at all, forever (and
    `| head -1` never stopped it)."""
    done = subprocess.run(
        [sys.executable, "-m", "wsctl", "list", "connections", "--watch"],
        env={**os.environ, **single.env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done
    assert done.stderr == (
        "wsctl: error: --watch needs a terminal; for a file or a pipe, list without --watch\n"
    )


@pytest.mark.parametrize(
    "args",
    [["registry", "export"], ["list", "connections", "-o", "jsonl"], ["--version"]],
    ids=lambda a: " ".join(a),
)
def test_a_full_disk_under_stdout_is_one_line_and_exit_2_not_an_internal_error(
    single: Backend, args: list[str]
) -> None:
    """`wsctl registry export > backup.jsonl` on a full disk said "internal error ... report
    it", exit 70: the disk is the operator's to free, not a bug."""
    import redis as redis_sync

    assert single.single is not None
    redis_sync.Redis(port=single.single.port).hset(
        "ws_conn:full-1", mapping={"instance_id": "gw-a", "robot_id": "full-1"}
    )
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "wsctl", *args],
            env={**os.environ, **single.env},
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
        )
    assert done.returncode == 2, done.stderr
    assert done.stderr == "wsctl: error: cannot write the output: No space left on device\n"
