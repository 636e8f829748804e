"""How ``wsctl top`` puts a snapshot into words and cells: shared by ``--once -o table`` and
the live screen (:mod:`wsctl.cli.tui`), so both read the same. Every value from Redis is
escaped for the terminal."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from wsctl.cli.columns import WORD_MAX, Column, printable
from wsctl.shell import clip, word

__all__ = [
    "BAR",
    "alert_lines",
    "event_cells",
    "fit_lines",
    "fitting_columns",
    "header_parts",
    "id_cell",
    "instance_cells",
    "instance_columns",
    "instance_row",
    "local_clock",
    "registry_lines",
    "state_cell",
]

BAR = "#"
# Ids in the events' cells are cut past this many characters: the time, event and detail of
# a 10 KB robot id's event stay on the screen.
EVENT_ID_MAX = 48
# The histogram's longest bar: a wide screen, or a pipe (no width limit), gets no longer bars.
BAR_MAX = 60


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        return f"{value:.1f}" if value < 1000 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _age(value: Any) -> str:
    from wsctl.durations import human_duration

    return human_duration(value) if value is not None else "-"


def local_clock(at: str) -> str:
    """An ISO timestamp as this machine's local time of day (``14:03:07``), as a person
    reads a clock; what cannot be parsed, its first 19 characters."""
    from datetime import datetime

    try:
        return time.strftime("%H:%M:%S", time.localtime(datetime.fromisoformat(at).timestamp()))
    except ValueError:
        return at[:19]


def id_cell(value: Any, limit: int = WORD_MAX) -> str:
    """An id as a person sees it: a shell word (``$'...'`` when it holds characters that are
    not printable, as in every table) cut past ``limit`` characters, with how long it was.
    Work is bounded by ``limit``, not by the id."""
    text = str(value)
    return clip(word(text[: limit + 1]), limit, len(text))


def state_cell(row: dict[str, Any]) -> str:
    """``alive``, ``dead`` or ``unknown``, with ``deaf`` when alive but not listening."""
    text = str(row["liveness"])
    if row.get("listening") is False and text == "alive":
        return "deaf"
    return text


def instance_row(inst: dict[str, Any]) -> dict[str, Any]:
    """A snapshot instance (``InstanceRow.as_dict``) flattened for the instance table."""
    rates = inst.get("rates") or {}
    return {
        **inst,
        "state": state_cell(inst),
        "drain": "yes" if inst.get("draining") else "-",
        "level_text": "-" if inst.get("level") is None else str(inst["level"]),
        "redis": "-" if inst.get("redis_up") is None else ("up" if inst["redis_up"] else "down"),
        **{name: rates.get(name) for name in _RATE_KEYS},
    }


_RATE_KEYS = (
    "delivered_per_s",
    "forwarded_per_s",
    "failed_per_s",
    "connects_per_s",
    "disconnects_per_s",
)


def instance_columns() -> list[Column]:
    """The instance table's columns, most telling first (a narrow screen cuts the last)."""
    return [
        Column("instance_id", "INSTANCE", fmt=id_cell),
        Column("level_text", "LVL", justify="right"),
        Column("state", "STATE"),
        Column("record_age_s", "AGE", fmt=_age, justify="right"),
        Column("robots", "ROBOTS", fmt=_num, justify="right"),
        Column("drain", "DRAIN"),
        Column("delivered_per_s", "DLV/s", fmt=_num, justify="right"),
        Column("forwarded_per_s", "FWD/s", fmt=_num, justify="right"),
        Column("failed_per_s", "FAIL/s", fmt=_num, justify="right"),
        Column("connects_per_s", "CON/s", fmt=_num, justify="right"),
        Column("disconnects_per_s", "DIS/s", fmt=_num, justify="right"),
        Column("redis", "REDIS"),
        Column("version", "VERSION", fmt=lambda v: printable(str(v)) if v else "-"),
        Column("rates_note", "NOTE", fmt=lambda v: printable(str(v)) if v else "", wrap=True),
    ]


# Columns of the instance table shown whatever the width: INSTANCE, LVL, STATE, AGE, ROBOTS.
ALWAYS_SHOWN = 5


def fitting_columns(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int, pad: int
) -> list[Column]:
    """The first of ``columns`` that fit ``width`` side by side, each as wide as its header
    or its widest cell in ``rows`` plus ``pad`` (the table's padding and rules), the first
    :data:`ALWAYS_SHOWN` always: a narrow terminal leaves the least telling columns out
    rather than wrapping every row."""
    chosen: list[Column] = []
    used = 0
    for i, column in enumerate(columns):
        need = max([len(column.header), *(len(r[i]) for r in rows)]) + pad
        if i >= ALWAYS_SHOWN and used + need > width:
            break
        chosen.append(column)
        used += need
    return chosen


