"""``wsctl drain`` / ``undrain`` end to end: real gateways on 127.0.0.1, real Redis (single
node and a 3+3 cluster), robots that reconnect to the next gateway as real robots do."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import Backend, ainvoke, default_sigint, open_test_store
from tests.fleet import running_fleet, wait_for
from wsctl.gateway.drain import DRAIN_CLOSE_REASON as DRAIN_REASON
from wsctl.ops.simulate.robots import RobotSwarm, make_message
from wsctl.protocol.envelopes import Envelope, Op
from wsctl.registry.instances import InstanceRecord, write_record
from wsctl.registry.keys import Keyspace
from wsctl.sandbox.demo import DemoRobots
from wsctl.sandbox.gateways import GatewayProcess


def _http(url: str) -> tuple[int, str, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


async def test_drain_moves_every_reconnecting_robot_and_loses_no_message_to_others(
    backend: Backend,
) -> None:
    async with running_fleet(backend.env, names=("gw-a", "gw-b", "gw-c")) as fleet:
        a, b, c = fleet["gw-a"], fleet["gw-b"], fleet["gw-c"]
        urls = [a.ws_url, b.ws_url, c.ws_url]
        movers = RobotSwarm("drain-run", reconnect=urls)
        stayers = RobotSwarm("drain-run")
        try:
            await movers.connect([(f"m-{i}", a.ws_url) for i in range(30)], 0)
            await stayers.connect([(f"s-{i}", b.ws_url) for i in range(10)], 0)
            await wait_for(lambda: len(a.local) == 30 and len(b.local) == 10, timeout=10)

            sent = 0
            stop = asyncio.Event()

            async def traffic() -> None:
                # messages for gw-b's robots, injected at gw-c, while gw-a drains
                nonlocal sent
                while not stop.is_set():
                    for i in range(10):
                        # a reply may come late on a loaded machine; what the robots received
                        # is checked below
                        await c.core.send(f"s-{i}", make_message("drain-run", sent), timeout=30)
                    sent += 1
                    await asyncio.sleep(0.01)

            pump = asyncio.create_task(traffic())
            res = await ainvoke(
                [
                    "drain",
                    "gw-a",
                    "--batch",
                    "10",
                    "--interval",
                    "0.3",
                    "--timeout",
                    "20",
                    "-o",
                    "json",
                ],
                backend.env,
            )
            stop.set()
            await pump
            assert res.code == 0, res.err + res.out
            report = json.loads(res.out)
            assert report["robots"] == 30 and report["moved"] == 30 and report["not_back"] == 0
            assert report["batches"] == 3
            assert {m["instance_id"] for m in report["moved_to"]} <= {"gw-b", "gw-c"}
            assert len(a.local) == 0 and a.core.draining
            # the drained robots were closed with 1012 and are registered elsewhere
            stats = movers.stats()
            assert stats["reconnects"] == 30 and stats["reconnect_failures"] == 0
            # nothing for the other instances' robots was lost, in order, once
            await wait_for(
                lambda: all(len(r["received"]) >= sent for r in stayers.stats()["robots"].values()),
                timeout=10,
            )
            for robot in stayers.stats()["robots"].values():
                assert robot["received"] == list(range(sent))

            # draining: handshakes refused with 503 + Retry-After, /healthz 503 draining
            with pytest.raises(InvalidStatus) as refused:
                await connect(f"{a.ws_url}/ws/late")
            assert refused.value.response.status_code == 503
            assert refused.value.response.headers["Retry-After"] == "5"
            http = a.ws_url.replace("ws://", "http://")
            status, body, _ = await asyncio.to_thread(_http, f"{http}/healthz")
            assert (status, body.strip()) == (503, "draining")
            listing = await ainvoke(["list", "instances", "-o", "json"], backend.env)
            rows = {r["instance_id"]: r for r in json.loads(listing.out)}
            assert rows["gw-a"]["draining"] is True and rows["gw-b"]["draining"] is False
            # the event log says what happened (events reach Redis in batches: wait for it)
            names: list[str] = []

            async def logged() -> bool:
                nonlocal names
                history = await ainvoke(["history", "m-0", "-o", "json"], backend.env)
                names = [e["event"] for e in json.loads(history.out or "[]")]
                return names.count("connected") == 2

            await wait_for(logged, timeout=10, interval=0.2)
            assert names[:3] == ["connected", "drained", "disconnected"], names

            # undrain reopens it
            res = await ainvoke(["undrain", "gw-a"], backend.env)
            assert res.code == 0 and "accepts robots again" in res.out
            assert not a.core.draining
            async with connect(f"{a.ws_url}/ws/late"):
                await wait_for(lambda: a.local.get("late") is not None)
            status, _, _ = await asyncio.to_thread(_http, f"{http}/healthz")
            assert status == 200
            await wait_for(lambda: a.local.get("late") is None)

            # drained again, then stopped (what SIGTERM does): the moved robots lose nothing
            res = await ainvoke(["drain", "gw-a", "--timeout", "5"], backend.env)
            assert res.code == 0, res.err
            await a.stop()
            listing = await ainvoke(["list", "connections", "-o", "json"], backend.env)
            owners = {r["robot_id"]: r["instance_id"] for r in json.loads(listing.out)}
            assert all(owners.get(f"m-{i}") in ("gw-b", "gw-c") for i in range(30)), owners
            assert movers.open_count() == 30 and stayers.open_count() == 10
        finally:
            await movers.close_all()
            await stayers.close_all()


async def test_robots_that_do_not_come_back_are_listed_and_exit_1(single: Backend) -> None:
    async with running_fleet(single.env, names=("gw-a", "gw-b")) as fleet:
        a = fleet["gw-a"]
        stubborn = RobotSwarm("no-reconnect")  # robots that never reconnect
        try:
            await stubborn.connect([(f"st-{i}", a.ws_url) for i in range(3)], 0)
            await wait_for(lambda: len(a.local) == 3)
            res = await ainvoke(
                ["drain", "gw-a", "--batch", "2", "--interval", "0", "--timeout", "1"],
                single.env,
            )
            assert res.code == 1, res.err
            assert "0 of 3 robot(s) moved" in res.out and "not back: st-0 st-1 st-2" in res.out
            codes = {r["close_code"] for r in stubborn.stats()["robots"].values()}
            assert codes == {1012}
        finally:
            await stubborn.close_all()


async def test_send_after_a_real_drain_says_the_robot_is_moving(backend: Backend) -> None:
    """A real gateway's drain writes `drained`, then `disconnected` once the socket's close
    completes: `wsctl send` to the robot that did not come back still says it is moving."""
    async with running_fleet(backend.env, names=("gw-a", "gw-b")) as fleet:
        a = fleet["gw-a"]
        stubborn = RobotSwarm("moving-hint")  # never reconnects
        try:
            await stubborn.connect([("mh-1", a.ws_url)], 0)
            await wait_for(lambda: len(a.local) == 1)
            res = await ainvoke(
                ["drain", "gw-a", "--interval", "0", "--timeout", "0.5"], backend.env
            )
            assert res.code == 1 and "not back: mh-1" in res.out, (res.out, res.err)
            # the events reach Redis in batches: wait for the close's own event
            await wait_for(lambda: _last_event(a.core, "mh-1", "disconnected"), 10, 0.1)
            res = await ainvoke(["send", "mh-1", "hi"], backend.env)
            assert res.code == 4, (res.out, res.err)
            assert "robot is moving (instance gw-a drained it " in res.out, res.out
        finally:
            await stubborn.close_all()


async def _cli_process(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    """``wsctl ARGS`` as a process of its own (to run beside other commands)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wsctl",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )


