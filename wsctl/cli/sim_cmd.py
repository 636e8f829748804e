"""``wsctl simulate`` and ``wsctl sandbox``: smoke and load tests with real robots."""

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
    on_stop_signals,
    rate_flag,
    run,
    seconds_flag,
    state,
)
from wsctl.durations import counted
from wsctl.errors import EXIT_INTERRUPTED, EXIT_NEGATIVE, UsageError, WsctlError

if TYPE_CHECKING:
    from wsctl.config import Settings
    from wsctl.ops.simulate.options import SimulateOptions
    from wsctl.ops.simulate.report import SimulateReport
    from wsctl.sandbox.local import SandboxInfo
    from wsctl.sandbox.service import SandboxSpec

SANDBOX_HEARTBEAT = 2.0
# Paced by default so the latency printed is the fleet's, not the queue of a burst.
DEFAULT_RATE = 1000.0
SANDBOX_TIMEOUT = 10.0
# robot-1 .. robot-20 stay connected in `wsctl sandbox` (the README tour uses robot-17)
DEMO_ROBOTS = 20


def simulate(
    ctx: typer.Context,
    robots: Annotated[int, typer.Option("--robots", min=1, help="How many robots.")] = 200,
    gateway: Annotated[
        list[str] | None,
        typer.Option("--gateway", help="Gateway base URL ws://host:port (repeatable)."),
    ] = None,
    messages: Annotated[int, typer.Option("--messages", min=0, help="Messages per robot.")] = 3,
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration",
            help="Seconds for the heartbeat (and churn) phases.",
            callback=seconds_flag("--duration", wait=False),
        ),
    ] = None,
    ramp: Annotated[
        float,
        typer.Option(
            "--ramp",
            help="Connects per second at most, slower while the gateways accept fewer "
            "(0: all at once, then as fast as accepted).",
            callback=rate_flag("--ramp"),
        ),
    ] = 1000.0,
    rate: Annotated[
        float,
        typer.Option(
            "--rate",
            help="Deliver-phase messages per second (0: all at once, a burst whose latency "
            "includes queueing).",
            callback=rate_flag("--rate"),
        ),
    ] = DEFAULT_RATE,
    non_owner_share: Annotated[
        float,
        typer.Option(
            "--non-owner-share",
            help="Deliver phase: share of robots whose messages are injected at an instance "
            "that is not their owner (0-1; forwarded once).",
        ),
    ] = 0.75,
    churn: Annotated[
        float,
        typer.Option(
            "--churn",
            help="Reconnects per second to another gateway (0: off).",
            callback=rate_flag("--churn"),
        ),
    ] = 0.0,
    payload_bytes: Annotated[
        int,
        typer.Option(
            "--payload-bytes",
            min=0,
            max=(1 << 20) - 1024,
            help="Padding added to each message (a message stays within 1 MiB).",
        ),
    ] = 0,
    processes: Annotated[
        int, typer.Option("--processes", min=1, help="Worker processes holding the robots.")
    ] = 1,
    auth_secret: AuthSecretOpt = None,
    slo: Annotated[
        list[str] | None,
        typer.Option("--slo", help="Objective like 'p99<50ms', 'lost==0' (repeatable)."),
    ] = None,
    robot_heartbeat: Annotated[
        str | None,
        typer.Option(
            "--robot-heartbeat",
            help="Robots send this text as an application heartbeat (for gateways that refresh "
            "last_heartbeat only when a robot sends a message, like the original design's).",
        ),
    ] = None,
    robot_heartbeat_every: Annotated[
        float | None,
        typer.Option(
            "--robot-heartbeat-every",
            help="Seconds between a robot's heartbeats (default 5).",
            callback=seconds_flag("--robot-heartbeat-every"),
        ),
    ] = None,
    require_delivery: Annotated[
        bool,
        typer.Option(
            "--require-delivery",
            help="Fail at once when an instance does not listen on its control channel "
            "(by default deliver is skipped for them).",
        ),
    ] = False,
    reconnect: Annotated[
        bool,
        typer.Option(
            "--reconnect",
            help="Robots reconnect after any close (jittered backoff, next gateway); without "
            "it they do so only after a drain's 1012.",
        ),
    ] = False,
    chaos: Annotated[
        str | None,
        typer.Option(
            "--chaos",
            help="drain or kill the first gateway during the deliver phase (kill: only the "
            "sandbox simulate starts); implies --reconnect.",
        ),
    ] = None,
    junit: JunitOpt = None,
    sandbox_gateways: Annotated[
        int, typer.Option("--sandbox-gateways", min=1, help="Gateways in an auto-started sandbox.")
    ] = 2,
    output: ReportOutput = "table",
) -> None:
    """Run real robots against the fleet and check every phase: connect, registered, deliver,
    heartbeat, churn (with --churn) and disconnect.

    With no --gateway and no Redis configured, a sandbox is started: an embedded Redis and two
    gateway processes on loopback, torn down afterwards. With Redis configured but no --gateway,
    the alive gateways are found from their liveness records. Gateways that do not speak the
    control protocol (docs/protocol.md) are found before the deliver phase, which is then
    skipped for their robots (--require-delivery: failed). Exit 0 only when every phase and
    every --slo holds, 1 otherwise (the failed checks are named).

    Robots follow a drain (close code 1012) to the next gateway, as real robots do;
    --reconnect makes them reconnect after any close.
    --chaos drain|kill drains, or SIGKILLs, the first gateway while deliver publishes, and the
    deliver phase reports messages lost (to its robots, in flight to it, to other robots: the
    last must be 0) and the seconds until every robot is registered again.

    Example: wsctl simulate --robots 200 --slo 'p99<50ms' --slo 'lost==0';
    wsctl simulate --gateway ws://a:8000 --gateway ws://b:8000 --robot-heartbeat '{"type":"hb"}'
    """
    from wsctl.ops.simulate.options import SimulateOptions, parse_slo

    check_report_output(output, "simulate")
    if not 0.0 <= non_owner_share <= 1.0:
        raise UsageError("--non-owner-share must be between 0 and 1")
    if duration is not None and duration <= 0:
        raise UsageError("--duration must be greater than 0")
    if robot_heartbeat_every is not None and robot_heartbeat is None:
        raise UsageError("--robot-heartbeat-every goes with --robot-heartbeat TEXT")
    if robot_heartbeat_every is not None and robot_heartbeat_every <= 0:
        raise UsageError("--robot-heartbeat-every must be greater than 0")
    slos = [parse_slo(text) for text in slo or []]
    for url in gateway or []:
        if not url.startswith(("ws://", "wss://")):
            raise UsageError(f"--gateway {url!r} must start with ws:// or wss://")
    settings = state(ctx).settings()
    options = SimulateOptions(
        robots=robots,
        gateways=list(gateway or []),
        messages=messages,
        ramp=ramp,
        churn=churn,
        rate=rate,
        non_owner_share=non_owner_share,
        payload_bytes=payload_bytes,
        processes=processes,
        auth_secret=auth_secret,
        slos=slos,
        robot_heartbeat=robot_heartbeat,
        robot_heartbeat_every=robot_heartbeat_every or 5.0,
        require_delivery=require_delivery,
        liveness_timeout=settings.timeout,
        reconnect=reconnect or chaos is not None,
        chaos=chaos,
    )
    if chaos is not None and chaos not in ("drain", "kill"):
        raise UsageError(f"--chaos {chaos!r}: use drain or kill")
    if chaos is not None and churn > 0:
        raise UsageError("--chaos and --churn exclude each other")
    report = _run_simulation(settings, options, duration, sandbox_gateways)
    if output == "json":
        import json

        sys.stdout.write(json.dumps(report.as_dict(), ensure_ascii=False, indent=2) + "\n")
    else:
        _print_report(report)
    if junit is not None:
        write_junit(report, junit)
    if not report.ok:
        err(f"simulate: FAILED: {', '.join(report.failed)}")
        raise typer.Exit(EXIT_NEGATIVE)
    skipped = [p.name for p in report.phases if p.skipped]
    if skipped:
        err(f"simulate: passed, but not checked: {', '.join(skipped)} (see the detail above)")


