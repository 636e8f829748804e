"""Builds the asyncio Redis client: the one place that turns settings into a client and knows
single node from cluster.

Connection parameters are always passed as keyword arguments (never an interpolated URL, the
seed's bug with passwords containing ``@ : / & #``). :func:`target_from_settings` reads every
connection setting; :func:`make_client` turns a target into redis-py keyword arguments.
Errors leaving :func:`connect` name the target with the password redacted and map to
:class:`RedisUnavailable` (exit code 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, unquote

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError, MaxConnectionsError, TimeoutError

from wsctl.config import DEFAULT_SOCKET_TIMEOUT, Settings, parse_bool
from wsctl.errors import ConfigError, RedisUnavailable, TlsError
from wsctl.redis.errors import plain_behind_tls, translate_errors
from wsctl.redis.internals import start_on_a_live_node
from wsctl.redis.target import AsyncClient, Target, TlsOptions, redact_url, split_url
from wsctl.tasks import settle

__all__ = [
    "MAX_CONNECTIONS",
    "RETRIES",
    "PoolBusy",
    "check_mode",
    "close_client",
    "connect",
    "insecure_warning",
    "is_cluster",
    "is_pool_busy",
    "make_client",
    "on_close",
    "target_from_settings",
    "tls_kwargs",
]

log = logging.getLogger("wsctl.redis")

# redis-py's URL query form (``rediss://h:6380/0?ssl_ca_certs=/ca.pem``) -> our settings.
_URL_TLS_FILES = {
    "ssl_ca_certs": "tls_ca_cert",
    "ssl_certfile": "tls_cert",
    "ssl_keyfile": "tls_key",
}
_TLS_ON_HINT = "use a rediss:// URL, --tls or WSCTL_REDIS_TLS=true"


def _tls_options(
    settings: Settings, scheme: str, query: Mapping[str, list[str]]
) -> TlsOptions | None:
    """The TLS options for the target, or None for plain TCP.

    TLS is on with a ``rediss://`` URL or ``redis_tls`` (for host/port and cluster settings,
    or to upgrade a ``redis://`` URL). The ``tls_*`` settings win over the URL's ``ssl_*``
    query parameters. TLS options given while TLS is off are an error, not silently dropped.
    """
    url_tls = scheme == "rediss"
    if url_tls and not settings.redis_tls and settings.source("redis_tls") != "default":
        raise ConfigError(
            f"redis_url is rediss:// but redis_tls is false (from "
            f"{settings.source('redis_tls')}): drop one of them"
        )
    files: dict[str, str] = {}
    origin: dict[str, str] = {}
    for key, name in _URL_TLS_FILES.items():
        if query.get(key):
            files[name] = os.path.expanduser(query[key][-1])
            origin[name] = f"redis_url ?{key}="
    for name in ("tls_ca_cert", "tls_cert", "tls_key"):
        value = getattr(settings, name)
        if value:
            files[name] = value
            origin[name] = settings.source(name)
    insecure = settings.tls_insecure
    if settings.tls_insecure:
        origin["tls_insecure"] = settings.source("tls_insecure")
    check_hostname = True
    try:
        if query.get("ssl_cert_reqs"):
            reqs = query["ssl_cert_reqs"][-1].strip().lower().removeprefix("cert_")
            if reqs not in ("none", "optional", "required"):
                raise ValueError("ssl_cert_reqs must be none, optional or required")
            if reqs == "none":
                insecure = True
                origin.setdefault("tls_insecure", "redis_url ?ssl_cert_reqs=none")
        if query.get("ssl_check_hostname"):
            check_hostname = parse_bool(query["ssl_check_hostname"][-1])
    except ValueError as exc:
        raise ConfigError(f"redis_url: {exc}") from None
    if not (settings.redis_tls or url_tls):
        if origin:
            name, where = next(iter(origin.items()))
            raise ConfigError(f"{name} is set (from {where}) but TLS is off: {_TLS_ON_HINT}")
        return None
    if "tls_key" in files and "tls_cert" not in files:
        raise ConfigError(
            f"tls_key is set (from {origin['tls_key']}) without tls_cert: give the client "
            "certificate with --tls-cert / WSCTL_TLS_CERT"
        )
    return TlsOptions(
        ca_cert=files.get("tls_ca_cert"),
        cert=files.get("tls_cert"),
        key=files.get("tls_key"),
        insecure=insecure,
        check_hostname=check_hostname,
    )


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
        tls = _tls_options(settings, parts.scheme, parse_qs(parts.query))
        url_port = parts.port
        username = username or (unquote(parts.username) if parts.username else None)
        password = password or (unquote(parts.password) if parts.password else None)
        if parts.scheme == "unix":
            query = parse_qs(parts.query)
            db_value = str(query.get("db", [settings.redis_db])[0])
            if not db_value.isdigit():
                raise ConfigError("redis_url: the database (?db=) is not a number")
            db = int(db_value)
            if tls is not None:
                raise ConfigError(
                    f"TLS is on (redis_tls from {settings.source('redis_tls')}) but redis_url "
                    "is a unix socket: drop one of them"
                )
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
            return Target("cluster", username=username, password=password, nodes=nodes, tls=tls)
        return Target(
            "tcp", host=host, port=port, db=db, username=username, password=password, tls=tls
        )
    tls = _tls_options(settings, "", {})
    if settings.redis_cluster or (settings.redis_nodes and not settings.redis_host):
        nodes = settings.redis_nodes or ((settings.redis_host or "127.0.0.1", settings.redis_port),)
        return Target("cluster", username=username, password=password, nodes=nodes, tls=tls)
    return Target(
        "tcp",
        host=settings.redis_host or "127.0.0.1",
        port=settings.redis_port,
        db=settings.redis_db,
        username=username,
        password=password,
        tls=tls,
    )


def _no_passphrase() -> bytes:
    raise ConfigError(
        "tls_key is encrypted with a passphrase, which wsctl does not take: give an "
        "unencrypted key file (readable only by its owner)"
    )


def _check_tls_files(tls: TlsOptions) -> None:
    """Load the CA bundle and client certificate once, so a wrong path or a key that does not
    match its certificate is one clear error before any connection (and an encrypted key never
    makes OpenSSL prompt on the terminal)."""
    for name, path in (("tls_ca_cert", tls.ca_cert), ("tls_cert", tls.cert), ("tls_key", tls.key)):
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"{name} {path}: no such file")
    context = ssl.create_default_context()
    if tls.ca_cert and not tls.insecure:
        try:
            context.load_verify_locations(cafile=tls.ca_cert)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"tls_ca_cert {tls.ca_cert}: no PEM CA certificate in it ({exc.reason or exc})"
            ) from None
        except OSError as exc:
            raise ConfigError(
                f"tls_ca_cert {tls.ca_cert}: cannot be read ({exc.strerror})"
            ) from None
    if tls.cert:
        try:
            context.load_cert_chain(tls.cert, tls.key, password=_no_passphrase)
        except ssl.SSLError as exc:
            if "KEY_VALUES_MISMATCH" in str(exc):
                problem = f"tls_key {tls.key} does not belong to tls_cert {tls.cert}"
            elif tls.key is None:
                problem = (
                    f"tls_cert {tls.cert}: no certificate and private key in it (give the key "
                    "with --tls-key / WSCTL_TLS_KEY)"
                )
            else:
                problem = f"tls_cert {tls.cert} / tls_key {tls.key}: not a PEM certificate and key"
            raise ConfigError(f"{problem} ({exc.reason or exc})") from None
        except OSError as exc:
            raise ConfigError(f"tls_cert {tls.cert}: cannot be read ({exc.strerror})") from None


def tls_kwargs(tls: TlsOptions | None) -> dict[str, Any]:
    """redis-py keyword arguments for ``tls`` (the same for a single node and for every node
    of a cluster, including nodes learnt from the slot map); empty for plain TCP."""
    if tls is None:
        return {}
    _check_tls_files(tls)
    return {
        "ssl": True,
        "ssl_ca_certs": tls.ca_cert,
        "ssl_certfile": tls.cert,
        "ssl_keyfile": tls.key,
        "ssl_cert_reqs": "none" if tls.insecure else "required",
        "ssl_check_hostname": tls.check_hostname and not tls.insecure,
    }


def insecure_warning(target: Target) -> str | None:
    """The warning for a target whose certificate is not verified (None when it is)."""
    if target.tls is None or not target.tls.insecure:
        return None
    return (
        f"TLS certificate verification is off for {target.describe()} (tls_insecure): the "
        "server is not authenticated; anyone on the network path can read and change "
        "registry traffic"
    )


# A failed read or write is retried this often (on a new connection) before the command fails:
# against a stalled server a command fails within about (RETRIES + 1) x the socket timeout.
RETRIES = 2


def _retry(retries: int) -> Retry:
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries)


# Connections a client holds at most (per node on a cluster), redis-py's default.
MAX_CONNECTIONS = 100


class PoolBusy(ConnectionError):
    """Every pooled connection stayed in use for as long as a command may wait for one: the
    client is busy, Redis is not (known to be) down."""


class _WaitingPool(BlockingConnectionPool):
    """redis-py's blocking pool (a command waits for a free connection instead of failing
    with "Too many connections"), whose wait, when it runs out, says so with
    :class:`PoolBusy`."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except ConnectionError as exc:
            if isinstance(exc.__cause__, asyncio.TimeoutError):
                raise PoolBusy(
                    f"no free Redis connection within {self.timeout:g}s "
                    f"({self.max_connections} in use)"
                ) from exc
            raise


