"""``wsctl top``: the whole fleet, live, on one terminal screen (or one snapshot with
``--once``)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from wsctl.cli.common import (
    StaleTimeoutOpt,
    err,
    keyspace_of,
    resolve_target,
    run,
    seconds_flag,
    state,
)
from wsctl.errors import EXIT_NEGATIVE, EXIT_REDIS, RedisUnavailable, UsageError, WsctlError

if TYPE_CHECKING:
    from wsctl.config import Settings

__all__ = ["INSTALL_HINT", "top"]

INSTALL_HINT = (
    "wsctl top needs the tui extra: pip install 'wsctl[tui]' "
    "(wsctl top --once -o table|json works without it)"
)
# Keys SCAN visits per second for the registry summary (see README, wsctl top: what a refresh
# costs Redis); a pass over N keys takes about N / this seconds.
DEFAULT_SCAN_RATE = 800


def top(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="Print one snapshot and exit (no extra needed).")
    ] = False,
    output: Annotated[
        str, typer.Option("-o", "--output", help="With --once: table or json.")
    ] = "table",
    interval: Annotated[
        float,
        typer.Option(
            "--interval",
            help="Seconds between refreshes (--once: between its two reads, for rates).",
            callback=seconds_flag("--interval"),
        ),
    ] = 2.0,
    timeout: StaleTimeoutOpt = None,
    scan_rate: Annotated[
        int,
        typer.Option(
            "--scan-rate",
            min=1,
            max=1_000_000,
            help="Keys per second the background registry scan visits.",
        ),
    ] = DEFAULT_SCAN_RATE,
    events: Annotated[
        int, typer.Option("--events", min=1, max=10_000, help="Newest events kept and shown.")
    ] = 200,
) -> None:
    """Watch the whole fleet live: instances (liveness, robots held, rates of delivered,
    forwarded and failed messages, connects and disconnects), the registry (fresh, stale,
    malformed, on dead instances, heartbeat-age histogram), the newest events, and alerts in
    words at the top. Everything comes from Redis (gateways put their counters in their
    liveness records), so it works where the gateways' HTTP ports cannot be reached.

    Each refresh costs O(instances + new events); the registry summary is built by a bounded
    background SCAN (--scan-rate keys per second) and the header says how old it is.
    Keys: s sort, / filter instances, g robot glob, Enter open, k kick, d drain, u undrain,
    q or Ctrl-C quit. The live screen needs the tui extra (pip install 'wsctl[tui]'; without
    it: exit 3 and that line); started while Redis is down, it opens on that alert and fills
    in once Redis answers. --once prints one snapshot (two reads --interval apart, for
    rates) with no extra: exit 0, 1 when an alert is an error, 3 when Redis fails.

    Example: wsctl top --once -o json | jq '.alerts'
    """
    if output not in ("table", "json"):
        raise UsageError("top supports -o table or json")
    settings = state(ctx).settings(timeout=timeout)
    if once:
        code = run(_once(settings, output, interval, events))
        if code:
            raise typer.Exit(code)
        return
    if output != "table":
        raise UsageError("-o json needs --once (the live screen is for a terminal)")
    try:
        import textual  # noqa: F401
    except ImportError:
        raise WsctlError(INSTALL_HINT, exit_code=EXIT_REDIS) from None
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("wsctl top needs a terminal; for scripts use wsctl top --once -o json")
    result = run(_live(settings, interval, scan_rate, events))
    if result:
        raise typer.Exit(result)


def _describe(settings: Settings, target: Any) -> Any:
    from wsctl.ops.top_collector import redis_problem

    def describe(exc: BaseException) -> str:
        return redis_problem(target, exc, settings.socket_timeout)

    return describe


async def _once(settings: Settings, fmt: str, interval: float, events: int) -> int:
    import asyncio

    from wsctl.cli.common import open_store
    from wsctl.ops.top_collector import Collector

    async with open_store(settings) as store:
        collector = Collector(
            store.client,
            store.keys,
            naive_tz=store.naive_tz,
            timeout=settings.timeout,
            describe=_describe(settings, resolve_target(settings)),
            events=events,
            scan_count=settings.scan_count,
        )
        try:
            await collector.scanner.full_pass()
            snapshot = await collector.refresh()
            if collector.error is None:
                await asyncio.sleep(interval)
                snapshot = await collector.refresh()
        finally:
            await collector.close()
        if collector.error is not None:
            raise RedisUnavailable(collector.error)
    data = snapshot.as_dict()
    if fmt == "json":
        from wsctl.cli.output import render_object

        render_object(data, "json")
    else:
        _print_table(data, resolve_target(settings).describe())
    return EXIT_NEGATIVE if any(a["severity"] == "error" for a in data["alerts"]) else 0


def _print_table(data: dict[str, Any], where: str) -> None:
    from wsctl.cli.columns import WORD_MAX
    from wsctl.cli.tables import UNWRAPPED, build_table, make_console, print_table
    from wsctl.cli.topview import (
        alert_lines,
        event_cells,
        fit_lines,
        fitting_columns,
        header_parts,
        instance_cells,
        instance_columns,
        instance_row,
        registry_lines,
    )

    out = sys.stdout
    width = make_console(out).width
    for line in fit_lines(header_parts(data, where, None), width):
        out.write(line + "\n")
    for severity, text in alert_lines(data):
        out.write(f"{severity.upper()}: {text}\n")
    if not data["alerts"]:
        out.write("no alerts\n")
    rows = [instance_row(i) for i in data["instances"]]
    columns = instance_columns()
    if width < UNWRAPPED:  # a terminal, or COLUMNS: the columns that fit, as on the screen
        texts = [instance_cells(row, columns) for row in rows]
        # the table's rules: a space either side of each column's separator
        columns = fitting_columns(columns, texts, width + 1, pad=3)
    print_table(build_table(rows, columns, wide=True, title=None))
    for line in registry_lines(data["registry"], width):
        out.write(line + "\n")
    if data["events"]:
        out.write("events (newest last):\n")
        for row in data["events"][-20:]:
            cells = event_cells(row, WORD_MAX)
            out.write("  " + "  ".join(c for c in cells if c) + "\n")
    out.flush()


async def _live(settings: Settings, interval: float, scan_rate: int, events: int) -> int:
    import contextlib

    from wsctl.cli.tui.app import TopApp
    from wsctl.errors import TlsError
    from wsctl.ops.top_collector import Collector
    from wsctl.redis.factory import close_client, connect, make_client
    from wsctl.timezones import resolve_tz

    target = resolve_target(settings)
    async with contextlib.AsyncExitStack() as stack:
        # no retries: a refresh against a frozen Redis gives up after one request timeout,
        # says so on the screen and tries again at the next refresh
        try:
            client = await stack.enter_async_context(
                connect(target, socket_timeout=settings.socket_timeout, retries=0)
            )
        except TlsError:
            raise  # a TLS setting to fix: no refresh will heal it
        except RedisUnavailable:
            # Redis down as top starts (the 3 a.m. case): the screen opens on that alert and
            # fills in once Redis answers, as it does when Redis fails later
            client = make_client(target, retries=0, socket_timeout=settings.socket_timeout)
            stack.push_async_callback(close_client, client)
        collector = Collector(
            client,
            keyspace_of(settings),
            naive_tz=resolve_tz(settings.naive_tz),
            timeout=settings.timeout,
            describe=_describe(settings, target),
            events=events,
            scan_count=min(settings.scan_count, scan_rate),
        )
        app = TopApp(
            collector,
            where=target.describe(),
            interval=interval,
            scan_rate=scan_rate,
            timeout=settings.timeout,
        )
        try:
            await app.run_async()
        finally:
            await collector.close()
        if app.failure is not None:
            raise app.failure
    if app.note:
        err(app.note)
    return app.return_code or 0
