"""Event-log helpers shared by the CLI commands: ``events``/``history`` render with them, and
``show``, ``doctor``, ``reap`` and registry edits print a robot's recent events or record the
CLI's own events through them (so no command module imports another)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from wsctl.cli.columns import Column
from wsctl.cli.common import err

if TYPE_CHECKING:
    from wsctl.eventlog.model import StoredEvent
    from wsctl.ops.reap_events import PassEvents

__all__ = [
    "RECENT",
    "event_columns",
    "event_line",
    "finish_recording",
    "note_robot_event_cap",
    "recent_rows",
    "record_cli_events",
    "row_line",
    "shown",
    "warn_pass_events",
    "write_recent",
]


def shown(value: Any) -> str:
    """An id for a person: ``-`` when empty, else as it is, or its ``$'...'`` shell word
    when it holds characters that are not printable."""
    from wsctl.shell import word

    return "-" if value in (None, "") else word(str(value))


def _text(value: Any) -> str:
    """A cell's text before the table escapes and cuts it: ``-`` when empty."""
    return "-" if value in (None, "") else str(value)


def _at(value: Any) -> str:
    """An event's time for a person: UTC to the millisecond (``2026-12-07T13:03:31.620Z``,
    the precision of stream ids), or the text as written when it is not an aware ISO time
    (json, jsonl and csv carry it as written)."""
    from datetime import UTC, datetime

    text = _text(value)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    if moment.tzinfo is None:
        return text
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _detail(value: Any) -> str:
    from wsctl.eventlog.model import detail_text

    return detail_text(value) if isinstance(value, dict) and value else "-"


def _conn(value: Any) -> str:
    return str(value)[:8] if value else "-"


def event_columns() -> list[Column]:
    """The columns of every event listing (``events``, ``history``); the last three in wide.
    DETAIL and PROBLEM are free text: they wrap at ``COLUMNS`` and are cut when very long."""
    return [
        Column("at", "AT", fmt=_at),
        Column("event", "EVENT", fmt=_text),
        Column("robot_id", "ROBOT", fmt=_text),
        Column("instance_id", "INSTANCE", fmt=_text),
        Column("conn_id", "CONN", fmt=_conn),
        Column("detail", "DETAIL", fmt=_detail, wrap=True),
        Column("stream", "STREAM", wide_only=True, fmt=_text),
        Column("id", "ID", wide_only=True, fmt=_text),
        Column("problem", "PROBLEM", wide_only=True, fmt=_text, wrap=True),
    ]


def event_line(event: StoredEvent) -> str:
    """One event as one line (``--follow`` in table format)."""
    return row_line(event.as_row())


def row_line(row: dict[str, Any]) -> str:
    """One event row as one line for a person: ids as :func:`shown`, the detail escaped and
    cut like a table cell (``… (N chars)``)."""
    from wsctl.cli.columns import TEXT_MAX
    from wsctl.shell import clip, printable

    detail = _detail(row["detail"])
    parts = [
        shown(_at(row["at"])),
        shown(row["event"]).ljust(14),
        shown(row["robot_id"]),
        shown(row["instance_id"]),
        shown(_conn(row["conn_id"])),
        clip(printable(detail[: TEXT_MAX + 1]), TEXT_MAX, len(detail)),
    ]
    if row.get("problem"):
        parts.append(f"(malformed: {printable(str(row['problem']))})")
    return "  ".join(parts)


RECENT = 5  # events that ``show ROBOT`` and ``doctor ROBOT`` end with


async def recent_rows(client: Any, keys: Any, robot_id: str) -> tuple[list[dict[str, Any]], str]:
    """The robot's last :data:`RECENT` events as rows, oldest first; a read that fails gives
    no rows and the reason (the event log never fails ``show`` or ``doctor``)."""
    import asyncio

    from wsctl.ops.events import robot_history

    try:
        events = await robot_history(client, keys, robot_id, RECENT)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the event log is an extra: show the robot without it
        return [], f"event log not read: {type(exc).__name__}"
    return [e.as_row() for e in events], ""


def write_recent(rows: list[dict[str, Any]], problem: str = "") -> None:
    """The ``last events`` block that ends ``show`` and ``doctor ROBOT`` tables."""
    if problem:
        sys.stdout.write(f"last events: ({shown(problem)})\n")
    elif not rows:
        sys.stdout.write("last events: none recorded\n")
    else:
        sys.stdout.write("last events (wsctl history ROBOT for all):\n")
        for row in rows:
            sys.stdout.write("  " + row_line(row) + "\n")


async def record_cli_events(client: Any, keys: Any, events: list[Any]) -> None:
    """Append the CLI's events to its stream; a failure is a warning on stderr (the registry
    change it describes already happened and stands)."""
    if not events:
        return
    from wsctl.ops.events import record_events

    _warn_lost(await record_events(client, keys, events))


async def finish_recording(recorder: Any) -> Any:
    """Close an :class:`wsctl.ops.events.EventRecorder` (what is queued is written) and warn
    on stderr, in one line, when events were lost; returns its outcome."""
    outcome = await recorder.close()
    _warn_lost(outcome)
    return outcome


def note_robot_event_cap(cap: Any) -> None:
    """One line on stderr when a :class:`wsctl.eventlog.model.RobotEventCap` count left robots of the
    run without their own event (nothing for ``all``, ``none`` or a run within the count)."""
    line = cap.note()
    if line:
        err(f"wsctl: {line}")


def _warn_lost(outcome: Any) -> None:
    if outcome.lost:
        err(
            f"wsctl: warning: {outcome.lost} event(s) not recorded in the event log "
            f"({outcome.error or 'refused'})"
        )
    elif outcome.error:
        err(f"wsctl: warning: event log index not updated ({outcome.error})")


def warn_pass_events(events: PassEvents | None) -> None:
    """The stderr lines about a reap pass's events: events not recorded, robots the
    ``--robot-events`` count left out, a writer index that could not be pruned (the reap it
    follows still stands). Nothing for a dry run (None)."""
    if events is None:
        return
    _warn_lost(events.recorded)
    if events.cap_note:
        err(f"wsctl: {events.cap_note}")
    if events.index.error is not None:
        err(f"wsctl: warning: event log index not pruned ({events.index.error})")
