"""simulate at scale in the sandbox, and its connect phase versus a bare websockets swarm.

1. `wsctl simulate --robots N` (default 10,000) against a sandbox on this machine (embedded
   Redis + two gateway processes): every check must pass. Prints connect rate, delivery
   throughput, p99 latency and peak RSS per robot of the simulating process.
2. Connect phase versus the floor: in the same run and against the same gateways, a minimal
   `websockets` client swarm that only connects (no registry checks). Both connect all robots
   at once (--ramp 0). Target ratio <= 1.3.

3. With --compare-events: the same run against gateways with the event log on and off
   (`wsctl gateway --no-events`), alternating, --repeat times each; prints the gateways' CPU
   seconds (user+system of both gateway processes over the run) and the phases' times, with
   the median ratio on/off. Target: event writing costs gateways < 5%.

Run: python bench/simulate_bench.py [--robots 10000] [--processes 1]
     python bench/simulate_bench.py --compare-events [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

FLOOR = r"""
import asyncio, sys, time, resource
from websockets.asyncio.client import connect
urls = sys.argv[2:]
n = int(sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(65536, hard), hard))
async def main():
    started = time.perf_counter()
    conns = await asyncio.gather(*(
        connect(f"{urls[i % len(urls)]}/ws/floor-{i}", compression=None, ping_interval=None,
                open_timeout=60)
        for i in range(n)))
    elapsed = time.perf_counter() - started
    await asyncio.gather(*(c.close() for c in conns))
    print(elapsed)
asyncio.run(main())
"""

RSS = r"""
import resource, sys
from wsctl.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
else:
    code = 0