def is_pool_busy(exc: BaseException) -> bool:
    """True for a client-side shortage of connections (a busy client, not a Redis failure):
    the single-node pool's wait ran out, or a cluster node's pool was full, or what failed
    because of that (a lost publish lane's messages the pool could not take)."""
    busy = PoolBusy | MaxConnectionsError
    return isinstance(exc, busy) or isinstance(exc.__cause__, busy)


def make_client(
    target: Target,
    *,
    retries: int = RETRIES,
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
) -> AsyncClient:
    """A decode_responses async client for ``target`` (no I/O until first use).

    Every read, write and connect is bounded by ``socket_timeout`` (the bulk fast path in
    :mod:`wsctl.redis.internals` honours it too). The protocol is pinned to RESP2: no push
    frames can arrive between replies, which the bulk reader relies on, and every server
    speaks it. ``surrogateescape`` keeps keys that are not UTF-8 readable and writable
    unchanged.

    At most ``max_connections`` connections (per node on a cluster). On a single node a
    command that finds them all in use waits for one (back-pressure, never "Too many
    connections"), for at most what one command may take, ``socket_timeout`` times
    ``retries + 1``, then fails with :class:`PoolBusy`. redis-py's cluster client cannot
    wait (its per-node pool is taken synchronously): wsctl's own callers bound how many
    commands they run at once below ``max_connections``.
    """
    common: dict[str, Any] = {
        "username": target.username,
        "password": target.password,
        "decode_responses": True,
        "encoding_errors": "surrogateescape",
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "retry": _retry(retries),
        "retry_on_error": [ConnectionError, TimeoutError],
        **tls_kwargs(target.tls),
        "protocol": 2,
    }
    warning = insecure_warning(target)
    if warning:
        log.warning("%s", warning)
    if target.kind == "cluster":
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in target.nodes],
            require_full_coverage=False,
            max_connections=max_connections,
            **common,
        )
        start_on_a_live_node(cluster)
        return cluster
    if target.kind == "unix":
        plain = Redis(unix_socket_path=target.path, db=target.db, **common)
    else:
        plain = Redis(host=target.host, port=target.port, db=target.db, **common)
    # the same connections (class and keyword arguments, TLS and retries included) from a
    # pool that waits
    pool = _WaitingPool(
        connection_class=plain.connection_pool.connection_class,
        max_connections=max_connections,
        timeout=socket_timeout * (retries + 1),
        **plain.connection_pool.connection_kwargs,
    )
    return Redis.from_pool(pool)


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


