"""examples/fastapi_gateway.py plus one test-only endpoint: app code that sends many distinct
messages through ``fleet.send`` / ``fleet.publish`` at once, as a user's business code would
(``asyncio.gather`` in chunks of ``in_flight``), and reports the outcomes it got back."""

from __future__ import annotations

import asyncio
import collections
import contextvars
import json
import os
import time
from typing import Any

from examples.fastapi_gateway import app, fleet
from wsctl.system import raise_fd_limit

__all__ = ["FAIL_SEND", "app"]

raise_fd_limit()  # a stress run puts 1,000 robots on each instance

# A message the send-wrapping middleware fails to send.
FAIL_SEND = "make the middleware fail"
_SPAN: contextvars.ContextVar[str | None] = contextvars.ContextVar("span", default=None)


class _WrappedSend:
    """An ASGI middleware as apps use them (tracing, timeouts): each websocket ``send`` runs
    with a context value set and reset around it and inside ``asyncio.timeout`` (which needs
    a current task), and raises for the text :data:`FAIL_SEND` (a middleware that fails). On
    with ``WSCTL_TEST_WRAP_SEND=1``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def wrapped(message: Any) -> None:
            token = _SPAN.set(message["type"])
            try:
                if message.get("text") == FAIL_SEND:
                    raise RuntimeError("the middleware's send failed")
                async with asyncio.timeout(30):
                    await send(message)
            finally:
                _SPAN.reset(token)

        await self.app(scope, receive, wrapped if scope["type"] == "websocket" else send)


if os.environ.get("WSCTL_TEST_WRAP_SEND") == "1":
    app.add_middleware(_WrappedSend)


@app.post("/test/blast")
async def blast(body: dict[str, Any]) -> dict[str, Any]:
    """Send ``count`` messages numbered from ``first`` (default 0), message ``n`` to
    ``robots[n % len(robots)]``, each carrying ``{"n": n, "t": send time}`` (and ``pad`` characters when given), ``in_flight`` at once (``mode`` ``send`` or ``publish``);
    answer the outcome counts, a few reasons, the time taken and the outbox's batches (and,
    with ``detail``, each message's outcome and reason)."""
    robots: list[str] = body["robots"]
    count = int(body["count"])
    first = int(body.get("first", 0))
    in_flight = int(body["in_flight"])
    timeout = float(body.get("timeout", 5.0))
    call = fleet.publish if body.get("mode") == "publish" else fleet.send
    outcomes: collections.Counter[str] = collections.Counter()
    reasons: dict[str, str] = {}
    batches_before = fleet.core.outbox.batches_sent

    detail: list[tuple[int, str, str | None]] = []
    pad = {"pad": "x" * int(body["pad"])} if body.get("pad") else {}

    async def one(n: int) -> None:
        text = json.dumps({"n": n, "t": time.time(), **pad})
        result = await call(robots[n % len(robots)], text, timeout=timeout)
        outcomes[result.outcome.value] += 1
        if body.get("detail"):
            detail.append((n, result.outcome.value, result.reason))
        if result.reason and result.outcome.value not in reasons:
            reasons[result.outcome.value] = result.reason

    started = time.perf_counter()
    end = first + count
    for start in range(first, end, in_flight):
        await asyncio.gather(*(one(n) for n in range(start, min(end, start + in_flight))))
    return {
        "outcomes": dict(outcomes),
        "reasons": reasons,
        "seconds": time.perf_counter() - started,
        "batches": fleet.core.outbox.batches_sent - batches_before,
        "detail": detail,  # (n, outcome, reason) per message, when asked for
    }


@app.post("/test/send_many")
async def send_many(body: dict[str, Any]) -> dict[str, Any]:
    """``fleet.send_many`` from app code: to ``robots`` (ids) or to the registry's robots
    matching ``glob``; answers each robot's outcome and reason, and the summary."""
    if "glob" in body:
        robots: Any = fleet.selection(body["glob"])
    else:
        robots = body["robots"]
    seen: list[str] = []
    result = await fleet.send_many(
        robots,
        body["message"],
        timeout=float(body.get("timeout", 5.0)),
        on_outcome=lambda outcome: seen.append(outcome.robot_id),
    )
    return {
        "outcomes": {o.robot_id: o.outcome.value for o in result.outcomes},
        "reasons": {o.robot_id: o.reason for o in result.outcomes if o.reason},
        "summary": result.summary.as_dict(),
        "streamed": len(seen),
    }


@app.post("/test/fill")
async def fill(body: dict[str, Any]) -> dict[str, Any]:
    """``count`` messages of ``size`` characters to one ``robot``, ``in_flight`` at once, through
    ``fleet.publish`` (``mode`` ``publish``, the default) or ``fleet.send``: the outcome
    counts, a reason per outcome and the seconds it took."""
    call = fleet.send if body.get("mode") == "send" else fleet.publish
    text = "z" * int(body["size"])
    timeout = float(body.get("timeout", 5.0))
    count, chunk = int(body["count"]), int(body.get("in_flight", 20))
    started = time.perf_counter()
    results = []
    for start in range(0, count, chunk):  # in chunks: Redis's pub/sub buffer limit is 8 MiB
        results += await asyncio.gather(
            *(call(body["robot"], text, timeout=timeout) for _ in range(min(chunk, count - start)))
        )
    return {
        "outcomes": dict(collections.Counter(r.outcome.value for r in results)),
        "reasons": {r.outcome.value: r.reason for r in results if r.reason},
        "seconds": time.perf_counter() - started,
    }


@app.post("/test/interleave")
async def interleave(body: dict[str, Any]) -> dict[str, Any]:
    """Per robot and round, ``send(n)``, ``send_many([robot], n + 1)`` and ``send(n + 2)``,
    started in that order, every call of every robot and round at once (one gather); numbered
    from ``first``. Answers the outcome counts and a few reasons."""
    robots: list[str] = body["robots"]
    timeout = float(body.get("timeout", 5.0))
    n = int(body.get("first", 0))
    calls: list[Any] = []
    for _ in range(int(body["rounds"])):
        for robot_id in robots:
            calls.append(fleet.send(robot_id, json.dumps({"n": n}), timeout=timeout))
            calls.append(fleet.send_many([robot_id], json.dumps({"n": n + 1}), timeout=timeout))
            calls.append(fleet.send(robot_id, json.dumps({"n": n + 2}), timeout=timeout))
            n += 3
    outcomes: collections.Counter[str] = collections.Counter()
    reasons: dict[str, str] = {}
    for result in await asyncio.gather(*calls):
        found = result.outcomes if hasattr(result, "outcomes") else [result]
        for one in found:
            outcomes[one.outcome.value] += 1
            if one.reason:
                reasons.setdefault(one.outcome.value, one.reason)
    return {"outcomes": dict(outcomes), "reasons": reasons, "sent": n}
