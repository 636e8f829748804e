"""A stalled or vanished Redis never hangs wsctl: SIGSTOP/SIGCONT and SIGKILL of real
redis-server processes under the real CLI (as subprocesses, timed from outside).

Each test starts its own servers (a stopped server must not stall the session's shared
fixtures) and always resumes them in a ``finally``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import invoke
from tests.faults import fill, frozen
from wsctl.redis.factory import RETRIES
from wsctl.sandbox.redis_servers import RedisClusterProcesses, RedisServer

TIMEOUT = 1.0  # --request-timeout used by these tests
# "within socket timeout x (retries + 1) plus a little": the little is process start-up
# (about 0.3 s, more on a busy 2-core machine), back-off between retries and closing.
BOUND = TIMEOUT * (RETRIES + 1) + 2.5


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as own:
        yield own


def start_wsctl(server: RedisServer, *args: str, timeout: float = TIMEOUT) -> subprocess.Popen[str]:
    env = dict(os.environ, WSCTL_REDIS_URL=server.url)
    return subprocess.Popen(
        [sys.executable, "-m", "wsctl", "--request-timeout", str(timeout), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def finish(proc: subprocess.Popen[str], limit: float) -> tuple[int, str, str, float]:
    """Drain both pipes and wait (at most ``limit`` s, then kill): (code, out, err, seconds)."""
    started = time.monotonic()
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"wsctl still running after {limit:.1f}s; stderr: {err[-500:]}")
    return proc.returncode, out, err, time.monotonic() - started


def assert_redis_error_line(err: str, server: RedisServer) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("wsctl: error: ") and f"127.0.0.1:{server.port}" in lines[0], err
    assert "Traceback" not in err


COMMANDS = {
    "list": ["list", "connections", "-o", "jsonl"],
    "list-instances": ["list", "instances"],
    "show": ["show", "robot-1"],
    "reap": ["reap", "--timeout", "1"],
    "export": ["registry", "export"],
    "import": ["registry", "import", "IMPORT_FILE"],
    "doctor": ["doctor"],
    "send": ["send", "robot-1", "hello"],
}


@pytest.fixture(scope="module")
def module_server() -> Iterator[RedisServer]:
    """One server for the per-command tests (their own, frozen and resumed by each test)."""
    with RedisServer() as own:
        fill(own, 50)
        yield own


IN_PROCESS_TIMEOUT = 0.3


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_against_a_frozen_server_exits_3_naming_it_within_the_bound(
    name: str, module_server: RedisServer, tmp_path: Path
) -> None:
    """Run in-process (no interpreter start-up in the timing), one command at a time."""
    records = tmp_path / "import.jsonl"
    fields = {"instance_id": "gw-a", "robot_id": "new-1", "last_heartbeat": "2026-01-01T00:00:00"}
    records.write_text(json.dumps({"robot_id": "new-1", "fields": fields}) + "\n")
    args = [str(records) if a == "IMPORT_FILE" else a for a in COMMANDS[name]]
    env = {"WSCTL_REDIS_URL": module_server.url}
    with frozen(module_server):
        started = time.monotonic()
        result = invoke(["--request-timeout", str(IN_PROCESS_TIMEOUT), *args], env=env)
        elapsed = time.monotonic() - started
    assert result.code == 3, result
    assert_redis_error_line(result.err, module_server)
    assert "timed out" in result.err
    assert elapsed < IN_PROCESS_TIMEOUT * (RETRIES + 1) + 1.0, elapsed
    client = redis.Redis(port=module_server.port)
    try:
        assert client.dbsize() == 50  # nothing was written while it was frozen
    finally:
        client.close()


def test_a_bulk_read_frozen_midway_exits_3_within_the_bound(server: RedisServer) -> None:
    fill(server, 30_000)
    proc = start_wsctl(server, "list", "connections", "-o", "jsonl")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("{")  # streaming has begun
        # wsctl now fills the pipe (30k lines, far more than a pipe holds) and blocks on it
        time.sleep(1.0)
        with frozen(server):
            code, out, err, elapsed = finish(proc, 30)
        assert code == 3, err
        assert_redis_error_line(err, server)
        assert elapsed < BOUND, elapsed
        assert 0 < out.count("\n") < 30_000  # it stopped part-way, with what it had read
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _keys(server: RedisServer) -> set[str]:
    client = redis.Redis(port=server.port, decode_responses=True)
    try:
        return set(client.scan_iter(match="ws_conn:*", count=5000))
    finally:
        client.close()


def test_a_reap_frozen_midway_deleted_nothing_it_had_not_backed_up(
    server: RedisServer, tmp_path: Path
) -> None:
    total = 40_000
    fill(server, total, age_s=600)
    backup = tmp_path / "reap.jsonl"
    probe = redis.Redis(port=server.port, socket_timeout=5)
    proc = start_wsctl(server, "reap", "--timeout", "90", "--backup", str(backup))
    try:
        deadline = time.monotonic() + 30
        while probe.dbsize() == total:  # wait for the first deletes to land
            assert time.monotonic() < deadline and proc.poll() is None, "reap did not start"
            time.sleep(0.005)
        with frozen(server):
            code, _, err, elapsed = finish(proc, 30)
        assert code == 3, err
        assert_redis_error_line(err, server)
        assert elapsed < BOUND, elapsed
        assert str(backup) in err  # the operator is told where the removed entries are
    finally:
        probe.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # Resumed, the server may still run deletes that were in flight when wsctl gave up: every
    # entry gone must be in the backup.
    time.sleep(0.5)
    gone = {f"robot-{i}" for i in range(total)} - {
        k.removeprefix("ws_conn:") for k in _keys(server)
    }
    backed_up = {json.loads(line)["robot_id"] for line in backup.read_text().splitlines()}
    assert gone, "the freeze came after the reap had finished"
    assert gone <= backed_up
    assert len(gone) < total


def test_a_server_killed_midway_then_restarted_empty(server: RedisServer) -> None:
    fill(server, 30_000)
    proc = start_wsctl(server, "list", "connections", "-o", "jsonl")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("{")
        time.sleep(1.0)
        server.kill()
        code, _, err, elapsed = finish(proc, 30)
        assert code == 3, err
        assert_redis_error_line(err, server)
        assert elapsed < BOUND, elapsed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # while it is down: a clean, quick failure
    code, _, err, elapsed = finish(start_wsctl(server, "list", "connections"), 30)
    assert code == 3 and elapsed < BOUND, (code, err, elapsed)
    assert_redis_error_line(err, server)
    server.start()  # same port, empty (no persistence)
    code, out, err, _ = finish(start_wsctl(server, "list", "connections", "-o", "jsonl"), 30)
    assert (code, out) == (0, ""), err
    code, _, err, _ = finish(start_wsctl(server, "send", "robot-1", "hi"), 30)
    assert code == 4, err


def test_a_long_reaper_survives_a_freeze_it_outlasts() -> None:
    """Not every stall is fatal: a freeze shorter than the request timeout is ridden out."""
    with RedisServer() as own:
        fill(own, 100, age_s=600)
        proc = start_wsctl(own, "reap", "--timeout", "90", "--no-backup", timeout=5.0)
        try:
            with frozen(own):
                time.sleep(1.0)
            code, _, err, _ = finish(proc, 30)
            assert code == 0, err
            assert _keys(own) == set()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.fixture
def small_cluster() -> Iterator[RedisClusterProcesses]:
    """Three primaries and no replicas (no failover: a frozen primary stays frozen)."""
    with RedisClusterProcesses(masters=3, replicas=0) as own:
        yield own


def test_a_frozen_cluster_primary_is_skipped_by_listings_and_named_by_reads(
    small_cluster: RedisClusterProcesses,
) -> None:
    client = redis.RedisCluster(
        host="127.0.0.1", port=small_cluster.nodes[0].port, decode_responses=True
    )
    try:
        for i in range(200):
            client.hset(f"ws_conn:robot-{i}", mapping={"instance_id": "gw-a", "robot_id": "x"})
        victim = small_cluster.nodes[1]
        on_victim = next(
            f"robot-{i}"
            for i in range(200)
            if client.get_node_from_key(f"ws_conn:robot-{i}").port == victim.port
        )
    finally:
        client.close()
    env = dict(os.environ, REDIS_USE_CLUSTER="true", REDIS_NODES=small_cluster.startup)
    node = f"127.0.0.1:{victim.port}"

    def run(*args: str) -> tuple[int, str, str, float]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wsctl", "--request-timeout", str(TIMEOUT), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        return finish(proc, 30)

    with frozen(victim):
        code, out, err, elapsed = run("list", "connections", "-o", "jsonl")
        assert code == 0 and elapsed < BOUND, (code, err, elapsed)
        assert 0 < out.count("\n") < 200  # the other primaries' entries
        assert f"cluster primary {node} was unreachable" in err
        code, _, err, elapsed = run("show", on_victim)
        assert code == 3 and elapsed < BOUND, (code, err, elapsed)
        assert err.count("\n") == 1 and "timed out" in err and node in err, err


def test_a_frozen_server_is_named_without_its_password() -> None:
    password = "Fr0zen@pass/word"
    with RedisServer(password=password) as own:
        env = {"WSCTL_REDIS_URL": f"redis://127.0.0.1:{own.port}/0", "REDIS_PASSWORD": password}
        assert invoke(["list", "connections"], env=env).code == 0
        with frozen(own):
            result = invoke(["--request-timeout", "0.3", "list", "connections"], env=env)
        assert result.code == 3, result
        assert_redis_error_line(result.err, own)
        assert "Fr0zen" not in result.err + result.out and "pass/word" not in result.err
