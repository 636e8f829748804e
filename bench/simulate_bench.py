"""simulate at scale in the sandbox, and its connect phase versus a bare websockets swarm.

1. `wsctl simulate --robots N` (default 10,000) against a sandbox on this machine (embedded
   Redis + two gateway processes): every check must pass. Prints connect rate, delivery
   throughput, p99 latency and peak RSS per robot of the simulating process.
2. Connect phase versus the floor: in the same run and against the same gateways, a minimal
   `websockets` client swarm that only connects (no registry checks). Both connect all robots
   at once (--ramp 0). Target ratio <= 1.3.

Run: python bench/simulate_bench.py [--robots 10000] [--processes 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

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
    args = parser.parse_args()

    from wsctl.sandbox import Sandbox

    with Sandbox(gateways=2, heartbeat_interval=2.0, timeout=30.0) as box:
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
            "0",
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


if __name__ == "__main__":
    main()