def _run_simulation(
    settings: Settings, options: SimulateOptions, duration: float | None, sandbox_gateways: int
) -> SimulateReport:
    from wsctl.sandbox.local import Sandbox, running_sandbox

    running = running_sandbox() if settings.embedded and not options.gateways else None
    need_sandbox = settings.embedded and not options.gateways and running is None
    if options.chaos == "kill" and not need_sandbox:
        raise UsageError(_no_kill_reason(options.gateways, running))
    if options.chaos is not None and sandbox_gateways < 2:
        raise UsageError("--chaos needs at least two gateways: --sandbox-gateways 2 or more")
    from wsctl.ops.simulate.capacity import check_open_files

    # before anything starts; the sandbox and the robot workers inherit the limits raised here
    check_open_files(options.robots, options.processes, sandbox_gateways if need_sandbox else None)
    if not need_sandbox:
        options.duration = duration or settings.heartbeat_interval + 5.0
        return run(_simulate(settings, options))
    if settings.embedded and options.gateways:
        raise UsageError("--gateway needs the gateways' Redis: set WSCTL_REDIS_URL or --redis-url")
    err(f"starting a sandbox: embedded Redis + {sandbox_gateways} gateways on 127.0.0.1")
    with Sandbox(
        gateways=sandbox_gateways,
        heartbeat_interval=SANDBOX_HEARTBEAT,
        timeout=SANDBOX_TIMEOUT,
        auth_secret=options.auth_secret,
    ) as sandbox:
        from wsctl.config import load_settings, without_tls

        options.gateways = sandbox.gateway_urls
        options.duration = duration or SANDBOX_HEARTBEAT * 2 + 3.0

        options.kill_gateway = sandbox.kill_gateway
        sandboxed = without_tls(load_settings({"redis_url": sandbox.redis_url}, env={}))
        return run(_simulate(sandboxed, options))


