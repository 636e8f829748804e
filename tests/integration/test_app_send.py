"""Messages sent from the app's own code under load: two real uvicorn instances of the FastAPI
example (tests/blast_app.py adds the endpoint that makes app code send), real robots on both,
app code on one instance sending with 1,000 and 10,000 sends in flight. Every send ends with a
real outcome, every robot gets each of its messages once and in order, and what Redis counts
stays within the targets of issue #20 (connections opened, commands per forwarded message)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.blast_fleet import ROBOTS, blast_fleet, check_received
from tests.conftest import Backend
from tests.fleet import wait_for
from tests.redis_counts import RedisCounts, primary_ports


@pytest.mark.parametrize("in_flight", [1000, 10_000])
async def test_app_sends_in_flight_all_arrive_once_in_order_without_an_error(
    backend: Backend, tmp_path: Path, in_flight: int
) -> None:
    count = max(2000, in_flight)
    async with blast_fleet(backend, tmp_path) as fleet:
        fleet.blast(ROBOTS, ROBOTS)  # every owner read once, every pool warm
        await wait_for(lambda: fleet.total() == ROBOTS, timeout=10)
        fleet.received.clear()
        first = fleet.sent
        counts = RedisCounts(primary_ports(backend))
        try:
            before = counts.read()
            result = await asyncio.to_thread(fleet.blast, count, in_flight)
            after = counts.read()
        finally:
            counts.close()
        assert result["outcomes"] == {"delivered": count}, result
        await wait_for(lambda: fleet.total() >= count, timeout=10)
        check_received(fleet, first, count)
        forwarded = count // 2  # the robots on the other instance
        connections = after["connections"] - before["connections"]
        commands = after["commands"] - before["commands"]
        assert connections <= 10 * 2, (connections, before, after)
        assert commands / forwarded <= 1.5, (commands, forwarded, before, after)
        assert result["batches"] < forwarded / 10  # coalesced: not one request per message


async def test_app_publishes_are_handed_over_and_all_arrive_once_in_order(
    backend: Backend, tmp_path: Path
) -> None:
    count = 4000
    async with blast_fleet(backend, tmp_path) as fleet:
        result = await asyncio.to_thread(fleet.blast, count, 1000, "publish")
        half = count // 2
        assert result["outcomes"] == {"delivered": half, "published": half}, result
        await wait_for(lambda: fleet.total() >= count, timeout=10)
        check_received(fleet, 0, count)


async def test_app_send_many_reaches_each_robot_once_with_an_outcome_per_robot(
    backend: Backend, tmp_path: Path
) -> None:
    """``fleet.send_many`` from app code, by ids (one robot not connected, one given twice)
    and by a registry glob: the fan-out's outcome per robot, every connected robot gets the
    message exactly once, each owner reached in one batch."""
    async with blast_fleet(backend, tmp_path) as fleet:
        ids = [*fleet.robots, "nobody-here", fleet.robots[0]]
        counts = RedisCounts(primary_ports(backend))
        try:
            before, calls = counts.read(), counts.per_command()
            result = await asyncio.to_thread(fleet.send_many, "by-ids", robots=ids)
            after = counts.read()
            calls = {k: n - calls.get(k, 0) for k, n in counts.per_command().items()}
        finally:
            counts.close()
        outcomes = result["outcomes"]
        assert outcomes == {
            **dict.fromkeys(fleet.robots, "delivered"),
            "nobody-here": "not_connected",
        }, result
        assert result["summary"]["selected"] == ROBOTS + 1 and result["streamed"] == ROBOTS + 1
        await wait_for(lambda: fleet.total() == ROBOTS, timeout=10)
        assert all(fleet.received[r] == ["by-ids"] for r in fleet.robots)
        # one owner lookup per robot, one batch to each instance and its reply (+ a record
        # read per instance): a handful of commands beyond the lookups
        assert after["commands"] - before["commands"] <= len(ids) + 12, calls
        result = await asyncio.to_thread(fleet.send_many, "by-glob", glob="blast-1*")
        chosen = [r for r in fleet.robots if r.startswith("blast-1")]
        assert result["outcomes"] == dict.fromkeys(chosen, "delivered"), result
        await wait_for(lambda: fleet.total() == ROBOTS + len(chosen), timeout=10)
        assert all(fleet.received[r] == ["by-ids", "by-glob"] for r in chosen)


@pytest.mark.stress
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("mode", "in_flight"), [("send", 1000), ("send", 10_000), ("publish", 10_000)]
)
async def test_issue_20s_workload_2000_robots_20000_messages_arrive_without_an_error(
    single: Backend, tmp_path: Path, mode: str, in_flight: int
) -> None:
    """Issue #20's workload at its scale (``pytest -m stress``): 2,000 robots, half on each
    instance, 20,000 distinct messages from app code on one instance."""
    from wsctl.system import raise_fd_limit

    raise_fd_limit()  # 2,000 robot sockets in this process
    count = 20_000
    async with blast_fleet(single, tmp_path, robot_count=2000) as fleet:
        counts = RedisCounts(primary_ports(single))
        try:
            before = counts.read()
            result = await asyncio.to_thread(fleet.blast, count, in_flight, mode)
            after = counts.read()
        finally:
            counts.close()
        expected = (
            {"delivered": count}
            if mode == "send"
            else {"delivered": count // 2, "published": count // 2}
        )
        assert result["outcomes"] == expected, result
        await wait_for(lambda: fleet.total() >= count, timeout=60)
        check_received(fleet, 0, count)
        forwarded = count // 2
        assert after["connections"] - before["connections"] <= 10 * 2
        assert (after["commands"] - before["commands"]) / forwarded <= 1.5
        print(
            f"\n[stress] {mode} {in_flight} in flight: {count} in {result['seconds']:.2f}s "
            f"({count / result['seconds']:.0f} msg/s from app code), {result['batches']} batches"
        )


async def test_send_many_keeps_each_robots_order_with_send_and_publish(
    single: Backend, tmp_path: Path
) -> None:
    """Per robot, send(n), send_many([robot], n + 1) and send(n + 2) started in that order,
    all at once for 60 robots on two instances and 10 rounds: every message delivered, and
    each robot receives its messages in that order (send_many used to overtake send)."""
    async with blast_fleet(single, tmp_path) as fleet:
        rounds = 10
        body = {"robots": fleet.robots, "rounds": rounds, "timeout": 10}
        result = await asyncio.to_thread(fleet.post, "/test/interleave", body)
        total = 3 * rounds * len(fleet.robots)
        assert result["outcomes"] == {"delivered": total}, result
        await wait_for(lambda: fleet.total() >= total, timeout=10)
        for robot_id in fleet.robots:
            got = [json.loads(frame)["n"] for frame in fleet.received[robot_id]]
            assert len(got) == 3 * rounds and got == sorted(got), (robot_id, got)
