"""wsctl against gateways that do not speak its control protocol: the original design's FastAPI
app (tests/original_gateway.py) as real uvicorn processes, on a real redis-server."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from xml.etree import ElementTree

import jsonschema
from websockets.asyncio.client import connect

from tests.conftest import Backend, ainvoke, open_test_store
from tests.fleet import running_fleet, wait_for
from tests.original_fleet import original_gateways

DOCS = Path(__file__).parents[2] / "docs"
SIM_SCHEMA = json.loads((DOCS / "simulate.schema.json").read_text(encoding="utf-8"))
HEARTBEAT = '{"type":"heartbeat"}'


def _sim_args(urls: list[str], *extra: str) -> list[str]:
    args = ["simulate", "--robots", "50", "--messages", "2", "-o", "json", *extra]
    for url in urls:
        args += ["--gateway", url]
    return args


def _phases(report: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    return {p["name"]: p for p in report["phases"]}


async def test_send_to_a_robot_of_an_original_gateway_exits_5_at_once_and_says_why(
    backend: Backend,
) -> None:
    with original_gateways(backend, names=("orig-a",)) as (orig,):
        async with (
            open_test_store(backend) as store,
            connect(f"{orig.ws_url}/ws/robot-1") as robot,
        ):
            await wait_for(lambda: store.get("robot-1"))
            started = time.monotonic()
            res = await ainvoke(["send", "robot-1", "hello"], env=backend.env)
            elapsed = time.monotonic() - started
            assert res.code == 5, res.out + res.err
            assert "orig-a does not speak wsctl's control protocol" in res.out
            assert "docs/protocol.md" in res.out and "FastAPI adapter" in res.out
            assert elapsed < 3  # at once: nothing was published, nothing waited for
            res = await ainvoke(["send", "robot-1", "hello", "-o", "json"], env=backend.env)
            outcome = json.loads(res.out)
            assert outcome["status"] == "instance_unreachable" and outcome["target"] == "orig-a"
            assert "ws_ctl:orig-a" in outcome["reason"]
            await robot.send("still here")  # the robot and its entry are untouched
            assert await store.get("robot-1") is not None


async def test_send_via_a_wsctl_gateway_to_an_original_gateways_robot_names_the_owner(
    single: Backend,
) -> None:
    with original_gateways(single, names=("orig-a",)) as (orig,):
        async with (
            running_fleet(single.env, names=("gw-a",)),
            open_test_store(single) as store,
            connect(f"{orig.ws_url}/ws/robot-2"),
        ):
            await wait_for(lambda: store.get("robot-2"))
            res = await ainvoke(["send", "robot-2", "x", "--via", "gw-a"], env=single.env)
            assert res.code == 5, res.out
            assert res.out.startswith("via gw-a -> robot-2: instance unreachable")
            assert "orig-a does not speak wsctl's control protocol" in res.out


async def test_simulate_skips_deliver_and_explains_the_failed_heartbeat_phase(
    single: Backend, tmp_path: Path
) -> None:
    junit = tmp_path / "sim.xml"
    with original_gateways(single) as gateways:
        urls = [g.ws_url for g in gateways]
        res = await ainvoke(
            _sim_args(urls, "--duration", "2", "--junit", str(junit)), env=single.env
        )
    report = json.loads(res.out)
    jsonschema.validate(report, SIM_SCHEMA)
    phases = _phases(report)
    assert res.code == 1 and report["failed"] == ["heartbeat"]
    assert report["skipped"] == ["deliver"]
    deliver = phases["deliver"]
    assert deliver["status"] == "skipped" and deliver["ok"] and deliver["seconds"] < 2
    assert (
        "2 instance(s) do not listen on their control channel: orig-a (ws://127.0.0.1:"
        in (deliver["detail"])
    )
    assert "does not speak wsctl's control protocol" in deliver["detail"]
    heartbeat = phases["heartbeat"]
    assert heartbeat["status"] == "failed"
    assert "refresh last_heartbeat only when a robot sends a message" in heartbeat["detail"]
    assert "--robot-heartbeat TEXT" in heartbeat["detail"]
    assert phases["disconnect"]["ok"] and re.search(r"deliver +skipped: not checked", res.err)
    suite = ElementTree.parse(junit).getroot()
    assert suite.get("skipped") == "1" and suite.get("failures") == "1"
    (case,) = [c for c in suite if c.get("name") == "deliver"]
    skipped = case.find("skipped")
    assert skipped is not None and "do not listen" in skipped.get("message", "")


async def test_require_delivery_makes_it_a_fast_failure(single: Backend) -> None:
    with original_gateways(single) as gateways:
        started = time.monotonic()
        res = await ainvoke(
            _sim_args([g.ws_url for g in gateways], "--require-delivery"), env=single.env
        )
        elapsed = time.monotonic() - started
    report = json.loads(res.out)
    jsonschema.validate(report, SIM_SCHEMA)
    assert res.code == 1 and report["failed"] == ["deliver"]
    assert [p["name"] for p in report["phases"]] == [
        "connect",
        "registered",
        "deliver",
        "disconnect",
    ]
    assert _phases(report)["deliver"]["detail"].startswith("delivery required, but 2 instance(s)")
    assert elapsed < 15  # no 30 s deliver wait, no 35 s heartbeat wait


async def test_simulate_with_robot_heartbeats_passes_against_original_gateways(
    backend: Backend,
) -> None:
    with original_gateways(backend) as gateways:
        started = time.monotonic()
        res = await ainvoke(
            _sim_args([g.ws_url for g in gateways], "--robot-heartbeat", HEARTBEAT),
            env=backend.env,
        )
        elapsed = time.monotonic() - started
    report = json.loads(res.out)
    jsonschema.validate(report, SIM_SCHEMA)
    assert res.code == 0, report["failed"]
    assert report["skipped"] == ["deliver"]
    heartbeat = _phases(report)["heartbeat"]
    assert heartbeat["metrics"]["advanced"] == 50 and heartbeat["metrics"]["robot_heartbeats_sent"]
    print(
        f"simulate, 50 robots, 2 original gateways ({backend.name}), --robot-heartbeat: {elapsed:.1f}s"
    )
    assert elapsed < 30  # the default heartbeat window is 35 s; a heartbeat every 5 s ends it


async def test_simulate_over_a_mixed_fleet_checks_delivery_where_it_can(single: Backend) -> None:
    with original_gateways(single, names=("orig-a",)) as (orig,):
        async with running_fleet(single.env, names=("gw-a", "gw-b")) as fleet:
            urls = [orig.ws_url, fleet["gw-a"].ws_url, fleet["gw-b"].ws_url]
            res = await ainvoke(
                _sim_args(
                    urls,
                    "--robot-heartbeat",
                    HEARTBEAT,
                    "--robot-heartbeat-every",
                    "1",
                    "--processes",
                    "2",
                ),
                env=single.env,
            )
    report = json.loads(res.out)
    assert res.code == 0, report["failed"]
    deliver = _phases(report)["deliver"]
    assert deliver["status"] == "passed" and deliver["metrics"]["robots_not_tested"] == 17
    assert deliver["metrics"]["sent"] == 33 * 2 and deliver["metrics"]["lost"] == 0
    assert "17 robots not tested: 1 instance(s) do not listen" in deliver["detail"]


async def test_doctor_says_which_checks_it_could_not_make_for_original_gateways(
    single: Backend,
) -> None:
    with original_gateways(single) as gateways:
        async with (
            open_test_store(single) as store,
            connect(f"{gateways[0].ws_url}/ws/robot-a"),
            connect(f"{gateways[1].ws_url}/ws/robot-b"),
        ):
            await wait_for(lambda: store.get("robot-b"))
            res = await ainvoke(["doctor", "-o", "json"], env=single.env)
            report = json.loads(res.out)
            assert res.code == 0, res.out  # nothing is wrong that doctor could see
            rows = {r["instance_id"]: r for r in report["instances"]}
            assert rows["orig-a"]["not_checked"] == ["sockets", "liveness"]
            unchecked = {
                f["instance_id"]: f for f in report["findings"] if f["kind"] == "not_checked"
            }
            assert set(unchecked) == {"orig-a", "orig-b"}
            assert "does not speak wsctl's control protocol" in unchecked["orig-b"]["detail"]
            table = await ainvoke(["doctor"], env=single.env)
            assert "could not check" in table.out
            res = await ainvoke(["doctor", "robot-a", "-o", "json"], env=single.env)
            robot = json.loads(res.out)
            assert res.code == 0, res.out
            assert robot["not_checked"] == ["sockets", "robot_ping", "liveness"]
            assert [f["kind"] for f in robot["findings"]] == ["not_checked"]


async def test_robot_heartbeat_flags_are_checked(single: Backend) -> None:
    base = ["simulate", "--gateway", "ws://127.0.0.1:1", "--duration", "2"]
    res = await ainvoke([*base, "--robot-heartbeat-every", "1"], env=single.env)
    assert res.code == 2 and "goes with --robot-heartbeat TEXT" in res.err
    res = await ainvoke(
        [*base, "--robot-heartbeat", "hb", "--robot-heartbeat-every", "2"], env=single.env
    )
    assert res.code == 2 and "below the heartbeat phase's --duration (2s)" in res.err


async def test_simulate_without_gateways_says_original_gateways_write_no_liveness_record(
    single: Backend,
) -> None:
    with original_gateways(single, names=("orig-a",)):
        res = await ainvoke(["simulate", "--robots", "5"], env=single.env)
    assert res.code == 2
    assert "do not speak wsctl's control protocol write none" in res.err
    assert "pass --gateway ws://host:port for each" in res.err
