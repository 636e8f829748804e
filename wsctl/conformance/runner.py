"""One conformance run: set up the fleet side, run the probes phase by phase, clean up.

Phases (:class:`~wsctl.conformance.checks.Phase`): the gate first (a robot's entry tells the
instance id; the control channel and its replies), then every independent check at the same
time (each with robots of its own), then the checks that act on the whole instance one at a
time (resync, drain, a frozen Redis), then the event log. A check whose requirement did not
pass is not run (``n/a``, ``blocked_by``). Each probe is bounded as a whole
(:meth:`ConformanceOptions.budget`); when one fails, the kit asks whether the gateway still
answers a handshake, and if it does not (it hangs, or died), the checks left are not run.

Whatever happens (a failure, a hung gateway, Ctrl-C), the clean-up runs: an undrain if a
drain is still on, every robot's socket closed, and every key the run made, or made the
gateway write, removed. The run never touches keys outside its own robot-id prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable

from redis.exceptions import RedisError
from websockets.exceptions import WebSocketException

from wsctl.conformance.checks import Phase, Verdict, check_ids, spec
from wsctl.conformance.fleet import FleetSide
from wsctl.conformance.kit import Failed, Kit, Probe, Recorder, gateway_answers
from wsctl.conformance.options import ConformanceOptions
from wsctl.conformance.probes import PROBES
from wsctl.conformance.results import CheckResult, ConformanceReport, blocked
from wsctl.protocol.envelopes import Op
from wsctl.redis.target import AsyncClient
from wsctl.registry.keys import Keyspace
from wsctl.tasks import settle_all, wait_within

__all__ = ["ROBOT_PREFIX", "run_conformance"]

log = logging.getLogger("wsctl.conformance")

ROBOT_PREFIX = "wsctl-conformance-"  # + the run id + "-": every robot id of a run
EVENTS_SETTLE = 0.5  # seconds for the gateway's last events to be written before clean-up
# the same when interrupted (the whole clean-up then takes a second): entries released by
# the gateway within FAST_SETTLE, then FAST_EVENTS for the events of those disconnects, and
# a second removal at FAST_AGAIN
FAST_SETTLE = 0.35
FAST_EVENTS = 0.25
FAST_AGAIN = 0.7  # seconds after the clean-up began: the second removal
FAST_DEADLINE = 0.85  # the clean-up as a whole when interrupted
CLEANUP_DEADLINE = 10.0  # ...and otherwise
SETTLE = 0.2  # seconds the probes have to end once the run is cancelled


def _phase(probe: Probe) -> Phase:
    return spec(probe.ids[0]).phase


async def run_conformance(
    client: AsyncClient,
    keys: Keyspace,
    options: ConformanceOptions,
    on_result: Callable[[CheckResult], None] | None = None,
    stop: asyncio.Event | None = None,
) -> ConformanceReport:
    """Run every check up to ``options.level`` against the gateway; ``on_result`` hears each
    result as it is made. Cancelling it (or setting ``stop``, which the kit also looks at
    between checks, in case a cancellation was lost in a Redis call) ends it within a second,
    cleaned up. Raises a Redis error when Redis itself fails (not a check's business), after
    cleaning up what it can."""
    run_id = uuid.uuid4().hex[:8]
    prefix = f"{ROBOT_PREFIX}{run_id}-"
    fleet = FleetSide(client, keys, prefix, options.fleet_timeout)
    kit = Kit(options, fleet)
    report = ConformanceReport(gateway=options.gateway, asked_level=options.level, run_id=run_id)
    results: dict[str, CheckResult] = {}
    wanted = set(check_ids(options.level))
    started = time.monotonic()
    interrupted = False
    stopped: str | None = None  # the check after which the gateway stopped answering

    def stop_asked() -> None:
        if stop is not None and stop.is_set():
            raise asyncio.CancelledError

    try:
        await fleet.start(options.timeout)
        for phase in Phase:
            stop_asked()
            probes = [p for p in PROBES if _phase(p) is phase and wanted & set(p.ids)]
            if stopped is not None:
                for probe in probes:
                    _not_run(probe, wanted, results, stopped, on_result)
                continue
            if phase is Phase.PARALLEL:
                await kit.learn_interval()
                report.heartbeat_interval = kit.interval
                failed = await _run_together(kit, probes, wanted, results, on_result)
                if failed and not await gateway_answers(kit):
                    stopped = failed
                continue
            if phase is Phase.EXCLUSIVE:
                await kit.close_robots()  # a drain must close the kit's own robots only
            for probe in probes:
                stop_asked()
                if stopped is not None:
                    _not_run(probe, wanted, results, stopped, on_result)
                    continue
                failed = await _run_together(kit, [probe], wanted, results, on_result)
                if failed and not await gateway_answers(kit):
                    stopped = failed
    except asyncio.CancelledError:
        interrupted = True
        raise
    finally:
        report.instance_id = kit.instance_id
        report.results = [results[i] for i in check_ids(options.level) if i in results]
        report.robots = len(fleet.robot_ids)
        # interrupted: within a second; a gateway that stopped answering: no waiting for it
        kit.stopped = stopped is not None
        fast = interrupted or kit.stopped
        try:
            deadline = FAST_DEADLINE if interrupted else CLEANUP_DEADLINE
            await wait_within(_cleanup(kit, report, fast=fast), deadline)
        except TimeoutError:
            log.warning("clean-up did not finish in time; left: %s", report.left_behind)
        except asyncio.CancelledError:
            if not fast:  # interrupted during the clean-up of a run that had ended
                with contextlib.suppress(TimeoutError):
                    await wait_within(_abandon(kit, report), FAST_DEADLINE)
            raise
        report.seconds = time.monotonic() - started
    return report


def _not_run(
    probe: Probe,
    wanted: set[str],
    results: dict[str, CheckResult],
    after: str,
    on_result: Callable[[CheckResult], None] | None,
) -> None:
    rec = Recorder(tuple(i for i in probe.ids if i in wanted), results, on_result)
    for check_id in rec.ids:
        rec.blocked(check_id, after, f"the gateway stopped answering after {after} failed")


async def _run_together(
    kit: Kit,
    probes: list[Probe],
    wanted: set[str],
    results: dict[str, CheckResult],
    on_result: Callable[[CheckResult], None] | None,
) -> str | None:
    """Run ``probes`` at the same time, each in a task of its own; the first check that
    failed, if any. When the run is cancelled, the probes are cancelled again until they end
    (a cancellation that lands as a Redis call completes can be lost in redis-py), for at most
    :data:`SETTLE` seconds."""
    if not probes:
        return None
    tasks = [
        asyncio.create_task(_run_one(kit, p, wanted, results, on_result), name=p.ids[0])
        for p in probes
    ]
    try:
        await asyncio.wait(tasks)
    except asyncio.CancelledError:
        await settle_all(tasks, timeout=SETTLE)
        raise
    # every probe has ended (none left running behind the clean-up) before a bug is raised
    for task in tasks:
        if task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    return next((t.result() for t in tasks if t.result() is not None), None)


async def _run_one(
    kit: Kit,
    probe: Probe,
    wanted: set[str],
    results: dict[str, CheckResult],
    on_result: Callable[[CheckResult], None] | None,
) -> str | None:
    """Run one probe within its budget; returns the first of its checks that failed."""
    ids = tuple(i for i in probe.ids if i in wanted)
    rec = Recorder(ids, results, on_result)
    runnable = []
    for check_id in ids:
        by = blocked(check_id, results, probe.ids)
        if by is not None:
            rec.blocked(check_id, by)
        else:
            runnable.append(check_id)
    if runnable:
        budget = max(kit.options.budget(spec(i), kit.interval) for i in runnable)
        began = time.monotonic()
        try:
            await wait_within(probe.fn(kit, Recorder(tuple(runnable), results, on_result)), budget)
        except Failed as exc:  # a probe of several checks failed before it recorded them
            for check_id in runnable:
                rec.failed(check_id, exc.expected, exc.seen)
        except TimeoutError:
            for check_id in runnable:
                rec.failed(
                    check_id,
                    f"the check done within {budget:g}s",
                    "it did not finish: the gateway hung, or answered too slowly",
                )
        except RedisError as exc:
            # the kit's own Redis failed (not the gateway): the check could not be made
            for check_id in runnable:
                rec.failed(check_id, "the kit's Redis calls to succeed", f"{exc}"[:200])
            await _redis_still_there(kit)
        except (OSError, WebSocketException) as exc:
            # a robot's connection failed where the probe did not expect it
            for check_id in runnable:
                rec.failed(check_id, "the robot's connection to work", f"{exc!r}"[:200])
        elapsed = time.monotonic() - began
        for check_id in runnable:
            if check_id not in results:  # a probe that forgot one: never a silent pass
                rec.failed(check_id, "a result", "the probe ended without one")
            results[check_id].seconds = elapsed
    return next((i for i in ids if results[i].verdict is Verdict.FAIL), None)


async def _redis_still_there(kit: Kit) -> None:
    """Raise the error when Redis does not answer a PING: the run cannot go on."""
    await wait_within(kit.fleet.client.ping(), kit.timeout)


async def _abandon(kit: Kit, report: ConformanceReport) -> None:
    """The clean-up cut short by Ctrl-C: drop the robots, stop the fleet side's listeners
    (its peer record's refresher among them), remove the run's keys; within a second."""
    for robot in kit.robots:
        robot.abort()
    await kit.fleet.aclose()
    try:
        removed, report.left_behind = await kit.fleet.remove_owned()
        report.keys_removed += removed
    except (RedisError, OSError) as exc:
        report.left_behind = kit.fleet.owned_keys()
        log.warning("clean-up failed: %s", exc)


async def _cleanup(kit: Kit, report: ConformanceReport, *, fast: bool) -> None:
    """Undrain if needed, close every robot, remove every key of the run. ``fast`` (the run
    was interrupted, or the gateway stopped answering): robots dropped at once, short waits,
    all within a second; the keys are removed before any wait (so a wait cut short by the
    deadline leaves none of the kit's own), then again after, for what the gateway wrote
    about robots whose sockets or handshakes were still closing."""
    fleet = kit.fleet
    began = time.monotonic()
    if kit.draining and kit.instance_id:
        wait = 0.3 if fast else min(kit.timeout, 2.0)
        with contextlib.suppress(Exception):  # best effort: the instance may be gone
            await wait_within(fleet.ask(kit.instance_id, kit.envelope(Op.UNDRAIN), wait), wait)
    if fast:
        for robot in kit.robots:
            robot.abort()
        # first what the kit wrote itself, before any wait: a wait that outlasts the
        # clean-up's deadline (a slow gateway, a busy machine) must not leave it behind
        with contextlib.suppress(RedisError, OSError):
            report.keys_removed, report.left_behind = await fleet.remove_owned()
        if not kit.stopped:
            with contextlib.suppress(RedisError, OSError):
                ids = [r.robot_id for r in kit.robots]
                await fleet.wait_released(ids, kit.instance_id, FAST_SETTLE)
            await asyncio.sleep(FAST_EVENTS)
    else:
        await kit.close_robots()
        await asyncio.sleep(EVENTS_SETTLE)
    try:
        removed, report.left_behind = await fleet.remove_owned()
        report.keys_removed += removed
        if fast and not kit.stopped:
            await asyncio.sleep(max(0.0, FAST_AGAIN - (time.monotonic() - began)))
            again, report.left_behind = await fleet.remove_owned()
            report.keys_removed += again
    except (RedisError, OSError) as exc:
        report.left_behind = fleet.owned_keys()
        log.warning("clean-up failed: %s", exc)
    await fleet.aclose()
