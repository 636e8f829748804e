"""Message sizes against real Redis and real gateways: input is read up to the largest
message a gateway accepts and no further; a message over it is refused before anything is
published; a fan-out never has more unanswered bytes in flight to one gateway than its
window; and a gateway whose control subscription Redis closes (its pub/sub output buffer,
CLIENT KILL) logs it, counts it in /metrics and subscribes again."""

from __future__ import annotations

import asyncio
import os
import re
import resource
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from websockets.asyncio.client import connect

from tests.conftest import Backend, ainvoke, open_test_store
from tests.fastapi_fleet import fastapi_gateways
from tests.fleet import running_fleet, wait_for
from wsctl.ops.fanout import WINDOW_BYTES, FanOutcome, FanoutOptions, chunks_of, fan_out
from wsctl.ops.send import send_message
from wsctl.protocol.batch import Batch, BatchReply, Item, decode_any_reply, encode_batch
from wsctl.protocol.envelopes import (
    MAX_MESSAGE_BYTES,
    MAX_PUBLISH_BYTES,
    Envelope,
    Op,
    Status,
    decode_reply,
    encode,
)
from wsctl.registry.keys import Keyspace
from wsctl.sandbox.gateways import GatewayProcess
from wsctl.sandbox.processes import free_port
from wsctl.sandbox.redis_servers import RedisServer

