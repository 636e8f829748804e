"""What a conformance run is told (:class:`ConformanceOptions`) and where its robots connect:
the gateway's robot URL template and each robot's URL (pure); and the check that a process
the kit is asked to freeze is a redis-server it may signal."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from urllib.parse import quote, urlsplit

from wsctl.conformance.checks import CheckSpec
from wsctl.errors import UsageError
from wsctl.protocol.envelopes import MAX_MESSAGE_BYTES

__all__ = [
    "ROBOT_PLACEHOLDER",
    "ConformanceOptions",
    "beat_within",
    "freezable_redis_pid",
    "gateway_url",
    "robot_url",
]

ROBOT_PLACEHOLDER = "{robot_id}"


@dataclass(frozen=True)
class ConformanceOptions:
    """What a run is told: the gateway's robot URL template (see :func:`gateway_url`), the
    level to reach, the instance id when known, the per-step timeout, the gateway's heartbeat
    interval when given (else the one its liveness record states, else
    ``default_interval``), the fleet's timeout (the liveness TTL), its message size limit,
    the Redis processes the kit may freeze (none: it never does) and for how long, and the
    robots' auth secret."""

    gateway: str
    level: int = 2
    instance_id: str | None = None
    timeout: float = 5.0
    heartbeat_interval: float | None = None
    default_interval: float = 30.0
    fleet_timeout: float = 90.0
    max_message_bytes: int = MAX_MESSAGE_BYTES
    freeze_pids: tuple[int, ...] = ()
    freeze_seconds: float = 6.0
    auth_secret: str | None = None
    naive_tz: tzinfo | None = None

    @property
    def quiet(self) -> float:
        """Seconds the kit watches for what must not happen (a second reply, a forward)."""
        return min(0.5, self.timeout / 2)

    def budget(self, check: CheckSpec, interval: float) -> float:
        """The longest one probe may take before it fails as hung, for a gateway beating
        every ``interval`` seconds: its steps' timeouts and heartbeat waits, and the freeze
        for the one that freezes Redis."""
        beat = beat_within(interval)
        base = self.timeout * 4 + beat * 3 + 5.0
        if check.id.startswith("faults.redis_frozen"):
            base += self.freeze_seconds + self.timeout + beat
        return base


def beat_within(interval: float) -> float:
    """Seconds within which the effect of a heartbeat every ``interval`` seconds must show:
    one and a half intervals and a second of slack."""
    return interval * 1.5 + 1.0


def gateway_url(text: str) -> str:
    """The robot URL template of ``--gateway``: ``ws[s]://host:port/path/{robot_id}``; a
    bare ``ws://host:port`` means ``ws://host:port/ws/{robot_id}`` (the protocol's path,
    §12). Raises UsageError for anything else."""
    parts = urlsplit(text)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise UsageError(f"--gateway {text!r} must be a ws:// or wss:// URL with a host")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError as exc:
        raise UsageError(f"--gateway {text!r}: {exc}") from None
    if ROBOT_PLACEHOLDER in text:
        if text.count(ROBOT_PLACEHOLDER) != 1 or parts.query or parts.fragment:
            raise UsageError(
                f"--gateway {text!r}: {ROBOT_PLACEHOLDER} once, in the path, and no query"
            )
        return text
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UsageError(
            f"--gateway {text!r}: say where the robot id goes, e.g. "
            f"ws://HOST:PORT/ws/{ROBOT_PLACEHOLDER}"
        )
    return text.rstrip("/") + "/ws/" + ROBOT_PLACEHOLDER


def robot_url(template: str, robot_id: str, token: str | None = None) -> str:
    """The URL a robot connects to: the id percent-encoded into the template, and its
    ``token`` (when the gateway has an auth secret) as the query parameter."""
    url = template.replace(ROBOT_PLACEHOLDER, quote(robot_id, safe=""))
    return f"{url}?token={token}" if token else url


def freezable_redis_pid(pid: int) -> int:
    """``pid`` when it is a running redis-server this user may signal (Linux: by its name),
    for ``--freeze-redis-pid``; UsageError otherwise."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise UsageError(f"--freeze-redis-pid {pid}: no such process") from None
    except PermissionError:
        raise UsageError(f"--freeze-redis-pid {pid}: not allowed to signal it") from None
    comm = Path(f"/proc/{pid}/comm")
    if comm.exists() and "redis" not in comm.read_text(errors="replace"):
        name = comm.read_text(errors="replace").strip()
        raise UsageError(f"--freeze-redis-pid {pid} is {name!r}, not a redis-server")
    return pid
