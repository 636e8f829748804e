"""The JSON codec of control-channel traffic: one place to choose it.

Compact separators, UTF-8 kept as is (no ``\\u`` escapes). The standard library's ``json``;
see docs/decisions.md (event loop and JSON codec) for the measurements
behind the choice.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dumps", "loads"]

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(obj: Any) -> str:
    """Compact JSON text of ``obj``."""
    return str(_ENCODER.encode(obj))


def loads(text: str | bytes) -> Any:
    """Decode JSON; raises ``ValueError`` (``json.JSONDecodeError``, ``UnicodeDecodeError``)."""
    return json.loads(text)
