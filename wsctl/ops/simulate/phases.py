"""The phases of a ``simulate`` run, each a pass/fail check with its measurements:
connect, registered, deliver (with the chaos, if asked), heartbeat, churn (optional) and
disconnect. Each takes the run's :class:`~wsctl.ops.simulate.state.Simulation` and returns
``(ok, detail, metrics)``, or raises :class:`PhaseSkipped` when it cannot be checked."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from wsctl.durations import counted
from wsctl.ops.compat import Participation, explain
from wsctl.ops.simulate.chaos import CHAOS_REPLY_GRACE, chaos_verdict, run_chaos
from wsctl.ops.simulate.ramp import combine as combine_ramps
from wsctl.ops.simulate.ramp import describe as describe_ramp
from wsctl.ops.simulate.report import PhaseSkipped
from wsctl.ops.simulate.state import Simulation

__all__ = [
    "churn",
    "connect",
    "deliver",
    "disconnect",
    "heartbeat",
    "registered",
]


async def connect(sim: Simulation) -> tuple[bool, str, dict[str, Any]]:
    """Connect every robot, spread round robin over the gateways at the ramp rate, slower
    while the gateways accept fewer (:mod:`wsctl.ops.simulate.ramp`; a timed-out handshake is
    tried again at the slower rate).

    Passes when all connected; measures connect latency and reports the ramp."""
    opts = sim.options
    per_swarm: list[list[tuple[str, str]]] = [[] for _ in sim.swarms]
    for n, robot_id in enumerate(sim.robot_ids):
        url = opts.gateways[n % len(opts.gateways)]
        sim.url_of[robot_id] = url
        sim.swarm_of[robot_id] = n % len(sim.swarms)
        per_swarm[n % len(sim.swarms)].append((robot_id, url))
    rate = opts.ramp / len(sim.swarms) if opts.ramp > 0 else 0.0
    started = time.perf_counter()
    results = await asyncio.gather(
        *(s.connect(a, rate) for s, a in zip(sim.swarms, per_swarm, strict=True))
    )
    seconds = time.perf_counter() - started
    connected = sum(r["connected"] for r in results)
    stats = await sim.stats()
    sim.report.connect_ms = stats["connect"].summary_ms()
    ramp = combine_ramps([r["ramp"] for r in results])
    metrics = {
        "connected": connected,
        "failed": opts.robots - connected,
        "rate_per_s": round(connected / seconds, 1) if seconds else 0.0,
        **{f"connect_{k}_ms": v for k, v in sim.report.connect_ms.items() if k != "count"},
        **ramp,
    }
    if connected != opts.robots:
        sample = next(iter(stats["connect_failures"].values()), "")
        return (
            False,
            f"{opts.robots - connected} of {opts.robots} robots failed to connect ({sample}); "
            f"{describe_ramp(ramp)}",
            metrics,
        )
    return (
        True,
        f"{connected} robots in {seconds:.2f}s ({metrics['rate_per_s']}/s); {describe_ramp(ramp)}",
        metrics,
    )


async def registered(sim: Simulation) -> tuple[bool, str, dict[str, Any]]:
    """Wait (up to the settle timeout) until every robot has a registry entry, and
    check each is owned by the instance behind the gateway it connected to."""
    deadline = time.monotonic() + sim.options.settle_timeout
    while True:
        entries = sim.seen_entries = await sim.entries()
        missing = [r for r in sim.robot_ids if r not in entries or not entries[r].instance_id]
        if not missing or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    by_url: dict[str, Counter[str]] = {}
    for robot_id, entry in entries.items():
        by_url.setdefault(sim.url_of[robot_id], Counter())[entry.instance_id or ""] += 1
    sim.instance_of_url = {url: c.most_common(1)[0][0] for url, c in by_url.items()}
    wrong = [
        r for r, e in entries.items() if e.instance_id != sim.instance_of_url.get(sim.url_of[r])
    ]
    distinct = len(set(sim.instance_of_url.values())) == len(sim.instance_of_url)
    metrics = {
        "registered": len(entries),
        "missing": len(missing),
        "wrong_instance": len(wrong),
        "instances": dict(sorted(sim.instance_of_url.items())),
    }
    if missing:
        return (
            False,
            f"{len(missing)} robots have no registry entry (e.g. {missing[0]})",
            metrics,
        )
    if wrong or not distinct:
        return (
            False,
            f"{counted(len(wrong), 'entry', 'entries')} naming another instance than the one "
            "connected to",
            metrics,
        )
    return (
        True,
        f"all {len(entries)} entries name the instance their robot connected to",
        metrics,
    )


async def deliver(sim: Simulation) -> tuple[bool, str, dict[str, Any]]:
    """Publish the messages on control channels (mostly at a non-owner, so they are
    forwarded) and check each robot got its own, exactly once and in order.

    Skipped when no instance listens; with ``chaos`` set, drains or kills a gateway
    meanwhile and reports the losses by cause."""
    opts = sim.options
    if sim.not_listening and opts.require_delivery:
        return False, "delivery required, but " + sim.not_listening_text(), {}
    instances = sorted(set(sim.instance_of_url.values()) - set(sim.not_listening))
    if not instances:
        raise PhaseSkipped("not checked: " + sim.not_listening_text())
    # robots on instances that do not listen cannot be reached through the control channel
    robot_ids = [r for r in sim.robot_ids if sim.instance_of_url[sim.url_of[r]] in instances]
    sends: list[tuple[str, str, int]] = []
    via_owner = 0
    share = opts.non_owner_share
    for n, robot_id in enumerate(robot_ids):
        owner = sim.instance_of_url[sim.url_of[robot_id]]
        others = [i for i in instances if i != owner]
        # robots whose messages go through a non-owner instance (forwarding), spread
        # evenly: robot n does when floor((n + 1) * share) > floor(n * share)
        through_other = int((n + 1) * share) > int(n * share)
        via = others[n % len(others)] if (through_other and others) else owner
        via_owner += via == owner
        for _ in range(opts.messages):
            sends.append((robot_id, via, sim.expect_seq(robot_id)))
    total = len(sends)
    started = time.perf_counter()
    first_sent = time.time()
    answered_before = len(sim.replies.status)  # replies are keyed by unique ids
    chaos = None
    if opts.chaos:
        publish_s = total / opts.rate if opts.rate > 0 else 0.0
        chaos = asyncio.create_task(run_chaos(sim, publish_s * 0.3))
    ids = await sim.publish_messages(sends, opts.rate)
    deadline = time.monotonic() + opts.deliver_timeout
    while time.monotonic() < deadline:
        if len(sim.replies.status) - answered_before >= total and (chaos is None or chaos.done()):
            break
        if chaos is not None and chaos.done():
            # replies to messages lost with a killed gateway never come: wait a little
            deadline = min(deadline, sim.chaos.get("done_at", 0.0) + CHAOS_REPLY_GRACE)
        await sim.replies.arrival(0.05)
    if chaos is not None:
        await chaos  # bounded by CHAOS_SETTLE
    await asyncio.sleep(0.2)  # frames are written before replies; let the last ones land
    seconds = time.perf_counter() - started
    stats = await sim.stats()
    # throughput over the time from the first publish to the last message a robot
    # received (what bench/socketio's clients measure too), not the waits for replies
    span = stats["last_at"] - first_sent if stats["last_at"] > first_sent else seconds
    sim.report.latency_ms = stats["latency"].summary_ms()
    delivered = duplicated = out_of_order = 0
    victim = sim.chaos.get("victim")
    via_of = {(r, seq): v for r, v, seq in sends}
    lost_kinds: Counter[str] = Counter()
    for robot_id in robot_ids:
        got = stats["robots"][robot_id]["received"]
        delivered += len(set(got) & sim.expected[robot_id])
        duplicated += len(got) - len(set(got))
        on_victim = sim.instance_of_url[sim.url_of[robot_id]] == victim
        if not on_victim:  # a moved robot may see a message overtake another: not a fault
            out_of_order += stats["robots"][robot_id]["out_of_order"]
        for seq in sim.expected[robot_id] - set(got):
            if on_victim:
                lost_kinds["victim_robots"] += 1
            elif via_of.get((robot_id, seq)) == victim:
                lost_kinds["in_flight_to_victim"] += 1
            else:
                lost_kinds["other_robots"] += 1
    statuses = Counter(sim.replies.status.get(i, "no_reply") for i in ids)
    # refused with a reply (e.g. larger than the gateways' limit) is not lost: the sender
    # was told; lost is what vanished without a word
    rejected = statuses.get("rejected", 0)
    lost = max(0, total - delivered - rejected)
    metrics = {
        "sent": total,
        "delivered": delivered,
        "rejected": rejected,
        "lost": lost,
        "duplicated": duplicated,
        "out_of_order": out_of_order,
        "via_owner": via_owner * opts.messages,
        "via_other": (len(robot_ids) - via_owner) * opts.messages,
        "robots_not_tested": len(sim.robot_ids) - len(robot_ids),
        "replies": dict(statuses),
        "unsent": sim.unsent,
        "redis_errors": sim.redis_errors,
        "throughput_per_s": round(delivered / span, 1) if span > 0 else 0.0,
        "delivery_seconds": round(span, 3),
        "latency_ms": sim.report.latency_ms,
    }
    ok = lost == 0 and rejected == 0 and duplicated == 0 and out_of_order == 0
    latency = (
        f"p99 {sim.report.latency_ms['p99']} ms"
        if sim.report.latency_ms.get("count")
        else "no latency (nothing delivered)"
    )
    detail = (
        f"{delivered}/{total} delivered, {rejected} rejected, {lost} lost, "
        f"{duplicated} duplicated, {out_of_order} out of order; {latency}"
    )
    if opts.chaos:
        ok, chaos_detail = chaos_verdict(
            sim.chaos, metrics, lost_kinds, rejected, duplicated, out_of_order
        )
        detail += chaos_detail
    if not ok and sim.replies.reasons:
        detail += f" (e.g. {sim.replies.reasons.most_common(1)[0][0]})"
    if sim.not_listening:
        detail += (
            f"; {len(sim.robot_ids) - len(robot_ids)} robots not tested: "
            + sim.not_listening_text()
        )
    troubled = [
        explain(i, sim.store.keys.control_channel(i), kind)
        for i, kind in sim.participation.items()
        if kind is Participation.ALIVE_NOT_LISTENING
    ]
    if troubled and not ok:
        detail += "; " + "; ".join(troubled)
    return ok, detail, metrics


def _heartbeat_hint(sim: Simulation, stuck: list[str]) -> str:
    """Why heartbeats did not advance, when the robots' gateways do not speak wsctl's
    protocol: such gateways refresh last_heartbeat only when a robot sends a message."""
    foreign = set(sim.not_listening)
    on_foreign = [r for r in stuck if sim.instance_of_url.get(sim.url_of[r]) in foreign]
    if not on_foreign:
        return ""
    names = ", ".join(sorted({sim.instance_of_url[sim.url_of[r]] for r in on_foreign}))
    if sim.options.robot_heartbeat is None:
        return (
            f"; {len(on_foreign)} of them are on {names}, which do not speak wsctl's "
            "control protocol: such gateways refresh last_heartbeat only when a robot "
            "sends a message, and these robots sent none; rerun with --robot-heartbeat "
            "TEXT (what your robots send as a heartbeat)"
        )
    return (
        f"; {len(on_foreign)} of them are on {names}, which do not speak wsctl's control "
        f"protocol and did not refresh last_heartbeat when the robots sent "
        f"{sim.options.robot_heartbeat!r} every {sim.options.robot_heartbeat_every:g}s"
    )


async def heartbeat(sim: Simulation) -> tuple[bool, str, dict[str, Any]]:
    """Check every robot's ``last_heartbeat`` advances within ``duration`` seconds,
    which proves the owners keep their entries alive."""
    before = {r: e.fields.get("last_heartbeat") for r, e in (await sim.entries()).items()}
    deadline = time.monotonic() + sim.options.duration
    stuck = list(before)
    while stuck and time.monotonic() < deadline:
        await asyncio.sleep(min(0.5, max(0.05, deadline - time.monotonic())))
        now = await sim.entries()
        stuck = [
            r for r in stuck if r not in now or now[r].fields.get("last_heartbeat") == before[r]
        ]
    metrics = {
        "advanced": len(before) - len(stuck),
        "not_advanced": len(stuck),
        "robot_heartbeats_sent": sum(
            int(p.get("heartbeats_sent", 0)) for p in await sim.swarm_parts()
        ),
    }
    if stuck:
        detail = (
            f"{len(stuck)} robots' last_heartbeat did not advance within {sim.options.duration:g}s"
        )
        return False, detail + _heartbeat_hint(sim, stuck), metrics
    return True, "every last_heartbeat advanced", metrics


async def churn(sim: Simulation) -> tuple[bool, str, dict[str, Any]]:
    """Move random robots to another gateway (``churn`` per second, at most 10 s) and
    check messages sent to them afterwards still arrive at the new owner."""
    opts = sim.options
    gateways = opts.gateways
    churned: dict[str, str] = {}
    sent: list[tuple[str, str, int]] = []  # (envelope id, robot id, seq)
    end = time.monotonic() + min(opts.duration, 10.0)
    interval = 1.0 / opts.churn
    reconnect_failed = 0
    for _ in range(100_000):
        if time.monotonic() >= end:
            break
        robot_id = sim.rng.choice(sim.robot_ids)
        choices = [g for g in gateways if g != sim.url_of[robot_id]] or gateways
        new_url = sim.rng.choice(choices)
        if await sim.swarms[sim.swarm_of[robot_id]].reconnect(robot_id, new_url):
            sim.url_of[robot_id] = new_url
            churned[robot_id] = new_url
            if sim.not_listening:
                await asyncio.sleep(interval)
                continue  # no messages: not every instance listens (see the detail)
            # a message right after the move, injected at a random instance
            seq = sim.expect_seq(robot_id)
            via = sim.instance_of_url[sim.rng.choice(gateways)]
            (envelope_id,) = await sim.publish_messages([(robot_id, via, seq)])
            sent.append((envelope_id, robot_id, seq))
        else:
            reconnect_failed += 1
        await asyncio.sleep(interval)
    deadline = time.monotonic() + opts.settle_timeout
    while True:
        entries = await sim.entries()
        not_following = [
            r
            for r, url in churned.items()
            if r not in entries or entries[r].instance_id != sim.instance_of_url[url]
        ]
        answered = all(i in sim.replies.status for i, _, _ in sent)
        if (not not_following and answered) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.2)
    stats = await sim.stats()
    # accounted for: the robot got it, or a reply said plainly that it was not delivered
    delivered = refused = unaccounted = 0
    for envelope_id, robot_id, seq in sent:
        if seq in stats["robots"][robot_id]["received"]:
            delivered += 1
        elif sim.replies.status.get(envelope_id, "delivered") != "delivered":
            refused += 1
        else:
            unaccounted += 1
    metrics = {
        "reconnects": len(churned),
        "reconnect_failed": reconnect_failed,
        "registry_not_following": len(not_following),
        "messages": len(sent),
        "delivered": delivered,
        "refused_with_reply": refused,
        "unaccounted": unaccounted,
    }
    ok = not not_following and reconnect_failed == 0 and unaccounted == 0
    messages = (
        f"churn messages: {delivered} delivered, {refused} refused with a reply, "
        f"{unaccounted} unaccounted"
        if not sim.not_listening
        else "no churn messages sent: " + sim.not_listening_text()
    )
    return (
        ok,
        f"{len(churned)} robots moved, registry followed "
        f"{len(churned) - len(not_following)}/{len(churned)}; {messages}",
        metrics,
    )


async def disconnect(sim: Simulation) -> tuple[bool, str, dict[str, Any]]:
    """Close every robot and check their entries are gone within the settle timeout
    (nothing left behind by a clean disconnect)."""
    await asyncio.gather(*(s.close_all() for s in sim.swarms))
    deadline = time.monotonic() + sim.options.settle_timeout
    while True:
        left = await sim.entries()
        if not left or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    if left:
        owners = Counter(e.instance_id for e in left.values())
        return (
            False,
            f"{counted(len(left), 'entry', 'entries')} left behind (by instance: {dict(owners)})",
            {"left": len(left)},
        )
    return True, "every robot closed and every entry of the run is gone", {"left": 0}
