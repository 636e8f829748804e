"""``wsctl simulate``: real robots over real WebSockets, checking the fleet and its registry.

Phases (each a pass/fail check): connect, registered, deliver, heartbeat, churn (optional),
disconnect. Deliver is skipped (or, with ``require_delivery``, failed at once) when instances
do not listen on their control channel, e.g. gateways written the original design's way; their
robots can send an application heartbeat (``robot_heartbeat``), as such fleets need. Robot ids are ``sim-<run>-<n>`` so runs never collide; whatever happens, the run's
robots disconnect and the run's registry entries are removed (compare-and-delete), never other
robots'. Returns a :class:`SimulateReport`; printing is the CLI's job.

Robots follow a drain (close code 1012) to the next gateway, as real robots do; with
``reconnect`` they reconnect after any close. With
``chaos`` (``drain`` or ``kill``) one gateway (the first) is drained, or SIGKILLed through the
``kill_gateway`` callback the sandbox provides, while the deliver phase publishes; the phase then
reports messages lost to the victim's robots, lost in flight to the victim, lost to other
instances' robots (must be 0), and the seconds until every robot is registered again.
"""

from __future__ import annotations

from functools import partial

from wsctl.errors import UsageError
from wsctl.ops.deployment import Deployment
from wsctl.ops.simulate.capacity import check_open_files
from wsctl.ops.simulate.options import CHAOS_ACTIONS, Progress, SimulateOptions
from wsctl.ops.simulate.phases import churn, connect, deliver, disconnect, heartbeat, registered
from wsctl.ops.simulate.report import SimulateReport
from wsctl.ops.simulate.robots import ProcessSwarm, RobotSwarm
from wsctl.ops.simulate.state import Simulation
from wsctl.registry.instances import Liveness, liveness
from wsctl.registry.model import utcnow

__all__ = [
    "alive_gateways",
    "run",
    "simulate",
]


async def run(sim: Simulation) -> SimulateReport:
    """Run the phases in order and return the report; whatever happens, the robots
    disconnect and the run's leftover entries are removed (compare-and-delete)."""
    opts = sim.options
    try:
        beat = (
            (opts.robot_heartbeat, opts.robot_heartbeat_every)
            if opts.robot_heartbeat is not None
            else None
        )
        # robots follow a drain's 1012 to the next gateway, as every robot should; with
        # --reconnect (or --chaos) they reconnect after any close
        again, any_close = list(opts.gateways), bool(opts.reconnect or opts.chaos)
        for _ in range(opts.processes if opts.processes > 1 else 1):
            sim.swarms.append(
                ProcessSwarm(sim.run_id, opts.auth_secret, beat, again, any_close)
                if opts.processes > 1
                else RobotSwarm(sim.run_id, opts.auth_secret, beat, again, any_close)
            )
        await sim.replies.start()
        steps = [
            ("connect", connect),
            ("registered", registered),
            ("deliver", deliver),
            ("heartbeat", heartbeat),
        ]
        if opts.churn > 0:
            steps.append(("churn", churn))
        for name, body in steps:
            if name == "deliver":
                # before anything is sent: which instances cannot take part
                await sim.check_listeners()
            phase = await sim.phase(name, partial(body, sim))
            if not phase.ok and name in ("connect", "registered"):
                break  # later phases depend on these; go straight to clean-up
            if not phase.ok and name == "deliver" and sim.options.require_delivery:
                break  # a fast failure: delivery was required and cannot be checked
        await sim.phase("disconnect", partial(disconnect, sim))
        metrics = sim.slo_metrics()
        for slo in opts.slos:
            ok, actual = slo.check(metrics)
            sim.report.slos.append({"slo": slo.text, "ok": ok, "actual": actual})
    finally:
        await sim.cleanup()
    return sim.report


async def simulate(
    store: Deployment, options: SimulateOptions, progress: Progress | None = None
) -> SimulateReport:
    """Check a fleet end to end with real robots: see the module docstring for the phases.

    Raises UsageError for options that contradict each other; every other failure is a
    result in the returned :class:`SimulateReport`."""
    if not options.gateways:
        raise UsageError("no gateways to simulate against")
    if options.chaos is not None:
        if options.chaos not in CHAOS_ACTIONS:
            raise UsageError(f"--chaos {options.chaos!r}: use drain or kill")
        if len(options.gateways) < 2:
            raise UsageError("--chaos needs at least two gateways (robots move to the others)")
        if options.churn > 0:
            raise UsageError("--chaos and --churn exclude each other")
    if not 0.0 <= options.non_owner_share <= 1.0:
        raise UsageError("--non-owner-share must be between 0 and 1")
    if options.robots < 1 or options.messages < 0 or options.processes < 1:
        raise UsageError("--robots and --processes must be at least 1, --messages at least 0")
    if options.robot_heartbeat is not None and not (
        0 < options.robot_heartbeat_every < options.duration
    ):
        raise UsageError(
            f"--robot-heartbeat-every must be above 0 and below the heartbeat phase's "
            f"--duration ({options.duration:g}s), so that a heartbeat can land within it"
        )
    # the open files the robots need (a sandbox simulate starts is checked by its caller)
    check_open_files(options.robots, options.processes, None)
    return await run(Simulation(store, options, progress))


async def alive_gateways(store: Deployment, timeout: float) -> list[str]:
    """The robot URLs of the instances whose liveness records say they are alive (stale
    after ``timeout``), sorted. Raises UsageError when there are none: gateways that do not
    speak wsctl's control protocol write no record, so they must be named."""
    now = utcnow()
    urls: list[str] = []
    async for record in store.instance_records():
        if record.ws_url and liveness(record, now, timeout) is Liveness.ALIVE:
            urls.append(record.ws_url)
    urls.sort()
    if not urls:
        raise UsageError(
            "no alive gateways found in liveness records (gateways that do not speak wsctl's "
            "control protocol write none): pass --gateway ws://host:port for each"
        )
    return urls
