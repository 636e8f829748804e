"""A password-protected 3+3 cluster configured the seed's way (REDIS_USE_CLUSTER, REDIS_NODES,
REDIS_PASSWORD with URL metacharacters)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import invoke
from wsctl.sandbox import RedisClusterProcesses

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
