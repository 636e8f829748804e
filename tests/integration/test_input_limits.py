"""Line input (``send --robots-from``, ``registry import|restore``) is read in bounded memory
and bounded disk: a line is read up to its limit and no further, stdin is copied for the
second pass only as far as the first pass got, and an endless stream of bad lines stops at
once. Before: ``--robots-from /dev/zero`` grew without end in memory, ``registry import
/dev/zero`` (or ``- < /dev/zero``) wrote gigabytes to a temporary file in seconds (left behind
when the process was killed), and ``yes '{}' | wsctl registry import -`` never ended."""

from __future__ import annotations

import io
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Backend, default_sigint
from wsctl.cli.fanout import read_ids


def _limits() -> None:
    # 512 MiB of address space (wsctl needs a few dozen, plus one 64 MiB line) and 256 MiB of
    # file: reading /dev/zero whole, or copying it, fails under these instead of never ending
    resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 20, 256 << 20))
    default_sigint()
    # a file over RLIMIT_FSIZE must fail the write, not kill the process unseen
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _wsctl(
    backend: Backend, tmp: Path, args: list[str], stdin: int | None
) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WSCTL_", "REDIS_"))}
    env.update(backend.env, TMPDIR=str(tmp), WSCTL_STATE_DIR=str(tmp / "state"))
    return subprocess.run(
        [sys.executable, "-m", "wsctl", *args],
        stdin=stdin,
        capture_output=True,
        env=env,
        preexec_fn=_limits,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["registry", "import", "/dev/zero", "--dry-run"], "/dev/zero"),
        (["registry", "import", "-", "--dry-run"], "<stdin>"),
        (["registry", "restore", "-", "--dry-run"], "<stdin>"),
        (["send", "hi", "--robots-from", "/dev/zero"], "--robots-from /dev/zero"),
    ],
    ids=["import-file", "import-stdin", "restore-stdin", "robots-from"],
)
def test_a_line_without_end_is_refused_at_once_in_bounded_memory_and_disk(
    single: Backend, tmp_path: Path, args: list[str], named: str
) -> None:
    spool = tmp_path / "tmp"
    spool.mkdir()
    with open("/dev/zero", "rb") as zero:
        proc = _wsctl(single, spool, args, zero.fileno())
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    limit = "1 MiB; one robot id a line" if args[0] == "send" else "64 MiB; one entry a line"
    assert err.splitlines() == [
        f"wsctl: error: {named} line 1 is longer than {limit} (the wrong file?)"
    ]
    assert list(spool.iterdir()) == []  # no temporary copy left behind


@pytest.mark.parametrize("command", ["import", "restore"])
def test_an_endless_stream_of_bad_lines_stops_the_import_at_once(
    single: Backend, tmp_path: Path, command: str
) -> None:
    spool = tmp_path / "tmp"
    spool.mkdir()
    source = subprocess.Popen(["yes", "{}"], stdout=subprocess.PIPE)
    try:
        assert source.stdout is not None
        proc = _wsctl(single, spool, ["registry", command, "-"], source.stdout.fileno())
    finally:
        source.kill()
        source.wait(5)
        if source.stdout is not None:
            source.stdout.close()
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert len(err.splitlines()) == 1
    assert err.startswith(
        "wsctl: error: 1000 bad line(s) before line 1001, stopped reading (not an export or a "
        "backup?), nothing imported: <stdin>:1: robot_id missing or not a string"
    )
    assert list(spool.iterdir()) == []


def test_robots_from_keeps_each_id_once_in_the_order_first_seen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a list that repeats itself (yes robot-1 | wsctl send --robots-from - ...) holds memory
    # for its distinct ids only: before, every line was kept (3.3 GB in 10 s)
    monkeypatch.setattr(sys, "stdin", io.StringIO("robot-2\nrobot-1\n" * 50_000 + "robot-3\n"))
    assert read_ids("-") == ["robot-2", "robot-1", "robot-3"]