# How long a TLS check may take before wsctl asks, in parallel, whether the server is a plain
# Redis (whose handshake would otherwise only fail after every retry's socket timeout).
_TLS_PROBE_AFTER_S = 1.0


async def _checked(client: AsyncClient, target: Target, socket_timeout: float) -> None:
    """:func:`check_mode`, and for a TLS target that has not answered within a second, a plain
    ``PING`` probe in parallel: a plain Redis behind a ``rediss://`` URL never finishes the
    handshake (it waits for a line end the TLS hello never sends), so without the probe the
    mistake is reported only after (retries + 1) x the socket timeout."""
    if target.tls is None or target.kind == "unix":
        await check_mode(client, target)
        return
    check = asyncio.create_task(check_mode(client, target))
    try:
        done, _ = await asyncio.wait({check}, timeout=min(_TLS_PROBE_AFTER_S, socket_timeout))
        if not done:
            probe_timeout = min(1.0, socket_timeout)
            verdict = await asyncio.to_thread(plain_behind_tls, target, probe_timeout)
            if verdict is not None and not check.done():
                raise TlsError(verdict)
        await check
    finally:
        await settle(check)


# Per client, what has to stop before it closes (a process's reply inbox: its subscription
# would otherwise reconnect through the closed client's pool).
_closers: weakref.WeakKeyDictionary[Any, list[Callable[[], Awaitable[None]]]] = (
    weakref.WeakKeyDictionary()
)


def on_close(client: AsyncClient, closer: Callable[[], Awaitable[None]]) -> None:
    """Have :func:`close_client` await ``closer`` before it closes ``client`` (once)."""
    _closers.setdefault(client, []).append(closer)


async def close_client(client: AsyncClient) -> None:
    """Run what :func:`on_close` registered for ``client``, then close it. Nothing raises:
    a client whose server failed fails its close too, which is not news."""
    for closer in _closers.pop(client, []):
        with contextlib.suppress(Exception):  # on the way out: each closer is best effort
            await closer()
    with contextlib.suppress(Exception):  # the server may be gone already
        await client.aclose()


@contextlib.asynccontextmanager
async def connect(
    target: Target,
    *,
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
    retries: int = RETRIES,
) -> AsyncIterator[AsyncClient]:
    """Open a checked client for ``target``; closes it on exit; errors are translated.

    A stalled server makes the block fail with :class:`RedisUnavailable` naming the target
    within about ``socket_timeout * (retries + 1)``.
    """
    client = make_client(target, retries=retries, socket_timeout=socket_timeout)
    try:
        await _checked(client, target, socket_timeout)
        with translate_errors(target):
            yield client
    finally:
        # closing a client whose server failed raises that failure again: the error raised
        # from the block (already translated) is the one to report
        await close_client(client)
