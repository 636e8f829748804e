"""The ``wsctl`` root command and the one boundary where errors become exit codes.

Command modules are imported here (Typer needs their signatures for ``--help``) but keep their
heavy imports (redis, websockets, rich tables) inside the functions, so ``wsctl --help`` is fast.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Annotated, Any, NoReturn

import typer

from wsctl import __version__
from wsctl.cli import (
    completion_cmd,
    config_cmd,
    conformance_cmd,
    control_cmd,
    drain_cmd,
    events_cmd,
    fleet_cmd,
    ops_cmd,
    read_cmd,
    registry_cmd,
    sim_cmd,
    top_cmd,
)
from wsctl.cli.common import CliState, debug_enabled, err, seconds_flag
from wsctl.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, WsctlError

__all__ = ["app", "main"]

app = typer.Typer(
    name="wsctl",
    help=(
        "Operate and diagnose WebSocket gateway fleets that share a Redis connection registry.\n\n"
        "Example: wsctl list connections --stale -o json"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_debug = False


def _version(value: bool) -> None:
    if value:
        typer.echo(f"wsctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            help="redis://, rediss:// or unix:// URL (percent-encode a password, or use "
            "REDIS_PASSWORD).",
        ),
    ] = None,
    cluster: Annotated[
        bool | None, typer.Option("--cluster/--no-cluster", help="Redis Cluster mode.")
    ] = None,
    nodes: Annotated[
        str | None, typer.Option("--nodes", help="Cluster start-up nodes host:port,host:port.")
    ] = None,
    tls: Annotated[
        bool | None,
        typer.Option(
            "--tls/--no-tls",
            help="TLS to Redis (also with host/port settings; rediss:// URLs imply it).",
        ),
    ] = None,
    tls_ca_cert: Annotated[
        str | None,
        typer.Option("--tls-ca-cert", metavar="PATH", help="CA bundle for Redis' certificate."),
    ] = None,
    tls_cert: Annotated[
        str | None,
        typer.Option("--tls-cert", metavar="PATH", help="Client certificate (mutual TLS)."),
    ] = None,
    tls_key: Annotated[
        str | None,
        typer.Option("--tls-key", metavar="PATH", help="Private key of --tls-cert."),
    ] = None,
    tls_insecure: Annotated[
        bool | None,
        typer.Option(
            "--tls-insecure",
            help="Do not verify Redis' certificate or host name (warns on every run).",
        ),
    ] = None,
    request_timeout: Annotated[
        float | None,
        typer.Option(
            "--request-timeout",
            help="Seconds any one Redis read or write may take (default 5; also "
            "WSCTL_SOCKET_TIMEOUT). A stalled Redis fails the command with exit 3 within about "
            "3x this.",
            callback=seconds_flag("--request-timeout"),
        ),
    ] = None,
    context: Annotated[
        str | None, typer.Option("--context", help="Named context from the config file.")
    ] = None,
    config: Annotated[str | None, typer.Option("--config", help="Config file path.")] = None,
    prefix: Annotated[
        str | None, typer.Option("--prefix", help="Registry key prefix (default ws_conn:).")
    ] = None,
    naive_tz: Annotated[
        str | None,
        typer.Option("--naive-tz", help="Zone for naive timestamps: local (default), UTC, IANA."),
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks (also WSCTL_DEBUG=1).")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Operate and diagnose WebSocket gateway fleets that share a Redis connection registry."""
    global _debug
    _debug = debug or debug_enabled()
    from wsctl.eventloop import loop_factory

    # a bad WSCTL_EVENT_LOOP is one line and exit 3 before anything starts (simulate's
    # gateway processes would otherwise each die of it at start)
    loop_factory()
    ctx.obj = CliState(
        flags={
            "redis_url": redis_url,
            "redis_cluster": cluster,
            "redis_nodes": nodes,
            "redis_tls": tls,
            "tls_ca_cert": tls_ca_cert,
            "tls_cert": tls_cert,
            "tls_key": tls_key,
            "tls_insecure": tls_insecure,
            "socket_timeout": request_timeout,
            "context": context,
            "config": config,
            "prefix": prefix,
            "naive_tz": naive_tz,
        },
        debug=_debug,
    )


app.add_typer(read_cmd.list_app, name="list")
app.command("show")(read_cmd.show)
app.add_typer(registry_cmd.registry_app, name="registry")
app.add_typer(config_cmd.config_app, name="config")
app.command("send")(fleet_cmd.send)
app.command("gateway")(fleet_cmd.gateway)
app.command("token")(fleet_cmd.token)
app.command("kick")(control_cmd.kick)
app.command("ping")(control_cmd.ping)
app.command("reap")(ops_cmd.reap)
app.command("doctor")(ops_cmd.doctor)
app.command("simulate")(sim_cmd.simulate)
app.command("sandbox")(sim_cmd.sandbox)
app.command("completion")(completion_cmd.completion)
app.command("events")(events_cmd.events)
app.command("history")(events_cmd.history)
app.command("drain")(drain_cmd.drain)
app.command("undrain")(drain_cmd.undrain)
app.command("top")(top_cmd.top)
app.command("conformance")(conformance_cmd.conformance)


