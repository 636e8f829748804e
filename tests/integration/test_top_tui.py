"""`wsctl top`'s live screen driven by Textual's headless pilot (`App.run_test`) against a real
Redis with real gateways: the instances on the screen, a kick and a drain from the UI, a
killed gateway turned into an alert within one refresh, a frozen Redis said and recovered
from."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import Backend, open_test_store
from tests.faults import frozen
from tests.fleet import running_fleet, wait_for
from tests.robot_clients import registered, robots

pytest.importorskip("textual")

from textual.widgets import DataTable, Static

from wsctl.cli.tui.app import TopApp


@contextlib.asynccontextmanager
async def top_app(
    backend: Backend, *, interval: float = 0.3, socket_timeout: float = 5.0
) -> AsyncIterator[TopApp]:
    """The app on its own client (as `wsctl top` makes it: no retries), not yet running."""
    from wsctl.config import load_settings
    from wsctl.ops.top_collector import Collector, redis_problem
    from wsctl.redis_factory import connect, target_from_settings
    from wsctl.registry.keys import Keyspace

    target = target_from_settings(load_settings(env=backend.env))
    async with connect(target, socket_timeout=socket_timeout, retries=0) as client:
        collector = Collector(
            client,
            Keyspace(),
            timeout=5.0,
            describe=lambda exc: redis_problem(target, exc, socket_timeout),
        )
        app = TopApp(
            collector, where=target.describe(), interval=interval, scan_rate=5000, timeout=5.0
        )
        try:
            yield app
        finally:
            await collector.close()
        assert app.failure is None, app.failure


async def until(pilot: Any, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Let the app run until ``predicate()`` holds (bounded in time)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("the screen did not get there in time")
        await pilot.pause(0.05)


def rows(app: TopApp) -> list[str]:
    table = app.query_one("#instances", DataTable)
    return [str(row.key.value) for row in table.ordered_rows]


def text(app: TopApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).content)


async def select_instance(pilot: Any, app: TopApp, name: str) -> None:
    table = app.query_one("#instances", DataTable)
    table.move_cursor(row=rows(app).index(name))
    await pilot.pause()
    assert app.selected_instance() == name


async def test_the_screen_shows_the_instances_registry_and_events(backend: Backend) -> None:
    async with running_fleet(backend.env) as fleet, open_test_store(backend) as store:
        async with robots({"tui-1": fleet["gw-a"].ws_url}):
            await wait_for(lambda: registered(store, ["tui-1"]))
            async with top_app(backend) as app, app.run_test(size=(120, 40)) as pilot:
                await until(pilot, lambda: rows(app) == ["gw-a", "gw-b"])
                await until(pilot, lambda: "1 entry" in text(app, "#registry"))
                await until(pilot, lambda: _cells(app, "gw-a")[4] == "1")  # its next record
                assert _cells(app, "gw-a")[:3] == ["gw-a", "2", "alive"]
                assert "no alerts" in text(app, "#alerts")
                await until(pilot, lambda: "tui-1" in _event_robots(app))
                await pilot.press("s")  # sort by robots: gw-a (1) first
                await until(
                    pilot, lambda: "sort: robots" in str(app.query_one("#instances").border_title)
                )
                await pilot.press("q")
            assert app.return_code == 0


async def test_a_kick_from_the_ui_closes_the_robot(single: Backend) -> None:
    async with running_fleet(single.env) as fleet, open_test_store(single) as store:
        async with robots({"kick-me": fleet["gw-b"].ws_url}) as conns:
            await wait_for(lambda: registered(store, ["kick-me"]))
            async with top_app(single) as app, app.run_test(size=(120, 40)) as pilot:
                await until(pilot, lambda: "gw-b" in rows(app))
                await select_instance(pilot, app, "gw-b")
                await pilot.press("enter")  # gw-b's robots
                await until(pilot, lambda: "robots of gw-b: 1" in text(app, "#instance-title"))
                await pilot.press("k")
                await pilot.press("y")
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(conns["kick-me"].recv(), 10)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 4002
                await until(pilot, lambda: any("kicked" in m for m in app.messages))
                await pilot.press("escape")
                await pilot.press("q")


async def test_a_drain_from_the_ui_moves_robots_and_an_undrain_reopens(single: Backend) -> None:
    from wsctl.sandbox import DemoRobots

    async with running_fleet(single.env) as fleet:
        a, b = fleet["gw-a"], fleet["gw-b"]
        demo = DemoRobots([a.ws_url, b.ws_url], 4)  # robot-1 and robot-3 on gw-a
        await asyncio.to_thread(demo.start, 15.0)
        try:
            async with top_app(single) as app, app.run_test(size=(120, 40)) as pilot:
                await until(pilot, lambda: rows(app) == ["gw-a", "gw-b"])
                await select_instance(pilot, app, "gw-a")
                await pilot.press("d")
                await pilot.press("y")
                await until(pilot, lambda: len(a.local) == 0 and len(b.local) == 4, 20)
                await until(pilot, lambda: any("gw-a is draining: 2" in m for m in app.messages))
                await until(pilot, lambda: _cells(app, "gw-a")[5] == "yes")  # DRAIN column
                await select_instance(pilot, app, "gw-a")
                await pilot.press("u")
                await pilot.press("y")
                await until(pilot, lambda: not a.core.draining)
                await pilot.press("q")
        finally:
            await asyncio.to_thread(demo.stop)


def _event_robots(app: TopApp) -> set[str]:
    events = app.query_one("#events", DataTable)
    return {str(events.get_row_at(i)[2]) for i in range(events.row_count)}


def _cells(app: TopApp, name: str) -> list[str]:
    if name not in rows(app):
        return [""] * 14
    return [str(c) for c in app.query_one("#instances", DataTable).get_row(name)]


async def test_a_killed_gateway_becomes_an_alert_within_one_refresh(
    single: Backend, tmp_path: Path
) -> None:
    from wsctl.sandbox import GatewayProcess

    proc = GatewayProcess(
        redis_url=single.env["WSCTL_REDIS_URL"],
        instance_id="gw-doomed",
        heartbeat_interval=0.3,
        timeout=30,
    )
    try:
        await asyncio.to_thread(proc.start, tmp_path)
        async with top_app(single, interval=0.5) as app, app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: "gw-doomed" in rows(app), 15)
            await until(pilot, lambda: _cells(app, "gw-doomed")[2] == "alive")
            await asyncio.sleep(3.0)  # past the start-up grace of a new gateway
            proc.kill()
            killed_at = app.refreshes
            # a refresh under way at the kill may have read before it: the next one says it
            await until(pilot, lambda: app.refreshes >= killed_at + 2, 10)
            alerts = text(app, "#alerts")
            assert "gw-doomed is not listening on its control channel" in alerts, alerts
            assert _cells(app, "gw-doomed")[2] == "deaf"
            await pilot.press("ctrl+c")
        assert app.return_code == 0
    finally:
        proc.stop()


async def test_a_frozen_redis_is_said_on_screen_and_the_screen_recovers(single: Backend) -> None:
    assert single.single is not None
    async with running_fleet(single.env) as fleet:
        async with (
            top_app(single, interval=0.3, socket_timeout=1.0) as app,
            app.run_test(size=(120, 40)) as pilot,
        ):
            await until(pilot, lambda: rows(app) == sorted(fleet))
            with frozen(single.single):
                await until(pilot, lambda: "is not answering" in text(app, "#alerts"), 5)
                assert "within the request timeout, 1s" in text(app, "#alerts")
                assert "REDIS NOT ANSWERING" in text(app, "#header")
                assert rows(app) == sorted(fleet)  # the last data stays
                await until(pilot, lambda: "showing data from 1s ago" in text(app, "#alerts"), 5)
            await until(pilot, lambda: "no alerts" in text(app, "#alerts"), 15)
            await pilot.press("q")
