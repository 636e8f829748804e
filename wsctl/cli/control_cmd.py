"""``wsctl kick`` and ``wsctl ping``: act on one robot's session or one instance through the
control channel (wsctl gateways and apps embedding the fleet core alike)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from wsctl.cli.common import (
    ReportOutput,
    check_report_output,
    keyspace_of,
    open_client,
    run,
    seconds_flag,
    state,
)
from wsctl.cli.completion_cmd import complete_instance_ids, complete_robot_ids
from wsctl.errors import UsageError

if TYPE_CHECKING:
    from wsctl.config import Settings

TimeoutOpt = Annotated[
    float,
    typer.Option(
        "--timeout",
        help="Seconds to wait for the instance's reply.",
        callback=seconds_flag("--timeout"),
    ),
]


def _emit(outcome: Any, output: str) -> None:
    if output == "json":
        import json

        sys.stdout.write(json.dumps(outcome.as_dict(), ensure_ascii=False) + "\n")
    else:
        from wsctl.cli.columns import printable

        # instance names and reasons come from the registry and from gateways: untrusted
        sys.stdout.write(printable(outcome.summary()) + "\n")
        fix = getattr(outcome, "fix", None)
        if fix:
            sys.stdout.write(f"  fix: {fix}\n")
    sys.stdout.flush()
    if outcome.exit_code:
        raise typer.Exit(outcome.exit_code)


def kick(
    ctx: typer.Context,
    robot_id: Annotated[
        str, typer.Argument(help="Robot id (exact).", autocompletion=complete_robot_ids)
    ],
    reason: Annotated[
        str, typer.Option("--reason", help="Close reason sent to the robot (max 120 bytes).")
    ] = "kicked by operator",
    timeout: TimeoutOpt = 5.0,
    output: ReportOutput = "table",
) -> None:
    """Disconnect a robot: its owning instance closes the socket with code 4002 and the reason,
    and removes the entry (fenced: only the registered session's).

    Exit codes: 0 kicked, 1 not connected (the owner holds no such session), 4 not registered,
    5 owner not listening on its control channel, 6 no reply within --timeout.

    Example: wsctl kick robot-17 --reason "firmware update"
    """
    from wsctl.registry.keys import validate_existing_id

    validate_existing_id(robot_id)  # exact bytes: any id the registry may hold
    check_report_output(output, "kick")
    if timeout <= 0:
        raise UsageError("--timeout must be greater than 0")
    if len(reason.encode("utf-8")) > 120:
        raise UsageError("--reason is longer than 120 bytes (a WebSocket close reason)")
    if any(not c.isprintable() for c in reason):
        raise UsageError("--reason contains a control character")
    _emit(run(_kick(state(ctx).settings(), robot_id, reason, timeout)), output)


async def _kick(settings: Settings, robot_id: str, reason: str, timeout: float) -> Any:
    from wsctl.ops.kick import kick_robot

    async with open_client(settings) as client:
        return await kick_robot(
            client,
            keyspace_of(settings),
            robot_id,
            reason,
            timeout=timeout,
            liveness_timeout=settings.timeout,
        )


def ping(
    ctx: typer.Context,
    instance_id: Annotated[
        str, typer.Argument(help="Instance id.", autocompletion=complete_instance_ids)
    ],
    timeout: TimeoutOpt = 5.0,
    output: ReportOutput = "table",
) -> None:
    """Round-trip an instance's control channel: prints the time, its version and how many
    robots it holds.

    Exit codes: 0 answered, 5 nobody listens on its control channel, 6 no reply in --timeout.

    Example: wsctl ping gw-a --timeout 2
    """
    from wsctl.registry.keys import validate_existing_id

    validate_existing_id(instance_id, "instance id")  # exact bytes, as listed
    check_report_output(output, "ping")
    if timeout <= 0:
        raise UsageError("--timeout must be greater than 0")
    _emit(run(_ping(state(ctx).settings(), instance_id, timeout)), output)


async def _ping(settings: Settings, instance_id: str, timeout: float) -> Any:
    from wsctl.ops.kick import ping_instance

    async with open_client(settings) as client:
        return await ping_instance(
            client,
            keyspace_of(settings),
            instance_id,
            timeout=timeout,
            liveness_timeout=settings.timeout,
        )
