"""The reference gateway with real robots over WebSockets on 127.0.0.1 and real Redis."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import Backend, ainvoke, invoke, open_test_store
from tests.fleet import running_fleet, wait_for
from tests.seedlike import seed_store_connection
from wsctl.errors import UsageError
from wsctl.gateway.identity import instance_id_for, robot_token
from wsctl.gateway.server import Gateway, GatewayConfig
from wsctl.redis.target import Target


async def test_connect_registers_and_disconnect_removes_entry(backend: Backend) -> None:
    async with running_fleet(backend.env) as fleet, open_test_store(backend) as store:
        gw = fleet["gw-a"]
        async with connect(f"{gw.ws_url}/ws/robot-1"):
            await wait_for(lambda: store.get("robot-1"))
            entry = await store.get("robot-1")
            assert entry is not None and entry.instance_id == "gw-a" and entry.conn_id
            assert entry.fields["status"] == "connected" and not entry.problems
        await wait_for(lambda: _gone(store, "robot-1"))


async def _gone(store, robot_id: str) -> bool:  # type: ignore[no-untyped-def]
    return await store.get(robot_id) is None


async def test_reconnect_elsewhere_wins_and_old_socket_gets_4001(backend: Backend) -> None:
    async with running_fleet(backend.env) as fleet, open_test_store(backend) as store:
        old = await connect(f"{fleet['gw-a'].ws_url}/ws/r2")
        await wait_for(lambda: store.get("r2"))
        new = await connect(f"{fleet['gw-b'].ws_url}/ws/r2")
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(old.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
        await asyncio.sleep(0.7)  # heartbeats on both sides, gw-a's disconnect handled
        entry = await store.get("r2")
        assert entry is not None and entry.instance_id == "gw-b"
        await new.close()


async def test_same_instance_reconnect_supersedes_locally(backend: Backend) -> None:
    """Back-to-back reconnects to one instance: the newest session stays and is registered,
    even when the older session's registration is still in flight."""
    async with (
        running_fleet(backend.env, names=("gw-a",)) as fleet,
        open_test_store(backend) as store,
    ):
        for n in range(6):
            url = f"{fleet['gw-a'].ws_url}/ws/r3-{n}"
            old = await connect(url)
            new = await connect(url)
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(old.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
            await asyncio.sleep(0.4)  # at least one heartbeat batch
            current = fleet["gw-a"].local.get(f"r3-{n}")
            entry = await store.get(f"r3-{n}")
            assert current is not None and new.state.name == "OPEN"
            assert entry is not None and entry.conn_id == current.conn_id
            await new.close()


async def test_slow_older_registration_cannot_overtake_a_reconnect(single: Backend) -> None:
    """The older session's registry write is slow (a busy pooled connection): the newer
    session's write must still land last, or the heartbeat would close the newer session."""
    async with (
        running_fleet(single.env, names=("gw-a",)) as fleet,
        open_test_store(single) as store,
    ):
        gw = fleet["gw-a"]
        original = gw.store.register
        calls = 0

        async def slow_first(robot_id, mapping):  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += 1
            if calls == 1:
                await asyncio.sleep(0.3)
            return await original(robot_id, mapping)

        gw.store.register = slow_first  # type: ignore[method-assign]
        url = f"{gw.ws_url}/ws/slow"
        old = await connect(url)
        new = await connect(url)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(old.recv(), 5)
        await asyncio.sleep(1.0)  # heartbeats ran
        assert new.state.name == "OPEN"
        entry = await store.get("slow")
        assert entry is not None and entry.conn_id == gw.local.get("slow").conn_id  # type: ignore[union-attr]
        await new.close()


async def test_racing_connects_end_with_registry_on_the_surviving_socket(backend: Backend) -> None:
    """Simultaneous connects of one robot to two instances, many times: one session survives
    and the registry names exactly that session."""
    async with running_fleet(backend.env) as fleet, open_test_store(backend) as store:
        for round_no in range(5):
            rid = f"race-{round_no}"
            a, b = await asyncio.gather(
                connect(f"{fleet['gw-a'].ws_url}/ws/{rid}"),
                connect(f"{fleet['gw-b'].ws_url}/ws/{rid}"),
            )
            await asyncio.sleep(0.8)  # kicks delivered, heartbeats ran
            open_ = [name for name, ws in (("gw-a", a), ("gw-b", b)) if ws.state.name == "OPEN"]
            assert len(open_) == 1, open_
            entry = await store.get(rid)
            assert entry is not None and entry.instance_id == open_[0]
            assert entry.conn_id == fleet[open_[0]].local.get(rid).conn_id  # type: ignore[union-attr]
            await a.close()
            await b.close()


async def test_heartbeats_advance_and_missing_entries_are_reregistered(backend: Backend) -> None:
    async with running_fleet(backend.env) as fleet, open_test_store(backend) as store:
        async with connect(f"{fleet['gw-a'].ws_url}/ws/hb"):
            await wait_for(lambda: store.get("hb"))
            first = (await store.get("hb")).fields["last_heartbeat"]  # type: ignore[union-attr]
            await wait_for(lambda: _heartbeat_changed(store, "hb", first))
            await store.client.delete("ws_conn:hb")  # e.g. a Redis restart or a careless script
            await wait_for(lambda: fleet["gw-a"].metrics.reregistered >= 1)
            entry = await store.get("hb")
            assert entry is not None and entry.conn_id == fleet["gw-a"].local.get("hb").conn_id  # type: ignore[union-attr]


async def _heartbeat_changed(store, rid: str, before: str) -> bool:  # type: ignore[no-untyped-def]
    entry = await store.get(rid)
    return entry is not None and entry.fields["last_heartbeat"] != before


async def test_liveness_records_and_list_instances(backend: Backend) -> None:
    async with running_fleet(backend.env) as fleet:
        res = await ainvoke(["list", "instances", "-o", "json"], env=backend.env)
        rows = {r["instance_id"]: r for r in json.loads(res.out)}
        assert (
            rows["gw-a"]["liveness"] == "alive" and rows["gw-a"]["ws_url"] == fleet["gw-a"].ws_url
        )
    res = await ainvoke(["list", "instances", "-o", "json"], env=backend.env)
    assert json.loads(res.out) == []  # stop removed the liveness records


async def test_send_direct_and_via_another_instance(backend: Backend) -> None:
    async with running_fleet(backend.env) as fleet, open_test_store(backend) as store:
        async with connect(f"{fleet['gw-b'].ws_url}/ws/robot-17") as robot:
            await wait_for(lambda: store.get("robot-17"))
            res = await ainvoke(["send", "robot-17", "hello", "-o", "json"], env=backend.env)
            assert res.code == 0, res.out + res.err
            assert json.loads(res.out)["route"] == ["gw-b"]
            assert json.loads(res.out)["via"] is None  # a string or null, never a bool
            assert await asyncio.wait_for(robot.recv(), 5) == "hello"
            res = await ainvoke(
                ["send", "robot-17", "hi", "--via", "gw-b", "-o", "json"], env=backend.env
            )
            assert json.loads(res.out)["via"] == "gw-b"
            assert await asyncio.wait_for(robot.recv(), 5) == "hi"
            payload = '{"cmd": "ping", "n": 1}'
            res = await ainvoke(
                ["send", "robot-17", payload, "--json", "--via", "gw-a", "--trace"], env=backend.env
            )
            assert res.code == 0, res.out + res.err
            assert res.out.startswith("via gw-a -> owner gw-b -> robot-17: delivered in ")
            assert "gw-a" in res.out.splitlines()[1] and "gw-b" in res.out.splitlines()[2]
            assert await asyncio.wait_for(robot.recv(), 5) == payload
            assert fleet["gw-a"].metrics.messages_forwarded == 1


async def test_send_exit_codes_for_each_failure(backend: Backend) -> None:
    async with running_fleet(backend.env) as fleet, open_test_store(backend) as store:
        res = await ainvoke(["send", "nobody", "x"], env=backend.env)
        assert res.code == 4 and "not registered" in res.out
        await seed_store_connection(store.client, "orphan", "gw-gone")
        res = await ainvoke(["send", "orphan", "x"], env=backend.env)
        assert res.code == 5 and "instance unreachable" in res.out
        res = await ainvoke(["send", "orphan", "x", "--via", "gw-a", "-o", "json"], env=backend.env)
        assert res.code == 5 and json.loads(res.out)["answered_by"] == "gw-a"
        # a ghost: the registry names gw-b, which has no socket: cleaned, not connected
        await seed_store_connection(store.client, "ghost", "gw-b")
        res = await ainvoke(["send", "ghost", "x", "--via", "gw-a"], env=backend.env)
        assert res.code == 1 and "not connected" in res.out
        assert await store.get("ghost") is None
        res = await ainvoke(["send", "x", "y", "--file", "/nonexistent"], env=backend.env)
        assert res.code == 2
        res = await ainvoke(["send", "x", "{bad", "--json"], env=backend.env)
        assert res.code == 2 and "not valid JSON" in res.err
        assert fleet["gw-a"].metrics.messages_failed >= 1


async def test_oversized_message_is_rejected(backend: Backend) -> None:
    async with (
        running_fleet(backend.env, max_message_bytes=100) as fleet,
        open_test_store(backend) as store,
        connect(f"{fleet['gw-a'].ws_url}/ws/big"),
    ):
        await wait_for(lambda: store.get("big"))
        res = await ainvoke(["send", "big", "x" * 101], env=backend.env)
        assert res.code == 1 and "rejected" in res.out and "larger than 100" in res.out


async def test_send_times_out_with_exit_6_when_nobody_answers(single: Backend) -> None:
    """A listener that never replies (a stuck instance) makes send time out, exit 6."""
    async with open_test_store(single) as store:
        await seed_store_connection(store.client, "r", "mute")
        pubsub = store.client.pubsub()
        await pubsub.subscribe("ws_ctl:mute")
        res = await ainvoke(["send", "r", "x", "--timeout", "0.5"], env=single.env)
        await pubsub.aclose()
    assert res.code == 6 and "timeout" in res.out


async def test_auth_secret_requires_the_robot_token(single: Backend) -> None:
    async with running_fleet(single.env, names=("gw-a",), auth_secret="s3cret") as fleet:
        url = f"{fleet['gw-a'].ws_url}/ws/r1"
        with pytest.raises(InvalidStatus) as refused:
            await connect(url)
        assert refused.value.response.status_code == 401
        with pytest.raises(InvalidStatus):
            await connect(url + "?token=" + robot_token("wrong", "r1"))
        async with connect(url + "?token=" + robot_token("s3cret", "r1")):
            pass
        headers = {"Authorization": "Bearer " + robot_token("s3cret", "r1")}
        async with connect(url, additional_headers=headers):
            pass
    res = await ainvoke(["token", "r1", "--auth-secret", "s3cret"])
    assert res.out.strip() == robot_token("s3cret", "r1")


async def test_bad_paths_get_http_errors(single: Backend) -> None:
    async with running_fleet(single.env, names=("gw-a",)) as fleet:
        with pytest.raises(InvalidStatus) as info:
            await connect(f"{fleet['gw-a'].ws_url}/elsewhere")
        assert info.value.response.status_code == 404
        with pytest.raises(InvalidStatus) as info:
            await connect(f"{fleet['gw-a'].ws_url}/ws/")
        assert info.value.response.status_code == 400


async def test_healthz_and_metrics(single: Backend) -> None:
    async with running_fleet(single.env, names=("gw-a",)) as fleet:
        base = f"http://127.0.0.1:{fleet['gw-a'].port}"
        health = await asyncio.to_thread(_get, base + "/healthz")
        assert health == (200, "ok\n")
        status, body = await asyncio.to_thread(_get, base + "/metrics")
        assert status == 200 and 'wsctl_gateway_connections{instance_id="gw-a"} 0' in body
        assert "wsctl_gateway_messages_delivered_total" in body


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_stop_closes_robots_with_1001_and_removes_entries(backend: Backend) -> None:
    async with open_test_store(backend) as store:
        async with running_fleet(backend.env, names=("gw-a",)) as fleet:
            robots = [await connect(f"{fleet['gw-a'].ws_url}/ws/s{i}") for i in range(5)]
            await wait_for(lambda: _count(store, 5))
        for ws in robots:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert [e async for e in store.iter_entries()] == []


async def _count(store, n: int) -> bool:  # type: ignore[no-untyped-def]
    return len([e async for e in store.iter_entries()]) == n


def test_instance_id_follows_the_seed_rule() -> None:
    assert instance_id_for(8000, {"SERVER_INSTANCE_ID": "explicit"}) == "explicit"
    generated = instance_id_for(8000, {})
    assert len(generated) == 16 and int(generated, 16) >= 0


async def test_gateway_survives_a_redis_restart_and_reregisters(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from wsctl.sandbox.processes import free_port
    from wsctl.sandbox.redis_servers import RedisServer

    port = free_port()
    server = RedisServer(port=port).start()
    env = {"WSCTL_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    try:
        async with running_fleet(env, names=("gw-a",)) as fleet:
            async with connect(f"{fleet['gw-a'].ws_url}/ws/survivor") as robot:
                server.kill()
                await wait_for(lambda: not fleet["gw-a"].redis_ok, timeout=5)
                server = RedisServer(port=port).start()  # empty: everything was lost
                await wait_for(
                    lambda: fleet["gw-a"].redis_ok and fleet["gw-a"].subscribed, timeout=10
                )
                backend = Backend("single", env)
                async with open_test_store(backend) as store:
                    await wait_for(lambda: store.get("survivor"), timeout=5)
                    assert await store.client.exists("ws_inst:gw-a") == 1
                assert robot.state.name == "OPEN"
    finally:
        server.stop()


async def test_a_message_that_is_not_utf8_is_rejected_and_the_robot_stays_connected(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hostile repro: ``wsctl send robot-6 $'caf\\xe9'`` used to make the owner treat the encode
    error as a dead socket, drop the robot and delete its entry. Whoever publishes such an
    envelope (an older CLI, another language's gateway), directly or through a forwarding
    instance, gets ``rejected`` with the reason; the robot keeps its socket and its entry."""
    from wsctl.ops.send import send_message
    from wsctl.protocol import envelopes as protocol
    from wsctl.registry.keys import Keyspace

    # as a peer in another language would write them: JSON \\uXXXX escapes, ASCII on the wire
    monkeypatch.setattr(
        "wsctl.protocol.rpc.encode", lambda obj: json.dumps(json.loads(protocol.encode(obj)))
    )
    async with running_fleet(backend.env) as fleet, open_test_store(backend) as store:
        async with connect(f"{fleet['gw-b'].ws_url}/ws/robot-6") as robot:
            await wait_for(lambda: store.get("robot-6"))
            for text in ("caf\udce9", "ab\udcffcd", "\ud800"):
                for via in (None, "gw-a"):
                    outcome = await send_message(
                        store.client, Keyspace(), "robot-6", text, via=via, timeout=5
                    )
                    assert outcome.status == "rejected", (text, via, outcome)
                    assert outcome.reason == "message is not valid UTF-8 text"
            assert robot.state.name == "OPEN"
            assert fleet["gw-b"].local.get("robot-6") is not None
            assert await store.get("robot-6") is not None
            res = await ainvoke(["send", "robot-6", "café"], env=backend.env)
            assert res.code == 0, res.out + res.err
            assert await asyncio.wait_for(robot.recv(), 5) == "café"


async def test_send_refuses_text_that_is_not_utf8_from_every_source(
    single: Backend, tmp_path: Path
) -> None:
    """The CLI refuses non-UTF-8 text (exit 2) from the argument, stdin and --file, before it
    reaches any gateway; the robot stays connected."""
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    async with (
        running_fleet(single.env, names=("gw-a",)) as fleet,
        open_test_store(single) as store,
        connect(f"{fleet['gw-a'].ws_url}/ws/robot-5") as robot,
    ):
        await wait_for(lambda: store.get("robot-5"))
        for args in (
            ["send", "robot-5", "caf\udce9"],
            ["send", "robot-5", "--file", str(binary)],
            ["send", "robot-5", "ab\udcffcd", "--json"],
        ):
            res = await ainvoke(args, env=single.env)
            assert res.code == 2, (args, res)
            assert "not valid UTF-8" in res.err and len(res.err.splitlines()) == 1
        assert fleet["gw-a"].metrics.messages_failed == 0
        assert robot.state.name == "OPEN" and await store.get("robot-5") is not None


def test_send_refuses_binary_stdin_as_a_process(single: Backend) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "wsctl", "send", "robot-5", "-"],
        input=b"ab\xffcd",
        capture_output=True,
        env={**os.environ, **single.env},
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert b"stdin is not valid UTF-8 text (byte 2)" in proc.stderr


def test_token_refuses_ids_and_secrets_that_are_not_utf8() -> None:
    res = invoke(["token", "r\udcff", "--auth-secret", "s"])
    assert res.code == 2 and "robot id is not valid UTF-8" in res.err, res
    res = invoke(["token", "r", "--auth-secret", "s\udcff3cret"])
    assert res.code == 2 and "--auth-secret is not valid UTF-8" in res.err
    assert "s3cret" not in res.err and "\udcff" not in res.err


def test_instance_ids_with_control_characters_or_not_utf8_are_refused() -> None:
    """Instance ids follow robot ids' rules, UTF-8 included (`--instance-id $'gw\\xff'` was
    accepted: argv bytes that are not UTF-8 arrive as surrogate escapes)."""
    for bad in ("gw\nINFO forged line", "gw\x1b[2J", "gw\x00", "x" * 300, "gw\udcff", "\udcfe"):
        res = invoke(["--redis-url", "redis://127.0.0.1:1/0", "gateway", "--instance-id", bad])
        assert res.code == 2 and "instance id" in res.err, (bad, res)
        assert len(res.err.splitlines()) == 1
        if "\x00" not in bad:  # an environment cannot hold NUL
            env = {"SERVER_INSTANCE_ID": bad}
            res = invoke(["--redis-url", "redis://127.0.0.1:1/0", "gateway"], env=env)
            assert res.code == 2 and "instance id" in res.err, (bad, res)
        with pytest.raises(UsageError):
            Gateway(GatewayConfig(instance_id=bad), Target(kind="tcp", port=1))
        with pytest.raises(UsageError):
            instance_id_for(8000, {"SERVER_INSTANCE_ID": bad})
