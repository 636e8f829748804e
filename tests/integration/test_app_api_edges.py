"""The app API's edges on a real Redis: wrong arguments and calls outside start()..stop()
raise at once (a bug in the calling code, not an outcome of the fleet), nothing is queued
and Redis is not blamed; a stopped fleet starts again with fresh state."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import Backend
from wsctl.api import Fleet, FleetCore, FleetNotRunning, SendOutcome, WsctlError
from wsctl.config import load_settings
from wsctl.gateway.core import CoreConfig
from wsctl.redis.factory import target_from_settings
from wsctl.redis.target import Target


class FakeSocket:
    """A robot socket that records what it was sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_text(self, text: str) -> None:
        self.sent.append(text)

    async def close(self, code: int, reason: str) -> None:
        pass


def _core(backend: Backend, name: str) -> FleetCore:
    target = target_from_settings(load_settings(env=backend.env))
    return FleetCore(CoreConfig(instance_id=name, heartbeat_interval=3600.0), target)


@contextlib.asynccontextmanager
async def _running(backend: Backend, name: str) -> AsyncIterator[FleetCore]:
    core = _core(backend, name)
    await core.start()
    try:
        await core.wait_subscribed()
        yield core
    finally:
        await core.stop()


Call = Callable[[FleetCore], Awaitable[Any]]

