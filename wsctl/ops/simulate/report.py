"""What a ``simulate`` run found: each phase's verdict and measurements, and the whole report
(the ``wsctl.simulate/1`` JSON document). Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Phase",
    "PhaseSkipped",
    "SimulateReport",
]


class PhaseSkipped(Exception):
    """Raised by a phase that cannot be checked against this fleet; the message says why."""


@dataclass
class Phase:
    """One phase's result: passed, failed (``ok`` False) or skipped (ok, with the reason
    in ``detail``), with its duration and measurements."""

    name: str
    ok: bool  # False only when the check failed (a skipped phase is ok, and says why)
    detail: str
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False

    @property
    def status(self) -> str:
        """``passed``, ``failed`` or ``skipped``: the one word the report shows."""
        return "skipped" if self.skipped else "passed" if self.ok else "failed"

    def as_dict(self) -> dict[str, Any]:
        """The phase as the stable JSON object of ``simulate -o json``."""
        return {
            "name": self.name,
            "ok": self.ok,
            "status": self.status,
            "detail": self.detail,
            "seconds": round(self.seconds, 3),
            "metrics": self.metrics,
        }


@dataclass
class SimulateReport:
    """A whole run: its phases, latency and connect histograms, SLO verdicts, how many
    left-over entries the clean-up removed, and a fatal error if one ended the run early."""

    run_id: str
    robots: int
    gateways: list[str]
    phases: list[Phase] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)
    connect_ms: dict[str, float] = field(default_factory=dict)
    slos: list[dict[str, Any]] = field(default_factory=list)
    cleaned_up: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the run ended without error, ran phases, and every phase and SLO passed."""
        return (
            self.error is None
            and bool(self.phases)
            and all(p.ok for p in self.phases)
            and all(s["ok"] for s in self.slos)
        )

    @property
    def failed(self) -> list[str]:
        """Names of what failed (phases, ``slo TEXT``, ``error``), for the one-line summary."""
        names = [p.name for p in self.phases if not p.ok]
        names += [f"slo {s['slo']}" for s in self.slos if not s["ok"]]
        if self.error:
            names.append("error")
        return names

    def as_dict(self) -> dict[str, Any]:
        """The report as the ``wsctl.simulate/1`` JSON document."""
        return {
            "schema": "wsctl.simulate/1",
            "run_id": self.run_id,
            "ok": self.ok,
            "robots": self.robots,
            "gateways": self.gateways,
            "phases": [p.as_dict() for p in self.phases],
            "latency_ms": self.latency_ms,
            "connect_ms": self.connect_ms,
            "slos": self.slos,
            "failed": self.failed,
            "skipped": [p.name for p in self.phases if p.skipped],
            "cleaned_up": self.cleaned_up,
            "error": self.error,
        }
