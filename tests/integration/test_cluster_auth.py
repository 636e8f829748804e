"""A password-protected 3+3 cluster configured the seed's way (REDIS_USE_CLUSTER, REDIS_NODES,
REDIS_PASSWORD with URL metacharacters)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import invoke
from wsctl.sandbox.redis_servers import RedisClusterProcesses

pytestmark = pytest.mark.cluster

SECRET = "qv@Q:f/w&M#1"


@pytest.fixture(scope="module")
def locked_cluster():  # type: ignore[no-untyped-def]
    with RedisClusterProcesses(password=SECRET) as cluster:
        yield cluster


def test_seed_style_cluster_settings_with_password_work_end_to_end(locked_cluster) -> None:  # type: ignore[no-untyped-def]
    env = {
        "REDIS_USE_CLUSTER": "True",
        "REDIS_NODES": locked_cluster.startup,
        "REDIS_USERNAME": "default",
        "REDIS_PASSWORD": SECRET,
    }
    assert invoke(["registry", "set", "r1", "instance_id=gw", "--create"], env=env).code == 0
    shown = invoke(["show", "r1", "-o", "json"], env=env)
    assert shown.code == 0 and json.loads(shown.out)["instance_id"] == "gw"
    config = invoke(["config", "show", "-o", "json"], env=env)
    assert SECRET not in config.out + config.err


def test_wrong_cluster_password_is_exit_3_without_the_secret(locked_cluster) -> None:  # type: ignore[no-untyped-def]
    env = {
        "REDIS_USE_CLUSTER": "true",
        "REDIS_NODES": locked_cluster.startup,
        "REDIS_PASSWORD": "nope:" + SECRET,
    }
    res = invoke(["list", "robots"], env=env)
    assert res.code == 3 and SECRET not in res.err and "Traceback" not in res.err
    assert "authentication failed" in res.err
    assert len(res.err.strip().splitlines()) == 1


def test_uncovered_slots_list_the_rest_and_say_which_node_is_missing() -> None:
    """A primary without replica dies: its slots are uncovered. Commands still list and reap the
    entries of the other primaries, warn about the missing node, and doctor names the slots."""
    import time

    with RedisClusterProcesses(masters=3, replicas=0) as cluster:
        env = {"REDIS_USE_CLUSTER": "true", "REDIS_NODES": cluster.startup}
        for i in range(30):
            assert (
                invoke(["registry", "set", f"u{i}", "instance_id=gw", "--create"], env=env).code
                == 0
            )
        victim = cluster.nodes[0]
        victim.kill()
        env["REDIS_NODES"] = ",".join(f"127.0.0.1:{n.port}" for n in cluster.nodes[1:])
        listed = invoke(["list", "connections", "-o", "jsonl"], env=env)
        assert listed.code == 0, listed.err
        robots = {json.loads(line)["robot_id"] for line in listed.out.splitlines()}
        assert 0 < len(robots) < 30
        assert f"cluster primary 127.0.0.1:{victim.port} was unreachable" in listed.err
        for _ in range(100):  # the survivors flag the dead node as failed after node-timeout
            report = json.loads(invoke(["doctor", "-o", "json"], env=env).out)
            if any(f["kind"] == "uncovered_slots" for f in report["findings"]):
                break
            time.sleep(0.2)
        uncovered = [f for f in report["findings"] if f["kind"] == "uncovered_slots"]
        assert uncovered and uncovered[0]["severity"] == "error"
        assert report["cluster"]["uncovered_slots"] > 5000
