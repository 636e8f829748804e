"""How a conformance run ended: each check's result, which checks a failure blocks, the level
reached, and the report ``wsctl conformance`` prints. Pure.

A gateway **reaches** a level when every check of that level and below passed or does not
apply; a check that was not run counts against its level, since nothing was verified.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from wsctl.conformance.checks import CheckSpec, Verdict, spec

__all__ = [
    "CheckResult",
    "ConformanceReport",
    "blocked",
    "level_reached",
]


@dataclass
class CheckResult:
    """How one check ended: the verdict, a one-line detail, and for a failure what was
    expected and what was seen; ``blocked_by`` names the check whose failure kept this one
    from running (then the verdict is ``n/a``)."""

    id: str
    verdict: Verdict
    detail: str = ""
    expected: str | None = None
    seen: str | None = None
    seconds: float = 0.0
    blocked_by: str | None = None

    @property
    def spec(self) -> CheckSpec:
        """The check's definition."""
        return spec(self.id)

    @property
    def verified(self) -> bool:
        """True when the check counts towards its level: passed, or genuinely not
        applicable (not a check that was never run)."""
        return self.verdict is Verdict.PASS or (
            self.verdict is Verdict.NA and self.blocked_by is None
        )

    def as_dict(self) -> dict[str, Any]:
        """The result as ``-o json`` prints it."""
        s = self.spec
        return {
            "id": self.id,
            "level": s.level,
            "section": s.section,
            "doc": s.doc,
            "title": s.title,
            "result": self.verdict.value,
            "detail": self.detail,
            "expected": self.expected,
            "seen": self.seen,
            "blocked_by": self.blocked_by,
            "seconds": round(self.seconds, 3),
        }


def blocked(
    check_id: str, results: Mapping[str, CheckResult], inside: Iterable[str] = ()
) -> str | None:
    """The first check ``check_id`` requires that did not pass (None: it may run); the
    requirements in ``inside`` (checks of the same probe, which sees to them) are skipped. A
    check whose requirement was itself not run is blocked by it too."""
    skip = set(inside)
    for need in spec(check_id).requires:
        if need in skip:
            continue
        got = results.get(need)
        if got is None or got.verdict is not Verdict.PASS:
            return need
    return None


def level_reached(results: Iterable[CheckResult], asked: int) -> int:
    """The highest level up to ``asked`` whose checks (and every lower level's) were all
    verified; -1 when level 0 was not."""
    by_level: dict[int, list[CheckResult]] = {}
    for result in results:
        by_level.setdefault(result.spec.level, []).append(result)
    reached = -1
    for level in range(asked + 1):
        if all(r.verified for r in by_level.get(level, [])):
            reached = level
        else:
            break
    return reached


@dataclass
class ConformanceReport:
    """One run: the gateway, the instance, the level asked for and reached, every result,
    and what the kit cleaned up."""

    gateway: str
    asked_level: int
    run_id: str
    instance_id: str | None = None
    results: list[CheckResult] = field(default_factory=list)
    heartbeat_interval: float | None = None  # what the heartbeat checks waited for
    seconds: float = 0.0
    robots: int = 0  # robot ids the kit used
    keys_removed: int = 0  # keys the kit made (or made the gateway write) and removed
    left_behind: list[str] = field(default_factory=list)  # keys it could not remove

    @property
    def level(self) -> int:
        """The level reached (-1: not even level 0)."""
        return level_reached(self.results, self.asked_level)

    @property
    def ok(self) -> bool:
        """True when the level asked for was reached."""
        return self.level >= self.asked_level

    def counts(self) -> dict[str, int]:
        """How many checks passed, failed, and were not applicable or not run."""
        out = {v.value: 0 for v in Verdict}
        for result in self.results:
            out[result.verdict.value] += 1
        return out

    def summary(self) -> str:
        """One line: the level reached against the level asked, and the counts."""
        counts = self.counts()
        reached = f"level {self.level}" if self.level >= 0 else "no level"
        return (
            f"{reached} reached (asked: {self.asked_level}): {counts['pass']} passed, "
            f"{counts['fail']} failed, {counts['n/a']} n/a"
        )

    def as_dict(self) -> dict[str, Any]:
        """The report as ``-o json`` prints it."""
        return {
            "gateway": self.gateway,
            "instance_id": self.instance_id,
            "run_id": self.run_id,
            "asked_level": self.asked_level,
            "level": self.level,
            "ok": self.ok,
            "counts": self.counts(),
            "heartbeat_interval_s": self.heartbeat_interval,
            "seconds": round(self.seconds, 3),
            "robots": self.robots,
            "keys_removed": self.keys_removed,
            "left_behind": self.left_behind,
            "checks": [r.as_dict() for r in self.results],
        }
