"""The fleet core: everything a gateway instance does besides moving bytes.

Transport-independent (in the spirit of the ``websockets`` library's sans-I/O design): an
adapter accepts a robot's socket, wraps it in something with ``send_text``/``close`` (and
``ping`` if it can), calls :meth:`FleetCore.open_session` and, when the socket ends,
:meth:`FleetCore.close_session`. The core does the rest:

* registration fenced by ``conn_id`` (Lua), a robot that connects again wins (the older socket
  is closed with :attr:`CloseCode.SUPERSEDED`, locally or by a kick to the old owner);
* ``last_heartbeat`` of every local session refreshed in pipelined batches each interval; an
  entry that vanished (Redis restart, flush) is re-registered by the same script;
* a closed session is never registered again: it is marked closed before anything else, the
  heartbeat skips it, and an entry a heartbeat re-created in flight is deleted again;
* a delete on disconnect that fails is retried (fenced, batched, backoff capped) until it
  succeeds or the entry is no longer this session's; ``/metrics`` counts the retries;
* the liveness record, the control channel (send/forward, kick, ping, inventory, resync,
  drain/undrain), routing by :func:`wsctl.gateway.routing.decide`, metrics and a clean
  shutdown;
* the instance's event stream (:mod:`wsctl.gateway.events`: batched, off the session path) and
  the draining state adapters consult (:attr:`FleetCore.draining`, :meth:`FleetCore.health`).

Every Redis outage is survived: sockets stay open, calls are retried, entries come back.
Importing this module imports neither a web framework nor a WebSocket library.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from wsctl.config import DEFAULT_SOCKET_TIMEOUT
from wsctl.errors import ConfigError, FleetNotRunning, WsctlError
from wsctl.eventlog.model import EventLimits, EventName
from wsctl.gateway.args import (
    check_callback,
    check_message,
    check_robot_id,
    check_robots,
    check_timeout,
)
from wsctl.gateway.batch_router import BatchRouter
from wsctl.gateway.batching import OWNER_CACHE_TTL
from wsctl.gateway.control import ControlChannel
from wsctl.gateway.dedup import RecentPayloads
from wsctl.gateway.drain import Drainer
from wsctl.gateway.events import EventSink
from wsctl.gateway.liveness import HEARTBEAT_DEADLINE, Liveness
from wsctl.gateway.local import LocalConn, LocalConnections, Metrics, close_reason, prometheus_label
from wsctl.gateway.outbound import SLOW_CONSUMER
from wsctl.gateway.outbox import EARLY_ITEMS, Outbox
from wsctl.gateway.outcomes import SendOutcome, SendResult
from wsctl.gateway.sending import Sender
from wsctl.protocol.envelopes import (
    MAX_MESSAGE_BYTES,
    CloseCode,
    Envelope,
    Op,
    Status,
    encode,
    format_bytes,
)
from wsctl.protocol.fanout import (
    FanoutResult,
    RobotOutcome,
    Selection,
)
from wsctl.protocol.rpc import Inbox, inbox_for
from wsctl.redis.errors import tls_problem
from wsctl.redis.factory import close_client, is_pool_busy, make_client
from wsctl.redis.internals import PublishLanes
from wsctl.redis.pubsub import publish
from wsctl.redis.target import AsyncClient, Target
from wsctl.registry.instances import delete_record
from wsctl.registry.keys import Keyspace, validate_id
from wsctl.registry.model import F_CONN_ID, Registration, utcnow
from wsctl.registry.store import RegistryStore
from wsctl.tasks import settle_all, wait_within

__all__ = [
    "CoreConfig",
    "FleetCore",
    "RobotSocket",
    "SendOutcome",
    "SendResult",
]

log = logging.getLogger("wsctl.gateway")

LOCK_STRIPES = 256
_INFINITY = float("inf")
# Registrations and disconnect clean-ups at once (connects/disconnects come in storms); with the
# control slots this stays below redis-py's 100 connections per node.
SESSION_CONCURRENCY = 40
# Failed deletes on disconnect: first retry after CLEANUP_FIRST_DELAY, doubling to
# CLEANUP_MAX_DELAY; an entry is given up (counted, logged) after CoreConfig.cleanup_retry_for.
CLEANUP_FIRST_DELAY = 0.2
CLEANUP_MAX_DELAY = 5.0
CLEANUP_BATCH = 1000
# Seconds a stopping instance waits for the answers to sends it forwarded.
STOP_ANSWER_WAIT = 1.0
NO_STATUS = 1005  # RFC 6455: a close that carried no code (transports report it, never sent)


class RobotSocket(Protocol):
    """What the core needs from a transport's socket. ``ping()`` is optional: a socket type
    without it (Starlette) makes robot pings report ``unsupported`` rather than fail."""

    async def send_text(self, text: str) -> None:
        """Send one text frame to the robot."""

    async def close(self, code: int, reason: str) -> None:
        """Close the connection with a WebSocket close code and reason."""


@dataclass
class CoreConfig:
    """Settings of the fleet core, whatever the transport: identity, heartbeat and TTL,
    message limit, keyspace, where robots reach it, and its event stream."""

    instance_id: str
    heartbeat_interval: float = 30.0
    timeout: float = 90.0  # liveness record TTL (the fleet's connection timeout)
    max_message_bytes: int = 1 << 20
    keyspace: Keyspace = field(default_factory=Keyspace)
    host: str = ""  # published in the liveness record
    port: int = 0
    ws_url: str = ""
    cleanup_retry_for: float = 900.0
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT
    owner_cache_ttl: float = OWNER_CACHE_TTL  # seconds; 0 turns the owner cache off
    # the app's acknowledged sends may be answered in reply bundles under load (owners hold
    # answers up to REPLY_EVERY: fewer Redis commands, later acknowledgements); False: never
    bundle_replies: bool = True
    # the app's published messages may be handed to Redis from inside its own publish calls
    # when many queue at once (outbox EARLY_ITEMS, on a connection of their own per node);
    # False: only the outbox's flusher publishes
    early_publish: bool = True
    # PUBLISH on a connection of its own per Redis node (wsctl.redis.internals.PublishLanes),
    # written without an await and without redis-py's pool and pipeline: the forwards and
    # replies of every batch, and the early hand-overs; False: every PUBLISH goes through the
    # client's pool (and early_publish is off)
    publish_lanes: bool = True
    events: bool = True  # write the event stream (wsctl events / history)
    event_limits: EventLimits = field(default_factory=EventLimits)


class FleetCore:
    """One instance's fleet logic. ``await start()``; sessions via ``open_session`` /
    ``close_session``; ``await stop()`` when the transport has stopped accepting."""

    def __init__(self, config: CoreConfig, target: Target) -> None:
        self.config = config
        self.target = target
        self.keys = config.keyspace
        # an instance id is a key and channel suffix and appears in every log line: the same
        # rules as robot ids (no control characters, at most 256 bytes)
        if config.instance_id:
            validate_id(config.instance_id, "instance id", utf8=True)
        if not 1 <= config.max_message_bytes <= MAX_MESSAGE_BYTES:
            # the bound every requester refuses larger messages by, before publishing them
            raise ConfigError(
                f"max_message_bytes must be within 1..{MAX_MESSAGE_BYTES} "
                f"({format_bytes(MAX_MESSAGE_BYTES)}), got {config.max_message_bytes}"
            )
        self.instance_id = config.instance_id
        self.metrics = Metrics()  # counters of the process's life, kept across restarts
        self.events = EventSink(
            self.keys, config.instance_id, config.event_limits, enabled=config.events
        )
        self._client: AsyncClient | None = None
        self._store: RegistryStore | None = None
        self._inbox: Inbox | None = None
        self._ran = False  # start() was called before: the next one starts a fresh run
        self._busy_logged = -60.0  # monotonic time of the last "pool busy" line
        # Striped per-robot locks: a robot's local session order and its registry writes from
        # this instance happen in the same order (a fast reconnect cannot be overtaken by the
        # older session's registration), and sends to one robot are routed in arrival order.
        self._locks = [asyncio.Lock() for _ in range(LOCK_STRIPES)]
        self._session_slots = asyncio.Semaphore(SESSION_CONCURRENCY)
        self._new_run()

    def _new_run(self) -> None:
        """The state of one run, from :meth:`start` to :meth:`stop`: made fresh for each, so a
        stopped core can be started again (an app whose lifespan runs twice: tests, reloads)."""
        self.local = LocalConnections()
        self.redis_ok = False
        self.subscribed = False
        self.stopping = False
        # set by stop() when it ends the background loops, which check it as well as being
        # cancelled (see stop())
        self.finishing = False
        self.started_at = utcnow()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        # batched sends (protocol v2): one worker, in arrival order, and the owner cache
        self.batches = BatchRouter(self, self.config.owner_cache_ttl)
        # the app's sends for robots held elsewhere, coalesced into batches
        self.outbox = Outbox(
            self,
            bundle_replies=self.config.bundle_replies,
            early_items=(
                EARLY_ITEMS if self.config.early_publish and self.config.publish_lanes else 0
            ),
        )
        # PUBLISH written at once, one connection per node (opened by start())
        self.lanes: PublishLanes | None = None
        # control messages seen lately: a copy (a PUBLISH redis-py retried) is dropped
        self.recent = RecentPayloads()
        self._failing: set[str] = set()
        # closed sessions whose entry still has to go: conn -> give-up time (monotonic)
        self._cleanup: dict[LocalConn, float] = {}
        # ...of which these are there because a delete failed (counted as retries)
        self._failed_deletes: set[LocalConn] = set()
        self._cleanup_wake = asyncio.Event()
        self._cleanup_task: asyncio.Task[None] | None = None
        self.drainer = Drainer(self)
        self.control = ControlChannel(self)
        self.sender = Sender(self)
        # heartbeats, the liveness record and the Redis probe behind /healthz and redis_up
        self.liveness = Liveness(self)

    # ------------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        """Between :meth:`start` and the end of :meth:`stop` (while it stops, sends still end
        with an outcome: ``error``, the instance is stopping)."""
        return self._client is not None

    def require_running(self) -> None:
        """Raise :class:`~wsctl.errors.FleetNotRunning` unless :attr:`running`: before
        :meth:`start` or after :meth:`stop`, the app's API has nothing to send with."""
        if self._client is None:
            raise self._not_running()

    def _not_running(self) -> FleetNotRunning:
        when = "stopped" if self._ran else "not started"
        return FleetNotRunning(
            f"fleet {self.instance_id} is {when}: call start() first "
            "(FastAPI: FastAPI(lifespan=fleet.lifespan))"
        )

    @property
    def client(self) -> AsyncClient:
        """The Redis client (after :meth:`start`; :class:`~wsctl.errors.FleetNotRunning`
        before it and after :meth:`stop`)."""
        if self._client is None:
            raise self._not_running()
        return self._client

    @property
    def store(self) -> RegistryStore:
        """The registry store on :attr:`client` (after :meth:`start`;
        :class:`~wsctl.errors.FleetNotRunning` before it and after :meth:`stop`)."""
        if self._store is None or self._client is None:
            raise self._not_running()
        return self._store

    @property
    def inbox(self) -> Inbox:
        """The instance's reply inbox: one subscription for every reply it waits for (after
        :meth:`start`; :class:`~wsctl.errors.FleetNotRunning` before it)."""
        if self._inbox is None:
            raise self._not_running()
        return self._inbox

    @property
    def cleanup_pending(self) -> int:
        """Closed sessions whose registry entry is still to be removed (retried in the
        background until it goes or its deadline passes)."""
        return len(self._cleanup)

    async def start(self) -> None:
        """Connect (lazily), write the liveness record, start heartbeats and the control
        channel. A Redis that is down at start is not fatal: the heartbeat loop retries.

        A core that was stopped starts again with fresh state (no sessions, a new reply inbox
        and control subscription; the counters of ``/metrics`` go on), so an app whose
        lifespan runs more than once (a test client entered twice) works each time. Starting
        a running core raises :class:`~wsctl.errors.WsctlError`."""
        if self._client is not None:
            raise WsctlError(f"fleet {self.instance_id} is already started")
        if self._ran:
            self._new_run()
        self._ran = True
        self._client = make_client(
            self.target, retries=1, socket_timeout=self.config.socket_timeout
        )
        self._store = RegistryStore(self._client, self.keys)
        self._inbox = inbox_for(self._client, self.keys, self.instance_id)
        if self.config.publish_lanes:
            self.lanes = PublishLanes(self._client)
            self.lanes.prepare()  # opened in the background; the pool serves until then
        self.events.writer = self.instance_id
        self.events.start(self._client)
        try:
            await wait_within(self.heartbeat_once(), HEARTBEAT_DEADLINE)
            self.redis_ok = True
        except Exception as exc:  # keep serving; the heartbeat loop retries
            self._redis_failed("start", exc)
        self._tasks = [
            asyncio.create_task(self.liveness.run(), name="heartbeat"),
            asyncio.create_task(self.control.run(), name="control"),
            asyncio.create_task(self.batches.run(), name="batches"),
            asyncio.create_task(self.outbox.run(), name="outbox"),
        ]

    async def wait_subscribed(self, timeout: float = 10.0) -> None:
        """Wait until the control channel and the reply inbox are subscribed, so requests
        sent next are heard and replies reach us; raises TimeoutError after ``timeout``
        seconds."""
        deadline = time.monotonic() + timeout
        while not (self.subscribed and self.inbox.subscribed):
            if time.monotonic() > deadline:
                raise TimeoutError("control channel not subscribed in time")
            await asyncio.sleep(0.01)

    async def stop(self, grace: float = 10.0) -> None:
        """Close remaining sockets with 1001, remove their entries (fenced), give pending
        clean-ups a last chance, delete the liveness record, close the client."""
        if self._client is None:
            return
        self.stopping = True
        remaining = list(self.local)
        for conn in remaining:
            self._spawn(self._close_socket(conn, CloseCode.GOING_AWAY, "server shutting down"))
        if remaining:
            with contextlib.suppress(Exception):  # shutting down: bounded by grace, whatever fails
                await wait_within(
                    asyncio.gather(*(self.close_session(c) for c in remaining)), grace
                )
        # the loops end on ``finishing`` too: redis-py writes each command under
        # asyncio.wait_for, which in Python 3.11 drops a cancellation that lands as the write
        # completes, so a cancel alone may be lost (settle_all cancels again, bounded)
        self.finishing = True
        self.outbox.closed = True  # sends from now on: error, the instance stops
        stuck = await settle_all(list(self._tasks), timeout=grace)
        # then what may still queue a clean-up (a drain batch, a handler closing a session),
        # so the last pass below sees every entry they leave, and none is queued after it
        self.drainer.cancel()
        stuck += await settle_all(list(self._background), timeout=grace)
        # replies on their way get a moment (a send that arrived is not reported failed),
        # then what is left says whether it was never sent (error) or may have arrived
        await self.outbox.answered(min(grace, STOP_ANSWER_WAIT))
        self.outbox.close()
        if self.lanes is not None:  # after close(): what waited on them was settled there
            await self.lanes.aclose()
        if self._cleanup_task is not None:
            stuck += await settle_all([self._cleanup_task], timeout=grace)
        if self._cleanup:
            with contextlib.suppress(Exception):  # a last chance; what is left is reap's
                await wait_within(self._cleanup_pass(final=True), grace)
        if stuck:  # bounded: a task that ignores cancellation must not hang the shutdown
            log.warning("stopping: %d task(s) did not end: %s", len(stuck), stuck)
        await self.events.stop()
        with contextlib.suppress(Exception):  # on the way out: the record's TTL ends it anyway
            await wait_within(delete_record(self._client, self.keys, self.instance_id), 5)
        await close_client(self._client)  # the inbox first; never raises
        self._client = None

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _redis_failed(self, where: str, exc: BaseException) -> None:
        """Count the error; log once per outage of each part (heartbeat, control channel…).

        A client-side shortage of connections (every pooled connection busy) is not a Redis
        failure: counted as ``redis_busy``, logged as such at most once a minute, and
        ``redis_up`` stays as it was."""
        if is_pool_busy(exc):
            self.metrics.redis_busy += 1
            now = time.monotonic()
            if now - self._busy_logged >= 60.0:
                self._busy_logged = now
                log.warning("redis connection pool busy (%s): %s", where, exc)
            return
        self.metrics.redis_errors += 1
        if where not in self._failing:
            self._failing.add(where)
            # a TLS failure says which (untrusted certificate, client certificate refused...)
            reason = tls_problem(self.target, exc, probe=False) or self.target.scrub(str(exc))
            log.warning("redis unavailable (%s): %s", where, reason)
        if where != "control channel":
            if self.redis_ok and where in ("send", "control"):
                # messages failed: find out soon whether Redis is back (redis_up)
                self.liveness.beat_soon()
            self.redis_ok = False

    def _redis_recovered(self, where: str) -> None:
        if where in self._failing:
            self._failing.discard(where)
            log.info("redis available again (%s)", where)

    async def healthy(self) -> bool:
        """Is Redis up? :meth:`probe_redis`."""
        return await self.probe_redis()

    async def probe_redis(self) -> bool:
        """Is Redis up: :meth:`wsctl.gateway.liveness.Liveness.probe_redis`, the one fact
        behind ``/healthz`` and ``wsctl_gateway_redis_up``."""
        return await self.liveness.probe_redis()

    async def metrics_answer(self) -> str:
        """What ``/metrics`` serves: :meth:`metrics_text` after :meth:`probe_redis` (so
        ``wsctl_gateway_redis_up`` is at most ``PROBE_FRESH`` seconds old and agrees with
        ``/healthz``). Adapters serve it as is."""
        await self.probe_redis()
        return self.metrics_text()

    def metrics_text(self) -> str:
        """The Prometheus text of ``/metrics``: connection, Redis, event-stream and
        drain figures, labelled with the instance id."""
        text = self.metrics.render(
            self.instance_id, len(self.local), self.redis_ok, self.cleanup_pending
        )
        label = f'{{instance_id="{prometheus_label(self.instance_id)}"}}'
        owners = self.batches.owners
        figures = [
            ("owner_cache_hits_total", "counter", owners.hits),
            ("owner_cache_misses_total", "counter", owners.misses),
            ("owner_cache_entries", "gauge", len(owners)),
            ("outbox_batches_total", "counter", self.outbox.batches_sent),
            ("outbox_messages_total", "counter", self.outbox.items_sent),
            ("outbox_early_batches_total", "counter", self.outbox.early_batches),
            ("outbox_queued", "gauge", self.outbox.queued),
            ("control_duplicates_dropped_total", "counter", self.recent.dropped),
            ("reply_inbox_up", "gauge", int(self._inbox is not None and self._inbox.subscribed)),
            (
                "reply_inbox_resubscribed_total",
                "counter",
                self._inbox.resubscribed if self._inbox is not None else 0,
            ),
        ]
        lines = []
        for name, kind, value in figures:
            lines += [f"# TYPE wsctl_gateway_{name} {kind}", f"wsctl_gateway_{name}{label} {value}"]
        parts = [*lines, *self.events.render(label), *self.drainer.render(label)]
        return text + "\n".join(parts) + "\n"

    # ------------------------------------------------------------------ draining
    @property
    def draining(self) -> bool:
        """True while the instance drains (``wsctl drain``): adapters refuse new robot
        handshakes with HTTP 503 and ``Retry-After: {retry_after}`` and /healthz answers 503
        ``draining``, so load balancers and robots go elsewhere."""
        return self.drainer.active

    retry_after = 5  # seconds, the Retry-After of a refused handshake while draining

    async def health(self) -> tuple[int, str]:
        """What /healthz answers: (200, "ok"), (503, "draining") or (503, "redis
        unavailable"). Adapters serve it as is."""
        if self.draining:
            return 503, "draining"
        if not await self.healthy():
            return 503, "redis unavailable"
        return 200, "ok"

    # ------------------------------------------------------------------ sessions
    def _lock(self, robot_id: str) -> asyncio.Lock:
        return self._locks[hash(robot_id) % LOCK_STRIPES]

    async def open_session(self, robot_id: str, sock: RobotSocket) -> LocalConn:
        """A robot's socket was accepted: supersede its older local session, register it.
        A Redis failure here is not fatal: the next heartbeat registers the session."""
        conn = LocalConn(robot_id=robot_id, conn_id=uuid.uuid4().hex, sock=sock)
        self.metrics.connections_opened += 1
        async with self._lock(robot_id):
            previous = self.local.add(conn)
            if previous is not None:
                previous.closed = True
                self._supersede(previous)
                self.events.emit(EventName.SUPERSEDED, robot_id, previous.conn_id, by=conn.conn_id)
            self.events.emit(EventName.CONNECTED, robot_id, conn.conn_id)
            try:
                async with self._session_slots:
                    await self._register(conn)
            except Exception as exc:  # Redis failed: counted, logged, retried
                self._redis_failed("register", exc)
        return conn

    async def close_session(
        self, conn: LocalConn, code: int | None = None, reason: str | None = None
    ) -> None:
        """The session's socket is gone: forget it here and remove its entry (fenced).
        ``code``/``reason``: the close frame, when the transport knows it (event detail); what
        this instance closed the socket with fills in what the transport does not report (ASGI
        servers differ: some pass no reason, some say 1005 "no status")."""
        conn.closed = True  # first, so no heartbeat or registration can bring it back
        self.metrics.connections_closed += 1
        if conn.sent_close is not None:
            if conn.sent_close[1].startswith(SLOW_CONSUMER):
                self.metrics.slow_consumers += 1
            if code is None or code == NO_STATUS:
                code = conn.sent_close[0]
            if not reason:
                reason = conn.sent_close[1]
        self.events.emit(
            EventName.DISCONNECTED,
            conn.robot_id,
            conn.conn_id,
            code=code,
            reason=close_reason(reason or "") or None,
            session_s=round(time.time() - conn.since, 3),
        )
        async with self._lock(conn.robot_id):
            if self.local.remove(conn):
                await self._remove_entry_surely(conn)

    def _supersede(self, conn: LocalConn) -> None:
        log.debug("closing superseded session %s of %s", conn.conn_id[:8], conn.robot_id)
        self.metrics.connections_superseded += 1
        self._spawn(
            self._close_socket(conn, CloseCode.SUPERSEDED, "superseded by a newer connection")
        )

    async def _close_socket(self, conn: LocalConn, code: int, reason: str) -> None:
        text = close_reason(reason)
        conn.sent_close = (int(code), text)  # before the close: the transport reports it after
        with contextlib.suppress(Exception):  # the socket may be gone already
            await conn.sock.close(int(code), text)

    async def _register(self, conn: LocalConn) -> None:
        """Write the entry; kick the previous owner if it was another instance's session.
        Never for a closed session (callers hold the robot's lock)."""
        if conn.closed:
            return
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
            await publish(self.client, self.keys.control_channel(prev_instance), encode(kick))

    async def _remove_entry_surely(self, conn: LocalConn) -> None:
        """:meth:`_remove_entry` within the session slots, even if the caller is cancelled
        meanwhile (the transport cancelling its handler as a server shuts down, an undrain
        cancelling a drain batch): the entry still has to go, or it names a closed socket (a
        ghost), so it is queued for the retry loop (or stop()'s last pass), fenced, and the
        cancellation goes on."""
        try:
            async with self._session_slots:
                await self._remove_entry(conn)
        except asyncio.CancelledError:
            self._queue_cleanup(conn)
            raise

    async def _remove_entry(self, conn: LocalConn) -> None:
        """Delete the session's entry only if it is still this session's; on failure, queue
        it for the retry loop."""
        try:
            await self.store.delete_if(conn.robot_id, {F_CONN_ID: conn.conn_id})
        except Exception as exc:  # Redis failed: queued for the retry loop
            self._redis_failed("disconnect", exc)
            self._queue_cleanup(conn, failed=True)

    def _drop(self, conn: LocalConn) -> bool:
        """Mark ``conn`` closed and forget it locally (no I/O). True if it was current."""
        conn.closed = True
        return self.local.remove(conn)

    # ------------------------------------------------------------------ clean-up retries
    def _queue_cleanup(self, conn: LocalConn, failed: bool = False) -> None:
        """Queue a fenced delete of a closed session's entry: after a failed delete
        (``failed``), or for an entry a heartbeat in flight re-created."""
        if failed:
            self._failed_deletes.add(conn)
        if conn not in self._cleanup:
            self._cleanup[conn] = time.monotonic() + self.config.cleanup_retry_for
        self._cleanup_wake.set()
        if self.finishing:
            return  # stop()'s last pass removes it; no loop is left running after stop()
        if self._cleanup_task is None or self._cleanup_task.done():
            self._cleanup_task = asyncio.create_task(self._cleanup_loop(), name="cleanup")

    async def _cleanup_loop(self) -> None:
        """Retry queued deletes in batches: first after CLEANUP_FIRST_DELAY, doubling to
        CLEANUP_MAX_DELAY while Redis keeps failing; ends when the queue is empty."""
        delay = CLEANUP_FIRST_DELAY
        while self._cleanup and not self.finishing:
            self._cleanup_wake.clear()
            await asyncio.sleep(delay)
            if await self._cleanup_pass():
                delay = CLEANUP_FIRST_DELAY
            else:
                delay = min(CLEANUP_MAX_DELAY, delay * 2)

    async def _cleanup_pass(self, final: bool = False) -> bool:
        """One fenced delete per queued session (pipelined). False when Redis failed."""
        now = time.monotonic()
        for conn, give_up in list(self._cleanup.items()):
            if now > give_up:
                del self._cleanup[conn]
                self._failed_deletes.discard(conn)
                self.metrics.cleanup_abandoned += 1
                log.error(
                    "gave up removing the entry of closed session %s of %s; a reaper will find it",
                    conn.conn_id[:8],
                    conn.robot_id,
                )
        batch = list(self._cleanup)[:CLEANUP_BATCH]
        if not batch:
            return True
        self.metrics.cleanup_retries += sum(1 for c in batch if c in self._failed_deletes)
        try:
            results = await self.store.delete_many_if(
                [(c.robot_id, {F_CONN_ID: c.conn_id}, "hash") for c in batch]
            )
        except Exception as exc:  # Redis failed: retried with backoff
            self._redis_failed("disconnect retry", exc)
            self._failed_deletes.update(batch)  # a re-created entry whose delete failed
            return False
        # 1 deleted, 0 no longer this session's, -1 gone: done either way
        for conn, _ in zip(batch, results, strict=True):
            self._cleanup.pop(conn, None)
            self._failed_deletes.discard(conn)
        self._redis_recovered("disconnect retry")
        self._redis_recovered("disconnect")
        return True

    # ------------------------------------------------------------------ heartbeats
    async def heartbeat_once(self) -> int:
        """Refresh every live local session's entry (re-registering vanished ones) and the
        liveness record (:meth:`wsctl.gateway.liveness.Liveness.beat`). Returns how many
        entries were (re-)registered."""
        return await self.liveness.beat()

    def resync_soon(self) -> None:
        """Beat now (:meth:`wsctl.gateway.liveness.Liveness.resync_soon`)."""
        self.liveness.resync_soon()

    async def write_liveness(self, stamp: str | None = None) -> None:
        """Write the instance's liveness record (every heartbeat, and when draining changes)."""
        await self.liveness.write_liveness(stamp)

    # ------------------------------------------------------------------ control channel
    async def handle_control(self, data: str | bytes) -> None:
        """Act on one control envelope or batch and publish its reply (if it asked for one)."""
        await self.control.handle(data)

    async def _fail(self, envelope: Envelope, status: Status, reason: str | None) -> None:
        await self.control.fail(envelope, status, reason)

    async def _answer(self, envelope: Envelope, status: Status, **kw: Any) -> None:
        await self.control.answer(envelope, status, **kw)

    # ------------------------------------------------------------------ sending
    def send(
        self, robot_id: str, message: str, *, timeout: float = 5.0
    ) -> Coroutine[Any, Any, SendResult]:
        """Deliver ``message`` to ``robot_id`` and wait for the outcome: written to this
        instance's socket, or forwarded to the instance that holds the robot, which answers.
        Sends in flight together leave in batches (:mod:`wsctl.gateway.outbox`); each robot's
        messages keep their order. Never raises for a Redis failure, never waits longer than
        ``timeout``: the outcome says ``error`` or ``timeout``. (The sender's coroutine itself,
        to await: no coroutine of its own per message.)

        Raises at once, before anything is queued, for a bug in the call: ``TypeError`` or
        ``ValueError`` for a wrong argument (:mod:`wsctl.gateway.args`),
        :class:`~wsctl.errors.FleetNotRunning` before :meth:`start` or after :meth:`stop`."""
        robot_id, message, timeout = self._checked(robot_id, message, timeout)
        return self.sender.send(robot_id, message, timeout=timeout)

    def publish(
        self, robot_id: str, message: str, *, timeout: float = 5.0
    ) -> Coroutine[Any, Any, SendResult]:
        """Fire and forget: hand ``message`` over and return without waiting for the owner's
        answer (like socket.io's ``emit``). ``published`` once it is handed to Redis for the
        robot's owner; ``delivered`` when the robot's socket is here (written at once); a
        failure known before the hand-over (``not_connected``: no owner; ``rejected``,
        ``instance_unreachable``, ``error``) or ``timeout`` as for :meth:`send`. Raises for
        a bug in the call as :meth:`send` does."""
        robot_id, message, timeout = self._checked(robot_id, message, timeout)
        return self.sender.publish(robot_id, message, timeout=timeout)

    def _checked(
        self, robot_id: object, message: object, timeout: object
    ) -> tuple[str, str, float]:
        """The arguments of :meth:`send` / :meth:`publish`, checked (raises for a bug in the
        call), and the core running. The common call (two non-empty ``str`` and a float
        timeout above 0) is answered without a call per argument: it runs once per message."""
        if (
            type(robot_id) is str
            and robot_id
            and type(message) is str
            and type(timeout) is float
            and 0.0 < timeout < _INFINITY
            and self._client is not None
        ):
            return robot_id, message, timeout
        checked = (check_robot_id(robot_id), check_message(message), check_timeout(timeout))
        self.require_running()
        return checked

    async def send_many(
        self,
        robots: Iterable[str] | Selection,
        message: str,
        *,
        timeout: float = 5.0,
        on_outcome: Callable[[RobotOutcome], None] | None = None,
    ) -> FanoutResult:
        """Send ``message`` to many robots with one outcome per robot, each robot's message
        going the way :meth:`send`'s does (the outbox: batches per owner carrying the message
        once; each robot's order kept with ``send`` and ``publish``).
        ``robots``: robot ids, or a selection
        (:func:`wsctl.protocol.fanout.registry_selection`, chunks of ``(robot id, owner or
        None)``). ``on_outcome`` sees each robot's outcome as it is known. ``timeout``: per
        robot, as for :meth:`send`. Never raises for a Redis failure: each robot's outcome
        says ``error`` or ``timeout``, and a selection whose reading failed says ``aborted``
        in the summary. Raises for a bug in the call as :meth:`send` does (robot ids that are
        not ``str`` included)."""
        selection = check_robots(robots)
        text, seconds = check_message(message), check_timeout(timeout)
        callback = check_callback(on_outcome)
        self.require_running()
        return await self.sender.send_many(selection, text, timeout=seconds, on_outcome=callback)

    async def _route_envelope(self, envelope: Envelope) -> None:
        await self.sender.route_envelope(envelope)