async def _finish(proc: asyncio.subprocess.Process, timeout: float) -> tuple[int, str, str]:
    """Wait at most ``timeout`` seconds for ``proc``; kill it if it has not ended."""
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"the command did not end within {timeout:g}s") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_a_drain_cancelled_by_undrain_reports_moved_closed_and_never_closed(
    single: Backend,
) -> None:
    """`drain --batch 2 --interval 30` closes two robots at once, the next batch is due in
    30 s; an undrain meanwhile ends the drain command at once: cancelled, exit 1, the robots it
    never closed counted as such (not as "not back")."""
    async with running_fleet(single.env, names=("gw-a", "gw-b")) as fleet:
        a, b = fleet["gw-a"], fleet["gw-b"]
        movers = RobotSwarm("cancelled", reconnect=[a.ws_url, b.ws_url])
        drains: list[asyncio.subprocess.Process] = []
        try:
            await movers.connect([(f"cx-{i}", a.ws_url) for i in range(8)], 0)
            await wait_for(lambda: len(a.local) == 8, timeout=10)
            for fmt, held, moved in (("json", 8, 2), ("table", 6, 4)):
                drains.append(
                    await _cli_process(
                        single.env,
                        *("drain", "gw-a", "--batch", "2", "--interval", "30", "--timeout", "60"),
                        *("-o", fmt),
                    )
                )
                await wait_for(lambda n=moved: len(b.local) == n, timeout=15)  # batch 1 moved
                res = await ainvoke(["undrain", "gw-a"], single.env)
                assert res.code == 0, res.err
                code, out, err = await _finish(drains[-1], 20)
                assert code == 1, (out, err)
                if fmt == "json":
                    report = json.loads(out)
                    assert report["cancelled"] is True and report["instance_gone"] is None
                    assert (report["robots"], report["moved"]) == (held, 2), report
                    assert (report["not_back"], report["never_closed"]) == (0, held - 2), report
                    assert report["not_back_ids"] == [] and len(report["never_closed_ids"]) == 6
                else:
                    assert out.startswith("drain of gw-a cancelled after "), out
                    assert (
                        "2 of 6 robot(s) moved, 0 closed and not registered elsewhere, "
                        "4 never closed"
                    ) in out, out
                    assert "  never closed: 4 (still connected to gw-a;" in out, out
                    assert "not back" not in out and "can be stopped now" not in out, out
        finally:
            for proc in drains:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            await movers.close_all()


