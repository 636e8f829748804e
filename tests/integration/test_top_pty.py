"""The real `wsctl top` in a pseudo-terminal, as a person runs it (80x24 and 200x50): what is
on the screen (read with pyte, a VT emulator), nothing wrapped at 80 columns, and `q` and
Ctrl-C leave with the terminal restored."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import Backend, default_sigint, open_test_store
from tests.fleet import running_fleet, wait_for
from tests.robot_clients import registered, robots

pyte = pytest.importorskip("pyte")
pytest.importorskip("textual")


@dataclass
class Session:
    """One `wsctl top` process on a pty of ``cols`` x ``rows``, its output fed to pyte."""

    cols: int
    rows: int
    env: dict[str, str]
    raw: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        self.screen = pyte.Screen(self.cols, self.rows)
        self.stream = pyte.ByteStream(self.screen)

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def text(self) -> str:
        return "\n".join(self.lines())


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WSCTL_", "REDIS_", "TEXTUAL")) and k not in ("COLUMNS", "LINES")
    }
    for name in ("WSCTL_STATE_DIR", "WSCTL_EVENT_LOOP"):
        if name in os.environ:
            env[name] = os.environ[name]
    env.update({"TERM": "xterm-256color", **extra})
    return env


def run_top(
    session: Session,
    until: Callable[[Session], bool],
    key: bytes,
    timeout: float = 40.0,
) -> tuple[int, bool, str]:
    """Run `wsctl top` until ``until(session)`` holds, press ``key``; returns the exit code,
    whether the terminal's modes were restored, and the screen seen before the key."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", session.rows, session.cols, 0, 0))
    before = termios.tcgetattr(slave)
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsctl", "top", "--interval", "0.5"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=_env(session.env),
        start_new_session=True,
        preexec_fn=default_sigint,
    )
    seen = ""
    try:
        deadline = time.monotonic() + timeout
        pressed = False
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                session.raw.extend(chunk)
                session.stream.feed(chunk)
            if not pressed and until(session):
                seen = session.text()
                os.write(master, key)
                pressed = True
            if proc.poll() is not None:
                break
        code = proc.wait(10)
        restored = termios.tcgetattr(slave) == before
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.close(slave)
        os.close(master)
    return code, restored, seen


def _shows_fleet(session: Session) -> bool:
    text = session.text()
    ready = "gw-a" in text and "gw-b" in text and "pty-1" in text and "1 entry" in text
    return ready and "u Undrain" in session.lines()[-1]  # the footer comes last


@pytest.mark.parametrize(("cols", "rows"), [(80, 24), (200, 50)])
async def test_wsctl_top_on_a_terminal_shows_the_fleet_and_q_restores_it(
    single: Backend, cols: int, rows: int
) -> None:
    async with running_fleet(single.env) as fleet, open_test_store(single) as store:
        async with robots({"pty-1": fleet["gw-a"].ws_url}):
            await wait_for(lambda: registered(store, ["pty-1"]))
            session = Session(cols, rows, single.env)
            code, restored, seen = await asyncio.to_thread(run_top, session, _shows_fleet, b"q")
    assert code == 0, seen or bytes(session.raw[-2000:])
    assert restored, "terminal modes not restored"
    assert session.raw.rfind(b"\x1b[?1049l") > session.raw.rfind(b"\x1b[?1049h") >= 0
    lines = seen.split("\n")
    assert len(lines) == rows
    assert lines[0].startswith("wsctl top: redis://127.0.0.1:")
    # the header's parts all shown: on a second line when 80 columns cannot hold them
    below = 2 if cols < 90 else 1
    assert "registry scan" in lines[below - 1] and lines[below].strip() == "no alerts"
    assert "q Quit" in lines[-1] and "d Drain" in lines[-1]
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("INSTANCE"))
    gw_a = next(line for line in lines[header:] if line.lstrip().startswith("gw-a"))
    assert gw_a.split()[:5] == ["gw-a", "2", "alive", "0s", "1"], gw_a
    # nothing wrapped: each instance is one line, the registry counts one line
    assert sum(line.lstrip().startswith("gw-a") for line in lines) == 1
    assert sum("1 entry" in line for line in lines) == 1
    if cols >= 200:
        assert "VERSION" in lines[header] and "0.1.0" in gw_a
        assert "heartbeat age: p50" in seen


async def test_ctrl_c_leaves_wsctl_top_and_restores_the_terminal(single: Backend) -> None:
    async with running_fleet(single.env):
        session = Session(80, 24, single.env)
        code, restored, seen = await asyncio.to_thread(
            run_top, session, lambda s: "gw-a" in s.text(), b"\x03"
        )
    assert code == 0 and restored, seen
    assert session.raw.rfind(b"\x1b[?1049l") > session.raw.rfind(b"\x1b[?1049h") >= 0


def test_without_textual_wsctl_top_says_how_to_install_it(single: Backend) -> None:
    """One line and exit 3 when the tui extra is missing (textual made unimportable)."""
    env = _env(single.env)
    with contextlib.ExitStack():
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; sys.modules['textual'] = None; "
                "from wsctl.cli.main import main; main(['top'])",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr == (
        "wsctl: error: wsctl top needs the tui extra: pip install 'wsctl[tui]' "
        "(wsctl top --once -o table|json works without it)\n"
    )
    assert proc.stdout == ""


def test_wsctl_top_started_while_redis_is_down_opens_on_the_alert_and_recovers(
    tmp_path: Path,
) -> None:
    """It exited 3 before drawing anything: the 3 a.m. case, where Redis is what is wrong."""
    from wsctl.sandbox.processes import free_port
    from wsctl.sandbox.redis_servers import RedisServer

    port = free_port()
    session = Session(120, 30, {"WSCTL_REDIS_URL": f"redis://127.0.0.1:{port}/0"})
    servers: list[RedisServer] = []

    def down_then_up(s: Session) -> bool:
        alerts = s.lines()[1:5]
        if not servers:
            if any(f"127.0.0.1:{port}" in line for line in alerts):
                # the screen is up, on the alert: now Redis starts on that port
                servers.append(RedisServer(port=port, workdir=tmp_path).start())
            return False
        return any(line.strip() == "no alerts" for line in alerts)

    try:
        code, restored, seen = run_top(session, down_then_up, b"q", timeout=60)
    finally:
        for server in servers:
            server.stop()
    assert servers, session.text()  # the alert was on the screen
    assert code == 0 and restored, seen or session.text()
    assert "no alerts" in seen