def _one_value_each(command: Any) -> None:
    """Make ``command`` and every command under it refuse an option that takes one value
    given more than once (click keeps the last one silently: ``wsctl send hi --robot
    'a*' --robot 'b*'`` sent to ``b*`` alone). Flags and repeatable options are not
    concerned. A usage error, exit 2."""
    from typer._click.exceptions import UsageError

    def strict(cmd: Any) -> None:
        parse = cmd.parse_args

        def parse_args(ctx: Any, args: list[str]) -> Any:
            _, _, order = cmd.make_parser(ctx).parse_args(args=list(args))
            seen: set[str] = set()
            for param in order:
                if getattr(param, "param_type_name", "") != "option" or param.multiple:
                    continue
                if param.count or param.is_flag or param.name is None:
                    continue
                if param.name in seen:
                    name = max(param.opts, key=len)
                    raise UsageError(f"{name} given more than once; it takes one value", ctx)
                seen.add(param.name)
            return parse(ctx, args)

        cmd.parse_args = parse_args
        for sub in getattr(cmd, "commands", {}).values():
            strict(sub)

    strict(command)


def _tolerant_streams() -> None:
    """Keys that are not UTF-8 are read with surrogateescape; JSON output prints those bytes
    as \\udcXX escapes rather than crash, and they parse back to the same surrogates, so an
    export of such keys imports to the very same bytes. (Text for people escapes them first,
    as ``$'\\xff'``; CSV writes the bytes themselves.)"""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, map WsctlError to its exit code."""
    # typer 0.28 vendors click (pinned in pyproject): its exceptions live here
    from typer._click import exceptions as click

    from wsctl.system import tune_gc

    _tolerant_streams()
    # bulk reads allocate millions of short-lived containers (a reply list, a dict and a
    # record per entry): about 10% of a 200k-entry list or reap went to the cycle collector
    tune_gc()
    if completion_cmd.COMPLETE_VAR in os.environ:  # a shell asking for completions
        from typer._completion_classes import completion_init

        completion_init()
    try:
        command = typer.main.get_command(app)
        _one_value_each(command)
        code = command.main(args=argv, prog_name="wsctl", standalone_mode=False)
    except click.NoArgsIsHelpError as exc:
        exc.show()  # a group without a command: its help
        sys.exit(EXIT_USAGE)
    except click.UsageError as exc:
        sys.exit(_usage_error(exc))
    except click.ClickException as exc:  # e.g. a file option that cannot be opened
        err(f"wsctl: error: {exc.format_message()}")
        sys.exit(EXIT_USAGE)
    except typer.Abort:  # click's spelling of KeyboardInterrupt
        err("wsctl: interrupted")
        _exit_interrupted()
    except WsctlError as exc:
        if _debug or debug_enabled():
            raise
        err(f"wsctl: error: {exc.message}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err("wsctl: interrupted")
        _exit_interrupted()
    except OSError as exc:
        if _debug or debug_enabled():
            raise
        if exc.errno not in _FULL:
            _internal_error(exc)
        # stdout (or a file) on a full disk: `wsctl registry export > backup.jsonl`
        err(f"wsctl: error: cannot write the output: {exc.strerror}")
        _exit_now(EXIT_USAGE)
    except Exception as exc:  # the one boundary: anything unexpected is one line, exit 70
        if _debug or debug_enabled():
            raise
        _internal_error(exc)
    if isinstance(code, int) and code:
        if code == EXIT_INTERRUPTED:  # typer's spelling of KeyboardInterrupt (Ctrl-C)
            err("wsctl: interrupted")
            _exit_interrupted()
        sys.exit(code)


# A write that failed for want of room (a full disk, a quota, a file size limit): the
# operator's environment, not a bug in wsctl.
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def _internal_error(exc: Exception) -> NoReturn:
    """A bug in wsctl: one line naming the exception, exit 70."""
    err(
        f"wsctl: internal error: {exc.__class__.__name__}: {exc} "
        "(run with --debug for a traceback and report it)"
    )
    sys.exit(EXIT_INTERNAL)


def _exit_now(code: int) -> NoReturn:
    """Exit with ``code`` without flushing stdout again: output that could not be written
    would fail once more at the interpreter's teardown ("Exception ignored", exit 120). An
    in-process caller (a thread other than the main one) gets the usual SystemExit."""
    import contextlib
    import threading

    if threading.current_thread() is not threading.main_thread():
        sys.exit(code)
    with contextlib.suppress(Exception):  # stderr gone too: nothing more can be said
        sys.stderr.flush()
    os._exit(code)


def _exit_interrupted() -> None:
    """Exit 130 at once after Ctrl-C: what was printed is flushed, and the interpreter's
    teardown is skipped (freeing a half-drawn 20,000-row table took half a second). An
    in-process caller (a thread other than the main one) gets the usual SystemExit."""
    import contextlib
    import threading

    if threading.current_thread() is not threading.main_thread():
        sys.exit(EXIT_INTERRUPTED)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing more can be said
            stream.flush()
    os._exit(EXIT_INTERRUPTED)


def _usage_error(exc: Any) -> int:
    """A usage error as one line on stderr (docs/reference/exit-codes.md: errors are one line), naming where the
    help is; returns the exit code (2)."""
    message = " ".join(exc.format_message().split())
    where = ""
    if exc.ctx is not None:
        where = f" (see {exc.ctx.command_path} --help)"
    err(f"wsctl: error: {message}{where}")
    return EXIT_USAGE
