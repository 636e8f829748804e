"""Stress: ``wsctl simulate --robots N`` several times in a row, each in a fresh sandbox.

Each run connects N robots to two sandbox gateways, checks registration, delivery and
heartbeats, closes every robot and requires every entry of the run to be gone (an entry left
behind after a clean disconnect fails the run). Prints each run's outcome and N/RUNS passed.

Run: python bench/disconnect_stress.py [--robots 10000] [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--robots", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WSCTL_", "REDIS_"))}
    cmd = [sys.executable, "-m", "wsctl", "simulate", "--robots", str(args.robots), "-o", "json"]
    passed = 0
    for run in range(1, args.runs + 1):
        started = time.perf_counter()
        try:
            done = subprocess.run(
                cmd,
                env=env,
                capture_output=True,
                text=True,
                timeout=args.timeout,
            )
        except subprocess.TimeoutExpired:
            print(f"run {run}: FAIL (no result within {args.timeout:g}s)", flush=True)
            continue
        elapsed = time.perf_counter() - started
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
        print(f"run {run}: {'PASS' if ok else 'FAIL'} in {elapsed:.1f}s ({detail})", flush=True)
    print(f"simulate --robots {args.robots}: {passed}/{args.runs} runs passed")
    return 0 if passed == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
