"""docs/protocol.md and docs/envelope.schema.json say what the code does.

The Lua bodies in the document are the ones the code runs, every JSON example decodes with
wsctl's own decoder and validates against the schema, and every envelope and reply the code can
build validates too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import jsonschema
import pytest

from wsctl.eventlog.model import Event, EventName
from wsctl.protocol.batch import (
    BATCH_VERSION,
    ITEM_STATUSES,
    MAX_ITEMS,
    Batch,
    BatchReply,
    Item,
    Outcome,
    OwnerHint,
    ReplyBundle,
    decode_any_reply,
    decode_control,
    encode_batch,
    encode_batch_reply,
    encode_owner_hint,
    encode_reply_bundle,
    reply_bundle_from_data,
)
from wsctl.protocol.envelopes import (
    MAX_HOPS,
    ROBOT_PING,
    ROBOT_PING_UNSUPPORTED,
    VERSION,
    CloseCode,
    Envelope,
    Op,
    ProtocolError,
    Status,
    decode_envelope,
    decode_reply,
    encode,
    message_problem,
    reply_to,
)
from wsctl.registry import store
from wsctl.registry.keys import CLI_WRITER, Keyspace
from wsctl.registry.model import F_CONN_ID, Registration, utcnow

DOCS = Path(__file__).parents[2] / "docs"
DOC = (DOCS / "protocol.md").read_text(encoding="utf-8")
SCHEMA = json.loads((DOCS / "envelope.schema.json").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

LUA_BLOCK = re.compile(r"<!-- lua:([A-Z_]+) -->\n```lua\n(.*?)```", re.S)
JSON_BLOCK = re.compile(r"```json\n(.*?)```", re.S)
# the scripts a gateway needs (WRITE_HASH serves wsctl's own registry set/import)
GATEWAY_SCRIPTS = {"REGISTER", "TOUCH", "COMPARE_AND_DELETE", "FENCED_DELETE"}


def _decode(text: str) -> Envelope | Any:
    if "replies" in json.loads(text):
        return reply_bundle_from_data(json.loads(text))
    if json.loads(text).get("v") == BATCH_VERSION:
        return decode_control(text) if "op" in json.loads(text) else decode_any_reply(text)
    return decode_envelope(text) if "op" in json.loads(text) else decode_reply(text)


def _encode(obj: Any) -> str:
    if isinstance(obj, Batch):
        return encode_batch(obj)
    if isinstance(obj, BatchReply):
        return encode_batch_reply(obj)
    if isinstance(obj, OwnerHint):
        return encode_owner_hint(obj)
    if isinstance(obj, ReplyBundle):
        return encode_reply_bundle(obj)
    return encode(obj)


def _valid(text: str) -> None:
    errors = [e.message for e in VALIDATOR.iter_errors(json.loads(text))]
    assert not errors, f"{errors} in {text}"


def test_the_schema_is_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_the_document_shows_each_gateway_script_exactly_as_the_code_runs_it() -> None:
    shown = dict(LUA_BLOCK.findall(DOC))
    assert set(shown) >= GATEWAY_SCRIPTS
    for name, body in shown.items():
        assert body == getattr(store, name).body.strip("\n") + "\n", f"{name} differs from code"


def test_every_json_example_decodes_with_wsctl_and_validates() -> None:
    examples = JSON_BLOCK.findall(DOC)
    assert len(examples) >= 10
    for text in examples:
        decoded = _decode(text)
        _valid(text)
        _valid(_encode(decoded))  # and what wsctl would write back for it


def test_the_examples_show_every_op_and_every_status() -> None:
    seen_ops, seen_status = set(), set()
    for text in JSON_BLOCK.findall(DOC):
        data = json.loads(text)
        seen_ops.add(data.get("op"))
        seen_status.add(data.get("status"))
    assert {o.value for o in Op} <= seen_ops
    assert {s.value for s in Status} <= seen_status


def test_every_op_and_status_is_documented() -> None:
    for op in Op:
        assert f"\n### {op.value}\n" in DOC, f"op {op.value} has no section"
        assert f"`{op.value}`" in DOC
    for status in Status:
        assert re.search(rf"^\| `{status.value}` \|", DOC, re.M), f"status {status.value}"


def test_schema_enums_are_exactly_the_protocol_enums() -> None:
    defs = SCHEMA["$defs"]
    assert set(defs["envelope"]["properties"]["op"]["enum"]) == {o.value for o in Op}
    assert set(defs["reply"]["properties"]["status"]["enum"]) == {s.value for s in Status}
    assert defs["envelope"]["properties"]["v"]["const"] == VERSION


def test_documented_names_and_limits_are_the_codes() -> None:
    keys = Keyspace()
    for prefix in (
        keys.prefix,
        keys.instance_prefix,
        keys.control_prefix,
        keys.reply_prefix,
        keys.events_prefix,
        keys.robot_events_prefix,
    ):
        assert f"`{prefix}{{" in DOC
    assert f"`{keys.events_index}`" in DOC and f"`{keys.events_key(CLI_WRITER)}`" in DOC
    for name in EventName:
        assert f"`{name.value}`" in DOC, f"event {name.value} not documented"
    for field_name in Event("e").to_fields():
        assert f"| `{field_name}` |" in DOC, f"event field {field_name} not documented"
    assert "| `draining` |" in DOC  # the liveness record's field
    assert f"hop limit {MAX_HOPS}" in DOC and f"`hops >= {MAX_HOPS}`" in DOC
    assert f"# The wsctl wire protocol (versions {VERSION} and {BATCH_VERSION})" in DOC
    assert f"at most {MAX_ITEMS:,} items" in DOC
    assert SCHEMA["$defs"]["batch"]["properties"]["items"]["maxItems"] == MAX_ITEMS
    fields = Registration("r", "i", "c", utcnow()).to_hash()
    for name in fields:
        assert f"| `{name}` |" in DOC, f"entry field {name} not documented"
    assert F_CONN_ID in fields


def test_the_documented_refusals_are_the_codes() -> None:
    not_text = message_problem("\udc80", 10)
    assert f'"{not_text}"' in DOC
    assert message_problem("x" * 11, 10) == "message larger than 10 bytes"
    assert '"message larger than N bytes"' in DOC


def test_every_close_code_and_the_unsupported_ping_are_documented() -> None:
    for code in CloseCode:
        assert f"**{code.value}**" in DOC, f"close code {code.name}"
    assert f'`data.{ROBOT_PING}` = `"{ROBOT_PING_UNSUPPORTED}"`' in DOC
    pong = SCHEMA["$defs"]["reply"]["allOf"][1]["then"]["properties"]["data"]["properties"]
    assert pong[ROBOT_PING] == {"const": ROBOT_PING_UNSUPPORTED, "description": ANY}


def _every_envelope() -> list[Envelope]:
    out = []
    for op in Op:
        robot = "robot-1" if op in (Op.SEND, Op.KICK) else None
        message = "hello" if op is Op.SEND else None
        plain = Envelope(op=op, robot_id=robot, message=message, reply_to="ws_reply:x")
        out += [plain, plain.arrived("gw-a", 1.5).forwarded(), Envelope(op=op, robot_id="r")]
    out.append(Envelope(op=Op.KICK, robot_id="r", conn_id="c1", origin="gw-b"))
    out.append(Envelope(op=Op.SEND, robot_id="r", message=""))
    return [e for e in out if e.op is not Op.SEND or e.message is not None]


@pytest.mark.parametrize("envelope", _every_envelope(), ids=lambda e: e.op.value)
def test_every_envelope_the_code_builds_validates(envelope: Envelope) -> None:
    _valid(encode(envelope))
    assert decode_envelope(encode(envelope)) == envelope


_DATA: dict[Status, list[dict[str, Any]]] = {
    Status.PONG: [
        {"connections": 3, "version": "0.1.0"},
        {"robot_rtt_ms": 1.2, "conn_id": "c"},
        {ROBOT_PING: ROBOT_PING_UNSUPPORTED, "conn_id": "c"},
    ],
    Status.INVENTORY: [
        {"connections": []},
        {"connections": [{"robot_id": "r", "conn_id": "c", "since": 1.0}]},
    ],
    Status.RESYNCED: [{"reregistered": 0}],
    Status.DRAINING: [
        {"draining": True, "batch": 5, "interval": 0.5, "connections": []},
        {"draining": True, "connections": [{"robot_id": "r", "conn_id": "c", "since": 1.0}]},
    ],
    Status.UNDRAINED: [{"draining": False, "connections": 0}],
}


@pytest.mark.parametrize("status", list(Status), ids=lambda s: s.value)
def test_every_reply_the_code_builds_validates(status: Status) -> None:
    request = Envelope(op=Op.SEND, robot_id="r", message="m").arrived("gw-a", 2.0)
    for data in _DATA.get(status, [{}]):
        reason = None if status in (Status.DELIVERED, Status.PONG) else "why"
        text = encode(reply_to(request, status, "gw-a", reason=reason, data=data))
        _valid(text)
        assert decode_reply(text).status is status


@pytest.mark.parametrize(
    "payload",
    [
        '{"v":2,"op":"ping","id":"a"}',
        '{"v":1,"op":"teleport","id":"a"}',
        '{"v":1,"op":"send","id":"a","robot_id":"r"}',
        '{"v":1,"op":"kick","id":"a"}',
        '{"v":1,"op":"ping","id":""}',
        '{"v":1,"op":"ping","id":"a","hops":-1}',
        '{"v":1,"op":"ping","id":"a","route":[{"at":1}]}',
        '{"v":1,"id":"a","status":"teleported","instance":"i"}',
        '{"v":1,"id":"a","status":"delivered","instance":"i","data":[]}',
    ],
)
def test_what_the_decoder_rejects_the_schema_rejects(payload: str) -> None:
    with pytest.raises(ProtocolError):
        _decode(payload)
    assert not VALIDATOR.is_valid(json.loads(payload))


def test_unknown_fields_are_allowed_by_decoder_and_schema() -> None:
    text = '{"v":1,"op":"ping","id":"a","priority":"high"}'
    assert decode_envelope(text).op is Op.PING
    _valid(text)


def test_the_examples_show_a_batch_a_forwarded_batch_and_batch_replies() -> None:
    batches = [_decode(t) for t in JSON_BLOCK.findall(DOC) if '"v":2' in t]
    kinds = {(type(b).__name__, getattr(b, "hops", None)) for b in batches}
    assert {("Batch", 0), ("Batch", 1), ("BatchReply", None)} <= kinds
    failed = {o.status for b in batches if isinstance(b, BatchReply) for o in b.failed}
    assert failed and failed <= ITEM_STATUSES


def test_the_schema_item_statuses_are_the_codes() -> None:
    reply = SCHEMA["$defs"]["batch_reply"]["properties"]["failed"]["items"]
    statuses = set(reply["properties"]["status"]["enum"])
    assert statuses == {s.value for s in ITEM_STATUSES if s is not Status.DELIVERED}
    assert SCHEMA["$defs"]["batch"]["properties"]["v"]["const"] == BATCH_VERSION


def test_the_examples_show_an_owner_hint_and_the_schema_tells_it_from_a_batch() -> None:
    hints = [_decode(t) for t in JSON_BLOCK.findall(DOC) if '"op":"owners"' in t]
    assert hints and all(isinstance(h, OwnerHint) for h in hints)
    bad = '{"v":2,"op":"owners","id":"a","origin":"gw-a","owners":[{"robot_id":"r","owner":""}]}'
    with pytest.raises(ProtocolError):
        _decode(bad)
    assert not VALIDATOR.is_valid(json.loads(bad))
    assert not VALIDATOR.is_valid({"v": 2, "op": "owners", "id": "a", "origin": "gw-a"})


def _every_batch() -> list[Batch | BatchReply | OwnerHint]:
    shared = Batch(items=(Item("0", "r1"), Item("1", "r2")), message="m", reply_to="ws_reply:x")
    own = Batch(items=(Item("0", "r1", "a"), Item("1", "r1", "")), reply_to=None)
    return [
        shared,
        own,
        shared.arrived("gw-a", 1.5).forwarded(shared.items[:1]),
        BatchReply(id="b", instance="gw-a", delivered=("0",)),
        BatchReply(
            id="b",
            instance="gw-a",
            failed=tuple(
                Outcome(str(n), s, "why")
                for n, s in enumerate(sorted(ITEM_STATUSES - {Status.DELIVERED}))
            ),
        ),
        OwnerHint(owners=(("r1", "gw-b"), ("r2", None)), origin="gw-a"),
    ]


@pytest.mark.parametrize("obj", _every_batch(), ids=lambda o: type(o).__name__)
def test_every_batch_and_batch_reply_the_code_builds_validates(
    obj: Batch | BatchReply | OwnerHint,
) -> None:
    text = _encode(obj)
    _valid(text)
    assert _decode(text) == obj


@pytest.mark.parametrize(
    "payload",
    [
        '{"v":2,"op":"send","id":"a","items":[{"id":"1","robot_id":"r"}]}',
        '{"v":2,"op":"send","id":"a","message":"m","items":[{"id":"1"}]}',
        '{"v":2,"op":"send","id":"a","message":"m"}',
        '{"v":2,"id":"a","instance":"i","failed":[{"id":"1","status":"pong"}]}',
    ],
)
def test_what_the_batch_decoder_rejects_the_schema_rejects(payload: str) -> None:
    with pytest.raises(ProtocolError):
        _decode(payload)
    assert not VALIDATOR.is_valid(json.loads(payload))
