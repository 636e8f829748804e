"""Ctrl-C (SIGINT) at any moment of a command: exit 130 within a second with one line on
stderr, ``wsctl: interrupted`` (``events --follow`` alone ends with 0, as documented). The
moments tried here are deterministic: a Redis that accepted the connection and never
answers (the command waits on its first reply), and the start-up imports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Backend, default_sigint


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WSCTL_", "REDIS_"))}
    env.update(extra)
    return env


@pytest.fixture
def silent_redis() -> Iterator[socket.socket]:
    """A listener on loopback that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(30)
    try:
        yield listener
    finally:
        listener.close()


@pytest.mark.parametrize(
    "args",
    [
        ["events"],
        ["events", "-o", "jsonl"],
        ["history", "robot-1"],
        ["list", "connections"],
        ["show", "robot-1"],
        ["doctor"],
    ],
    ids=lambda a: " ".join(a),
)
def test_ctrl_c_while_a_read_waits_for_redis_exits_130_with_one_line(
    silent_redis: socket.socket, args: list[str]
) -> None:
    port = silent_redis.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsctl", "--request-timeout", "20", *args],
        env=_env(WSCTL_REDIS_URL=f"redis://127.0.0.1:{port}/0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    accepted: socket.socket | None = None
    try:
        accepted, _ = silent_redis.accept()  # connected: it waits for Redis's first reply
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        out, err = proc.communicate(timeout=15)
        took = time.monotonic() - sent
    finally:
        if accepted is not None:
            accepted.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    # `events` swallowed it (a listing cut short, or nothing at all, exited 0)
    assert proc.returncode == 130, (proc.returncode, err)
    assert err == "wsctl: interrupted\n"
    assert out == ""
    assert took < 1.0


def test_ctrl_c_during_the_start_up_imports_exits_130_with_one_line(
    single: Backend, tmp_path: Path
) -> None:
    """Python's start-up and wsctl's imports take a few tenths of a second, before any
    handler is in place: Ctrl-C there printed a KeyboardInterrupt traceback."""
    hook = tmp_path / "hook"
    hook.mkdir()
    # SIGINT arrives while wsctl.cli.main imports typer, deterministically
    (hook / "sitecustomize.py").write_text(
        "import os, signal, sys\n"
        "class _Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'typer' and 'wsctl.cli.main' in sys.modules:\n"
        "            sys.meta_path.remove(self)\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Interrupt())\n"
    )
    for command in ([sys.executable, "-m", "wsctl"], [str(Path(sys.executable).parent / "wsctl")]):
        proc = subprocess.run(
            [*command, "list", "connections"],
            env=_env(PYTHONPATH=str(hook), **single.env),
            capture_output=True,
            text=True,
            timeout=30,
            preexec_fn=default_sigint,
        )
        assert proc.returncode == 130, (command, proc.returncode, proc.stderr)
        assert proc.stderr == "wsctl: interrupted\n"
        assert proc.stdout == ""
