"""`wsctl simulate` and the sandbox: real robots, real gateways, real Redis, on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import jsonschema
import pytest

from tests.conftest import Backend, ainvoke, invoke, open_test_store
from tests.fleet import running_fleet
from wsctl.ops.simulate.options import SimulateOptions, parse_slo
from wsctl.ops.simulate.run import simulate
from wsctl.sandbox.local import Sandbox, running_sandbox

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "simulate.schema.json").read_text())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not alive: check its state
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


def test_sandbox_stops_every_process_it_started() -> None:
    with Sandbox(gateways=2) as box:
        pids = box.pids()
        assert len(pids) == 3 and all(_alive(p) for p in pids)
    assert not any(_alive(p) for p in pids)


def test_sandbox_stops_everything_after_a_failure_inside() -> None:
    pids: list[int] = []
    with pytest.raises(RuntimeError), Sandbox(gateways=1) as box:
        pids = box.pids()
        raise RuntimeError("boom")
    assert pids and not any(_alive(p) for p in pids)


def test_simulate_in_the_auto_sandbox_passes_and_matches_the_schema(tmp_path: Path) -> None:
    junit = tmp_path / "sim.xml"
    res = invoke(
        [
            "simulate",
            "--robots",
            "40",
            "--messages",
            "2",
            "-o",
            "json",
            "--junit",
            str(junit),
            "--slo",
            "lost==0",
            "--slo",
            "p99<5s",
        ]
    )
    assert res.code == 0, res.err
    report = json.loads(res.out)
    jsonschema.validate(report, SCHEMA)
    assert report["ok"] and [p["name"] for p in report["phases"]] == [
        "connect",
        "registered",
        "deliver",
        "heartbeat",
        "disconnect",
    ]
    deliver = report["phases"][2]["metrics"]
    assert deliver["sent"] == 80 and deliver["delivered"] == 80 and deliver["via_other"] > 0
    # throughput is over first publish -> last message received (not the waits for replies)
    span = deliver["delivery_seconds"]
    assert 0 < span <= report["phases"][2]["seconds"]
    assert 80 / deliver["throughput_per_s"] == pytest.approx(span, abs=0.001)
    suite = ElementTree.parse(junit).getroot()
    assert suite.get("tests") == "7" and suite.get("failures") == "0"


async def test_simulate_with_churn_and_worker_processes(backend: Backend) -> None:
    async with running_fleet(backend.env) as fleet:
        urls = [g.ws_url for g in fleet.values()]
        args = [
            "simulate",
            "--robots",
            "30",
            "--processes",
            "2",
            "--churn",
            "10",
            "--duration",
            "2",
            "-o",
            "json",
        ]
        for url in urls:
            args += ["--gateway", url]
        res = await ainvoke(args, env=backend.env)
    report = json.loads(res.out)
    jsonschema.validate(report, SCHEMA)
    assert res.code == 0, report["failed"]
    churn = next(p for p in report["phases"] if p["name"] == "churn")
    assert churn["metrics"]["reconnects"] > 0 and churn["metrics"]["registry_not_following"] == 0


async def test_simulate_discovers_alive_gateways_from_liveness_records(single: Backend) -> None:
    async with running_fleet(single.env):
        res = await ainvoke(
            ["simulate", "--robots", "10", "--duration", "2", "-o", "json"], env=single.env
        )
    assert res.code == 0, res.err
    assert len(json.loads(res.out)["gateways"]) == 2 and "found 2 alive gateway(s)" in res.err


async def test_failing_slo_exits_1_and_is_named(single: Backend) -> None:
    async with running_fleet(single.env, names=("gw-a",)) as fleet:
        res = await ainvoke(
            [
                "simulate",
                "--robots",
                "5",
                "--duration",
                "2",
                "--gateway",
                fleet["gw-a"].ws_url,
                "--slo",
                "p99<0.000001ms",
            ],
            env=single.env,
        )
    assert res.code == 1 and "slo p99<0.000001ms" in res.err


@pytest.mark.parametrize(
    "bad",
    [
        "p99",
        "p99<<5",
        "latency<5ms",
        "p99<abc",
        "lost<5ms",  # a count with a latency's unit
        "rejected==0%",
        "connect_failed<1s",
        "delivered_pct>=99ms",
        "p99<50%",
        "p99<1.2.3ms",
        "p99<5",  # a latency without its unit used to mean ms silently
        "connect_p50<=100",
    ],
)
def test_bad_slo_is_a_usage_error(bad: str) -> None:
    res = invoke(["simulate", "--slo", bad])
    assert res.code == 2 and "bad --slo" in res.err and len(res.err.splitlines()) == 1


def test_slo_units_convert_to_milliseconds() -> None:
    assert parse_slo("p99<1.5s").value == 1500.0
    assert parse_slo("delivered_pct>=99.9%").check({"delivered_pct": 100.0}) == (True, 100.0)


async def test_a_gateway_killed_mid_run_fails_the_named_phase_and_leaves_no_entries(
    single: Backend,
) -> None:
    """Kill one gateway process after registration: deliver fails, the report names it, and
    the run's entries (including the dead gateway's) are removed by the clean-up."""
    from wsctl.sandbox.gateways import GatewayProcess

    redis_url = single.env["WSCTL_REDIS_URL"]
    logs = Path(os.environ["WSCTL_STATE_DIR"])
    logs.mkdir(parents=True, exist_ok=True)
    gateways = [
        GatewayProcess(
            redis_url=redis_url, instance_id=f"kill-gw-{n}", heartbeat_interval=0.5
        ).start(logs)
        for n in range(2)
    ]
    try:
        async with open_test_store(single) as store:

            def progress(phase: str, text: str) -> None:
                if phase == "registered" and text.startswith("ok"):
                    gateways[1].kill()

            report = await simulate(
                store,
                SimulateOptions(
                    robots=20,
                    gateways=[g.url for g in gateways],
                    duration=2,
                    deliver_timeout=3,
                    settle_timeout=2,
                ),
                progress,
            )
            assert not report.ok and "deliver" in report.failed
            assert report.cleaned_up > 0
            left = [k async for k in store.client.scan_iter(match=f"ws_conn:sim-{report.run_id}-*")]
            assert left == []
    finally:
        for gw in gateways:
            gw.stop()
    assert not any(_alive(g.pid) for g in gateways if g.pid)


def test_wsctl_sandbox_serves_other_commands_and_stops_on_sigint(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WSCTL_", "REDIS_"))}
    env["WSCTL_STATE_DIR"] = str(tmp_path / "state")
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsctl", "sandbox", "--gateways", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        first = proc.stdout.readline()  # type: ignore[union-attr]
        assert first.startswith("export WSCTL_REDIS_URL=redis://127.0.0.1:")
        for _ in range(100):  # the state file is written before the exports
            if (tmp_path / "state" / "sandbox.json").exists():
                break
            time.sleep(0.05)
        listed = subprocess.run(
            [sys.executable, "-m", "wsctl", "list", "instances", "-o", "json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert listed.returncode == 0, listed.stderr
        ids = {r["instance_id"] for r in json.loads(listed.stdout)}
        assert ids == {"sandbox-gw-1", "sandbox-gw-2"}
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    assert code == 0
    assert not (tmp_path / "state" / "sandbox.json").exists()


def test_a_second_sandbox_in_the_foreground_is_refused_and_leaves_the_first_reachable(
    tmp_path: Path,
) -> None:
    """`wsctl sandbox` in the foreground while one ran (detached or not) started a second
    one over the first's state file, and removed that file when stopped: the first sandbox's
    Redis, gateways and robots were left running where no command, `--stop` included, could
    find them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WSCTL_", "REDIS_"))}
    env["WSCTL_STATE_DIR"] = str(tmp_path / "state")
    state = tmp_path / "state" / "sandbox.json"
    cmd = [sys.executable, "-m", "wsctl", "sandbox", "--gateways", "1", "--robots", "0"]
    first = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True
    )
    second: subprocess.Popen[str] | None = None
    try:
        assert first.stdout is not None and first.stdout.readline().startswith("export ")
        assert json.loads(state.read_text())["pid"] == first.pid
        second = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
        )
        try:
            out, err = second.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            second.send_signal(signal.SIGINT)
            second.communicate(timeout=30)
            raise AssertionError("a second sandbox started") from None
        assert second.returncode == 2, err
        assert err == (
            f"wsctl: error: a sandbox is already running (pid {first.pid}); wsctl sandbox --stop\n"
        )
        assert out == ""
        assert json.loads(state.read_text())["pid"] == first.pid  # still found
    finally:
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=30) == 0
    assert not state.exists()