sys.stderr.write("maxrss_kb=%d\n" % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a running process (Linux /proc)."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--robots", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--messages", type=int, default=1)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="deliver-phase pacing (0: burst, max throughput)"
    )
    parser.add_argument(
        "--compare-events", action="store_true", help="event log on vs off (see 3. above)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="with --compare-events")
    parser.add_argument(
        "--ramp", type=float, default=0.0, help="connects per second (0: all at once)"
    )
    args = parser.parse_args()
    if args.compare_events:
        compare_events(args)
        return
    run_once(args, events=True, floor=True)


def event_cpu_per_event(count: int = 20_000) -> float:
    """CPU seconds one gateway process spends per event (emit, pack, write, parse replies),
    measured in this process against a real redis-server: the cost the A/B runs estimate."""
    import asyncio

    from wsctl.config import load_settings
    from wsctl.gateway.events import EventSink
    from wsctl.redis.factory import connect, target_from_settings
    from wsctl.registry.keys import Keyspace
    from wsctl.sandbox.redis_servers import RedisServer

    async def measure(url: str) -> float:
        target = target_from_settings(load_settings(env={"WSCTL_REDIS_URL": url}))
        async with connect(target) as client:
            sink = EventSink(Keyspace(), "bench-gw")
            sink._client = client  # flushed here, not by the background task
            await sink.flush()  # warm-up: connection, index
            started = time.process_time()
            for i in range(count):
                sink.emit("connected", f"robot-{i}", f"{i:032x}")
                if sink.pending >= 2000:
                    await sink.flush()
            while sink.pending:
                await sink.flush()
            cpu = time.process_time() - started
            assert sink.written == count and sink.dropped == 0, (sink.written, sink.dropped)
            return cpu / count

    with RedisServer() as server:
        return asyncio.run(measure(server.url))


def compare_events(args: Any) -> None:
    runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    for n in range(args.repeat):
        for events in (n % 2 == 0, n % 2 != 0):  # alternate which goes first
            print(f"run {n + 1}/{args.repeat}, events {'on' if events else 'off'}:")
            result = run_once(args, events=events, floor=False)
            if result["ok"]:
                runs[events].append(result)
            else:
                print("  (a failed run is not compared: the machine was too busy)")
    if not runs[True] or not runs[False]:
        raise SystemExit("no passing run to compare")
    for events in (True, False):
        values = ", ".join(f"{r['gateway_cpu_s']:.2f}" for r in runs[events])
        print(f"gateway CPU s per run, events {'on ' if events else 'off'}: {values}")

    def median(events: bool, key: str) -> float:
        return statistics.median(r[key] for r in runs[events])

    for key, label in (
        ("gateway_cpu_s", "gateway CPU s"),
        ("connect_s", "connect phase s"),
        ("deliver_s", "deliver phase s"),
        ("total_s", "whole run s"),
    ):
        on, off = median(True, key), median(False, key)
        print(
            f"{label:<16} events on {on:8.2f}  off {off:8.2f}  ratio {on / off if off else 0:.3f}"
        )
    on, off = median(True, "gateway_cpu_s"), median(False, "gateway_cpu_s")
    cost = (on / off - 1) * 100 if off else 0.0
    written = median(True, "events_written")
    print(
        f"event writing costs the gateways {cost:+.1f}% CPU ({written:.0f} events written per "
        f"run, medians of the passing runs; target < 5%: {'PASS' if cost < 5 else 'FAIL'})"
    )
    per_event = event_cpu_per_event()
    share = per_event * written / off * 100 if off else 0.0
    print(
        f"measured directly: {per_event * 1e6:.1f} us of CPU per event, x {written:.0f} events "
        f"= {per_event * written:.2f} s = {share:.1f}% of the gateways' {off:.2f} CPU s without "
        f"events (target < 5%: {'PASS' if share < 5 else 'FAIL'})"
    )


def events_written(urls: list[str]) -> float:
    import urllib.request

    total = 0.0
    for url in urls:
        http = url.replace("ws://", "http://") + "/metrics"
        with urllib.request.urlopen(http, timeout=5) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith("wsctl_gateway_events_written_total"):
                    total += float(line.rsplit(" ", 1)[1])
    return total


def run_once(args: Any, *, events: bool, floor: bool) -> dict[str, float]:
    from wsctl.sandbox.local import Sandbox

    with Sandbox(gateways=2, heartbeat_interval=2.0, timeout=30.0, events=events) as box:
        cpu_before = sum(cpu_seconds(g.pid) for g in box.gateway_procs)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WSCTL_", "REDIS_"))}
        env.update(box.env)
        cmd = [
            sys.executable,
            "-c",
            RSS,
            "simulate",
            "--robots",
            str(args.robots),
            "--ramp",
            str(args.ramp),
            "--messages",
            str(args.messages),
            "--processes",
            str(args.processes),
            "--rate",
            str(args.rate),
            "--duration",
            "8",
            "-o",
            "json",
        ]
        for url in box.gateway_urls:
            cmd += ["--gateway", url]
        started = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        total = time.perf_counter() - started
        rss_kb = int(done.stderr.rsplit("maxrss_kb=", 1)[-1].split()[0])
        report = json.loads(done.stdout)
        phases = {p["name"]: p for p in report["phases"]}
        connect = phases["connect"]
        deliver = phases.get("deliver", {"metrics": {}})
        for p in report["phases"]:
            print(
                f"  {p['name']:<10} {'ok  ' if p['ok'] else 'FAIL'} {p['seconds']:7.2f}s  {p['detail']}"
            )
        print(
            f"simulate {args.robots} robots: {'PASS' if report['ok'] else 'FAIL'} in {total:.1f}s; "
            f"connect {connect['metrics'].get('rate_per_s')}/s, "
            f"delivery {deliver['metrics'].get('throughput_per_s')}/s, "
            f"p99 {report['latency_ms'].get('p99')} ms, "
            f"peak RSS {rss_kb / 1024:.0f} MiB = {rss_kb / args.robots:.1f} KiB per robot"
            + (" (coordinator only; robots in workers)" if args.processes > 1 else "")
        )
        time.sleep(0.5)  # the last events of the run reach Redis (batches every 0.25 s)
        result = {
            "ok": float(bool(report["ok"])),
            "gateway_cpu_s": sum(cpu_seconds(g.pid) for g in box.gateway_procs) - cpu_before,
            "connect_s": connect["seconds"],
            "deliver_s": deliver.get("seconds", 0.0),
            "total_s": total,
            "events_written": events_written(box.gateway_urls) if events else 0.0,
        }
        print(
            f"  gateways used {result['gateway_cpu_s']:.2f} CPU s"
            + (f", wrote {result['events_written']:.0f} events" if events else " (no events)")
        )
        if not floor:
            return result
        floor_done = subprocess.run(
            [sys.executable, "-c", FLOOR, str(args.robots), *box.gateway_urls],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        floor = float(floor_done.stdout.strip())
        ours = connect["seconds"]
        print(
            f"connect phase: wsctl {ours:.2f}s vs bare websockets swarm {floor:.2f}s: "
            f"ratio {ours / floor:.2f} (target <= 1.3)"
        )
        return result


if __name__ == "__main__":
    main()
