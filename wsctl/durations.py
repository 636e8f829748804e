"""Durations as a person reads them (``3s``, ``4m05s``, ``2h03m``, ``3d04h``, ``7y012d``).
Pure; a leaf module shared by the registry model's reasons and every listing."""

from __future__ import annotations

__all__ = ["human_duration"]

_YEAR = 365 * 86400


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
