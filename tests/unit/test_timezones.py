"""Time-zone names as settings spell them."""

from __future__ import annotations

from datetime import UTC
from zoneinfo import ZoneInfo

import pytest

from wsctl.timezones import resolve_tz


def test_resolve_tz_accepts_local_utc_and_iana_names() -> None:
    assert resolve_tz("local") is None and resolve_tz("utc") is UTC
    assert resolve_tz("Asia/Shanghai") == ZoneInfo("Asia/Shanghai")
    with pytest.raises(ValueError):
        resolve_tz("Nowhere/Here")
