"""Fan-out ``wsctl send`` against real gateways, real robots and real Redis (single node and
the 3+3 cluster), including an owner frozen (SIGSTOP) or killed mid fan-out."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.conftest import Backend, ainvoke, open_test_store, wsctl_process
from tests.fleet import running_fleet, wait_for
from tests.robot_clients import frames, registered, robots
from wsctl.sandbox.gateways import GatewayProcess
from wsctl.sandbox.redis_servers import RedisServer


async def test_fan_out_by_glob_reaches_every_robot_on_both_gateways_exactly_once(
    backend: Backend,
) -> None:
    async with running_fleet(backend.env) as fleet, open_test_store(backend) as store:
        urls = {f"fan-{n}": fleet["gw-a" if n % 2 else "gw-b"].ws_url for n in range(30)}
        urls["other-1"] = fleet["gw-a"].ws_url
        async with robots(urls) as conns:
            await wait_for(lambda: registered(store, list(urls)))
            res = await ainvoke(
                ["send", '{"cmd":"go"}', "--robot", "fan-*", "-o", "json"], backend.env
            )
            assert res.code == 0, res.err
            summary = json.loads(res.out)
            assert summary["selected"] == 30 and summary["delivered"] == 30
            for key in ("not_connected", "rejected", "instance_unreachable", "timeout"):
                assert summary[key] == 0
            assert isinstance(summary["seconds"], float)
            for robot_id, conn in conns.items():
                expected = [] if robot_id == "other-1" else ['{"cmd":"go"}']
                assert await frames(conn) == expected


async def test_fan_out_by_instance_sends_only_to_that_instances_robots(single: Backend) -> None:
    async with running_fleet(single.env) as fleet, open_test_store(single) as store:
        urls = {f"ins-{n}": fleet["gw-a" if n % 2 else "gw-b"].ws_url for n in range(6)}
        async with robots(urls) as conns:
            await wait_for(lambda: registered(store, list(urls)))
            res = await ainvoke(["send", "hello", "--instance", "gw-b", "-o", "jsonl"], single.env)
            assert res.code == 0, res.err
            rows = [json.loads(line) for line in res.out.splitlines()]
            assert sorted(r["robot_id"] for r in rows) == ["ins-0", "ins-2", "ins-4"]
            assert {(r["outcome"], r["instance"]) for r in rows} == {("delivered", "gw-b")}
            assert "3 selected, 3 delivered" in res.err
            for n, conn in enumerate(conns.values()):
                assert await frames(conn) == ([] if n % 2 else ["hello"])


async def test_robots_from_stdin_with_an_unknown_robot_exits_1_and_names_it(
    single: Backend,
) -> None:
    async with running_fleet(single.env) as fleet, open_test_store(single) as store:
        urls = {"rf-1": fleet["gw-a"].ws_url, "rf-2": fleet["gw-b"].ws_url}
        async with robots(urls) as conns:
            await wait_for(lambda: registered(store, list(urls)))
            ids = "rf-1\n# a comment\n\nrf-2\nrf-1\nrf-missing\n"
            res = await ainvoke(
                ["send", "m", "--robots-from", "-", "-o", "jsonl"], single.env, stdin=ids
            )
            assert res.code == 1, res.err
            rows = {json.loads(line)["robot_id"]: json.loads(line) for line in res.out.splitlines()}
            assert rows["rf-missing"]["outcome"] == "not_connected"
            assert rows["rf-1"]["outcome"] == rows["rf-2"]["outcome"] == "delivered"
            assert len(rows) == 3  # the duplicate line is sent once
            assert [await frames(c) for c in conns.values()] == [["m"], ["m"]]


async def test_fan_out_via_one_instance_lets_it_route(single: Backend, tmp_path: Path) -> None:
    async with running_fleet(single.env) as fleet, open_test_store(single) as store:
        urls = {f"via-{n}": fleet["gw-b"].ws_url for n in range(4)}
        async with robots(urls) as conns:
            await wait_for(lambda: registered(store, list(urls)))
            listing = tmp_path / "ids.txt"
            listing.write_text("\n".join([*urls, "via-none"]) + "\n")
            res = await ainvoke(
                ["send", "x", "--robots-from", str(listing), "--via", "gw-a", "-o", "json"],
                single.env,
            )
            summary = json.loads(res.out)
            assert res.code == 1 and summary["delivered"] == 4 and summary["not_connected"] == 1
            assert fleet["gw-a"].metrics.messages_forwarded == 4
            for conn in conns.values():
                assert await frames(conn) == ["x"]


async def test_dry_run_lists_the_selection_and_sends_nothing(single: Backend) -> None:
    async with (
        running_fleet(single.env, names=("gw-a",)) as fleet,
        open_test_store(single) as store,
    ):
        urls = {f"dry-{n}": fleet["gw-a"].ws_url for n in range(3)}
        async with robots(urls) as conns:
            await wait_for(lambda: registered(store, list(urls)))
            res = await ainvoke(
                ["send", "no", "--robot", "dry-*", "--dry-run", "-o", "jsonl"], single.env
            )
            assert res.code == 0, res.err
            rows = [json.loads(line) for line in res.out.splitlines()]
            assert sorted(r["robot_id"] for r in rows) == sorted(urls)
            assert {r["instance"] for r in rows} == {"gw-a"}
            assert "3 robots selected; nothing sent" in res.err
            for conn in conns.values():
                assert await frames(conn) == []


async def test_a_single_robot_send_still_works_and_selection_flags_are_checked(
    single: Backend,
) -> None:
    async with (
        running_fleet(single.env, names=("gw-a",)) as fleet,
        open_test_store(single) as store,
    ):
        async with robots({"one-1": fleet["gw-a"].ws_url}) as conns:
            await wait_for(lambda: registered(store, ["one-1"]))
            res = await ainvoke(["send", "one-1", "hi"], single.env)
            assert res.code == 0 and "delivered" in res.out
            assert await frames(conns["one-1"]) == ["hi"]
            both = await ainvoke(["send", "one-1", "hi", "--robot", "x*"], single.env)
            assert both.code == 2 and "only MESSAGE" in both.err
            two = await ainvoke(["send", "hi", "--robot", "x*", "--instance", "gw-a"], single.env)
            assert two.code == 2 and "one of" in two.err
            rate = await ainvoke(["send", "one-1", "hi", "--rate", "5"], single.env)
            assert rate.code == 2


async def test_an_owner_frozen_or_killed_mid_fan_out_gives_timeout_or_unreachable(
    single: Backend, tmp_path: Path
) -> None:
    url = single.env["WSCTL_REDIS_URL"]
    frozen = GatewayProcess(redis_url=url, instance_id="gw-frozen").start(tmp_path)
    live = GatewayProcess(redis_url=url, instance_id="gw-live").start(tmp_path)
    try:
        async with open_test_store(single) as store:
            urls = {f"flt-{n}": (frozen if n % 2 else live).url for n in range(10)}
            async with robots(urls):
                await wait_for(lambda: registered(store, list(urls)), timeout=10)
                assert frozen.pid is not None
                os.kill(frozen.pid, signal.SIGSTOP)
                try:
                    started = time.monotonic()
                    res = await ainvoke(
                        ["send", "f", "--robot", "flt-*", "--timeout", "1", "-o", "jsonl"],
                        single.env,
                    )
                    took = time.monotonic() - started
                finally:
                    os.kill(frozen.pid, signal.SIGCONT)
                assert res.code == 1 and took < 8, (took, res.err)
                rows = [json.loads(line) for line in res.out.splitlines()]
                outcomes = {r["robot_id"]: r["outcome"] for r in rows}
                for n in range(10):
                    assert outcomes[f"flt-{n}"] == ("timeout" if n % 2 else "delivered")
                assert "5 timeout" in res.err
                assert frozen.proc is not None
                frozen.proc.kill()
                frozen.proc.wait(10)
                res = await ainvoke(["send", "k", "--robot", "flt-*", "-o", "json"], single.env)
                summary = json.loads(res.out)
                assert res.code == 1 and summary["delivered"] == 5
                assert summary["instance_unreachable"] == 5
    finally:
        frozen.stop()
        live.stop()


async def test_owners_that_speak_only_single_envelopes_get_single_envelopes(
    single: Backend,
) -> None:
    """A gateway built from docs/protocol.md's version 1 (no batches): fan-out sends it single
    envelopes, and a version-2 instance forwarding a batch to it does the same."""
    from tests.integration.test_protocol_from_doc import DocGateway

    async with (
        open_test_store(single) as store,
        DocGateway(store.client, "doc-gw").running() as doc,
        running_fleet(single.env, names=("gw-a",)) as fleet,
    ):
        urls = {"v1-1": f"ws://127.0.0.1:{doc.port}", "v1-2": f"ws://127.0.0.1:{doc.port}"}
        urls["v2-1"] = fleet["gw-a"].ws_url
        async with robots(urls) as conns:
            await wait_for(lambda: registered(store, list(urls)))
            res = await ainvoke(["send", "direct", "--robot", "v*", "-o", "json"], single.env)
            assert res.code == 0, res.out + res.err
            assert json.loads(res.out)["delivered"] == 3
            res = await ainvoke(
                ["send", "routed", "--robot", "v*", "--via", "gw-a", "-o", "json"], single.env
            )
            assert res.code == 0, res.out + res.err
            for conn in conns.values():
                assert await frames(conn) == ["direct", "routed"]


# ------------------------------------------------------------------ wsctl as a real process


def _finish(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    return out or "", err or ""


def _on_a_terminal(args: list[str], env: dict[str, str], out: Path | None) -> tuple[int, bytes]:
    """Run wsctl with stderr on a pseudo-terminal 40 columns wide and stdout to ``out`` (to the
    same terminal when None); returns the exit code and what the terminal got."""
    import pty
    import select

    master, slave = pty.openpty()
    screen = b""
    try:
        with out.open("w") if out is not None else contextlib.nullcontext(slave) as sink:
            proc = wsctl_process(
                args, {**env, "COLUMNS": "40"}, stdout=sink, stderr=slave, stdin=subprocess.DEVNULL
            )
        os.close(slave)
        slave = -1
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                screen += chunk
            elif proc.poll() is not None:
                break
        code = proc.wait(10)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
        with contextlib.suppress(NameError):
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    return code, screen


async def test_jsonl_lines_reach_stdout_unwrapped_when_stderr_is_a_terminal(
    single: Backend, tmp_path: Path
) -> None:
    async with running_fleet(single.env) as fleet, open_test_store(single) as store:
        urls = {f"tty-robot-with-a-long-name-{n}": fleet["gw-a"].ws_url for n in range(12)}
        async with robots(urls):
            await wait_for(lambda: registered(store, list(urls)))
            out = tmp_path / "out.jsonl"
            code, screen = await asyncio.to_thread(
                _on_a_terminal, ["send", "hi", "--robot", "tty-*", "-o", "jsonl"], single.env, out
            )
            assert code == 0, screen
            lines = out.read_text().splitlines()
            assert len(lines) == 12, (lines, screen)
            rows = [json.loads(line) for line in lines]  # one whole object a line: no wrapping
            assert sorted(r["robot_id"] for r in rows) == sorted(urls)
            assert b"robot_id" not in screen  # data never drawn on the terminal
            assert b"12 selected, 12 delivered" in screen


async def test_redis_frozen_mid_fan_out_stops_with_exit_3_within_3_request_timeouts(
    tmp_path: Path,
) -> None:
    """SIGSTOP of Redis during a paced fan-out: the first failed publish ends the run (one
    error line naming the server, exit 3) after the outcomes known so far; robots not sent are
    ``not_tried``."""
    with RedisServer() as own:
        env = {"WSCTL_REDIS_URL": own.url, "WSCTL_SOCKET_TIMEOUT": "1"}
        backend = Backend("single", env, single=own)
        async with running_fleet(env) as fleet, open_test_store(backend) as store:
            urls = {f"fz-{n:02}": fleet["gw-a" if n % 2 else "gw-b"].ws_url for n in range(40)}
            async with robots(urls) as conns:
                await wait_for(lambda: registered(store, list(urls)))
                received = [0]

                async def count(conn: Any) -> None:
                    with contextlib.suppress(Exception):
                        while True:
                            await conn.recv()
                            received[0] += 1

                readers = [asyncio.create_task(count(c)) for c in conns.values()]
                ids = tmp_path / "ids.txt"
                ids.write_text("\n".join(urls) + "\n")
                runs = {
                    "jsonl": ["send", "hi", "--robot", "fz-*", "--rate", "10", "-o", "jsonl"],
                    "json": ["send", "hi", "--robots-from", str(ids), "--rate", "10", "-o", "json"],
                }
                results: dict[str, tuple[int, str, str, float]] = {}
                for name, args in runs.items():
                    received[0] = 0
                    proc = wsctl_process(args, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                    # freeze once some robots got it (not after a fixed sleep: a loaded machine
                    # can take that long just to start the CLI); at 10/s most are still unsent
                    await wait_for(lambda: received[0] >= 8, timeout=20)
                    assert own.pid is not None
                    os.kill(own.pid, signal.SIGSTOP)
                    try:
                        started = time.monotonic()
                        out, err = await asyncio.to_thread(_finish, proc, 20)
                        took = time.monotonic() - started
                    finally:
                        os.kill(own.pid, signal.SIGCONT)
                    results[name] = (proc.returncode, out, err, took)
                    await asyncio.sleep(1.0)  # let the gateways catch up
                for reader in readers:
                    reader.cancel()
                await asyncio.gather(*readers, return_exceptions=True)
        for code, _, err, took in results.values():
            assert code == 3, err
            assert took < 3 * 1 + 1 + 1.5, took  # 3 x the request timeout + 1 s (+ slack)
            errors = [line for line in err.splitlines() if line.startswith("wsctl: error:")]
            assert len(errors) == 1 and f"127.0.0.1:{own.port}" in errors[0], err
            assert "Traceback" not in err
        _, out, err, _ = results["jsonl"]
        rows = [json.loads(line) for line in out.splitlines()]
        outcomes = [r["outcome"] for r in rows]
        assert len(rows) == 40 and len({r["robot_id"] for r in rows}) == 40
        assert set(outcomes) <= {"delivered", "timeout", "not_tried"}, outcomes
        assert outcomes.count("delivered") >= 5 and outcomes.count("not_tried") >= 5
        assert "(stopped: Redis failed)" in err
        _, out, err, _ = results["json"]
        summary = json.loads(out)
        assert summary["aborted"] is True and summary["selected"] == 40
        assert summary["delivered"] >= 5 and summary["not_tried"] >= 5
        assert summary["error"] == 0
        counted = (
            "delivered",
            "not_connected",
            "rejected",
            "instance_unreachable",
            "timeout",
            "not_tried",
        )
        assert sum(summary[k] for k in counted) == 40


async def test_dry_run_from_a_list_shows_each_robots_owner(single: Backend, tmp_path: Path) -> None:
    async with (
        running_fleet(single.env, names=("gw-a",)) as fleet,
        open_test_store(single) as store,
    ):
        urls = {f"dro-{n}": fleet["gw-a"].ws_url for n in range(3)}
        async with robots(urls) as conns:
            await wait_for(lambda: registered(store, list(urls)))
            ids = tmp_path / "ids.txt"
            ids.write_text("\n".join([*urls, "dro-missing"]) + "\n")
            res = await ainvoke(
                ["send", "no", "--robots-from", str(ids), "--dry-run", "-o", "jsonl"], single.env
            )
            assert res.code == 0, res.err
            owners = {r["robot_id"]: r["instance"] for r in map(json.loads, res.out.splitlines())}
            assert owners == {**dict.fromkeys(urls, "gw-a"), "dro-missing": None}
            for conn in conns.values():
                assert await frames(conn) == []


async def test_progress_on_a_terminal_moves_in_time_and_shows_the_known_total(
    single: Backend, tmp_path: Path
) -> None:
    async with (
        running_fleet(single.env, names=("gw-a",)) as fleet,
        open_test_store(single) as store,
    ):
        urls = {f"prg-{n}": fleet["gw-a"].ws_url for n in range(20)}
        async with robots(urls):
            await wait_for(lambda: registered(store, list(urls)))
            ids = tmp_path / "ids.txt"
            ids.write_text("\n".join(urls) + "\n")
            args = ["send", "p", "--robots-from", str(ids), "--rate", "8", "-o", "json"]
            code, screen = await asyncio.to_thread(
                _on_a_terminal, args, single.env, tmp_path / "out.json"
            )
            assert code == 0, screen
            import re

            seen = set(re.findall(rb"(\d+)/20 replied, sent \d+, [\d,]+/s", screen))
            assert len(seen) >= 5, screen  # 20 robots over ~2.5 s: redrawn as they come
            assert json.loads((tmp_path / "out.json").read_text())["delivered"] == 20


async def test_a_selection_matching_nothing_exits_0_and_says_so(single: Backend) -> None:
    res = await ainvoke(["send", "hi", "--instance", "nope"], single.env)
    assert res.code == 0 and "no robot matched --instance nope" in res.err
    assert "0 selected" in res.out
    res = await ainvoke(["send", "hi", "--robot", "robto-*", "-o", "json"], single.env)
    assert res.code == 0 and "no robot matched --robot 'robto-*'" in res.err
    assert json.loads(res.out)["selected"] == 0
    res = await ainvoke(["send", "hi", "--robot", "robto-*", "--dry-run"], single.env)
    assert res.code == 0 and "no robot matched --robot 'robto-*'" in res.err


async def test_every_listing_format_works_for_outcomes_and_the_dry_run(single: Backend) -> None:
    import csv
    import io

    async with (
        running_fleet(single.env, names=("gw-a",)) as fleet,
        open_test_store(single) as store,
    ):
        urls = {f"fmt-{n}": fleet["gw-a"].ws_url for n in range(3)}
        async with robots(urls):
            await wait_for(lambda: registered(store, list(urls)))
            res = await ainvoke(["send", "c", "--robot", "fmt-*", "-o", "csv"], single.env)
            assert res.code == 0, res.err
            rows = list(csv.DictReader(io.StringIO(res.out)))
            assert list(rows[0]) == ["robot_id", "outcome", "instance", "reason"]
            assert sorted(r["robot_id"] for r in rows) == sorted(urls)
            assert {(r["outcome"], r["instance"]) for r in rows} == {("delivered", "gw-a")}
            assert "3 selected, 3 delivered" in res.err
            res = await ainvoke(["send", "w", "--robot", "fmt-*", "-o", "wide"], single.env)
            assert res.code == 0, res.err
            # wide streams each robot's row, then the summary under them
            assert res.out.splitlines()[-1].startswith("3 selected, 3 delivered")
            assert "REASON" in res.out and all(robot in res.out for robot in urls)
            for fmt in ("table", "wide", "json", "jsonl", "csv"):
                res = await ainvoke(
                    ["send", "d", "--robot", "fmt-*", "--dry-run", "-o", fmt], single.env
                )
                assert res.code == 0, (fmt, res.err)
                assert all(robot in res.out for robot in urls), (fmt, res.out)
                assert "gw-a" in res.out
            res = await ainvoke(
                ["send", "d", "--robot", "fmt-*", "--dry-run", "-o", "csv"], single.env
            )
            assert res.out.splitlines()[0] == "robot_id,instance"
            res = await ainvoke(
                ["send", "d", "--robot", "fmt-*", "--dry-run", "-o", "json"], single.env
            )
            assert sorted(r["robot_id"] for r in json.loads(res.out)) == sorted(urls)


async def test_trace_with_a_selection_is_refused(single: Backend) -> None:
    res = await ainvoke(["send", "hi", "--robot", "x*", "--trace"], single.env)
    assert res.code == 2 and "--trace goes with one robot" in res.err
    assert len(res.err.strip().splitlines()) == 1


async def test_robots_from_drops_a_bom_keeps_hash_inside_an_id_and_names_an_empty_path(
    single: Backend, tmp_path: Path
) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_bytes("\ufeffrb-1\n  # a comment\nrb-2 # trailing\n".encode())
    res = await ainvoke(
        ["send", "x", "--robots-from", str(ids), "--dry-run", "-o", "jsonl"], single.env
    )
    assert res.code == 0, res.err
    assert [json.loads(line)["robot_id"] for line in res.out.splitlines()] == [
        "rb-1",
        "rb-2 # trailing",
    ]
    res = await ainvoke(["send", "x", "--robots-from", ""], single.env)
    assert res.code == 2 and "empty path" in res.err and "directory" not in res.err


async def test_ctrl_c_mid_fan_out_prints_what_was_sent_so_far_and_exits_130(
    single: Backend, tmp_path: Path
) -> None:
    async with (
        running_fleet(single.env, names=("gw-a",)) as fleet,
        open_test_store(single) as store,
    ):
        urls = {f"int-{n}": fleet["gw-a"].ws_url for n in range(20)}
        async with robots(urls):
            await wait_for(lambda: registered(store, list(urls)))
            proc = wsctl_process(
                ["send", "i", "--robot", "int-*", "--rate", "5", "-o", "json"],
                single.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            await asyncio.sleep(2.0)
            proc.send_signal(signal.SIGINT)
            _, err = await asyncio.to_thread(_finish, proc, 15)
            assert proc.returncode == 130, err
            import re

            found = re.search(
                r"interrupted: sent to (\d+) of 20 selected robots.*; (\d+) delivered", err
            )
            assert found is not None, err
            assert 1 <= int(found[1]) < 20 and int(found[2]) >= 1
            # one line (it was two: the progress, then `wsctl: interrupted`)
            assert err.startswith("wsctl: error: interrupted: sent to ") and err.count("\n") == 1


async def test_an_owner_killed_mid_fan_out_makes_later_robots_unreachable_at_once(
    single: Backend, tmp_path: Path
) -> None:
    url = single.env["WSCTL_REDIS_URL"]
    doomed = GatewayProcess(redis_url=url, instance_id="gw-doomed").start(tmp_path)
    try:
        async with open_test_store(single) as store:
            urls = {f"kil-{n:02}": doomed.url for n in range(20)}
            async with robots(urls):
                await wait_for(lambda: registered(store, list(urls)), timeout=10)
                args = ["send", "k", "--robot", "kil-*", "--rate", "10", "--timeout", "4"]
                proc = wsctl_process(
                    [*args, "-o", "jsonl"],
                    single.env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
                await asyncio.sleep(0.8)
                assert doomed.proc is not None
                doomed.proc.kill()
                started = time.monotonic()
                out, err = await asyncio.to_thread(_finish, proc, 30)
                took = time.monotonic() - started
        rows = [json.loads(line) for line in out.splitlines()]
        outcomes = [r["outcome"] for r in rows]
        assert proc.returncode == 1 and len(rows) == 20, err
        unreachable = [r for r in rows if r["outcome"] == "instance_unreachable"]
        assert len(unreachable) >= 8, outcomes
        # robots whose PUBLISH reached nobody say so; robots of a later chunk, whose owner was
        # already known deaf, get the operator's explanation (alive record, nobody listening)
        assert all(
            "no subscriber on the control channel of gw-doomed" in r["reason"]
            or "gw-doomed is alive (fresh liveness record) but nobody listens" in r["reason"]
            for r in unreachable
        ), [r["reason"] for r in unreachable]
        assert outcomes.count("timeout") <= 2, outcomes  # sent just before the kill
        if "timeout" not in outcomes:
            assert took < 3.5, took  # nothing waited for --timeout
    finally:
        doomed.stop()


async def test_an_owner_gone_mid_fan_out_is_unreachable_at_once_on_a_node_and_a_cluster(
    backend: Backend, tmp_path: Path
) -> None:
    """The owner stops listening mid-send: its PUBLISHes reach nobody (on a cluster, checked
    over every node), so its later robots are ``instance_unreachable`` without waiting for --timeout."""
    async with (
        running_fleet(backend.env, names=("gw-a",)) as fleet,
        open_test_store(backend) as store,
    ):
        urls = {f"gone-{n:02}": fleet["gw-a"].ws_url for n in range(20)}
        async with robots(urls):
            await wait_for(lambda: registered(store, list(urls)))
            ids = tmp_path / "ids.txt"
            ids.write_text("\n".join(urls) + "\n")
            args = ["send", "g", "--robots-from", str(ids), "--rate", "10", "--timeout", "5"]
            sending = asyncio.create_task(ainvoke([*args, "-o", "jsonl"], backend.env))
            await asyncio.sleep(0.8)
            await fleet["gw-a"].stop()
            started = time.monotonic()
            res = await sending
            took = time.monotonic() - started
    rows = [json.loads(line) for line in res.out.splitlines()]
    outcomes = [r["outcome"] for r in rows]
    assert res.code == 1 and len(rows) == 20, res.err
    unreachable = [r for r in rows if r["outcome"] == "instance_unreachable"]
    assert len(unreachable) >= 5, outcomes
    assert all("no subscriber" in r["reason"] for r in unreachable)
    assert outcomes.count("timeout") <= 2, outcomes
    if "timeout" not in outcomes:
        assert took < 4, took


async def test_jsonl_rows_on_the_same_terminal_as_stderr_get_no_progress_bar_between_them(
    single: Backend, tmp_path: Path
) -> None:
    """A bar redrawn on the terminal the rows are printed to glued its text to every row."""
    async with (
        running_fleet(single.env, names=("gw-a",)) as fleet,
        open_test_store(single) as store,
    ):
        urls = {f"same-{n}": fleet["gw-a"].ws_url for n in range(6)}
        async with robots(urls):
            await wait_for(lambda: registered(store, list(urls)))
            ids = tmp_path / "ids.txt"
            ids.write_text("\n".join(urls) + "\n")
            args = ["send", "hi", "--robots-from", str(ids), "--rate", "4", "-o", "jsonl"]
            code, screen = await asyncio.to_thread(_on_a_terminal, args, single.env, None)
            assert code == 0, screen
            assert b"replied" not in screen, screen
            rows = [line for line in screen.splitlines() if b"robot_id" in line]
            assert len(rows) == 6 and all(json.loads(row) for row in rows), screen


async def test_a_closed_stdout_stops_the_send_at_once_and_says_so(
    single: Backend, tmp_path: Path
) -> None:
    """`send ... -o jsonl | head -1`: rows are flushed as they come, and once the reader is
    gone nothing more is sent (exit 1, one line), instead of a silent exit 1 after every
    robot and the reply timeout."""
    async with (
        running_fleet(single.env, names=("gw-a",)) as fleet,
        open_test_store(single) as store,
    ):
        urls = {f"pipe-{n}": fleet["gw-a"].ws_url for n in range(6)}
        async with robots(urls) as conns:
            await wait_for(lambda: registered(store, list(urls)))
            ids = tmp_path / "ids.txt"
            ids.write_text("\n".join(urls) + "\n")
            args = ["send", "hi", "--robots-from", str(ids), "--rate", "2", "-o", "jsonl"]
            started = time.monotonic()
            proc = wsctl_process(args, single.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            assert proc.stdout is not None
            first = await asyncio.to_thread(proc.stdout.readline)  # the first row, in time
            proc.stdout.close()  # the reader leaves, like `head -1`
            _, err = await asyncio.to_thread(_finish, proc, 30)
            elapsed = time.monotonic() - started
            assert json.loads(first)["robot_id"] == "pipe-0"
            assert proc.returncode == 1, err
            assert err.startswith("wsctl: stdout was closed; stopped: sent to "), err
            assert len(err.splitlines()) == 1 and "Traceback" not in err, err
            assert elapsed < 2.6, elapsed  # 6 robots at 2/s would take 2.5 s, plus the timeout
            got = [await frames(conns[robot]) for robot in urls]
            assert sum(1 for frames in got if frames) < 6, got  # not every robot was sent it


async def test_a_table_fan_out_where_every_robot_got_it_prints_no_empty_table(
    single: Backend,
) -> None:
    async with (
        running_fleet(single.env, names=("gw-a",)) as fleet,
        open_test_store(single) as store,
    ):
        urls = {f"tbl-{n}": fleet["gw-a"].ws_url for n in range(3)}
        async with robots(urls):
            await wait_for(lambda: registered(store, list(urls)))
            res = await ainvoke(["send", "hi", "--robot", "tbl-*"], single.env)
            assert res.code == 0, res
            assert res.out.startswith("3 selected, 3 delivered") and "ROBOT" not in res.out, res


async def test_wide_streams_each_robots_row_and_a_closed_stdout_stops_the_run(
    single: Backend, tmp_path: Path
) -> None:
    """`send -o wide` held every row for one table drawn at the end: 870k robots took 2.4 GB
    and more than 300 s, and `-o wide | head -1` ran until the whole selection was done."""
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"nobody-{n}\n" for n in range(200_000)))
    args = ["send", "hi", "--robots-from", str(ids), "-o", "wide"]
    proc = wsctl_process(args, single.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        header = await asyncio.to_thread(proc.stdout.readline)
        running = proc.poll() is None
        proc.stdout.close()  # the reader leaves, like `head -1`
    finally:
        _, err = await asyncio.to_thread(_finish, proc, 60)
    assert header.split() == ["ROBOT", "OUTCOME", "INSTANCE", "REASON"]
    assert running  # the first line came while the run went on
    assert proc.returncode == 1, err
    assert err.startswith("wsctl: stdout was closed; stopped: sent to "), err
    assert "(selection not fully read)" in err, err  # it stopped, not at the end


async def test_a_dry_run_table_is_sorted_by_robot_and_bounded_like_other_tables(
    single: Backend,
) -> None:
    """`send --dry-run` tables were in scan order (here: the order of the file) and held
    every robot."""
    ids = [f"dry-{n:05d}" for n in range(1500)]
    stdin = "\n".join(reversed(ids)) + "\n"
    for fmt in ("table", "wide"):
        res = await ainvoke(
            ["send", "d", "--robots-from", "-", "--dry-run", "-o", fmt], single.env, stdin=stdin
        )
        assert res.code == 0, res.err
        listed = [line.split()[0] for line in res.out.splitlines()[3:] if line.strip()]
        assert listed == ids[:1000], fmt
        assert "showing 1000 of 1500 selected robots (sorted by robot)" in res.err, fmt
        assert "1500 robots selected; nothing sent (--dry-run)" in res.err
    res = await ainvoke(
        ["send", "d", "--robots-from", "-", "--dry-run", "-o", "jsonl"], single.env, stdin=stdin
    )
    assert len(res.out.splitlines()) == 1500 and "showing" not in res.err  # streams them all
