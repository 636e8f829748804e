"""The fan-out half of ``wsctl send MESSAGE --robot GLOB | --instance ID | --robots-from FILE|-``.

A helper module, not a command of its own: called by :func:`wsctl.cli.fleet_cmd.send` when a
selection option is given. The selection streams (registry SCAN, or the file read line by line); outcomes are rendered as they come
(``-o jsonl``) or summed up (``-o table``/``json``); a progress bar is drawn on stderr only
when it is a terminal.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from wsctl.cli.common import open_store
from wsctl.errors import EXIT_NEGATIVE, UsageError

if TYPE_CHECKING:
    from wsctl.config import Settings
    from wsctl.ops.fanout import FanoutOptions, FanoutSummary, RobotOutcome

__all__ = ["FAILURES_SHOWN", "run_fanout"]

FAILURES_SHOWN = 20


def _ids_from(source: str) -> Iterator[str]:
    """Robot ids, one a line (blank lines and ``#`` comments skipped), from a file or ``-``;
    a bad id is a usage error naming its line."""
    from wsctl.registry.keys import validate_id

    if source == "-":
        stream: Any = sys.stdin
    else:
        try:
            stream = Path(source).open(encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"cannot read --robots-from {source}: {exc.strerror}") from None
    try:
        for number, line in enumerate(stream, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                yield validate_id(text)
            except UsageError as exc:
                raise UsageError(f"--robots-from {source} line {number}: {exc}") from None
    finally:
        if stream is not sys.stdin:
            stream.close()


class _Progress:
    """A progress bar on stderr when it is a terminal (and nothing otherwise)."""

    def __init__(self, enabled: bool) -> None:
        self.bar: Any = None
        self.task: Any = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            from wsctl.cli.output import make_console

            self.bar = Progress(
                TextColumn("sending"),
                BarColumn(),
                MofNCompleteColumn(),
                console=make_console(stderr=True),
                transient=True,
            )
            self.task = self.bar.add_task("send", total=None)

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def update(self, done: int, selected: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=max(selected, done))


async def _run(
    settings: Settings,
    message: str,
    robot_glob: str | None,
    instance: str | None,
    robots_from: str | None,
    options: FanoutOptions,
    dry_run: bool,
    on_outcome: Any,
    progress: _Progress,
) -> FanoutSummary:
    from wsctl.ops.fanout import (
        FanoutSummary,
        chunks_of,
        fan_out,
        registry_selection,
    )

    async with open_store(settings) as store:
        selection: AsyncIterator[list[tuple[str, str | None]]]
        if robots_from is not None:
            selection = chunks_of(_ids_from(robots_from))
        else:
            selection = registry_selection(store, robot_glob, instance)
        if dry_run:
            summary = FanoutSummary(dry_run=True)
            seen: set[str] = set()
            async for part in selection:
                for robot_id, owner in part:
                    if robot_id not in seen:
                        seen.add(robot_id)
                        on_outcome({"robot_id": robot_id, "instance": owner})
            summary.selected = len(seen)
            return summary
        done = 0
        summary = FanoutSummary()

        def seen_outcome(outcome: RobotOutcome) -> None:
            nonlocal done
            done += 1
            on_outcome(outcome)
            if done % 200 == 0:
                progress.update(done, summary.selected)

        await fan_out(store.client, store.keys, selection, message, options, seen_outcome, summary)
        progress.update(done, summary.selected)
        return summary


def run_fanout(
    settings: Settings,
    message: str,
    *,
    robot_glob: str | None,
    instance: str | None,
    robots_from: str | None,
    via: str | None,
    rate: float,
    timeout: float,
    dry_run: bool,
    output: str,
) -> None:
    """Run a fan-out send and render it; exit 0 when every selected robot got the message."""
    from wsctl.cli.common import run
    from wsctl.cli.output import Column, RowWriter, printable, render_object
    from wsctl.ops.fanout import FanOutcome, FanoutOptions, RobotOutcome

    if output not in ("table", "json", "jsonl"):
        raise UsageError("send to many robots supports -o table, json or jsonl")
    options = FanoutOptions(via=via, rate=rate, timeout=timeout)
    failures: list[dict[str, Any]] = []
    not_shown = 0
    listing = (
        RowWriter(
            [Column("robot_id", "ROBOT"), Column("instance", "INSTANCE")],
            "jsonl" if output == "jsonl" else output,
        )
        if dry_run
        else None
    )

    def on_outcome(item: RobotOutcome | dict[str, Any]) -> None:
        nonlocal not_shown
        if listing is not None:
            assert isinstance(item, dict)
            listing.write(item)
            return
        assert isinstance(item, RobotOutcome)
        if output == "jsonl":
            sys.stdout.write(_jsonl(item.as_dict()))
        elif item.outcome is not FanOutcome.DELIVERED:
            if len(failures) < FAILURES_SHOWN:
                failures.append(item.as_dict())
            else:
                not_shown += 1

    terminal = sys.stderr.isatty() and not dry_run
    with _Progress(terminal) as progress:
        summary = run(
            _run(
                settings,
                message,
                robot_glob,
                instance,
                robots_from,
                options,
                dry_run,
                on_outcome,
                progress,
            )
        )
    if listing is not None:
        listing.close()
        sys.stderr.write(f"{summary.selected} robots selected; nothing sent (--dry-run)\n")
        return
    result = summary.as_dict()
    if output == "json":
        render_object(result, "json")
    elif output == "jsonl":
        sys.stdout.flush()
        sys.stderr.write(_summary_line(result) + "\n")
    else:
        sys.stdout.write(_summary_line(result) + "\n")
        for row in failures:
            # reasons and instance names come from gateways and the registry: escaped
            reason = f" ({row['reason']})" if row["reason"] else ""
            line = f"  {row['robot_id']}: {row['outcome']} at {row['instance'] or '-'}{reason}"
            sys.stdout.write(printable(line) + "\n")
        if not_shown:
            sys.stderr.write(f"{not_shown} more not delivered; -o jsonl lists every robot\n")
    sys.stdout.flush()
    if not summary.ok:
        raise typer.Exit(EXIT_NEGATIVE)


def _jsonl(row: dict[str, Any]) -> str:
    import json

    return json.dumps(row, ensure_ascii=False) + "\n"


def _summary_line(result: dict[str, Any]) -> str:
    """``5000 selected, 5000 delivered in 1.23 s`` plus every non-zero other outcome."""
    others = [
        f"{result[k]} {k.replace('_', ' ')}"
        for k in ("not_connected", "rejected", "unreachable", "timeout", "error")
        if result[k]
    ]
    text = f"{result['selected']} selected, {result['delivered']} delivered"
    if others:
        text += ", " + ", ".join(others)
    return text + f" in {result['seconds']:.2f} s"
