"""What one ``simulate`` run is asked to do: its options (fleet, load, phase timeouts, chaos) and
its service-level objectives (``--slo p99<50ms``), parsed and judged. Pure."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from wsctl.errors import UsageError

__all__ = [
    "CHAOS_ACTIONS",
    "SLO_METRICS",
    "Progress",
    "SimulateOptions",
    "Slo",
    "parse_slo",
]


Progress = Callable[[str, str], None]


@dataclass(frozen=True)
class Slo:
    """``metric op value`` such as ``p99<50ms``, ``lost==0``, ``delivered_pct>=99.9``."""

    text: str
    metric: str
    op: str
    value: float

    def check(self, metrics: dict[str, float]) -> tuple[bool, float | None]:
        """Judge ``metrics`` against this objective.

        Returns (met, the measured value); a metric that was not measured fails, with None."""
        actual = metrics.get(self.metric)
        if actual is None:
            return False, None
        ok = {
            "<": actual < self.value,
            "<=": actual <= self.value,
            ">": actual > self.value,
            ">=": actual >= self.value,
            "==": actual == self.value,
        }[self.op]
        return ok, actual


SLO_METRICS = (
    "p50",
    "p90",
    "p99",
    "max",
    "connect_p50",
    "connect_p99",
    "lost",
    "rejected",
    "duplicated",
    "out_of_order",
    "delivered_pct",
    "connect_failed",
)


_SLO_RE = re.compile(r"^\s*([a-z_0-9]+)\s*(<=|>=|==|<|>)\s*([0-9.]+)\s*(ms|s|%)?\s*$")


def parse_slo(text: str) -> Slo:
    """Parse an SLO; latencies need a unit (``ms`` or ``s``) and are held in milliseconds."""
    match = _SLO_RE.match(text)
    if not match:
        raise UsageError(f"bad --slo {text!r}: expected like 'p99<50ms' or 'lost==0'")
    metric, op, number, unit = match.groups()
    if metric not in SLO_METRICS:
        raise UsageError(
            f"bad --slo {text!r}: unknown metric {metric!r} ({', '.join(SLO_METRICS)})"
        )
    if metric in _COUNT_METRICS and unit is not None:
        raise UsageError(
            f"bad --slo {text!r}: {metric} is a count of messages or robots; give it without "
            f"a unit (e.g. '{metric}==0')"
        )
    if metric in _PERCENT_METRICS and unit not in (None, "%"):
        raise UsageError(f"bad --slo {text!r}: {metric} is a percentage (e.g. '{metric}>=99.9')")
    if metric in _LATENCY_METRICS and unit not in ("ms", "s"):
        # a bare number (`p99<5`) used to mean ms silently: 5 ms or 5 s is the operator's call
        raise UsageError(
            f"bad --slo {text!r}: {metric} is a latency; give its unit, ms or s "
            f"(e.g. '{metric}<50ms')"
        )
    try:
        value = float(number) * (1000.0 if unit == "s" else 1.0)
    except ValueError:
        raise UsageError(f"bad --slo {text!r}: {number!r} is not a number") from None
    return Slo(text.strip(), metric, op, value)


_LATENCY_METRICS = frozenset({"p50", "p90", "p99", "max", "connect_p50", "connect_p99"})


_COUNT_METRICS = frozenset({"lost", "rejected", "duplicated", "out_of_order", "connect_failed"})


_PERCENT_METRICS = frozenset({"delivered_pct"})


@dataclass
class SimulateOptions:
    """Everything one ``simulate`` run needs: fleet, load, phase timeouts, SLOs and chaos."""

    robots: int = 200
    gateways: list[str] = field(default_factory=list)
    messages: int = 3
    duration: float = 35.0
    ramp: float = 1000.0
    churn: float = 0.0
    payload_bytes: int = 0
    rate: float = 0.0  # deliver-phase messages per second; 0 sends them all at once
    processes: int = 1
    auth_secret: str | None = None
    slos: list[Slo] = field(default_factory=list)
    deliver_timeout: float = 30.0
    settle_timeout: float = 10.0
    # robots send this text frame every robot_heartbeat_every seconds (None: they send nothing)
    robot_heartbeat: str | None = None
    robot_heartbeat_every: float = 5.0
    require_delivery: bool = False  # instances that do not listen fail deliver instead of skipping
    # deliver phase: the share of robots whose messages are injected at an instance other than
    # their owner (forwarded once); the rest go straight to the owner
    non_owner_share: float = 0.75
    liveness_timeout: float = 90.0  # judges the gateways' liveness records
    # robots reconnect after any close, not only a drain's 1012 (jittered backoff, next gateway)
    reconnect: bool = False
    chaos: str | None = None  # "drain" or "kill" one gateway during the deliver phase
    # SIGKILLs the gateway at this URL (the sandbox's); True if it did
    kill_gateway: Callable[[str], bool] | None = None


CHAOS_ACTIONS = ("drain", "kill")
