"""bench/app_send_bench.py's Python side without Node: a tiny wsctl-only run with the Python
robot swarm (real redis-server, two real uvicorn instances of the FastAPI example), and an
interrupted run that leaves none of its processes behind."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import default_sigint

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--wsctl-only",
    "--client",
    "python",
    "--robots",
    "20",
    "--messages",
    "200",
    "--inflight",
    "5",
    "--runs",
    "1",
]


def bench(args: list[str], log_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "bench/app_send_bench.py", *args, "--log-dir", str(log_dir)],
        cwd=ROOT,
        preexec_fn=default_sigint,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """Its output once it exits; SIGTERM (which it turns into a clean stop), then SIGKILL, when
    it takes longer than ``timeout``."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=10)
        raise AssertionError(f"bench did not finish within {timeout:g}s") from None


def children(pid: int) -> set[int]:
    """The live processes whose parent is ``pid``."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_app_send_bench_without_node_counts_every_message_of_every_mode(tmp_path: Path) -> None:
    proc = bench([*TINY, "--paced", "50", "--rate", "200", "--serial", "30"], tmp_path)
    out, err = finish(proc, 100)
    assert proc.returncode == 0, err
    lines = {m.group(1).strip(): m.group(2) for m in re.finditer(r"run 1 wsctl (.+?): (.+)", out)}
    assert lines["fleet.send paced 200/s via B"].startswith("50/50 delivered (0 dup)")
    assert lines["fleet.send in sequence via B"].startswith("30/30 delivered (0 dup)")
    assert re.search(r"ack p50 [0-9.]+ ms, p99 [0-9.]+ ms", lines["fleet.send paced 200/s via B"])
    assert lines["fleet.send, 5 in flight"].startswith("200/200 delivered (0 dup)")
    assert "errors 0;" in lines["fleet.send, 5 in flight"]
    assert "connections opened" in lines["fleet.send, 5 in flight"]
    publish = lines["fleet.publish, 5 in flight"]
    assert publish.startswith(("n/a", "200/200 delivered"))
    assert "| fleet.send, 5 in flight | 200/200 | 0 |" in out


def test_app_send_bench_interrupted_stops_every_process_it_started(tmp_path: Path) -> None:
    # paced 100/s for 60 s: still sending when interrupted
    proc = bench([*TINY, "--paced", "6000", "--rate", "100"], tmp_path)
    started: set[int] = set()
    leaked: list[int] = []
    try:
        deadline = time.monotonic() + 60
        # redis-server, two uvicorn instances, the swarm
        while len(started) < 4 and time.monotonic() < deadline and proc.poll() is None:
            started |= children(proc.pid)
            time.sleep(0.1)
        assert len(started) >= 4, f"bench started {len(started)} processes"
        time.sleep(2)  # into the paced mode
        os.kill(proc.pid, signal.SIGINT)
        _, err = finish(proc, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        leaked = [pid for pid in started if alive(pid)]
        for pid in leaked:  # what the bench left behind is stopped here, then reported
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert leaked == []
    assert proc.returncode == 130
    assert "app_send_bench: interrupted" in err