async def test_messages_refused_with_a_reply_are_rejected_not_lost(single: Backend) -> None:
    """Review: oversize messages refused with a reply were counted as "lost" with "p99 0.0 ms",
    and `--slo p99<50ms` then passed on nothing measured."""
    async with running_fleet(single.env, names=("gw-a",), max_message_bytes=100) as fleet:
        res = await ainvoke(
            [
                "simulate",
                "--robots",
                "4",
                "--messages",
                "2",
                "--payload-bytes",
                "500",
                "--duration",
                "2",
                "--gateway",
                fleet["gw-a"].ws_url,
                "--slo",
                "p99<50ms",
                "-o",
                "json",
            ],
            env=single.env,
        )
    report = json.loads(res.out)
    jsonschema.validate(report, SCHEMA)
    deliver = next(p for p in report["phases"] if p["name"] == "deliver")
    assert deliver["metrics"]["rejected"] == 8 and deliver["metrics"]["lost"] == 0
    assert "8 rejected, 0 lost" in deliver["detail"] and "p99 0.0" not in deliver["detail"]
    assert "larger than 100 bytes" in deliver["detail"]
    assert not deliver["ok"] and res.code == 1
    assert report["slos"] == [{"slo": "p99<50ms", "ok": False, "actual": None}]


def test_the_readme_tour_works_against_a_detached_sandbox_with_demo_robots() -> None:
    """README's tour: `wsctl sandbox --detach`, then show/send to robot-17, drain a gateway
    (its demo robots move to the other) and the rest, then `wsctl sandbox --stop` stops every
    process the sandbox started."""
    import subprocess
    import sys

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "wsctl", *args], capture_output=True, text=True, timeout=120
        )

    started = run("sandbox", "--detach", "--robots", "20")
    assert started.returncode == 0, started.stderr
    assert "export WSCTL_REDIS_URL=redis://127.0.0.1:" in started.stdout
    assert "wsctl sandbox --stop" in started.stderr
    try:
        info = running_sandbox()
        assert info is not None
        instances = json.loads(invoke(["list", "instances", "-o", "json"]).out)
        pids = [info.pid] + [row["pid"] for row in instances]
        assert len(pids) == 3 and all(_alive(p) for p in pids)
        again = run("sandbox", "--detach")
        assert again.returncode == 2 and "already running" in again.stderr
        shown = invoke(["show", "robot-17", "-o", "json"])
        assert shown.code == 0 and json.loads(shown.out)["state"] == "online"
        res = invoke(
            ["send", "robot-17", '{"cmd":"ping"}', "--json", "--via", "sandbox-gw-1", "--trace"]
        )
        assert res.code == 0 and "robot-17: delivered in" in res.out, res
        # the tour's drain: the demo robots move to the other gateway, as robots should
        drained = run("drain", "sandbox-gw-1", "--timeout", "20")
        assert drained.returncode == 0, drained.stdout + drained.stderr
        assert "drained sandbox-gw-1: 10 of 10 robot(s) moved in " in drained.stdout
        assert "  moved to sandbox-gw-2: 10" in drained.stdout
        assert "it can be stopped now" in drained.stdout
        undrained = run("undrain", "sandbox-gw-1")
        assert undrained.returncode == 0 and "accepts robots again" in undrained.stdout
        assert invoke(["reap", "--timeout", "90", "--dry-run"]).code == 0
        assert len(invoke(["registry", "export"]).out.splitlines()) == 20
    finally:
        stopped = run("sandbox", "--stop")
    assert stopped.returncode == 0 and "sandbox stopped" in stopped.stderr, stopped.stderr
    assert not any(_alive(p) for p in pids)
    assert running_sandbox() is None
    assert run("sandbox", "--stop").returncode == 1


