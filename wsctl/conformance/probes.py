"""The catalogue of probes: every check of :data:`wsctl.conformance.checks.CHECKS` and the
probe that produces its result. The probes themselves live by protocol area in
:mod:`~wsctl.conformance.session_probes` (levels 0 and 1),
:mod:`~wsctl.conformance.control_probes`, :mod:`~wsctl.conformance.send_probes` and
:mod:`~wsctl.conformance.drain_probes` (level 2)."""

from __future__ import annotations

from wsctl.conformance.control_probes import (
    events_check,
    inventory_check,
    listening_check,
    liveness_check,
    malformed_check,
    ping_check,
    replies_check,
    resync_check,
)
from wsctl.conformance.drain_probes import DRAIN_IDS, drain_probe
from wsctl.conformance.kit import Probe, single
from wsctl.conformance.send_probes import (
    batch_check,
    delivered_check,
    forward_check,
    ghost_check,
    hop_limit_check,
    kick_operator_check,
    kick_previous_check,
    kick_superseded_check,
    not_connected_check,
    ordering_check,
    owner_hints_check,
    rejected_check,
    reply_bundles_check,
    reply_unread_check,
    unreachable_check,
)
from wsctl.conformance.session_probes import (
    bad_bytes_check,
    conn_id_check,
    frozen_probe,
    late_disconnect_check,
    no_resurrect_check,
    refresh_check,
    registry_probe,
    reregister_check,
    supersede_local_check,
    superseded_check,
)

__all__ = ["PROBES"]

PROBES: tuple[Probe, ...] = (
    Probe(
        (
            "registry.entry",
            "registry.fields",
            "registry.timestamps",
            "registry.instance_id",
            "registry.disconnect",
        ),
        registry_probe,
    ),
    single("fencing.conn_id", conn_id_check),
    single("fencing.late_disconnect", late_disconnect_check),
    single("fencing.supersede_local", supersede_local_check),
    single("heartbeat.refresh", refresh_check),
    single("heartbeat.reregister", reregister_check),
    single("heartbeat.superseded", superseded_check),
    single("heartbeat.no_resurrect", no_resurrect_check),
    single("faults.bad_bytes", bad_bytes_check),
    single("liveness.record", liveness_check),
    single("control.listening", listening_check),
    single("control.replies", replies_check),
    single("control.ping", ping_check),
    single("control.inventory", inventory_check),
    single("control.resync", resync_check),
    single("control.malformed", malformed_check),
    single("send.delivered", delivered_check),
    single("send.not_connected", not_connected_check),
    single("send.ghost", ghost_check),
    single("send.forward", forward_check),
    single("send.hop_limit", hop_limit_check),
    single("send.unreachable", unreachable_check),
    single("send.ordering", ordering_check),
    single("send.rejected", rejected_check),
    single("kick.operator", kick_operator_check),
    single("kick.superseded", kick_superseded_check),
    single("register.kick_previous", kick_previous_check),
    single("batch.send", batch_check),
    single("batch.reply_bundles", reply_bundles_check),
    single("batch.owner_hints", owner_hints_check),
    single("faults.reply_unread", reply_unread_check),
    Probe(DRAIN_IDS, drain_probe),
    Probe(("faults.redis_frozen", "faults.redis_frozen_control"), frozen_probe),
    single("events.log", events_check),
)
