"""Paced messages through a non-owner instance: p99 latency at 1,000 msg/s (target <= 10 ms).

A sandbox (embedded Redis + two `wsctl gateway` processes) and `wsctl simulate --robots N
--messages K --rate 1000 --non-owner-share 1`: every message is injected at the instance that
does not hold its robot, which forwards it (batched path), at 1,000 messages per second.
Latency is from the moment a message is published to the moment its robot receives it.
Repeats --repeat times (default 3) and prints each run and the median p99.

With --cluster the sandbox's Redis is a real 3-master, 3-replica Redis Cluster.

Run: python bench/paced_latency.py [--robots 1000] [--messages 5] [--rate 1000] [--repeat 3]
     [--cluster]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--robots", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=5)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        default=30.0,
        help="the gateways' heartbeat interval (30 s: wsctl's default)",
    )
    parser.add_argument("--share", type=float, default=1.0, help="share through a non-owner")
    parser.add_argument("--cluster", action="store_true", help="a 3+3 Redis Cluster")
    args = parser.parse_args()

    from wsctl.sandbox.local import Sandbox

    env = {k: v for k, v in os.environ.items() if not k.startswith(("WSCTL_", "REDIS_"))}
    if "WSCTL_EVENT_LOOP" in os.environ:
        env["WSCTL_EVENT_LOOP"] = os.environ["WSCTL_EVENT_LOOP"]
    p99s: list[float] = []
    with Sandbox(
        gateways=2, heartbeat_interval=args.heartbeat_interval, timeout=90.0, cluster=args.cluster
    ) as box:
        env.update(box.env)
        for run in range(args.repeat):
            cmd = [sys.executable, "-m", "wsctl", "simulate", "--robots", str(args.robots)]
            cmd += ["--messages", str(args.messages), "--rate", str(args.rate)]
            cmd += ["--non-owner-share", str(args.share), "-o", "json"]
            cmd += ["--duration", str(max(5.0, args.heartbeat_interval + 5))]
            for url in box.gateway_urls:
                cmd += ["--gateway", url]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
            report = json.loads(done.stdout)
            deliver = next(p for p in report["phases"] if p["name"] == "deliver")["metrics"]
            latency = report["latency_ms"]
            p99s.append(float(latency["p99"]))
            print(
                f"run {run + 1}: {deliver['delivered']}/{deliver['sent']} delivered, "
                f"{deliver['via_other']} through a non-owner, {deliver['out_of_order']} out of "
                f"order, {deliver['duplicated']} duplicated; latency p50 {latency['p50']} ms, "
                f"p99 {latency['p99']} ms, max {latency['max']} ms",
                flush=True,
            )
    median = statistics.median(p99s)
    print(
        f"paced {args.rate:g} msg/s through a non-owner"
        f"{' (3+3 cluster)' if args.cluster else ''}: median p99 {median:.2f} ms "
        f"(target <= 10 ms): {'PASS' if median <= 10 else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
