"""Reusable JSON encoders for the hot paths (jsonl listings, exports, backups). Pure.

``json.dumps`` builds a new C encoder on every call, a quarter of its cost for a small
object; these build one once. Output is exactly ``json.dumps(value, ensure_ascii=False,
...)`` with the same separators and ``default``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json import encoder as _json_encoder
from typing import Any

__all__ = ["make_encoder"]


def _not_serializable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def make_encoder(
    *, compact: bool = False, default: Callable[[Any], Any] | None = None
) -> Callable[[Any], str]:
    """``json.dumps(value, ensure_ascii=False, separators=..., default=default)`` as one
    reused encoder. ``compact`` uses ``(",", ":")``. Values must not be circular."""
    item_sep, key_sep = (",", ":") if compact else (", ", ": ")
    fallback = default or _not_serializable
    make = getattr(_json_encoder, "c_make_encoder", None)  # CPython's C accelerator
    if make is None:  # pragma: no cover - CPython always has it
        slow = json.JSONEncoder(
            ensure_ascii=False, separators=(item_sep, key_sep), default=fallback
        ).encode
        return lambda value: str(slow(value))
    one = make(
        None, fallback, _json_encoder.encode_basestring, None, key_sep, item_sep, False, False, True
    )
    return lambda value: "".join(one(value, 0))
