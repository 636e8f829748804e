"""`wsctl doctor` with two real gateways and planted faults, on single node and cluster."""

from __future__ import annotations

import json
import uuid

import pytest
from websockets.asyncio.client import connect

from tests.conftest import Backend, ainvoke, open_test_store
from tests.fleet import running_fleet, wait_for
from tests.seedlike import seed_hash, seed_store_connection
from wsctl.registry.instances import InstanceRecord, write_record
from wsctl.registry.model import format_ts, utcnow


@pytest.fixture(autouse=True)
def _no_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    """Faults planted a moment ago count as faults (production waits 3 s for in-flight)."""
    monkeypatch.setattr("wsctl.ops.doctor.diagnose.GRACE_S", -1.0)


def kinds(report: dict) -> dict[str, set[str | None]]:  # type: ignore[type-arg]
    out: dict[str, set[str | None]] = {}
    for f in report["findings"]:
        out.setdefault(f["kind"], set()).add(f["robot_id"] or f["instance_id"])
    return out


async def test_doctor_finds_each_planted_fault_and_fix_repairs_the_safe_ones(
    backend: Backend,
) -> None:
    # a long heartbeat interval so that the gateways do not heal the planted faults by themselves
    async with (
        running_fleet(backend.env, heartbeat_interval=60, timeout=120) as fleet,
        open_test_store(backend) as store,
    ):
        healthy = await ainvoke(["doctor"], env=backend.env)
        assert healthy.code == 0, healthy.out + healthy.err
        orphan = await connect(f"{fleet['gw-b'].ws_url}/ws/orphan")
        split = await connect(f"{fleet['gw-a'].ws_url}/ws/split")
        await wait_for(lambda: store.get("split"))
        await wait_for(lambda: store.get("orphan"))
        await store.client.delete("ws_conn:orphan")  # orphan: socket without entry
        await store.client.hset("ws_conn:split", "instance_id", "gw-b")  # split owner
        ghost = {**seed_hash("ghost", "gw-a", age_s=1), "conn_id": uuid.uuid4().hex}
        await store.client.hset("ws_conn:ghost", mapping=ghost)  # ghost: entry without socket
        await seed_store_connection(store.client, "dead-1", "gw-dead")  # dead owner:
        await store.client.hset("ws_conn:dead-1", "conn_id", "c-dead")  # a protocol gateway's
        future = {**seed_hash("skewed", "gw-a"), "last_heartbeat": "2099-01-01T00:00:00+00:00"}
        await store.client.hset("ws_conn:skewed", mapping=future)  # clock skew
        await store.client.set("ws_conn:junk", "x")  # malformed
        zombie = InstanceRecord("gw-zombie", last_seen=format_ts(utcnow()))
        await write_record(store.client, store.keys, zombie, ttl=60)  # alive, not listening

        res = await ainvoke(["doctor", "-o", "json"], env=backend.env)
        assert res.code == 1
        report = json.loads(res.out)
        found = kinds(report)
        assert found["ghost"] >= {"ghost"}
        assert found["orphan"] == {"orphan"}
        assert found["split_owner"] == {"split"}
        assert found["dead_owner"] == {"gw-dead"}
        assert found["clock_skew"] == {"skewed"}
        assert found["malformed"] == {"junk"}
        assert found["not_subscribed"] == {"gw-zombie"}
        assert {i["instance_id"] for i in report["instances"]} >= {"gw-a", "gw-b", "gw-dead"}

        dry = await ainvoke(["doctor", "--fix", "--dry-run", "-o", "json"], env=backend.env)
        assert {f["result"] for f in json.loads(dry.out)["fixed"]} == {
            "would remove",
            "would resync",
        }
        assert await store.client.exists("ws_conn:ghost") == 1

        res = await ainvoke(["doctor", "--fix", "-o", "json"], env=backend.env)
        fixed = {
            (f["kind"], f.get("robot_id") or f.get("instance_id")): f["result"]
            for f in json.loads(res.out)["fixed"]
        }
        assert fixed[("ghost", "ghost")] == "removed"
        assert fixed[("orphan", "gw-b")] == "re-registered 1"
        assert await store.client.exists("ws_conn:ghost") == 0
        entry = await store.get("orphan")
        assert entry is not None and entry.instance_id == "gw-b"
        # "split" was a ghost of gw-b (removed), so it is now an orphan of gw-a: a second pass
        after = kinds(json.loads((await ainvoke(["doctor", "-o", "json"], env=backend.env)).out))
        assert after["orphan"] == {"split"} and "ghost" not in after and "split_owner" not in after
        await ainvoke(["doctor", "--fix"], env=backend.env)
        final = kinds(json.loads((await ainvoke(["doctor", "-o", "json"], env=backend.env)).out))
        assert not {"orphan", "ghost", "split_owner"} & set(final)
        entry = await store.get("split")
        assert entry is not None and entry.instance_id == "gw-a"
        await orphan.close()
        await split.close()


