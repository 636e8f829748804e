"""``wsctl reap`` and ``wsctl doctor``: cleanup and registry-versus-reality checks."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from wsctl.cli.columns import Column, printable
from wsctl.cli.common import (
    BackupOpt,
    NoBackupOpt,
    ReportOutput,
    RobotEventsOpt,
    StaleTimeoutOpt,
    check_report_output,
    err,
    on_stop_signals,
    open_store,
    run,
    seconds_flag,
    state,
)
from wsctl.cli.completion_cmd import complete_instance_ids, complete_robot_ids
from wsctl.cli.output import print_cluster
from wsctl.durations import counted
from wsctl.errors import EXIT_INTERRUPTED, UsageError, WsctlError
from wsctl.eventlog.model import DEFAULT_ROBOT_EVENTS, parse_robot_events
from wsctl.shell import quote as shell_quote

if TYPE_CHECKING:
    from wsctl.config import Settings
    from wsctl.ops.reap import ReapOptions, ReapReport


def reap(
    ctx: typer.Context,
    timeout: StaleTimeoutOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would go; change nothing.")
    ] = False,
    backup: BackupOpt = None,
    no_backup: NoBackupOpt = False,
    instance: Annotated[
        str | None,
        typer.Option(
            "--instance", help="Only this instance's entries.", autocompletion=complete_instance_ids
        ),
    ] = None,
    dead_instances: Annotated[
        bool,
        typer.Option(
            "--dead-instances",
            help="Also reap entries of instances with no liveness record that do not listen.",
        ),
    ] = False,
    include_malformed: Annotated[
        bool, typer.Option("--include-malformed", help="Also delete malformed entries.")
    ] = False,
    every: Annotated[
        float | None,
        typer.Option(
            "--every",
            help="Run a pass every SECONDS until SIGTERM.",
            callback=seconds_flag("--every", wait=False),
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Reap at most N per pass.")
    ] = None,
    robot_events: RobotEventsOpt = str(DEFAULT_ROBOT_EVENTS),
    output: ReportOutput = "table",
) -> None:
    """Remove stale entries safely: compare-and-delete, with a backup first.

    An entry goes only if it is still exactly what was judged stale (instance_id, conn_id and
    last_heartbeat unchanged): a robot that heartbeats or reconnects meanwhile is kept. Every
    removed entry is first written to a JSONL backup (path printed) that
    `wsctl registry restore BACKUP` puts back. Each pass records one summary event, and a
    `reaped` event per robot for its first --robot-events robots (`all` records every one,
    at a cost: see the docs, Events and history). Exit 0 when the pass ran, 3 on
    Redis errors, 130 on Ctrl-C (naming the backup of what was removed).

    Example: wsctl reap --timeout 90 --dry-run
    """
    from wsctl.ops.backup import default_backup_path
    from wsctl.ops.reap import ReapOptions
    from wsctl.registry.model import utcnow

    check_report_output(output, "reap")
    robot_event_limit = parse_robot_events(robot_events)
    if backup is not None and no_backup:
        raise UsageError("--backup and --no-backup exclude each other")
    if backup is not None:
        from wsctl.ops.backup import check_backup_path

        check_backup_path(backup)
    settings = state(ctx).settings(timeout=timeout)
    path = None if no_backup else (backup or default_backup_path("reap", utcnow()))
    options = ReapOptions(
        timeout=settings.timeout,
        dry_run=dry_run,
        backup=path,
        instance=instance,
        dead_instances=dead_instances,
        include_malformed=include_malformed,
        limit=limit,
    )
    if every is None:
        with _naming_backup(lambda: options.backup):  # Ctrl-C part-way: where they are
            report = run(_reap_once(settings, options, robot_event_limit))
        _show_report(report, output)
    else:
        run(_reap_forever(settings, options, every, output, robot_event_limit))


@contextlib.contextmanager
def _naming_backup(backup_of: Callable[[], Path | None]) -> Iterator[None]:
    """A reap that fails part-way (Redis stalled or gone) or is interrupted (Ctrl-C) may have
    deleted some entries, each backed up first: its one-line error says where they are and how
    to restore them. ``backup_of`` gives the backup file of the pass that failed. Wraps
    :func:`open_store`, where Redis errors become :class:`WsctlError`, and the command's
    ``run``, where Ctrl-C arrives as KeyboardInterrupt."""

    def backed_up() -> Path | None:
        path = backup_of()
        if path is None or not path.is_file() or not path.stat().st_size:
            return None
        return path

    try:
        yield
    except WsctlError as exc:
        path = backed_up()
        if path is None or "backed up in" in exc.message:
            raise
        raise type(exc)(
            f"{exc.message}; entries removed before the failure are backed up in {path} "
            f"(undo: wsctl registry restore {shell_quote(str(path))})",
            exit_code=exc.exit_code,
        ) from exc
    except KeyboardInterrupt:
        path = backed_up()
        if path is None:
            raise
        raise WsctlError(
            f"interrupted; entries removed before it are backed up in {path} "
            f"(undo: wsctl registry restore {shell_quote(str(path))})",
            exit_code=EXIT_INTERRUPTED,
        ) from None


async def _reap_once(
    settings: Settings, options: ReapOptions, robot_event_limit: int | None = DEFAULT_ROBOT_EVENTS
) -> ReapReport:
    from wsctl.cli.eventlog import warn_pass_events
    from wsctl.ops.reap_events import reap_recorded

    with _naming_backup(lambda: options.backup):
        async with open_store(settings) as store:
            if sys.stderr.isatty():
                from rich.progress import Progress, SpinnerColumn, TextColumn

                from wsctl.cli.tables import make_console

                with Progress(
                    SpinnerColumn(),
                    TextColumn("examined {task.completed} entries"),
                    console=make_console(stderr=True),
                    transient=True,
                ) as bar:
                    task = bar.add_task("reap", total=None)
                    report, events = await reap_recorded(
                        store,
                        store.client,
                        options,
                        robot_event_limit,
                        lambda n: bar.update(task, completed=n),
                    )
            else:
                report, events = await reap_recorded(
                    store, store.client, options, robot_event_limit
                )
            warn_pass_events(events)
            return report


async def _reap_forever(
    settings: Settings,
    options: ReapOptions,
    every: float,
    output: str,
    robot_event_limit: int | None = DEFAULT_ROBOT_EVENTS,
) -> None:
    """Long-lived reaper: one log line (or one JSON line) per pass until SIGTERM/SIGINT."""
    import asyncio
    import json

    from wsctl.cli.eventlog import warn_pass_events
    from wsctl.ops.reap import ReapLoop
    from wsctl.ops.reap_events import PassEvents, reap_forever

    def show(at: str, report: ReapReport, events: PassEvents | None) -> None:
        warn_pass_events(events)
        if output == "json":
            summary = {k: v for k, v in report.as_dict().items() if k != "items"}
            sys.stdout.write(json.dumps({"at": at, **summary}) + "\n")
            sys.stdout.flush()
        else:
            err(f"{at} {report.summary()}")

    stop = asyncio.Event()
    on_stop_signals(stop.set)
    loop = ReapLoop(options, every)
    with _naming_backup(lambda: loop.backup):
        async with open_store(settings) as store:
            await reap_forever(store, store.client, loop, stop, show, robot_event_limit)


def _show_report(report: ReapReport, output: str) -> None:
    if output == "json":
        import json

        sys.stdout.write(json.dumps(report.as_dict(), ensure_ascii=False) + "\n")
        return
    from wsctl.cli.output import render

    rows: list[dict[str, Any]] = [
        {"group": "instance", "name": name, "count": count}
        for name, count in sorted(report.by_instance.items())
    ] + [
        {"group": "reason", "name": name, "count": count}
        for name, count in sorted(report.by_reason.items())
    ]
    if rows:
        title = "would reap" if report.dry_run else "reaped"
        render(
            rows,
            [
                Column("group", "BY"),
                Column("name", "NAME"),
                Column("count", "COUNT", justify="right"),
            ],
            "table",
            title=title,
        )
    if report.dry_run and report.items:
        render(
            [i for i in report.items if i["result"] == "would_reap"][:200],
            [
                Column("robot_id", "ROBOT"),
                Column("instance_id", "INSTANCE"),
                Column("reason", "REASON"),
                Column("detail", "DETAIL", wrap=True),
            ],
            "table",
        )
    err(report.summary())
    if report.backup:
        err(f"undo: wsctl registry restore {shell_quote(report.backup)}")


def doctor(
    ctx: typer.Context,
    robot_id: Annotated[
        str | None,
        typer.Argument(
            help="Check one robot end to end.",
            show_default=False,
            autocompletion=complete_robot_ids,
        ),
    ] = None,
    fix: Annotated[
        bool, typer.Option("--fix", help="Apply the safe fixes (ghosts, orphans).")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="With --fix: only say what.")] = False,
    timeout: StaleTimeoutOpt = None,
    output: ReportOutput = "table",
) -> None:
    """Check the registry against reality: every live instance is asked for its sockets.

    Finds ghosts (registered, no socket), orphans (socket, no entry), robots registered to one
    instance but connected to another, entries of dead or unknown instances, instances alive
    but not listening, clock skew, malformed and stale entries, prefix collisions and, on a
    cluster, uncovered slots. --fix applies only the safe fixes: fenced deletes of ghosts and
    asking instances to re-register orphans. Exit 0 healthy, 1 problems found, 3 Redis errors.

    Example: wsctl doctor --fix --dry-run; wsctl doctor robot-17
    """
    check_report_output(output, "doctor")
    if dry_run and not fix:
        raise UsageError("--dry-run goes with --fix")
    settings = state(ctx).settings(timeout=timeout)
    if robot_id is not None:
        from wsctl.registry.keys import validate_existing_id

        validate_existing_id(robot_id)
        if fix:
            raise UsageError("--fix checks the whole registry; run it without ROBOT")
        result = run(_doctor_robot(settings, robot_id))
        _show_robot(result, output)
        healthy = bool(result["healthy"])
    else:
        report = run(_doctor(settings, fix, dry_run))
        _show_doctor(report, output)
        healthy = report["healthy"]
    if not healthy:
        raise typer.Exit(1)


async def _doctor(settings: Settings, apply_fix: bool, dry_run: bool) -> dict[str, Any]:
    from wsctl.ops.doctor.fleet import doctor as run_doctor
    from wsctl.ops.doctor.fleet import fix as run_fix

    async with open_store(settings) as store:
        report = await run_doctor(store, settings.timeout)
        if apply_fix:
            report.fixed = await run_fix(store, report, dry_run)
        return report.as_dict()


async def _doctor_robot(settings: Settings, robot_id: str) -> dict[str, Any]:
    from wsctl.cli.eventlog import recent_rows
    from wsctl.ops.doctor.robot import doctor_robot

    async with open_store(settings) as store:
        result = await doctor_robot(store, robot_id, settings.timeout)
        result["last_events"], problem = await recent_rows(store.client, store.keys, robot_id)
        if problem:
            result["last_events_error"] = problem
        return result


def _finding_columns() -> list[Column]:
    def style(row: dict[str, Any]) -> str | None:
        return {"error": "red", "warning": "yellow"}.get(row["severity"])

    return [
        Column("severity", "SEVERITY", style=style),
        Column("kind", "KIND"),
        Column("robot_id", "ROBOT"),
        Column("instance_id", "INSTANCE"),
        Column("detail", "DETAIL", wrap=True),
    ]


def _show_doctor(report: dict[str, Any], output: str) -> None:
    import json

    if output == "json":
        sys.stdout.write(json.dumps(report, ensure_ascii=False, indent=2) + "\n")
        return
    from wsctl.cli.output import render

    render(
        report["instances"],
        [
            Column("instance_id", "INSTANCE"),
            Column("liveness", "LIVENESS"),
            Column("listening", "LISTENING"),
            Column("entries", "ENTRIES", justify="right"),
            Column("sockets", "SOCKETS", justify="right"),
        ],
        "table",
        title=counted(report["entries"], "entry", "entries"),
    )
    print_cluster(report.get("cluster"), report.get("keys_per_node", {}))
    if report["findings"]:
        render(report["findings"], _finding_columns(), "table", title="findings")
        print_fixes(report["findings"])
    for item in report.get("fixed", []):
        target = item.get("robot_id") or item.get("instance_id")
        sys.stdout.write(printable(f"fix {item['kind']} {target}: {item['result']}") + "\n")
    counts = ", ".join(f"{v} {k}" for k, v in sorted(report["counts"].items())) or "no findings"
    sys.stdout.write(("healthy" if report["healthy"] else "problems found") + f" ({counts})\n")


def print_fixes(findings: list[dict[str, Any]]) -> None:
    """Suggested commands, each once and on a line of its own (never wrapped inside a table
    cell, so they can be copied), in the order of the findings that suggest them."""
    fixes = list(dict.fromkeys(f["fix"] for f in findings if f.get("fix")))
    if fixes:
        sys.stdout.write("next steps:\n")
        for command in fixes:
            sys.stdout.write(f"  {printable(command)}\n")


def _show_robot(result: dict[str, Any], output: str) -> None:
    import json

    if output == "json":
        sys.stdout.write(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
        return
    from wsctl.cli.eventlog import write_recent
    from wsctl.cli.output import render, render_object

    hidden = ("findings", "fields", "last_events", "last_events_error")
    summary = {k: v for k, v in result.items() if k not in hidden}
    render_object(summary, "table")
    if result["findings"]:
        render(result["findings"], _finding_columns(), "table", title="findings")
        print_fixes(result["findings"])
    sys.stdout.write(("healthy" if result["healthy"] else "problems found") + "\n")
    write_recent(result.get("last_events", []), result.get("last_events_error", ""))
