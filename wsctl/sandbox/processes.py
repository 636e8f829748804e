"""What every process the sandbox and the tests start shares: free ports, starting and stopping
(context managers; SIGTERM, then SIGKILL), the Python that runs wsctl, a health probe."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from types import TracebackType
from typing import Self

from wsctl.errors import WsctlError

__all__ = [
    "StartStop",
    "free_cluster_port",
    "free_port",
    "http_ok",
    "pid_alive",
    "python_executable",
    "stop_process",
]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the OS picks it; another process may take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_cluster_port(host: str = "127.0.0.1") -> int:
    """A free port whose cluster bus port (+10000) is free too, as Redis Cluster needs."""
    import random

    for _ in range(200):
        port = random.randint(20000, 45000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind((host, port))
                b.bind((host, port + 10000))
        except OSError:
            continue
        return port
    raise WsctlError("no free port pair for a cluster node")


def stop_process(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM ``proc``, and SIGKILL it if it is still running after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=grace)


class StartStop:
    """Context-manager protocol of every process owner here: ``start()`` on enter (which
    returns self), ``stop()`` on exit, whatever happened inside."""

    def start(self) -> Self:  # pragma: no cover - overridden
        """Start the process(es); returns self, ready to use."""
        raise NotImplementedError

    def stop(self) -> None:  # pragma: no cover - overridden
        """Stop what :meth:`start` started."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def python_executable() -> str:
    """The interpreter that gateway subprocesses run with: this one, so they import the
    same wsctl."""
    return sys.executable


def http_ok(port: int, path: str = "/healthz", timeout: float = 0.5) -> bool:
    """Does ``GET path`` on 127.0.0.1:``port`` answer 200 within ``timeout`` seconds?"""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            return sock.recv(32).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """Is process ``pid`` running (one of another user's counts; a zombie does not)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (our own detached child, not yet reaped) is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return True
