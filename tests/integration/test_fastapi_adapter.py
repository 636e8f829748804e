"""Mixed fleets end to end: two FastAPI instances (examples/fastapi_gateway.py on the
Starlette adapter, real uvicorn processes) and one ``wsctl gateway`` on one real Redis, single
node and 3+3 cluster."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import Backend, ainvoke, open_test_store
from tests.fastapi_fleet import all_listening, fastapi_gateways, mixed_fleet
from tests.fleet import running_fleet, wait_for
from tests.uvicorn_fleet import redis_env, uvicorn_in_process
from wsctl.gateway.identity import robot_token
from wsctl.system import GC_THRESHOLD0


async def test_send_via_every_instance_reaches_robots_on_every_other(
    backend: Backend, tmp_path: Path
) -> None:
    async with mixed_fleet(backend, tmp_path) as fleet:
        store, urls, fa = fleet.store, fleet.urls, fleet.fastapi[0]
        robots = {name: await connect(f"{url}/ws/on-{name}") for name, url in urls.items()}
        try:
            for name in urls:
                await wait_for(lambda n=name: store.get(f"on-{n}"))
                entry = await store.get(f"on-{name}")
                assert entry is not None and entry.instance_id == name and entry.conn_id
            for via in urls:
                for owner, ws in robots.items():
                    text = f"from {via} to {owner}"
                    res = await ainvoke(
                        ["send", f"on-{owner}", text, "--via", via, "-o", "json"],
                        env=backend.env,
                    )
                    assert res.code == 0, (via, owner, res.out, res.err)
                    route = json.loads(res.out)["route"]
                    assert route == ([via] if via == owner else [via, owner])
                    assert await asyncio.wait_for(ws.recv(), 5) == text
            ping = await ainvoke(["ping", "fa-a", "-o", "json"], env=backend.env)
            assert ping.code == 0, ping.out + ping.err
            pong = json.loads(ping.out)
            assert pong["connections"] == 1 and pong["version"] and pong["rtt_ms"] > 0
            status, body = fa.get("/metrics")
            assert status == 200 and 'wsctl_gateway_connections{instance_id="fa-a"} 1' in body
        finally:
            for ws in robots.values():
                await ws.close()


async def test_kick_across_fastapi_and_wsctl_instances(backend: Backend, tmp_path: Path) -> None:
    async with mixed_fleet(backend, tmp_path, names=("fa-a",)) as fleet:
        store = fleet.store
        on_fa = await connect(f"{fleet.urls['fa-a']}/ws/k-fa")
        on_gw = await connect(f"{fleet.urls['gw-c']}/ws/k-gw")
        await wait_for(lambda: store.get("k-fa"))
        await wait_for(lambda: store.get("k-gw"))
        for rid, ws, owner in (("k-fa", on_fa, "fa-a"), ("k-gw", on_gw, "gw-c")):
            res = await ainvoke(
                ["kick", rid, "--reason", "maintenance", "-o", "json"], env=backend.env
            )
            assert res.code == 0, res.out + res.err
            outcome = json.loads(res.out)
            assert outcome["status"] == "kicked" and outcome["owner"] == owner
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4002, "maintenance")
            assert await store.get(rid) is None
        res = await ainvoke(["kick", "k-fa"], env=backend.env)
        assert res.code == 4 and "not registered" in res.out
        await store.client.hset("ws_conn:k-gone", mapping={"instance_id": "gone", "conn_id": "c1"})
        res = await ainvoke(["kick", "k-gone"], env=backend.env)
        assert res.code == 5 and "gone" in res.out
        await store.client.hset("ws_conn:k-ghost", mapping={"instance_id": "fa-a", "conn_id": "c2"})
        res = await ainvoke(["kick", "k-ghost"], env=backend.env)
        assert res.code == 1 and "ghost" in res.out
        assert "  fix: wsctl registry rm k-ghost --if-instance fa-a" in res.out
        res = await ainvoke(["ping", "gone", "--timeout", "1"], env=backend.env)
        assert res.code == 5 and "gone" in res.out
        res = await ainvoke(["kick", "k-gw", "--reason", "a\x1bb"], env=backend.env)
        assert res.code == 2 and "control character" in res.err
        res = await ainvoke(["kick", "k-gw", "--reason", "x" * 121], env=backend.env)
        assert res.code == 2 and "120 bytes" in res.err


async def test_history_shows_close_reasons_of_kicks_and_drains_through_the_adapter(
    single: Backend, tmp_path: Path
) -> None:
    """A kick's and a drain's close code and reason reach the `disconnected` event through
    the FastAPI adapter (a real uvicorn process) as they do through `wsctl gateway`."""
    from wsctl.gateway.drain import DRAIN_CLOSE_REASON

    async def last_close(robot_id: str) -> dict[str, object] | None:
        res = await ainvoke(["history", robot_id, "-o", "json"], env=single.env)
        events = [e for e in json.loads(res.out or "[]") if e["event"] == "disconnected"]
        return events[-1]["detail"] if events else None

    async with mixed_fleet(single, tmp_path, names=("fa-a",)) as fleet:
        store = fleet.store
        robots = {
            "r-fa": await connect(f"{fleet.urls['fa-a']}/ws/r-fa"),
            "r-gw": await connect(f"{fleet.urls['gw-c']}/ws/r-gw"),
            "d-fa": await connect(f"{fleet.urls['fa-a']}/ws/d-fa"),
        }
        try:
            for rid in robots:
                await wait_for(lambda r=rid: store.get(r))
            for rid in ("r-fa", "r-gw"):
                res = await ainvoke(["kick", rid, "--reason", "maintenance"], env=single.env)
                assert res.code == 0, res.out + res.err
                await wait_for(lambda r=rid: last_close(r), timeout=10, interval=0.2)
                detail = await last_close(rid)
                assert detail is not None
                assert (detail["code"], detail["reason"]) == (4002, "maintenance"), (rid, detail)
            res = await ainvoke(
                ["drain", "fa-a", "--interval", "0", "--timeout", "0.5"], env=single.env
            )
            assert res.code == 1 and "not back: d-fa" in res.out, res.out + res.err
            await wait_for(lambda: last_close("d-fa"), timeout=10, interval=0.2)
            detail = await last_close("d-fa")
            assert detail is not None
            assert (detail["code"], detail["reason"]) == (1012, DRAIN_CLOSE_REASON), detail
        finally:
            for ws in robots.values():
                await ws.close()


async def test_doctor_is_healthy_then_finds_a_planted_ghost(
    backend: Backend, tmp_path: Path
) -> None:
    from tests.seedlike import seed_store_connection

    async with mixed_fleet(backend, tmp_path) as fleet:
        store = fleet.store
        robots = [await connect(f"{url}/ws/d-{n}") for n, url in enumerate(fleet.urls.values())]
        for n in range(3):
            await wait_for(lambda n=n: store.get(f"d-{n}"))
        await asyncio.sleep(1.0)  # a heartbeat on every instance
        healthy = await ainvoke(["doctor", "-o", "json"], env=backend.env)
        assert healthy.code == 0, healthy.out + healthy.err
        robot = await ainvoke(["doctor", "d-0", "-o", "json"], env=backend.env)
        assert robot.code == 0, robot.out
        report = json.loads(robot.out)
        assert report["owner"] == "fa-a" and report["owner_holds_socket"]
        assert report["ping"]["ok"] and report["ping"]["supported"] is False
        await seed_store_connection(store.client, "planted", "fa-b")
        found = await ainvoke(["doctor", "-o", "json"], env=backend.env)
        assert found.code == 1
        ghosts = [
            f
            for f in json.loads(found.out)["findings"]
            if f["kind"] == "ghost" and f.get("robot_id") == "planted"
        ]
        assert ghosts and ghosts[0]["instance_id"] == "fa-b"
        for ws in robots:
            await ws.close()


async def test_simulate_over_two_fastapi_instances_and_a_wsctl_gateway_passes(
    backend: Backend, tmp_path: Path
) -> None:
    async with mixed_fleet(backend, tmp_path) as fleet:
        args = ["simulate", "--robots", "60", "--messages", "2", "-o", "json"]
        for url in fleet.urls.values():
            args += ["--gateway", url]
        res = await ainvoke(args, env=backend.env)
        report = json.loads(res.out)
        failed = [p for p in report["phases"] if not p["ok"] or p.get("skipped")]
        assert res.code == 0 and report["ok"] and not failed, (failed, res.err)
        names = {p["name"] for p in report["phases"]}
        assert {"connect", "registered", "deliver", "heartbeat", "disconnect"} <= names


async def test_sigterm_of_a_fastapi_instance_removes_its_own_entries_only(
    backend: Backend, tmp_path: Path
) -> None:
    with fastapi_gateways(backend, tmp_path) as (fa, fb):
        async with open_test_store(backend) as store:
            await wait_for(lambda: all_listening(store, ["fa-a", "fa-b"]), timeout=10)
            mine = [await connect(f"{fa.ws_url}/ws/t-a{n}") for n in range(5)]
            theirs = [await connect(f"{fb.ws_url}/ws/t-b{n}") for n in range(5)]
            # a robot that was on fa-a and moved to fa-b: its entry is fa-b's now
            moved_old = await connect(f"{fa.ws_url}/ws/t-moved")
            await wait_for(lambda: store.get("t-moved"))
            moved = await connect(f"{fb.ws_url}/ws/t-moved")
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(moved_old.recv(), 5)
            await wait_for(lambda: _owned(store, "fa-a", 5), timeout=15)
            await wait_for(lambda: _owned(store, "fa-b", 6), timeout=15)
            fa.proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(fa.proc.wait, 30)
            for ws in mine:
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 10)
            assert await _owned(store, "fa-a", 0)
            assert await _owned(store, "fa-b", 6)
            assert await store.client.exists("ws_inst:fa-a") == 0
            entry = await store.get("t-moved")
            assert entry is not None and entry.instance_id == "fa-b"
            for ws in [*theirs, moved]:
                assert ws.state.name == "OPEN"
                await ws.close()


async def _owned(store, instance: str, count: int) -> bool:  # type: ignore[no-untyped-def]
    return len([e async for e in store.iter_entries() if e.instance_id == instance]) == count


async def test_fastapi_instance_checks_the_robot_token(single: Backend, tmp_path: Path) -> None:
    secret = {"WSCTL_AUTH_SECRET": "s3cret"}
    with fastapi_gateways(single, tmp_path, names=("fa-auth",), extra_env=secret) as (fa,):
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"{fa.ws_url}/ws/r1")
        assert refused.value.response.status_code == 401
        with pytest.raises(InvalidStatus):
            await connect(f"{fa.ws_url}/ws/r1?token=" + robot_token("wrong", "r1"))
        async with connect(f"{fa.ws_url}/ws/r1?token=" + robot_token("s3cret", "r1")):
            pass
        headers = {"Authorization": "Bearer " + robot_token("s3cret", "r1")}
        async with connect(f"{fa.ws_url}/ws/r1", additional_headers=headers):
            pass


def test_importing_the_core_never_imports_starlette() -> None:
    code = (
        "import sys, wsctl.gateway.core, wsctl.gateway.server; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'fastapi')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def _post(url: str, body: dict) -> tuple[int, dict]:  # type: ignore[type-arg]
    import urllib.request

    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.status, json.loads(resp.read())


async def test_app_send_and_callbacks_through_the_example_app(
    single: Backend, tmp_path: Path
) -> None:
    """The example's own endpoints: ``fleet.send`` from a request handler delivers here or
    across instances and returns the outcome; on_connect/on_disconnect keep its status."""
    with fastapi_gateways(single, tmp_path) as (fa, fb):
        async with open_test_store(single) as store:
            await wait_for(lambda: all_listening(store, ["fa-a", "fa-b"]), timeout=10)
            robot = await connect(f"{fb.ws_url}/ws/app-1")
            await wait_for(lambda: store.get("app-1"))
            assert json.loads(fb.get("/robots/app-1/status")[1])["status"] == 1
            await robot.send('{"type": "hello"}')  # on_message; the session goes on
            status, result = await asyncio.to_thread(
                _post, fa.http_url + "/robots/app-1/messages", {"cmd": "move"}
            )
            assert status == 200 and result["status"] == "delivered"
            assert result["route"] == ["fa-a", "fa-b"]
            assert json.loads(await asyncio.wait_for(robot.recv(), 5)) == {"cmd": "move"}
            status, result = await asyncio.to_thread(
                _post, fb.http_url + "/robots/app-1/messages", {"cmd": "stop"}
            )
            assert result["status"] == "delivered" and result["route"] == ["fa-b"]
            status, result = await asyncio.to_thread(
                _post, fa.http_url + "/robots/nobody/messages", {"cmd": "x"}
            )
            assert result["status"] == "not_connected"
            await robot.close()
            await wait_for(lambda: _absent(store, "app-1"))
            await wait_for(lambda: json.loads(fb.get("/robots/app-1/status")[1])["status"] == 0)


async def _absent(store, robot_id: str) -> bool:  # type: ignore[no-untyped-def]
    return await store.get(robot_id) is None


async def _refusal(url: str) -> tuple[int, bytes, str | None]:
    """A refused handshake's status, body and Retry-After."""
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url):
            pass
    response = refused.value.response
    return response.status_code, bytes(response.body or b""), response.headers.get("Retry-After")


