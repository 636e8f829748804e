"""Fan-out ``send`` (``wsctl send MESSAGE --robot GLOB | --instance ID | --robots-from FILE``):
the library's fan-out (:mod:`wsctl.protocol.fanout`, the one implementation, which an app's
``fleet.send_many`` runs too) with the operator's explanation of an instance that cannot be
reached (alive but unsubscribed, down, or a gateway that does not speak the control protocol:
:func:`wsctl.ops.send.why_unreachable`)."""

from __future__ import annotations

from collections.abc import Callable

from wsctl.ops.send import why_unreachable
from wsctl.protocol.fanout import (
    BATCH_ITEMS,
    WINDOW_BYTES,
    FanOutcome,
    FanoutOptions,
    FanoutSummary,
    RobotOutcome,
    Selection,
    chunks_of,
    lookup_owners,
    registry_check,
    registry_selection,
    with_owners,
)
from wsctl.protocol.fanout import fan_out as library_fan_out
from wsctl.redis.target import AsyncClient
from wsctl.registry.keys import Keyspace

__all__ = [
    "BATCH_ITEMS",
    "WINDOW_BYTES",
    "FanOutcome",
    "FanoutOptions",
    "FanoutSummary",
    "RobotOutcome",
    "chunks_of",
    "fan_out",
    "lookup_owners",
    "registry_selection",
    "with_owners",
]


async def fan_out(
    client: AsyncClient,
    keys: Keyspace,
    selection: Selection,
    message: str,
    options: FanoutOptions | None = None,
    on_outcome: Callable[[RobotOutcome], None] | None = None,
    summary: FanoutSummary | None = None,
) -> FanoutSummary:
    """:func:`wsctl.protocol.fanout.fan_out`, an instance that cannot be reached explained as ``wsctl
    send ROBOT`` explains it (judged with the options' ``liveness_timeout``)."""
    options = options or FanoutOptions()

    async def explain(instance_id: str, conn_id_known: bool | None) -> str:
        return await why_unreachable(
            client, keys, instance_id, conn_id_known, options.liveness_timeout
        )

    return await library_fan_out(
        client,
        keys,
        selection,
        message,
        options,
        on_outcome,
        summary,
        check=registry_check(client, keys, explain),
    )
