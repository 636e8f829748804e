"""The level-2 drain probe (§10 drain, undrain): bad parameters refused, a drain's reply
and liveness record, new robots refused, sessions closed with 1012, then undrained."""

from __future__ import annotations

import asyncio
import contextlib
import time

from wsctl.conformance.kit import (
    Failed,
    Kit,
    Recorder,
    close_of,
)
from wsctl.protocol.envelopes import (
    CloseCode,
    Op,
    Status,
)
from wsctl.protocol.rpc import Unreachable
from wsctl.registry.model import F_CONN_ID

__all__ = [
    "DRAIN_IDS",
    "DRAIN_INTERVAL",
    "drain_probe",
]


# ---------------------------------------------------------------------- level 2: drain

DRAIN_IDS = ("drain.reply", "drain.refuse_new", "drain.close", "drain.undrain")
DRAIN_INTERVAL = 0.2


async def drain_probe(kit: Kit, rec: Recorder) -> None:
    """drain.*: refuse bad parameters, drain (reply, record, refusal, 1012 closes, entries
    removed), undrain (reply, record, robots accepted again). Only against an instance that
    holds no robot but the kit's: a drain closes every session."""
    try:
        await _drain(kit, rec)
    except Failed as exc:
        first = next((i for i in DRAIN_IDS if not rec.done(i)), None)
        if first is not None:
            rec.failed(first, exc.expected, exc.seen)
            for check_id in DRAIN_IDS:
                rec.blocked(check_id, first)
    finally:
        if kit.draining:
            with contextlib.suppress(Failed, Unreachable, TimeoutError):
                await kit.ask(kit.envelope(Op.UNDRAIN))
            kit.draining = False


async def _drain(kit: Kit, rec: Recorder) -> None:
    fleet = kit.fleet
    inventory = kit.answer(await kit.ask(kit.envelope(Op.INVENTORY)), Status.INVENTORY, "inventory")
    sessions = inventory.data.get("connections")
    others = [
        s
        for s in (sessions if isinstance(sessions, list) else [])
        if isinstance(s, dict) and not str(s.get("robot_id", "")).startswith(fleet.prefix)
    ]
    if others:
        for check_id in DRAIN_IDS:
            rec.na(
                check_id,
                f"the instance holds {len(others)} sessions of other robots, which a drain "
                "would close: run the kit against an instance of its own",
            )
        return
    a_id, a, a_fields = await kit.connected("drain-a")
    b_id, b, b_fields = await kit.connected("drain-b")
    bad = kit.envelope(Op.DRAIN, message='{"batch": 0}')
    kit.draining = True
    bad_reply = (await kit.ask(bad)).reply
    message = f'{{"batch": 1, "interval": {DRAIN_INTERVAL}}}'
    reply = kit.answer(
        await kit.ask(kit.envelope(Op.DRAIN, message=message)), Status.DRAINING, "drain"
    )
    # drain.reply
    try:
        if bad_reply is None or bad_reply.status is not Status.REJECTED:
            raise Failed(
                "rejected for a drain with batch 0",
                bad_reply.status.value if bad_reply else "no reply",
            )
        data = reply.data
        listed = {
            s.get("robot_id"): s.get("conn_id")
            for s in data.get("connections", [])
            if isinstance(s, dict)
        }
        problems = []
        if data.get("draining") is not True:
            problems.append(f"data.draining {data.get('draining')!r}")
        if data.get("batch") != 1 or data.get("interval") != DRAIN_INTERVAL:
            problems.append(f"data.batch/interval {data.get('batch')!r}/{data.get('interval')!r}")
        for robot_id, fields in ((a_id, a_fields), (b_id, b_fields)):
            if robot_id not in listed:
                problems.append(f"{robot_id!r} not in data.connections")
            elif fields.get(F_CONN_ID) and listed[robot_id] != fields.get(F_CONN_ID):
                problems.append(f"{robot_id!r} listed with conn_id {listed[robot_id]!r}")
        if problems:
            raise Failed(
                "draining with batch 1, its interval and both sessions", "; ".join(problems)
            )
        if not await _record_draining(kit, "1"):
            raise Failed("the liveness record saying draining 1 within 1 s", "it does not")
        rec.passed("drain.reply")
    except Failed as exc:
        rec.failed("drain.reply", exc.expected, exc.seen)

    async def refuse() -> str:
        got = await kit.try_connect(kit.rid("drain-new"))
        if got.robot is not None:
            raise Failed("HTTP 503 for a new robot while draining", "the handshake was accepted")
        retry = got.header("Retry-After")
        if got.status != 503 or retry is None or not retry.strip().isdigit():
            raise Failed(
                "HTTP 503 with Retry-After (seconds)",
                got.error or f"HTTP {got.status}, Retry-After {retry!r}",
            )
        return f"Retry-After {retry}"

    await rec.run("drain.refuse_new", refuse())

    async def close() -> str:
        wait = kit.timeout + 2 * DRAIN_INTERVAL
        for robot_id, robot in ((a_id, a), (b_id, b)):
            if not await robot.wait_ended(wait) or close_of(robot) != CloseCode.SERVICE_RESTART:
                raise Failed(f"{robot_id!r} closed with 1012 within {wait:g}s", robot.ending())
            if not await kit.gone(robot_id):
                raise Failed(f"{robot_id!r}'s entry removed", f"{await fleet.fields(robot_id)}")
        return ""

    await rec.run("drain.close", close())

    async def undrain() -> str:
        reply = kit.answer(await kit.ask(kit.envelope(Op.UNDRAIN)), Status.UNDRAINED, "undrain")
        kit.draining = False
        if reply.data.get("draining") is not False:
            raise Failed("data.draining false", f"data {reply.data}")
        if not await _record_draining(kit, "0"):
            raise Failed("the liveness record saying draining 0 within 1 s", "it does not")
        await kit.connected("drain-after")
        return ""

    await rec.run("drain.undrain", undrain())


async def _record_draining(kit: Kit, flag: str) -> bool:
    deadline = time.monotonic() + 1.0
    while True:
        mapping, _ = await kit.fleet.record(kit.gw)
        if mapping.get("draining", "0") == flag:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
