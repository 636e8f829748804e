"""``wsctl kick`` and ``wsctl ping`` when the owner listens but never answers: exit 6 and one
line, as real processes (the CLI, a SIGSTOPped ``wsctl gateway``, or a process that subscribes
to an instance's control channel and stays silent) against real Redis."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from websockets.asyncio.client import connect

from tests.conftest import Backend, open_test_store
from tests.fleet import wait_for
from wsctl.registry.keys import Keyspace
from wsctl.sandbox.gateways import GatewayProcess

TIMEOUT_LINE_KICK = "{robot} on {owner}: timeout (no reply within 1s)"
TIMEOUT_LINE_PING = "{owner}: timeout (no pong within 1s)"


def _wsctl(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "wsctl", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )
    return done, time.monotonic() - started


def _assert_timed_out(done: subprocess.CompletedProcess[str], took: float, line: str) -> None:
    assert done.returncode == 6, (done.returncode, done.stdout, done.stderr)
    # the outcome is the command's one line (stdout, as for every kick/ping/send outcome);
    # nothing else, and no traceback
    assert done.stdout == line + "\n", done.stdout
    assert done.stderr == "", done.stderr
    assert took < 15, took  # --timeout 1, plus start-up


@contextlib.contextmanager
def _silent_subscriber(redis_port: int, channel: str) -> Iterator[None]:
    """A process subscribed to ``channel`` that reads and never answers (bounded: 120 s)."""
    script = (
        "import redis, sys\n"
        f"p = redis.Redis(port={redis_port}).pubsub()\n"
        f"p.subscribe({channel!r})\n"
        "print('ready', flush=True)\n"
        "for _ in range(120):\n"
        "    p.get_message(timeout=1.0)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield
    finally:
        proc.kill()
        proc.wait(10)


async def test_kick_and_ping_of_an_instance_that_listens_but_never_answers_exit_6(
    backend: Backend,
) -> None:
    keys = Keyspace()
    owner, robot = "mute-gw", "mute-r"
    if backend.single is not None:
        port = backend.single.port
    else:
        assert backend.cluster is not None
        port = backend.cluster.primary_ports()[0]  # subscribers are counted on every node
    async with open_test_store(backend) as store:
        await store.client.hset(
            keys.conn_key(robot), mapping={"instance_id": owner, "conn_id": "c-1"}
        )
        with _silent_subscriber(port, keys.control_channel(owner)):
            await wait_for(lambda: store.is_listening(owner), timeout=10)
            done, took = _wsctl(backend.env, "kick", robot, "--timeout", "1")
            _assert_timed_out(done, took, TIMEOUT_LINE_KICK.format(robot=robot, owner=owner))
            done, took = _wsctl(backend.env, "ping", owner, "--timeout", "1")
            _assert_timed_out(done, took, TIMEOUT_LINE_PING.format(owner=owner))
        # the entry is untouched: a kick that got no answer removes nothing
        assert (await store.get(robot)) is not None


async def test_kick_and_ping_of_a_frozen_gateway_exit_6_then_work_after_sigcont(
    single: Backend, tmp_path: Path
) -> None:
    gateway = GatewayProcess(redis_url=single.env["WSCTL_REDIS_URL"], instance_id="gw-frozen")
    gateway.start(tmp_path)
    try:
        async with (
            open_test_store(single) as store,
            connect(f"{gateway.url}/ws/frozen-r", ping_interval=None),
        ):
            await wait_for(lambda: store.get("frozen-r"), timeout=10)
            assert gateway.pid is not None
            os.kill(gateway.pid, signal.SIGSTOP)
            try:
                done, took = _wsctl(single.env, "kick", "frozen-r", "--timeout", "1")
                _assert_timed_out(
                    done, took, TIMEOUT_LINE_KICK.format(robot="frozen-r", owner="gw-frozen")
                )
                done, took = _wsctl(single.env, "ping", "gw-frozen", "--timeout", "1")
                _assert_timed_out(done, took, TIMEOUT_LINE_PING.format(owner="gw-frozen"))
            finally:
                os.kill(gateway.pid, signal.SIGCONT)
            done, _ = _wsctl(single.env, "ping", "gw-frozen", "--timeout", "5")
            assert done.returncode == 0 and done.stdout.startswith("pong from gw-frozen")
    finally:
        gateway.stop()


async def test_a_drain_a_frozen_gateway_did_not_answer_says_it_may_still_happen(
    single: Backend, tmp_path: Path
) -> None:
    """A frozen (or overloaded) gateway gets the drain request once it runs again and then
    drains: exit 6 said only "did not answer ... (an older gateway that does not know the
    op?)", so the operator took it that nothing had happened."""
    gateway = GatewayProcess(redis_url=single.env["WSCTL_REDIS_URL"], instance_id="gw-sleepy")
    gateway.start(tmp_path)
    try:
        async with open_test_store(single) as store:
            assert gateway.pid is not None
            os.kill(gateway.pid, signal.SIGSTOP)
            try:
                done, _ = _wsctl(single.env, "drain", "gw-sleepy", "--timeout", "1")
            finally:
                os.kill(gateway.pid, signal.SIGCONT)
            assert done.returncode == 6, (done.stdout, done.stderr)
            assert done.stderr == (
                "wsctl: error: instance 'gw-sleepy' did not answer drain within 10s (frozen, "
                "overloaded, or an older gateway that does not know the op); it may still "
                "drain once the request reaches it: `wsctl list instances` shows whether it "
                "drains, `wsctl undrain gw-sleepy` reopens it\n"
            )

            async def draining() -> bool:
                record = await store.instance_record("gw-sleepy")
                return record is not None and record.draining

            await wait_for(draining, timeout=15)  # so it did
    finally:
        gateway.stop()