async def test_ctrl_c_of_a_started_drain_says_the_instance_goes_on_draining(
    single: Backend,
) -> None:
    """Ctrl-C of `wsctl drain` only stops following the drain: the instance goes on closing
    its robots in batches. It said `wsctl: interrupted` and nothing else, so the operator who
    meant to stop the drain never learnt that it went on, nor how to stop it."""
    import signal

    async with running_fleet(single.env, names=("gw-a", "gw-b")) as fleet:
        a, b = fleet["gw-a"], fleet["gw-b"]
        movers = RobotSwarm("interrupted", reconnect=[a.ws_url, b.ws_url])
        drain: asyncio.subprocess.Process | None = None
        try:
            await movers.connect([(f"ix-{i}", a.ws_url) for i in range(4)], 0)
            await wait_for(lambda: len(a.local) == 4, timeout=10)
            drain = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "wsctl", "drain", "gw-a"),
                *("--batch", "2", "--interval", "30", "--timeout", "60"),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, **single.env},
                # a suite started in the background inherits SIGINT ignored
                preexec_fn=default_sigint,
            )
            await wait_for(lambda: len(b.local) == 2, timeout=15)  # the first batch moved
            drain.send_signal(signal.SIGINT)
            code, out, err = await _finish(drain, 5)
            assert code == 130, (out, err)
            assert err == (
                "wsctl: error: interrupted; gw-a goes on draining (it refuses new robots and "
                "closes the rest in batches): wsctl undrain gw-a reopens it\n"
            )
            assert a.core.draining  # so it does
        finally:
            if drain is not None and drain.returncode is None:
                drain.kill()
                await drain.wait()
            await movers.close_all()


