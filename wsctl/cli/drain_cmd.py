"""``wsctl drain INSTANCE`` and ``wsctl undrain INSTANCE``: rolling deploys without drops."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from wsctl.cli.common import (
    ReportOutput,
    check_report_output,
    open_store,
    run,
    seconds_flag,
    state,
)
from wsctl.cli.completion_cmd import complete_instance_ids
from wsctl.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from wsctl.config import Settings
    from wsctl.ops.drain import DrainReport


def _shown(text: str) -> str:
    from wsctl.shell import word

    return word(text)


def drain(
    ctx: typer.Context,
    instance: Annotated[
        str,
        typer.Argument(help="The instance id to drain.", autocompletion=complete_instance_ids),
    ],
    batch: Annotated[int, typer.Option("--batch", min=1, help="Robots closed per batch.")] = 50,
    interval: Annotated[
        float,
        typer.Option(
            "--interval",
            help="Seconds between batches (0: all at once).",
            callback=seconds_flag("--interval", allow_zero=True),
        ),
    ] = 1.0,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            help="Seconds (after the last batch is due) to wait for robots to register elsewhere.",
            callback=seconds_flag("--timeout"),
        ),
    ] = 60.0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would happen; change nothing.")
    ] = False,
    output: ReportOutput = "table",
) -> None:
    """Drain an instance for a deploy: it refuses new robots (HTTP 503 + Retry-After, /healthz
    503 draining), closes its robots in paced batches with close code 1012 so they reconnect
    elsewhere, and this command follows the registry until each is registered on another
    instance. Afterwards the instance can be stopped (SIGTERM) without losing anything;
    `wsctl undrain` reopens it instead.

    Exit codes: 0 every robot moved, 1 some not back within --timeout (listed by id), the
    drain cancelled by `wsctl undrain` (moved, closed and never closed robots counted), or the
    instance died or stopped during the drain; 4 unknown instance, 5 instance not listening,
    6 no answer to the drain.

    Example: wsctl drain gw-3 --batch 100 --interval 2 --timeout 120
    """
    from wsctl.registry.keys import validate_id

    validate_id(instance, "instance id")
    check_report_output(output, "drain")
    if timeout <= 0:
        raise UsageError("--timeout must be greater than 0")
    started: list[bool] = []
    try:
        report = run(
            _drain(
                state(ctx).settings(),
                instance,
                batch,
                interval,
                timeout,
                dry_run,
                lambda: started.append(True),
            )
        )
    except KeyboardInterrupt:
        if not started:
            raise
        # the instance drains by itself: Ctrl-C only stopped following it
        from wsctl.errors import EXIT_INTERRUPTED, WsctlError
        from wsctl.shell import quote

        raise WsctlError(
            f"interrupted; {_shown(instance)} goes on draining (it refuses new robots and "
            f"closes the rest in batches): wsctl undrain {quote(instance)} reopens it",
            exit_code=EXIT_INTERRUPTED,
        ) from None
    if output == "json":
        import json

        sys.stdout.write(json.dumps(report.as_dict(), ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(_summary(report))
    sys.stdout.flush()
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def _summary(report: DrainReport) -> str:
    name = _shown(report.instance)
    n = len(report.robots)
    if report.dry_run:
        eta = max(0, report.batches - 1) * report.interval
        return (
            f"would drain {name}: refuse new robots, close {n} robot(s) with 1012 in "
            f"{report.batches} batch(es) of {report.batch} every {report.interval:g}s "
            f"(about {eta:g}s), then wait up to {report.timeout:g}s for each to register "
            "elsewhere\n"
        )
    counts = f"{len(report.moved)} of {n} robot(s) moved"
    if report.gone is not None or report.cancelled:
        counts += (
            f", {len(report.not_back)} closed and not registered elsewhere, "
            f"{len(report.never_closed)} never closed"
        )
    if report.gone is not None:
        lines = [f"drain of {name} failed after {report.seconds:.1f}s: {_gone(report)}; {counts}"]
    elif report.cancelled:
        lines = [
            f"drain of {name} cancelled after {report.seconds:.1f}s (undrained: it accepts "
            f"robots again and closes no more): {counts}"
        ]
    else:
        lines = [
            f"drained {name}: {counts} in {report.seconds:.1f}s"
            + (f"; {len(report.not_back)} not back within the timeout" if report.not_back else "")
        ]
    by_target: dict[str, int] = {}
    for target in report.moved.values():
        by_target[target] = by_target.get(target, 0) + 1
    for target, count in sorted(by_target.items()):
        lines.append(f"  moved to {_shown(target)}: {count}")
    if report.not_back:
        lines.append("  not back: " + " ".join(_shown(r) for r in report.not_back))
    if report.never_closed:
        where = (
            f"their entries still name {name}"
            if report.gone is not None
            else f"still connected to {name}"
        )
        lines.append(f"  never closed: {len(report.never_closed)} ({where}; -o json lists them)")
    if report.exit_code == 0:
        lines.append(f"{name} holds no robots and refuses new ones: it can be stopped now")
    return "\n".join(lines) + "\n"


def _gone(report: DrainReport) -> str:
    from wsctl.ops.drain import Gone

    if report.gone is Gone.RESTARTED:
        return "the instance restarted during the drain (a new process under its id)"
    if report.gone is Gone.STOPPED:
        return (
            "the instance stopped during the drain (it stopped listening and removed its "
            "liveness record)"
        )
    removed = "removed" if report.record_removed else "left as it was (it changed meanwhile)"
    return (
        "the instance died during the drain (it stopped listening on its control channel and "
        f"left its liveness record behind: {removed})"
    )


async def _drain(
    settings: Settings,
    instance: str,
    batch: int,
    interval: float,
    timeout: float,
    dry_run: bool,
    on_started: Callable[[], None],
) -> DrainReport:
    from wsctl.ops.drain import drain_instance

    async with open_store(settings) as store:
        return await drain_instance(
            store,
            instance,
            batch=batch,
            interval=interval,
            timeout=timeout,
            dry_run=dry_run,
            on_started=on_started,
        )


def undrain(
    ctx: typer.Context,
    instance: Annotated[
        str,
        typer.Argument(help="The instance id to reopen.", autocompletion=complete_instance_ids),
    ],
) -> None:
    """Reopen a drained instance: it accepts robots again and stops closing batches.

    Exit codes: 0 reopened, 4 unknown instance, 5 instance not listening, 6 no answer.

    Example: wsctl undrain gw-3
    """
    from wsctl.registry.keys import validate_id

    validate_id(instance, "instance id")
    held = run(_undrain(state(ctx).settings(), instance))
    sys.stdout.write(f"{_shown(instance)} accepts robots again ({held} held)\n")


async def _undrain(settings: Settings, instance: str) -> int:
    from wsctl.ops.drain import undrain_instance

    async with open_store(settings) as store:
        return await undrain_instance(store, instance)