async def test_both_adapters_refuse_handshakes_alike(single: Backend) -> None:
    """Bad token, bad id, draining and shutting down: the Starlette adapter (real uvicorn)
    answers each refused handshake with the status, body and Retry-After of the websockets
    shell, so robots and load balancers cannot tell the transports apart."""
    from starlette.applications import Starlette

    from wsctl.gateway.asgi import Fleet
    from wsctl.redis.target import Target

    fleet = Fleet(Target("tcp"), instance_id="fa-refuse", auth_secret="s3cret")
    app = Starlette(routes=fleet.routes("/ws/{robot_id:path}"))
    token = "?token=" + robot_token("s3cret", "r1")
    async with (
        running_fleet(single.env, names=("gw-refuse",), auth_secret="s3cret") as gateways,
        uvicorn_in_process(app) as port,
    ):
        shell = gateways["gw-refuse"]
        cores = (shell.core, fleet.core)
        urls = (shell.ws_url, f"ws://127.0.0.1:{port}")
        seen: dict[str, list[tuple[int, bytes, str | None]]] = {}
        for situation, path in (
            ("bad token", "/ws/r1?token=nope"),
            ("bad id", "/ws/bad%01id"),
            ("draining", "/ws/r1" + token),
            ("shutting down", "/ws/r1" + token),
        ):
            for core in cores:
                core.drainer.active = situation == "draining"
                core.stopping = situation == "shutting down"
            try:
                seen[situation] = [await _refusal(url + path) for url in urls]
            finally:
                for core in cores:
                    core.drainer.active = core.stopping = False
        assert seen["bad token"][0] == (401, b"bad or missing token\n", None)
        assert seen["bad id"][0][0] == 400
        assert seen["draining"][0] == (503, b"draining\n", str(shell.core.retry_after))
        assert seen["shutting down"][0] == (503, b"shutting down\n", None)
        for situation, (from_shell, from_asgi) in seen.items():
            assert from_asgi == from_shell, situation