async def test_a_gateway_killed_mid_drain_is_reported_dead_and_not_listed_alive(
    single: Backend, tmp_path: Path
) -> None:
    """SIGKILL of a real gateway process while its drain is followed: the drain says the
    instance died (exit 1), not "it can be stopped now", and removes the liveness record the
    dead process left, so `list instances` does not show it alive and draining."""
    url = single.env["WSCTL_REDIS_URL"]
    gw_a = GatewayProcess(redis_url=url, instance_id="gw-a")
    gw_b = GatewayProcess(redis_url=url, instance_id="gw-b")
    movers: RobotSwarm | None = None
    drain: asyncio.subprocess.Process | None = None
    try:
        gw_a.start(tmp_path)
        gw_b.start(tmp_path)
        movers = RobotSwarm("killed", reconnect=[gw_a.url, gw_b.url])
        async with open_test_store(single) as store:
            robots = [f"kx-{i}" for i in range(6)]

            async def holds(instance: str, count: int) -> bool:
                owners = await store.owners(robots)
                return owners.count(instance) == count

            await movers.connect([(r, gw_a.url) for r in robots], 0)
            await wait_for(lambda: holds("gw-a", 6), timeout=10)
            drain = await _cli_process(
                single.env, "drain", "gw-a", "--batch", "2", "--interval", "30", "--timeout", "60"
            )
            await wait_for(lambda: holds("gw-b", 2), timeout=15)  # the first batch moved
            gw_a.kill()
            code, out, err = await _finish(drain, 20)
            assert code == 1, (out, err)
            assert out.startswith("drain of gw-a failed after "), out
            assert "the instance died during the drain" in out and "removed" in out, out
            assert "can be stopped now" not in out, out
            assert await store.client.exists(Keyspace().instance_key("gw-a")) == 0
            listing = await ainvoke(["list", "instances", "-o", "json"], single.env)
            rows = {r["instance_id"]: r for r in json.loads(listing.out)}
            if "gw-a" in rows:  # only seen in entries not yet replaced by the robots
                assert rows["gw-a"]["liveness"] != "alive" and not rows["gw-a"]["draining"]
    finally:
        if drain is not None and drain.returncode is None:
            drain.kill()
            await drain.wait()
        if movers is not None:
            await movers.close_all()
        gw_a.stop()
        gw_b.stop()


async def test_demo_robots_refused_by_a_draining_gateway_connect_to_the_next(
    single: Backend,
) -> None:
    """The sandbox's demo robots do what the docs tell robot authors: a 503 at the handshake
    (a draining gateway) sends the robot to the next gateway, after a jittered backoff; a
    drain's 1012 close too. (They used to retry the same URL for ever.)"""
    async with running_fleet(single.env, names=("gw-a", "gw-b")) as fleet:
        a, b = fleet["gw-a"], fleet["gw-b"]
        await a.core.drainer.handle(Envelope(op=Op.DRAIN, message='{"batch": 10, "interval": 0}'))
        demo = DemoRobots([a.ws_url, b.ws_url], 4)  # robot-1 and robot-3 start on gw-a
        await asyncio.to_thread(demo.start, 15.0)
        try:
            assert len(a.local) == 0 and len(b.local) == 4
            await b.core.drainer.handle(Envelope(op=Op.UNDRAIN))
            await a.core.drainer.handle(Envelope(op=Op.UNDRAIN))
            res = await ainvoke(["drain", "gw-b", "--timeout", "10", "-o", "json"], single.env)
            assert res.code == 0, res.out + res.err
            report = json.loads(res.out)
            assert report["moved"] == 4 and {m["instance_id"] for m in report["moved_to"]} == {
                "gw-a"
            }
        finally:
            await asyncio.to_thread(demo.stop)


