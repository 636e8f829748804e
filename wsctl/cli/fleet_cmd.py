"""``wsctl gateway``, ``wsctl send`` and ``wsctl token``: run an instance and talk to the fleet."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from wsctl.cli.common import (
    AuthSecretOpt,
    check_report_output,
    err,
    keyspace_of,
    on_stop_signals,
    open_client,
    rate_flag,
    resolve_target,
    run,
    seconds_flag,
    state,
)
from wsctl.cli.completion_cmd import complete_instance_ids, complete_robot_ids
from wsctl.errors import UsageError

if TYPE_CHECKING:
    from wsctl.config import Settings


def gateway(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port (0 picks a free one).")
    ] = 8765,
    instance_id: Annotated[
        str | None,
        typer.Option(
            "--instance-id",
            envvar="SERVER_INSTANCE_ID",
            help="Instance id (default: md5 of hostname:port:pid, the original design's rule).",
        ),
    ] = None,
    auth_secret: AuthSecretOpt = None,
    heartbeat_interval: Annotated[
        float | None,
        typer.Option(
            "--heartbeat-interval",
            help="Seconds between heartbeats.",
            callback=seconds_flag("--heartbeat-interval"),
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            help="Connection timeout (liveness TTL).",
            callback=seconds_flag("--timeout"),
        ),
    ] = None,
    max_message_bytes: Annotated[
        int,
        typer.Option(
            "--max-message-bytes",
            min=1,
            max=1 << 20,
            help="Largest message accepted (at most 1 MiB, the default).",
        ),
    ] = 1 << 20,
    advertise_url: Annotated[
        str | None,
        typer.Option(
            "--advertise-url", help="ws:// URL published in the liveness record (behind a proxy)."
        ),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning.")] = "info",
    events: Annotated[
        bool,
        typer.Option("--events/--no-events", help="Write the event log (wsctl events / history)."),
    ] = True,
    events_maxlen: Annotated[
        int,
        typer.Option("--events-maxlen", min=1, help="Cap (MAXLEN ~) of the instance's stream."),
    ] = 100_000,
    robot_events_maxlen: Annotated[
        int,
        typer.Option("--robot-events-maxlen", min=1, help="Cap (MAXLEN ~) of each robot's stream."),
    ] = 200,
) -> None:
    """Run a reference gateway instance: robots connect to ws://HOST:PORT/ws/{robot_id}.

    Registers each robot in the shared registry (fenced by conn_id), refreshes heartbeats in
    one pipelined batch per interval, forwards messages for robots on other instances over the
    control channel, serves /healthz and /metrics, appends events to its capped stream
    (wsctl events / history), drains on `wsctl drain`. SIGTERM/SIGINT: close sockets with 1001,
    remove own entries, exit 0.

    Example: wsctl gateway --port 8765 --instance-id gw-a
    """
    import logging

    from wsctl.eventlog.model import EventLimits
    from wsctl.gateway.server import Gateway, GatewayConfig
    from wsctl.registry.keys import validate_id

    if instance_id is not None:
        validate_id(instance_id, "instance id", utf8=True)
    from wsctl.system import raise_fd_limit

    raise_fd_limit()
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        raise UsageError(f"unknown log level {log_level!r}")
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("websockets").setLevel(max(level, logging.WARNING))
    settings = state(ctx).settings(heartbeat_interval=heartbeat_interval, timeout=timeout)
    if not auth_secret:
        logging.getLogger("wsctl.gateway").warning(
            "no --auth-secret: any client may connect as any robot (open gateway)"
        )
    config = GatewayConfig(
        host=host,
        port=port,
        instance_id=instance_id,
        auth_secret=auth_secret,
        heartbeat_interval=settings.heartbeat_interval,
        timeout=settings.timeout,
        max_message_bytes=max_message_bytes,
        keyspace=keyspace_of(settings),
        advertise_url=advertise_url,
        events=events,
        event_limits=EventLimits(instance_maxlen=events_maxlen, robot_maxlen=robot_events_maxlen),
        socket_timeout=settings.socket_timeout,
    )
    run(_serve(Gateway(config, resolve_target(settings)), settings.socket_timeout))


async def _check_tls(target: Any, socket_timeout: float) -> None:
    """With TLS on, connect once before serving: a TLS failure (untrusted certificate, client
    certificate refused, TLS/plain mismatch) is a configuration error that retrying cannot fix,
    so the gateway exits 3 with it. Any other failure (Redis down) leaves the gateway to start
    and retry, as it does without TLS."""
    from wsctl.errors import RedisUnavailable, TlsError
    from wsctl.redis.factory import connect

    if target.tls is None:
        return
    try:
        async with connect(target, retries=0, socket_timeout=socket_timeout):
            pass
    except TlsError:
        raise
    except RedisUnavailable:
        pass


async def _serve(gw: Any, socket_timeout: float) -> None:
    import asyncio

    await _check_tls(gw.target, socket_timeout)
    stop = asyncio.Event()
    on_stop_signals(stop.set)
    try:
        await gw.start()
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {gw.config.host}:{gw.config.port}: {exc.strerror}"
        ) from None
    err(
        f"gateway {gw.instance_id} listening on {gw.config.host}:{gw.port}; "
        f"robots connect to {gw.ws_url}/ws/{{robot_id}}"
    )
    try:
        await stop.wait()
    finally:
        await gw.stop()


def send(
    ctx: typer.Context,
    robot_id: Annotated[
        str | None,
        typer.Argument(
            metavar="ROBOT|MESSAGE",
            help="Robot id (exact), then the message; with --robot, --instance or "
            "--robots-from, only the message.",
            show_default=False,
            autocompletion=complete_robot_ids,
        ),
    ] = None,
    message: Annotated[
        str | None,
        typer.Argument(
            metavar="[MESSAGE]", help="Message text; - reads stdin.", show_default=False
        ),
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="Read the message from a file.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Validate the message as JSON first.")
    ] = False,
    via: Annotated[
        str | None,
        typer.Option(
            "--via",
            help="Inject at this instance and let it route.",
            autocompletion=complete_instance_ids,
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", help="Seconds to wait for the reply.", callback=seconds_flag("--timeout")
        ),
    ] = 5.0,
    trace: Annotated[
        bool, typer.Option("--trace", help="Print every hop with its latency.")
    ] = False,
    robot_glob: Annotated[
        str | None,
        typer.Option("--robot", help="Fan-out: every registered robot matching this glob."),
    ] = None,
    instance: Annotated[
        str | None,
        typer.Option(
            "--instance",
            help="Fan-out: every robot registered to this instance.",
            autocompletion=complete_instance_ids,
        ),
    ] = None,
    robots_from: Annotated[
        str | None,
        typer.Option("--robots-from", help="Fan-out: robot ids, one a line, from FILE or -."),
    ] = None,
    rate: Annotated[
        float,
        typer.Option(
            "--rate",
            help="Fan-out: robots per second (0: no pacing).",
            callback=rate_flag("--rate"),
        ),
    ] = 0.0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Fan-out: list the selection, send nothing.")
    ] = False,
    output: Annotated[
        str,
        typer.Option(
            "-o",
            "--output",
            help="One robot: table or json. Fan-out: table, wide, json (the summary "
            "object), jsonl or csv (one row per robot).",
        ),
    ] = "table",
) -> None:
    """Send a message to a robot, or to many, through the fleet and report what became of it.

    One robot: without --via the message goes to the robot's registered owner; with --via it is
    injected at that instance, which forwards it (at most 2 hops). Exit codes: 0 delivered,
    1 not connected/rejected, 4 not registered, 5 instance unreachable, 6 timed out.
    The message is UTF-8 text of at most 1 MiB, the largest a gateway accepts: a larger one
    (MESSAGE, --file or - for stdin, which are read no further) is refused, exit 2, and
    nothing is sent.

    Many robots (--robot GLOB, --instance ID or --robots-from FILE|-): the selection streams
    from the registry (or the file), each robot's owner gets batches carrying the message once
    (or --via routes them), and a summary says how many were delivered, not_connected,
    rejected, instance_unreachable, timeout. -o json: the summary as one object; -o jsonl and csv
    give one row per robot (summary on stderr); -o table lists the first robots not delivered
    under the summary line, -o wide every robot as it answers (streamed), the summary under
    them. --dry-run lists robot and owner in any -o format (a table sorted by robot, the first
    1000). Exit 0 when every selected robot got it (also when nothing matched: a line on
    stderr says so), 1 otherwise, 3 when Redis fails mid-send (the run stops; robots not sent
    are counted not_tried).

    Example: wsctl send robot-17 '{"cmd": "ping"}' --json --via gw-a --trace

    Example: wsctl send '{"cmd": "update"}' --instance gw-a -o json
    """
    from wsctl.registry.keys import validate_existing_id

    chosen = [o for o in (robot_glob, instance, robots_from) if o is not None]
    if len(chosen) > 1:
        raise UsageError("give one of --robot, --instance, --robots-from")
    if timeout <= 0:
        raise UsageError("--timeout must be greater than 0")
    if chosen:
        if message is not None:
            raise UsageError(
                "with --robot, --instance or --robots-from give only MESSAGE (no robot id)"
            )
        if instance is not None:
            validate_existing_id(instance, "instance id")
        if via is not None:
            validate_existing_id(via, "instance id")
        if trace:
            raise UsageError("--trace goes with one robot (wsctl send ROBOT MESSAGE --trace)")
        if robots_from == "-" and robot_id == "-" and file is None:
            raise UsageError("stdin cannot hold both the message and --robots-from -")
        text = _message_text(robot_id, file)
        if as_json:
            _check_json(text)
        from wsctl.cli.fanout import run_fanout

        run_fanout(
            state(ctx).settings(),
            text,
            robot_glob=robot_glob,
            instance=instance,
            robots_from=robots_from,
            via=via,
            rate=rate,
            timeout=timeout,
            dry_run=dry_run,
            output=output,
        )
        return
    if dry_run or rate:
        raise UsageError("--dry-run and --rate go with --robot, --instance or --robots-from")
    if robot_id is None:
        raise UsageError("missing ROBOT (or --robot, --instance, --robots-from) and MESSAGE")
    validate_existing_id(robot_id)  # exact bytes: any id the registry may hold
    check_report_output(output, "send")
    text = _message_text(message, file)
    if as_json:
        _check_json(text)
    if via is not None:
        validate_existing_id(via, "instance id")
    outcome = run(_send(state(ctx).settings(), robot_id, text, via, timeout))
    if output == "json":
        import json

        sys.stdout.write(json.dumps(outcome.as_dict(), ensure_ascii=False) + "\n")
    else:
        from wsctl.cli.columns import printable
        from wsctl.shell import word

        # the route, reason and instance names come from gateways and the registry
        sys.stdout.write(printable(outcome.summary()) + "\n")
        if trace:
            for hop in outcome.as_dict()["hops"]:
                name = word(hop["instance"])
                sys.stdout.write(f"  {name:<24} +{hop['latency_ms']:.2f} ms\n")
    sys.stdout.flush()
    if outcome.exit_code:
        raise typer.Exit(outcome.exit_code)


def _check_json(text: str) -> None:
    import json

    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"message is not valid JSON: {exc.msg} at char {exc.pos}") from None


def _message_text(message: str | None, file: Path | None) -> str:
    """The message as text, refused (exit 2) unless it is valid UTF-8 (a WebSocket text frame
    cannot carry anything else, and a gateway must never get bytes it cannot send) and at
    most 1 MiB, the largest message a gateway accepts: a file or stdin is read up to one byte
    more than that and no further, so ``--file /dev/zero`` fails at once in bounded memory."""
    from wsctl.protocol.envelopes import MAX_MESSAGE_BYTES

    if file is not None and message is not None:
        raise UsageError("give MESSAGE or --file, not both")
    if file is not None:
        try:
            with file.open("rb") as stream:
                data = stream.read(MAX_MESSAGE_BYTES + 1)
        except OSError as exc:
            raise UsageError(f"cannot read {file}: {exc.strerror}") from None
        return _utf8(_within_limit(data, f"--file {file}"), f"--file {file}")
    if message is None:
        raise UsageError("missing MESSAGE (text, - for stdin, or --file PATH)")
    if message == "-":
        buffer = getattr(sys.stdin, "buffer", None)
        # a text stdin (tests, embedding) reads characters, each at least one byte
        stdin: Any = buffer if buffer is not None else sys.stdin
        data = stdin.read(MAX_MESSAGE_BYTES + 1)
        return _utf8(_within_limit(data, "stdin"), "stdin")
    # argv is decoded with surrogateescape: bytes that were not UTF-8 are lone surrogates
    return _utf8(_within_limit(message, "MESSAGE"), "MESSAGE")


def _within_limit(data: bytes | str, source: str) -> bytes | str:
    """``data`` if it is at most the largest message a gateway accepts, else a usage error."""
    from wsctl.cli.columns import printable
    from wsctl.protocol.envelopes import MAX_MESSAGE_BYTES, format_bytes, utf8_size

    size = len(data) if isinstance(data, bytes) else utf8_size(data)
    if size > MAX_MESSAGE_BYTES:
        raise UsageError(
            f"{printable(source)} holds more than {format_bytes(MAX_MESSAGE_BYTES)}, the "
            "largest message a gateway accepts"
        )
    return data


def _utf8(
    data: bytes | str, source: str, why: str = "a WebSocket text message must be UTF-8"
) -> str:
    try:
        if isinstance(data, bytes):
            return data.decode("utf-8")
        data.encode("utf-8")
    except (UnicodeDecodeError, UnicodeEncodeError) as exc:
        raise UsageError(f"{source} is not valid UTF-8 text (byte {exc.start}); {why}") from None
    return data


async def _send(
    settings: Settings, robot_id: str, text: str, via: str | None, timeout: float
) -> Any:
    from wsctl.ops.send import send_message

    async with open_client(settings) as client:
        return await send_message(
            client, keyspace_of(settings), robot_id, text, via=via, timeout=timeout
        )


def token(
    robot_id: Annotated[str, typer.Argument(help="Robot id.")],
    auth_secret: AuthSecretOpt = None,
) -> None:
    """Print the token a robot presents to a gateway started with --auth-secret.

    Example: WSCTL_AUTH_SECRET=s3cret wsctl token robot-17
    """
    from wsctl.gateway.identity import robot_token
    from wsctl.registry.keys import validate_id

    validate_id(robot_id)
    if not auth_secret:
        raise UsageError("no secret: pass --auth-secret or set WSCTL_AUTH_SECRET")
    # gateways read ids from URLs and secrets from UTF-8 configuration: other bytes never match
    _utf8(robot_id, "robot id", "a gateway reads robot ids from URLs as UTF-8")
    _utf8(auth_secret, "--auth-secret", "a gateway's secret is UTF-8 text")
    sys.stdout.write(robot_token(auth_secret, robot_id) + "\n")