def instance_cells(row: dict[str, Any], columns: Sequence[Column]) -> list[str]:
    """The cells of one flattened instance row, as the table shows them."""
    out = []
    for column in columns:
        value = row.get(column.key)
        if column.fmt is not None:
            out.append(printable(column.fmt(value)))
        else:
            out.append("-" if value is None else printable(str(value)))
    return out


def alert_lines(snapshot: dict[str, Any]) -> list[tuple[str, str]]:
    """(severity, text) per alert, errors first."""
    return [(a["severity"], printable(a["message"])) for a in snapshot["alerts"]]


def header_parts(snapshot: dict[str, Any], where: str, interval: float | None) -> list[str]:
    """Redis, the time of the data and the refresh interval, and how old the registry
    summary is: the header's parts, most telling first."""
    redis = snapshot["redis"]
    # local time, as the events beside it: one clock on the screen
    parts = [f"wsctl top: {printable(where)}", f"at {local_clock(snapshot['at'])}"]
    if interval:
        parts.append(f"every {interval:g}s")
    if not redis["ok"]:
        parts.append(f"REDIS NOT ANSWERING, data {_age(redis['data_age_s'])} old")
    reg = snapshot["registry"]
    if reg.get("complete"):
        progress = reg.get("scan_progress")
        nxt = f", next {progress:.0%}" if progress is not None else ""
        parts.append(f"registry scan {_age(reg['age_s'])} old{nxt}")
    else:
        parts.append("registry: first scan under way")
    return parts


def fit_lines(parts: list[str], width: int, sep: str = " | ") -> list[str]:
    """``parts`` joined by ``sep`` into lines of at most ``width`` characters where they fit
    (a part longer than the width has a line of its own)."""
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + len(sep) + len(part) <= width:
            lines[-1] += sep + part
        else:
            lines.append(part)
    return lines


def _band_age(seconds: float) -> str:
    if seconds < 60 and seconds != int(seconds):
        return f"{seconds:.1f}s"
    return _age(seconds)


def registry_lines(registry: dict[str, Any], width: int = 80) -> list[str]:
    """The registry panel: counts, heartbeat-age percentiles and a histogram by age band."""
    if registry.get("age_s") is None:
        return ["registry: first scan under way"]
    scope = "" if registry.get("complete") else " so far (first scan under way)"
    total = registry["entries"]
    entries = f"{total:,} {'entry' if total == 1 else 'entries'}"
    parts = [
        *f"registry{scope}: {entries}:".split(),
        f"{registry['fresh']:,} fresh,",
        f"{registry['stale']:,} stale,",
        f"{registry['malformed']:,} malformed,",
        f"{registry['on_dead_instances']:,} on dead instances",
    ]
    lines = fit_lines(parts, width, " ")
    hist = registry["heartbeat_age"]
    if not hist["count"]:
        return lines
    ages = [
        f"heartbeat age: p50 {_age(hist['p50_s'])}",
        f"p90 {_age(hist['p90_s'])}",
        f"p99 {_age(hist['p99_s'])}",
        f"max {_age(hist['max_s'])}",
    ]
    lines.extend(fit_lines(ages, width, "  "))
    bands = hist["bands"]
    labels = [
        f"{_band_age(b['from_s'])}-{_band_age(b['to_s'])}"
        if b["to_s"] is not None
        else f">{_band_age(b['from_s'])}"
        for b in bands
    ]
    label_w = max(len(label) for label in labels)
    counts = [f"{b['count']:,}" for b in bands]
    count_w = max(len(c) for c in counts)
    room = max(1, min(BAR_MAX, width - label_w - count_w - 4))
    top = max(b["count"] for b in bands) or 1
    for label, count, band in zip(labels, counts, bands, strict=True):
        bar = BAR * (round(room * band["count"] / top) if band["count"] else 0)
        lines.append(f"  {label.rjust(label_w)} {count.rjust(count_w)} {bar}".rstrip())
    return lines


def event_cells(row: dict[str, Any], id_limit: int = EVENT_ID_MAX) -> list[str]:
    """One event as short cells: local time, event, robot, instance (ids cut past
    ``id_limit``), detail."""
    from wsctl.eventlog.model import detail_text

    detail = row.get("detail")
    return [
        printable(local_clock(row.get("at") or "")),
        printable(str(row.get("event") or "-")),
        id_cell(row.get("robot_id") or "-", id_limit),
        id_cell(row.get("instance_id") or "-", id_limit),
        printable(detail_text(detail)) if isinstance(detail, dict) and detail else "",
    ]
