"""Embed the fleet core in a Starlette or FastAPI app: ``pip install 'wsctl[fastapi]'``.

::

    fleet = Fleet.from_env()                      # REDIS_*, SERVER_INSTANCE_ID, PORT, ...
    app = FastAPI(lifespan=fleet.lifespan)        # start/stop with the app
    app.router.routes.extend(fleet.routes())      # /healthz and /metrics

    @app.websocket("/ws/{robot_id}")
    async def robot(websocket: WebSocket, robot_id: str) -> None:
        await fleet.serve(websocket, robot_id)    # a whole session: auth, register, clean-up

    result = await fleet.send("robot-17", "hello")  # here or across instances -> outcome
    await fleet.publish("robot-17", "hello")        # fire and forget: handed to Redis
    done = await fleet.send_many(["robot-1", "robot-2"], "hello")  # an outcome per robot

The app's instances then take part in the fleet like ``wsctl gateway`` instances: ``wsctl
send``, ``kick``, ``ping``, ``doctor`` and ``simulate`` work against them. Starlette sockets have
no ping, so a robot ping (``doctor ROBOT``) is reported as unsupported, not failed; uvicorn's own
``--ws-ping-interval`` keeps silent dead sockets from lingering.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
)
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from wsctl.config import DEFAULT_SOCKET_TIMEOUT, load_settings
from wsctl.errors import ConfigError
from wsctl.gateway.admission import (
    HEALTH_PATH,
    METRICS_PATH,
    Refusal,
    advertised_url,
    health_answer,
    refusal,
)
from wsctl.gateway.args import check_filter
from wsctl.gateway.batching import SharedText
from wsctl.gateway.core import CoreConfig, FleetCore, SendResult
from wsctl.gateway.identity import instance_id_for
from wsctl.gateway.local import LocalConn, LocalConnections, Metrics, close_reason
from wsctl.gateway.outbound import CLOSE_WAIT, OutboundQueue
from wsctl.protocol.fanout import FanoutResult, RobotOutcome, Selection, registry_selection
from wsctl.redis.factory import target_from_settings
from wsctl.redis.target import Target
from wsctl.registry.keys import Keyspace, validate_id
from wsctl.system import tune_gc
from wsctl.tasks import wait_within

__all__ = ["Fleet", "StarletteSocket"]

log = logging.getLogger("wsctl.gateway")

# Callbacks may be plain functions or coroutines.
OnConnect = Callable[[str], Awaitable[None] | None]
OnMessage = Callable[[str, str], Awaitable[None] | None]
OnDisconnect = Callable[[str], Awaitable[None] | None]


class StarletteSocket:
    """A Starlette ``WebSocket`` as the core's ``RobotSocket``: no ``ping``; writes go
    through a per-connection :class:`~wsctl.gateway.outbound.OutboundQueue` (ASGI has no
    write that does not wait), so a robot that stops reading delays nobody else's messages
    and is closed as a slow consumer (:mod:`wsctl.gateway.outbound`)."""

    __slots__ = ("_ended", "out", "ws")

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.out = OutboundQueue(ws.send_text, self._close_slow)
        # set when a slow consumer could not be closed in time: the session's receive then
        # answers a disconnect, so the session ends here whatever the server does with the
        # connection (an ASGI server waits for its write buffer to drain before closing)
        self._ended: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        receive = ws._receive

        async def receive_or_ended() -> Any:
            if self._ended.done():
                return self._ended.result()
            frame = asyncio.ensure_future(receive())
            await asyncio.wait((frame, self._ended), return_when=asyncio.FIRST_COMPLETED)
            if frame.done():
                return frame.result()
            frame.cancel()
            return self._ended.result()

        ws._receive = receive_or_ended

    def attach(self, conn: LocalConn) -> None:
        """Its session: a slow-consumer close is recorded on it (the event log's reason)."""

        def record(code: int, reason: str) -> None:
            conn.sent_close = (code, close_reason(reason))

        self.out.on_slow = record

    async def send_text(self, text: str) -> None:
        """Queue one text frame for the robot, behind what waits for it; while much waits
        and the robot reads, first wait for room (:meth:`OutboundQueue.room`)."""
        payload = OutboundQueue.payload(text)
        if self.out.crowded():
            await self.out.room()
        self.out.put((payload,))

    def send_texts_nowait(self, payloads: list[SharedText]) -> None:
        """Queue text frames for the robot, in order, without waiting."""
        self.out.put(payloads)

    def crowded(self) -> bool:
        """Would :meth:`send_text` wait for room now? (Else a sender may write at once.)"""
        return self.out.crowded()

    async def close(self, code: int, reason: str) -> None:
        """Close with ``code`` and ``reason`` once what is queued is written (at most about a
        second: a kick's last messages go first), unless the socket is already disconnected."""
        await self.out.flushed()
        await self._close_now(code, reason)

    async def _close_now(self, code: int, reason: str) -> None:
        # Starlette raises on a second close
        if self.ws.application_state is not WebSocketState.DISCONNECTED:
            await self.ws.close(code, reason)

    async def _close_slow(self, code: int, reason: str) -> None:
        """Close a slow consumer: the close frame waits behind what it does not read (ASGI
        servers wait for their write buffer to drain), so after CLOSE_WAIT seconds the session
        ends here anyway (its receive answers a disconnect with ``code`` and ``reason``) and
        the connection is left to the server."""
        try:
            await wait_within(self._close_now(code, reason), CLOSE_WAIT)
        except Exception:  # it does not read: no close handshake to wait for
            if not self._ended.done():
                self._ended.set_result(
                    {"type": "websocket.disconnect", "code": code, "reason": reason}
                )


class Fleet:
    """One instance of a Starlette/FastAPI app in the fleet: the core plus the ASGI glue."""

    def __init__(
        self,
        target: Target,
        *,
        instance_id: str | None = None,
        port: int = 8000,
        host: str = "127.0.0.1",
        advertise_url: str | None = None,
        auth_secret: str | None = None,
        heartbeat_interval: float = 30.0,
        timeout: float = 90.0,
        max_message_bytes: int = 1 << 20,
        keyspace: Keyspace | None = None,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        on_connect: OnConnect | None = None,
        on_message: OnMessage | None = None,
        on_disconnect: OnDisconnect | None = None,
        tune_gc: bool = True,
        bundle_replies: bool = True,
        early_publish: bool = True,
        publish_lanes: bool = True,
    ) -> None:
        self.tune_gc = tune_gc
        self.auth_secret = auth_secret or None
        self.on_connect = on_connect
        self.on_message = on_message
        self.on_disconnect = on_disconnect
        self.core = FleetCore(
            CoreConfig(
                instance_id=instance_id or instance_id_for(port),
                heartbeat_interval=heartbeat_interval,
                timeout=timeout,
                max_message_bytes=max_message_bytes,
                keyspace=keyspace or Keyspace(),
                host=host,
                port=port,
                ws_url=advertised_url(host, port, advertise_url),
                socket_timeout=socket_timeout,
                bundle_replies=bundle_replies,
                early_publish=early_publish,
                publish_lanes=publish_lanes,
            ),
            target,
        )
        if not self.auth_secret:
            log.warning("no auth secret: any client may connect as any robot (open gateway)")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **options: Any) -> Fleet:
        """A fleet configured like the original design's app and ``wsctl`` itself.

        Redis: the original ``REDIS_HOST``, ``REDIS_PORT``, ``REDIS_PASSWORD``,
        ``REDIS_USE_CLUSTER``, ``REDIS_NODES`` (or ``WSCTL_REDIS_*``, a config file; nothing
        set means 127.0.0.1:6379). ``SERVER_INSTANCE_ID``, else the original rule over
        ``PORT``. ``WSCTL_AUTH_SECRET``, ``WSCTL_ADVERTISE_URL``, ``HOST``, ``WSCTL_PREFIX``,
        ``WSCTL_HEARTBEAT_INTERVAL``, ``WSCTL_TIMEOUT``, ``WSCTL_SOCKET_TIMEOUT``. ``options`` override any of these.
        """
        env = os.environ if env is None else env
        settings = load_settings(env=env)
        target = Target("tcp") if settings.embedded else target_from_settings(settings)
        try:
            port = int(env.get("PORT", "8000"))
        except ValueError:
            raise ConfigError(f"PORT {env.get('PORT')!r} is not a number") from None
        instance_id = instance_id_for(port, env)
        validate_id(instance_id, "instance id", utf8=True)
        config: dict[str, Any] = {
            "instance_id": instance_id,
            "port": port,
            "host": env.get("HOST", "127.0.0.1"),
            "advertise_url": env.get("WSCTL_ADVERTISE_URL") or None,
            "auth_secret": env.get("WSCTL_AUTH_SECRET") or None,
            "heartbeat_interval": settings.heartbeat_interval,
            "timeout": settings.timeout,
            "socket_timeout": settings.socket_timeout,
            "keyspace": Keyspace(
                prefix=settings.prefix,
                instance_prefix=settings.instance_prefix,
                control_prefix=settings.control_prefix,
            ),
        }
        config.update(options)
        return cls(target, **config)

    # ------------------------------------------------------------------ state
    @property
    def instance_id(self) -> str:
        """This instance's id."""
        return self.core.instance_id

    @property
    def local(self) -> LocalConnections:
        """The robots connected to this instance."""
        return self.core.local

    @property
    def metrics(self) -> Metrics:
        """This instance's counters, as :meth:`metrics_endpoint` shows them."""
        return self.core.metrics

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Join the fleet: write the liveness record, start heartbeats and the control
        channel (call it from the app's startup or lifespan). A stopped fleet starts again
        with fresh state; starting a running one raises :class:`~wsctl.errors.WsctlError`.
        Unless ``tune_gc=False``, the process's cycle collector is tuned as ``wsctl
        gateway``'s is (:func:`wsctl.system.tune_gc`: what start-up imported frozen,
        collections every 50,000 allocations instead of 700), once per process: with the
        default, full collections during a blast of sends rescanned every robot's objects and
        took a third of the sending instance's time."""
        if self.tune_gc:
            tune_gc()
        await self.core.start()
        log.info("instance %s joined the fleet (%s)", self.instance_id, self.core.config.ws_url)

    async def stop(self) -> None:
        """Close remaining sockets with 1001, remove this instance's entries (only its own
        sessions': fenced) and its liveness record."""
        await self.core.stop()
        log.info("instance %s left the fleet", self.instance_id)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """``FastAPI(lifespan=fleet.lifespan)`` / ``Starlette(lifespan=fleet.lifespan)``."""
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    # ------------------------------------------------------------------ robots
    async def _refuse(self, websocket: WebSocket, refused: Refusal) -> None:
        """Refuse the handshake with its HTTP status where the server allows it (as the
        websockets shell answers), else with its close code."""
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            response = PlainTextResponse(
                refused.body, status_code=refused.status, headers=dict(refused.headers)
            )
            await websocket.send_denial_response(response)
        else:
            await websocket.close(refused.close_code, refused.reason)

    async def serve(self, websocket: WebSocket, robot_id: str) -> None:
        """Run one robot's session: check the id and token, accept, register (fenced), pass
        each text message to ``on_message``, and clean up when the socket ends."""
        refused = refusal(
            self.core,
            robot_id,
            "?" + websocket.url.query,
            websocket.headers.get("authorization"),
            self.auth_secret,
        )
        if refused is not None:
            await self._refuse(websocket, refused)
            return
        await websocket.accept()
        conn = await self.core.open_session(robot_id, StarletteSocket(websocket))
        code: int | None = None  # the close frame, for the disconnected event
        reason: str | None = None
        try:
            await self._call(self.on_connect, robot_id)
            while True:
                frame = await websocket.receive()
                if frame["type"] == "websocket.disconnect":
                    code, reason = frame.get("code"), frame.get("reason")
                    break
                text = frame.get("text")
                if text is None and frame.get("bytes") is not None:
                    text = frame["bytes"].decode("utf-8", "replace")
                if text is not None:
                    await self._call(self.on_message, robot_id, text)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the robot went away (RuntimeError: receive after a close we sent)
        finally:
            await self.core.close_session(conn, code, reason if isinstance(reason, str) else None)
            await self._call(self.on_disconnect, robot_id)

    async def _call(self, callback: Callable[..., Any] | None, *args: Any) -> None:
        """Run an app callback; its errors are logged, never end the robot's session."""
        if callback is None:
            return
        try:
            result = callback(*args)
            if inspect.isawaitable(result):
                await result
        except Exception:  # the app's callback: its failure is logged, the session goes on
            log.exception("callback %s failed", getattr(callback, "__name__", callback))

    async def send(self, robot_id: str, message: str, *, timeout: float = 5.0) -> SendResult:
        """Deliver ``message`` here or through the instance that holds the robot, and wait for
        the outcome: ``delivered``, ``not_connected``, ``instance_unreachable``, ``rejected``,
        ``error`` or ``timeout`` (none within ``timeout`` seconds), with the route taken.
        Sends in flight together leave in batches; each robot's messages keep their order.

        A bug in the call raises at once, before anything is sent (the same checks for
        :meth:`publish` and :meth:`send_many`): ``TypeError`` / ``ValueError`` for an argument
        of the wrong type or value (:mod:`wsctl.gateway.args`),
        :class:`~wsctl.errors.FleetNotRunning` before :meth:`start` or after :meth:`stop`.
        A coroutine function, so frameworks that look (Starlette's ``BackgroundTasks``, which
        runs anything else in a thread) run it on the event loop."""
        return await self.core.send(robot_id, message, timeout=timeout)

    async def publish(self, robot_id: str, message: str, *, timeout: float = 5.0) -> SendResult:
        """Fire and forget, like socket.io's ``emit``: returns once ``message`` is handed to
        Redis for the robot's owner (``published``; nobody confirms it arrived), or written
        here (``delivered``), or known to fail first (``not_connected``, ``rejected``,
        ``instance_unreachable``, ``error``; ``timeout`` when Redis took longer than
        ``timeout`` seconds to take it). Raises for a bug in the call as :meth:`send` does."""
        return await self.core.publish(robot_id, message, timeout=timeout)

    async def send_many(
        self,
        robots: Iterable[str] | Selection,
        message: str,
        *,
        timeout: float = 5.0,
        on_outcome: Callable[[RobotOutcome], None] | None = None,
    ) -> FanoutResult:
        """Send ``message`` to many robots (robot ids, or :meth:`selection`), each robot's
        message going the way :meth:`send`'s does (batches per owner carrying the message
        once, each robot's order kept), and get one outcome per robot (``delivered``,
        ``not_connected``, ``instance_unreachable``, ``rejected``, ``timeout``, ``error``).
        ``on_outcome`` sees each as it is known; ``timeout``: per robot, as for :meth:`send`."""
        return await self.core.send_many(robots, message, timeout=timeout, on_outcome=on_outcome)

    def selection(self, robot_glob: str | None = None, instance: str | None = None) -> Selection:
        """The registry's robots matching ``robot_glob`` (every robot when None) and, when
        given, held by ``instance``, read as :meth:`send_many` goes (for ``send_many``).
        Raises ``TypeError`` for a filter that is not a ``str`` or None, and
        :class:`~wsctl.errors.FleetNotRunning` before :meth:`start` or after :meth:`stop`."""
        glob = check_filter(robot_glob, "robot_glob")
        owner = check_filter(instance, "instance")
        return registry_selection(self.core.store, glob, owner)

    # ------------------------------------------------------------------ HTTP
    async def healthz(self, request: Request) -> Response:
        """200 ``ok``; 503 ``draining`` or ``redis unavailable`` (:meth:`FleetCore.health`)."""
        status, text = health_answer(*await self.core.health())
        return PlainTextResponse(text, status_code=status)

    async def metrics_endpoint(self, request: Request) -> Response:
        """A Starlette endpoint serving the Prometheus text of :meth:`FleetCore.metrics_answer`
        (``wsctl_gateway_redis_up`` from the same probe as ``/healthz``)."""
        return PlainTextResponse(await self.core.metrics_answer())

    async def _websocket_endpoint(self, websocket: WebSocket) -> None:
        await self.serve(websocket, str(websocket.path_params.get("robot_id", "")))

    def routes(self, websocket_path: str | None = None) -> list[BaseRoute]:
        """``/healthz`` and ``/metrics`` to mount, plus the robot endpoint when
        ``websocket_path`` is given (e.g. ``"/ws/{robot_id:path}"``)."""
        routes: list[BaseRoute] = [
            Route(HEALTH_PATH, self.healthz, methods=["GET"]),
            Route(METRICS_PATH, self.metrics_endpoint, methods=["GET"]),
        ]
        if websocket_path:
            routes.append(WebSocketRoute(websocket_path, self._websocket_endpoint))
        return routes
