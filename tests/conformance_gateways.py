"""Gateways broken on purpose, for the conformance kit's tests: a ``wsctl gateway`` on
127.0.0.1 (in this process, real sockets, real Redis) with exactly one fault, each the kind
of mistake a gateway written from docs/protocol.md could make.

* ``no_fencing``: deletes a robot's entry on disconnect with a plain ``DEL`` (the original
  design's mistake), whoever the entry names by then;
* ``resurrect``: its heartbeat also touches sessions that closed (two intervals after the
  close, once each), writing their entries again;
* ``reply_without_id``: its replies lack the request's ``id``;
* ``no_hop_limit``: forwards a send however many hops it has travelled;
* ``drain_accepts``: keeps accepting new robots while draining;
* ``closes_mid_check``: drops the connection of the robot the heartbeat check watches (a
  robot id ending ``-hb-refresh``) at the first heartbeat that would refresh its entry;
* ``holds_too_long``: holds replies 3 s, whatever a batch's ``reply_hold_ms`` allows;
* ``restamps``: holds replies as long, but stamps their ``replied_at`` when it publishes them
  (as a gateway that makes its replies at flush time would, or one whose clock is ahead);
* ``bundles_unasked``: bundles its replies to batches without ``reply_hold_ms`` too;
* ``bundle_elsewhere``: its reply bundles name another instance.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from typing import Any
from unittest import mock

from tests.fleet import running_fleet
from wsctl.gateway import sending as sending_module
from wsctl.gateway import server as server_module
from wsctl.gateway.local import LocalConn
from wsctl.gateway.routing import decide
from wsctl.gateway.server import Gateway
from wsctl.protocol.batch import BATCH_BYTES, pack_bundles
from wsctl.protocol.envelopes import encode, reply_to
from wsctl.redis.pubsub import publish
from wsctl.registry.model import format_ts, utcnow
from wsctl.registry.store import DeleteOutcome

__all__ = ["FAULTS", "broken_gateway"]

# fault -> the one conformance check that must fail because of it
FAULTS = {
    "no_fencing": "fencing.late_disconnect",
    "resurrect": "heartbeat.no_resurrect",
    "reply_without_id": "control.replies",
    "no_hop_limit": "send.hop_limit",
    "drain_accepts": "drain.refuse_new",
    "closes_mid_check": "heartbeat.refresh",
    "holds_too_long": "batch.reply_bundles",
    "restamps": "batch.reply_bundles",
    "bundles_unasked": "batch.reply_bundles",
    "bundle_elsewhere": "batch.reply_bundles",
}


def _no_fencing(gw: Gateway) -> None:
    store = gw.core.store

    async def delete_many_if(items: Any) -> list[DeleteOutcome]:
        out = []
        for robot_id, _, _ in items:
            gone = await store.client.delete(store.keys.conn_key(robot_id))
            out.append(DeleteOutcome.DELETED if gone else DeleteOutcome.GONE)
        return out

    async def delete_if(robot_id: str, conditions: Any, key_type: str = "hash") -> DeleteOutcome:
        return (await delete_many_if([(robot_id, conditions, key_type)]))[0]

    store.delete_if = delete_if  # type: ignore[method-assign]
    store.delete_many_if = delete_many_if  # type: ignore[method-assign]


def _resurrect(gw: Gateway) -> None:
    core = gw.core
    closed: list[tuple[float, LocalConn]] = []
    close_session, heartbeat_once = core.close_session, core.heartbeat_once

    async def closing(conn: LocalConn, code: int | None = None, reason: str | None = None) -> None:
        await close_session(conn, code, reason)
        closed.append((time.monotonic(), conn))

    async def beating() -> int:
        count = await heartbeat_once()
        now = time.monotonic()
        after = 2 * core.config.heartbeat_interval
        due = [c for at, c in closed if now - at >= after]
        closed[:] = [(at, c) for at, c in closed if now - at < after]
        stamp = format_ts(utcnow())
        sessions = [(c.robot_id, c.conn_id, stamp, c.registration) for c in due if c.registration]
        if sessions:
            await core.store.touch_many(sessions)
        return count

    core.close_session = closing  # type: ignore[method-assign]
    core.heartbeat_once = beating  # type: ignore[method-assign]


def _reply_without_id(gw: Gateway) -> None:
    core = gw.core

    async def answer(envelope: Any, status: Any, **kw: Any) -> None:
        if envelope.reply_to:
            data = json.loads(encode(reply_to(envelope, status, core.instance_id, **kw)))
            del data["id"]
            await publish(core.client, envelope.reply_to, json.dumps(data))

    core.control.answer = answer  # type: ignore[method-assign]  # every reply goes through it


def _closes_mid_check(gw: Gateway) -> None:
    core = gw.core
    heartbeat_once = core.heartbeat_once

    async def beating() -> int:
        # the robot's socket is dropped by the first beat that would refresh its entry, in
        # place of that refresh: the check never sees a refresh (a drop 0.1 s after the accept
        # raced the beat, and a beat that came first let the check pass)
        for conn in list(core.local):
            if conn.robot_id.endswith("-hb-refresh") and not conn.closed:
                conn.sock.ws.transport.abort()  # type: ignore[attr-defined]
                await core.close_session(conn)
        return await heartbeat_once()

    core.heartbeat_once = beating  # type: ignore[method-assign]


@dataclass
class _Admission:
    """The core's admission state, except that it never says draining."""

    core: Any

    @property
    def stopping(self) -> bool:
        return bool(self.core.stopping)

    @property
    def draining(self) -> bool:
        return False

    @property
    def retry_after(self) -> int:
        return int(self.core.retry_after)


