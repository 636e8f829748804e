"""``events --since``: an age like every other age flag (docs/reference/exit-codes.md: from
1 ms up to ten years); `--since 99999999999d` was taken without a word."""

from __future__ import annotations

import pytest

from wsctl.errors import UsageError
from wsctl.ops.events import parse_since


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90.0), ("10m", 600.0), ("2h", 7200.0), ("3650d", 3650 * 86400.0)]
)
def test_since_takes_ages_up_to_ten_years(text: str, seconds: float) -> None:
    assert parse_since(text) == seconds


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("99999999999d", "must be at most"),
        ("0", "must be greater than 0"),
        ("0.0001s", "must be at least 0.001 seconds"),
        ("yesterday", "use a number with s, m, h or d"),
    ],
)
def test_since_refuses_what_no_age_flag_takes(text: str, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        parse_since(text)
