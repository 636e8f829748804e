"""A ``wsctl gateway`` child process on a free port, started and stopped by whoever owns it."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from wsctl.errors import WsctlError
from wsctl.sandbox.processes import free_port, http_ok, python_executable, stop_process

__all__ = [
    "GatewayProcess",
]


@dataclass
class GatewayProcess:
    """``wsctl gateway`` as a subprocess on a free loopback port."""

    redis_url: str
    instance_id: str
    port: int = 0
    heartbeat_interval: float = 2.0
    timeout: float = 10.0
    auth_secret: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    events: bool = True  # False: --no-events (bench/simulate_bench.py compares both)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log_path: Path | None = None

    @property
    def url(self) -> str:
        """The gateway's ``ws://`` base URL on loopback."""
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The process id while started, else None."""
        return self.proc.pid if self.proc else None

    def start(self, log_dir: Path, timeout: float = 20.0) -> GatewayProcess:
        """Run ``python -m wsctl gateway`` with its output in ``log_dir`` and wait for
        ``/healthz``.

        The child gets none of this process's ``WSCTL_*``/``REDIS_*`` settings except the state
        dir and event loop, so only the given Redis and ``extra_env`` apply. Raises WsctlError
        (after stopping it) when it exits or is not healthy within ``timeout`` seconds."""
        if not self.port:
            self.port = free_port()
        cmd = [
            python_executable(),
            "-m",
            "wsctl",
            "--redis-url",
            self.redis_url,
            "gateway",
            "--port",
            str(self.port),
            "--instance-id",
            self.instance_id,
            "--heartbeat-interval",
            str(self.heartbeat_interval),
            "--timeout",
            str(self.timeout),
            "--log-level",
            "warning",
            *(() if self.events else ("--no-events",)),
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WSCTL_", "REDIS_"))}
        env.update(self.extra_env)
        for name in ("WSCTL_STATE_DIR", "WSCTL_EVENT_LOOP"):
            if name in os.environ:
                env[name] = os.environ[name]
        if self.auth_secret:
            env["WSCTL_AUTH_SECRET"] = self.auth_secret
        self.log_path = log_dir / f"{self.instance_id}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise WsctlError(
                    f"gateway {self.instance_id} exited at start (log: {self.log_path})"
                )
            if http_ok(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise WsctlError(f"gateway {self.instance_id} did not become healthy in {timeout}s")

    def stop(self) -> None:
        """SIGTERM, so the gateway closes its robots and deregisters; SIGKILL after 15 s."""
        if self.proc is not None:
            stop_process(self.proc, grace=15.0)

    def kill(self) -> None:
        """SIGKILL (failure tests): the gateway leaves its registry entries behind."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
