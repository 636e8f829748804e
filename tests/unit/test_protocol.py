"""Control-channel envelopes: round trips and strict decoding."""

from __future__ import annotations

import json

import pytest

from wsctl.protocol.envelopes import (
    Envelope,
    Hop,
    Op,
    ProtocolError,
    Status,
    decode_envelope,
    decode_reply,
    encode,
    reply_to,
)


def test_envelope_round_trip_keeps_route_and_hops() -> None:
    env = Envelope(op=Op.SEND, robot_id="r1", message='{"a":1}', reply_to="ws_reply:x")
    env = env.arrived("gw-a", env.sent_at + 0.001).forwarded()
    back = decode_envelope(encode(env))
    assert back == env and back.hops == 1 and back.route[0].instance == "gw-a"


def test_reply_hop_latencies_are_measured_from_the_send() -> None:
    env = Envelope(op=Op.SEND, robot_id="r", message="m", sent_at=100.0)
    env = env.arrived("a", 100.002).arrived("b", 100.005)
    reply = decode_reply(encode(reply_to(env, Status.DELIVERED, "b")))
    assert [(i, round(ms, 3)) for i, ms in reply.hop_latencies_ms()] == [("a", 2.0), ("b", 3.0)]
    assert reply.route == (Hop("a", 100.002), Hop("b", 100.005))


@pytest.mark.parametrize(
    "payload",
    [
        "not json",
        "[]",
        json.dumps({"v": 99, "op": "send", "id": "x"}),
        json.dumps({"v": 1, "op": "explode", "id": "x"}),
        json.dumps({"v": 1, "op": "send", "id": "x", "robot_id": "r"}),
        json.dumps({"v": 1, "op": "kick", "id": "x"}),
        json.dumps({"v": 1, "op": "ping", "id": "x", "hops": -1}),
        json.dumps({"v": 1, "op": "ping", "id": ""}),
        json.dumps({"v": 1, "op": "ping", "id": "x", "sent_at": "yesterday"}),
        json.dumps({"v": 1, "op": "ping", "id": "x", "route": [{"instance": "a", "at": "?"}]}),
    ],
)
def test_bad_envelopes_raise_protocol_error(payload: str) -> None:
    with pytest.raises(ProtocolError):
        decode_envelope(payload)


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    data = json.loads(encode(Envelope(op=Op.PING)))
    data["future_field"] = 1
    assert decode_envelope(json.dumps(data)).op is Op.PING


def test_encode_carries_every_field_of_envelopes_and_replies() -> None:
    from dataclasses import fields

    from wsctl.protocol.envelopes import Reply

    env = Envelope(op=Op.PING)
    assert set(json.loads(encode(env))) == {f.name for f in fields(Envelope)}
    reply = reply_to(env, Status.PONG, "gw")
    assert set(json.loads(encode(reply))) == {f.name for f in fields(Reply)}


def test_reply_with_a_non_numeric_time_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode_reply(json.dumps({"v": 1, "id": "x", "status": "pong", "replied_at": "soon"}))


def test_message_problem_names_text_a_websocket_cannot_carry() -> None:
    from wsctl.protocol.envelopes import message_problem

    assert message_problem("café ☃", 100) is None
    assert message_problem("caf\udce9", 100) == "message is not valid UTF-8 text"
    assert message_problem("\ud800", 100) == "message is not valid UTF-8 text"
    assert message_problem("é" * 51, 100) == "message larger than 100 bytes"
