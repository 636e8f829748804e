"""The reused JSON encoders write exactly what json.dumps would."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsctl.jsonenc import make_encoder

VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=8), VALUES, max_size=6))
def test_default_encoder_is_json_dumps_with_unicode_kept(row: dict[str, object]) -> None:
    assert make_encoder(default=str)(row) == json.dumps(row, ensure_ascii=False, default=str)


@given(st.dictionaries(st.text(max_size=8), VALUES, max_size=6))
def test_compact_encoder_is_json_dumps_with_compact_separators(row: dict[str, object]) -> None:
    expected = json.dumps(row, ensure_ascii=False, separators=(",", ":"))
    assert make_encoder(compact=True)(row) == expected


def test_default_turns_other_values_into_strings() -> None:
    moment = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    assert make_encoder(default=str)({"at": moment}) == '{"at": "2026-11-27 12:00:00+00:00"}'


def test_without_default_other_values_are_a_type_error() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        make_encoder(compact=True)({"at": object()})