async def test_simulated_robots_follow_a_drain_but_not_a_kick_without_reconnect(
    single: Backend,
) -> None:
    """simulate's robots (without --reconnect) move to the next gateway on a drain's 1012,
    as every robot should; other closes (a kick's 4002) end them, as before."""
    async with running_fleet(single.env, names=("gw-a", "gw-b")) as fleet:
        a, b = fleet["gw-a"], fleet["gw-b"]
        swarm = RobotSwarm("follow", reconnect=[a.ws_url, b.ws_url], reconnect_any_close=False)
        try:
            await swarm.connect([(f"fw-{i}", a.ws_url) for i in range(3)], 0)
            await wait_for(lambda: len(a.local) == 3)
            res = await ainvoke(["kick", "fw-0", "--reason", "bye"], single.env)
            assert res.code == 0, res.out + res.err
            res = await ainvoke(["drain", "gw-a", "--interval", "0", "--timeout", "10"], single.env)
            assert res.code == 0 and "2 of 2 robot(s) moved" in res.out, res.out + res.err
            stats = swarm.stats()
            assert stats["reconnects"] == 2 and len(b.local) == 2
            assert stats["robots"]["fw-0"]["close_code"] == 4002
            assert not stats["robots"]["fw-0"]["open"]
        finally:
            await swarm.close_all()


async def test_dry_run_says_what_would_happen_and_changes_nothing(single: Backend) -> None:
    async with running_fleet(single.env, names=("gw-a",)) as fleet:
        a = fleet["gw-a"]
        async with connect(f"{a.ws_url}/ws/r1"), connect(f"{a.ws_url}/ws/r2"):
            await wait_for(lambda: len(a.local) == 2)
            res = await ainvoke(["drain", "gw-a", "--dry-run", "--batch", "1"], single.env)
            assert res.code == 0, res.err
            assert "would drain gw-a" in res.out and "close 2 robot(s)" in res.out
            assert "2 batch(es)" in res.out
            assert not a.core.draining and len(a.local) == 2


async def test_unknown_and_non_listening_instances_exit_4_and_5(single: Backend) -> None:
    res = await ainvoke(["drain", "gw-nowhere"], single.env)
    assert res.code == 4 and "unknown instance" in res.err and res.err.count("\n") == 1
    res = await ainvoke(["undrain", "gw-nowhere"], single.env)
    assert res.code == 4
    from wsctl.config import load_settings
    from wsctl.redis.factory import connect as redis_connect
    from wsctl.redis.factory import target_from_settings

    async with redis_connect(target_from_settings(load_settings(env=single.env))) as client:
        await write_record(client, Keyspace(), InstanceRecord("gw-deaf"), ttl=30)
    res = await ainvoke(["drain", "gw-deaf"], single.env)
    assert res.code == 5 and "not listening" in res.err and res.err.count("\n") == 1
    assert "nothing to drain through it" in res.err
    res = await ainvoke(["undrain", "gw-deaf"], single.env)
    assert res.code == 5 and res.err.count("\n") == 1, res.err
    assert "not listening" in res.err and "it cannot be undrained" in res.err, res.err
    assert "drain through" not in res.err
    res = await ainvoke(["drain", "gw-a", "--batch", "0"], single.env)
    assert res.code == 2


async def test_a_bad_drain_envelope_is_rejected_and_changes_nothing(single: Backend) -> None:
    from wsctl.protocol.envelopes import Envelope, Op, Status
    from wsctl.protocol.rpc import request

    async with running_fleet(single.env, names=("gw-a",)) as fleet:
        a = fleet["gw-a"]
        for message in ("[1]", '{"batch": 0}', '{"interval": -1}', "nope"):
            reply = await request(
                a.client, Keyspace(), "gw-a", Envelope(op=Op.DRAIN, message=message), 5
            )
            assert reply is not None and reply.status is Status.REJECTED, message
        assert not a.core.draining


