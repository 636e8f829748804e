"""Connection listings (``wsctl list connections|robots``): filter rows and keep the first N
in a sort order, streaming the registry so memory stays flat (or bounded by N).

Rows are the stable dictionaries of :func:`wsctl.ops.views.connection_row`; the filtering and the
bounded sort are pure, :func:`connection_row_batches` and :func:`top_connection_rows` read the
store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from wsctl.ops.views import connection_row
from wsctl.registry.model import utcnow

if TYPE_CHECKING:  # the CLI imports this module for --help (SortKey): no redis-py then
    from wsctl.registry.store import RegistryStore

__all__ = [
    "ConnectionFilter",
    "SortKey",
    "TopRows",
    "connection_row_batches",
    "sort_rows",
    "top_connection_rows",
]


class SortKey(StrEnum):
    """The orders a listing can be sorted in (``--sort``)."""

    robot = "robot"
    instance = "instance"
    heartbeat = "heartbeat"
    connected = "connected"


# the row field each order sorts on, and whether it sorts descending
_SORT_FIELDS = {
    SortKey.robot: ("robot_id", False),
    SortKey.instance: ("instance_id", False),
    SortKey.heartbeat: ("heartbeat_age_s", False),
    SortKey.connected: ("connected_for_s", True),
}


@dataclass(frozen=True)
class ConnectionFilter:
    """Which connection rows a listing keeps (every condition given must hold)."""

    instance: str | None = None
    state: str | None = None  # "stale", "fresh" (online) or "malformed"
    older_than: float | None = None  # seconds since the last heartbeat

    def keep(self, row: dict[str, Any]) -> bool:
        """True when ``row`` (a :func:`~wsctl.ops.views.connection_row`) passes the filter."""
        if self.instance is not None and row["instance_id"] != self.instance:
            return False
        if self.state == "stale" and row["state"] != "stale":
            return False
        if self.state == "fresh" and row["state"] != "online":
            return False
        if self.state == "malformed" and row["state"] != "malformed":
            return False
        if self.older_than is not None:
            age = row["heartbeat_age_s"]
            if age is None or age <= self.older_than:
                return False
        return True


def sort_rows(rows: list[dict[str, Any]], key: SortKey) -> list[dict[str, Any]]:
    """``rows`` in ``key`` order; robot id breaks ties, rows without the field come last."""
    name, reverse = _SORT_FIELDS[key]
    present = [r for r in rows if r.get(name) is not None]
    missing = [r for r in rows if r.get(name) is None]
    present.sort(key=lambda r: (r[name], r["robot_id"]), reverse=reverse)
    return present + missing


class TopRows:
    """The first ``limit`` rows in ``key`` order (all of them without a limit), held in
    O(limit) memory: the buffer is sorted and cut back to ``limit`` whenever it grows past
    ``max(2 * limit, 10_000)``. The order is total (robot id breaks ties, rows without the
    sort field keep their arrival order at the end), so cutting early loses nothing."""

    def __init__(self, key: SortKey, limit: int | None) -> None:
        self.key, self.limit = key, limit
        self.seen = 0  # rows added, kept or not: how many matched
        self._rows: list[dict[str, Any]] = []
        self._cut_at = None if limit is None else max(2 * limit, 10_000)

    def add(self, rows: list[dict[str, Any]]) -> None:
        """Take one batch of rows."""
        self.seen += len(rows)
        self._rows.extend(rows)
        if self._cut_at is not None and len(self._rows) > self._cut_at:
            self._rows = sort_rows(self._rows, self.key)[: self.limit]

    def result(self) -> list[dict[str, Any]]:
        """The first ``limit`` rows of everything added, sorted."""
        return sort_rows(self._rows, self.key)[: self.limit]


async def connection_row_batches(
    store: RegistryStore, robot_glob: str | None, flt: ConnectionFilter, timeout: float
) -> AsyncIterator[list[dict[str, Any]]]:
    """Rows of the entries that pass ``flt``, one list per store batch (streamed).

    Args:
        robot_glob: a Redis MATCH pattern for robot ids (None: every robot).
        timeout: seconds without a heartbeat that make an entry stale.
    """
    async for batch in store.iter_batches(robot_glob):
        now = utcnow()
        rows = [connection_row(entry, now, timeout) for entry in batch]
        yield [row for row in rows if flt.keep(row)]


async def top_connection_rows(
    store: RegistryStore,
    robot_glob: str | None,
    flt: ConnectionFilter,
    timeout: float,
    key: SortKey,
    limit: int | None,
) -> TopRows:
    """The first ``limit`` rows passing ``flt`` in ``key`` order, and how many matched
    (:attr:`TopRows.seen`), reading the whole registry once."""
    top = TopRows(key, limit)
    async for rows in connection_row_batches(store, robot_glob, flt, timeout):
        top.add(rows)
    return top
