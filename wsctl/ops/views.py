"""Rows for output: stable snake_case dictionaries built from registry data. Pure: no I/O.

Every listing renders through these, so ``-o json`` keys stay the same across commands.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from wsctl.registry.model import (
    F_CONN_ID,
    F_INSTANCE_ID,
    F_STATUS,
    F_WS_STATE,
    Assessment,
    Entry,
    assess,
    format_ts,
)

__all__ = ["connection_row", "connection_row_from"]


def connection_row(entry: Entry, now: datetime, timeout: float) -> dict[str, Any]:
    """The listing row of ``entry`` judged at ``now``: stable snake_case keys."""
    verdict = assess(entry, now, timeout)
    return connection_row_from(entry, verdict)


def connection_row_from(entry: Entry, verdict: Assessment) -> dict[str, Any]:
    """The listing row of ``entry`` from a verdict already made."""
    get = entry.fields.get
    age, connected_for = verdict.heartbeat_age, verdict.connected_for
    heartbeat, connected = entry.last_heartbeat, entry.connected_at
    heartbeat_text = format_ts(heartbeat) if heartbeat else None
    if connected is heartbeat:  # one parsed value (same text): format it once
        connected_text = heartbeat_text
    else:
        connected_text = format_ts(connected) if connected else None
    return {
        "robot_id": entry.robot_id,
        "instance_id": get(F_INSTANCE_ID) or None,
        "state": verdict.state.value,
        "status": get(F_STATUS),
        "websocket_state": get(F_WS_STATE),
        "heartbeat_age_s": None if age is None else round(age, 3),
        "connected_for_s": None if connected_for is None else round(connected_for, 3),
        "last_heartbeat": heartbeat_text,
        "connected_at": connected_text,
        "conn_id": get(F_CONN_ID) or None,
        "reason": verdict.reason or None,
    }
