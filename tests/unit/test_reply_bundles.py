"""Bundled batch replies (protocol v2, ``reply_hold_ms``): the envelope, its packing within the
size limits, the inbox's dispatch of each bundled reply, and the owner's Nagle-style holder."""

from __future__ import annotations

import json
from typing import Any

import pytest

from wsctl.gateway.batching import ReplyHolder
from wsctl.protocol.batch import (
    BATCH_BYTES,
    MAX_REPLY_HOLD_MS,
    Batch,
    BatchReply,
    Item,
    Outcome,
    ReplyBundle,
    decode_any_reply,
    decode_control,
    decode_replies,
    encode_batch,
    encode_batch_reply,
    encode_reply_bundle,
    pack_bundles,
)
from wsctl.protocol.envelopes import ProtocolError, Reply, Status, encode, utf8_size
from wsctl.protocol.rpc import Inbox
from wsctl.registry.keys import Keyspace


def _reply(ident: str, n: int = 1) -> BatchReply:
    return BatchReply(
        id=ident,
        instance="gw-b",
        delivered=tuple(str(k) for k in range(n)),
        failed=(Outcome("x", Status.NOT_CONNECTED, "no entry"),),
        sent_at=1.0,
        replied_at=2.0,
    )


# ------------------------------------------------------------------ the field on the batch
def test_a_batch_carries_reply_hold_ms_only_when_it_accepts_bundles() -> None:
    plain = Batch(items=(Item("0", "r1", "m"),), reply_to="c")
    assert "reply_hold_ms" not in json.loads(encode_batch(plain))
    decoded = decode_control(encode_batch(plain))
    assert isinstance(decoded, Batch) and decoded.reply_hold_ms == 0
    held = Batch(items=(Item("0", "r1", "m"),), reply_to="c", reply_hold_ms=40)
    again = decode_control(encode_batch(held))
    assert isinstance(again, Batch) and again.reply_hold_ms == 40
    assert again.forwarded(again.items).reply_hold_ms == 40  # forwards keep it


@pytest.mark.parametrize(
    ("value", "taken"),
    [
        (37.5, 37),  # "half the time left" as a JavaScript requester computes it
        (-1, 0),
        (MAX_REPLY_HOLD_MS + 1, MAX_REPLY_HOLD_MS),
        (1e300, MAX_REPLY_HOLD_MS),
        ("5", 0),
        (True, 0),
        (None, 0),
    ],
)
def test_an_odd_reply_hold_ms_is_clamped_never_drops_the_batch(value: Any, taken: int) -> None:
    data = json.loads(encode_batch(Batch(items=(Item("0", "r1", "m"),))))
    data["reply_hold_ms"] = value
    batch = decode_control(json.dumps(data))
    assert isinstance(batch, Batch) and batch.reply_hold_ms == taken
    assert [i.robot_id for i in batch.items] == ["r1"]


# ------------------------------------------------------------------ the bundle
def test_a_bundle_round_trips_and_decodes_into_its_replies_in_order() -> None:
    bundle = ReplyBundle(replies=(_reply("b1"), _reply("b2", 3)), instance="gw-b")
    text = encode_reply_bundle(bundle)
    assert "op" not in json.loads(text)  # a reply, not a request (no op)
    assert decode_replies(text) == [_reply("b1"), _reply("b2", 3)]


def test_decode_replies_takes_single_and_batch_replies_alone() -> None:
    single = Reply(id="e1", status=Status.DELIVERED, instance="gw-b")
    assert decode_replies(encode(single)) == [single]
    assert decode_replies(encode_batch_reply(_reply("b1"))) == [_reply("b1")]


def test_a_bundle_is_not_mistaken_for_a_batch_reply_by_decode_any_reply() -> None:
    text = encode_reply_bundle(ReplyBundle(replies=(_reply("b1"),), instance="gw-b"))
    with pytest.raises(ProtocolError, match="bundle"):
        decode_any_reply(text)


@pytest.mark.parametrize(
    "entry",
    [
        {"v": 1, "id": "e", "status": "delivered", "instance": "gw-b"},
        {"v": 2, "instance": "gw-b", "replies": []},
        "text",
    ],
)
def test_a_bundle_holds_only_batch_replies(entry: Any) -> None:
    with pytest.raises(ProtocolError):
        decode_replies(json.dumps({"v": 2, "instance": "gw-b", "replies": [entry]}))


def test_a_bundle_of_more_than_max_items_replies_is_refused() -> None:
    one = json.loads(encode_batch_reply(_reply("b")))
    with pytest.raises(ProtocolError, match="more than"):
        decode_replies(json.dumps({"v": 2, "instance": "gw-b", "replies": [one] * 10_001}))


def test_pack_bundles_keeps_order_and_every_message_within_the_limit() -> None:
    texts = [encode_batch_reply(_reply(f"b{n}", n % 7)) for n in range(50)]
    limit = 1000
    packed = pack_bundles("gw-b", texts, limit)
    assert all(utf8_size(text) <= limit for text in packed)
    assert 1 < len(packed) < 50
    got = [r for text in packed for r in decode_replies(text)]
    assert [r.id for r in got] == [f"b{n}" for n in range(50)]
    assert got == [decode_any_reply(t) for t in texts]