_GC_PROBE = """
import asyncio, gc, json, os, sys
from wsctl.gateway.asgi import Fleet

async def main() -> None:
    fleet = Fleet.from_env(tune_gc=sys.argv[1] == "tune")
    before = gc.get_threshold()[0]
    async with fleet.lifespan():
        print(json.dumps([before, gc.get_threshold()[0], gc.get_freeze_count()]))

asyncio.run(main())
"""


@pytest.mark.parametrize("mode", ["tune", "leave"])
def test_a_fleet_tunes_its_process_gc_on_start_unless_told_not_to(
    single: Backend, mode: str
) -> None:
    """Started, a Fleet tunes the cycle collector as ``wsctl gateway`` does (start-up objects
    frozen, gen-0 threshold 50,000); ``tune_gc=False`` leaves the process's GC alone."""
    env = (
        {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "WSCTL_"))}
        | redis_env(single)
        | {"SERVER_INSTANCE_ID": f"gc-{mode}", "PORT": "8999"}
    )
    proc = subprocess.run(
        [sys.executable, "-c", _GC_PROBE, mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    before, after, frozen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert before == 700
    if mode == "tune":
        assert (after, frozen > 0) == (GC_THRESHOLD0, True)
    else:
        assert (after, frozen) == (700, 0)
