"""The event log's writer index (``ws_events_streams``): the set of writer stream names that
``wsctl events`` reads instead of scanning the keyspace, and its pruning.

Writers add their stream's name after each batch of events; names of streams that are gone
(their writer went quiet for the retention and the stream expired) are removed by
:func:`prune_index`, which ``wsctl reap`` runs after each pass and every gateway's event writer
runs shortly after start and then every few hours. The rule is
:func:`wsctl.eventlog.model.index_entry_stale`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from wsctl.eventlog.model import DEFAULT_RETENTION_S, index_entry_stale
from wsctl.redis.target import AsyncClient
from wsctl.registry.keys import Keyspace

__all__ = ["PRUNE_DEADLINE", "PruneOutcome", "prune_index"]

PRUNE_PAGE = 500  # index names per SSCAN page (and per pipelined check)
PRUNE_MAX_PAGES = 400  # a bound on one pass: 200k names
PRUNE_DEADLINE = 30.0  # seconds one pass may take; the rest waits for the next pass


@dataclass
class PruneOutcome:
    """What one pass of :func:`prune_index` did: names examined, removed from the index, and
    put back (written to between the check and the removal). ``complete`` is False when the
    pass stopped at its page or time bound (the next pass goes on)."""

    examined: int = 0
    pruned: int = 0
    kept_back: int = 0
    complete: bool = True


async def _newest_ids(client: AsyncClient, keys: list[str]) -> list[tuple[str | None, int | None]]:
    """Per key: the id of its newest entry (None: gone, empty, or not a stream) and its PTTL."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.xrevrange(key, "+", "-", count=1)
        pipe.pttl(key)
    replies = await pipe.execute(raise_on_error=False)
    out: list[tuple[str | None, int | None]] = []
    for page, ttl in zip(replies[::2], replies[1::2], strict=True):
        newest = None
        if isinstance(page, list) and page and isinstance(page[0], (list, tuple)) and page[0]:
            newest = str(page[0][0])
        out.append((newest, ttl if isinstance(ttl, int) else None))
    return out


async def prune_index(
    client: AsyncClient,
    keys: Keyspace,
    *,
    retention_s: float = DEFAULT_RETENTION_S,
    now: float | None = None,
    deadline: float = PRUNE_DEADLINE,
) -> PruneOutcome:
    """Remove from the writer index the names of streams that are gone (expired after their
    writer went quiet for the retention, deleted, or not a stream), and of streams that never
    expire whose newest event is older than ``retention_s`` (:func:`index_entry_stale`).

    SSCAN in pages (no KEYS; the index is one key, so one node of a cluster), each page's
    streams checked in one pipeline. A name is removed, then its stream checked again: a writer
    that wrote in between is put back (writers add their name after each batch's XADDs, so a
    stream written during the pass is listed at the end of it either way). Bounded in pages and
    time; each call is bounded by the client's socket timeout. Raises on a Redis failure."""
    now = time.time() if now is None else now
    outcome = PruneOutcome()
    started = time.monotonic()
    cursor: Any = 0
    for _ in range(PRUNE_MAX_PAGES):
        cursor, members = await client.sscan(keys.events_index, cursor, count=PRUNE_PAGE)
        names = sorted({str(m) for m in members if str(m).startswith(keys.events_prefix)})
        outcome.examined += len(names)
        if names:
            checked = await _newest_ids(client, names)
            stale = [
                n
                for n, (newest, ttl) in zip(names, checked, strict=True)
                if index_entry_stale(newest, ttl, now, retention_s)
            ]
            if stale:
                await client.srem(keys.events_index, *stale)
                again = await _newest_ids(client, stale)
                back = [
                    n
                    for n, (newest, ttl) in zip(stale, again, strict=True)
                    if not index_entry_stale(newest, ttl, now, retention_s)
                ]
                if back:
                    await client.sadd(keys.events_index, *back)
                outcome.pruned += len(stale) - len(back)
                outcome.kept_back += len(back)
        if int(cursor) == 0:
            return outcome
        if time.monotonic() - started > deadline:
            break
    outcome.complete = False
    return outcome
