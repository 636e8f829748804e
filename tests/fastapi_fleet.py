"""examples/fastapi_gateway.py (the fleet core in a FastAPI app) as real uvicorn processes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import Backend, open_test_store
from tests.fleet import running_fleet, wait_for
from tests.uvicorn_fleet import UvicornGateway, healthy, uvicorn_gateways
from wsctl.gateway.server import Gateway
from wsctl.registry.instances import is_listening
from wsctl.registry.store import RegistryStore

__all__ = ["MixedFleet", "all_listening", "fastapi_gateways", "mixed_fleet"]


@contextlib.contextmanager
def fastapi_gateways(
    backend: Backend,
    log_dir: Path,
    names: tuple[str, ...] = ("fa-a", "fa-b"),
    heartbeat_interval: float = 0.5,
    timeout: float = 20.0,
    extra_env: dict[str, str] | None = None,
    app: str = "examples.fastapi_gateway:app",
) -> Iterator[list[UvicornGateway]]:
    """Start ``uvicorn APP`` (the FastAPI example by default) per name, each healthy (Redis
    answers, control channel subscribed) before it is yielded; stop (SIGTERM) them after."""
    env = {
        "WSCTL_HEARTBEAT_INTERVAL": str(heartbeat_interval),
        "WSCTL_TIMEOUT": "10",
        **(extra_env or {}),
    }
    with uvicorn_gateways(
        app,
        backend,
        names,
        ready=healthy,
        what="fastapi gateway",
        log_dir=log_dir,
        env=env,
        timeout=timeout,
    ) as started:
        yield started


@dataclass
class MixedFleet:
    """FastAPI instances and one ``wsctl gateway`` (``gw-c``) on one Redis, and a store."""

    fastapi: list[UvicornGateway]
    gateway: Gateway
    store: RegistryStore

    @property
    def urls(self) -> dict[str, str]:
        """Every instance's ``ws://`` URL by instance id."""
        return {
            **{gw.instance_id: gw.ws_url for gw in self.fastapi},
            self.gateway.instance_id: self.gateway.ws_url,
        }


async def all_listening(store: RegistryStore, names: list[str]) -> bool:
    """Every named instance listens on its control channel."""
    return all([await is_listening(store.client, store.keys, n) for n in names])


@contextlib.asynccontextmanager
async def mixed_fleet(
    backend: Backend, log_dir: Path, names: tuple[str, ...] = ("fa-a", "fa-b")
) -> AsyncIterator[MixedFleet]:
    """``names`` as FastAPI processes plus an in-process ``wsctl gateway`` ``gw-c``, yielded
    once every instance listens on its control channel; all stopped after."""
    with fastapi_gateways(backend, log_dir, names=names) as fastapi:
        async with (
            running_fleet(backend.env, names=("gw-c",)) as gateways,
            open_test_store(backend) as store,
        ):
            fleet = MixedFleet(fastapi, gateways["gw-c"], store)
            await wait_for(lambda: all_listening(store, list(fleet.urls)), timeout=10)
            yield fleet