async def test_a_fastapi_instance_drains_like_a_wsctl_gateway(
    single: Backend, tmp_path: Path
) -> None:
    from tests.fastapi_fleet import fastapi_gateways

    with fastapi_gateways(single, tmp_path, names=("fa-a",)) as (fa,):
        async with running_fleet(single.env, names=("gw-b",)) as fleet:
            movers = RobotSwarm("fa-drain", reconnect=[fa.ws_url, fleet["gw-b"].ws_url])
            try:
                await movers.connect([(f"fm-{i}", fa.ws_url) for i in range(5)], 0)
                res = await ainvoke(
                    ["drain", "fa-a", "--batch", "2", "--interval", "0.1", "--timeout", "15"],
                    single.env,
                )
                assert res.code == 0, res.out + res.err
                assert "5 of 5 robot(s) moved" in res.out and "moved to gw-b: 5" in res.out
                with pytest.raises(InvalidStatus) as refused:
                    await connect(f"{fa.ws_url}/ws/late")
                assert refused.value.response.status_code == 503
                assert refused.value.response.headers["Retry-After"] == "5"
                assert fa.get("/healthz") == (503, "draining\n")
                first: list[dict[str, object]] = []

                async def logged() -> bool:
                    nonlocal first
                    history = await ainvoke(["history", "fm-0", "-o", "json"], single.env)
                    first = json.loads(history.out or "[]")[:3]
                    return len(first) == 3

                await wait_for(logged, timeout=10, interval=0.2)
                assert [e["event"] for e in first] == ["connected", "drained", "disconnected"]
                assert first[2]["detail"]["code"] == 1012  # type: ignore[index]
                res = await ainvoke(["undrain", "fa-a"], single.env)
                assert res.code == 0 and fa.get("/healthz")[0] == 200
            finally:
                await movers.close_all()


async def test_a_session_that_slipped_in_during_the_drain_is_closed_too(single: Backend) -> None:
    from tests.integration.test_gateway_core import FakeSocket, running_core
    from wsctl.protocol.envelopes import Envelope, Op

    async with running_core(single.env) as core:
        early = [FakeSocket(), FakeSocket()]
        for n, sock in enumerate(early):
            await core.open_session(f"early-{n}", sock)
        await core.drainer.handle(Envelope(op=Op.DRAIN, message='{"batch": 1, "interval": 0.3}'))
        assert core.draining
        # a handshake accepted just before the draining state was set registers now
        late = FakeSocket()
        await core.open_session("late", late)
        await wait_for(lambda: len(core.local) == 0, timeout=10)
        for sock in [*early, late]:
            assert sock.closed_with is not None and sock.closed_with[0] == 1012


@pytest.mark.parametrize("interrupt", ["undrain", "drain-again"])
async def test_an_undrain_mid_batch_leaves_no_entry_for_a_closed_socket(
    backend: Backend, interrupt: str
) -> None:
    """The batch's deletes are held at the store while the undrain (or a second drain, which
    restarts the batches) arrives: every socket the batch closed loses its entry all the same,
    and the robots it had not reached keep theirs."""
    from tests.conftest import open_test_store
    from tests.integration.test_gateway_core import FakeSocket, Gate, running_core
    from wsctl.protocol.envelopes import Envelope, Op

    async with running_core(backend.env) as core, open_test_store(backend) as store:
        socks = {f"mid-{n}": FakeSocket() for n in range(4)}
        for robot_id, sock in socks.items():
            await core.open_session(robot_id, sock)
        gate = Gate(core)
        try:
            await core.drainer.handle(Envelope(op=Op.DRAIN, message='{"batch": 2, "interval": 30}'))
            await gate.settle()
            assert [c.name for c in gate.pending] == ["delete_if", "delete_if"]
            if interrupt == "undrain":
                await core.drainer.handle(Envelope(op=Op.UNDRAIN))
                assert not core.draining and not core.drainer.running
            else:
                await core.drainer.handle(
                    Envelope(op=Op.DRAIN, message='{"batch": 10, "interval": 30}')
                )
            await gate.drive((0,), [], core)
        finally:
            gate.restore(core)
        if interrupt == "drain-again":  # the second drain closes all four, in one batch
            await wait_for(lambda: all(s.closed_with is not None for s in socks.values()), 10)
        closed = [r for r, s in socks.items() if s.closed_with is not None]
        assert closed and all(socks[r].closed_with == (1012, DRAIN_REASON) for r in closed)
        for robot_id in socks:
            entry = await store.get(robot_id)
            if robot_id in closed:
                assert entry is None, f"{robot_id}: entry left for a closed socket"
                assert core.local.get(robot_id) is None
            else:
                assert entry is not None and core.local.get(robot_id) is not None
        assert core.cleanup_pending == 0
        if interrupt == "undrain":
            assert len(closed) == 2


