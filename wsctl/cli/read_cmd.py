"""``wsctl list connections|instances|robots`` and ``wsctl show ROBOT``: read the registry."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from wsctl.cli.columns import Column
from wsctl.cli.common import (
    OutputOpt,
    StaleTimeoutOpt,
    check_output,
    err,
    open_store,
    run,
    seconds_flag,
    state,
)
from wsctl.cli.completion_cmd import complete_instance_ids, complete_robot_ids
from wsctl.cli.output import TABLE_ROWS
from wsctl.errors import NotFound, UsageError
from wsctl.ops.listing import (
    ConnectionFilter,
    SortKey,
    connection_row_batches,
    top_connection_rows,
)
from wsctl.shell import quoted

if TYPE_CHECKING:
    from wsctl.config import Settings

list_app = typer.Typer(
    help="List registry entries, instances or robots.\n\n"
    "Example: wsctl list connections --stale -o jsonl",
    no_args_is_help=True,
)


def _age(value: Any) -> str:
    from wsctl.durations import human_duration

    return human_duration(value)


def _freshness_style(timeout: float) -> Any:
    def style(row: dict[str, Any]) -> str | None:
        if row.get("state") == "malformed":
            return "magenta"
        age = row.get("heartbeat_age_s")
        if age is None:
            return None
        if age > timeout:
            return "red"
        if age > timeout / 3:
            return "yellow"
        return "green"

    return style


def connection_columns(timeout: float) -> list[Column]:
    """Columns of ``wsctl list connections``; ``timeout`` colours stale heartbeats."""
    return [
        Column("robot_id", "ROBOT"),
        Column("instance_id", "INSTANCE"),
        Column("state", "STATE", style=_freshness_style(timeout)),
        Column("status", "STATUS", wide_only=True),
        Column(
            "heartbeat_age_s",
            "HEARTBEAT",
            fmt=_age,
            style=_freshness_style(timeout),
            justify="right",
        ),
        Column("connected_for_s", "CONNECTED", fmt=_age, justify="right"),
        Column("websocket_state", "WS STATE", wide_only=True),
        Column("conn_id", "CONN ID", wide_only=True),
        Column("last_heartbeat", "LAST HEARTBEAT", wide_only=True),
        Column("connected_at", "CONNECTED AT", wide_only=True),
        Column("reason", "REASON", wrap=True),
    ]


@list_app.command("connections")
def list_connections(
    ctx: typer.Context,
    instance: Annotated[
        str | None,
        typer.Option(
            "--instance", help="Only this instance.", autocompletion=complete_instance_ids
        ),
    ] = None,
    stale: Annotated[bool, typer.Option("--stale", help="Only stale entries.")] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="Only fresh (online) entries.")] = False,
    malformed: Annotated[bool, typer.Option("--malformed", help="Only malformed entries.")] = False,
    older_than: Annotated[
        float | None,
        typer.Option(
            "--older-than",
            help="Heartbeat older than SECONDS.",
            callback=seconds_flag("--older-than", wait=False),
        ),
    ] = None,
    robot: Annotated[
        str | None, typer.Option("--robot", help="Robot id glob (Redis MATCH syntax).")
    ] = None,
    sort: Annotated[
        SortKey | None,
        typer.Option("--sort", help="Sort order (tables: robot by default)."),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most N rows.")] = None,
    timeout: StaleTimeoutOpt = None,
    output: OutputOpt = "table",
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Refresh the table in place (Ctrl-C stops).")
    ] = False,
    interval: Annotated[
        float,
        typer.Option(
            "--interval", help="--watch refresh seconds.", callback=seconds_flag("--interval")
        ),
    ] = 2.0,
) -> None:
    """List connection entries with their heartbeat age and state.

    jsonl/csv/json stream in SCAN order with flat memory. Tables are sorted (by robot unless
    --sort) and show the first 1000 rows unless --limit is given; stderr says how many more
    matched. --sort holds only --limit rows in memory (all rows without a limit).

    Example: wsctl list connections --instance gw-a --stale -o jsonl
    """
    fmt = check_output(output)
    if sum((stale, fresh, malformed)) > 1:
        raise UsageError("--stale, --fresh and --malformed exclude each other")
    chosen = "stale" if stale else "fresh" if fresh else "malformed" if malformed else None
    settings = state(ctx).settings(timeout=timeout)
    flt = ConnectionFilter(instance=instance, state=chosen, older_than=older_than)
    if watch:
        if fmt not in ("table", "wide"):
            raise UsageError("--watch needs -o table or wide")
        if not sys.stdout.isatty():  # it redraws in place: elsewhere it would write nothing
            raise UsageError("--watch needs a terminal; for a file or a pipe, list without --watch")
        run(_watch(settings, robot, flt, sort or SortKey.robot, limit or 200, fmt, interval))
        return
    _list_and_note(settings, robot, flt, sort, limit, fmt, "entries")


def _list_and_note(
    settings: Settings,
    robot: str | None,
    flt: ConnectionFilter,
    sort: SortKey | None,
    limit: int | None,
    fmt: str,
    what: str,
    columns: list[Column] | None = None,
) -> None:
    """List; tables are sorted (by robot unless --sort) and capped at TABLE_ROWS unless
    --limit is given; whenever rows were left out a note on stderr says how many matched
    (``showing 3 of 12 entries``), or for a stream cut by --limit that more may match."""
    capped = False
    if fmt in ("table", "wide"):
        sort = sort or SortKey.robot
        if limit is None:
            limit, capped = TABLE_ROWS, True
    matched, cut = run(_list_connections(settings, robot, flt, sort, limit, fmt, columns))
    if limit is not None and matched is not None and matched > limit:
        err(
            f"showing {limit} of {matched} {what} (sorted by {sort})"
            + ("; --limit N shows more, -o jsonl or -o csv streams them all" if capped else "")
        )
    elif cut:
        err(f"showing the first {limit} {what} found (--limit); more may match")


async def _list_connections(
    settings: Settings,
    robot: str | None,
    flt: ConnectionFilter,
    sort: SortKey | None,
    limit: int | None,
    fmt: str,
    columns: list[Column] | None = None,
) -> tuple[int | None, bool]:
    """Write the rows; returns how many matched when they were sorted (all were read), and
    whether an unsorted stream stopped at ``limit`` before the end (so more may match).
    With ``columns``, every format carries only those keys (``list robots``)."""
    from wsctl.cli.output import RowWriter

    writer = RowWriter(columns or connection_columns(settings.timeout), fmt)
    keys = [c.key for c in columns] if columns else None

    def project(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return rows if keys is None else [{k: row.get(k) for k in keys} for row in rows]

    matched, cut = None, False
    async with open_store(settings) as store:
        if sort is None:
            async for rows in connection_row_batches(store, robot, flt, settings.timeout):
                if limit is not None:
                    cut = len(rows) > limit - writer.count
                    rows = rows[: limit - writer.count]
                writer.write_many(project(rows))
                if limit is not None and writer.count >= limit:
                    cut = True
                    break
        else:
            top = await top_connection_rows(store, robot, flt, settings.timeout, sort, limit)
            writer.write_many(project(top.result()))
            matched = top.seen
    writer.close()
    return matched, cut


async def _watch(
    settings: Settings,
    robot: str | None,
    flt: ConnectionFilter,
    sort: SortKey,
    limit: int,
    fmt: str,
    interval: float,
) -> None:
    import asyncio

    from rich.live import Live

    from wsctl.cli.tables import build_table, make_console
    from wsctl.durations import counted

    columns = connection_columns(settings.timeout)
    async with open_store(settings) as store:
        with Live(console=make_console(), auto_refresh=False) as live:
            while True:
                top = await top_connection_rows(store, robot, flt, settings.timeout, sort, limit)
                shown = top.result()
                title = f"{counted(top.seen, 'connection')} at {time.strftime('%H:%M:%S')}"
                if top.seen > len(shown):
                    title += f", first {len(shown)} by {sort}"
                live.update(
                    build_table(shown, columns, wide=fmt == "wide", title=title),
                    refresh=True,
                )
                await asyncio.sleep(interval)


def instance_columns() -> list[Column]:
    """Columns of ``wsctl list instances``."""
    return [
        Column("instance_id", "INSTANCE"),
        Column("liveness", "LIVENESS"),
        Column("draining", "DRAINING", fmt=lambda v: "draining" if v else "-"),
        Column("connections", "CONNS", justify="right"),
        Column("fresh", "FRESH", justify="right"),
        Column("stale", "STALE", justify="right"),
        Column("malformed", "MALFORMED", justify="right", optional=True),
        Column("newest_heartbeat_age_s", "NEWEST HB", fmt=_age, justify="right", optional=True),
        Column("oldest_heartbeat_age_s", "OLDEST HB", fmt=_age, justify="right", optional=True),
        Column("ws_url", "WS URL", wide_only=True),
        Column("pid", "PID", wide_only=True),
        Column("version", "VERSION", wide_only=True),
        Column("started_at", "STARTED AT", wide_only=True),
    ]


@list_app.command("instances")
def list_instances(
    ctx: typer.Context, timeout: StaleTimeoutOpt = None, output: OutputOpt = "table"
) -> None:
    """List every instance seen in the registry or in liveness records.

    LIVENESS is alive (a fresh liveness record), dead (a record older than the timeout) or
    unknown (only seen in connection entries, as with the original design's gateways).
    DRAINING says which instances are being drained (`wsctl drain`) and refuse new robots.

    Example: wsctl list instances -o json
    """
    fmt = check_output(output)
    settings = state(ctx).settings(timeout=timeout)
    rows, cluster, per_node = run(_instances(settings, fmt in ("table", "wide")))
    from wsctl.cli.output import print_cluster, render

    render(rows, instance_columns(), fmt)
    if cluster is not None:
        print_cluster(cluster, per_node)


async def _instances(
    settings: Settings, with_cluster: bool
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, dict[str, int]]:
    from wsctl.ops.summary import summarize_instances

    async with open_store(settings) as store:
        records = [r async for r in store.instance_records()]
        rows = await summarize_instances(store, records, settings.timeout)
        if not with_cluster:
            return rows, None, {}
        cluster, per_node = await store.cluster_view(count_single_node=False)
        return rows, cluster, per_node


def robot_columns(timeout: float) -> list[Column]:
    """Columns of ``wsctl list robots``; ``timeout`` colours stale heartbeats."""
    return [
        Column("robot_id", "ROBOT"),
        Column("state", "STATE", style=_freshness_style(timeout)),
        Column("instance_id", "INSTANCE"),
    ]


@list_app.command("robots")
def list_robots(
    ctx: typer.Context,
    robot: Annotated[str | None, typer.Option("--robot", help="Robot id glob.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most N rows.")] = None,
    timeout: StaleTimeoutOpt = None,
    output: OutputOpt = "table",
) -> None:
    """List robots compactly: id, state (online/stale/malformed) and instance.

    Every format carries just robot_id, state and instance_id (list connections has the rest).
    Tables are sorted by robot and show the first 1000 unless --limit; csv/jsonl stream all.

    Example: wsctl list robots -o csv > robots.csv
    """
    fmt = check_output(output)
    settings = state(ctx).settings(timeout=timeout)
    columns = robot_columns(settings.timeout)
    _list_and_note(settings, robot, ConnectionFilter(), None, limit, fmt, "robots", columns)


def show(
    ctx: typer.Context,
    robot_id: Annotated[
        str,
        typer.Argument(help="The robot id (exact; no glob).", autocompletion=complete_robot_ids),
    ],
    timeout: StaleTimeoutOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Show one robot's entry: every field plus heartbeat age and whether it is stale, ending
    with the robot's last events (`wsctl history ROBOT` lists them all).

    The id is exact: `wsctl show 'robot*'` shows the robot literally named robot*.
    Exits 1 when the robot has no entry (the error names its last event, if any).

    Example: wsctl show robot-17 -o json
    """
    from wsctl.registry.keys import validate_existing_id

    fmt = check_output(output)
    validate_existing_id(robot_id)
    settings = state(ctx).settings(timeout=timeout)
    obj = run(_show(settings, robot_id))
    from wsctl.cli.eventlog import write_recent
    from wsctl.cli.output import render_object

    if fmt in ("json", "jsonl"):
        render_object(obj, fmt)
        return
    recent = obj.pop("last_events", [])
    problem = obj.pop("last_events_error", "")
    render_object(obj, "table" if fmt == "wide" else fmt)
    if fmt != "csv":
        write_recent(recent, problem)


async def _show(settings: Settings, robot_id: str) -> dict[str, Any]:
    from wsctl.cli.eventlog import recent_rows, row_line
    from wsctl.ops.views import connection_row
    from wsctl.registry import instances as inst
    from wsctl.registry.model import utcnow

    async with open_store(settings) as store:
        entry = await store.get(robot_id)
        recent, problem = await recent_rows(store.client, store.keys, robot_id)
        if entry is None:
            last = f"; last event: {row_line(recent[-1])}" if recent else ""
            raise NotFound(f"robot {quoted(robot_id)} has no registry entry{last}")
        now = utcnow()
        row = connection_row(entry, now, settings.timeout)
        owner = None
        if entry.instance_id:
            record = await store.instance_record(entry.instance_id)
            owner = inst.liveness(record, now, settings.timeout).value
        return {
            **row,
            "key": store.keys.conn_key(robot_id),
            "key_type": entry.key_type,
            "timeout_s": settings.timeout,
            "owner_liveness": owner,
            "fields": dict(entry.fields),
            "last_events": recent,
            **({"last_events_error": problem} if problem else {}),
        }