# (call, the exception it raises, what its message starts with)
WRONG_CALLS: list[tuple[str, Call, type[Exception], str]] = [
    ("send bytes", lambda c: c.send("robot-1", b"x"), TypeError, "message: "),  # type: ignore[arg-type]
    ("send int message", lambda c: c.send("robot-1", 5), TypeError, "message: "),  # type: ignore[arg-type]
    ("send None message", lambda c: c.send("robot-1", None), TypeError, "message: "),  # type: ignore[arg-type]
    ("send int id", lambda c: c.send(17, "x"), TypeError, "robot_id: "),  # type: ignore[arg-type]
    ("send None id", lambda c: c.send(None, "x"), TypeError, "robot_id: "),  # type: ignore[arg-type]
    ("send timeout None", lambda c: c.send("robot-1", "x", timeout=None), TypeError, "timeout: "),  # type: ignore[arg-type]
    ("send timeout 0", lambda c: c.send("robot-1", "x", timeout=0), ValueError, "timeout: "),
    ("send timeout < 0", lambda c: c.send("robot-1", "x", timeout=-1), ValueError, "timeout: "),
    ("publish bytes", lambda c: c.publish("robot-1", b"x"), TypeError, "message: "),  # type: ignore[arg-type]
    ("publish int id", lambda c: c.publish(17, "x"), TypeError, "robot_id: "),  # type: ignore[arg-type]
    (
        "publish timeout None",
        lambda c: c.publish("robot-1", "x", timeout=None),
        TypeError,
        "timeout: ",
    ),  # type: ignore[arg-type]
    (
        "send_many bytes",
        lambda c: c.send_many(["robot-1", "robot-2"], b"x"),
        TypeError,
        "message: ",
    ),  # type: ignore[arg-type]
    ("send_many int id", lambda c: c.send_many(["robot-1", 201], "x"), TypeError, "robots[1]: "),  # type: ignore[list-item]
    ("send_many one id", lambda c: c.send_many("robot-1", "x"), TypeError, "robots: "),
    (
        "send_many timeout 0",
        lambda c: c.send_many(["robot-1"], "x", timeout=0),
        ValueError,
        "timeout: ",
    ),
    (
        "send_many on_outcome",
        lambda c: c.send_many(["robot-1"], "x", on_outcome="p"),
        TypeError,
        "on_outcome: ",
    ),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(
    ("call", "error", "starts"),
    [pytest.param(call, error, starts, id=name) for name, call, error, starts in WRONG_CALLS],
)
async def test_a_wrong_argument_raises_naming_it_before_anything_is_sent(
    single: Backend, call: Call, error: type[Exception], starts: str
) -> None:
    """A wrong type or value raises TypeError/ValueError naming the argument; the robot here
    gets nothing, nothing is queued or counted as failed, and Redis is not blamed."""
    async with _running(single, "args-a") as core:
        sock = FakeSocket()
        await core.open_session("robot-1", sock)
        errors_before = core.metrics.redis_errors
        with pytest.raises(error) as caught:
            await call(core)
        assert str(caught.value).startswith(starts), caught.value
        assert sock.sent == []
        assert core.outbox.queued == 0 and core.outbox.batches_sent == 0
        assert core.metrics.messages_failed == 0
        assert core.metrics.redis_errors == errors_before and core.redis_ok


CALLS: list[tuple[str, Call]] = [
    ("send", lambda c: c.send("robot-1", "x", timeout=3)),
    ("publish", lambda c: c.publish("robot-1", "x", timeout=3)),
    ("send_many", lambda c: c.send_many(["robot-1", "robot-201"], "x", timeout=3)),
]


@pytest.mark.parametrize("call", [pytest.param(c, id=n) for n, c in CALLS])
async def test_sending_before_start_raises_fleet_not_running_at_once(
    single: Backend, call: Call
) -> None:
    core = _core(single, "early-a")
    started = time.monotonic()
    with pytest.raises(FleetNotRunning, match=r"^fleet early-a is not started: call start\(\)"):
        await call(core)
    assert time.monotonic() - started < 0.5  # not after the timeout
    assert core.metrics.redis_errors == 0


@pytest.mark.parametrize("call", [pytest.param(c, id=n) for n, c in CALLS])
async def test_sending_after_stop_raises_fleet_not_running_at_once(
    single: Backend, call: Call
) -> None:
    async with _running(single, "late-a") as core:
        await core.open_session("robot-1", FakeSocket())
    started = time.monotonic()
    with pytest.raises(FleetNotRunning, match=r"^fleet late-a is stopped"):
        await call(core)
    assert time.monotonic() - started < 0.5
    assert isinstance(FleetNotRunning("x"), WsctlError | RuntimeError)


async def test_a_stopped_core_starts_again_and_delivers_here_and_across_instances(
    single: Backend,
) -> None:
    """stop() then start(): fresh state (no sessions, a new inbox and control subscription),
    sends delivered to a robot here and to one on another instance, both ways."""
    async with _running(single, "again-b") as other:
        there = FakeSocket()
        await other.open_session("robot-b", there)
        core = _core(single, "again-a")
        for run in range(2):
            await core.start()
            try:
                await core.wait_subscribed()
                here = FakeSocket()
                await core.open_session("robot-a", here)
                local = await core.send("robot-a", f"here {run}", timeout=3)
                assert local.outcome is SendOutcome.DELIVERED, local
                remote = await core.send("robot-b", f"there {run}", timeout=3)
                assert remote.outcome is SendOutcome.DELIVERED, remote
                back = await other.send("robot-a", f"back {run}", timeout=3)
                assert back.outcome is SendOutcome.DELIVERED, back
                assert here.sent == [f"here {run}", f"back {run}"]
            finally:
                await core.stop()
            assert len(core.local) == 0
        assert there.sent == ["there 0", "there 1"]


async def test_starting_a_running_core_raises(single: Backend) -> None:
    async with _running(single, "twice-a") as core:
        with pytest.raises(WsctlError, match="already started"):
            await core.start()


async def test_fleet_selection_before_start_raises_fleet_not_running() -> None:
    fleet = Fleet(Target("tcp"), instance_id="sel-a", auth_secret="s")
    with pytest.raises(FleetNotRunning, match="not started"):
        fleet.selection("robot-*")


@pytest.mark.parametrize(("glob", "instance"), [(17, None), (b"robot-*", None), (None, 5)])
async def test_fleet_selection_with_a_filter_of_the_wrong_type_raises_type_error(
    single: Backend, glob: Any, instance: Any
) -> None:
    fleet = Fleet(target_from_settings(load_settings(env=single.env)), instance_id="sel-b")
    async with fleet.lifespan():
        with pytest.raises(TypeError, match=r"^(robot_glob|instance): a str or None, got "):
            fleet.selection(glob, instance)


async def test_fleet_api_raises_for_wrong_arguments_and_outside_its_lifespan(
    single: Backend,
) -> None:
    """The adapter's send/publish/send_many take the same checks as the core's; a lifespan
    entered twice (a test client used twice) works each time."""
    fleet = Fleet(target_from_settings(load_settings(env=single.env)), instance_id="life-a")
    with pytest.raises(FleetNotRunning):
        await fleet.publish("robot-1", "x")
    for _ in range(2):
        async with fleet.lifespan():
            await fleet.core.wait_subscribed()
            sock = FakeSocket()
            await fleet.core.open_session("robot-1", sock)
            with pytest.raises(TypeError, match=r"^message: "):
                await fleet.send("robot-1", b"x")  # type: ignore[arg-type]
            with pytest.raises(ValueError, match=r"^timeout: "):
                await fleet.publish("robot-1", "x", timeout=-1)
            with pytest.raises(TypeError, match=r"^robots\[0\]: "):
                await fleet.send_many([None], "x")  # type: ignore[list-item]
            result = await fleet.send("robot-1", "ok", timeout=3)
            assert result.outcome is SendOutcome.DELIVERED and sock.sent == ["ok"]
    with pytest.raises(FleetNotRunning, match="stopped"):
        await fleet.send_many(["robot-1"], "x")


async def test_a_send_cancelled_while_it_waits_in_the_outbox_is_withdrawn_never_sent(
    single: Backend,
) -> None:
    """The app's task awaiting ``send`` is cancelled before the outbox's flusher took the
    message: the cancellation comes out, and the message never leaves (nor counts as sent)."""
    async with _running(single, "cancel-b") as other:
        there = FakeSocket()
        await other.open_session("robot-b", there)
        async with _running(single, "cancel-a") as core:
            task = asyncio.create_task(core.send("robot-b", "never", timeout=3))
            await asyncio.sleep(0)  # the send ran up to its wait: queued, not yet flushed
            assert core.outbox.queued == 1 and core.outbox.items_sent == 0
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            after = await core.send("robot-b", "after", timeout=3)
            assert after.outcome is SendOutcome.DELIVERED
            assert there.sent == ["after"] and core.outbox.items_sent == 1
