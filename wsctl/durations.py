"""Durations as a person reads them (``3s``, ``4m05s``, ``2h03m``, ``3d04h``, ``7y012d``), and
the one rule for duration and rate flags. Pure; a leaf module shared by the registry model's
reasons, every listing and the CLI's flag checks."""

from __future__ import annotations

import math

__all__ = [
    "AGE_MAX_S",
    "MIN_SECONDS",
    "RATE_MAX",
    "RATE_MIN",
    "WAIT_MAX_S",
    "check_rate",
    "check_seconds",
    "counted",
    "human_duration",
]

_YEAR = 365 * 86400

MIN_SECONDS = 0.001
"""The shortest duration any flag takes: 1 ms (``1e-300`` is a typo, not a timeout)."""
WAIT_MAX_S = 86400.0
"""The longest wait (a reply, a request, a refresh, a heartbeat interval): one day."""
AGE_MAX_S = 10.0 * _YEAR
"""The longest age or run time (staleness timeouts, --older-than, --every): ten years."""
RATE_MAX = 1_000_000.0
"""The highest pacing rate any flag takes, per second (more is a typo: use 0, no pacing)."""
RATE_MIN = 1.0 / WAIT_MAX_S
"""The lowest pacing rate above 0: one a day (``1e-9`` would wait 31 years between sends)."""


def check_seconds(value: float, *, maximum: float, allow_zero: bool = False) -> float:
    """``value`` if it is a usable number of seconds: finite, from :data:`MIN_SECONDS` to
    ``maximum`` (or exactly 0 with ``allow_zero``). The one rule of every duration flag and
    setting; raises ValueError with a message that says the allowed range."""
    if math.isnan(value):
        raise ValueError("must be a number of seconds, not nan")
    if math.isinf(value):
        raise ValueError("must be a finite number of seconds")
    if allow_zero and value == 0:
        return 0.0
    if allow_zero and value < MIN_SECONDS:
        raise ValueError(f"must be 0 or from {MIN_SECONDS} to {maximum:g} seconds")
    if value <= 0:
        raise ValueError("must be greater than 0")
    if value < MIN_SECONDS:
        raise ValueError(f"must be at least {MIN_SECONDS} seconds")
    if value > maximum:
        raise ValueError(f"must be at most {maximum:g} seconds ({human_duration(maximum)})")
    return value


def check_rate(value: float) -> float:
    """``value`` if it is a usable rate per second: finite, 0 (no pacing) or from :data:`RATE_MIN`
    (one a day) to :data:`RATE_MAX`. Raises ValueError with a message that says the allowed range; ``nan``
    would otherwise compare false everywhere and silently pace at an undefined speed."""
    if math.isnan(value):
        raise ValueError("must be a number per second, not nan")
    if value == 0:
        return 0.0
    if value < RATE_MIN or math.isinf(value) or value > RATE_MAX:
        raise ValueError(
            f"must be 0 (no pacing) or from {RATE_MIN:.3g} (one a day) to {RATE_MAX:g} per second"
        )
    return value


def human_duration(seconds: float | None) -> str:
    """Two units at most; ``-`` for none; a negative age (a time in the future) reads
    ``in 3s``."""
    if seconds is None:
        return "-"
    if seconds != seconds:  # NaN
        return "-"
    if seconds < 0:
        return "in " + human_duration(-seconds)
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s < _YEAR:
        return f"{s // 86400}d{s % 86400 // 3600:02d}h"
    return f"{s // _YEAR}y{s % _YEAR // 86400:03d}d"


def counted(count: int, singular: str, plural: str | None = None) -> str:
    """``1 entry``, ``2 entries``: a count with its noun in the right number."""
    return f"{count} {singular if count == 1 else (plural or singular + 's')}"
