"""The FastAPI adapter's ``Fleet`` as frameworks and apps see it, without Redis: its sending
methods are coroutine functions, and its settings reach the fleet core."""

from __future__ import annotations

import pytest
from starlette._utils import is_async_callable
from starlette.background import BackgroundTask

from wsctl.gateway.asgi import Fleet
from wsctl.redis.target import Target


@pytest.mark.parametrize("method", ["send", "publish", "send_many"])
def test_fleet_sending_methods_are_coroutine_functions_so_background_tasks_await_them(
    method: str,
) -> None:
    """Starlette's BackgroundTasks (and FastAPI's) run a callable that is not a coroutine
    function in a worker thread, where a returned coroutine is never awaited and the message
    never sent: ``background_tasks.add_task(fleet.send, robot_id, text)`` must run on the
    event loop."""
    fleet = Fleet(Target("tcp"), instance_id="gw-t", tune_gc=False)
    call = getattr(fleet, method)
    assert is_async_callable(call)
    assert BackgroundTask(call, "robot-1", "hi").is_async


def test_fleet_reply_bundling_is_on_by_default_and_bundle_replies_false_turns_it_off() -> None:
    on = Fleet(Target("tcp"), instance_id="gw-on", tune_gc=False)
    off = Fleet(Target("tcp"), instance_id="gw-off", tune_gc=False, bundle_replies=False)
    assert on.core.config.bundle_replies and on.core.outbox.bundle_replies
    assert not off.core.config.bundle_replies and not off.core.outbox.bundle_replies


def test_fleet_publish_lanes_false_turns_the_lanes_and_the_early_hand_over_off() -> None:
    on = Fleet(Target("tcp"), instance_id="gw-on", tune_gc=False)
    no_lanes = Fleet(Target("tcp"), instance_id="gw-pool", tune_gc=False, publish_lanes=False)
    no_early = Fleet(Target("tcp"), instance_id="gw-late", tune_gc=False, early_publish=False)
    assert on.core.config.publish_lanes and on.core.outbox.early_items > 0
    assert not no_lanes.core.config.publish_lanes and no_lanes.core.outbox.early_items == 0
    assert no_early.core.config.publish_lanes and no_early.core.outbox.early_items == 0
