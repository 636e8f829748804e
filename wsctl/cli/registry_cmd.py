"""``wsctl registry set|rm|export|import``: edit the registry safely.

Every write has ``--dry-run``; deletes are compare-and-delete and back the entry up first.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from wsctl.cli.common import OUTPUT_HELP, check_output, err, open_store, run, state
from wsctl.cli.output import Column
from wsctl.errors import EXIT_NEGATIVE, NotFound, UsageError

if TYPE_CHECKING:
    from wsctl.config import Settings

registry_app = typer.Typer(
    help="Edit the registry safely: set, rm, export, import.", no_args_is_help=True
)

DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Show what would change; change nothing.")
]
OutputOpt = Annotated[str, typer.Option("-o", "--output", help=OUTPUT_HELP)]


def parse_assignments(pairs: list[str]) -> dict[str, str]:
    """``field=value`` arguments into a mapping; timestamps must parse."""
    from wsctl.registry.model import F_CONNECTED_AT, F_LAST_HEARTBEAT, parse_timestamp

    mapping: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"{pair!r} is not field=value")
        if name in (F_CONNECTED_AT, F_LAST_HEARTBEAT):
            try:
                parse_timestamp(value)
            except ValueError as exc:
                raise UsageError(f"{name}: {exc}") from None
        mapping[name] = value
    return mapping


@registry_app.command("set")
def set_fields(
    ctx: typer.Context,
    robot_id: Annotated[str, typer.Argument(help="Robot id (exact).")],
    assignments: Annotated[list[str], typer.Argument(help="field=value pairs.")],
    create: Annotated[
        bool, typer.Option("--create", help="Create the entry if the robot has none.")
    ] = False,
    touch: Annotated[
        bool, typer.Option("--touch", help="Also set last_heartbeat to now (UTC).")
    ] = False,
    dry_run: DryRunOpt = False,
) -> None:
    """Set fields of one entry, keeping all other fields.

    Example: wsctl registry set robot-17 status=maintenance --touch
    """
    from wsctl.registry.keys import validate_id

    validate_id(robot_id)
    mapping = parse_assignments(assignments)
    from wsctl.registry.model import F_ROBOT_ID

    if mapping.get(F_ROBOT_ID, robot_id) != robot_id:
        raise UsageError("the robot_id field must equal the robot id of the key")
    run(_set(state(ctx).settings(), robot_id, mapping, create, touch, dry_run))


async def _set(
    settings: Settings,
    robot_id: str,
    mapping: dict[str, str],
    create: bool,
    touch: bool,
    dry_run: bool,
) -> None:
    from wsctl.registry.model import (
        F_CONNECTED_AT,
        F_LAST_HEARTBEAT,
        F_ROBOT_ID,
        format_ts,
        utcnow,
    )

    now = format_ts(utcnow())
    if touch:
        mapping[F_LAST_HEARTBEAT] = now
    async with open_store(settings) as store:
        entry = await store.get(robot_id)
        if entry is None:
            if not create:
                raise NotFound(f"robot {robot_id!r} has no registry entry (use --create)")
            mapping = {F_ROBOT_ID: robot_id, F_CONNECTED_AT: now, F_LAST_HEARTBEAT: now, **mapping}
        elif entry.key_type != "hash":
            raise UsageError(
                f"{store.keys.conn_key(robot_id)} is a {entry.key_type}, not a hash; "
                f"remove it first with: wsctl registry rm {robot_id}"
            )
        verb = "would set" if dry_run else "set"
        if not dry_run:
            await store.set_fields(robot_id, mapping)
        fields = ", ".join(f"{k}={v}" for k, v in mapping.items())
        err(f"{verb} {robot_id}: {fields}")


def rm_columns() -> list[Column]:
    return [Column("robot_id", "ROBOT"), Column("result", "RESULT"), Column("detail", "DETAIL")]


@registry_app.command("rm")
def remove(
    ctx: typer.Context,
    robot_ids: Annotated[list[str], typer.Argument(help="Robot ids (exact).")],
    if_instance: Annotated[
        str | None, typer.Option("--if-instance", help="Only if owned by this instance.")
    ] = None,
    if_conn_id: Annotated[
        str | None, typer.Option("--if-conn-id", help="Only if it is this session.")
    ] = None,
    backup: Annotated[
        Path | None, typer.Option("--backup", help="Backup file (JSONL, appended).")
    ] = None,
    no_backup: Annotated[bool, typer.Option("--no-backup", help="Do not write a backup.")] = False,
    dry_run: DryRunOpt = False,
    output: OutputOpt = "table",
) -> None:
    """Remove entries atomically: an entry goes only if unchanged since it was read.

    The entry is first appended to a backup (default under the state dir; the path is
    printed), which `wsctl registry import` restores. Exits 1 if any robot was not removed.

    Example: wsctl registry rm robot-17 --if-instance gw-a
    """
    from wsctl.registry.keys import validate_id

    fmt = check_output(output)
    for robot_id in robot_ids:
        validate_id(robot_id)
    if backup is not None and no_backup:
        raise UsageError("--backup and --no-backup exclude each other")
    settings = state(ctx).settings()
    rows, backup_path = run(
        _rm(settings, robot_ids, if_instance, if_conn_id, backup, no_backup, dry_run)
    )
    from wsctl.cli.output import render

    render(rows, rm_columns(), fmt)
    if backup_path is not None:
        err(f"backup: {backup_path}")
        if not dry_run:
            err(f"undo: wsctl registry restore {shlex.quote(str(backup_path))}")
    if any(r["result"] not in ("removed", "would remove") for r in rows):
        raise typer.Exit(EXIT_NEGATIVE)


async def _rm(
    settings: Settings,
    robot_ids: list[str],
    if_instance: str | None,
    if_conn_id: str | None,
    backup: Path | None,
    no_backup: bool,
    dry_run: bool,
) -> tuple[list[dict[str, Any]], Path | None]:
    from wsctl.ops.backup import BackupWriter, default_backup_path
    from wsctl.registry.model import utcnow

    now = utcnow()
    path = None if (no_backup or dry_run) else (backup or default_backup_path("rm", now))
    rows: list[dict[str, Any]] = []
    async with open_store(settings) as store:
        with BackupWriter(path) as writer:
            for robot_id in dict.fromkeys(robot_ids):
                entry = await store.get(robot_id)
                if entry is None:
                    rows.append({"robot_id": robot_id, "result": "not found", "detail": None})
                    continue
                mismatch = None
                if if_instance is not None and entry.instance_id != if_instance:
                    mismatch = f"owned by {entry.instance_id!r}, not {if_instance!r}"
                if if_conn_id is not None and entry.conn_id != if_conn_id:
                    mismatch = f"session {entry.conn_id!r}, not {if_conn_id!r}"
                if mismatch:
                    rows.append({"robot_id": robot_id, "result": "kept", "detail": mismatch})
                    continue
                if dry_run:
                    rows.append({"robot_id": robot_id, "result": "would remove", "detail": None})
                    continue
                writer.write([(entry, "rm")], now)
                # the conditions were checked on this observation; the fenced delete makes sure
                # it is still exactly this observation (instance, session, heartbeat) that goes
                (outcome,) = await store.delete_observed([entry])
                result = {1: "removed", 0: "changed", -1: "not found"}[outcome]
                detail = "changed since read; kept (try again)" if outcome == 0 else None
                rows.append({"robot_id": robot_id, "result": result, "detail": detail})
    return rows, path if path is not None and path.exists() else None


@registry_app.command("export")
def export(
    ctx: typer.Context,
    instance: Annotated[
        str | None, typer.Option("--instance", help="Only entries of this instance.")
    ] = None,
    robot: Annotated[str | None, typer.Option("--robot", help="Robot id glob.")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Export entries as JSONL (one {"robot_id", "fields"} object per line), streaming.

    Example: wsctl registry export --instance gw-a > gw-a.jsonl
    """
    settings = state(ctx).settings()
    if file is not None:
        with file.open("w", encoding="utf-8", errors="backslashreplace") as fh:
            count, skipped = run(_export(settings, instance, robot, fh))
    else:
        count, skipped = run(_export(settings, instance, robot, sys.stdout))
    err(
        f"exported {count} entr{'y' if count == 1 else 'ies'}"
        + (f"; skipped {skipped} key(s) that are not hashes" if skipped else "")
    )


