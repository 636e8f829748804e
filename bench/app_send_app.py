"""Bench-only app: examples/fastapi_gateway.py (unchanged) plus one route that makes the app's
own code on this instance send a blast of messages, as a user's business code would.

``POST /bench/blast`` with a JSON body::

    {"tag": "run1-send-1000", "robots": ["robot-0", ...], "count": 20000,
     "inflight": 1000, "api": "send" | "publish", "rate": 0, "timeout": 5.0,
     "deadline": 300.0}

Message ``k`` goes to ``robots[k % len(robots)]`` and is distinct: ``{"m": tag, "n": k, "t":
epoch ms when its send began}``. ``rate`` 0: at most ``inflight`` sends in flight at any time
(a pool of that many coroutines taking the next message as each send returns, what a
semaphore around ``asyncio.gather`` gives); ``rate`` > 0: open loop, message ``k`` starts at
``k / rate`` seconds whatever the earlier ones are doing. ``api`` ``send`` is the acknowledged
``await fleet.send(robot_id, text, timeout=...)``, ``publish`` the fire-and-forget
``await fleet.publish(robot_id, text)`` (answered ``{"available": false}`` while the fleet has
no such method). ``inflight`` 1 is one caller awaiting each send before the next (a user's
HTTP route calling ``fleet.send`` in sequence). The answer counts outcomes and reasons, how many
messages were addressed to robots not on this instance (forwarded), and the acknowledgement
latency (``ack_p50_ms``/``ack_p99_ms``: from a send's start until its ``await`` returned).
Everything is bounded by ``deadline`` seconds.

Run by bench/app_send_bench.py as ``uvicorn bench.app_send_app:app`` from the repository root.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from examples.fastapi_gateway import app, fleet
from wsctl.gateway.core import SendOutcome, SendResult
from wsctl.system import raise_fd_limit

__all__ = ["app", "fleet"]

raise_fd_limit()  # 1,000+ robot sockets on one instance
# bench/app_send_bench.py --reply-every MS: the owners' reply hold (REPLY_EVERY; 0: none)
_REPLY_EVERY_MS = os.environ.get("WSCTL_BENCH_REPLY_EVERY_MS")
if _REPLY_EVERY_MS is not None:
    fleet.core.batches.replies.every = float(_REPLY_EVERY_MS) / 1000
# bench/app_send_bench.py --early-items N: the outbox's early hand-over threshold (0: none)
_EARLY_ITEMS = os.environ.get("WSCTL_BENCH_EARLY_ITEMS")
if _EARLY_ITEMS is not None:
    fleet.core.outbox.early_items = int(_EARLY_ITEMS)
# bench/app_send_bench.py --no-publish-lanes: every PUBLISH through the client's pool
if os.environ.get("WSCTL_BENCH_PUBLISH_LANES") == "0":
    fleet.core.config.publish_lanes = False

# Outcomes that are not a message handed over; anything else (a fire-and-forget outcome this
# build does not know yet included) counts as handed over.
FAILED = frozenset(
    {
        SendOutcome.NOT_CONNECTED.value,
        SendOutcome.INSTANCE_UNREACHABLE.value,
        SendOutcome.REJECTED.value,
        SendOutcome.ERROR.value,
        SendOutcome.TIMEOUT.value,
    }
)
MAX_REASONS = 20  # distinct reasons kept; the rest are counted as "other"


def _sender(api: str, timeout: float) -> Callable[[str, str], Awaitable[SendResult]] | None:
    if api == "send":
        return lambda robot_id, text: fleet.send(robot_id, text, timeout=timeout)
    publish = getattr(fleet, "publish", None)
    return publish if callable(publish) else None


@app.post("/bench/blast")
async def blast(spec: dict[str, Any]) -> dict[str, Any]:
    """Send ``count`` distinct messages from this instance's app code (see the module doc)."""
    tag = str(spec["tag"])
    robots = [str(r) for r in spec["robots"]]
    count = int(spec["count"])
    inflight = max(1, int(spec.get("inflight", 1000)))
    rate = float(spec.get("rate", 0.0))
    deadline = float(spec.get("deadline", 300.0))
    call = _sender(str(spec.get("api", "send")), float(spec.get("timeout", 5.0)))
    if call is None:
        return {"available": False}
    forwarded = sum(1 for k in range(count) if fleet.local.get(robots[k % len(robots)]) is None)
    outcomes: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    first_send_ms: list[float] = []
    acks: list[float] = []  # ms from a send's start until its await returned

    async def one(k: int) -> None:
        now_ms = time.time() * 1000.0
        if not first_send_ms:
            first_send_ms.append(now_ms)
        text = json.dumps({"m": tag, "n": k, "t": now_ms}, separators=(",", ":"))
        began = time.perf_counter()
        try:
            result = await call(robots[k % len(robots)], text)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the API raised: counted as an outcome of its own
            outcome, reason = "raised", f"{type(exc).__name__}: {exc}"
        else:
            outcome, reason = result.outcome.value, result.reason or ""
            acks.append((time.perf_counter() - began) * 1000.0)
        outcomes[outcome] += 1
        if outcome in FAILED or outcome == "raised":
            key = f"{outcome}: {reason[:100]}"
            if key in reasons or len(reasons) < MAX_REASONS:
                reasons[key] += 1
            else:
                reasons[f"{outcome}: other"] += 1

    async def pool() -> None:
        pending = iter(range(count))

        async def worker() -> None:
            for k in pending:
                await one(k)

        await asyncio.gather(*(worker() for _ in range(min(inflight, count))))

    async def paced() -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks: set[asyncio.Task[None]] = set()
        try:
            for k in range(count):
                delay = start + k / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(one(k))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    redis_errors = fleet.metrics.redis_errors
    started = time.perf_counter()
    finished = True
    try:
        await asyncio.wait_for(paced() if rate > 0 else pool(), deadline)
    except TimeoutError:
        finished = False
    if sum(outcomes.values()) < count:  # the deadline passed first
        outcomes["unfinished"] = count - sum(outcomes.values())
    acks.sort()
    return {
        "available": True,
        "finished": finished,
        "first_send_ms": first_send_ms[0] if first_send_ms else None,
        "seconds": time.perf_counter() - started,
        "outcomes": dict(outcomes),
        "reasons": dict(reasons),
        "forwarded": forwarded,
        "ack_p50_ms": acks[len(acks) // 2] if acks else None,
        "ack_p99_ms": acks[min(len(acks) - 1, int(len(acks) * 0.99))] if acks else None,
        # what the instance itself made of Redis during the blast (a busy connection pool
        # taken for "Redis down" shows here): failures counted, and /metrics' redis_up after
        "redis_errors": fleet.metrics.redis_errors - redis_errors,
        "redis_ok_after": getattr(fleet.core, "redis_ok", None),
    }


# bench/app_send_bench.py --profile DIR: this instance profiles each mode (cProfile, the event
# loop's thread) between POST /bench/profile {"tag": ..., "on": true} and {"on": false}, and
# writes DIR/{instance}-{tag}.prof.
PROFILE_DIR = os.environ.get("WSCTL_BENCH_PROFILE")
_profiler: list[cProfile.Profile] = []


@app.post("/bench/profile")
async def profile(spec: dict[str, Any]) -> dict[str, Any]:
    """Start or stop profiling this instance (only with WSCTL_BENCH_PROFILE set)."""
    if not PROFILE_DIR:
        return {"available": False}
    if spec.get("on"):
        if not _profiler:
            _profiler.append(cProfile.Profile())
            _profiler[0].enable()
        return {"available": True}
    if _profiler:
        prof = _profiler.pop()
        prof.disable()
        path = os.path.join(PROFILE_DIR, f"{fleet.instance_id}-{spec.get('tag', 'mode')}.prof")
        prof.dump_stats(path)
        return {"available": True, "path": path}
    return {"available": True}
