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
from wsctl.registry.instances import InstanceRecord, write_record


@contextlib.asynccontextmanager
async def top_app(
    backend: Backend, *, interval: float = 0.3, socket_timeout: float = 5.0
) -> AsyncIterator[TopApp]:
    """The app on its own client (as `wsctl top` makes it: no retries), not yet running."""
    from wsctl.config import load_settings
    from wsctl.ops.top_collector import Collector, redis_problem
    from wsctl.redis.factory import connect, target_from_settings
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
    from wsctl.sandbox.demo import DemoRobots

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
    from wsctl.sandbox.gateways import GatewayProcess

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


# ---------------------------------------------------------------------- hostile data, 80x24
async def _hostile(store: Any) -> None:
    """A fresh liveness record (nobody listens) under a 10 KB id and one under an id with an
    escape sequence, and an instance whose entries include a 10 KB robot id."""
    from wsctl.registry.model import format_ts, utcnow

    now = utcnow()
    for name in ("L" * 10_240, "evil\x1b[2J"):
        rec = InstanceRecord(
            name,
            last_seen=format_ts(now),
            started_at=format_ts(now.replace(year=now.year - 1)),
            connections=3,
        )
        await write_record(store.client, store.keys, rec, 600)
    for robot in ("R" * 10_240, "short-1"):
        await store.client.hset(
            store.keys.conn_key(robot),
            mapping={
                "instance_id": "gw-x",
                "robot_id": robot,
                "connected_at": format_ts(now),
                "last_heartbeat": format_ts(now),
                "status": "connected",
                "websocket_state": "active",
            },
        )


def _widths(table: DataTable[Any]) -> int:
    """The columns' rendered widths added up (their cells' padding included)."""
    return sum(column.get_render_width(table) for column in table.columns.values())


async def test_a_10kb_instance_id_leaves_its_state_and_counts_on_an_80_column_screen(
    single: Backend,
) -> None:
    async with open_test_store(single) as store:
        await _hostile(store)
        async with top_app(single) as app, app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: len(rows(app)) == 3)  # gw-x: found by the scan
            table = app.query_one("#instances", DataTable)
            headers = [str(c.label) for c in table.columns.values()]
            assert headers[:5] == ["INSTANCE", "LVL", "STATE", "AGE", "ROBOTS"], headers
            assert _widths(table) <= 80, _widths(table)
            cells = _cells(app, "L" * 10_240)
            assert cells[0].endswith("(10,240 chars)") and cells[2] == "deaf", cells[:3]
            assert _cells(app, "evil\x1b[2J")[0] == "$'evil\\x1b[2J'"
            alerts = text(app, "#alerts").splitlines()
            assert all("is not listening" in line[:80] for line in alerts[:2]), alerts


async def test_an_instances_robots_keep_their_state_beside_a_10kb_robot_id(
    single: Backend,
) -> None:
    async with open_test_store(single) as store:
        await _hostile(store)
        async with top_app(single) as app, app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: "gw-x" in rows(app))
            await select_instance(pilot, app, "gw-x")
            await pilot.press("enter")
            await until(pilot, lambda: "robots of gw-x: 2" in text(app, "#instance-title"))
            robots_table = app.screen.query_one("#robots", DataTable)
            assert _widths(robots_table) <= 80, _widths(robots_table)
            assert str(robots_table.get_row_at(0)[1]) == "online"


async def test_the_header_says_how_old_the_registry_scan_is_at_80_columns(
    single: Backend,
) -> None:
    async with top_app(single) as app, app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: "registry scan" in text(app, "#header"))
        lines = text(app, "#header").splitlines()
        assert all(len(line) <= 80 for line in lines), lines
        assert app.query_one("#header").size.height == len(lines)


async def test_a_confirmation_wraps_its_whole_question_at_80_columns(single: Backend) -> None:
    from textual.widgets import Label

    from wsctl.cli.tui.screens import ConfirmScreen

    async with open_test_store(single) as store:
        await _hostile(store)
        async with top_app(single) as app, app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: "gw-x" in rows(app))
            await select_instance(pilot, app, "gw-x")
            await pilot.press("d")  # the question: drain gw-x? ... batches of 50 every 1s
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.pause()  # laid out
            question = app.screen.query(Label).first()
            room = question.parent.content_region.width  # type: ignore[union-attr]
            assert question.size.width <= room and question.size.height >= 2
            await pilot.press("n")


