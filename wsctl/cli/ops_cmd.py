"""``wsctl reap`` and ``wsctl doctor``: cleanup and registry-versus-reality checks."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from wsctl.cli.common import err, on_stop_signals, open_store, run, state
from wsctl.cli.output import Column
from wsctl.errors import UsageError

if TYPE_CHECKING:
    from wsctl.config import Settings
    from wsctl.ops.reap import ReapOptions, ReapReport


def reap(
    ctx: typer.Context,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout", help="Stale after SECONDS without heartbeat (default: config, 90)."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would go; change nothing.")
    ] = False,
    backup: Annotated[
        Path | None, typer.Option("--backup", help="Backup file (JSONL, appended).")
    ] = None,
    no_backup: Annotated[bool, typer.Option("--no-backup", help="Do not write a backup.")] = False,
    instance: Annotated[
        str | None, typer.Option("--instance", help="Only this instance's entries.")
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
        float | None, typer.Option("--every", help="Run a pass every SECONDS until SIGTERM.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Reap at most N per pass.")
    ] = None,
    output: Annotated[str, typer.Option("-o", "--output", help="table or json.")] = "table",
) -> None:
    """Remove stale entries safely: compare-and-delete, with a backup first.

    An entry goes only if it is still exactly what was judged stale (instance_id, conn_id and
    last_heartbeat unchanged): a robot that heartbeats or reconnects meanwhile is kept. Every
    removed entry is first written to a JSONL backup (path printed) that
    `wsctl registry import BACKUP` restores. Exit 0 when the pass ran, 3 on Redis errors.

    Example: wsctl reap --timeout 90 --dry-run
    """
    from wsctl.ops.backup import default_backup_path
    from wsctl.ops.reap import ReapOptions
    from wsctl.registry.model import utcnow

    if output not in ("table", "json"):
        raise UsageError("reap supports -o table or json")
    if backup is not None and no_backup:
        raise UsageError("--backup and --no-backup exclude each other")
    if every is not None and every <= 0:
        raise UsageError("--every must be greater than 0")
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
        report = run(_reap_once(settings, options))
        _show_report(report, output)
    else:
        run(_reap_forever(settings, options, every, output))


async def _reap_once(settings: Settings, options: ReapOptions) -> ReapReport:
    from wsctl.ops.reap import reap as reap_pass

    async with open_store(settings) as store:
        if sys.stderr.isatty():
            from rich.progress import Progress, SpinnerColumn, TextColumn

            from wsctl.cli.output import make_console

            with Progress(
                SpinnerColumn(),
                TextColumn("examined {task.completed} entries"),
                console=make_console(stderr=True),
                transient=True,
            ) as bar:
                task = bar.add_task("reap", total=None)
                return await reap_pass(store, options, lambda n: bar.update(task, completed=n))
        return await reap_pass(store, options)


async def _reap_forever(
    settings: Settings, options: ReapOptions, every: float, output: str
) -> None:
    """Long-lived reaper: one log line (or one JSON line) per pass until SIGTERM/SIGINT."""
    import asyncio
    import contextlib
    import json
    from dataclasses import replace

    from wsctl.ops.backup import default_backup_path
    from wsctl.ops.reap import reap as reap_pass
    from wsctl.registry.model import utcnow

    stop = asyncio.Event()
    on_stop_signals(stop.set)
    async with open_store(settings) as store:
        while not stop.is_set():
            pass_options = options
            if options.backup is not None and not options.dry_run:
                pass_options = replace(options, backup=default_backup_path("reap", utcnow()))
            report = await reap_pass(store, pass_options)
            if output == "json":
                summary = {k: v for k, v in report.as_dict().items() if k != "items"}
                sys.stdout.write(json.dumps(summary) + "\n")
                sys.stdout.flush()
            else:
                err(_one_line(report))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every)


def _one_line(report: ReapReport) -> str:
    verb = "would reap" if report.dry_run else "reaped"
    count = report.candidates if report.dry_run else report.reaped
    reasons = ", ".join(f"{k}={v}" for k, v in sorted(report.by_reason.items())) or "none"
    text = (
        f"reap: examined {report.examined}, {verb} {count} ({reasons}), "
        f"kept refreshed {report.skipped_refreshed}, malformed kept {report.malformed_kept} "
        f"in {report.seconds:.2f}s"
    )
    if report.backup:
        text += f"; backup {report.backup}"
    return text


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
                Column("detail", "DETAIL"),
            ],
            "table",
        )
    err(_one_line(report))