def _no_kill_reason(gateways: list[str], running: SandboxInfo | None) -> str:
    """Why ``--chaos kill`` cannot run here: it only kills a gateway of the sandbox simulate
    starts itself, which it does not when gateways are given, a Redis is configured, or a
    sandbox is already running (simulate then uses that one's gateways)."""
    if running is not None:
        why = (
            f"a sandbox is running (pid {running.pid}): simulate uses its gateways, and never "
            "kills a process it did not start; stop it first (wsctl sandbox --stop)"
        )
    elif gateways:
        why = "--gateway was given: simulate never kills a process it did not start"
    else:
        why = "a Redis is configured: simulate uses that fleet's gateways"
    return f"--chaos kill needs the sandbox simulate starts itself; {why}, or use --chaos drain"


async def _simulate(settings: Settings, options: SimulateOptions) -> SimulateReport:
    import asyncio

    from wsctl.cli.common import open_store
    from wsctl.ops.simulate.run import alive_gateways
    from wsctl.ops.simulate.run import simulate as run_simulation

    task = asyncio.current_task()
    interrupted = False

    def interrupt() -> None:
        nonlocal interrupted
        interrupted = True
        if task is not None:
            task.cancel()

    on_stop_signals(interrupt)
    try:
        async with open_store(settings) as store:
            if not options.gateways:
                options.gateways = await alive_gateways(store, settings.timeout)
                err(
                    f"found {len(options.gateways)} alive gateway(s): {', '.join(options.gateways)}"
                )
            return await run_simulation(store, options, _progress)
    except asyncio.CancelledError:
        if interrupted:
            raise WsctlError(
                "interrupted; the run's robots were disconnected and its entries removed",
                exit_code=EXIT_INTERRUPTED,
            ) from None
        raise


def _progress(phase: str, text: str) -> None:
    if text != "running":
        err(f"  {phase:<10} {text}")


def _print_report(report: SimulateReport) -> None:
    from wsctl.cli.columns import Column
    from wsctl.cli.output import render

    rows = [
        {
            "phase": p.name,
            "result": "SKIP" if p.skipped else "ok" if p.ok else "FAIL",
            "seconds": f"{p.seconds:.2f}",
            "detail": p.detail,
        }
        for p in report.phases
    ]
    rows += [
        {
            "phase": "slo",
            "result": "ok" if s["ok"] else "FAIL",
            "seconds": "",
            "detail": f"{s['slo']} (actual {s['actual']})",
        }
        for s in report.slos
    ]

    def style(row: dict[str, Any]) -> str | None:
        return {"ok": "green", "SKIP": "yellow"}.get(row["result"], "red")

    render(
        rows,
        [
            Column("phase", "PHASE"),
            Column("result", "RESULT", style=style),
            Column("seconds", "SECONDS", justify="right"),
            Column("detail", "DETAIL"),
        ],
        "table",
        title=f"simulate run {report.run_id}: {counted(report.robots, 'robot')}, "
        f"{counted(len(report.gateways), 'gateway')}",
    )
    if report.latency_ms.get("count"):
        lat = report.latency_ms
        sys.stdout.write(
            f"delivery latency ms: p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}  "
            f"max {lat['max']}  (n={lat['count']})\n"
        )
    if report.connect_ms.get("count"):
        con = report.connect_ms
        sys.stdout.write(f"connect ms: p50 {con['p50']}  p99 {con['p99']}  max {con['max']}\n")
    sys.stdout.write(("PASS" if report.ok else "FAIL") + "\n")


