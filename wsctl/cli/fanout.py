"""The fan-out half of ``wsctl send MESSAGE --robot GLOB | --instance ID | --robots-from FILE|-``.

A helper module, not a command of its own: called by :func:`wsctl.cli.fleet_cmd.send` when a
selection option is given. The selection streams (registry SCAN; a ``--robots-from`` list is
read first, so its size is known); per-robot outcomes are rendered by
:class:`wsctl.cli.output.RowWriter` as they come (``-o jsonl``/``csv``, and ``-o wide``: every
robot, a table streamed row by row, then a one-line summary) or at the end (``-o table``: a
one-line summary, then the robots not delivered); ``-o json`` is the summary object. A
``--dry-run`` table lists the selection like ``list robots``: sorted by robot, the first
:data:`~wsctl.cli.output.TABLE_ROWS`. A progress bar is drawn on stderr only when it is a
terminal, and never touches stdout (data written there stays data).
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from wsctl.cli.common import open_store
from wsctl.errors import EXIT_INTERRUPTED, EXIT_NEGATIVE, UsageError, WsctlError

if TYPE_CHECKING:
    from wsctl.cli.columns import Column
    from wsctl.config import Settings
    from wsctl.ops.fanout import FanoutOptions, FanoutSummary, RobotOutcome

__all__ = ["FAILURES_SHOWN", "read_ids", "run_fanout"]

FAILURES_SHOWN = 20
# How long a run stopped early (stdout closed) may take to end its clean-up.
STOP_WAIT = 2.0
BOM = "\ufeff"


def read_ids(source: str) -> list[str]:
    """Robot ids, one a line, from a file or ``-`` (stdin), in order of first appearance
    (each robot is sent the message once: a repeated id is dropped as it is read, so a list
    that repeats itself holds memory for its distinct ids only).

    A UTF-8 byte order mark at the start is dropped; leading and trailing blanks of a line are
    dropped; blank lines and lines starting with ``#`` are skipped. A ``#`` later in a line is
    part of the id (ids may hold spaces and ``#``). A bad id is a usage error naming its line,
    and so is a line over :data:`~wsctl.cli.lines.ID_LINE_LIMIT` (``/dev/zero``, the wrong
    file): each line is read up to that limit and no further.
    """
    from wsctl.cli.lines import ID_LINE_LIMIT, bounded_lines
    from wsctl.registry.keys import validate_existing_id

    if source == "":
        raise UsageError("--robots-from needs a file path or - for stdin (got an empty path)")
    label = f"--robots-from {source}"
    if source == "-":
        stream: Any = sys.stdin
    else:
        try:
            stream = Path(source).open(encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"cannot read {label}: {exc.strerror}") from None
    ids: dict[str, None] = {}
    try:
        lines = bounded_lines(stream, label, ID_LINE_LIMIT, "one robot id a line")
        for number, line in enumerate(lines, 1):
            text = line.strip()
            if number == 1:
                text = text.removeprefix(BOM).strip()
            if not text or text.startswith("#"):
                continue
            try:
                ids[validate_existing_id(text)] = None  # exact, as a registry may hold it
            except UsageError as exc:
                raise UsageError(f"{label} line {number}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {label}: {exc.strerror}") from None
    finally:
        if stream is not sys.stdin:
            stream.close()
    return list(ids)


class _Progress:
    """A progress bar on stderr when it is a terminal (and nothing otherwise).

    Rich redraws it ten times a second from the live :class:`FanoutSummary` (time-based, not
    per outcome): replied / total (``?`` until the selection's size is known), robots sent,
    replies per second. stdout and stderr are never redirected through it: data written to
    stdout meanwhile goes where the operator sent it."""

    def __init__(self, enabled: bool, summary: FanoutSummary, total: int | None) -> None:
        self.bar: Any = None
        if not enabled:
            return
        import time

        from rich.console import RenderableType
        from rich.progress import Progress, ProgressColumn, Task
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        from wsctl.cli.tables import make_console

        console = make_console(stderr=True)
        started = time.monotonic()

        class Live(ProgressColumn):
            def render(self, task: Task) -> RenderableType:
                known = total
                if known is None and summary.selection_done:
                    known = summary.selected
                replied = summary.answered
                elapsed = max(time.monotonic() - started, 1e-3)
                text = (
                    f"{replied}/{known if known is not None else '?'} replied, "
                    f"sent {summary.sent}, {replied / elapsed:,.0f}/s"
                )
                # the bar only where it fits: a narrow terminal gets the counts on one line
                room = console.width - len(text) - len("sending ") - 2
                grid = Table.grid(padding=(0, 1))
                if room >= 10:
                    grid.add_row(
                        "sending",
                        ProgressBar(total=known, completed=replied, width=min(room, 40)),
                        text,
                    )
                else:
                    grid.add_row(text)
                return grid

        self.bar = Progress(
            Live(),
            console=console,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
            refresh_per_second=10,
        )
        self.bar.add_task("send", total=None)

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _outcome_columns() -> list[Column]:
    from wsctl.cli.columns import Column

    return [
        Column("robot_id", "ROBOT"),
        Column("outcome", "OUTCOME"),
        Column("instance", "INSTANCE"),
        Column("reason", "REASON", wrap=True),
    ]


def _listing_columns() -> list[Column]:
    from wsctl.cli.columns import Column

    return [Column("robot_id", "ROBOT"), Column("instance", "INSTANCE")]


class _ReaderGone(Exception):
    """The reader of stdout went away (``| head``): nothing more is sent."""


class _ReaderWatch:
    """Set by the outcome writer when stdout's reader is gone; the run watches ``event``."""

    def __init__(self) -> None:
        self.gone = False
        self.event: Any = None

    def set(self) -> None:
        self.gone = True
        if self.event is not None:
            self.event.set()


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null so the interpreter's last flush does not fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real fd (an in-process caller's buffer): nothing to do
        pass


async def _run(
    settings: Settings,
    message: str,
    selection_of: Callable[[Any], AsyncIterator[list[tuple[str, str | None]]]],
    options: FanoutOptions,
    dry_run: bool,
    on_outcome: Callable[[Any], None],
    summary: FanoutSummary,
    reader_gone: _ReaderWatch,
) -> FanoutSummary:
    import asyncio

    from wsctl.ops.fanout import fan_out, with_owners
    from wsctl.tasks import settle, settle_all

    async with open_store(settings) as store:
        selection = selection_of(store)
        if dry_run:
            seen: set[str] = set()
            async for part in with_owners(store.client, store.keys, selection):
                if reader_gone.gone:
                    raise _ReaderGone
                for robot_id, owner in part:
                    if robot_id not in seen:
                        seen.add(robot_id)
                        on_outcome({"robot_id": robot_id, "instance": owner})
                        summary.selected += 1
            summary.selection_done = True
            return summary
        stop = reader_gone.event = asyncio.Event()
        sending = asyncio.ensure_future(
            fan_out(store.client, store.keys, selection, message, options, on_outcome, summary)
        )
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({sending, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await settle(stopper)
            if not sending.done() or stop.is_set():
                # cancels, again every 0.1 s: a cancel that lands as a Redis reply arrives can
                # be swallowed (Python 3.11's wait_for), and the run then went on to the end
                await settle_all([sending], timeout=STOP_WAIT)
        if stop.is_set():
            raise _ReaderGone
        return sending.result()


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
    """Run a fan-out send and render it; exit 0 when every selected robot got the message,
    1 otherwise, 3 when Redis failed (after rendering what was known), 130 on Ctrl-C (after
    a partial summary on stderr)."""
    from wsctl.cli.common import check_output, run
    from wsctl.cli.output import TABLE_ROWS, RowWriter, render, render_object
    from wsctl.ops.fanout import (
        FanOutcome,
        FanoutOptions,
        FanoutSummary,
        chunks_of,
        registry_selection,
    )
    from wsctl.ops.listing import SortKey, TopRows

    check_output(output)
    options = FanoutOptions(via=via, rate=rate, timeout=timeout)
    summary = FanoutSummary(dry_run=dry_run)
    total: int | None = None
    selection_of: Callable[[Any], AsyncIterator[list[tuple[str, str | None]]]]
    if robots_from is not None:
        ids = read_ids(robots_from)
        total = len(ids)
        selection_of = lambda _store: chunks_of(ids)  # noqa: E731
        what = f"no robot id in --robots-from {shlex.quote(robots_from)}"
    else:
        selection_of = lambda store: registry_selection(store, robot_glob, instance)  # noqa: E731
        flag, value = (
            ("--robot", robot_glob) if robot_glob is not None else ("--instance", instance)
        )
        what = f"no robot matched {flag} {shlex.quote(value or '')}"

    # a --dry-run table is a listing: sorted by robot, the first TABLE_ROWS (held bounded)
    top = TopRows(SortKey.robot, TABLE_ROWS) if dry_run and output in ("table", "wide") else None
    if top is not None:
        writer = None
    elif dry_run:
        writer = RowWriter(_listing_columns(), output, stream=sys.stdout)
    elif output in ("jsonl", "csv", "wide"):
        # wide: every robot's row as it comes, like jsonl (a table held until the end took
        # 2.4 GB for 870k robots, and a closed pipe went unnoticed)
        writer = RowWriter(_outcome_columns(), output, stream=sys.stdout, streamed=True)
    elif output == "table":
        writer = RowWriter(_outcome_columns(), "table", stream=sys.stdout)
    else:
        writer = None
    every = dry_run or output != "table"  # table: only the first robots not delivered
    not_shown = 0
    streaming = output in ("jsonl", "csv", "wide") and not dry_run
    reader_gone = _ReaderWatch()
    last_flush = 0.0

    def on_outcome(item: RobotOutcome | dict[str, Any]) -> None:
        nonlocal not_shown, last_flush
        if top is not None and isinstance(item, dict):
            top.add([item])
            return
        if writer is None or reader_gone.gone:
            return
        try:
            if isinstance(item, dict):
                writer.write(item)
            elif every:
                writer.write(item.as_dict())
            elif item.outcome is not FanOutcome.DELIVERED:
                if writer.count < FAILURES_SHOWN:
                    writer.write(item.as_dict())
                else:
                    not_shown += 1
            # streamed rows reach a pipe while a paced send runs (ten flushes a second at most)
            if streaming and (now := time.monotonic()) - last_flush >= 0.1:
                last_flush = now
                sys.stdout.flush()
        except BrokenPipeError:
            _silence_stdout()
            reader_gone.set()

    failed: WsctlError | None = None
    # no bar when rows stream to the same terminal: they would be drawn into its line
    terminal = sys.stderr.isatty() and not dry_run and not (streaming and sys.stdout.isatty())
    try:
        with _Progress(terminal, summary, total):
            run(
                _run(
                    settings,
                    message,
                    selection_of,
                    options,
                    dry_run,
                    on_outcome,
                    summary,
                    reader_gone,
                )
            )
    except _ReaderGone:
        what_was_done = f"{summary.selected} listed" if dry_run else _progress_line(summary)
        sys.stderr.write(f"wsctl: stdout was closed; stopped: {what_was_done}\n")
        raise typer.Exit(0 if dry_run else EXIT_NEGATIVE) from None
    except KeyboardInterrupt:
        sys.stdout.flush()
        if dry_run:
            raise
        # one line: what was sent and what came back so far
        raise WsctlError(
            f"interrupted: {_progress_line(summary)}", exit_code=EXIT_INTERRUPTED
        ) from None
    except WsctlError as exc:
        if not summary.aborted:
            raise  # nothing was sent (connecting failed, bad input): the error alone says it
        failed = exc
    from wsctl.cli.common import err

    if dry_run:
        if top is not None:
            shown = top.result()
            render(shown, _listing_columns(), output, stream=sys.stdout)
            if top.seen > len(shown):
                err(
                    f"showing {len(shown)} of {top.seen} selected robots (sorted by robot); "
                    "-o jsonl or -o csv lists them all"
                )
        else:
            assert writer is not None
            writer.close()
        if summary.selected == 0:
            err(f"wsctl: {what}")
        sys.stderr.write(f"{summary.selected} robots selected; nothing sent (--dry-run)\n")
        return
    result = summary.as_dict()
    if output == "json":
        render_object(result, "json")
    elif output in ("jsonl", "csv"):
        assert writer is not None
        writer.close()
        sys.stderr.write(_summary_line(result) + "\n")
    elif output == "wide":
        assert writer is not None
        writer.close()  # the rows not written yet, then the summary under them
        sys.stdout.write(_summary_line(result) + "\n")
    else:
        assert writer is not None
        sys.stdout.write(_summary_line(result) + "\n")
        if writer.count:  # the robots not delivered; none: no empty table
            writer.close()
        if not_shown:
            sys.stderr.write(f"{not_shown} more not delivered; -o jsonl lists every robot\n")
    sys.stdout.flush()
    if failed is not None:
        raise failed
    if summary.selected == 0:
        err(f"wsctl: {what}")
    if not summary.ok:
        raise typer.Exit(EXIT_NEGATIVE)


def _progress_line(summary: FanoutSummary) -> str:
    """``sent 120 of 500 selected; 100 delivered, 3 not connected so far``."""
    counts = summary.as_dict()
    text = f"sent to {summary.sent} of {summary.selected} selected robots"
    if not summary.selection_done:
        text += " (selection not fully read)"
    answers = [
        f"{counts[k.value]} {k.value.replace('_', ' ')}" for k in summary.counts if counts[k.value]
    ]
    return text + "; " + (", ".join(answers) if answers else "no answer yet") + " so far"


def _summary_line(result: dict[str, Any]) -> str:
    """``5000 selected, 5000 delivered in 1.23 s`` plus every non-zero other outcome."""
    others = [
        f"{result[k]} {k.replace('_', ' ')}"
        for k in (
            "not_connected",
            "rejected",
            "instance_unreachable",
            "timeout",
            "error",
            "not_tried",
        )
        if result[k]
    ]
    text = f"{result['selected']} selected, {result['delivered']} delivered"
    if others:
        text += ", " + ", ".join(others)
    text += f" in {result['seconds']:.2f} s"
    if result.get("aborted"):
        text += " (stopped: Redis failed)"
    return text