async def _export(
    settings: Settings, instance: str | None, robot: str | None, out: Any
) -> tuple[int, int]:
    from wsctl.ops.transfer import export_entries
    from wsctl.registry.records import dumps, entry_record

    count = skipped = 0
    async with open_store(settings) as store:
        async for entry in export_entries(store, instance, robot):
            if entry.key_type != "hash":
                skipped += 1
                continue
            out.write(dumps(entry_record(entry)) + "\n")
            count += 1
    out.flush()
    return count, skipped


@registry_app.command("import")
def import_(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(help="JSONL file (an export or a backup), - for stdin.")],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace entries that exist.")
    ] = False,
    skip_existing: Annotated[
        bool, typer.Option("--skip-existing", help="Keep entries that exist (the default).")
    ] = False,
    dry_run: DryRunOpt = False,
    output: OutputOpt = "table",
) -> None:
    """Import (restore) entries from an export or a backup; every line is validated first.

    By default robots that already have an entry (re-registered since) are skipped. A file is
    read twice (validate, then write in batches) so memory stays flat; stdin is held.

    Example: wsctl registry import ~/.local/state/wsctl/backups/reap-....jsonl --dry-run
    """
    from wsctl.registry.records import iter_records, parse_lines, validate_lines

    fmt = check_output(output)
    if overwrite and skip_existing:
        raise UsageError("--overwrite and --skip-existing exclude each other")
    settings = state(ctx).settings()
    if file == "-":
        records = parse_lines(sys.stdin, "<stdin>")
        result = run(_import(settings, iter(records), len(records), overwrite, dry_run))
    else:
        path = Path(file)
        try:
            with path.open(encoding="utf-8", errors="surrogateescape") as fh:
                count = validate_lines(fh, str(path))
            with path.open(encoding="utf-8", errors="surrogateescape") as fh:
                result = run(_import(settings, iter_records(fh), count, overwrite, dry_run))
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    from wsctl.cli.output import render_object

    render_object(result, fmt)


registry_app.command(
    "restore",
    help="Restore a backup (of reap, rm): the same command as import. "
    "Example: wsctl registry restore ~/.local/state/wsctl/backups/reap-....jsonl --dry-run",
)(import_)


async def _import(
    settings: Settings, records: Iterator[Any], count: int, overwrite: bool, dry_run: bool
) -> dict[str, Any]:
    from wsctl.ops.transfer import import_records

    async with open_store(settings) as store:
        result = await import_records(store, records, overwrite=overwrite, dry_run=dry_run)
    return {"records": count, **result.as_dict()}
