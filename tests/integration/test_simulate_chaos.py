"""``simulate --reconnect`` and ``--chaos drain|kill``: real robots, real gateways (in-process
on a real Redis for drain; the sandbox's gateway processes for kill, one SIGKILLed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema

from tests.conftest import Backend, ainvoke, invoke
from tests.fleet import running_fleet
from wsctl.sandbox.local import SandboxInfo, remove_sandbox_file, write_sandbox_file
from wsctl.sandbox.redis_servers import RedisServer

SCHEMA = json.loads(
    (Path(__file__).parents[2] / "docs" / "simulate.schema.json").read_text(encoding="utf-8")
)


def _deliver(report: dict[str, object]) -> dict[str, object]:
    jsonschema.validate(report, SCHEMA)
    phases = {p["name"]: p for p in report["phases"]}  # type: ignore[index, union-attr]
    return phases["deliver"]  # type: ignore[return-value]


async def test_chaos_drain_moves_every_robot_and_loses_nothing_for_the_others(
    backend: Backend,
) -> None:
    async with running_fleet(backend.env, names=("gw-a", "gw-b", "gw-c")) as fleet:
        urls = [arg for gw in fleet.values() for arg in ("--gateway", gw.ws_url)]
        res = await ainvoke(
            [
                "simulate",
                "--robots",
                "60",
                "--chaos",
                "drain",
                "--duration",
                "2",
                *urls,
                "--rate",
                "200",
                "-o",
                "json",
            ],
            backend.env,
        )
        assert res.code == 0, res.out + res.err
        chaos = _deliver(json.loads(res.out))["metrics"]["chaos"]  # type: ignore[index]
        assert chaos["action"] == "drain" and chaos["victim"] == "gw-a"
        assert chaos["robots_on_victim"] == 20 and chaos["reregistered_s"] > 0
        assert chaos["lost_other_robots"] == 0
        # the run undrains the gateway it drained: the fleet is left as it was found
        assert not fleet["gw-a"].core.draining


async def test_reconnecting_robots_follow_an_operator_drain(single: Backend) -> None:
    async with running_fleet(single.env, names=("gw-a", "gw-b")) as fleet:
        urls = [arg for gw in fleet.values() for arg in ("--gateway", gw.ws_url)]
        res = await ainvoke(
            ["simulate", "--robots", "10", "--reconnect", "--duration", "2", *urls, "-o", "json"],
            single.env,
        )
        assert res.code == 0, res.out + res.err


def test_chaos_kill_of_a_sandbox_gateway_loses_only_what_was_in_flight_to_it() -> None:
    res = invoke(
        [
            "simulate",
            "--robots",
            "60",
            "--chaos",
            "kill",
            "--sandbox-gateways",
            "3",
            "--rate",
            "200",
            "--duration",
            "3",
            "-o",
            "json",
        ]
    )
    assert res.code == 0, res.out + res.err
    deliver = _deliver(json.loads(res.out))
    chaos = deliver["metrics"]["chaos"]  # type: ignore[index]
    assert chaos["action"] == "kill" and chaos["robots_on_victim"] == 20
    assert chaos["lost_other_robots"] == 0 and chaos["reregistered_s"] > 0
    lost = chaos["lost_victim_robots"] + chaos["lost_in_flight_to_victim"]
    assert deliver["metrics"]["lost"] == lost  # type: ignore[index]
    assert "in flight to it" in deliver["detail"]  # type: ignore[operator]


async def test_chaos_needs_two_gateways_and_kill_needs_the_sandbox(single: Backend) -> None:
    async with running_fleet(single.env, names=("gw-a", "gw-b")) as fleet:
        a, b = fleet["gw-a"].ws_url, fleet["gw-b"].ws_url
        cases = [
            ["--chaos", "kill", "--gateway", a, "--gateway", b],
            ["--chaos", "drain", "--gateway", a],
            ["--chaos", "explode", "--gateway", a, "--gateway", b],
            ["--chaos", "drain", "--churn", "5", "--gateway", a, "--gateway", b],
        ]
        for extra in cases:
            res = await ainvoke(["simulate", "--robots", "2", *extra], single.env)
            assert res.code == 2 and res.err.count("\n") == 1, (extra, res.err)


def test_chaos_kill_names_why_simulate_starts_no_sandbox_of_its_own(
    redis_server: RedisServer,
) -> None:
    """A running sandbox, --gateway, or a configured Redis: each is named as the reason."""
    write_sandbox_file(SandboxInfo(redis_url=redis_server.url, pid=os.getpid()))
    try:
        res = invoke(["simulate", "--robots", "2", "--chaos", "kill"])
        assert res.code == 2 and res.err.count("\n") == 1, res.err
        assert f"a sandbox is running (pid {os.getpid()})" in res.err, res.err
        assert "wsctl sandbox --stop" in res.err and "no Redis" not in res.err, res.err
    finally:
        remove_sandbox_file(os.getpid())
    res = invoke(["simulate", "--robots", "2", "--chaos", "kill"], env={"REDIS_PORT": "1"})
    assert res.code == 2 and "a Redis is configured" in res.err, res.err
    res = invoke(
        ["simulate", "--robots", "2", "--chaos", "kill", "--gateway", "ws://127.0.0.1:1"],
        env={"WSCTL_REDIS_URL": redis_server.url},
    )
    assert res.code == 2 and "--gateway was given" in res.err, res.err
