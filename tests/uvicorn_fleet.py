"""ASGI gateways as real uvicorn servers on 127.0.0.1 for tests: processes (start, wait until
ready, logs, stop) for the FastAPI example and the original design's app, and one in this
event loop for tests that reach into the fleet core."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import Backend
from wsctl.sandbox.processes import free_port, stop_process

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class UvicornGateway:
    """One ``uvicorn`` process serving a gateway app, and the file its output goes to."""

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
        """GET ``path``: status and body (an HTTP error status is an answer, not an error)."""
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


def healthy(gw: UvicornGateway) -> bool:
    """/healthz answers 200 (the fleet core is started: Redis answers, control channel on)."""
    return gw.get("/healthz")[0] == 200


def listening(gw: UvicornGateway) -> bool:
    """The port accepts TCP connections (for apps without a health endpoint)."""
    with socket.create_connection(("127.0.0.1", gw.port), 0.2):
        return True


def redis_env(backend: Backend) -> dict[str, str]:
    """The original design's environment variables for the backend's Redis."""
    if backend.single is not None:
        return {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(backend.single.port)}
    assert backend.cluster is not None
    return {"REDIS_USE_CLUSTER": "true", "REDIS_NODES": backend.cluster.startup}


def _wait_ready(
    gw: UvicornGateway, ready: Callable[[UvicornGateway], bool], what: str, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gw.proc.poll() is not None:
            raise RuntimeError(
                f"{what} {gw.instance_id} exited with {gw.proc.returncode}: "
                + gw.log.read_text(errors="replace")[-2000:]
            )
        with contextlib.suppress(OSError):
            if ready(gw):
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} {gw.instance_id} not ready within {timeout:g}s")


@contextlib.contextmanager
def uvicorn_gateways(
    app: str,
    backend: Backend,
    names: tuple[str, ...],
    *,
    ready: Callable[[UvicornGateway], bool],
    what: str,
    log_dir: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 20.0,
) -> Iterator[list[UvicornGateway]]:
    """Start ``uvicorn APP`` once per name (``SERVER_INSTANCE_ID``, a free ``PORT``, the
    backend's Redis in the original design's variables, ``env`` over that); yield them once
    each is ``ready``; stop (SIGTERM, then SIGKILL) every one started, whatever happens.
    Output goes to ``{log_dir}/{name}.log`` (a temporary directory when none is given)."""
    started: list[UvicornGateway] = []
    with contextlib.ExitStack() as stack:
        if log_dir is None:
            log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="uvicorn-")))
        try:
            for name in names:
                port = free_port()
                process_env = {
                    **{
                        k: v
                        for k, v in os.environ.items()
                        if not k.startswith(("REDIS_", "WSCTL_"))
                    },
                    **redis_env(backend),
                    "SERVER_INSTANCE_ID": name,
                    "PORT": str(port),
                    "PYTHONPATH": str(ROOT),
                    **(env or {}),
                }
                log = log_dir / f"{name}.log"
                with log.open("wb") as out:
                    proc = subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "uvicorn",
                            app,
                            "--host",
                            "127.0.0.1",
                            "--port",
                            str(port),
                            "--log-level",
                            "warning",
                        ],
                        cwd=ROOT,
                        env=process_env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                started.append(UvicornGateway(name, port, proc, log))
            for gw in started:
                _wait_ready(gw, ready, what, timeout)
            yield started
        finally:
            for gw in started:
                stop_process(gw.proc)


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
