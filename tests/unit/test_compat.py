"""How wsctl tells instances that nobody listens for apart (pure)."""

from __future__ import annotations

import pytest

from wsctl.ops.compat import Participation, classify, explain, writes_conn_id
from wsctl.registry.instances import Liveness
from wsctl.registry.model import entry_from_hash


@pytest.mark.parametrize(
    ("listening", "state", "conn_id", "expected"),
    [
        (True, Liveness.UNKNOWN, False, Participation.LISTENING),
        (False, Liveness.ALIVE, True, Participation.ALIVE_NOT_LISTENING),
        (False, Liveness.ALIVE, False, Participation.ALIVE_NOT_LISTENING),
        (False, Liveness.UNKNOWN, False, Participation.NO_CONTROL_PROTOCOL),
        (False, Liveness.UNKNOWN, True, Participation.DOWN_OR_UNKNOWN),
        (False, Liveness.UNKNOWN, None, Participation.DOWN_OR_UNKNOWN),
        (False, Liveness.DEAD, False, Participation.DOWN_OR_UNKNOWN),
    ],
)
def test_classify_by_listener_liveness_record_and_conn_id(
    listening: bool, state: Liveness, conn_id: bool | None, expected: Participation
) -> None:
    assert classify(listening, state, conn_id) is expected


def test_an_original_design_instance_is_said_not_to_speak_the_protocol() -> None:
    text = explain("orig-a", "ws_ctl:orig-a", Participation.NO_CONTROL_PROTOCOL)
    assert text.startswith("orig-a does not speak wsctl's control protocol")
    assert "ws_ctl:orig-a" in text and "docs/protocol.md" in text and "FastAPI adapter" in text


def test_explanations_differ_for_each_kind_of_silence() -> None:
    texts = {
        explain("i", "ws_ctl:i", kind)
        for kind in Participation
        if kind is not Participation.LISTENING
    }
    assert len(texts) == 3 and all("\n" not in t for t in texts)


def test_writes_conn_id_is_true_if_any_entry_of_the_instance_has_one() -> None:
    entries = [
        entry_from_hash("r1", {"instance_id": "a", "conn_id": "c"}),
        entry_from_hash("r2", {"instance_id": "a"}),
        entry_from_hash("r3", {"instance_id": "b"}),
        entry_from_hash("r4", {}),
    ]
    assert writes_conn_id(entries) == {"a": True, "b": False}


def test_the_pointers_name_a_document_and_a_module_that_exist() -> None:
    import importlib.util
    from pathlib import Path

    from wsctl.ops.compat import ADAPTER, PROTOCOL_DOC

    assert (Path(__file__).parents[2] / PROTOCOL_DOC).is_file()
    assert "wsctl.gateway.asgi" in ADAPTER
    assert importlib.util.find_spec("wsctl.gateway.asgi") is not None