@contextlib.contextmanager
def _module_patch(fault: str, instance_id: str) -> Iterator[None]:
    """The faults that live in module functions the gateway calls, for ``instance_id`` only
    (other gateways of the process keep the real behaviour)."""
    if fault == "no_hop_limit":

        def no_limit(**kw: Any) -> Any:
            if kw.get("self_id") == instance_id:
                kw["max_hops"] = 1_000
            return decide(**kw)

        with mock.patch.object(sending_module, "decide", no_limit):
            yield
    elif fault == "drain_accepts":
        refusal = server_module.refusal

        def admit(state: Any, *args: Any) -> Any:
            if getattr(state, "instance_id", None) == instance_id:
                state = _Admission(state)
            return refusal(state, *args)

        with mock.patch.object(server_module, "refusal", admit):
            yield
    else:
        yield


# How long the gateways that hold replies too long hold them (s): past the largest
# reply_hold_ms the protocol allows (1 s) and past the check's hold plus allowance (1.7 s)
TOO_LONG = 3.0


def _holds_too_long(gw: Gateway) -> None:
    holder = gw.core.batches.replies
    holder.every = TOO_LONG
    offer = holder.offer

    def ignoring_hold(channel: str, texts: list[str], now: float, hold: float) -> bool:
        return offer(channel, texts, now, TOO_LONG)

    holder.offer = ignoring_hold  # type: ignore[method-assign]


def _restamps(gw: Gateway) -> None:
    _holds_too_long(gw)
    router = gw.core.batches
    me = gw.core.instance_id

    def restamped(held: list[tuple[str, list[str]]]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for channel, texts in held:
            now = time.time()
            fresh = [json.dumps({**json.loads(text), "replied_at": now}) for text in texts]
            out += [(channel, text) for text in pack_bundles(me, fresh, BATCH_BYTES)]
        return out

    router._bundled = restamped  # type: ignore[method-assign]


def _bundles_unasked(gw: Gateway) -> None:
    router = gw.core.batches
    router.replies.every = 0.3
    handle = router.handle

    async def bundling(batch: Any) -> None:
        if batch.reply_to and not batch.reply_hold_ms:
            batch = replace(batch, reply_hold_ms=300)
        await handle(batch)

    router.handle = bundling  # type: ignore[method-assign]


def _bundle_elsewhere(gw: Gateway) -> None:
    router = gw.core.batches
    router.replies.every = 0.1  # bundles for sure, even on a busy machine

    def elsewhere(held: list[tuple[str, list[str]]]) -> list[tuple[str, str]]:
        return [
            (channel, text)
            for channel, texts in held
            for text in pack_bundles("elsewhere", texts, BATCH_BYTES)
        ]

    router._bundled = elsewhere  # type: ignore[method-assign]


PATCHES = {
    "holds_too_long": _holds_too_long,
    "restamps": _restamps,
    "bundles_unasked": _bundles_unasked,
    "bundle_elsewhere": _bundle_elsewhere,
    "no_fencing": _no_fencing,
    "resurrect": _resurrect,
    "reply_without_id": _reply_without_id,
    "closes_mid_check": _closes_mid_check,
}


@contextlib.asynccontextmanager
async def broken_gateway(env: dict[str, str], fault: str, **config: Any) -> AsyncIterator[Gateway]:
    """One ``wsctl gateway`` with ``fault`` (a key of :data:`FAULTS`), stopped after."""
    name = f"broken-{fault.replace('_', '-')}"
    with _module_patch(fault, name):
        async with running_fleet(env, names=(name,), **config) as gws:
            gw = gws[name]
            patch = PATCHES.get(fault)
            if patch is not None:
                patch(gw)
            yield gw
