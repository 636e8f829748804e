"""Registry values far longer than any id wsctl writes (a 10 KB robot id, a 20 KB instance id,
a 100 KB event detail) on a real Redis, through wsctl as a real process: tables cut them for a
person and stay as narrow as their other columns, json/jsonl/csv carry them whole, and Ctrl-C
stops a long rendering at once.

The regular expression that stripped tables' trailing spaces took time quadratic in the
longest cell (a 10 KB id: over 120 s, SIGINT ignored). These tests do not time rendering: a
generous subprocess timeout catches a hang, and the output's width must not grow with the
value (a table padded to a 10 KB cell is the quadratic output itself)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import Backend, default_sigint

ROWS = 120  # the figures were taken with about this many rows
# Far below the long values (10,000 to 100,000 characters) and far above any table of these
# columns with long cells cut (a few hundred characters a cell).
WIDEST = 4000


def _env(backend: Backend, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WSCTL_", "REDIS_"))}
    env.update(backend.env)
    env.pop("COLUMNS", None)
    env.update(extra)
    return env


def _wsctl(backend: Backend, *args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    """wsctl as a process; 60 s is far more than any of these takes (each took over 60 s
    before the fix, one over 10 minutes)."""
    return subprocess.run(
        [sys.executable, "-m", "wsctl", *args],
        capture_output=True,
        env=_env(backend, **env),
        timeout=60,
        preexec_fn=default_sigint,
    )


def _seed(client: redis.Redis, robots: int, **extra: dict[str, str]) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    pipe = client.pipeline(transaction=False)
    for n in range(robots):
        pipe.hset(
            f"ws_conn:robot-{n}",
            mapping={"instance_id": "gw-a", "last_heartbeat": now, "connected_at": now},
        )
    for robot_id, fields in extra.items():
        pipe.hset(f"ws_conn:{robot_id}", mapping={"last_heartbeat": now, **fields})
    pipe.execute()


@pytest.fixture
def client(single: Backend) -> Iterator[redis.Redis]:
    assert single.single is not None
    conn = redis.Redis(port=single.single.port, decode_responses=True)
    try:
        yield conn
    finally:
        conn.close()


def _lines(out: bytes) -> list[str]:
    return out.decode("utf-8").splitlines()


def test_a_10kb_robot_id_is_cut_and_marked_in_tables_and_whole_in_machine_formats(
    single: Backend, client: redis.Redis
) -> None:
    long_id = "x" * 10_000
    _seed(client, ROWS, **{long_id: {"instance_id": "gw-a"}})
    for command in (
        ("list", "connections"),
        ("list", "robots"),
        ("list", "connections", "-o", "wide"),
    ):
        res = _wsctl(single, *command)
        assert res.returncode == 0, res.stderr
        lines = _lines(res.stdout)
        assert len(lines) >= ROWS + 3
        assert max(len(line) for line in lines) <= WIDEST, command
        cut = [line for line in lines if "x" * 100 in line]
        assert len(cut) == 1 and "… (10,000 chars)" in cut[0], command
        assert "cut, marked …" in res.stderr.decode(), command
    jsonl = _wsctl(single, "list", "robots", "-o", "jsonl")
    assert long_id in {json.loads(line)["robot_id"] for line in _lines(jsonl.stdout)}
    csv = _wsctl(single, "list", "connections", "-o", "csv")
    assert long_id.encode() in csv.stdout


def test_a_20kb_instance_id_keeps_list_instances_and_doctor_narrow(
    single: Backend, client: redis.Redis
) -> None:
    long_instance = "i" * 20_000
    _seed(client, ROWS, **{"robot-big": {"instance_id": long_instance}})
    for command in (("list", "connections"), ("list", "instances"), ("doctor",)):
        res = _wsctl(single, *command)
        assert res.returncode in (0, 1), res.stderr  # doctor: the instances are not running
        table = [line for line in _lines(res.stdout) if not line.startswith("  wsctl ")]
        # suggested commands are printed whole on lines of their own, to be pasted
        assert max(len(line) for line in table) <= WIDEST, command
        assert "… (20,000 chars)" in res.stdout.decode(), command
    rows = json.loads(_wsctl(single, "list", "instances", "-o", "json").stdout)
    assert long_instance in {row["instance_id"] for row in rows}


def test_event_details_of_30kb_and_100kb_are_cut_in_events_and_history(
    single: Backend, client: redis.Redis
) -> None:
    """wsctl writes such events itself: `registry set ... note=<30,000 chars>` (history -o
    wide took 13 s), and one of 100 KB hung `events -o wide` for over 10 minutes."""
    for robot, size in (("big-1", 30_000), ("big-2", 100_000)):
        res = _wsctl(
            single, "registry", "set", robot, "instance_id=gw-a", f"note={'n' * size}", "--create"
        )
        assert res.returncode == 0, res.stderr
    for command in (
        ("history", "big-1", "-o", "wide"),
        ("history", "big-2", "-o", "wide"),
        ("events", "-o", "wide"),
        ("events",),
    ):
        res = _wsctl(single, *command)
        assert res.returncode == 0, res.stderr
        text = res.stdout.decode()
        # piped without COLUMNS a table is not wrapped: the detail is one line, cut
        assert max(len(line) for line in text.splitlines()) <= WIDEST, command
        assert "n" * 100 in text and "… (" in text and "chars)" in text, command
    rows = [json.loads(line) for line in _lines(_wsctl(single, "events", "-o", "jsonl").stdout)]
    assert {len(r["detail"]["fields"]["note"]) for r in rows} == {30_000, 100_000}


def _clients(client: redis.Redis) -> int:
    return int(client.info("clients")["connected_clients"])


def test_ctrl_c_while_a_long_table_is_drawn_exits_130_within_a_second(
    single: Backend, client: redis.Redis
) -> None:
    """A 20,000-row table takes seconds to draw, after the registry was read and the
    connection closed, in code that never awaits: SIGINT only asked asyncio to cancel the
    command at its next await, so it was ignored until the table was done."""
    _seed(client, 20_000)
    before = _clients(client)
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsctl", "list", "connections", "--limit", "20000"],
        env=_env(single),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=default_sigint,
    )
    try:
        # it connects, reads every entry, closes its connection, then draws: wait for that
        deadline = time.monotonic() + 30
        connected = False
        while time.monotonic() < deadline and proc.poll() is None:
            count = _clients(client)
            connected = connected or count > before
            if connected and count <= before:
                break
            time.sleep(0.02)
        assert connected and proc.poll() is None, "the listing ended before it was drawing"
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        code = proc.wait(timeout=30)
        took = time.monotonic() - sent
        assert code == 130, proc.stderr.read() if proc.stderr else ""
        assert took < 1.0, f"exited {took:.2f} s after SIGINT"
        assert proc.stderr is not None and b"wsctl: interrupted" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()


def test_events_and_history_fit_columns_and_wrap_the_detail(
    single: Backend, client: redis.Redis, tmp_path: Path
) -> None:
    """`events` and `history` were 128 and 167 columns wide at COLUMNS=80: DETAIL did not
    wrap. Now it wraps within the table, or goes under its row when the other columns leave
    it too little room."""
    words = " ".join(f"word{n}" for n in range(25))
    res = _wsctl(single, "registry", "set", "r-1", "instance_id=gw-a", f"note={words}", "--create")
    assert res.returncode == 0, res.stderr
    for width in (80, 100, 120, 200):
        commands = [("events",), ("history", "r-1")]
        if width >= 100:  # wide's unbreakable columns (times, ids, stream ids) need 86
            commands.append(("history", "r-1", "-o", "wide"))
        for command in commands:
            res = _wsctl(single, *command, COLUMNS=str(width))
            assert res.returncode == 0, res.stderr
            lines = _lines(res.stdout)
            assert max(len(line) for line in lines) <= width, (width, command)
            assert all(line == line.rstrip() for line in lines)
            found = {w.strip('",{}') for line in lines for w in line.split()}
            assert {f"word{n}" for n in range(25)} <= found, (width, command)  # none lost
