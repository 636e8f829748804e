"""``wsctl sandbox`` as a service: one at a time, run in the foreground until stopped, started
in the background (detached) and ready once its state file says so, or stopped.

The running sandbox is the one its state file names (:func:`wsctl.sandbox.local.running_sandbox`);
it writes that file once Redis, the gateways and the demo robots are up, so the file's presence
means ready. Nothing here prints: the CLI renders what these functions return, and their errors
are :class:`~wsctl.errors.WsctlError` subclasses.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from wsctl.errors import NotFound, UsageError, WsctlError
from wsctl.paths import state_dir
from wsctl.sandbox.demo import DemoRobots
from wsctl.sandbox.local import (
    Sandbox,
    SandboxInfo,
    remove_sandbox_file,
    running_sandbox,
    write_sandbox_file,
)
from wsctl.sandbox.processes import pid_alive, python_executable

__all__ = [
    "DETACH_TIMEOUT",
    "STOP_TIMEOUT",
    "Detached",
    "SandboxSpec",
    "Serving",
    "refuse_a_second_sandbox",
    "serve",
    "start_detached",
    "stop_sandbox",
]

# a detached sandbox must be ready, and a stopped one gone, within these
DETACH_TIMEOUT = 90.0
STOP_TIMEOUT = 60.0
# how often the foreground sandbox looks at its stop event (it stops within this)
STOP_POLL = 0.5


@dataclass(frozen=True)
class SandboxSpec:
    """What a sandbox runs: ``gateways`` gateway processes beating every
    ``heartbeat_interval`` seconds (entries stale after ``timeout``), ``robots`` demo robots
    robot-1..robot-N kept connected, one Redis node or a cluster, the gateways' auth secret."""

    gateways: int
    robots: int
    cluster: bool
    heartbeat_interval: float
    timeout: float
    auth_secret: str | None = None


@dataclass(frozen=True)
class Serving:
    """A foreground sandbox that is up: the environment that points other commands at it, its
    gateways' base URLs and how many demo robots are connected."""

    env: Mapping[str, str]
    gateway_urls: tuple[str, ...]
    demo_robots: int


@dataclass(frozen=True)
class Detached:
    """A sandbox started in the background and ready: what its state file says, its process
    id and its log file."""

    info: SandboxInfo
    pid: int
    log_path: Path


def refuse_a_second_sandbox() -> None:
    """One sandbox at a time: a second would take over the state file (other commands would
    use it) and remove it when stopped, leaving the first running where nothing finds it.
    Raises UsageError when one is running."""
    found = running_sandbox()
    if found is not None:
        raise UsageError(f"a sandbox is already running (pid {found.pid}); wsctl sandbox --stop")


def serve(
    spec: SandboxSpec,
    stop: threading.Event,
    on_ready: Callable[[Serving], None],
    on_stopping: Callable[[], None],
) -> None:
    """Run a sandbox in this process until ``stop`` is set: start Redis, the gateways and the
    demo robots, write the state file (ready), call ``on_ready``; when stopped, remove the
    state file, call ``on_stopping`` and stop everything it started."""
    with (
        Sandbox(
            gateways=spec.gateways,
            heartbeat_interval=spec.heartbeat_interval,
            timeout=spec.timeout,
            auth_secret=spec.auth_secret,
            cluster=spec.cluster,
        ) as box,
        DemoRobots(box.gateway_urls, spec.robots, spec.auth_secret) as demo,
    ):
        info = SandboxInfo(
            redis_url=box.redis_url,
            pid=os.getpid(),
            gateways=tuple(box.gateway_urls),
            auth_secret=spec.auth_secret,
            cluster_nodes=box.redis_cluster.startup if box.redis_cluster else None,
        )
        write_sandbox_file(info)  # written once everything is up: its presence means ready
        try:
            on_ready(Serving(dict(box.env), tuple(box.gateway_urls), demo.count))
            while not stop.wait(STOP_POLL):
                pass
        finally:
            remove_sandbox_file(os.getpid())
            on_stopping()


def start_detached(spec: SandboxSpec, timeout: float = DETACH_TIMEOUT) -> Detached:
    """Start ``wsctl sandbox`` as a background process (its own session, output to a log in
    the state dir) and wait until it has written its state file: ready. Raises WsctlError
    when it exits while starting or is not ready within ``timeout`` (then it is terminated)."""
    log_path = state_dir() / "sandbox.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        python_executable(),
        "-m",
        "wsctl",
        "sandbox",
        "--gateways",
        str(spec.gateways),
        "--robots",
        str(spec.robots),
        "--heartbeat-interval",
        str(spec.heartbeat_interval),
    ]
    if spec.cluster:
        cmd.append("--cluster")
    env = dict(os.environ)
    if spec.auth_secret:
        env["WSCTL_AUTH_SECRET"] = spec.auth_secret
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = running_sandbox()
        if info is not None and info.pid == proc.pid:
            return Detached(info, proc.pid, log_path)
        if proc.poll() is not None:
            raise WsctlError(f"the sandbox exited while starting (log: {log_path})")
        time.sleep(0.1)
    proc.terminate()
    raise WsctlError(f"the sandbox was not ready within {timeout:g}s (log: {log_path})")


def stop_sandbox(timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM the running sandbox and wait until it has stopped everything it started;
    returns its pid. Raises NotFound when none runs, WsctlError when it is still running
    after ``timeout``."""
    found = running_sandbox()
    if found is None:
        raise NotFound("no sandbox is running")
    os.kill(found.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running_sandbox() is None and not pid_alive(found.pid):
            return found.pid
        time.sleep(0.1)
    raise WsctlError(f"the sandbox (pid {found.pid}) did not stop within {timeout:g}s")
