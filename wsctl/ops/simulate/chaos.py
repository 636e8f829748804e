"""``simulate --chaos``: drain or kill one gateway while the deliver phase publishes, wait
(bounded) until its robots are registered elsewhere, and judge what the chaos cost: losing
what was in flight to the victim is its price, losing anything else is a fault."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from wsctl.ops.drain import check_instance, start_drain
from wsctl.ops.simulate.state import Simulation

__all__ = [
    "CHAOS_REPLY_GRACE",
    "CHAOS_SETTLE",
    "chaos_verdict",
    "run_chaos",
]


CHAOS_SETTLE = 60.0  # seconds for every robot to be registered again after the chaos
CHAOS_REPLY_GRACE = 5.0  # seconds to wait for late replies once every robot is back


def chaos_verdict(
    state: dict[str, Any],
    metrics: dict[str, Any],
    lost_kinds: Counter[str],
    rejected: int,
    duplicated: int,
    out_of_order: int,
) -> tuple[bool, str]:
    """Losing what was in flight to the victim (or to its robots while they move) is what
    the chaos costs; losing anything else, or robots that never come back, is a fault."""
    chaos = {
        **{k: v for k, v in state.items() if k != "done_at"},
        "lost_victim_robots": lost_kinds["victim_robots"],
        "lost_in_flight_to_victim": lost_kinds["in_flight_to_victim"],
        "lost_other_robots": lost_kinds["other_robots"],
    }
    metrics["chaos"] = chaos
    back = chaos.get("reregistered_s")
    ok = (
        lost_kinds["other_robots"] == 0
        and duplicated == 0
        and out_of_order == 0
        and back is not None
        and not chaos.get("error")
    )
    text = f"; chaos {chaos.get('action')} of {chaos.get('victim')}: " + (
        f"every robot registered again in {back:.2f}s"
        if back is not None
        else f"{chaos.get('not_back', '?')} robots not registered again"
    )
    text += (
        f", lost {lost_kinds['victim_robots']} to its robots, "
        f"{lost_kinds['in_flight_to_victim']} in flight to it, "
        f"{lost_kinds['other_robots']} to other robots"
    )
    if chaos.get("error"):
        text += f" ({chaos['error']})"
    return ok, text


async def run_chaos(sim: Simulation, delay: float) -> None:
    """Drain or kill the first gateway ``delay`` seconds into the deliver phase, then wait
    (bounded) until every robot is registered on another instance."""
    opts = sim.options
    url = opts.gateways[0]
    victim = sim.instance_of_url.get(url, "")
    on_victim = [r for r in sim.robot_ids if sim.url_of[r] == url]
    sim.chaos = {"action": opts.chaos, "victim": victim, "robots_on_victim": len(on_victim)}
    await asyncio.sleep(delay)
    started = time.monotonic()
    try:
        if opts.chaos == "drain":
            await check_instance(sim.store, victim)
            batch = max(1, len(on_victim) // 5)
            origin = f"simulate-{sim.run_id}"
            await start_drain(sim.store, victim, batch, 0.2, origin)
            sim.drained = victim
        elif opts.kill_gateway is None or not opts.kill_gateway(url):
            raise RuntimeError(f"cannot kill the gateway at {url}")
    except Exception as exc:  # a chaos action that failed is a result of the report
        sim.chaos["error"] = f"{type(exc).__name__}: {exc}"[:200]
        sim.chaos["done_at"] = time.monotonic()
        return
    deadline = started + CHAOS_SETTLE
    while True:
        entries = await sim.entries()
        away = [r for r in sim.robot_ids if r not in entries or entries[r].instance_id == victim]
        if not away or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    if away:
        sim.chaos["not_back"] = len(away)
        sim.chaos["not_back_sample"] = away[:10]
    else:
        sim.chaos["reregistered_s"] = round(time.monotonic() - started, 3)
    sim.chaos["done_at"] = time.monotonic()