async def test_a_message_for_a_robot_being_drained_says_it_is_moving(backend: Backend) -> None:
    """Nothing buffers a message for a robot while it moves: the not_connected answer says
    why, both to the instance's own ``send`` and to ``wsctl send`` forwarded there (an entry
    that still names the draining instance); a robot it never held gets the plain answer."""
    from tests.conftest import open_test_store
    from tests.integration.test_gateway_core import FakeSocket, running_core
    from wsctl.gateway.core import SendOutcome
    from wsctl.protocol.envelopes import Envelope, Op

    async with running_core(backend.env, name="gw-mv") as core, open_test_store(backend) as store:
        sock = FakeSocket()
        await core.open_session("mv-1", sock)
        await core.drainer.handle(Envelope(op=Op.DRAIN, message='{"batch": 10, "interval": 1}'))
        await wait_for(lambda: sock.closed_with is not None and len(core.local) == 0, 10)
        await wait_for(lambda: _gone(store, "mv-1"), 10)

        direct = await core.send("mv-1", "hello")
        assert direct.outcome is SendOutcome.NOT_CONNECTED
        assert direct.reason == "robot is moving: instance gw-mv is draining; retry", direct
        other = await core.send("never-here", "hello")
        assert other.outcome is SendOutcome.NOT_CONNECTED
        assert "moving" not in (other.reason or "")

        # wsctl send once the entry is gone: not registered, and the robot's last event says
        # why (the drained event reaches Redis within the event writer's flush interval)
        await wait_for(lambda: _last_event(store, "mv-1", "drained"), 10)
        res = await ainvoke(["send", "mv-1", "hello"], backend.env)
        assert res.code == 4, (res.out, res.err)
        assert "robot is moving (instance gw-mv drained it " in res.out, res.out
        unknown = await ainvoke(["send", "never-here", "hello"], backend.env)
        assert unknown.code == 4 and "moving" not in unknown.out

        # the message got to the instance while the registry still named it
        await store.client.hset(
            Keyspace().conn_key("mv-1"), mapping={"instance_id": "gw-mv", "conn_id": "old"}
        )
        res = await ainvoke(["send", "mv-1", "hello"], backend.env)
        assert res.code == 1, (res.out, res.err)
        assert res.out.strip() == (
            "owner gw-mv -> mv-1: not connected "
            "(robot is moving: instance gw-mv is draining; retry)"
        ), res.out
        await core.drainer.handle(Envelope(op=Op.UNDRAIN))
        after = await core.send("mv-1", "hello")
        assert (after.reason or "").startswith("robot is moving: instance gw-mv drained it ")


async def _gone(store: object, robot_id: str) -> bool:
    return await store.get(robot_id) is None  # type: ignore[attr-defined]


async def _last_event(store: object, robot_id: str, name: str) -> bool:
    page = await store.client.xrevrange(  # type: ignore[attr-defined]
        Keyspace().robot_events_key(robot_id), "+", "-", count=1
    )
    return bool(page) and page[0][1].get("event") == name