async def test_doctor_robot_pings_through_the_owner(backend: Backend) -> None:
    async with running_fleet(backend.env) as fleet, open_test_store(backend) as store:
        async with connect(f"{fleet['gw-a'].ws_url}/ws/r-ok"):
            await wait_for(lambda: store.get("r-ok"))
            res = await ainvoke(["doctor", "r-ok", "-o", "json"], env=backend.env)
            assert res.code == 0, res.out
            report = json.loads(res.out)
            assert report["owner"] == "gw-a" and report["owner_holds_socket"]
            assert report["ping"]["ok"] and report["ping"]["robot_rtt_ms"] >= 0
        await seed_store_connection(store.client, "r-ghost", "gw-a")
        res = await ainvoke(["doctor", "r-ghost", "-o", "json"], env=backend.env)
        report = json.loads(res.out)
        assert res.code == 1 and not report["ping"]["ok"] and not report["owner_holds_socket"]
        res = await ainvoke(["doctor", "nobody"], env=backend.env)
        assert res.code == 1 and "no registry entry" in res.out


async def test_doctor_shows_cluster_topology_and_spread(backend: Backend) -> None:
    async with open_test_store(backend) as store:
        for i in range(60):
            await seed_store_connection(store.client, f"spread-{i}", "i")
    res = await ainvoke(["doctor", "-o", "json"], env=backend.env)
    report = json.loads(res.out)
    assert sum(report["keys_per_node"].values()) == 60
    if backend.name == "cluster":
        cluster = report["cluster"]
        assert len(cluster["primaries"]) == 3 and cluster["replica_count"] == 3
        assert cluster["uncovered_slots"] == 0 and len(report["keys_per_node"]) == 3
        assert all(len(p["replicas"]) == 1 for p in cluster["primaries"])
        table = await ainvoke(["doctor"], env=backend.env)
        assert "cluster: 3 primaries, 3 replicas, 0 uncovered slots" in table.out
        listing = await ainvoke(["list", "instances"], env=backend.env)
        assert "cluster: 3 primaries" in listing.out and listing.out.count("entries; replicas") == 3
    else:
        assert report["cluster"] is None


async def test_doctor_robot_suggests_fixes_scoped_to_that_robot(backend: Backend) -> None:
    """`doctor ROBOT` for one stale robot suggested a bare `wsctl reap --timeout 90` (the whole
    fleet); for an owner alive but not listening it suggested `reap --dead-instances`. Each fix
    now names only this robot's entry (this session), and running it removes only that."""
    import shlex

    async with open_test_store(backend) as store:
        for robot in ("stale-1", "stale-2"):
            await seed_store_connection(store.client, robot, "gw-x", age_s=600)
            await store.client.hset(f"ws_conn:{robot}", "conn_id", f"c-{robot}")
        await seed_store_connection(store.client, "zombie-robot", "gw-zombie")
        zombie = InstanceRecord("gw-zombie", last_seen=format_ts(utcnow()))
        await write_record(store.client, store.keys, zombie, ttl=60)  # alive, not listening

        res = await ainvoke(["doctor", "stale-1", "-o", "json"], env=backend.env)
        fixes = [f["fix"] for f in json.loads(res.out)["findings"] if f["fix"]]
        commands = [f for f in fixes if f.startswith("wsctl ")]
        assert commands and all("reap" not in f for f in fixes), fixes
        assert "wsctl registry rm stale-1 --if-conn-id c-stale-1" in commands
        res = await ainvoke([*shlex.split(commands[0])[1:], "--no-backup"], env=backend.env)
        assert res.code == 0, res
        assert await store.get("stale-1") is None and await store.get("stale-2") is not None

        res = await ainvoke(["doctor", "zombie-robot", "-o", "json"], env=backend.env)
        findings = json.loads(res.out)["findings"]
        assert "not_subscribed" in {f["kind"] for f in findings}
        assert not any("dead-instances" in (f["fix"] or "") for f in findings), findings
        assert not any("reap" in (f["fix"] or "").split() for f in findings), findings
