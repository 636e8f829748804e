"""examples/fastapi_gateway.py (the fleet core in a FastAPI app) as real uvicorn processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import Backend
from tests.original_fleet import redis_env
from wsctl.sandbox import _stop_process, free_port

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class FastApiGateway:
    instance_id: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


def _wait_ready(gw: FastApiGateway, timeout: float) -> None:
    """Healthy, and its control channel subscribed (/metrics is served after start-up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gw.proc.poll() is not None:
            raise RuntimeError(
                f"fastapi gateway {gw.instance_id} exited with {gw.proc.returncode}: "
                + gw.log.read_text(errors="replace")[-2000:]
            )
        with contextlib.suppress(OSError):
            if gw.get("/healthz")[0] == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"fastapi gateway {gw.instance_id} not healthy within {timeout:g}s")


@contextlib.contextmanager
def fastapi_gateways(
    backend: Backend,
    log_dir: Path,
    names: tuple[str, ...] = ("fa-a", "fa-b"),
    heartbeat_interval: float = 0.5,
    timeout: float = 20.0,
    extra_env: dict[str, str] | None = None,
) -> Iterator[list[FastApiGateway]]:
    """Start ``uvicorn examples.fastapi_gateway:app`` per name; stop (SIGTERM) them after."""
    started: list[FastApiGateway] = []
    try:
        for name in names:
            port = free_port()
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "WSCTL_"))},
                **redis_env(backend),
                "SERVER_INSTANCE_ID": name,
                "PORT": str(port),
                "WSCTL_HEARTBEAT_INTERVAL": str(heartbeat_interval),
                "WSCTL_TIMEOUT": "10",
                "PYTHONPATH": str(ROOT),
                **(extra_env or {}),
            }
            log = log_dir / f"{name}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        "examples.fastapi_gateway:app",
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
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            started.append(FastApiGateway(name, port, proc, log))
        for gw in started:
            _wait_ready(gw, timeout)
        yield started
    finally:
        for gw in started:
            _stop_process(gw.proc)


@contextlib.asynccontextmanager
async def uvicorn_in_process(app: Any, timeout: float = 10.0) -> AsyncIterator[int]:
    """Serve the ASGI ``app`` with uvicorn in this event loop on a free loopback port (no
    lifespan: the test starts what it needs); yields the port, stops the server after."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=free_port(),
        lifespan="off",
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if task.done() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start within {timeout:g}s")
            await asyncio.sleep(0.02)
        yield config.port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout)