async def test_instance_keys_do_nothing_on_a_robots_screen_or_under_a_question(
    single: Backend,
) -> None:
    from wsctl.cli.tui.screens import ConfirmScreen, RobotScreen

    async with open_test_store(single) as store:
        await _hostile(store)
        async with top_app(single) as app, app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: "gw-x" in rows(app))
            await select_instance(pilot, app, "gw-x")
            await pilot.press("d")  # the question: drain gw-x?
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("d", "s")  # no second question on top, no sort under it
            assert len(app.screen_stack) == 2 and app.sort_index == 0
            await pilot.press("n")
            await pilot.press("enter")  # gw-x's robots, then one robot
            await until(pilot, lambda: "robots of gw-x: 2" in text(app, "#instance-title"))
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, RobotScreen))
            await pilot.press("d", "u", "s")  # would act on the instance table, unseen
            await pilot.pause()
            assert isinstance(app.screen, RobotScreen) and app.sort_index == 0


async def test_registry_lines_fit_beside_the_panels_scrollbar(single: Backend) -> None:
    async with open_test_store(single) as store:
        await _hostile(store)
        async with top_app(single) as app, app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: "heartbeat age" in text(app, "#registry"))
            await pilot.pause(0.5)  # a refresh after the first layout
            room = app.query_one("#registry-box").scrollable_content_region.width
            lines = text(app, "#registry").splitlines()
            assert max(len(line) for line in lines) <= room, (room, lines)


async def test_a_resized_terminal_is_drawn_again_at_once_for_its_new_width(
    single: Backend,
) -> None:
    async with open_test_store(single) as store:
        await _hostile(store)
        async with top_app(single, interval=60) as app, app.run_test(size=(200, 50)) as pilot:
            await until(pilot, lambda: app.collector.scanner.done is not None)
            app.show(await app.collector.refresh())  # the scan's instances; no refresh for 60s
            await until(pilot, lambda: "gw-x" in rows(app))
            assert app.refreshes == 1
            table = app.query_one("#instances", DataTable)
            assert len(table.columns) > 10  # more than 80 columns hold
            await pilot.resize_terminal(80, 24)
            await pilot.pause(0.2)
            assert app.refreshes == 1 and _widths(table) <= 80, _widths(table)
            assert all(len(line) <= 80 for line in text(app, "#header").splitlines())


async def test_a_kick_from_a_robots_screen_shows_its_entry_gone(single: Backend) -> None:
    from wsctl.cli.tui.screens import RobotScreen

    async with running_fleet(single.env) as fleet, open_test_store(single) as store:
        async with robots({"kick-2": fleet["gw-b"].ws_url}):
            await wait_for(lambda: registered(store, ["kick-2"]))
            async with top_app(single) as app, app.run_test(size=(120, 40)) as pilot:
                await until(pilot, lambda: "gw-b" in rows(app))
                await select_instance(pilot, app, "gw-b")
                await pilot.press("enter")
                await until(pilot, lambda: "robots of gw-b: 1" in text(app, "#instance-title"))
                await pilot.press("enter")
                await until(pilot, lambda: isinstance(app.screen, RobotScreen))
                await until(pilot, lambda: "instance_id" in text(app, "#robot-body"))
                await pilot.press("k", "y")
                await until(pilot, lambda: any("kicked" in m for m in app.messages))
                await until(pilot, lambda: "no registry entry" in text(app, "#robot-body"))
                await pilot.press("q")


async def test_a_robot_glob_typed_on_an_instances_robots_reads_them_again(
    single: Backend,
) -> None:
    async with open_test_store(single) as store:
        await _hostile(store)
        async with top_app(single) as app, app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: "gw-x" in rows(app))
            await select_instance(pilot, app, "gw-x")
            await pilot.press("enter")
            await until(pilot, lambda: "robots of gw-x: 2" in text(app, "#instance-title"))
            await pilot.press("g", *"short*", "enter")
            await until(pilot, lambda: "gw-x: 1 matching short*" in text(app, "#instance-title"))


async def test_thousands_of_instances_draw_the_first_500_in_the_sort_order(
    single: Backend,
) -> None:
    from wsctl.registry.model import format_ts, utcnow

    async with open_test_store(single) as store:
        stamp = format_ts(utcnow())
        pipe = store.client.pipeline(transaction=False)
        for i in range(2000):  # the original design's entries left by 2,000 gone pods
            pipe.hset(
                store.keys.conn_key(f"orphan-{i:04d}"),
                mapping={"instance_id": f"old-pod-{i:04d}", "last_heartbeat": stamp},
            )
        await pipe.execute()
        async with top_app(single) as app, app.run_test(size=(120, 40)) as pilot:
            title = lambda: str(app.query_one("#instances").border_title)  # noqa: E731
            await until(pilot, lambda: "instances (2,000)" in title(), 30)
            assert "first 500 shown" in title() and len(rows(app)) == 500
            assert rows(app)[0] == "old-pod-0000" and rows(app)[-1] == "old-pod-0499"