@pytest.mark.parametrize("share", ["0", "1"])
async def test_simulate_deliver_goes_through_batches_with_the_non_owner_share_asked(
    single: Backend, share: str
) -> None:
    async with running_fleet(single.env) as fleet:
        args = ["simulate", "--robots", "20", "--messages", "3", "--duration", "2", "-o", "json"]
        args += ["--non-owner-share", share, "--rate", "0"]
        for gw in fleet.values():
            args += ["--gateway", gw.ws_url]
        res = await ainvoke(args, env=single.env)
        report = json.loads(res.out)
        assert res.code == 0, report["failed"]
        deliver = next(p for p in report["phases"] if p["name"] == "deliver")["metrics"]
        assert deliver["delivered"] == 60 and deliver["out_of_order"] == deliver["duplicated"] == 0
        assert deliver["via_other"] == (60 if share == "1" else 0)
        assert deliver["replies"] == {"delivered": 60}
        forwarded = sum(gw.metrics.messages_forwarded for gw in fleet.values())
        assert forwarded == (60 if share == "1" else 0)


def test_a_non_owner_share_outside_0_to_1_is_a_usage_error() -> None:
    res = invoke(["simulate", "--non-owner-share", "1.5", "--gateway", "ws://127.0.0.1:1"])
    assert res.code == 2 and "--non-owner-share" in res.err


