"""The robot swarm of bench/app_send_bench.py in Python, for runs without Node (the smoke test,
``--client python``): the protocol and the counting of bench/socketio/swarm.js, kind ``ws``
only. Slower than the Node swarm: for small runs, not for figures.

Usage: python -m bench.app_send_swarm N URL1 URL2 ...
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect

from wsctl.system import raise_fd_limit

CONNECT_BATCH = 200
CONNECT_TIMEOUT = 30.0


@dataclass
class Tag:
    """What the robots received of one tag's messages."""

    first: float
    last: float
    seen: set[int] = field(default_factory=set)
    duplicated: int = 0
    latencies: list[float] = field(default_factory=list)
    by_url: list[int] = field(default_factory=list)  # distinct messages per URL's robots


tags: dict[str, Tag] = {}
urls: list[str] = []


def receive(payload: str, where: int) -> None:
    """Count one message (``{"m": tag, "n": k, "t": epoch ms}``) for its tag."""
    at = time.time() * 1000.0
    try:
        msg = json.loads(payload)
        tag, k, sent = str(msg["m"]), int(msg["n"]), float(msg["t"])
    except (ValueError, KeyError, TypeError):
        return
    t = tags.setdefault(tag, Tag(first=at, last=at, by_url=[0] * len(urls)))
    if k in t.seen:
        t.duplicated += 1
        return
    t.seen.add(k)
    t.by_url[where] += 1
    t.last = at
    t.latencies.append(at - sent)


async def robot(where: int, robot_id: str, ready: asyncio.Future[ClientConnection]) -> None:
    """One robot: connect, hand its connection over, count every frame until closed."""
    try:
        ws = await connect(
            f"{urls[where]}/ws/{robot_id}", ping_interval=None, open_timeout=CONNECT_TIMEOUT
        )
    except Exception as exc:  # reported by the caller, which exits 1
        ready.set_exception(exc)
        return
    ready.set_result(ws)
    with contextlib.suppress(Exception):
        async for frame in ws:
            receive(str(frame), where)


async def report(cmd: dict[str, object]) -> dict[str, object]:
    """Wait for ``total`` messages of the tag, ``idle_ms`` of quiet or ``deadline_ms``."""
    name = str(cmd["report"])
    total, idle, deadline = (float(str(cmd[k])) for k in ("total", "idle_ms", "deadline_ms"))
    started = time.time() * 1000.0
    while True:
        t = tags.get(name)
        at = time.time() * 1000.0
        got = len(t.seen) if t else 0
        quiet = at - max(started, t.last if t else started)
        if got >= total or quiet >= idle or at - started >= deadline:
            break
        await asyncio.sleep(0.02)
    tags.pop(name, None)
    lat = sorted(t.latencies) if t else []

    def pct(p: float) -> float | None:
        return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] if lat else None

    return {
        "tag": name,
        "delivered": got,
        "duplicated": t.duplicated if t else 0,
        "by_url": t.by_url if t else [0] * len(urls),
        "first_recv_ms": t.first if t else None,
        "last_recv_ms": t.last if t else None,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "max_ms": lat[-1] if lat else None,
    }


async def main(n: int, targets: list[str]) -> int:
    raise_fd_limit()
    urls.extend(targets)
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    conns: list[ClientConnection] = []
    try:
        for start in range(0, n, CONNECT_BATCH):
            futures = []
            for i in range(start, min(n, start + CONNECT_BATCH)):
                fut: asyncio.Future[ClientConnection] = loop.create_future()
                tasks.append(asyncio.create_task(robot(i % len(urls), f"robot-{i}", fut)))
                futures.append(fut)
            conns += await asyncio.wait_for(asyncio.gather(*futures), CONNECT_TIMEOUT)
        print(json.dumps({"ready": len(conns)}), flush=True)
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line.strip():
                return 0
            print(json.dumps(await report(json.loads(line))), flush=True)
    except Exception as exc:  # one line for the bench, which shows it
        print(f"swarm: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(int(sys.argv[1]), sys.argv[2:])))
