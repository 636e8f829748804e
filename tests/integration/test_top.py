"""`wsctl top` against real Redis (single node and the 3+3 cluster) and real gateways: the
counters in liveness records, `--once -o json|table`, what a refresh costs Redis, and a frozen
Redis (SIGSTOP) said, ridden out with the last data and recovered from."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from tests.conftest import Backend, ainvoke, open_test_store
from tests.faults import fill, frozen
from tests.fleet import running_fleet, wait_for
from tests.redis_counts import RedisCounts, primary_ports
from tests.robot_clients import registered, robots
from wsctl.registry.instances import InstanceRecord, write_record
from wsctl.registry.keys import Keyspace

ONCE = ["top", "--once", "--interval", "1", "--timeout", "5"]


async def _record(store: Any, name: str) -> InstanceRecord | None:
    return await store.instance_record(name)


async def test_a_gateway_writes_its_counters_in_its_liveness_record(backend: Backend) -> None:
    async with running_fleet(backend.env) as fleet, open_test_store(backend) as store:
        async with robots({"robot-1": fleet["gw-a"].ws_url}):
            await wait_for(lambda: registered(store, ["robot-1"]))
            result = await fleet["gw-b"].core.send("robot-1", "hello")  # through a non-owner
            assert result.delivered

            async def counted() -> bool:
                a, b = await _record(store, "gw-a"), await _record(store, "gw-b")
                return bool(
                    a
                    and b
                    and a.messages_delivered == 1
                    and b.messages_forwarded == 1
                    and a.connections_opened == 1
                )

            await wait_for(counted)
        await wait_for(lambda: _closed(store, "gw-a"))
        rec = await _record(store, "gw-a")
        assert rec is not None and rec.redis_up is True and rec.heartbeat_interval == 0.3
        assert rec.messages_failed == 0 and rec.redis_errors == 0 and rec.connections == 0


async def _closed(store: Any, name: str) -> bool:
    rec = await _record(store, name)
    return rec is not None and rec.connections_closed == 1


async def test_once_json_shows_instances_rates_registry_events_and_no_alert(
    backend: Backend,
) -> None:
    async with running_fleet(backend.env) as fleet, open_test_store(backend) as store:
        urls = {f"top-{n}": fleet["gw-a" if n % 2 else "gw-b"].ws_url for n in range(6)}
        async with robots(urls):
            await wait_for(lambda: registered(store, list(urls)))
            sender = asyncio.create_task(_keep_sending(fleet["gw-a"], list(urls), 3.0))
            res = await ainvoke([*ONCE, "-o", "json"], backend.env)
            await sender
        assert res.code == 0, res.err
        data = json.loads(res.out)
        assert list(data) == ["at", "redis", "alerts", "instances", "registry", "events"]
        assert data["redis"]["ok"] and data["alerts"] == []
        rows = {r["instance_id"]: r for r in data["instances"]}
        assert set(rows) == {"gw-a", "gw-b"}
        a = rows["gw-a"]
        assert a["level"] == 2 and a["liveness"] == "alive" and a["listening"] is True
        assert a["robots"] == 3 and a["robots_from"] == "record" and a["redis_up"] is True
        assert a["entries"] == {"total": 3, "fresh": 3, "stale": 0, "malformed": 0}
        assert a["rates"] is not None and a["rates"]["delivered_per_s"] > 0, a
        assert set(a["rates"]) == {
            "window_s",
            "delivered_per_s",
            "forwarded_per_s",
            "failed_per_s",
            "connects_per_s",
            "disconnects_per_s",
            "redis_errors_per_s",
        }
        reg = data["registry"]
        assert reg["complete"] and reg["entries"] == 6 and reg["fresh"] == 6
        assert reg["on_dead_instances"] == 0 and reg["heartbeat_age"]["count"] == 6
        assert {e["event"] for e in data["events"]} >= {"connected"}


async def _keep_sending(gw: Any, robot_ids: list[str], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for robot_id in robot_ids:
            await gw.core.send(robot_id, "tick")
        await asyncio.sleep(0.05)


async def test_once_shows_original_design_entries_as_level_0_without_rates(
    single: Backend,
) -> None:
    assert single.single is not None
    fill(single.single, 4, prefix="seed-robot-")  # instance gw-a, no conn_id, no record
    res = await ainvoke([*ONCE, "-o", "json"], single.env)
    assert res.code == 0, res.err
    (row,) = json.loads(res.out)["instances"]
    assert row["instance_id"] == "gw-a" and row["level"] == 0 and row["rates"] is None
    assert row["robots"] == 4 and row["robots_from"] == "registry"
    assert "rates unknown" in row["rates_note"]


async def test_once_alerts_on_an_alive_instance_that_does_not_listen_exit_1(
    single: Backend,
) -> None:
    async with open_test_store(single) as store:
        old = InstanceRecord("gw-deaf", connections=7, started_at="2026-01-01T00:00:00+00:00")
        now = InstanceRecord(**{**old.__dict__, "last_seen": _now()})
        await write_record(store.client, Keyspace(), now, ttl=30)
    res = await ainvoke([*ONCE, "-o", "json"], single.env)
    assert res.code == 1, res.err
    (alert,) = json.loads(res.out)["alerts"]
    assert alert["kind"] == "not_listening" and alert["instance_id"] == "gw-deaf"
    assert "holds 7 robots" in alert["message"]
    table = await ainvoke(ONCE, single.env)
    assert table.code == 1 and "ERROR: gw-deaf is not listening" in table.out, table.out
    assert "INSTANCE" in table.out and "registry: 0 entries" in table.out


def _now() -> str:
    from wsctl.registry.model import format_ts, utcnow

    return format_ts(utcnow())


async def test_once_table_shows_the_fleet_and_the_histogram(backend: Backend) -> None:
    async with running_fleet(backend.env) as fleet, open_test_store(backend) as store:
        async with robots({"tbl-1": fleet["gw-a"].ws_url}):
            await wait_for(lambda: registered(store, ["tbl-1"]))
            res = await ainvoke(ONCE, {**backend.env, "COLUMNS": "120"})
    assert res.code == 0, res.err
    assert "no alerts" in res.out and "gw-a" in res.out and "gw-b" in res.out
    assert "registry: 1 entry: 1 fresh" in res.out and "heartbeat age: p50" in res.out
    assert "connected" in res.out  # the events
    assert all(len(line) <= 120 for line in res.out.splitlines()), res.out


async def test_once_refuses_other_formats_and_json_without_once(single: Backend) -> None:
    res = await ainvoke(["top", "--once", "-o", "csv"], single.env)
    assert res.code == 2 and "table or json" in res.err
    res = await ainvoke(["top", "-o", "json"], single.env)
    assert res.code == 2 and "--once" in res.err


async def test_a_refresh_costs_the_same_redis_commands_for_20_or_2000_entries(
    single: Backend,
) -> None:
    """O(instances + new events): the foreground refresh never reads the registry; the
    registry scan is stepped separately and bounded per step."""
    from wsctl.ops.top_collector import Collector

    assert single.single is not None
    counts = RedisCounts(primary_ports(single))
    used = []
    try:
        # no heartbeat in the measured windows: the instances' records are written at start,
        # and their first beat would be an hour later (changing the interval of a running
        # loop took effect only after its next beat, which a busy machine could delay into
        # the window)
        async with running_fleet(single.env, heartbeat_interval=3600):
            for size in (20, 2000):
                fill(single.single, size, prefix=f"cost{size}-")
                async with open_test_store(single) as store:
                    collector = Collector(store.client, store.keys, timeout=5, describe=str)
                    await collector.refresh()  # the first reads the newest events
                    before = counts.read()
                    await collector.refresh()
                    after = counts.read()
                    await collector.close()
                used.append({k: after[k] - before[k] for k in after})
                # one scan step reads at most its count of keys, whatever the size
                step_before = counts.read()
                async with open_test_store(single) as store:
                    scan = Collector(
                        store.client, store.keys, timeout=5, describe=str, scan_count=100
                    ).scanner
                    await scan.step()
                step = counts.read()["commands"] - step_before["commands"]
                assert step <= 150, step
    finally:
        counts.close()
    assert used[0]["commands"] == used[1]["commands"], used


async def test_a_frozen_redis_is_said_within_the_request_timeout_and_recovered_from(
    single: Backend,
) -> None:
    from wsctl.config import load_settings
    from wsctl.ops.top_collector import Collector, redis_problem
    from wsctl.redis.factory import connect as redis_connect
    from wsctl.redis.factory import target_from_settings

    assert single.single is not None
    target = target_from_settings(load_settings(env=single.env))
    async with (
        running_fleet(single.env) as fleet,
        redis_connect(target, socket_timeout=1.0, retries=0) as client,
    ):
        collector = Collector(
            client, Keyspace(), timeout=5, describe=lambda exc: redis_problem(target, exc, 1.0)
        )
        await collector.scanner.full_pass()
        good = await collector.refresh()
        assert good.redis.ok and {r.instance_id for r in good.instances} == set(fleet)
        with frozen(single.single):
            started = time.monotonic()
            snap = await collector.refresh()
            took = time.monotonic() - started
            await asyncio.sleep(1.0)
            later = await collector.refresh()
        assert took < 2.0, took  # one request timeout (1 s), not three
        assert not snap.redis.ok and "is not answering" in (snap.redis.error or "")
        assert "within the request timeout, 1s" in (snap.redis.error or "")
        assert {r.instance_id for r in snap.instances} == set(fleet)  # the last data, kept
        alert = later.alerts[0]
        assert alert.kind.value == "redis_unreachable" and "showing data from" in alert.message
        assert later.as_dict()["redis"]["data_age_s"] >= 1.0
        recovered = None
        for _ in range(20):  # bounded: a few refreshes after SIGCONT
            recovered = await collector.refresh()
            if recovered.redis.ok:
                break
            await asyncio.sleep(0.2)
        assert recovered is not None and recovered.redis.ok and recovered.alerts == []
        await collector.close()


async def test_once_on_a_cluster_reads_listeners_on_every_node(backend: Backend) -> None:
    async with running_fleet(backend.env, names=("gw-a", "gw-b", "gw-c")) as fleet:
        res = await ainvoke([*ONCE, "-o", "json"], backend.env)
        assert res.code == 0, res.err
        rows = json.loads(res.out)["instances"]
        assert [r["instance_id"] for r in rows] == sorted(fleet)
        assert all(r["listening"] is True and r["liveness"] == "alive" for r in rows)


async def test_a_killed_gateway_is_named_as_not_listening_at_the_next_refresh(
    single: Backend, tmp_path: Path
) -> None:
    """A SIGKILLed gateway leaves its record (TTL = timeout) but its subscription goes with
    its connection: the next refresh says it stopped listening."""
    from wsctl.sandbox.gateways import GatewayProcess

    async with open_test_store(single) as store:
        proc = GatewayProcess(
            redis_url=single.env["WSCTL_REDIS_URL"],
            instance_id="gw-killed",
            heartbeat_interval=0.3,
            timeout=30,
        )
        try:
            await asyncio.to_thread(proc.start, tmp_path)
            await wait_for(lambda: store.is_listening("gw-killed"), timeout=20)
            async with connect(f"{proc.url}/ws/killed-robot"):
                await wait_for(lambda: registered(store, ["killed-robot"]))
                await asyncio.sleep(3.2)  # past the start-up grace
                proc.kill()
                await wait_for(lambda: _not_listening(store, "gw-killed"), timeout=10)
                res = await ainvoke([*ONCE, "-o", "json"], single.env)
        finally:
            proc.stop()
    assert res.code == 1, res.err
    kinds = {(a["kind"], a["instance_id"]) for a in json.loads(res.out)["alerts"]}
    assert ("not_listening", "gw-killed") in kinds


async def _not_listening(store: Any, name: str) -> bool:
    return not await store.is_listening(name)


async def test_once_over_tls_and_from_a_config_context(tls: Any, tmp_path: Path) -> None:
    """The same settings as every command: TLS (a private CA) and a named context."""
    from tests.conftest import TlsSingle

    assert isinstance(tls, TlsSingle)
    plain = Backend("single", {"WSCTL_REDIS_URL": tls.server.url}, single=tls.server)
    async with running_fleet(plain.env, names=("gw-tls",)):
        res = await ainvoke([*ONCE, "-o", "json"], tls.env())
        assert res.code == 0, res.err
        assert [r["instance_id"] for r in json.loads(res.out)["instances"]] == ["gw-tls"]
        config = tmp_path / "wsctl.toml"
        config.write_text(
            f'[contexts.tls-ctx]\nredis_url = "rediss://localhost:{tls.port}/0"\n'
            f'tls_ca_cert = "{tls.pki.ca}"\n',  # type: ignore[attr-defined]
            encoding="utf-8",
        )
        res = await ainvoke(["--config", str(config), "--context", "tls-ctx", *ONCE, "-o", "json"])
        assert res.code == 0, res.err
        assert json.loads(res.out)["redis"]["ok"] is True


async def test_once_table_at_80_columns_leaves_out_the_last_instance_columns(
    single: Backend,
) -> None:
    from wsctl.registry.model import format_ts, utcnow

    async with open_test_store(single) as store:
        now = utcnow()
        rec = InstanceRecord(
            "gw-narrow",
            last_seen=format_ts(now),
            started_at=format_ts(now.replace(year=now.year - 1)),
            version="1.2.3",
            connections=4,
        )
        await write_record(store.client, store.keys, rec, 600)
        quick = ["top", "--once", "--interval", "0.1", "--timeout", "5"]
        res = await ainvoke(quick, {**single.env, "COLUMNS": "80"})
        wide = await ainvoke(quick, {**single.env, "COLUMNS": "200"})
    assert res.code == 1, res.err  # nobody listens for gw-narrow: an error alert
    lines = res.out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("INSTANCE"))
    table = lines[header : header + 3]
    assert all(len(line) <= 80 for line in table), table
    assert table[0].split()[:5] == ["INSTANCE", "LVL", "STATE", "AGE", "ROBOTS"]
    assert "VERSION" not in table[0] and "VERSION" in wide.out  # left out, not wrapped
