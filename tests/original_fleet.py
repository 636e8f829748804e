"""Original-design gateways (tests/original_gateway.py) as real uvicorn processes on 127.0.0.1."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tests.conftest import Backend
from tests.uvicorn_fleet import UvicornGateway, listening, uvicorn_gateways

__all__ = ["original_gateways"]


@contextlib.contextmanager
def original_gateways(
    backend: Backend, names: tuple[str, ...] = ("orig-a", "orig-b"), timeout: float = 20.0
) -> Iterator[list[UvicornGateway]]:
    """Start one uvicorn process per name (``SERVER_INSTANCE_ID``), each listening before it
    is yielded; stop them all afterwards."""
    with uvicorn_gateways(
        "tests.original_gateway:app",
        backend,
        names,
        ready=listening,
        what="original gateway",
        timeout=timeout,
    ) as started:
        yield started
