"""Time-zone names as settings spell them (``local``, ``UTC``, IANA names). A leaf module: both
the settings loader and the registry model use it, and it depends on neither."""

from __future__ import annotations

from datetime import UTC, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["resolve_tz"]


def resolve_tz(name: str) -> tzinfo | None:
    """The zone naive timestamps are read in; ``local`` (None) means the machine's local zone.

    Raises:
        ValueError: the name is not ``local``, ``UTC`` or a zone the system knows.
    """
    if name.lower() == "local":
        return None
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None
