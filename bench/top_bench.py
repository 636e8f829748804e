"""What `wsctl top` costs: Redis time per refresh and wsctl's CPU, on a big registry.

Fills a fresh redis-server with 200,000 entries (default) spread over 10 instances, starts 10
real `wsctl gateway` processes under those ids (heartbeat every 2 s: their records carry
counters), then runs the real `wsctl top --interval 2` on a pseudo-terminal (200x50, its
screen read by pyte) for 60 s (``--seconds``):

* Redis time per refresh: ``INFO commandstats`` usec of every command but INFO, before and
  after, minus what the gateways alone cost in a window of the same length measured first;
  divided by the refreshes (one ``TIME`` call each). Target: <= 5 ms a refresh.
* wsctl's CPU: user + system time of the `wsctl top` process (``/proc``) over the measured
  window (start-up excluded), as a share of one core. Target: <= 10%.
* The registry summary's age on the last screen, and how long a pass takes at --scan-rate.

Run: python bench/top_bench.py [--entries 200000] [--instances 10] [--seconds 60]
[--interval 2] [--scan-rate N]
"""

from __future__ import annotations

import argparse
import os
import re
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def fill(port: int, entries: int, instances: int) -> None:
    """``entries`` fresh gateway-shaped entries, round robin over ``gw-0`` … (conn_id set)."""
    import redis

    from wsctl.registry.model import format_ts, utcnow

    client = redis.Redis(port=port)
    # an hour ahead of the top's timeout (--timeout below): they stay fresh all run
    stamp = format_ts(utcnow())
    pipe = client.pipeline(transaction=False)
    for i in range(entries):
        robot = f"bench-robot-{i}"
        pipe.hset(
            f"ws_conn:{robot}",
            mapping={
                "instance_id": f"gw-{i % instances}",
                "robot_id": robot,
                "connected_at": stamp,
                "last_heartbeat": stamp,
                "status": "connected",
                "websocket_state": "active",
                "conn_id": f"{i:032x}",
            },
        )
        if len(pipe) >= 5000:
            pipe.execute()
    pipe.execute()
    client.close()


def commandstats(port: int) -> dict[str, tuple[int, int]]:
    """calls and usec per command (INFO itself left out)."""
    import redis

    client = redis.Redis(port=port)
    stats = client.info("commandstats")
    client.close()
    out = {}
    for name, row in stats.items():
        command = name.removeprefix("cmdstat_")
        if command != "info":
            out[command] = (int(row["calls"]), int(row["usec"]))
    return out


