"""``wsctl events`` and ``wsctl history ROBOT``: the fleet event log."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from wsctl.cli.common import (
    OutputOpt,
    check_output,
    err,
    keyspace_of,
    open_client,
    run,
    seconds_flag,
    state,
)
from wsctl.cli.completion_cmd import complete_instance_ids, complete_robot_ids
from wsctl.cli.eventlog import event_columns, event_line
from wsctl.errors import NotFound, UsageError
from wsctl.shell import quoted

if TYPE_CHECKING:
    from wsctl.config import Settings
    from wsctl.eventlog.model import StoredEvent
    from wsctl.ops.events import EventFilter

__all__ = ["events", "history"]


def _row(event: StoredEvent, fmt: str) -> dict[str, Any]:
    """An event's row; in csv the detail object is one JSON text cell."""
    row = event.as_row()
    if fmt == "csv":
        import json

        row["detail"] = json.dumps(row["detail"], ensure_ascii=False, default=str)
    return row


def _note_malformed(events: list[StoredEvent]) -> None:
    bad = sum(1 for e in events if e.problem)
    if bad:
        err(
            f"wsctl: warning: {bad} malformed event(s) in the streams; listed with their "
            "problem (-o wide or json)"
        )


def events(
    ctx: typer.Context,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events (Ctrl-C stops).")
    ] = False,
    robot: Annotated[str | None, typer.Option("--robot", help="Robot id glob.")] = None,
    instance: Annotated[
        str | None,
        typer.Option(
            "--instance", help="Only events of this instance.", autocompletion=complete_instance_ids
        ),
    ] = None,
    event: Annotated[
        list[str] | None,
        typer.Option("--event", help="Only this event name (repeatable, or comma-separated)."),
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only the last DURATION: 90s, 10m, 2h, 7d.")
    ] = None,
    limit: Annotated[
        int,
        typer.Option("--limit", min=0, help="The newest N events (0: all in the window)."),
    ] = 1000,
    for_seconds: Annotated[
        float | None,
        typer.Option(
            "--for",
            help="With --follow: stop after SECONDS (default: Ctrl-C).",
            callback=seconds_flag("--for", wait=False),
        ),
    ] = None,
    output: OutputOpt = "table",
) -> None:
    """List fleet events (connects, disconnects, supersessions, kicks, drains, reaps...)
    merged by time across every instance's stream and the CLI's, oldest first.

    Without --since the newest --limit events are shown. --follow then keeps printing new
    events as they arrive (polled every 0.5 s) until Ctrl-C or --for. A malformed stream
    entry is listed with a problem, never skipped silently.

    Example: wsctl events --since 10m --robot 'robot-1*' --event disconnected -o jsonl
    """
    from wsctl.eventlog.model import EventName
    from wsctl.ops.events import EventFilter, parse_since

    fmt = check_output(output)
    names = frozenset(n.strip() for item in (event or []) for n in item.split(",") if n.strip())
    unknown = sorted(names - {e.value for e in EventName})
    if unknown:
        raise UsageError(
            f"unknown event {unknown[0]!r}; known: {', '.join(e.value for e in EventName)}"
        )
    if for_seconds is not None and (not follow or for_seconds <= 0):
        raise UsageError("--for needs --follow and a positive number of seconds")
    flt = EventFilter(
        robot_glob=robot,
        instance=instance,
        events=names,
        since_s=parse_since(since) if since is not None else None,
    )
    settings = state(ctx).settings()
    if not follow:  # Ctrl-C stops a listing like any command: exit 130
        run(_events(settings, flt, limit or None, fmt, follow, for_seconds))
        return
    try:
        run(_events(settings, flt, limit or None, fmt, follow, for_seconds))
    except KeyboardInterrupt:
        sys.stdout.flush()  # Ctrl-C ends --follow: what was printed stays, exit 0


async def _events(
    settings: Settings,
    flt: EventFilter,
    limit: int | None,
    fmt: str,
    follow: bool,
    for_seconds: float | None,
) -> None:
    import time

    from wsctl.cli.output import RowWriter, render
    from wsctl.ops.events import follow_events, read_events

    keys = keyspace_of(settings)
    async with open_client(settings) as client:
        before = time.time()
        listed = await read_events(client, keys, flt, limit)
        _note_malformed(listed)
        if not follow:
            render((_row(e, fmt) for e in listed), event_columns(), fmt)
            return
        streaming = fmt not in ("table", "wide")
        writer = RowWriter(event_columns(), "jsonl" if fmt == "json" else fmt)
        if streaming:
            writer.write_many([e.as_row() for e in listed])
        else:
            for e in listed:
                sys.stdout.write(event_line(e) + "\n")
        sys.stdout.flush()
        async for batch in follow_events(
            client, keys, flt, after=listed, duration=for_seconds, start=before
        ):
            _note_malformed(batch)
            if streaming:
                writer.write_many([e.as_row() for e in batch])
            else:
                for e in batch:
                    sys.stdout.write(event_line(e) + "\n")
            sys.stdout.flush()


def history(
    ctx: typer.Context,
    robot_id: Annotated[
        str, typer.Argument(help="The robot id (exact).", autocompletion=complete_robot_ids)
    ],
    limit: Annotated[
        int, typer.Option("--limit", min=0, help="Only the newest N events (0: all kept).")
    ] = 0,
    output: OutputOpt = "table",
) -> None:
    """One robot's events, oldest first, from every writer: its connects, disconnects (close
    code, session length), supersessions, kicks, drains, reaps, with instance and reason.

    Reads the robot's own capped stream (its last ~200 events by default): one read, fast
    whatever the size of the fleet's log. Exits 1 when the robot has no events.

    Example: wsctl history robot-17 -o json
    """
    from wsctl.registry.keys import validate_existing_id

    fmt = check_output(output)
    validate_existing_id(robot_id)  # exact bytes: what show and doctor accept
    found = run(_history(state(ctx).settings(), robot_id, limit or None))
    if not found:
        raise NotFound(f"robot {quoted(robot_id)} has no events")
    _note_malformed(found)
    from wsctl.cli.output import render

    render((_row(e, fmt) for e in found), event_columns(), fmt)


async def _history(settings: Settings, robot_id: str, limit: int | None) -> list[StoredEvent]:
    from wsctl.ops.events import robot_history

    async with open_client(settings) as client:
        return await robot_history(client, keyspace_of(settings), robot_id, limit)
