"""The reference gateway instance (``wsctl gateway``), on ``websockets`` asyncio.

What it fixes from the seed:
* every Redis call is awaited on the asyncio client (the seed called sync methods on an async
  client, and on an attribute that did not exist);
* a session is fenced by ``conn_id``: disconnect removes the entry only if it still names this
  session (Lua compare-and-delete), so a robot that reconnected elsewhere keeps its entry;
* a robot that connects again wins: the older socket is closed with 4001 (locally, by a ``kick``
  on the old owner's control channel, and as a last resort by the heartbeat script noticing);
* ``last_heartbeat`` of all local sessions is refreshed in one pipelined batch per interval, and
  a session whose entry vanished (Redis restart, flush) is re-registered by the same script;
* Redis outages keep sockets open; the gateway retries with backoff and re-registers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from wsctl import __version__
from wsctl.gateway.identity import instance_id_for, token_ok
from wsctl.gateway.local import LocalConn, LocalConnections, Metrics
from wsctl.instances import InstanceRecord, delete_record, write_record
from wsctl.protocol import (
    MAX_HOPS,
    Envelope,
    Op,
    ProtocolError,
    Status,
    decode_envelope,
    encode,
    reply_to,
)
from wsctl.redis_factory import is_cluster, make_client
from wsctl.redis_pubsub import subscriber_count, subscription
from wsctl.redis_target import AsyncClient, Target
from wsctl.redis_topology import refresh_topology
from wsctl.registry.keys import Keyspace, validate_id
from wsctl.registry.model import F_CONN_ID, F_INSTANCE_ID, Registration, format_ts, utcnow
from wsctl.registry.store import RegistryStore

log = logging.getLogger("wsctl.gateway")

CLOSE_SUPERSEDED = 4001
WS_PATH = "/ws/"
TOUCH_CHUNK = 1000
LOCK_STRIPES = 256
# Control envelopes handled at once; the subscriber stops reading beyond this (backpressure),
# which keeps Redis connections (pool of 100 per node) well within bounds.
CONTROL_CONCURRENCY = 48
# Registrations and disconnect clean-ups at once (connects/disconnects come in storms); with the
# control slots this stays below redis-py's 100 connections per node.
SESSION_CONCURRENCY = 40


@dataclass
class GatewayConfig:
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


def robot_from_path(path: str) -> str | None:
    """The robot id of ``/ws/{robot_id}`` (percent-decoded), else None."""
    parts = urlsplit(path)
    if not parts.path.startswith(WS_PATH):
        return None
    return unquote(parts.path[len(WS_PATH) :])


def presented_token(path: str, authorization: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    values = parse_qs(urlsplit(path).query).get("token")
    return values[0] if values else None


class Gateway:
    """One gateway instance. ``await start()``, then ``await stop()`` (or ``run(stop_event)``)."""

    def __init__(self, config: GatewayConfig, target: Target) -> None:
        self.config = config
        self.target = target
        self.keys = config.keyspace
        self.local = LocalConnections()
        self.metrics = Metrics()
        self.redis_ok = False
        self.subscribed = False
        self.instance_id = config.instance_id or ""
        self.started_at = utcnow()
        self._client: AsyncClient | None = None
        self._store: RegistryStore | None = None
        self._server: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self.port = config.port
        # Striped per-robot locks: a robot's local session order and its registry writes from
        # this instance happen in the same order (a fast reconnect cannot be overtaken by the
        # older session's registration).
        self._locks = [asyncio.Lock() for _ in range(LOCK_STRIPES)]
        self._listening_cache: dict[str, tuple[float, bool]] = {}
        self._control_slots = asyncio.Semaphore(CONTROL_CONCURRENCY)
        self._session_slots = asyncio.Semaphore(SESSION_CONCURRENCY)
        self._failing: set[str] = set()

    # ------------------------------------------------------------------ lifecycle
    @property
    def client(self) -> AsyncClient:
        assert self._client is not None, "gateway not started"
        return self._client

    @property
    def store(self) -> RegistryStore:
        assert self._store is not None, "gateway not started"
        return self._store

    @property
    def ws_url(self) -> str:
        """Where robots and ``simulate`` reach this instance (a wildcard bind advertises the
        host name instead of 0.0.0.0)."""
        if self.config.advertise_url:
            return self.config.advertise_url.rstrip("/")
        host = self.config.host
        if host in ("0.0.0.0", "::", ""):
            import socket

            host = socket.gethostname()
        if ":" in host:
            host = f"[{host}]"
        return f"ws://{host}:{self.port}"

    async def start(self) -> None:
        from websockets.asyncio.server import serve

        self._client = make_client(self.target, retries=1, socket_timeout=5.0)
        self._store = RegistryStore(self._client, self.keys)
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
        if not self.instance_id:
            self.instance_id = instance_id_for(self.port)
        try:
            await self._heartbeat_once()
            self.redis_ok = True
        except Exception as exc:  # keep serving; the heartbeat loop retries
            self._redis_failed("start", exc)
        self._tasks = [
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self._control_loop(), name="control"),
        ]
        log.info("instance %s listening on %s", self.instance_id, self.ws_url)

    async def wait_subscribed(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.subscribed:
            if time.monotonic() > deadline:
                raise TimeoutError("control channel not subscribed in time")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop accepting, close sockets with 1001, remove own entries and liveness record."""
        if self._stopping:
            return
        self._stopping = True
        if self._server is not None:
            self._server.close()  # closes sockets with 1001; handlers remove their entries
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=15)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for task in list(self._background):
            task.cancel()
        if self._client is not None:
            with contextlib.suppress(Exception):
                await delete_record(self._client, self.keys, self.instance_id)
            with contextlib.suppress(Exception):
                await self._client.aclose()
        log.info("instance %s stopped", self.instance_id)

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _redis_failed(self, where: str, exc: BaseException) -> None:
        """Count the error; log once per outage of each part (heartbeat, control channel…)."""
        self.metrics.redis_errors += 1
        if where not in self._failing:
            self._failing.add(where)
            log.warning("redis unavailable (%s): %s", where, self.target.scrub(str(exc)))
        if where != "control channel":
            self.redis_ok = False

    def _redis_recovered(self, where: str) -> None:
        if where in self._failing:
            self._failing.discard(where)
            log.info("redis available again (%s)", where)

    # ------------------------------------------------------------------ HTTP side
    async def _process_request(self, connection: Any, request: Any) -> Any:
        path = urlsplit(request.path).path
        if path == "/healthz":
            ok = await self._redis_ping()
            status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
            return connection.respond(status, "ok\n" if ok else "redis unavailable\n")
        if path == "/metrics":
            body = self.metrics.render(self.instance_id, len(self.local), self.redis_ok)
            return connection.respond(HTTPStatus.OK, body)
        robot_id = robot_from_path(request.path)
        if robot_id is None:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found: use /ws/{robot_id}\n")
        if self._stopping:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "shutting down\n")
        try:
            validate_id(robot_id)
        except Exception as exc:
            return connection.respond(HTTPStatus.BAD_REQUEST, f"{exc}\n")
        if self.config.auth_secret:
            token = presented_token(request.path, request.headers.get("Authorization"))
            if not token_ok(self.config.auth_secret, robot_id, token):
                return connection.respond(HTTPStatus.UNAUTHORIZED, "bad or missing token\n")
        return None

    async def _redis_ping(self) -> bool:
        try:
            await asyncio.wait_for(self.client.ping(), timeout=2)
        except Exception:
            return False
        return True

    # ------------------------------------------------------------------ robots
    def _lock(self, robot_id: str) -> asyncio.Lock:
        return self._locks[hash(robot_id) % LOCK_STRIPES]

    async def _handle(self, ws: Any) -> None:
        robot_id = robot_from_path(ws.request.path) or ""
        conn = LocalConn(robot_id=robot_id, conn_id=uuid.uuid4().hex, ws=ws)
        self.metrics.connections_opened += 1
        async with self._lock(robot_id):
            previous = self.local.add(conn)
            if previous is not None:
                self._supersede(previous)
            try:
                async with self._session_slots:
                    await self._register(conn)
            except Exception as exc:
                self._redis_failed("register", exc)
        try:
            # frames from robots are read (which also answers pings and sees the close) and
            # dropped; liveness is the open socket, kept honest by WebSocket keepalive pings
            async for _ in ws:
                pass
        except Exception:  # ConnectionClosedError and friends: the robot went away
            pass
        finally:
            async with self._lock(robot_id):
                if self.local.remove(conn):
                    async with self._session_slots:
                        await self._forget(conn)

    def _supersede(self, conn: LocalConn) -> None:
        log.debug("closing superseded session %s of %s", conn.conn_id[:8], conn.robot_id)
        self.metrics.connections_superseded += 1
        self._spawn(conn.ws.close(CLOSE_SUPERSEDED, "superseded by a newer connection"))

    async def _register(self, conn: LocalConn) -> None:
        """Write the entry; kick the previous owner if it was another instance's session."""
        conn.registration = Registration(
            conn.robot_id, self.instance_id, conn.conn_id, utcnow()
        ).to_hash()
        previous = await self.store.register(conn.robot_id, conn.registration)
        conn.registered = True
        if previous is None:
            return
        prev_instance, prev_conn = previous
        if prev_conn != conn.conn_id and prev_instance and prev_instance != self.instance_id:
            kick = Envelope(
                op=Op.KICK, robot_id=conn.robot_id, conn_id=prev_conn, origin=self.instance_id
            )
            await self.client.publish(self.keys.control_channel(prev_instance), encode(kick))

    async def _forget(self, conn: LocalConn) -> None:
        """Remove this session's entry, only if it is still this session's (fencing token)."""
        try:
            await self.store.delete_if(conn.robot_id, {F_CONN_ID: conn.conn_id})
        except Exception as exc:
            self._redis_failed("disconnect", exc)

    # ------------------------------------------------------------------ heartbeats
    async def _heartbeat_loop(self) -> None:
        interval = self.config.heartbeat_interval
        delay = interval
        while True:
            await asyncio.sleep(delay)
            try:
                await self._heartbeat_once()
            except Exception as exc:
                self._redis_failed("heartbeat", exc)
                delay = min(interval, max(0.2, delay * 2 if delay < interval else 0.2))
                if is_cluster(self.client):
                    with contextlib.suppress(Exception):
                        await refresh_topology(self.client)
                continue
            self._redis_recovered("heartbeat")
            self.redis_ok = True
            delay = interval

    async def _heartbeat_once(self) -> None:
        stamp = format_ts(utcnow())
        conns = list(self.local)
        for conn in conns:
            if not conn.registered:
                async with self._lock(conn.robot_id):
                    if self.local.get(conn.robot_id) is conn and not conn.registered:
                        await self._register(conn)
                        self.metrics.reregistered += 1
        active = [c for c in conns if c.registered]
        for start in range(0, len(active), TOUCH_CHUNK):
            chunk = active[start : start + TOUCH_CHUNK]
            results = await self.store.touch_many(
                [(c.robot_id, c.conn_id, stamp, c.registration) for c in chunk]
            )
            for conn, result in zip(chunk, results, strict=True):
                if result == 0 and self.local.remove(conn):
                    self._supersede(conn)
                elif result == 2:
                    self.metrics.reregistered += 1
        record = InstanceRecord(
            instance_id=self.instance_id,
            host=self.config.host,
            port=self.port,
            pid=os.getpid(),
            ws_url=self.ws_url,
            started_at=format_ts(self.started_at),
            last_seen=stamp,
            version=__version__,
            connections=len(self.local),
        )
        await write_record(self.client, self.keys, record, ttl=self.config.timeout)

    # ------------------------------------------------------------------ control channel
    async def _control_loop(self) -> None:
        """Handle envelopes from our control channel, at most CONTROL_CONCURRENCY at once; the
        subscription itself survives node failures (see :func:`subscription`)."""
        channel = self.keys.control_channel(self.instance_id)
        async for data in subscription(self.client, channel, self._subscription_state):
            await self._control_slots.acquire()
            self._spawn(self._on_control_slot(data))

    def _subscription_state(self, subscribed: bool, exc: BaseException | None) -> None:
        self.subscribed = subscribed
        if subscribed:
            self._redis_recovered("control channel")
        elif exc is not None:
            self._redis_failed("control channel", exc)

    async def _on_control_slot(self, data: str) -> None:
        try:
            await self._on_control(data)
        finally:
            self._control_slots.release()

    async def _on_control(self, data: str) -> None:
        try:
            envelope = decode_envelope(data)
        except ProtocolError as exc:
            log.warning("ignored bad control envelope: %s", exc)
            return
        envelope = envelope.arrived(self.instance_id, time.time())
        try:
            if envelope.op is Op.PING and envelope.robot_id:
                await self._ping_robot(envelope)
            elif envelope.op is Op.PING:
                await self._answer(
                    envelope,
                    Status.PONG,
                    data={"connections": len(self.local), "version": __version__},
                )
            elif envelope.op is Op.RESYNC:
                before = self.metrics.reregistered
                await self._heartbeat_once()
                await self._answer(
                    envelope,
                    Status.RESYNCED,
                    data={"reregistered": self.metrics.reregistered - before},
                )
            elif envelope.op is Op.INVENTORY:
                await self._answer(
                    envelope, Status.INVENTORY, data={"connections": self.local.inventory()}
                )
            elif envelope.op is Op.KICK:
                conn = self.local.get(envelope.robot_id or "")
                kicked = conn is not None and envelope.conn_id in (None, conn.conn_id)
                if conn is not None and kicked and self.local.remove(conn):
                    self._supersede(conn)
                await self._answer(envelope, Status.KICKED if kicked else Status.NOT_CONNECTED)
            else:
                # per-robot FIFO: envelopes for one robot are routed in arrival order
                async with self._lock(envelope.robot_id or ""):
                    await self._route_send(envelope)
        except Exception as exc:
            self._redis_failed("control", exc)
            with contextlib.suppress(Exception):
                await self._answer(envelope, Status.ERROR, reason=str(exc)[:200])

    async def _ping_robot(self, envelope: Envelope) -> None:
        """A WebSocket ping to the robot itself: proves this instance holds a live socket."""
        conn = self.local.get(envelope.robot_id or "")
        if conn is None:
            await self._answer(envelope, Status.NOT_CONNECTED, reason="no socket on this instance")
            return
        started = time.perf_counter()
        try:
            pong = await conn.ws.ping()
            await asyncio.wait_for(pong, timeout=PING_TIMEOUT)
        except Exception as exc:
            await self._answer(
                envelope, Status.NOT_CONNECTED, reason=f"socket did not answer a ping: {exc}"[:200]
            )
            return
        await self._answer(
            envelope,
            Status.PONG,
            data={
                "robot_rtt_ms": round((time.perf_counter() - started) * 1000, 3),
                "conn_id": conn.conn_id,
            },
        )

    async def _fail(self, envelope: Envelope, status: Status, reason: str) -> None:
        """Count a message that could not be delivered and say why to the sender."""
        self.metrics.messages_failed += 1
        await self._answer(envelope, status, reason=reason)

    async def _answer(self, envelope: Envelope, status: Status, **kw: Any) -> None:
        """Publish exactly one reply to the envelope's ``reply_to`` channel (if it has one)."""
        if envelope.reply_to:
            reply = reply_to(envelope, status, self.instance_id, **kw)
            await self.client.publish(envelope.reply_to, encode(reply))

    async def _listening(self, instance_id: str) -> bool:
        """Is anyone subscribed to the instance's control channel? Cached for a second, so
        bulk forwarding does not count subscribers on every node for every message."""
        now = time.monotonic()
        cached = self._listening_cache.get(instance_id)
        if cached is not None and now - cached[0] < LISTENING_TTL:
            return cached[1]
        answer = await subscriber_count(self.client, self.keys.control_channel(instance_id)) > 0
        self._listening_cache[instance_id] = (now, answer)
        return answer

    async def _route_send(self, envelope: Envelope) -> None:
        """Deliver locally, or look the robot up and forward to its owner (at most 2 hops)."""
        robot_id = envelope.robot_id or ""
        message = envelope.message or ""
        if len(message.encode("utf-8", "surrogateescape")) > self.config.max_message_bytes:
            await self._fail(
                envelope,
                Status.REJECTED,
                f"message larger than {self.config.max_message_bytes} bytes",
            )
            return
        conn = self.local.get(robot_id)
        if conn is not None:
            try:
                await conn.ws.send(message)
            except Exception as exc:
                # the local socket is dead: clean it, then consult the registry again
                log.debug("send to %s failed, socket dropped: %r", robot_id, exc)
                if self.local.remove(conn):
                    await self._forget(conn)
            else:
                self.metrics.messages_delivered += 1
                await self._answer(envelope, Status.DELIVERED)
                return
        owner = str(await self.client.hget(self.keys.conn_key(robot_id), F_INSTANCE_ID) or "")
        if not owner:
            await self._fail(envelope, Status.NOT_CONNECTED, "no entry")
            return
        if owner == self.instance_id:
            # the registry says "here" but there is no socket: a ghost; remove exactly it
            entry = await self.store.get(robot_id)
            if entry is not None and entry.instance_id == self.instance_id:
                await self.store.delete_observed([entry])
            await self._fail(
                envelope,
                Status.NOT_CONNECTED,
                "registry named this instance but no socket was open (entry removed)",
            )
            return
        if envelope.hops >= MAX_HOPS:
            await self._fail(
                envelope, Status.REJECTED, f"hop limit {MAX_HOPS} reached (owner {owner})"
            )
            return
        channel = self.keys.control_channel(owner)
        if not await self._listening(owner):
            await self._fail(
                envelope,
                Status.INSTANCE_UNREACHABLE,
                f"owner {owner} is not listening on its control channel",
            )
            return
        await self.client.publish(channel, encode(envelope.forwarded()))
        self.metrics.messages_forwarded += 1


LISTENING_TTL = 1.0
PING_TIMEOUT = 3.0
