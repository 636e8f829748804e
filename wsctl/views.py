"""Rows for output: stable snake_case dictionaries built from registry data. Pure: no I/O.

Every listing renders through these, so ``-o json`` keys stay the same across commands.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from wsctl.registry.model import Assessment, Entry, assess, format_ts


def connection_row(entry: Entry, now: datetime, timeout: float) -> dict[str, Any]:
    verdict = assess(entry, now, timeout)
    return connection_row_from(entry, verdict)


def connection_row_from(entry: Entry, verdict: Assessment) -> dict[str, Any]:
    return {
        "robot_id": entry.robot_id,
        "instance_id": entry.instance_id,
        "state": verdict.state.value,
        "status": entry.status,
        "websocket_state": entry.websocket_state,
        "heartbeat_age_s": _round(verdict.heartbeat_age),
        "connected_for_s": _round(verdict.connected_for),
        "last_heartbeat": format_ts(entry.last_heartbeat) if entry.last_heartbeat else None,
        "connected_at": format_ts(entry.connected_at) if entry.connected_at else None,
        "conn_id": entry.conn_id,
        "reason": verdict.reason or None,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def human_duration(seconds: float | None) -> str:
    """``3s``, ``4m05s``, ``2h03m``, ``3d04h``; negative ages (skew) keep their sign."""
    if seconds is None:
        return "-"
    sign = "-" if seconds < 0 else ""
    s = int(abs(seconds))
    if s < 60:
        return f"{sign}{s}s"
    if s < 3600:
        return f"{sign}{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{sign}{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{sign}{s // 86400}d{s % 86400 // 3600:02d}h"
