"""``wsctl registry set|rm|export|import``: edit the registry safely.

Every write has ``--dry-run``; deletes are compare-and-delete and back the entry up first.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from wsctl.cli.columns import Column
from wsctl.cli.common import (
    BackupOpt,
    NoBackupOpt,
    OutputOpt,
    RobotEventsOpt,
    check_output,
    err,
    open_store,
    run,
    state,
)
from wsctl.cli.completion_cmd import complete_instance_ids, complete_robot_ids
from wsctl.errors import EXIT_NEGATIVE, NotFound, UsageError
from wsctl.eventlog.model import DEFAULT_ROBOT_EVENTS
from wsctl.shell import quote as shell_quote
from wsctl.shell import quoted

if TYPE_CHECKING:
    from wsctl.config import Settings

registry_app = typer.Typer(
    help="Edit the registry safely: set, rm, export, import, restore.\n\n"
    "Example: wsctl registry export -f registry.jsonl",
    no_args_is_help=True,
)

DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Show what would change; change nothing.")
]


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
    robot_id: Annotated[
        str, typer.Argument(help="Robot id (exact).", autocompletion=complete_robot_ids)
    ],
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
                raise NotFound(f"robot {quoted(robot_id)} has no registry entry (use --create)")
            mapping = {F_ROBOT_ID: robot_id, F_CONNECTED_AT: now, F_LAST_HEARTBEAT: now, **mapping}
        elif entry.key_type != "hash":
            raise UsageError(
                f"{store.keys.conn_key(robot_id)} is a {entry.key_type}, not a hash; "
                f"remove it first with: wsctl registry rm {shell_quote(robot_id)}"
            )
        _refuse_malformed(robot_id, entry, mapping, store.naive_tz)
        verb = "would set" if dry_run else "set"
        if not dry_run:
            await store.set_fields(robot_id, mapping)
            from wsctl.cli.eventlog import record_cli_events
            from wsctl.ops.events import set_event

            owner = mapping.get("instance_id") or (entry.instance_id if entry else "") or ""
            event = set_event(robot_id, owner, dict(mapping), created=entry is None)
            await record_cli_events(store.client, store.keys, [event])
        from wsctl.cli.columns import TEXT_MAX
        from wsctl.shell import clip, word

        # names and values as shell words, long values cut (a 100 KB note was echoed whole)
        fields = ", ".join(
            f"{word(k)}={clip(word(v[: TEXT_MAX + 1]), TEXT_MAX, len(v))}"
            for k, v in mapping.items()
        )
        err(f"{verb} {word(robot_id)}: {fields}")


def _refuse_malformed(robot_id: str, entry: Any, mapping: dict[str, str], naive_tz: Any) -> None:
    """Refuse a write that would leave an entry wsctl itself calls malformed (the same
    judgement as every listing's): problems the entry already had are not blamed on it."""
    from wsctl.registry.model import problems_at, utcnow

    now = utcnow()
    before = dict(entry.fields) if entry is not None else {}
    had = set(problems_at(robot_id, before, now, naive_tz)) if entry is not None else set()
    new = [p for p in problems_at(robot_id, {**before, **mapping}, now, naive_tz) if p not in had]
    if new:
        raise UsageError(f"refused: the entry would be malformed: {'; '.join(new)}")


def rm_columns() -> list[Column]:
    """Columns of the ``registry rm`` report: each robot, what became of its entry, why."""
    return [
        Column("robot_id", "ROBOT"),
        Column("result", "RESULT"),
        Column("detail", "DETAIL", wrap=True),
    ]


@registry_app.command("rm")
def remove(
    ctx: typer.Context,
    robot_ids: Annotated[
        list[str], typer.Argument(help="Robot ids (exact).", autocompletion=complete_robot_ids)
    ],
    if_instance: Annotated[
        str | None,
        typer.Option(
            "--if-instance",
            help="Only if owned by this instance.",
            autocompletion=complete_instance_ids,
        ),
    ] = None,
    if_conn_id: Annotated[
        str | None, typer.Option("--if-conn-id", help="Only if it is this session.")
    ] = None,
    backup: BackupOpt = None,
    no_backup: NoBackupOpt = False,
    dry_run: DryRunOpt = False,
    output: OutputOpt = "table",
) -> None:
    """Remove entries atomically: an entry goes only if unchanged since it was read.

    The entry is first appended to a backup (default under the state dir; the path is
    printed), which `wsctl registry restore` puts back. Exits 1 if any robot was not removed.

    Example: wsctl registry rm robot-17 --if-instance gw-a
    """
    from wsctl.registry.keys import validate_existing_id

    fmt = check_output(output)
    for robot_id in robot_ids:
        validate_existing_id(robot_id)
    if backup is not None and no_backup:
        raise UsageError("--backup and --no-backup exclude each other")
    if backup is not None:
        from wsctl.ops.backup import check_backup_path

        check_backup_path(backup)
    settings = state(ctx).settings()
    rows, backup_path = run(
        _rm(settings, robot_ids, if_instance, if_conn_id, backup, no_backup, dry_run)
    )
    from wsctl.cli.output import render

    render(rows, rm_columns(), fmt)
    if backup_path is not None:
        err(f"backup: {backup_path}")
        if not dry_run:
            err(f"undo: wsctl registry restore {shell_quote(str(backup_path))}")
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
    from wsctl.registry.store import DeleteOutcome

    rm_results = {
        DeleteOutcome.DELETED: "removed",
        DeleteOutcome.CHANGED: "changed",
        DeleteOutcome.GONE: "not found",
    }
    now = utcnow()
    path = None if (no_backup or dry_run) else (backup or default_backup_path("rm", now))
    rows: list[dict[str, Any]] = []
    owners: dict[str, str] = {}
    async with open_store(settings) as store:
        with BackupWriter(path) as writer:
            for robot_id in dict.fromkeys(robot_ids):
                entry = await store.get(robot_id)
                if entry is None:
                    rows.append({"robot_id": robot_id, "result": "not found", "detail": None})
                    continue
                mismatch = None
                if if_instance is not None and entry.instance_id != if_instance:
                    mismatch = (
                        f"owned by {quoted(entry.instance_id or '')}, not {quoted(if_instance)}"
                    )
                if if_conn_id is not None and entry.conn_id != if_conn_id:
                    mismatch = f"session {quoted(entry.conn_id or '')}, not {quoted(if_conn_id)}"
                if mismatch:
                    rows.append({"robot_id": robot_id, "result": "kept", "detail": mismatch})
                    continue
                if dry_run:
                    rows.append({"robot_id": robot_id, "result": "would remove", "detail": None})
                    continue
                owners[robot_id] = entry.instance_id or ""
                await store.attach_dumps([entry])
                writer.write([(entry, "rm")], now)
                # the conditions were checked on this observation; the fenced delete makes sure
                # it is still exactly this observation (instance, session, heartbeat) that goes
                (outcome,) = await store.delete_observed([entry])
                result = rm_results[outcome]
                detail = (
                    "changed since read; kept (try again)"
                    if outcome is DeleteOutcome.CHANGED
                    else None
                )
                rows.append({"robot_id": robot_id, "result": result, "detail": detail})
        from wsctl.cli.eventlog import record_cli_events
        from wsctl.ops.events import removed_events

        kept = path if path is not None and path.exists() else None
        await record_cli_events(store.client, store.keys, removed_events(rows, owners, kept))
    return rows, path if path is not None and path.exists() else None


@registry_app.command("export")
def export(
    ctx: typer.Context,
    instance: Annotated[
        str | None,
        typer.Option(
            "--instance",
            help="Only entries of this instance.",
            autocompletion=complete_instance_ids,
        ),
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
        # a temporary file beside the target, renamed over it only on success: an export that
        # fails (Redis unreachable, disk full) never truncates the file it would replace
        with atomic_output(file) as fh:
            count, skipped = run(_export(settings, instance, robot, fh))
    else:
        count, skipped = run(_export(settings, instance, robot, sys.stdout))
    err(
        f"exported {count} entr{'y' if count == 1 else 'ies'}"
        + (f"; skipped {skipped} key(s) that are not hashes" if skipped else "")
    )


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Any]:
    """A text file written to a temporary name in ``path``'s directory, fsync'ed and renamed
    over ``path`` only if the block succeeds (else removed)."""
    import os
    import stat
    import tempfile

    try:
        special = not stat.S_ISREG(path.stat().st_mode)  # a device or a pipe
    except OSError:
        special = False
    if special:  # nothing to truncate, and never to be replaced by a regular file
        try:
            with path.open("w", encoding="utf-8", errors="backslashreplace") as fh:
                yield fh
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror}") from None
        return
    directory = path.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, ConnectionError):
            raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


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


