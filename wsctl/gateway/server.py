"""The reference gateway instance (``wsctl gateway``): a thin ``websockets`` shell over the
fleet core (:mod:`wsctl.gateway.core`), which holds all the fleet logic.

This module only moves bytes: it accepts ``/ws/{robot_id}`` (checking the id and, with a
secret, the robot's token), hands each socket to the core, reads and drops the robot's frames
(which answers pings and sees the close), and serves ``/healthz`` and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import serve

from wsctl.config import DEFAULT_SOCKET_TIMEOUT
from wsctl.eventlog.model import EventLimits
from wsctl.gateway.admission import (
    HEALTH_PATH,
    METRICS_PATH,
    advertised_url,
    health_answer,
    refusal,
    robot_from_path,
)
from wsctl.gateway.batching import SharedText
from wsctl.gateway.core import CoreConfig, FleetCore
from wsctl.gateway.identity import instance_id_for
from wsctl.gateway.local import LocalConn, LocalConnections, Metrics, close_reason
from wsctl.gateway.outbound import (
    CLOSE_WAIT,
    OUTBOUND_BYTES,
    ROOM_POLL,
    SLOW_CONSUMER_CODE,
    WRITE_STALL,
    SlowConsumer,
    slow_reason,
)
from wsctl.gateway.wsframes import write_texts
from wsctl.protocol.envelopes import CloseCode
from wsctl.redis.target import AsyncClient, Target
from wsctl.registry.keys import Keyspace
from wsctl.registry.store import RegistryStore
from wsctl.tasks import wait_within

__all__ = ["CLOSE_SUPERSEDED", "Gateway", "GatewayConfig", "WebsocketsSocket"]

log = logging.getLogger("wsctl.gateway")

CLOSE_SUPERSEDED = int(CloseCode.SUPERSEDED)
ABNORMAL_CLOSURE = 1006  # RFC 6455: the connection ended without a close frame from the robot


@dataclass
class GatewayConfig:
    """Settings of one ``wsctl gateway`` instance: where it listens, its id, robot auth,
    registry heartbeat and timeout, WebSocket limits and keepalive, and its event stream."""

    host: str = "127.0.0.1"
    port: int = 8765
    instance_id: str | None = None
    auth_secret: str | None = None
    heartbeat_interval: float = 30.0
    timeout: float = 90.0
    max_message_bytes: int = 1 << 20
    keyspace: Keyspace = field(default_factory=Keyspace)
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    advertise_url: str | None = None  # ws_url published in the liveness record
    events: bool = True  # write the instance's event stream
    event_limits: EventLimits = field(default_factory=EventLimits)
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT  # bounds every Redis call (--request-timeout)


class WebsocketsSocket:
    """A ``websockets`` server connection as the core's :class:`RobotSocket` (with ping).
    Writes never wait: frames go into the connection's write buffer at once, in order; a
    robot with more than :data:`~wsctl.gateway.outbound.OUTBOUND_BYTES` unread is closed as
    a slow consumer (:mod:`wsctl.gateway.outbound`), and keepalive pings close one that stops
    answering."""

    __slots__ = ("_closing", "_stalled_since", "conn", "max_bytes", "ws")

    def __init__(self, ws: Any, max_bytes: int = OUTBOUND_BYTES) -> None:
        self.ws = ws
        self.max_bytes = max_bytes
        self.conn: LocalConn | None = None
        self._closing: asyncio.Task[None] | None = None
        # loop time since which senders waiting for room saw the write buffer not shrink
        self._stalled_since: float | None = None

    def attach(self, conn: LocalConn) -> None:
        """Its session: a slow-consumer close is recorded on it (the event log's reason)."""
        self.conn = conn

    async def send_text(self, text: str) -> None:
        """Write one text frame now, behind what waits for the robot; while more than half
        of ``max_bytes`` waits in the write buffer and the robot reads, first wait for it to
        drain below that (a sender faster than its robot is held back, not taken for a slow
        consumer; no progress for WRITE_STALL seconds: it is one)."""
        payloads = [SharedText(text, text.encode("utf-8"))]
        transport = getattr(self.ws, "transport", None)
        if transport is not None and transport.get_write_buffer_size() * 2 > self.max_bytes:
            await self._room(transport)
        self.send_texts_nowait(payloads)

    async def _room(self, transport: Any) -> None:
        loop = asyncio.get_running_loop()
        size = transport.get_write_buffer_size()
        while size * 2 > self.max_bytes and self._closing is None:
            # bounded: every step either sees the buffer shrink or moves towards the stall,
            # which counts across senders (each may give up at its own timeout before it)
            await asyncio.sleep(ROOM_POLL)
            now, before = loop.time(), size
            size = transport.get_write_buffer_size()
            if size < before or self._stalled_since is None:
                self._stalled_since = now
            elif now - self._stalled_since >= WRITE_STALL:
                reason = slow_reason(size)
                self._slow(reason)
                raise SlowConsumer(reason)
        self._stalled_since = None

    def crowded(self) -> bool:
        """Would :meth:`send_text` wait for room now? (Else a sender may write at once.)"""
        transport = getattr(self.ws, "transport", None)
        return transport is not None and transport.get_write_buffer_size() * 2 > self.max_bytes

    def send_texts_nowait(self, payloads: list[SharedText]) -> None:
        """Write text frames now, in one write, each payload framed once for every socket it
        goes to (:func:`wsctl.gateway.wsframes.write_texts`). Raises
        :class:`~wsctl.gateway.outbound.SlowConsumer` (nothing written, the robot closed) when
        the write buffer would hold more than ``max_bytes``."""
        if self._closing is not None:
            raise SlowConsumer("slow consumer: closed")
        transport = getattr(self.ws, "transport", None)
        if transport is not None:
            buffered = transport.get_write_buffer_size()
            size = buffered + sum(len(p.data) for p in payloads)
            if size > self.max_bytes:
                reason = slow_reason(size)
                self._slow(reason)
                raise SlowConsumer(reason)
        write_texts(self.ws, payloads)

    def _slow(self, reason: str) -> None:
        """Close the robot as a slow consumer (the handshake is bounded by close_timeout)."""
        log.info("closing a slow consumer: %s", reason)
        if self.conn is not None:
            self.conn.sent_close = (SLOW_CONSUMER_CODE, close_reason(reason))
        self._closing = asyncio.get_running_loop().create_task(
            self._close_slow(close_reason(reason))
        )

    async def _close_slow(self, reason: str) -> None:
        """The close frame waits behind what the robot does not read: after CLOSE_WAIT
        seconds the connection is aborted (its handler then ends the session)."""
        try:
            await wait_within(self.close(SLOW_CONSUMER_CODE, reason), CLOSE_WAIT)
        except Exception:  # it does not read: no close handshake to wait for
            transport = getattr(self.ws, "transport", None)
            if transport is not None:
                transport.abort()

    async def close(self, code: int, reason: str) -> None:
        """Close the connection with ``code`` and ``reason`` (the close handshake)."""
        await self.ws.close(code, reason)

    async def ping(self) -> None:
        """Send a WebSocket ping and wait for its pong (the ``ping`` op's round trip)."""
        pong = await self.ws.ping()
        await pong


class Gateway:
    """One gateway instance. ``await start()``, then ``await stop()`` (or ``run(stop_event)``)."""

    def __init__(self, config: GatewayConfig, target: Target) -> None:
        self.config = config
        self.target = target
        self.port = config.port
        self._server: Any = None
        self._stopping = False
        self.core = FleetCore(
            CoreConfig(
                instance_id=config.instance_id or "",
                heartbeat_interval=config.heartbeat_interval,
                timeout=config.timeout,
                max_message_bytes=config.max_message_bytes,
                keyspace=config.keyspace,
                host=config.host,
                port=config.port,
                events=config.events,
                event_limits=config.event_limits,
                socket_timeout=config.socket_timeout,
            ),
            target,
        )

    # the core's state, for callers and tests
    @property
    def instance_id(self) -> str:
        """This instance's id: the configured one, else
        :func:`~wsctl.gateway.identity.instance_id_for` of the port it got at start."""
        return self.core.instance_id

    @property
    def local(self) -> LocalConnections:
        """The robots connected to this instance."""
        return self.core.local

    @property
    def metrics(self) -> Metrics:
        """This instance's counters, as ``/metrics`` shows them."""
        return self.core.metrics

    @property
    def redis_ok(self) -> bool:
        """False while Redis does not answer (``/healthz`` then reports 503)."""
        return self.core.redis_ok

    @property
    def subscribed(self) -> bool:
        """True while the instance listens on its control channel."""
        return self.core.subscribed

    @property
    def client(self) -> AsyncClient:
        """The Redis client the instance works on."""
        return self.core.client

    @property
    def store(self) -> RegistryStore:
        """The registry store the instance writes its robots' entries through."""
        return self.core.store

    @property
    def ws_url(self) -> str:
        """The URL published in the liveness record (see :func:`advertised_url`)."""
        return advertised_url(self.config.host, self.port, self.config.advertise_url)

    async def start(self) -> None:
        """Listen for robots, then start the fleet core (registry, control channel,
        heartbeats). With port 0 the OS picks the port, and the instance id defaults from it."""
        self._server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            compression=None,
            max_size=self.config.max_message_bytes,
            ping_interval=self.config.ping_interval,
            ping_timeout=self.config.ping_timeout,
            close_timeout=2,
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        if not self.core.instance_id:
            self.core.instance_id = instance_id_for(self.port)
        self.core.config.port = self.port
        self.core.config.ws_url = self.ws_url
        await self.core.start()
        log.info("instance %s listening on %s", self.instance_id, self.ws_url)

    async def wait_subscribed(self, timeout: float = 10.0) -> None:
        """Wait until the control-channel subscription is live, so requests sent next
        are heard; raises TimeoutError after ``timeout`` seconds."""
        await self.core.wait_subscribed(timeout)

    async def stop(self) -> None:
        """Stop accepting, close sockets with 1001, remove own entries and liveness record."""
        if self._stopping:
            return
        self._stopping = True
        self.core.stopping = True
        if self._server is not None:
            self._server.close()  # closes sockets with 1001; handlers remove their entries
            # shutting down: a server that does not close in time is left to the process exit
            with contextlib.suppress(Exception):
                await wait_within(self._server.wait_closed(), timeout=15)
        await self.core.stop()
        log.info("instance %s stopped", self.instance_id)

    async def run(self, stop: asyncio.Event) -> None:
        """Start, serve until ``stop`` is set, then stop (also when cancelled or failing)."""
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    # ------------------------------------------------------------------ HTTP side
    async def _process_request(self, connection: Any, request: Any) -> Any:
        path = urlsplit(request.path).path
        if path == HEALTH_PATH:
            code, text = health_answer(*await self.core.health())
            return connection.respond(HTTPStatus(code), text)
        if path == METRICS_PATH:
            return connection.respond(HTTPStatus.OK, await self.core.metrics_answer())
        robot_id = robot_from_path(request.path)
        if robot_id is None:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found: use /ws/{robot_id}\n")
        refused = refusal(
            self.core,
            robot_id,
            request.path,
            request.headers.get("Authorization"),
            self.config.auth_secret,
        )
        if refused is None:
            return None
        response = connection.respond(HTTPStatus(refused.status), refused.body)
        for name, value in refused.headers:
            response.headers[name] = value
        return response

    # ------------------------------------------------------------------ robots
    async def _handle(self, ws: Any) -> None:
        robot_id = robot_from_path(ws.request.path) or ""
        conn = await self.core.open_session(robot_id, WebsocketsSocket(ws))
        try:
            # frames from robots are read (which also answers pings and sees the close) and
            # dropped; liveness is the open socket, kept honest by WebSocket keepalive pings
            async for _ in ws:
                pass
        except Exception:  # ConnectionClosedError and friends: the robot went away
            pass
        finally:
            code, reason = ws.close_code, ws.close_reason
            if conn.sent_close is not None and code == ABNORMAL_CLOSURE:
                code, reason = conn.sent_close  # closed by us, never answered (a slow consumer)
            await self.core.close_session(conn, code, reason)
