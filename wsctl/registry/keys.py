"""The only place that spells Redis key and channel names.

Connection entries live at ``{prefix}{robot_id}`` (the seed's ``ws_conn:``), instance liveness
records at ``{instance_prefix}{instance_id}``, and each instance listens for control envelopes on
``{control_prefix}{instance_id}``. Replies to the CLI come back on ``{reply_prefix}{token}``.

Events (``wsctl events``/``history``) go to one capped stream per writer,
``{events_prefix}{instance_id}`` (the CLI writes to ``{events_prefix}@cli``), and to a small
capped stream per robot, ``{robot_events_prefix}{robot_id}``; ``{events_index}`` is the set of
writer streams (so readers never SCAN for them).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from wsctl.errors import UsageError
from wsctl.shell import quoted

__all__ = [
    "CLI_WRITER",
    "MAX_ID_BYTES",
    "Keyspace",
    "escape_glob",
    "validate_existing_id",
    "validate_id",
]

MAX_ID_BYTES = 256
_GLOB_SPECIALS = frozenset("*?[]\\")


def escape_glob(text: str) -> str:
    """Escape Redis glob metacharacters so a SCAN MATCH pattern matches ``text`` literally."""
    return "".join("\\" + ch if ch in _GLOB_SPECIALS else ch for ch in text)


def validate_id(value: str, what: str = "robot id", *, utf8: bool = False) -> str:
    """Return ``value`` if it is a usable id: non-empty, <= 256 UTF-8 bytes, no control chars.

    Glob metacharacters and any Unicode are allowed: they are escaped wherever a pattern is built.
    ``utf8``: the id is one a gateway will write (its instance id), so it must be UTF-8 text,
    as robot ids are (gateways read them from URLs); otherwise bytes that are not UTF-8 (read
    from argv or keys with surrogateescape) are allowed, to name what a registry holds.
    """
    if not value:
        raise UsageError(f"{what} must not be empty")
    if utf8:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise UsageError(
                f"{what} is not valid UTF-8 text (character {exc.start}); ids a gateway "
                "writes are UTF-8, like robot ids"
            ) from None
    try:
        # surrogateescape: ids read from keys that are not UTF-8 round-trip to the same bytes
        size = len(value.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:
        raise UsageError(f"{what} {value!r} is not valid text") from None
    if size > MAX_ID_BYTES:
        raise UsageError(f"{what} is {size} bytes long; at most {MAX_ID_BYTES} are allowed")
    for ch in value:
        if unicodedata.category(ch) == "Cc":
            raise UsageError(f"{what} {quoted(value)} contains a control character")
    return value


def validate_existing_id(value: str, what: str = "robot id") -> str:
    """Return ``value`` if it can name an entry a registry holds (``show``, ``registry rm``).

    Ids are registry data: one wsctl would not create (control characters, over 256 bytes,
    empty: the key that is the bare prefix, bytes that are not UTF-8) can still be looked up
    and removed by its exact bytes (in bash ``$'old-\\x1b]0;x\\x07'``, ``''``); a removal is
    backed up like any other.
    """
    try:
        value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise UsageError(f"{what} {value!r} is not valid text") from None
    return value


@dataclass(frozen=True)
class Keyspace:
    """Key and channel naming for one deployment (prefixes are configurable)."""

    prefix: str = "ws_conn:"
    instance_prefix: str = "ws_inst:"
    control_prefix: str = "ws_ctl:"
    reply_prefix: str = "ws_reply:"
    events_prefix: str = "ws_events:"
    robot_events_prefix: str = "ws_revents:"
    events_index: str = "ws_events_streams"

    # connection entries
    def conn_key(self, robot_id: str) -> str:
        """The connection key of ``robot_id``."""
        return self.prefix + robot_id

    def robot_of(self, key: str) -> str:
        """The robot id of a connection key (the key without the prefix)."""
        return key[len(self.prefix) :] if key.startswith(self.prefix) else key

    def robots_of(self, keys: Sequence[str]) -> list[str]:
        """:meth:`robot_of` for a batch of keys (bulk reads)."""
        prefix, size = self.prefix, len(self.prefix)
        return [key[size:] if key.startswith(prefix) else key for key in keys]

    def conn_match(self, robot_glob: str | None = None) -> str:
        """A SCAN MATCH pattern for connection keys; ``robot_glob`` is a glob on robot ids."""
        return escape_glob(self.prefix) + (robot_glob if robot_glob is not None else "*")

    # instance liveness records
    def instance_key(self, instance_id: str) -> str:
        """The liveness-record key of ``instance_id``."""
        return self.instance_prefix + instance_id

    def instance_of(self, key: str) -> str:
        """The instance id of a liveness-record key."""
        return key[len(self.instance_prefix) :]

    def instance_match(self) -> str:
        """A SCAN pattern for every liveness record."""
        return escape_glob(self.instance_prefix) + "*"

    # channels
    def control_channel(self, instance_id: str) -> str:
        """The channel ``instance_id`` listens on for control envelopes."""
        return self.control_prefix + instance_id

    def reply_channel(self, token: str) -> str:
        """A private channel for the replies to one request (``token`` makes it unique)."""
        return self.reply_prefix + token

    # event streams
    def events_key(self, writer: str) -> str:
        """The capped event stream of one writer (an instance id, or :data:`CLI_WRITER`)."""
        return self.events_prefix + writer

    def writer_of(self, events_key: str) -> str:
        """The writer (instance or CLI) of an event stream key."""
        return events_key[len(self.events_prefix) :]

    def robot_events_key(self, robot_id: str) -> str:
        """The small capped stream of one robot's events (what ``history`` reads)."""
        return self.robot_events_prefix + robot_id


# The writer name of events the CLI records (``reaped``, ``removed``, ``set``, ``imported``).
CLI_WRITER = "@cli"
