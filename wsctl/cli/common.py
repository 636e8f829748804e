"""Shared CLI plumbing: global options, settings, the registry connection, async running.

Imports of settings, the Redis layer and the registry are inside the functions that use them:
every command module imports this one, so ``wsctl --help`` would otherwise load redis-py and
asyncio (bench/help_startup.py measures it).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from wsctl.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from wsctl.config import Settings
    from wsctl.ops.deployment import Deployment
    from wsctl.redis.target import AsyncClient, Target

__all__ = [
    "OUTPUT_HELP",
    "AuthSecretOpt",
    "BackupOpt",
    "CliState",
    "JunitOpt",
    "NoBackupOpt",
    "OutputOpt",
    "ReportOutput",
    "RobotEventsOpt",
    "StaleTimeoutOpt",
    "check_output",
    "check_report_output",
    "debug_enabled",
    "err",
    "keyspace_of",
    "on_stop_signals",
    "open_client",
    "open_store",
    "rate_flag",
    "resolve_target",
    "run",
    "seconds_flag",
    "state",
]

T = TypeVar("T")

OUTPUT_HELP = "Output format: table, wide, json, jsonl or csv."

# Commands that print a listing take every format; those that print one report rather than a
# listing take -o table|json.
OutputOpt = Annotated[str, typer.Option("-o", "--output", help=OUTPUT_HELP)]
ReportOutput = Annotated[str, typer.Option("-o", "--output", help="table or json.")]

# The gateways' shared secret: wsctl gateway and wsctl sandbox start gateways with it; token,
# conformance and simulate compute the robots' tokens from it.
AuthSecretOpt = Annotated[
    str | None,
    typer.Option(
        "--auth-secret",
        envvar="WSCTL_AUTH_SECRET",
        show_envvar=True,
        help="Shared secret: robots must present hex HMAC-SHA256(secret, robot_id).",
    ),
]

# Commands that remove entries back them up first (default: a file under the state dir).
BackupOpt = Annotated[Path | None, typer.Option("--backup", help="Backup file (JSONL, appended).")]
NoBackupOpt = Annotated[bool, typer.Option("--no-backup", help="Do not write a backup.")]

# Commands that end in pass/fail checks (conformance, simulate) write them for CI.
JunitOpt = Annotated[Path | None, typer.Option("--junit", help="Write JUnit XML here.")]

# Bulk commands (reap, registry import/restore): which robots get their own event
# (wsctl.eventlog.model.parse_robot_events reads it).
RobotEventsOpt = Annotated[
    str,
    typer.Option(
        "--robot-events",
        metavar="N|all|none",
        help=(
            "Record a per-robot event for the first N robots of the run, for all, or none; "
            "the run's summary event is always recorded."
        ),
    ),
]


def seconds_flag(
    flag: str, *, wait: bool = True, allow_zero: bool = False
) -> Callable[[float | None], float | None]:
    """The callback every duration flag of the CLI takes: :func:`wsctl.durations.check_seconds`
    (finite, at least 1 ms, at most a day for waits or ten years for ages), a one-line usage
    error (exit 2) otherwise."""
    from wsctl.durations import AGE_MAX_S, WAIT_MAX_S, check_seconds

    maximum = WAIT_MAX_S if wait else AGE_MAX_S

    def check(value: float | None) -> float | None:
        if value is None:
            return None
        try:
            return check_seconds(value, maximum=maximum, allow_zero=allow_zero)
        except ValueError as exc:
            raise UsageError(f"invalid {flag} {value!r}: {exc}") from None

    return check


# When an entry is stale (commands that judge entries; default: the configured timeout).
StaleTimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        help="Seconds without heartbeat that make an entry stale (default: config, 90).",
        callback=seconds_flag("--timeout", wait=False),
    ),
]


def rate_flag(flag: str) -> Callable[[float], float]:
    """The callback every rate flag of the CLI takes: :func:`wsctl.durations.check_rate`
    (finite, 0 for no pacing, at most a million per second), a one-line usage error (exit 2)
    otherwise."""
    from wsctl.durations import check_rate

    def check(value: float) -> float:
        try:
            return check_rate(value)
        except ValueError as exc:
            raise UsageError(f"invalid {flag} {value!r}: {exc}") from None

    return check


def check_report_output(fmt: str, command: str) -> str:
    """``fmt`` when it is ``table`` or ``json`` (the formats a command that reports one
    result takes); otherwise a UsageError naming ``command``."""
    if fmt not in ("table", "json"):
        raise UsageError(f"{command} supports -o table or json")
    return fmt


@dataclass
class CliState:
    """What the root callback collected: global flags, resolved lazily into Settings."""

    flags: dict[str, Any] = field(default_factory=dict)
    debug: bool = False
    _settings: Settings | None = None

    def settings(self, **overrides: Any) -> Settings:
        """The settings (flags > env > file > defaults), loaded once per invocation;
        ``overrides`` not None (a command's own options) win over them."""
        from wsctl.config import load_settings, with_overrides

        if self._settings is None:
            self._settings = load_settings(self.flags)
        given = {k: v for k, v in overrides.items() if v is not None}
        if given:
            from wsctl.config import convert_value

            converted = {k: convert_value(k, v, "flag") for k, v in given.items()}
            return with_overrides(self._settings, **converted)
        return self._settings


def state(ctx: typer.Context) -> CliState:
    """The invocation's :class:`CliState`, kept on the root context by the app callback."""
    obj = ctx.find_root().obj
    if not isinstance(obj, CliState):  # pragma: no cover - the root callback always sets it
        obj = CliState()
        ctx.find_root().obj = obj
    return obj


def on_stop_signals(callback: Any) -> None:
    """Call ``callback`` on SIGTERM/SIGINT in the running loop (main thread only; embedded
    callers such as tests run commands in worker threads, where signals cannot be handled)."""
    import asyncio
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, callback)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one command's coroutine on the chosen event loop (:mod:`wsctl.eventloop`; asyncio
    is imported here, not at start-up)."""
    from wsctl.eventloop import run as run_on_loop

    return run_on_loop(coro)


def check_output(fmt: str) -> str:
    """``fmt`` when it is a listing format (``-o``); otherwise a UsageError listing them."""
    from wsctl.cli.output import FORMATS

    if fmt not in FORMATS:
        raise UsageError(f"unknown output format {fmt!r}; use one of {', '.join(FORMATS)}")
    return fmt


def resolve_target(settings: Settings) -> Target:
    """The Redis to use; with nothing configured, the running ``wsctl sandbox`` if any."""
    from wsctl.redis.factory import target_from_settings

    if settings.embedded:
        from wsctl.sandbox.local import running_sandbox

        found = running_sandbox()
        if found is None:
            raise ConfigError(
                "no Redis configured: set WSCTL_REDIS_URL (or REDIS_HOST / REDIS_NODES), "
                "use --redis-url, or start one with `wsctl sandbox --detach`"
            )
        from wsctl.config import load_settings, without_tls

        settings = without_tls(load_settings(found.flags(), env={}))
    _show_redis_warnings()
    return target_from_settings(settings)


def _show_redis_warnings() -> None:
    """The client factory logs what an operator must see on every run (TLS verification
    turned off) on the ``wsctl.redis`` logger: print those records as ``wsctl: warning:``
    lines on stderr, once each, whatever logging the command configured (logging is imported
    here, not at start-up)."""
    import logging

    logger = logging.getLogger("wsctl.redis")
    if any(h.get_name() == "wsctl-cli-warnings" for h in logger.handlers):
        return

    class WarningLines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            err(f"wsctl: warning: {record.getMessage()}")

    handler = WarningLines(logging.WARNING)
    handler.set_name("wsctl-cli-warnings")
    logger.addHandler(handler)
    logger.propagate = False


@contextlib.asynccontextmanager
async def open_client(settings: Settings) -> AsyncIterator[AsyncClient]:
    """A Redis client on the configured target for the ``async with`` body, closed after;
    connection errors become RedisUnavailable (exit 3)."""
    from wsctl.redis.factory import connect

    async with connect(resolve_target(settings), socket_timeout=settings.socket_timeout) as client:
        yield client


@contextlib.asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[Deployment]:
    """The configured deployment (its registry store, and control-channel requests to its
    instances: :class:`~wsctl.ops.deployment.Deployment`); errors become RedisUnavailable."""
    from wsctl.ops.deployment import Deployment
    from wsctl.timezones import resolve_tz

    async with open_client(settings) as client:
        store = Deployment(
            client,
            keyspace_of(settings),
            naive_tz=resolve_tz(settings.naive_tz),
            scan_count=settings.scan_count,
        )
        yield store
        for node, reason in sorted(store.unreachable.items()):
            err(
                f"wsctl: warning: cluster primary {node} was unreachable; entries in its "
                f"slots were not included ({reason})"
            )


def keyspace_of(settings: Settings) -> Any:
    """The :class:`~wsctl.registry.keys.Keyspace` of the configured key, liveness and
    control-channel prefixes."""
    from wsctl.registry.keys import Keyspace

    return Keyspace(
        prefix=settings.prefix,
        instance_prefix=settings.instance_prefix,
        control_prefix=settings.control_prefix,
    )


def err(message: str) -> None:
    """One diagnostic line on stderr, control characters escaped (messages quote ids and
    values from the registry, which is untrusted)."""
    from wsctl.cli.columns import printable

    sys.stderr.write(printable(message.rstrip("\n")) + "\n")
    sys.stderr.flush()


def debug_enabled() -> bool:
    """True when ``WSCTL_DEBUG`` asks for tracebacks instead of one-line errors."""
    return os.environ.get("WSCTL_DEBUG", "") not in ("", "0", "false")
