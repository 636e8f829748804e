"""`wsctl history ROBOT` over 1M stored events, and what the event log costs in Redis memory.

Fills a fresh redis-server with N events (default 1,000,000) the way gateways write them
(each XADDed to its instance's stream and to the robot's stream; 4 instances, R robots), then:

1. times `wsctl history ROBOT -o json` as a process (start-up included) for a few robots:
   target < 2 s on this machine; and, as the floor, one bare XRANGE of the robot's stream;
2. for comparison, the same robot's events found by scanning every instance stream
   (`wsctl events --robot ROBOT*`, which cannot use the robot's stream because of the glob);
3. MEMORY USAGE of the instance streams and of the robot streams, per million events.

Run: python bench/history_bench.py [--events 1000000] [--robots 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time


async def fill(url: str, events: int, robots: int, instances: int) -> float:
    from wsctl.config import load_settings
    from wsctl.eventlog.model import Event, EventLimits, event_commands
    from wsctl.redis.factory import connect, target_from_settings
    from wsctl.redis.internals import bulk_execute
    from wsctl.registry.keys import Keyspace

    keys = Keyspace()
    # every event kept: the instance streams hold all N, each robot stream all of its own
    limits = EventLimits(instance_maxlen=events, robot_maxlen=max(200, 2 * events // robots))
    names = ["connected", "disconnected", "superseded", "reregistered"]
    started = time.perf_counter()
    async with connect(target_from_settings(load_settings(env={"WSCTL_REDIS_URL": url}))) as c:
        chunk = 5000
        for start in range(0, events, chunk):
            # as the gateways write them: each instance's batch in one bulk pipeline
            for n in range(instances):
                writer = f"gw-{n}"
                batch = [
                    Event(
                        names[i % 4],
                        robot_id=f"robot-{i % robots}",
                        instance_id=writer,
                        conn_id=f"{i:032x}",
                        detail={"code": 1000, "session_s": 12.5} if i % 4 == 1 else {},
                    )
                    for i in range(start + n, min(events, start + chunk), instances)
                ]
                calls, _ = event_commands(keys, writer, batch, limits)
                await bulk_execute(c, calls)
        for n in range(instances):
            await c.sadd(keys.events_index, keys.events_key(f"gw-{n}"))
    return time.perf_counter() - started


def memory(url: str, robots: int, instances: int) -> tuple[int, int]:
    import redis

    from wsctl.registry.keys import Keyspace

    keys = Keyspace()
    client = redis.Redis.from_url(url)
    inst = sum(
        int(client.memory_usage(keys.events_key(f"gw-{n}"), samples=0) or 0)
        for n in range(instances)
    )
    pipe = client.pipeline(transaction=False)
    for r in range(robots):
        pipe.memory_usage(keys.robot_events_key(f"robot-{r}"), samples=0)
    per_robot = sum(int(v or 0) for v in pipe.execute())
    client.close()
    return inst, per_robot


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{cmd} failed: {done.stderr.strip()}")
    return elapsed, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--robots", type=int, default=10_000)
    parser.add_argument("--instances", type=int, default=4)
    args = parser.parse_args()

    import redis

    from wsctl.registry.keys import Keyspace
    from wsctl.sandbox.redis_servers import RedisServer

    with RedisServer() as server:
        filled = asyncio.run(fill(server.url, args.events, args.robots, args.instances))
        print(f"stored {args.events} events ({args.robots} robots) in {filled:.1f}s")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WSCTL_", "REDIS_"))}
        env["WSCTL_REDIS_URL"] = server.url
        wsctl = [sys.executable, "-m", "wsctl"]
        client = redis.Redis.from_url(server.url)
        key = Keyspace().robot_events_key("robot-4242")
        floor_started = time.perf_counter()
        entries = client.xrange(key)
        floor = time.perf_counter() - floor_started
        client.close()
        worst = 0.0
        for robot in ("robot-0", "robot-4242", f"robot-{args.robots - 1}"):
            elapsed, out = timed([*wsctl, "history", robot, "-o", "jsonl"], env)
            count = len(out.splitlines())
            worst = max(worst, elapsed)
            print(f"  wsctl history {robot}: {count} events in {elapsed:.2f}s")
        print(
            f"history over {args.events} stored events: worst {worst:.2f}s "
            f"(target < 2 s: {'PASS' if worst < 2 else 'FAIL'}); "
            f"bare XRANGE of the robot's stream ({len(entries)} entries): {floor * 1000:.1f} ms"
        )
        scan, out = timed(
            [*wsctl, "events", "--robot", "robot-4242*", "--limit", "0", "-o", "jsonl"], env
        )
        print(
            f"for comparison, scanning every instance stream for it (events --robot GLOB): "
            f"{scan:.2f}s for {len(out.splitlines())} events"
        )
        inst, per_robot = memory(server.url, args.robots, args.instances)
        scale = 1_000_000 / args.events
        print(
            f"memory per million events: instance streams {inst * scale / 2**20:.0f} MiB, "
            f"robot streams {per_robot * scale / 2**20:.0f} MiB "
            f"({args.events // args.robots} events per robot), "
            f"together {(inst + per_robot) * scale / 2**20:.0f} MiB"
        )


if __name__ == "__main__":
    main()