def delta(
    after: dict[str, tuple[int, int]], before: dict[str, tuple[int, int]]
) -> dict[str, tuple[int, int]]:
    return {
        k: (v[0] - before.get(k, (0, 0))[0], v[1] - before.get(k, (0, 0))[1])
        for k, v in after.items()
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--scan-rate", type=int, default=None)
    args = parser.parse_args()

    import fcntl
    import termios

    import pyte

    from wsctl.sandbox.gateways import GatewayProcess
    from wsctl.sandbox.redis_servers import RedisServer

    with RedisServer() as server, tempfile.TemporaryDirectory(prefix="wsctl-top-bench-") as tmp:
        started = time.monotonic()
        fill(server.port, args.entries, args.instances)
        print(f"filled {args.entries:,} entries in {time.monotonic() - started:.1f}s", flush=True)
        gateways = [
            GatewayProcess(
                redis_url=server.url, instance_id=f"gw-{n}", heartbeat_interval=2.0, timeout=30.0
            )
            for n in range(args.instances)
        ]
        try:
            for gw in gateways:
                gw.start(Path(tmp))
            time.sleep(3)
            base_before = commandstats(server.port)
            time.sleep(min(args.seconds, 20.0))
            base = delta(commandstats(server.port), base_before)
            base_window = min(args.seconds, 20.0)
            run_top(server, args, base, base_window, Path(tmp), pyte, fcntl, termios)
            once(server, Path(tmp))
        finally:
            for gw in gateways:
                gw.stop()


def once(server, tmp: Path) -> None:  # type: ignore[no-untyped-def]
    """`wsctl top --once`: one whole registry pass at full speed, then two reads 2 s apart."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WSCTL_", "REDIS_"))}
    env["WSCTL_STATE_DIR"] = str(tmp)
    cmd = [
        sys.executable,
        "-m",
        "wsctl",
        "--redis-url",
        server.url,
        "top",
        "--once",
        "-o",
        "json",
        "--timeout",
        "3600",
    ]
    started = time.monotonic()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    took = time.monotonic() - started
    print(
        f"wsctl top --once -o json: {took:.1f}s wall (exit {done.returncode}; the scan at "
        "full speed, then 2 s between its two reads)"
    )


def run_top(server, args, base, base_window, tmp, pyte, fcntl, termios) -> None:  # type: ignore[no-untyped-def]
    cols, rows = 200, 50
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WSCTL_", "REDIS_"))}
    env.update({"WSCTL_STATE_DIR": str(tmp), "TERM": "xterm-256color"})
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    cmd = [
        sys.executable,
        "-m",
        "wsctl",
        "--redis-url",
        server.url,
        "top",
        "--interval",
        str(args.interval),
        "--timeout",
        "3600",
    ]
    if args.scan_rate:
        cmd += ["--scan-rate", str(args.scan_rate)]
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    screen = pyte.Screen(cols, rows)
    stream = pyte.ByteStream(screen)
    proc = subprocess.Popen(
        cmd,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )

    def pump(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    stream.feed(os.read(master, 65536))
                except OSError:
                    return

    try:
        pump(5.0)  # start-up and the first refresh, not measured
        before, cpu_before, t0 = commandstats(server.port), cpu_seconds(proc.pid), time.monotonic()
        pump(args.seconds)
        after, cpu_after, t1 = commandstats(server.port), cpu_seconds(proc.pid), time.monotonic()
        text = "\n".join(screen.display)
        os.write(master, b"q")
        pump(2.0)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.close(slave)
        os.close(master)
    window = t1 - t0
    used = delta(after, before)
    refreshes = used.get("time", (0, 0))[0]
    scale = window / base_window
    top_usec = 0.0
    rows_out = []
    for command, (calls, usec) in sorted(used.items(), key=lambda kv: -kv[1][1]):
        gw_calls, gw_usec = base.get(command, (0, 0))
        mine = usec - gw_usec * scale
        if calls - gw_calls * scale <= 0 and mine <= 0:
            continue
        top_usec += max(0.0, mine)
        rows_out.append((command, calls - gw_calls * scale, mine))
    per_refresh_ms = top_usec / max(1, refreshes) / 1000
    cpu_share = (cpu_after - cpu_before) / window
    header = next((line for line in text.splitlines() if line.startswith("wsctl top:")), "")
    age = re.search(r"registry scan ([^|]*)", header)
    print(f"window {window:.1f}s, {refreshes} refreshes (one TIME each)")
    for command, calls, usec in rows_out[:8]:
        print(f"  {command:<16} {calls:>9.0f} calls {usec / 1000:>9.1f} ms")
    print(
        f"Redis time per refresh: {per_refresh_ms:.2f} ms (target <= 5 ms: "
        f"{per_refresh_ms / 5:.2f}x of it)"
    )
    print(
        f"wsctl top CPU: {cpu_share:.1%} of one core (target <= 10%: {cpu_share / 0.10:.2f}x of it)"
    )
    print(f"registry summary on the last screen: {age.group(1).strip() if age else header!r}")
    rate = args.scan_rate or 800
    print(
        f"a registry pass at {rate} keys/s: about {args.entries / rate:.0f}s for "
        f"{args.entries:,} entries (more with other keys under the prefix)"
    )


if __name__ == "__main__":
    main()
