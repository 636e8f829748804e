"""Batch envelopes and replies (protocol v2): round trips and what the decoder refuses."""

from __future__ import annotations

import json

import pytest

from wsctl.protocol.batch import (
    MAX_ITEMS,
    Batch,
    BatchReply,
    Item,
    Outcome,
    OwnerHint,
    decode_any_reply,
    decode_control,
    encode_batch,
    encode_batch_reply,
    encode_owner_hint,
    split,
)
from wsctl.protocol.envelopes import Envelope, Op, ProtocolError, Reply, Status, encode, reply_to


def test_a_batch_round_trips_with_shared_and_own_messages() -> None:
    batch = Batch(
        items=(Item("0", "r1"), Item("1", "r2", "own")), message="shared", reply_to="ws_reply:x"
    ).arrived("gw-a", 5.0)
    decoded = decode_control(encode_batch(batch))
    assert decoded == batch
    assert isinstance(decoded, Batch)
    assert [decoded.text(i) for i in decoded.items] == ["shared", "own"]


def test_a_forwarded_batch_keeps_id_route_and_reply_channel_and_counts_a_hop() -> None:
    batch = Batch(items=(Item("0", "r1", "a"), Item("1", "r2", "b")), reply_to="c")
    forward = batch.arrived("gw-a", 1.0).forwarded([batch.items[1]])
    assert (forward.id, forward.reply_to, forward.hops) == (batch.id, "c", 1)
    assert forward.items == (batch.items[1],) and forward.route[0].instance == "gw-a"


def test_a_batch_reply_round_trips_and_lists_every_outcome() -> None:
    reply = BatchReply(
        id="b1",
        instance="gw-a",
        delivered=("0", "2"),
        failed=(Outcome("1", Status.NOT_CONNECTED, "no entry"),),
        sent_at=1.0,
    )
    decoded = decode_any_reply(encode_batch_reply(reply))
    assert decoded == reply and isinstance(decoded, BatchReply)
    assert [(o.id, o.status) for o in decoded.outcomes()] == [
        ("0", Status.DELIVERED),
        ("2", Status.DELIVERED),
        ("1", Status.NOT_CONNECTED),
    ]
    assert len(decoded) == 3


def test_version_1_envelopes_and_replies_still_decode() -> None:
    envelope = Envelope(op=Op.SEND, robot_id="r", message="m")
    assert decode_control(encode(envelope)) == envelope
    reply = reply_to(envelope, Status.DELIVERED, "gw-a")
    assert isinstance(decode_any_reply(encode(reply)), Reply)


def test_split_keeps_order_in_chunks() -> None:
    items = [Item(str(n), "r") for n in range(5)]
    assert [len(c) for c in split(items, 2)] == [2, 2, 1]
    assert [i.id for c in split(items, 2) for i in c] == ["0", "1", "2", "3", "4"]


@pytest.mark.parametrize(
    "payload",
    [
        '{"v":3,"op":"send","id":"a","items":[]}',
        '{"v":2,"op":"kick","id":"a","items":[]}',
        '{"v":2,"op":"send","id":"","items":[]}',
        '{"v":2,"op":"send","id":"a"}',
        '{"v":2,"op":"send","id":"a","items":[{"id":"1","robot_id":"r"}]}',
        '{"v":2,"op":"send","id":"a","message":"m","items":[{"id":"1"}]}',
        '{"v":2,"op":"send","id":"a","message":"m","items":[{"robot_id":"r"}]}',
        '{"v":2,"op":"send","id":"a","message":"m","items":[{"id":"1","robot_id":"r","message":5}]}',
        '{"v":2,"op":"send","id":"a","message":"m","items":[{"id":"1","robot_id":"r"},{"id":"1","robot_id":"s"}]}',
        '{"v":2,"op":"send","id":"a","message":"m","hops":-1,"items":[]}',
        '{"v":2,"op":"send","id":"a","message":"m","items":["r"]}',
        "[1]",
        "not json",
    ],
)
def test_the_batch_decoder_refuses_bad_envelopes(payload: str) -> None:
    with pytest.raises(ProtocolError):
        decode_control(payload)


def test_the_decoder_refuses_oversized_batches() -> None:
    items = [{"id": str(n), "robot_id": "r"} for n in range(MAX_ITEMS + 1)]
    text = json.dumps({"v": 2, "op": "send", "id": "a", "message": "m", "items": items})
    with pytest.raises(ProtocolError, match="items"):
        decode_control(text)


@pytest.mark.parametrize(
    "payload",
    [
        '{"v":2,"id":"a","instance":"i","failed":[{"id":"1","status":"delivered"}]}',
        '{"v":2,"id":"a","instance":"i","failed":[{"id":"1","status":"pong"}]}',
        '{"v":2,"id":"a","instance":"i","failed":[{"id":"1","status":"teleported"}]}',
        '{"v":2,"id":"a","instance":"i","delivered":[1]}',
        '{"v":2,"id":"a","delivered":[]}',
        '{"v":2,"id":"a","instance":"i","failed":[{"id":"1","status":"error","reason":3}]}',
    ],
)
def test_the_reply_decoder_refuses_bad_batch_replies(payload: str) -> None:
    with pytest.raises(ProtocolError):
        decode_any_reply(payload)


def test_items_for_a_version_1_owner_become_single_envelopes_keyed_back_to_the_item() -> None:
    from wsctl.protocol.batch import item_key, singles

    batch = Batch(
        items=(Item("0", "r1"), Item("1", "r2", "own")), message="shared", reply_to="c"
    ).arrived("gw-a", 2.0)
    envelopes = singles(batch, batch.items)
    assert [(e.id, e.robot_id, e.message, e.hops) for e in envelopes] == [
        (f"{batch.id}:0", "r1", "shared", 1),
        (f"{batch.id}:1", "r2", "own", 1),
    ]
    assert all(e.reply_to == "c" and e.route == batch.route for e in envelopes)
    assert decode_control(encode(envelopes[0])) == envelopes[0]
    assert item_key(envelopes[1].id) == (batch.id, "1")
    assert item_key("plainid") == ("plainid", "")


def test_an_owner_hint_round_trips_and_is_told_apart_from_a_batch() -> None:
    hint = OwnerHint(owners=(("r1", "gw-b"), ("r2", None)), origin="gw-a", sent_at=5.0)
    decoded = decode_control(encode_owner_hint(hint))
    assert isinstance(decoded, OwnerHint) and decoded == hint


@pytest.mark.parametrize(
    "payload",
    [
        '{"v":2,"op":"owners","id":"a","owners":[]}',
        '{"v":2,"op":"owners","id":"a","origin":"gw-a"}',
        '{"v":2,"op":"owners","id":"a","origin":"gw-a","owners":[{"owner":"gw-b"}]}',
        '{"v":2,"op":"owners","id":"a","origin":"gw-a","owners":[{"robot_id":"r","owner":""}]}',
        '{"v":2,"op":"owners","id":"a","origin":"gw-a","owners":[{"robot_id":"r","owner":3}]}',
        '{"v":2,"op":"owners","id":"a","origin":"gw-a","owners":["r"]}',
    ],
)
def test_the_decoder_refuses_bad_owner_hints(payload: str) -> None:
    with pytest.raises(ProtocolError):
        decode_control(payload)