FileArg = Annotated[str, typer.Argument(help="JSONL file (an export or a backup), - for stdin.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace entries that exist.")]
SkipExistingOpt = Annotated[
    bool, typer.Option("--skip-existing", help="Keep entries that exist (the default).")
]


@registry_app.command("import")
def import_(
    ctx: typer.Context,
    file: FileArg,
    overwrite: OverwriteOpt = False,
    skip_existing: SkipExistingOpt = False,
    allow_malformed: Annotated[
        bool,
        typer.Option(
            "--allow-malformed",
            help="Also write entries wsctl calls malformed (an export of such a registry).",
        ),
    ] = False,
    dry_run: DryRunOpt = False,
    robot_events: RobotEventsOpt = str(DEFAULT_ROBOT_EVENTS),
    output: OutputOpt = "table",
) -> None:
    """Import entries from an export or a backup; every line is validated first.

    A line is refused (and nothing written) when it is not JSON, when its fields make an entry
    wsctl calls malformed (missing instance_id, a timestamp that does not parse or lies in the
    future, a robot_id field naming another robot), or when it gives a robot a second time.
    By default robots that already have an entry are skipped. Files, pipes (<(cmd)) and stdin
    are all read twice (validate, then write in batches): pipes and stdin via a temporary file.
    One summary event is recorded, and an `imported` event per robot for the first
    --robot-events robots.

    Example: wsctl registry import registry.jsonl --dry-run
    """
    _import_command(
        ctx, file, overwrite, skip_existing, allow_malformed, dry_run, output, False, robot_events
    )


