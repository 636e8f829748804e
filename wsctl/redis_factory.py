"""Builds the asyncio Redis client: the one place that turns settings into a client and knows
single node from cluster.

Connection parameters are always passed as keyword arguments (never an interpolated URL, the
seed's bug with passwords containing ``@ : / & #``). :func:`target_from_settings` reads every
connection setting; :func:`make_client` turns a target into redis-py keyword arguments.
Errors leaving :func:`connect` name the target with the password redacted and map to
:class:`RedisUnavailable` (exit code 3).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, unquote

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError, TimeoutError

from wsctl.config import Settings
from wsctl.errors import ConfigError, RedisUnavailable
from wsctl.redis_errors import translate_errors
from wsctl.redis_internals import start_on_a_live_node
from wsctl.redis_target import AsyncClient, Target, redact_url, split_url

__all__ = [
    "check_mode",
    "connect",
    "is_cluster",
    "make_client",
    "target_from_settings",
]


def target_from_settings(settings: Settings, embedded_path: str | None = None) -> Target:
    """Resolve the Redis target; ``embedded_path`` is the unix socket of the embedded server."""
    if settings.embedded:
        if embedded_path is None:
            raise ConfigError("no Redis configured and the embedded Redis is not running")
        return Target(kind="unix", path=embedded_path)
    username = settings.redis_username
    password = settings.redis_password
    if settings.redis_url:
        try:
            parts = split_url(settings.redis_url)
        except ValueError as exc:
            raise ConfigError(f"redis_url is malformed: {exc}") from None
        url_port = parts.port
        username = username or (unquote(parts.username) if parts.username else None)
        password = password or (unquote(parts.password) if parts.password else None)
        if parts.scheme == "unix":
            query = parse_qs(parts.query)
            db_value = str(query.get("db", [settings.redis_db])[0])
            if not db_value.isdigit():
                raise ConfigError("redis_url: the database (?db=) is not a number")
            db = int(db_value)
            return Target("unix", path=parts.path, db=db, username=username, password=password)
        host = parts.hostname or "127.0.0.1"
        port = url_port or 6379
        db_text = parts.path.lstrip("/")
        if db_text and not db_text.isdigit():
            raise ConfigError(
                f"redis_url {redact_url(settings.redis_url)}: the database (the path) is not a "
                "number"
            )
        db = int(db_text) if db_text else settings.redis_db
        if settings.redis_cluster:
            nodes = settings.redis_nodes or ((host, port),)
            return Target("cluster", username=username, password=password, nodes=nodes)
        return Target(
            "tcp",
            host=host,
            port=port,
            db=db,
            username=username,
            password=password,
            ssl=parts.scheme == "rediss",
        )
    if settings.redis_cluster or (settings.redis_nodes and not settings.redis_host):
        nodes = settings.redis_nodes or ((settings.redis_host or "127.0.0.1", settings.redis_port),)
        return Target("cluster", username=username, password=password, nodes=nodes)
    return Target(
        "tcp",
        host=settings.redis_host or "127.0.0.1",
        port=settings.redis_port,
        db=settings.redis_db,
        username=username,
        password=password,
    )


def _retry(retries: int) -> Retry:
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries)


def make_client(
    target: Target, *, retries: int = 2, socket_timeout: float | None = 10.0
) -> AsyncClient:
    """A decode_responses async client for ``target`` (no I/O until first use).

    ``surrogateescape`` keeps keys that are not UTF-8 readable and writable unchanged.
    """
    common: dict[str, Any] = {
        "username": target.username,
        "password": target.password,
        "decode_responses": True,
        "encoding_errors": "surrogateescape",
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": 5.0,
        "retry": _retry(retries),
        "retry_on_error": [ConnectionError, TimeoutError],
    }
    if target.kind == "cluster":
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in target.nodes],
            require_full_coverage=False,
            **common,
        )
        start_on_a_live_node(cluster)
        return cluster
    if target.kind == "unix":
        return Redis(unix_socket_path=target.path, db=target.db, **common)
    return Redis(host=target.host, port=target.port, db=target.db, ssl=target.ssl, **common)


def is_cluster(client: AsyncClient) -> bool:
    """True for a Redis Cluster client (the caller then works per node)."""
    return isinstance(client, RedisCluster)


async def check_mode(client: AsyncClient, target: Target) -> None:
    """Fail early, with the right advice, when cluster mode does not match the server."""
    with translate_errors(target):
        if isinstance(client, RedisCluster):
            await client.initialize()
            return
        await client.ping()
        info = await client.info("cluster")
        if int(info.get("cluster_enabled", 0)):
            raise RedisUnavailable(
                f"{target.describe()} is a Redis Cluster node: set REDIS_USE_CLUSTER=true "
                "(or --cluster) and REDIS_NODES"
            )


@contextlib.asynccontextmanager
async def connect(target: Target, *, retries: int = 2) -> AsyncIterator[AsyncClient]:
    """Open a checked client for ``target``; closes it on exit; errors are translated."""
    client = make_client(target, retries=retries, socket_timeout=None)
    try:
        await check_mode(client, target)
        with translate_errors(target):
            yield client
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()