TOO_BIG = MAX_MESSAGE_BYTES + 1
LOST_LINE = "subscription lost"


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own (its limits get changed, its clients killed)."""
    server = RedisServer(port=free_port()).start()
    try:
        yield server
    finally:
        server.stop()


def _publishes(port: int) -> int:
    """PUBLISH commands the server ran since its last CONFIG RESETSTAT."""
    stats = redis.Redis(port=port).info("commandstats")
    return int(stats.get("cmdstat_publish", {}).get("calls", 0))


def _resubscribes(metrics: str, instance: str) -> int | None:
    found = re.search(
        rf'^wsctl_gateway_control_resubscribes_total{{instance_id="{instance}"}} (\d+)$',
        metrics,
        re.M,
    )
    return int(found.group(1)) if found else None


def _http(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


def _limit_memory() -> None:
    # 512 MiB of address space: wsctl needs a few dozen; reading /dev/zero whole never ends
    resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))


@pytest.mark.parametrize(
    "args",
    [
        ["send", "robot-1", "--file", "/dev/zero"],
        ["send", "robot-1", "-"],
        ["send", "--robots-from", "/dev/null", "--file", "/dev/zero"],
        ["send", "--robots-from", "/dev/null", "-"],
    ],
    ids=["file", "stdin", "fanout-file", "fanout-stdin"],
)
def test_a_message_from_dev_zero_is_refused_at_once_in_bounded_memory(
    single: Backend, args: list[str]
) -> None:
    with open("/dev/zero", "rb") as zero:
        proc = subprocess.run(
            [sys.executable, "-m", "wsctl", *args],
            stdin=zero,
            capture_output=True,
            env={**os.environ, **single.env},
            preexec_fn=_limit_memory,
            timeout=30,
        )
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert err.splitlines() == [
        f"wsctl: error: {'stdin' if args[-1] == '-' else '--file /dev/zero'} holds more than "
        "1 MiB, the largest message a gateway accepts"
    ]
    assert proc.stdout == b""


async def test_a_message_over_the_limit_is_refused_before_anything_is_published(
    single: Backend, tmp_path: Path
) -> None:
    """``wsctl send`` exits 2 (MESSAGE, --file, stdin; one robot or many); through the library
    a single send is ``rejected`` and a fan-out ``rejected`` for every robot; Redis ran no
    PUBLISH, the robot got nothing and keeps its socket."""
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * TOO_BIG)
    ids = tmp_path / "ids.txt"
    ids.write_text("robot-1\nrobot-2\n")
    assert single.single is not None
    port = single.single.port
    async with (
        running_fleet(single.env, names=("gw-a",)) as fleet,
        open_test_store(single) as store,
        connect(f"{fleet['gw-a'].ws_url}/ws/robot-1") as robot,
    ):
        await wait_for(lambda: store.get("robot-1"))
        redis.Redis(port=port).config_resetstat()
        for args, stdin in (
            (["send", "robot-1", "--file", str(big)], ""),
            (["send", "robot-1", "-"], "y" * TOO_BIG),
            (["send", "robot-1", "é" * (MAX_MESSAGE_BYTES // 2 + 1)], ""),
            (["send", "--robots-from", str(ids), "--file", str(big)], ""),
            (["send", "--robot", "robot-*", "-"], "z" * TOO_BIG),
        ):
            res = await ainvoke(args, env=single.env, stdin=stdin)
            assert res.code == 2 and res.out == "", (args[:3], res)
            assert len(res.err.splitlines()) == 1 and "largest message a gateway accepts" in res.err
        keys = Keyspace()
        outcome = await send_message(store.client, keys, "robot-1", "x" * TOO_BIG)
        assert outcome.status == "rejected" and outcome.exit_code == 1
        assert outcome.reason == "message larger than 1048576 bytes"
        seen: list[FanOutcome] = []
        summary = await fan_out(
            store.client,
            keys,
            chunks_of(["robot-1", "robot-2"]),
            "x" * TOO_BIG,
            on_outcome=lambda o: seen.append(o.outcome),
        )
        assert seen == [FanOutcome.REJECTED, FanOutcome.REJECTED] and summary.sent == 0
        assert _publishes(port) == 0
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(robot.recv(), 0.3)
        assert fleet["gw-a"].metrics.control_resubscribes == 0
        # the largest message there is still goes through
        res = await ainvoke(["send", "robot-1", "--file", str(big), "--timeout", "10"], single.env)
        assert res.code == 2
        big.write_bytes(b"x" * MAX_MESSAGE_BYTES)
        res = await ainvoke(["send", "robot-1", "--file", str(big), "--timeout", "10"], single.env)
        assert res.code == 0, res
        assert len(await asyncio.wait_for(robot.recv(), 10)) == MAX_MESSAGE_BYTES


def test_a_gateway_refuses_a_larger_max_message_than_requesters_send(single: Backend) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "wsctl", "gateway", "--max-message-bytes", str(TOO_BIG)],
        capture_output=True,
        env={**os.environ, **single.env},
        timeout=30,
    )
    assert proc.returncode == 2 and b"--max-message-bytes" in proc.stderr


async def test_wsctl_gateway_logs_counts_and_recovers_a_control_subscription_redis_closed(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """Redis closes a subscriber whose pub/sub output buffer passes its limit (here a tiny
    one, set with CONFIG SET, and a message published around wsctl): the gateway says so in
    one log line, counts it in /metrics, subscribes again and delivers the next message."""
    env = {"WSCTL_REDIS_URL": own_redis.url}
    gw = GatewayProcess(own_redis.url, "gw-cut", heartbeat_interval=0.5).start(tmp_path)
    raw = redis.Redis(port=own_redis.port)
    try:
        metrics_url = f"http://127.0.0.1:{gw.port}/metrics"
        assert _resubscribes(_http(metrics_url), "gw-cut") == 0
        async with connect(f"{gw.url}/ws/robot-1") as robot:
            async with open_test_store(Backend("single", env)) as store:
                await wait_for(lambda: store.get("robot-1"))
            raw.config_set("client-output-buffer-limit", "pubsub 64kb 32kb 60")
            raw.publish("ws_ctl:gw-cut", "x" * (512 << 10))  # no wsctl publishes this much
            await wait_for(lambda: _resubscribes(_http(metrics_url), "gw-cut") == 1, timeout=15)
            assert gw.log_path is not None
            lines = [line for line in gw.log_path.read_text().splitlines() if LOST_LINE in line]
            assert len(lines) == 1 and "ws_ctl:gw-cut" in lines[0], lines
            assert "client-output-buffer-limit" in lines[0]
            res = await ainvoke(["send", "robot-1", "back", "--timeout", "10"], env)
            assert res.code == 0, res
            assert await asyncio.wait_for(robot.recv(), 10) == "back"
    finally:
        gw.stop()


async def test_the_fastapi_adapter_logs_counts_and_recovers_a_killed_control_subscription(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    backend = Backend("single", {"WSCTL_REDIS_URL": own_redis.url}, single=own_redis)
    raw = redis.Redis(port=own_redis.port)
    with fastapi_gateways(backend, tmp_path, names=("fa-cut",)) as [fa]:
        assert _resubscribes(fa.get("/metrics")[1], "fa-cut") == 0
        async with connect(f"{fa.ws_url}/ws/robot-2") as robot:
            async with open_test_store(backend) as store:
                await wait_for(lambda: store.get("robot-2"))
            assert raw.execute_command("CLIENT KILL TYPE pubsub") >= 1
            await wait_for(lambda: _resubscribes(fa.get("/metrics")[1], "fa-cut") == 1, timeout=15)
            lines = [line for line in fa.log.read_text().splitlines() if LOST_LINE in line]
            assert len(lines) == 1 and "ws_ctl:fa-cut" in lines[0], lines
            res = await ainvoke(["send", "robot-2", "back", "--timeout", "10"], backend.env)
            assert res.code == 0, res
            assert await asyncio.wait_for(robot.recv(), 10) == "back"


def _subscriber_ids(port: int) -> list[str]:
    """The client ids of the server's pub/sub connections (a closed one comes back new), in
    id order (CLIENT LIST's own order moves with activity)."""
    return sorted(c["id"] for c in redis.Redis(port=port).client_list(_type="pubsub"))


async def test_a_fan_out_to_a_frozen_gateway_never_overflows_its_control_subscription(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """50 batches of a 1 MiB message (25,000 robots) to a gateway that reads nothing (SIGSTOP):
    published at once, 50 MiB would pass Redis's 32 MB pub/sub limit and cut the gateway's
    control subscription. The fan-out keeps at most its window unanswered, stops sending to
    the stalled gateway after --timeout, and the gateway, thawed, never lost its subscription."""
    env = {"WSCTL_REDIS_URL": own_redis.url}
    gw = GatewayProcess(own_redis.url, "gw-frozen", heartbeat_interval=0.5).start(tmp_path)
    raw = redis.Redis(port=own_redis.port)
    robots = [f"robot-{n}" for n in range(25_000)]
    try:
        pipe = raw.pipeline(transaction=False)
        for robot_id in robots:
            pipe.hset(f"ws_conn:{robot_id}", mapping={"instance_id": "gw-frozen", "conn_id": "c"})
        pipe.execute()
        before = _subscriber_ids(own_redis.port)  # the gateway's control channel and inbox
        assert before
        assert gw.pid is not None
        os.kill(gw.pid, signal.SIGSTOP)
        try:
            async with open_test_store(Backend("single", env)) as store:
                outcomes: dict[str, int] = {}
                summary = await fan_out(
                    store.client,
                    store.keys,
                    chunks_of(robots),
                    "m" * MAX_MESSAGE_BYTES,
                    FanoutOptions(timeout=2.0),
                    on_outcome=lambda o: outcomes.update(
                        {o.outcome.value: outcomes.get(o.outcome.value, 0) + 1}
                    ),
                )
            assert outcomes == {"timeout": 25_000}, outcomes
            # batches of 500 carrying ~1 MiB each: the window's worth, never the 50
            assert 0 < summary.sent <= 500 * (WINDOW_BYTES // MAX_MESSAGE_BYTES)
            assert _subscriber_ids(own_redis.port) == before  # never closed
        finally:
            os.kill(gw.pid, signal.SIGCONT)
        res = await ainvoke(["ping", "gw-frozen", "--timeout", "20"], env)
        assert res.code == 0, res
        metrics = _http(f"http://127.0.0.1:{gw.port}/metrics")
        assert _resubscribes(metrics, "gw-frozen") == 0
        assert _subscriber_ids(own_redis.port) == before
    finally:
        gw.stop()
    assert gw.log_path is not None and LOST_LINE not in gw.log_path.read_text()


async def _listen(client: aioredis.Redis, channel: str) -> Any:
    pubsub = client.pubsub()
    await pubsub.subscribe(channel)
    return pubsub


async def _drain(pubsub: Any, seconds: float, until: int = 0) -> list[bytes]:
    """Messages on ``pubsub`` for ``seconds`` (or until ``until`` of them came)."""
    got: list[bytes] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (remaining := deadline - loop.time()) > 0 and not (until and len(got) >= until):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=remaining)
        if message and message["type"] == "message":
            got.append(message["data"])
    return got


def _padded(make: Callable[[str], str], size: int) -> str:
    """``make(padding)`` grown to exactly ``size`` bytes through its ASCII padding."""
    text = make("")
    return make("p" * (size - len(text.encode())))


async def test_a_forward_too_large_for_one_message_is_rejected_and_never_published(
    single: Backend,
) -> None:
    """An envelope that fits (from some other requester, with a huge origin) grows past the
    bound when the gateway adds its hop: it answers ``rejected`` and forwards nothing."""
    reply_channel = "ws_reply:too-large-forward"
    async with (
        running_fleet(single.env) as fleet,
        open_test_store(single) as store,
        connect(f"{fleet['gw-b'].ws_url}/ws/robot-9") as robot,
    ):
        await wait_for(lambda: store.get("robot-9"))
        raw = aioredis.Redis(port=single.single.port)  # type: ignore[union-attr]
        replies, at_b = await _listen(raw, reply_channel), await _listen(raw, "ws_ctl:gw-b")
        text = _padded(
            lambda pad: encode(
                Envelope(
                    op=Op.SEND, robot_id="robot-9", message="hi", reply_to=reply_channel, origin=pad
                )
            ),
            MAX_PUBLISH_BYTES - 10,
        )
        await raw.publish("ws_ctl:gw-a", text)
        [data] = await _drain(replies, 10, until=1)
        reply = decode_reply(data)
        assert reply.status is Status.REJECTED and reply.instance == "gw-a"
        assert reply.reason is not None and "too large to forward" in reply.reason
        assert await _drain(at_b, 0.5) == []
        assert fleet["gw-a"].metrics.envelopes_refused == 1
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(robot.recv(), 0.3)
        await replies.aclose()
        await at_b.aclose()
        await raw.aclose()


async def test_a_forwarded_batch_too_large_for_one_message_is_split_and_all_delivered(
    single: Backend,
) -> None:
    reply_channel = "ws_reply:split-batch"
    payload = 1_000_000
    items = tuple(Item(str(n), f"bot-{n % 2}", chr(97 + n) * payload) for n in range(8))
    async with (
        running_fleet(single.env) as fleet,
        open_test_store(single) as store,
        connect(f"{fleet['gw-b'].ws_url}/ws/bot-0") as bot0,
        connect(f"{fleet['gw-b'].ws_url}/ws/bot-1") as bot1,
    ):
        await wait_for(lambda: store.get("bot-0"))
        await wait_for(lambda: store.get("bot-1"))
        raw = aioredis.Redis(port=single.single.port)  # type: ignore[union-attr]
        replies, at_b = await _listen(raw, reply_channel), await _listen(raw, "ws_ctl:gw-b")
        text = _padded(
            lambda pad: encode_batch(Batch(items=items, reply_to=reply_channel, origin=pad)),
            MAX_PUBLISH_BYTES - 10,
        )
        await raw.publish("ws_ctl:gw-a", text)
        delivered: list[str] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while len(delivered) < 8 and loop.time() < deadline:
            for data in await _drain(replies, 1):
                reply = decode_any_reply(data)
                assert isinstance(reply, BatchReply) and not reply.failed, reply
                delivered.extend(reply.delivered)
        assert sorted(delivered) == [str(n) for n in range(8)]
        assert len(await _drain(at_b, 1, until=2)) == 2  # two forwards, each within the bound
        for robot, first in ((bot0, 0), (bot1, 1)):
            texts = [await asyncio.wait_for(robot.recv(), 10) for _ in range(4)]
            assert [t[0] for t in texts] == [chr(97 + n) for n in range(first, 8, 2)]
        await replies.aclose()
        await at_b.aclose()
        await raw.aclose()


async def test_a_reply_too_large_for_one_message_is_never_published(single: Backend) -> None:
    """An inventory request whose robot id nearly fills a message: the reply carries it back
    with the gateway's hop and would not fit; the gateway logs and counts it, publishes
    nothing, and goes on answering."""
    reply_channel = "ws_reply:too-large-reply"
    async with running_fleet(single.env, names=("gw-a",)) as fleet:
        raw = aioredis.Redis(port=single.single.port)  # type: ignore[union-attr]
        replies = await _listen(raw, reply_channel)
        text = _padded(
            lambda pad: encode(
                Envelope(op=Op.INVENTORY, robot_id="r" + pad, reply_to=reply_channel)
            ),
            MAX_PUBLISH_BYTES - 10,
        )
        await raw.publish("ws_ctl:gw-a", text)
        await wait_for(lambda: fleet["gw-a"].metrics.envelopes_refused == 1, timeout=10)
        assert await _drain(replies, 0.5) == []
        await replies.aclose()
        await raw.aclose()
        res = await ainvoke(["ping", "gw-a"], single.env)
        assert res.code == 0, res