def test_a_reply_alone_or_too_large_for_a_bundle_goes_as_itself() -> None:
    small = encode_batch_reply(_reply("b1"))
    assert pack_bundles("gw-b", [small]) == [small]
    large = encode_batch_reply(_reply("big", 60))
    limit = utf8_size(large) + 10  # fits alone, not inside a bundle's frame
    assert pack_bundles("gw-b", [small, large, small], limit) == [small, large, small]


def test_the_inbox_hands_each_bundled_reply_to_its_handler_as_if_alone() -> None:
    inbox = Inbox(client=None, keys=Keyspace())  # dispatch touches no Redis
    got: dict[str, list[Any]] = {"b1": [], "b2": []}
    inbox.expect("b1", got["b1"].append)
    inbox.expect("b2", got["b2"].append)
    inbox.dispatch(pack_bundles("gw-b", [encode_batch_reply(_reply(i)) for i in ("b1", "b2")])[0])
    assert got == {"b1": [_reply("b1")], "b2": [_reply("b2")]}


# ------------------------------------------------------------------ the owner's holder
def test_the_first_reply_after_a_quiet_spell_goes_at_once_the_next_ones_wait() -> None:
    holder = ReplyHolder(every=0.005)
    assert holder.offer("c", ["r1"], now=10.0, hold=0.1)
    assert not holder.offer("c", ["r2"], now=10.001, hold=0.1)
    assert not holder.offer("c", ["r3"], now=10.002, hold=0.1)
    assert holder.next_due == pytest.approx(10.005)
    assert holder.due(10.004) == []
    assert holder.due(10.0051) == [("c", ["r2", "r3"])]
    # at most one publish per interval: the next reply waits until 5 ms after that one
    assert not holder.offer("c", ["r4"], now=10.006, hold=0.1)
    assert holder.next_due == pytest.approx(10.0101)
    assert holder.due(10.0102) == [("c", ["r4"])]
    assert holder.offer("c", ["r5"], now=10.020, hold=0.1)  # quiet again: at once


def test_reply_channels_are_held_apart() -> None:
    holder = ReplyHolder(every=0.005)
    assert holder.offer("a", ["a1"], now=1.0, hold=0.1)
    assert holder.offer("b", ["b1"], now=1.001, hold=0.1)
    assert not holder.offer("a", ["a2"], now=1.002, hold=0.1)
    assert holder.due(1.0051) == [("a", ["a2"])]
    assert holder.held == 0


def test_nothing_is_held_longer_than_the_requester_allows() -> None:
    holder = ReplyHolder(every=0.010)
    assert holder.offer("c", ["r1"], now=1.0, hold=0.1)
    assert not holder.offer("c", ["r2"], now=1.001, hold=0.002)
    assert holder.next_due == pytest.approx(1.003)  # the requester's hold, not 1.010
    assert not holder.offer("c", ["r3"], now=1.002, hold=0.0)
    assert holder.next_due == pytest.approx(1.002)


def test_a_full_bundle_is_due_at_once() -> None:
    holder = ReplyHolder(every=0.010, limit=100)
    assert holder.offer("c", ["x"], now=1.0, hold=0.1)
    assert not holder.offer("c", ["y" * 60], now=1.001, hold=0.1)
    assert holder.next_due == pytest.approx(1.010)
    assert not holder.offer("c", ["z" * 60], now=1.002, hold=0.1)
    assert holder.next_due == pytest.approx(1.002)


def test_held_replies_are_bounded_by_one_bundle_of_utf8_bytes() -> None:
    holder = ReplyHolder(every=0.010)
    assert holder.limit == BATCH_BYTES
    assert holder.offer("c", ["x"], now=1.0, hold=0.1)
    text = "\u00e9" * (BATCH_BYTES // 2)  # half the limit in characters, all of it in bytes
    assert not holder.offer("c", [text], now=1.001, hold=0.1)
    assert holder.next_due == pytest.approx(1.001)  # full: due at once


def test_a_stopping_owner_takes_every_held_reply() -> None:
    holder = ReplyHolder(every=0.010)
    holder.offer("a", ["a1"], now=1.0, hold=0.1)
    holder.offer("a", ["a2"], now=1.001, hold=0.1)
    holder.offer("b", ["b1"], now=1.0, hold=0.1)
    holder.offer("b", ["b2"], now=1.001, hold=0.1)
    assert sorted(holder.take_all()) == [("a", ["a2"]), ("b", ["b2"])]
    assert holder.held == 0 and holder.next_due is None


def test_quiet_channels_are_forgotten_whether_their_replies_were_held_or_not() -> None:
    holder = ReplyHolder(every=0.005)
    for n in range(5000):  # requesters come and go (each process has its own inbox)
        assert holder.offer(f"c{n}", ["r"], now=n * 0.01, hold=0.1)
    assert len(holder._last) < 2048
    holder.offer("x", ["r1"], now=100.0, hold=0.1)
    holder.offer("x", ["r2"], now=100.001, hold=0.1)
    holder.due(101.0)
    assert len(holder._last) < 2048
