"""Rolling deploys: drain, and a crash, of one gateway holding 300 reconnecting robots.

Runs `wsctl simulate --robots 900 --sandbox-gateways 3` (300 robots per gateway, robots that
reconnect to the next gateway on close) twice, against a fresh sandbox each time:

1. `--chaos drain`: the first gateway is drained while the deliver phase publishes. Target:
   all 300 of its robots registered elsewhere, and no message to another instance's robot
   lost (`lost_other_robots` 0).
2. `--chaos kill`: the first gateway is SIGKILLed instead. Target: only messages in flight to
   it (to its robots, or injected at it) are lost, and the run says how many.

Prints, per run: robots moved, seconds until every robot is registered again, and messages
lost by kind.

Run: python bench/drain_bench.py [--robots-per-gateway 300] [--messages 3] [--rate 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile


def run(action: str, per_gateway: int, messages: int, rate: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="wsctl-drain-bench-") as state:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WSCTL_", "REDIS_"))}
        env["WSCTL_STATE_DIR"] = state  # never a sandbox someone else is running
        cmd = [
            sys.executable,
            "-m",
            "wsctl",
            "simulate",
            "--robots",
            str(per_gateway * 3),
            "--sandbox-gateways",
            "3",
            "--messages",
            str(messages),
            "--rate",
            str(rate),
            "--chaos",
            action,
            "--duration",
            "5",
            "-o",
            "json",
        ]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if not done.stdout.strip():
        raise SystemExit(f"simulate --chaos {action} failed: {done.stderr.strip()[-500:]}")
    report = json.loads(done.stdout)
    deliver = next(p for p in report["phases"] if p["name"] == "deliver")
    return {"ok": report["ok"], "deliver": deliver, "chaos": deliver["metrics"].get("chaos", {})}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--robots-per-gateway", type=int, default=300)
    parser.add_argument("--messages", type=int, default=3)
    parser.add_argument("--rate", type=float, default=1000.0)
    args = parser.parse_args()
    for action in ("drain", "kill"):
        result = run(action, args.robots_per_gateway, args.messages, args.rate)
        chaos = result["chaos"]
        assert isinstance(chaos, dict)
        deliver = result["deliver"]
        assert isinstance(deliver, dict)
        metrics = deliver["metrics"]
        held = chaos.get("robots_on_victim")
        back = chaos.get("reregistered_s")
        other = chaos.get("lost_other_robots")
        moved = held if back is not None else held - chaos.get("not_back", 0)
        print(
            f"{action}: {moved}/{held} robots of {chaos.get('victim')} registered elsewhere "
            + (f"in {back:.2f}s" if back is not None else "(not all came back)")
            + f"; messages {metrics['delivered']}/{metrics['sent']} delivered, lost: "
            f"{chaos.get('lost_victim_robots')} to its robots, "
            f"{chaos.get('lost_in_flight_to_victim')} in flight to it, {other} to other "
            f"instances' robots; simulate {'PASS' if result['ok'] else 'FAIL'}"
        )
        if action == "drain":
            ok = back is not None and other == 0
            print(f"  target (all {held} moved, 0 lost to others): {'PASS' if ok else 'FAIL'}")
        else:
            ok = other == 0
            lost = chaos.get("lost_victim_robots", 0) + chaos.get("lost_in_flight_to_victim", 0)
            print(
                f"  target (only messages in flight to the killed gateway lost, counted: {lost}):"
                f" {'PASS' if ok else 'FAIL'}"
            )


if __name__ == "__main__":
    main()
