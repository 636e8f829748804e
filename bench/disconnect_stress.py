"""Stress: ``wsctl simulate --robots N`` several times in a row, each in a fresh sandbox.

Each run starts what ``simulate`` starts by itself with default options (an embedded Redis and
two ``wsctl gateway`` processes, the same heartbeat and timeout), runs ``wsctl simulate
--robots N`` against it (connect, registration, delivery, heartbeats, then every robot closes
and every entry of the run must be gone: an entry left behind fails the run), and reads the
gateways' /metrics before tearing down: how often a delete on disconnect had to be retried and
how often a heartbeat in flight re-created a closed session's entry (each deleted again).

Run: python bench/disconnect_stress.py [--robots 10000] [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

COUNTERS = ("cleanup_retries", "closed_entries_recreated", "cleanup_abandoned")


def _metrics(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for name in (*COUNTERS, "redis_errors"):
        found = re.search(rf"^wsctl_gateway_{name}_total{{[^}}]*}} (\d+)$", text, re.M)
        out[name] = int(found.group(1)) if found else -1
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--robots", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    args = parser.parse_args()

    from wsctl.cli.sim_cmd import SANDBOX_HEARTBEAT, SANDBOX_TIMEOUT
    from wsctl.sandbox.local import Sandbox

    base = {k: v for k, v in os.environ.items() if not k.startswith(("WSCTL_", "REDIS_"))}
    passed = 0
    totals = dict.fromkeys((*COUNTERS, "redis_errors"), 0)
    for run in range(1, args.runs + 1):
        with Sandbox(
            gateways=2, heartbeat_interval=SANDBOX_HEARTBEAT, timeout=SANDBOX_TIMEOUT
        ) as box:
            env = {**base, **box.env}
            cmd = [sys.executable, "-m", "wsctl", "simulate", "--robots", str(args.robots)]
            cmd += ["-o", "json"]
            for url in box.gateway_urls:
                cmd += ["--gateway", url]
            started = time.perf_counter()
            try:
                done = subprocess.run(
                    cmd, env=env, capture_output=True, text=True, timeout=args.timeout
                )
            except subprocess.TimeoutExpired:
                print(f"run {run}: FAIL (no result within {args.timeout:g}s)", flush=True)
                continue
            elapsed = time.perf_counter() - started
            counts = dict.fromkeys(totals, 0)
            for gw in box.gateway_procs:
                for name, value in _metrics(gw.port).items():
                    counts[name] += value
        for name, value in counts.items():
            totals[name] += value
        try:
            report = json.loads(done.stdout)
        except json.JSONDecodeError:
            tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
            print(f"run {run}: FAIL exit {done.returncode} ({tail[0]})", flush=True)
            continue
        failed = [f"{p['name']}: {p['detail']}" for p in report["phases"] if not p["ok"]]
        ok = report["ok"] and done.returncode == 0
        passed += ok
        detail = "; ".join(failed) if failed else "every phase passed"
        shown = ", ".join(f"{k}={v}" for k, v in counts.items())
        print(
            f"run {run}: {'PASS' if ok else 'FAIL'} in {elapsed:.1f}s ({detail}) [{shown}]",
            flush=True,
        )
    shown = ", ".join(f"{k}={v}" for k, v in totals.items())
    print(f"simulate --robots {args.robots}: {passed}/{args.runs} runs passed [{shown}]")
    return 0 if passed == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
