"""The fleet event log end to end: real gateways on 127.0.0.1 write it through the core, real
Redis (single node and a 3+3 cluster) holds it, ``wsctl events`` / ``history`` read it."""

from __future__ import annotations

import asyncio
import json
import signal

from websockets.asyncio.client import connect

from tests.conftest import Backend, ainvoke, wsctl_process
from tests.fleet import running_fleet, wait_for
from wsctl.eventlog.model import Event, EventLimits
from wsctl.registry.keys import Keyspace


def _jsonl(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def _history(backend: Backend, robot: str, *extra: str) -> list[dict[str, object]]:
    res = await ainvoke(["history", robot, "-o", "jsonl", *extra], backend.env)
    assert res.code == 0, res.err
    return _jsonl(res.out)


async def test_a_session_leaves_connected_and_disconnected_with_code_and_length(
    backend: Backend,
) -> None:
    async with running_fleet(backend.env, names=("gw-a",)) as fleet:
        gw = fleet["gw-a"]
        async with connect(f"{gw.ws_url}/ws/robot-1") as ws:
            await wait_for(lambda: gw.local.get("robot-1") is not None)
            await asyncio.sleep(0.05)
            await ws.close(4321, "bye")
        await wait_for(lambda: gw.local.get("robot-1") is None)

        async def both() -> bool:
            res = await ainvoke(["history", "robot-1", "-o", "jsonl"], backend.env)
            return res.code == 0 and len(_jsonl(res.out)) >= 2

        await wait_for(both, timeout=10, interval=0.2)
    rows = await _history(backend, "robot-1")
    assert [r["event"] for r in rows] == ["connected", "disconnected"]
    connected, disconnected = rows
    assert connected["instance_id"] == "gw-a" and connected["conn_id"]
    assert disconnected["conn_id"] == connected["conn_id"]
    detail = disconnected["detail"]
    assert isinstance(detail, dict) and detail["code"] == 4321 and detail["reason"] == "bye"
    assert detail["session_s"] >= 0.05
    assert str(connected["at"]).endswith("+00:00")


async def test_the_close_a_core_sent_fills_in_what_the_transport_does_not_report(
    single: Backend,
) -> None:
    """An ASGI server may report a close the instance made as 1005 (no status) without a
    reason: the disconnected event still says the code and reason the instance sent."""
    from tests.integration.test_gateway_core import FakeSocket, running_core
    from wsctl.gateway.drain import DRAIN_CLOSE_REASON
    from wsctl.protocol.envelopes import Envelope, Op

    async with running_core(single.env, name="gw-t") as core:
        sock = FakeSocket()
        conn = await core.open_session("t-1", sock)
        await core.drainer.handle(Envelope(op=Op.DRAIN, message='{"batch": 1, "interval": 0}'))
        await wait_for(lambda: sock.closed_with is not None, timeout=10)
        await core.close_session(conn, 1005, None)  # what the transport reports then

        async def closed() -> bool:
            res = await ainvoke(["history", "t-1", "-o", "jsonl"], single.env)
            return any(r["event"] == "disconnected" for r in _jsonl(res.out))

        await wait_for(closed, timeout=10, interval=0.2)
    rows = await _history(single, "t-1")
    detail = next(r["detail"] for r in rows if r["event"] == "disconnected")
    assert detail["code"] == 1012 and detail["reason"] == DRAIN_CLOSE_REASON, detail  # type: ignore[index]


async def test_events_merges_instances_by_time_and_filters(backend: Backend) -> None:
    async with running_fleet(backend.env, names=("gw-a", "gw-b")) as fleet:
        urls = [fleet["gw-a"].ws_url, fleet["gw-b"].ws_url]
        for i in range(6):
            async with connect(f"{urls[i % 2]}/ws/bot-{i}"):
                await wait_for(lambda i=i: fleet[("gw-a", "gw-b")[i % 2]].local.get(f"bot-{i}"))

        async def all_written() -> bool:
            res = await ainvoke(["events", "-o", "jsonl"], backend.env)
            return len(_jsonl(res.out)) >= 12

        await wait_for(all_written, timeout=10, interval=0.2)
    res = await ainvoke(["events", "-o", "jsonl"], backend.env)
    rows = _jsonl(res.out)
    ats = [str(r["at"]) for r in rows]
    assert ats == sorted(ats)
    assert {r["instance_id"] for r in rows} == {"gw-a", "gw-b"}
    only_b = _jsonl(
        (await ainvoke(["events", "--instance", "gw-b", "-o", "jsonl"], backend.env)).out
    )
    assert only_b and {r["instance_id"] for r in only_b} == {"gw-b"}
    glob = _jsonl(
        (
            await ainvoke(
                ["events", "--robot", "bot-[12]", "--event", "connected", "-o", "jsonl"],
                backend.env,
            )
        ).out
    )
    assert sorted(str(r["robot_id"]) for r in glob) == ["bot-1", "bot-2"]
    newest = _jsonl((await ainvoke(["events", "--limit", "3", "-o", "jsonl"], backend.env)).out)
    assert newest == rows[-3:]
    recent = await ainvoke(["events", "--since", "10m", "-o", "jsonl"], backend.env)
    assert len(_jsonl(recent.out)) == len(rows)
    table = await ainvoke(["events"], backend.env)
    assert table.code == 0 and "EVENT" in table.out and "disconnected" in table.out


async def test_history_of_a_robot_without_events_exits_1_with_one_line(single: Backend) -> None:
    res = await ainvoke(["history", "nobody"], single.env)
    assert res.code == 1 and res.err.count("\n") == 1 and "no events" in res.err


async def test_bad_flags_get_one_line_and_exit_2(single: Backend) -> None:
    for args in (
        ["events", "--event", "exploded"],
        ["events", "--since", "yesterday"],
        ["events", "--for", "3"],
    ):
        res = await ainvoke(args, single.env)
        assert res.code == 2 and res.err.count("\n") == 1 and "Traceback" not in res.err, args


async def test_malformed_and_hostile_entries_are_listed_escaped_never_crash(
    single: Backend,
) -> None:
    import redis.asyncio as aredis

    keys = Keyspace()
    client = aredis.Redis(port=single.single.port, decode_responses=True)  # type: ignore[union-attr]
    try:
        stream = keys.events_key("evil")
        await client.sadd(keys.events_index, stream)
        await client.xadd(stream, {"junk": "1"})
        await client.xadd(
            stream,
            {
                "at": "2026-01-01T00:00:00+00:00",
                "event": "connected\x1b[31m",
                "robot_id": "r\x07",
                "detail": "not json",
            },
        )
        await client.xadd(stream, {"at": "yesterday", "event": "connected", "robot_id": "r2"})
        await client.set(keys.events_key("wrongtype"), "x")
        await client.sadd(keys.events_index, keys.events_key("wrongtype"))
    finally:
        await client.aclose()
    table = await ainvoke(["events", "-o", "wide"], single.env)
    assert table.code == 0, table.err
    assert "\x1b" not in table.out and "\x07" not in table.out
    assert "\\x1b" in table.out and "malformed" in table.err
    rows = _jsonl((await ainvoke(["events", "-o", "jsonl"], single.env)).out)
    assert len(rows) == 3 and all(r["problem"] for r in rows)


async def test_an_instance_stream_stays_capped(single: Backend) -> None:
    from wsctl.ops.events import record_events
    from wsctl.redis.factory import connect, target_from_settings

    settings = single.settings()
    keys = Keyspace()
    async with connect(target_from_settings(settings)) as client:  # type: ignore[arg-type]
        limits = EventLimits(instance_maxlen=500, robot_maxlen=20)
        events = [Event("set", robot_id=f"r{i % 3}") for i in range(5000)]
        outcome = await record_events(client, keys, events, limits, chunk=1000)
        assert outcome.written == 5000 and outcome.error is None
        assert 500 <= await client.xlen(keys.events_key("@cli")) < 1500
        assert 20 <= await client.xlen(keys.robot_events_key("r1")) < 200
        assert await client.ttl(keys.robot_events_key("r1")) > 0


async def test_a_redis_outage_drops_events_with_a_counter_and_never_blocks_robots(
    single: Backend,
) -> None:
    server = single.single
    assert server is not None and server.pid is not None
    async with running_fleet(single.env, names=("gw-a",), heartbeat_interval=30.0) as fleet:
        gw = fleet["gw-a"]
        gw.core.events.flush_interval = 0.05
        server_pid = server.pid
        import os

        os.kill(server_pid, signal.SIGSTOP)
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            socks = [await connect(f"{gw.ws_url}/ws/stalled-{i}") for i in range(5)]
            # handshakes are answered while Redis is frozen (registration retried later)
            took = loop.time() - started
            assert took < 15, took
            for ws in socks:
                await ws.close()
            sink = gw.core.events
            await wait_for(lambda: sink.dropped >= 1, timeout=60, interval=0.1)
        finally:
            os.kill(server_pid, signal.SIGCONT)
        assert "wsctl_gateway_events_dropped_total" in gw.core.metrics_text()


async def test_show_and_doctor_robot_end_with_the_robots_last_events(backend: Backend) -> None:
    async with running_fleet(backend.env, names=("gw-a",)) as fleet:
        gw = fleet["gw-a"]
        for _ in range(3):
            async with connect(f"{gw.ws_url}/ws/robot-7"):
                await wait_for(lambda: gw.local.get("robot-7") is not None)
            await wait_for(lambda: gw.local.get("robot-7") is None)
        async with connect(f"{gw.ws_url}/ws/robot-7"):
            await wait_for(lambda: gw.local.get("robot-7") is not None)

            async def seven() -> bool:
                res = await ainvoke(["history", "robot-7", "-o", "jsonl"], backend.env)
                return len(_jsonl(res.out)) >= 7

            await wait_for(seven, timeout=10, interval=0.2)
            shown = await ainvoke(["show", "robot-7"], backend.env)
            assert shown.code == 0, shown.err
            tail = shown.out.split("last events")[1].splitlines()[1:]
            assert len(tail) == 5 and "connected" in tail[-1] and "gw-a" in tail[-1]
            as_json = json.loads(
                (await ainvoke(["show", "robot-7", "-o", "json"], backend.env)).out
            )
            assert [e["event"] for e in as_json["last_events"]][-1] == "connected"
            doctor = await ainvoke(["doctor", "robot-7"], backend.env)
            assert doctor.out.rstrip().splitlines()[-1].startswith("  ")
            assert "last events" in doctor.out
            doc_json = json.loads(
                (await ainvoke(["doctor", "robot-7", "-o", "json"], backend.env)).out
            )
            assert len(doc_json["last_events"]) == 5
    gone = await ainvoke(["show", "robot-7"], backend.env)
    assert gone.code == 1 and "last event:" in gone.err and "disconnected" in gone.err


async def test_the_clis_own_writes_are_events_with_their_backup_paths(backend: Backend) -> None:
    env = backend.env
    for i in range(3):
        res = await ainvoke(["registry", "set", f"cli-{i}", "instance_id=gw-old", "--create"], env)
        assert res.code == 0, res.err
    res = await ainvoke(["registry", "rm", "cli-0", "--backup", "rm.jsonl"], env)
    assert res.code == 0, res.err
    await ainvoke(["registry", "set", "cli-1", "last_heartbeat=2020-01-01T00:00:00+00:00"], env)
    res = await ainvoke(["reap", "--timeout", "60", "--backup", "reap.jsonl"], env)
    assert res.code == 0, res.err
    res = await ainvoke(["registry", "restore", "reap.jsonl"], env)
    assert res.code == 0, res.err
    # --instance ID also finds what the CLI did to that instance's robots
    rows = _jsonl((await ainvoke(["events", "--instance", "gw-old", "-o", "jsonl"], env)).out)
    assert rows and {r["instance_id"] for r in rows} == {"gw-old"}
    assert {"set", "removed", "reaped"} <= {r["event"] for r in rows}
    every = _jsonl((await ainvoke(["events", "-o", "jsonl"], env)).out)
    history = [(r["event"], r["detail"]) for r in await _history(backend, "cli-1")]
    assert [h[0] for h in history] == ["set", "set", "reaped", "imported"]
    assert str(history[2][1]["backup"]).endswith("reap.jsonl")
    assert history[3][1]["file"] == "reap.jsonl" and history[3][1]["restore"] is True
    removed = [r for r in every if r["event"] == "removed"]
    assert removed and removed[0]["robot_id"] == "cli-0"
    assert removed[0]["instance_id"] == "gw-old"
    assert str(removed[0]["detail"]["backup"]).endswith("rm.jsonl")
    summary = [r for r in every if r["event"] == "reaped" and not r["robot_id"]]
    assert summary and summary[0]["detail"]["reaped"] == 1
    assert all(r["stream"] == "@cli" for r in every)


async def test_messages_that_cannot_be_delivered_leave_forward_failed(backend: Backend) -> None:
    from wsctl.protocol.batch import Batch, Item, encode_batch

    async with running_fleet(backend.env, names=("gw-a", "gw-b")) as fleet:
        res = await ainvoke(["send", "nobody", "hello", "--via", "gw-a"], backend.env)
        assert res.code == 1, res.err
        batch = Batch(items=(Item("0", "nobody-batched", "x"),), origin="test-batch")
        await fleet["gw-b"].client.publish("ws_ctl:gw-b", encode_batch(batch))

        async def both() -> bool:
            res = await ainvoke(["events", "--event", "forward_failed", "-o", "jsonl"], backend.env)
            return len(_jsonl(res.out)) >= 2

        await wait_for(both, timeout=10, interval=0.2)
    rows = _jsonl(
        (await ainvoke(["events", "--event", "forward_failed", "-o", "jsonl"], backend.env)).out
    )
    by_robot = {r["robot_id"]: r for r in rows}
    single = by_robot["nobody"]
    assert single["instance_id"] == "gw-a" and single["detail"]["status"] == "not_connected"
    batched = by_robot["nobody-batched"]
    assert batched["instance_id"] == "gw-b" and batched["detail"]["origin"] == "test-batch"


async def test_follow_prints_new_events_as_they_come_and_stops_after_for(
    backend: Backend,
) -> None:
    async with running_fleet(backend.env, names=("gw-a", "gw-b")) as fleet:
        async with connect(f"{fleet['gw-a'].ws_url}/ws/old-robot"):
            await wait_for(lambda: fleet["gw-a"].local.get("old-robot") is not None)
        follower = asyncio.create_task(
            ainvoke(
                ["events", "--follow", "--for", "8", "--robot", "new-*", "-o", "jsonl"],
                backend.env,
            )
        )
        await asyncio.sleep(3.0)  # the follower has started (a cluster client takes a moment)
        for name in ("gw-a", "gw-b"):
            async with connect(f"{fleet[name].ws_url}/ws/new-{name}"):
                await wait_for(lambda n=name: fleet[n].local.get(f"new-{n}") is not None)
        res = await asyncio.wait_for(follower, 30)
    assert res.code == 0, res.err
    rows = _jsonl(res.out)
    assert {(r["robot_id"], r["event"]) for r in rows} >= {
        ("new-gw-a", "connected"),
        ("new-gw-a", "disconnected"),
        ("new-gw-b", "connected"),
    }
    assert all(str(r["robot_id"]).startswith("new-") for r in rows)


def test_ctrl_c_ends_follow_cleanly_with_exit_0(single: Backend, tmp_path: object) -> None:
    import subprocess
    import time

    proc = wsctl_process(
        ["events", "--follow"], single.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        time.sleep(2.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


async def test_csv_output_has_the_detail_as_json_text(single: Backend) -> None:
    res = await ainvoke(["registry", "set", "csv-1", "instance_id=gw-x", "--create"], single.env)
    assert res.code == 0, res.err
    out = (await ainvoke(["history", "csv-1", "-o", "csv"], single.env)).out
    import csv
    import io

    (row,) = list(csv.DictReader(io.StringIO(out)))
    assert row["event"] == "set" and json.loads(row["detail"])["created"] is True