def write_junit(report: SimulateReport, path: Path) -> None:
    """One testsuite, a testcase per phase and per SLO, failures and skips with their detail."""
    from wsctl.cli.junit import JunitCase, write_junit_file

    cases = [JunitCase(p.name, p.status, p.detail, p.seconds) for p in report.phases]
    cases += [
        JunitCase(
            f"slo {s['slo']}", "passed" if s["ok"] else "failed", f"actual {s['actual']}", 0.0
        )
        for s in report.slos
    ]
    write_junit_file(path, f"wsctl.simulate.{report.run_id}", "wsctl.simulate", cases)


def sandbox(
    gateways: Annotated[int, typer.Option("--gateways", min=1, help="How many gateways.")] = 2,
    robots: Annotated[
        int,
        typer.Option(
            "--robots", min=0, help="Demo robots robot-1..robot-N kept connected (0: none)."
        ),
    ] = DEMO_ROBOTS,
    cluster: Annotated[
        bool, typer.Option("--cluster", help="A 3-master/3-replica cluster instead of one node.")
    ] = False,
    heartbeat_interval: Annotated[
        float,
        typer.Option(
            "--heartbeat-interval",
            help="Gateways' heartbeat interval.",
            callback=seconds_flag("--heartbeat-interval"),
        ),
    ] = SANDBOX_HEARTBEAT,
    auth_secret: AuthSecretOpt = None,
    detach: Annotated[
        bool,
        typer.Option("--detach", "-d", help="Run in the background; return once it is ready."),
    ] = False,
    stop_running: Annotated[
        bool, typer.Option("--stop", help="Stop the sandbox running in the background.")
    ] = False,
) -> None:
    """Run a local sandbox: embedded Redis, gateway processes and demo robots.

    In the foreground by default (Ctrl-C stops it cleanly); --detach runs it in the
    background and returns once Redis, the gateways and the robots are up; --stop stops that
    one. Other commands with no Redis configured use the running sandbox by themselves; the
    printed environment lines point anything else at it. The demo robots (robot-1 ..
    robot-20 by default, round robin over the gateways) stay connected, so show, send and
    doctor have someone to talk to.

    Example: wsctl sandbox --detach; wsctl show robot-17; wsctl sandbox --stop
    """
    if stop_running:
        if detach:
            raise UsageError("--stop and --detach exclude each other")
        _stop_sandbox()
        return
    from wsctl.sandbox.service import SandboxSpec, refuse_a_second_sandbox

    refuse_a_second_sandbox()
    spec = SandboxSpec(
        gateways=gateways,
        robots=robots,
        cluster=cluster,
        heartbeat_interval=heartbeat_interval,
        timeout=max(SANDBOX_TIMEOUT, heartbeat_interval * 3),
        auth_secret=auth_secret,
    )
    if detach:
        _detach(spec)
        return
    import signal
    import threading

    from wsctl.sandbox.service import Serving, serve

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def ready(serving: Serving) -> None:
        for name, value in serving.env.items():
            sys.stdout.write(f"export {name}={value}\n")
        for url in serving.gateway_urls:
            sys.stdout.write(f"# gateway {url}/ws/{{robot_id}}\n")
        if serving.demo_robots:
            sys.stdout.write(f"# demo robots robot-1 .. robot-{serving.demo_robots} connected\n")
        sys.stdout.flush()
        err("sandbox running; Ctrl-C stops it (or wsctl sandbox --stop)")

    err("starting sandbox...")
    serve(spec, stop, ready, lambda: err("stopping sandbox..."))
    err("sandbox stopped")


def _detach(spec: SandboxSpec) -> None:
    """Start the sandbox in the background and print the lines that point other commands at
    it once it is ready."""
    from wsctl.sandbox.service import start_detached

    started = start_detached(spec)
    info = started.info
    if info.cluster_nodes:
        lines = [
            "export REDIS_USE_CLUSTER=true",
            f"export REDIS_NODES={info.cluster_nodes}",
        ]
    else:
        lines = [f"export WSCTL_REDIS_URL={info.redis_url}"]
    lines += [f"# gateway {url}/ws/{{robot_id}}" for url in info.gateways]
    if spec.robots:
        lines.append(f"# demo robots robot-1 .. robot-{spec.robots} connected")
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    err(f"sandbox running in the background (pid {started.pid}, log {started.log_path})")
    err("stop it with: wsctl sandbox --stop")


def _stop_sandbox() -> None:
    """Stop the sandbox running in the background and say so."""
    from wsctl.sandbox.service import stop_sandbox

    err(f"sandbox stopped (pid {stop_sandbox()})")