# ------------------------------------------------------------------ open files and the ramp


def _open_files_limited(soft: int, hard: int) -> Any:
    """A preexec_fn: the child process starts with these open-files limits."""
    import resource

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


def _may_raise_the_hard_limit() -> bool:
    """Whether a process here may raise its hard open-files limit (root with
    CAP_SYS_RESOURCE): simulate then raises it instead of refusing."""
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import resource; s, h = resource.getrlimit(resource.RLIMIT_NOFILE); "
            "resource.setrlimit(resource.RLIMIT_NOFILE, (h + 1, h + 1))",
        ],
        preexec_fn=_open_files_limited(1024, 1024),
        capture_output=True,
        timeout=30,
    )
    return probe.returncode == 0


def _simulate_limited(args: list[str], soft: int, hard: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wsctl", "simulate", *args],
        preexec_fn=_open_files_limited(soft, hard),
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def test_simulate_over_the_open_files_limit_fails_before_anything_starts() -> None:
    """1,200 robots in one process under a hard limit of 1,024 open files: one line saying
    what to do, exit 2, and no sandbox started (it used to start, then fail hundreds of robots
    with "Too many open files")."""
    if _may_raise_the_hard_limit():
        pytest.skip("a process here may raise its hard open-files limit: simulate raises it")
    done = _simulate_limited(["--robots", "1200", "--messages", "1"], 1024, 1024)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    line = done.stderr
    assert "1,200 robot(s) need 1,328 open files in simulate's process" in line, line
    assert "limit of 1,024" in line and "--processes 2" in line, line
    assert "--sandbox-gateways" not in line  # 600 robots a gateway fit
    assert "raise the open-files limit" in line, line
    more = _simulate_limited(["--robots", "3000"], 1024, 1024)
    assert more.returncode == 2 and "--processes 4 --sandbox-gateways 4" in more.stderr


def test_simulate_following_the_advice_runs_under_the_same_limit_and_reports_its_ramp() -> None:
    """The run the line above advises (--processes 2) passes under the same hard limit, with
    the soft limit below it raised; the connect phase reports its ramp."""
    done = _simulate_limited(
        ["--robots", "1200", "--processes", "2", "--messages", "1", "-o", "json"], 512, 1024
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    jsonschema.validate(report, SCHEMA)
    connect = report["phases"][0]
    assert connect["name"] == "connect" and connect["metrics"]["connected"] == 1200
    assert connect["metrics"]["ramp_asked_per_s"] == 1000.0
    assert {"ramp_lowest_per_s", "ramp_final_per_s", "ramp_slowdowns", "retried"} <= set(
        connect["metrics"]
    )
    assert "; ramp 1000/s" in connect["detail"], connect["detail"]