@registry_app.command("restore")
def restore(
    ctx: typer.Context,
    file: FileArg,
    overwrite: OverwriteOpt = False,
    skip_existing: SkipExistingOpt = False,
    dry_run: DryRunOpt = False,
    robot_events: RobotEventsOpt = str(DEFAULT_ROBOT_EVENTS),
    output: OutputOpt = "table",
) -> None:
    """Restore a backup written by reap or rm: every key exactly as it was removed.

    Malformed entries and keys that are not hashes are restored as they were (that is what
    was removed); when a backup holds a robot twice (several reaps), the last line wins.
    Robots that registered again since are skipped. Keys that cannot be restored are listed
    and the rest are restored (exit 1 then). Events as for import (--robot-events).

    Example: wsctl registry restore ~/.local/state/wsctl/backups/reap-....jsonl --dry-run
    """
    _import_command(ctx, file, overwrite, skip_existing, True, dry_run, output, True, robot_events)


def _import_command(
    ctx: typer.Context,
    file: str,
    overwrite: bool,
    skip_existing: bool,
    allow_malformed: bool,
    dry_run: bool,
    output: str,
    restoring: bool,
    robot_events: str,
) -> None:
    from wsctl.eventlog.model import parse_robot_events
    from wsctl.registry.model import problems_at, utcnow
    from wsctl.registry.records import Record, iter_records, validate_lines
    from wsctl.timezones import resolve_tz

    fmt = check_output(output)
    robot_event_limit = parse_robot_events(robot_events)
    if overwrite and skip_existing:
        raise UsageError("--overwrite and --skip-existing exclude each other")
    settings = state(ctx).settings()
    now, naive_tz = utcnow(), resolve_tz(settings.naive_tz)

    judged_malformed = False

    def check(record: Record) -> list[str]:
        nonlocal judged_malformed
        problems = problems_at(record.robot_id, record.fields, now, naive_tz)
        judged_malformed = judged_malformed or bool(problems)
        return problems

    from wsctl.cli.lines import RECORD_LINE_LIMIT, TwoPassInput

    with TwoPassInput(file, RECORD_LINE_LIMIT, "one entry a line") as source:
        label = source.label
        try:
            found = validate_lines(
                source.first(),
                label,
                None if allow_malformed else check,
                last_wins=restoring,
                registry_ids=allow_malformed,
                partial=restoring,
            )
        except UsageError as exc:
            # an export of a registry holding malformed entries, or ids wsctl would not
            # create (control characters, over 256 bytes, empty)
            if not allow_malformed and (judged_malformed or "robot id" in exc.message):
                raise UsageError(
                    f"{exc.message} (--allow-malformed writes what a registry held as it "
                    "is: malformed entries, and ids wsctl would not create)"
                ) from None
            raise
        records = iter_records(source.second(), found.skip, registry_ids=allow_malformed)
        result = run(
            _import(
                settings,
                records,
                found.count,
                overwrite,
                dry_run,
                label,
                restoring,
                robot_event_limit,
            )
        )
    result["superseded"] = len(found.superseded)
    result["not_restored_items"] = found.unrestorable + result["not_restored_items"]
    result["not_restored"] = len(result["not_restored_items"])
    from wsctl.cli.output import render_object

    render_object(result, fmt)
    if result["not_restored"]:
        for item in result["not_restored_items"][:10]:
            robot = item["robot_id"]
            named = f", robot {quoted(robot)}" if isinstance(robot, str) else ""
            err(f"wsctl: not restored: line {item['line']}{named}: {item['reason']}")
        raise typer.Exit(EXIT_NEGATIVE)


