"""Original-design gateways (tests/original_gateway.py) as real uvicorn processes on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import Backend
from wsctl.sandbox import _stop_process, free_port

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class OriginalGateway:
    instance_id: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


def redis_env(backend: Backend) -> dict[str, str]:
    """The original design's environment variables for the backend's Redis."""
    if backend.single is not None:
        return {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(backend.single.port)}
    assert backend.cluster is not None
    return {"REDIS_USE_CLUSTER": "true", "REDIS_NODES": backend.cluster.startup}


def _wait_listening(gw: OriginalGateway, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gw.proc.poll() is not None:
            raise RuntimeError(
                f"original gateway {gw.instance_id} exited with {gw.proc.returncode}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", gw.port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"original gateway {gw.instance_id} did not listen within {timeout:g}s")


@contextlib.contextmanager
def original_gateways(
    backend: Backend, names: tuple[str, ...] = ("orig-a", "orig-b"), timeout: float = 20.0
) -> Iterator[list[OriginalGateway]]:
    """Start one uvicorn process per name (``SERVER_INSTANCE_ID``); stop them all afterwards."""
    started: list[OriginalGateway] = []
    try:
        for name in names:
            port = free_port()
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "WSCTL_"))},
                **redis_env(backend),
                "SERVER_INSTANCE_ID": name,
                "PORT": str(port),
                "PYTHONPATH": str(ROOT),
            }
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "tests.original_gateway:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                ],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            started.append(OriginalGateway(name, port, proc))
        for gw in started:
            _wait_listening(gw, timeout)
        yield started
    finally:
        for gw in started:
            _stop_process(gw.proc)
