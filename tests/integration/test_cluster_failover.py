"""Redis Cluster failover during a simulate run: a master is SIGKILLed, its replica takes over,
gateways and the CLI recover by themselves, and every robot ends registered."""

from __future__ import annotations

import asyncio
import time

import pytest
from websockets.asyncio.client import connect as wsconnect

from tests.conftest import slot_owner
from tests.fleet import running_fleet
from wsctl.config import load_settings
from wsctl.ops.deployment import Deployment
from wsctl.ops.send import send_message
from wsctl.ops.simulate.options import SimulateOptions
from wsctl.ops.simulate.run import run
from wsctl.ops.simulate.state import Simulation
from wsctl.redis.factory import connect, target_from_settings
from wsctl.sandbox.redis_servers import RedisClusterProcesses

pytestmark = pytest.mark.cluster


async def test_master_killed_mid_simulate_recovers_and_robots_stay_registered(capsys) -> None:  # type: ignore[no-untyped-def]
    with RedisClusterProcesses() as cluster:
        env = {"REDIS_USE_CLUSTER": "true", "REDIS_NODES": cluster.startup}
        async with running_fleet(env, heartbeat_interval=0.5, timeout=30.0) as fleet:
            victim_port = slot_owner(cluster, "ws_ctl:gw-a").port  # gw-a's control subscription
            victim = next(n for n in cluster.nodes if n.port == victim_port)
            async with connect(target_from_settings(load_settings(env=env))) as client:
                store = Deployment(client)
                killed_at: float | None = None

                def progress(phase: str, text: str) -> None:
                    nonlocal killed_at
                    if phase == "deliver" and text == "running":
                        victim.kill()
                        killed_at = time.monotonic()

                sim = Simulation(
                    store,
                    SimulateOptions(
                        robots=40,
                        gateways=[g.ws_url for g in fleet.values()],
                        messages=2,
                        duration=25,
                        deliver_timeout=8,
                        settle_timeout=20,
                    ),
                    progress,
                )
                # a robot outside the simulation, held by gw-b, reached through gw-a
                probe = await wsconnect(f"{fleet['gw-b'].ws_url}/ws/probe")
                task = asyncio.create_task(run(sim))
                # probe: a message through gw-a to a robot held by gw-b, until it works again
                recovered_at = None
                probes: list[str] = []
                for _ in range(400):
                    await asyncio.sleep(0.1)
                    if killed_at is None:
                        continue
                    try:
                        outcome = await send_message(
                            client, store.keys, "probe", '{"probe": 1}', via="gw-a", timeout=1
                        )
                    except Exception as exc:
                        probes.append(type(exc).__name__)
                        continue
                    probes.append(f"{outcome.status}:{outcome.reason}:{outcome.route}")
                    if outcome.status == "delivered" and fleet["gw-a"].subscribed:
                        recovered_at = time.monotonic()
                        break
                report = await asyncio.wait_for(task, 120)
                await probe.close()
    assert killed_at is not None and recovered_at is not None, f"never recovered: {probes}"
    recovery = recovered_at - killed_at
    phases = {p.name: p for p in report.phases}
    deliver = phases["deliver"].metrics
    with capsys.disabled():
        print(
            f"\n[failover] recovery {recovery:.2f}s after SIGKILL of the master; "
            f"deliver: {deliver.get('delivered')}/{deliver.get('sent')} delivered, "
            f"{deliver.get('lost')} lost in the window"
        )
    assert recovery < 20
    assert "lost" in deliver  # the run accounts for the window, whatever it lost
    assert phases["heartbeat"].ok, phases["heartbeat"].detail  # every robot registered again
    assert phases["disconnect"].ok, phases["disconnect"].detail
