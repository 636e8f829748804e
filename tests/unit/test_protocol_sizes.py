"""The size bounds of the control channel (docs/protocol.md §7, "Sizes"): what fits one
message, how batches and replies too large for one are split, and that every PUBLISH of
wsctl goes through the one module that enforces the bound."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import wsctl
from wsctl.errors import ConfigError
from wsctl.gateway.core import CoreConfig, FleetCore
from wsctl.ops.fanout import BATCH_ITEMS
from wsctl.protocol.batch import (
    Batch,
    BatchReply,
    Item,
    Outcome,
    batch_reply_from_data,
    decode_control,
    encode_batch,
    encode_batch_reply,
    load_object,
    pack_batch,
    pack_reply,
)
from wsctl.protocol.envelopes import (
    MAX_MESSAGE_BYTES,
    MAX_PUBLISH_BYTES,
    MAX_REQUEST_BYTES,
    Envelope,
    Op,
    Status,
    encode,
    fits,
    format_bytes,
    message_oversize,
    oversize,
    utf8_size,
)
from wsctl.redis.target import Target

ROOT = Path(wsctl.__file__).parent


def test_the_bounds_stay_far_under_redis_default_pubsub_output_buffer_limits() -> None:
    hard, soft = 32 * 1024 * 1024, 8 * 1024 * 1024  # client-output-buffer-limit pubsub 32mb 8mb
    assert hard // 4 >= MAX_PUBLISH_BYTES
    assert soft >= MAX_PUBLISH_BYTES
    assert MAX_MESSAGE_BYTES == 1 << 20 and MAX_REQUEST_BYTES < MAX_PUBLISH_BYTES


def test_sizes_are_utf8_bytes_not_characters() -> None:
    assert utf8_size("abc") == 3 and utf8_size("é") == 2 and utf8_size("🤖") == 4
    assert utf8_size("caf\udce9") == 6  # a lone surrogate: counted high, never low
    assert fits("é" * 50, 100) and not fits("é" * 51, 100)
    assert fits("x" * 25, 100)  # short: answered without encoding


def test_a_message_over_the_largest_any_gateway_accepts_is_oversize() -> None:
    assert message_oversize("x" * MAX_MESSAGE_BYTES) is None
    reason = message_oversize("x" * (MAX_MESSAGE_BYTES + 1))
    assert reason == "message larger than 1048576 bytes"
    assert message_oversize("é" * (MAX_MESSAGE_BYTES // 2 + 1)) is not None
    assert format_bytes(8 << 20) == "8 MiB" and format_bytes(1536) == "1,536 bytes"


def test_a_request_carrying_the_largest_message_fits_whatever_its_text() -> None:
    """JSON escapes a control character in 6 bytes: 1 MiB of them is a 6 MiB envelope, still
    within what a requester publishes, with room for a batch of long robot ids."""
    worst = "\x01" * MAX_MESSAGE_BYTES
    single = Envelope(op=Op.SEND, robot_id="r" * 256, message=worst, reply_to="ws_reply:x")
    assert oversize(encode(single), MAX_REQUEST_BYTES) is None
    batch = Batch(
        items=tuple(Item(str(n), "\x02" * 256) for n in range(BATCH_ITEMS)), message=worst
    )
    packed, unfit = pack_batch(batch, MAX_REQUEST_BYTES)
    assert len(packed) == 1 and unfit == []


def test_pack_batch_returns_a_batch_that_fits_as_it_is() -> None:
    batch = Batch(items=(Item("0", "a"), Item("1", "b")), message="hi")
    [(same, text)], unfit = pack_batch(batch)
    assert same == batch and text == encode_batch(batch) and unfit == []


def test_pack_batch_splits_a_batch_too_large_for_one_message_keeping_order_and_id() -> None:
    batch = Batch(
        items=tuple(Item(str(n), f"robot-{n}", "x" * 100) for n in range(40)),
        reply_to="ws_reply:r",
        hops=1,
    )
    packed, unfit = pack_batch(batch, 1000)
    assert unfit == [] and len(packed) > 1
    assert all(utf8_size(text) <= 1000 for _, text in packed)
    assert [i for part, _ in packed for i in part.items] == list(batch.items)
    for part, text in packed:
        decoded = decode_control(text)
        assert isinstance(decoded, Batch) and decoded.items == part.items
        assert (decoded.id, decoded.reply_to, decoded.hops) == (batch.id, "ws_reply:r", 1)


def test_pack_batch_leaves_out_an_item_too_large_even_alone() -> None:
    batch = Batch(items=(Item("0", "a"), Item("1", "b" * 2000), Item("2", "c")), message="m")
    packed, unfit = pack_batch(batch, 1000)
    assert [i.id for i in unfit] == ["1"]
    assert [i.id for part, _ in packed for i in part.items] == ["0", "2"]


def test_pack_reply_splits_outcomes_over_replies_with_the_same_id() -> None:
    reply = BatchReply(
        id="b1",
        instance="gw-a",
        delivered=tuple(str(n) for n in range(200)),
        failed=tuple(Outcome(f"f{n}", Status.NOT_CONNECTED, "no socket " * 5) for n in range(20)),
    )
    texts, left_out = pack_reply(reply, 700)
    assert left_out == 0 and len(texts) > 1 and all(utf8_size(t) <= 700 for t in texts)
    parts = [batch_reply_from_data(load_object(t)) for t in texts]
    assert {p.id for p in parts} == {"b1"}
    assert [i for p in parts for i in p.delivered] == list(reply.delivered)
    assert [o for p in parts for o in p.failed] == list(reply.failed)
    assert pack_reply(reply) == ([encode_batch_reply(reply)], 0)  # the real bound: one reply


def test_a_gateway_accepts_no_larger_message_than_requesters_send() -> None:
    """The ceiling of ``--max-message-bytes`` is the bound requesters refuse larger messages
    by, before publishing: a gateway configured higher could get what it cannot take."""
    FleetCore(CoreConfig(instance_id="gw-a", max_message_bytes=MAX_MESSAGE_BYTES), Target("tcp"))
    with pytest.raises(ConfigError, match=r"max_message_bytes must be within 1\.\.1048576"):
        FleetCore(
            CoreConfig(instance_id="gw-a", max_message_bytes=MAX_MESSAGE_BYTES + 1), Target("tcp")
        )


def _publishing_calls(tree: ast.AST) -> list[int]:
    """Lines that publish: a ``.publish(`` call or a ``"PUBLISH"`` command string. The fleet
    core's own ``publish`` (the app's fire-and-forget send: ``self.core.publish``, and
    ``self.sender.publish``, which it hands the work to) is not a Redis call; the publish
    lanes' (``lanes.publish``) is wsctl.redis.internals', which checks sizes itself."""
    lines = []
    for node in ast.walk(tree):
        call = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        if call and node.func.attr == "publish":  # type: ignore[attr-defined]
            owner = ast.unparse(node.func.value).split(".")[-1]  # type: ignore[attr-defined]
            if owner in ("core", "sender", "lanes"):
                continue
            lines.append(node.lineno)  # type: ignore[attr-defined]
        if isinstance(node, ast.Constant) and node.value == "PUBLISH":
            lines.append(node.lineno)
    return lines


def test_only_redis_pubsub_and_the_publish_lanes_publish() -> None:
    """Every PUBLISH goes through wsctl.redis.pubsub (publish, publish_many) or the publish
    lanes of wsctl.redis.internals, which both refuse a text over MAX_PUBLISH_BYTES: no other
    module talks PUBLISH to Redis itself."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.as_posix().endswith(("/redis/pubsub.py", "/redis/internals.py")):
            continue
        for line in _publishing_calls(ast.parse(path.read_text(encoding="utf-8"))):
            found.append(f"{path.relative_to(ROOT)}:{line}")
    assert found == []
    own = _publishing_calls(ast.parse((ROOT / "redis/pubsub.py").read_text(encoding="utf-8")))
    assert own, "the finder finds redis_pubsub's own publishes"
