"""examples/fastapi_gateway.py (the fleet core in a FastAPI app) as real uvicorn processes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import Backend
from tests.uvicorn_fleet import UvicornGateway, healthy, uvicorn_gateways

__all__ = ["fastapi_gateways"]


@contextlib.contextmanager
def fastapi_gateways(
    backend: Backend,
    log_dir: Path,
    names: tuple[str, ...] = ("fa-a", "fa-b"),
    heartbeat_interval: float = 0.5,
    timeout: float = 20.0,
    extra_env: dict[str, str] | None = None,
) -> Iterator[list[UvicornGateway]]:
    """Start ``uvicorn examples.fastapi_gateway:app`` per name, each healthy (Redis answers,
    control channel subscribed) before it is yielded; stop (SIGTERM) them after."""
    env = {
        "WSCTL_HEARTBEAT_INTERVAL": str(heartbeat_interval),
        "WSCTL_TIMEOUT": "10",
        **(extra_env or {}),
    }
    with uvicorn_gateways(
        "examples.fastapi_gateway:app",
        backend,
        names,
        ready=healthy,
        what="fastapi gateway",
        log_dir=log_dir,
        env=env,
        timeout=timeout,
    ) as started:
        yield started
