"""``wsctl conformance``: the protocol level a gateway reaches, and what it gets wrong."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from wsctl.cli.common import (
    AuthSecretOpt,
    JunitOpt,
    ReportOutput,
    check_report_output,
    err,
    keyspace_of,
    on_stop_signals,
    open_client,
    run,
    seconds_flag,
    state,
)
from wsctl.errors import EXIT_INTERRUPTED, EXIT_NEGATIVE, WsctlError
from wsctl.protocol.envelopes import MAX_MESSAGE_BYTES

if TYPE_CHECKING:
    from wsctl.conformance.options import ConformanceOptions
    from wsctl.conformance.results import CheckResult, ConformanceReport

# The freeze lasts longer than wsctl's own 5 s Redis socket timeout by default, so a
# gateway's calls really fail (and have to be retried) rather than merely wait.
FREEZE_SECONDS = 6.0


def conformance(
    ctx: typer.Context,
    gateway: Annotated[
        str,
        typer.Option(
            "--gateway",
            help="Where robots connect: ws://HOST:PORT/ws/{robot_id} (a bare ws://HOST:PORT "
            "means that path).",
        ),
    ],
    instance_id: Annotated[
        str | None,
        typer.Option(
            "--instance-id", help="The gateway's instance id (default: what its entries say)."
        ),
    ] = None,
    level: Annotated[
        int, typer.Option("--level", min=0, max=2, help="The level to reach: 0, 1 or 2.")
    ] = 2,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            help="Seconds each step may take (a reply, a handshake, an entry to appear).",
            callback=seconds_flag("--timeout"),
        ),
    ] = 5.0,
    heartbeat_interval: Annotated[
        float | None,
        typer.Option(
            "--heartbeat-interval",
            help="The gateway's heartbeat interval (default: what its liveness record says, "
            "else the configured one, 30 s); heartbeat checks wait 1.5 times it.",
            callback=seconds_flag("--heartbeat-interval"),
        ),
    ] = None,
    max_message_bytes: Annotated[
        int,
        typer.Option(
            "--max-message-bytes",
            min=1,
            max=MAX_MESSAGE_BYTES,
            help="The gateway's message size limit (at most 1 MiB, the protocol's).",
        ),
    ] = MAX_MESSAGE_BYTES,
    freeze_redis_pid: Annotated[
        list[int] | None,
        typer.Option(
            "--freeze-redis-pid",
            help="A local redis-server process the kit may freeze (SIGSTOP) to test the "
            "gateway through an outage (repeatable; without it that check is n/a).",
        ),
    ] = None,
    freeze_seconds: Annotated[
        float,
        typer.Option(
            "--freeze-seconds",
            help="How long Redis stays frozen.",
            callback=seconds_flag("--freeze-seconds"),
        ),
    ] = FREEZE_SECONDS,
    auth_secret: AuthSecretOpt = None,
    output: ReportOutput = "table",
    junit: JunitOpt = None,
) -> None:
    """Test a gateway, in any language, against docs/protocol.md: which level it reaches
    (0 registry, 1 fencing and heartbeats, 2 control channel) and, for each check, pass,
    fail (what was expected, what was seen) or n/a.

    The kit acts as robots of the gateway and as the fleet around it, on the configured
    Redis, under robot ids of its own (wsctl-conformance-RUN-...); it removes every key it
    made, and closes every socket, when it ends or is interrupted. Level 2 drains the
    instance for a moment: point it at an instance of its own (the drain checks are n/a when
    the instance holds other robots). Redis is frozen only with --freeze-redis-pid.

    Exit codes: 0 the level asked for was reached, 1 it was not, 2 usage error, 3 Redis or
    configuration error, 130 interrupted.

    Example: wsctl conformance --gateway 'ws://127.0.0.1:8765/ws/{robot_id}' --junit conf.xml
    """
    from wsctl.conformance.options import ConformanceOptions, freezable_redis_pid, gateway_url
    from wsctl.registry.keys import validate_id
    from wsctl.timezones import resolve_tz

    check_report_output(output, "conformance")
    template = gateway_url(gateway)
    if instance_id is not None:
        validate_id(instance_id, "instance id")
    pids = tuple(freezable_redis_pid(pid) for pid in freeze_redis_pid or [])
    settings = state(ctx).settings()
    options = ConformanceOptions(
        gateway=template,
        level=level,
        instance_id=instance_id,
        timeout=timeout,
        heartbeat_interval=heartbeat_interval,
        default_interval=settings.heartbeat_interval,
        fleet_timeout=settings.timeout,
        max_message_bytes=max_message_bytes,
        freeze_pids=pids,
        freeze_seconds=freeze_seconds,
        auth_secret=auth_secret,
        naive_tz=resolve_tz(settings.naive_tz),
    )
    progress = _progress if sys.stderr.isatty() and output == "table" else None
    report = run(_conformance(settings, options, progress))
    if output == "json":
        from wsctl.cli.output import render_object

        render_object(report.as_dict(), "json")
    else:
        _print_report(report)
    if junit is not None:
        _write_junit(report, junit)
    if report.left_behind:
        err(f"conformance: warning: could not remove {len(report.left_behind)} keys of the run")
    if not report.ok:
        failed = [r.id for r in report.results if r.verdict.value == "fail"]
        err(f"conformance: level {level} not reached; failed: {', '.join(failed) or 'none'}")
        raise typer.Exit(EXIT_NEGATIVE)


async def _conformance(
    settings: Any, options: ConformanceOptions, progress: Any
) -> ConformanceReport:
    import asyncio

    from wsctl.conformance.runner import run_conformance

    task = asyncio.current_task()
    stop = asyncio.Event()

    def interrupt() -> None:
        stop.set()
        if task is not None:
            task.cancel()

    on_stop_signals(interrupt)
    try:
        async with open_client(settings) as client:
            keys = keyspace_of(settings)
            return await run_conformance(client, keys, options, progress, stop)
    except asyncio.CancelledError:
        if stop.is_set():
            raise WsctlError(
                "interrupted; the run's robots were disconnected and its keys removed",
                exit_code=EXIT_INTERRUPTED,
            ) from None
        raise


def _progress(result: CheckResult) -> None:
    err(f"  {result.verdict.value:<4}  {result.id}")


def _detail(row: CheckResult) -> str:
    if row.verdict.value == "fail":
        return f"expected: {row.expected}; seen: {row.seen}"
    return row.detail


def _print_report(report: ConformanceReport) -> None:
    from wsctl.cli.columns import Column, printable
    from wsctl.cli.output import render

    styles = {"pass": "green", "fail": "bold red", "n/a": "yellow"}
    columns = [
        Column("result", "RESULT", style=lambda r: styles.get(str(r.get("result")))),
        Column("id", "CHECK"),
        Column("level", "LEVEL", justify="right"),
        Column("section", "§"),
        Column("detail", "DETAIL", wrap=True),
    ]
    rows = [
        {
            "result": r.verdict.value,
            "id": r.id,
            "level": r.spec.level,
            "section": r.spec.section,
            "detail": _detail(r),
        }
        for r in report.results
    ]
    title = f"{report.gateway} (instance {report.instance_id or 'unknown'})"
    render(rows, columns, "table", title=printable(title))
    sys.stdout.write(printable(report.summary()) + "\n")
    sys.stdout.flush()


def _write_junit(report: ConformanceReport, path: Path) -> None:
    from wsctl.cli.junit import JunitCase, write_junit_file

    status = {"pass": "passed", "fail": "failed", "n/a": "skipped"}
    cases = [
        JunitCase(
            f"L{r.spec.level} {r.id} ({r.spec.section}): {r.spec.title}",
            status[r.verdict.value],
            _detail(r),
            r.seconds,
        )
        for r in report.results
    ]
    write_junit_file(path, f"wsctl.conformance.{report.run_id}", "wsctl.conformance", cases)