async def _import(
    settings: Settings,
    records: Iterator[Any],
    count: int,
    overwrite: bool,
    dry_run: bool,
    source: str = "-",
    restoring: bool = False,
    robot_event_limit: int | None = DEFAULT_ROBOT_EVENTS,
) -> dict[str, Any]:
    from wsctl.cli.eventlog import finish_recording, note_robot_event_cap
    from wsctl.eventlog.model import RobotEventCap
    from wsctl.ops.events import EventRecorder, import_summary_events, imported_events
    from wsctl.ops.transfer import import_records

    async with open_store(settings) as store:
        # an ``imported`` event for each robot written (up to the cap), streamed batch by batch
        recorder = EventRecorder(store.client, store.keys)
        cap = RobotEventCap(robot_event_limit)

        async def on_written(robot_ids: list[str]) -> None:
            part = cap.take(robot_ids)
            if part:
                await recorder.add(
                    imported_events(part, source, overwrite=overwrite, restore=restoring)
                )

        try:
            result = await import_records(
                store, records, overwrite=overwrite, dry_run=dry_run, on_written=on_written
            )
        except BaseException:
            recorder.abort()
            raise
        await recorder.add(
            import_summary_events(
                result.written,
                source,
                overwrite=overwrite,
                restore=restoring,
                robot_events=cap.given,
            )
        )
        outcome = await finish_recording(recorder)
        note_robot_event_cap(cap)
    recorded = {
        "events_recorded": outcome.written,
        "events_not_recorded": outcome.lost + cap.left_out,
        "events_capped": cap.left_out,
    }
    return {"records": count, **result.as_dict(), **recorded}
