"""The registry summary of ``wsctl top``, built by a bounded, incremental, resumable SCAN.

Each :meth:`RegistryScanner.step` does one ``SCAN`` call of at most ``count`` keys (on a
cluster, on one primary at a time) and reads the connection entries it returned with one
pipeline (:meth:`wsctl.registry.store.RegistryStore.read_keys`, the bulk fast path), so a
step's cost is bounded whatever the registry's size; the caller paces the steps. The cursor
survives a failed step (a frozen Redis): the next step resumes where the pass was. The same
walk notes the liveness records it meets, so instances that neither listen nor own entries
are found too. A pass that completes becomes the summary shown; the next one starts at the
next step.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError, TimeoutError

from wsctl.ops.top import RegistryPass
from wsctl.registry.keys import escape_glob
from wsctl.registry.model import utcnow
from wsctl.registry.store import RegistryStore

__all__ = ["RegistryScanner", "ResumableScan"]


class ResumableScan:
    """One SCAN pass over a single node or every primary of a cluster, one call per
    :meth:`step`; a call that fails leaves the position as it was (retry by calling again),
    except that a cluster primary that cannot be reached is skipped and named in
    :attr:`unreachable` (its keys are missed, as with every listing)."""

    def __init__(self, client: Any, match: str) -> None:
        self.client = client
        self.match = match
        self.cursor = 0
        self.done = False
        self.unreachable: dict[str, str] = {}
        self._nodes: list[str] | None = None
        self._index = 0

    async def step(self, count: int) -> list[str]:
        """The keys of the next SCAN call (possibly none); :attr:`done` once the pass ends."""
        if self.done:
            return []
        client = self.client
        if not isinstance(client, RedisCluster):
            cursor, batch = await client.scan(cursor=self.cursor, match=self.match, count=count)
            self.cursor = int(cursor)
            self.done = self.cursor == 0
            return [str(k) for k in batch]
        if self._nodes is None:
            self._nodes = sorted(n.name for n in client.get_primaries())
        if self._index >= len(self._nodes):
            self.done = True
            return []
        name = self._nodes[self._index]
        node = client.get_node(node_name=name)
        keys: list[str] = []
        if node is None:  # failed over since the pass began: its slots are elsewhere now
            self.unreachable[name] = "no longer a primary"
            self.cursor = 0
        else:
            try:
                cursors, found = await client.scan(
                    cursor=self.cursor, match=self.match, count=count, target_nodes=node
                )
            except (ConnectionError, TimeoutError, OSError) as exc:
                self.unreachable[name] = str(exc)[:200]
                self.cursor = 0
            else:
                keys = [str(k) for k in found]
                raw = cursors[name] if isinstance(cursors, dict) else cursors
                self.cursor = int(raw)
        if self.cursor == 0:
            self._index += 1
            self.done = self._index >= len(self._nodes)
        return keys


def _common_prefix(a: str, b: str) -> str:
    size = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        size += 1
    return a[:size]


class RegistryScanner:
    """Passes over the registry, a bounded step at a time (see the module's docstring).

    ``done`` is the last complete pass, ``current`` the one under way; ``stale_trend`` the
    stale counts of the last two complete passes (before, after). ``client`` is the
    ``store``'s (SCAN goes to it directly, per node)."""

    def __init__(
        self, store: RegistryStore, client: Any, timeout: float, count: int = 1000
    ) -> None:
        self.store = store
        self.client = client  # the store's
        self.timeout = timeout
        self.count = max(1, count)
        keys = store.keys
        # one walk finds entries and liveness records: SCAN visits every key whatever MATCH
        # says, so matching both prefixes' common start costs no more than one of them
        self.match = escape_glob(_common_prefix(keys.prefix, keys.instance_prefix)) + "*"
        self.done: RegistryPass | None = None
        self.current: RegistryPass | None = None
        self.stale_trend: tuple[int, int] | None = None
        self.unreachable: dict[str, str] = {}
        self._scan: ResumableScan | None = None

    async def step(self, count: int | None = None) -> int:
        """One SCAN call of at most ``count`` keys (default :attr:`count`) and the read of the
        entries it returned; returns how many keys SCAN returned. Redis errors propagate; the
        pass resumes at the same place on the next call."""
        if self.current is None or self._scan is None:
            self.current = RegistryPass(started=utcnow())
            self._scan = ResumableScan(self.client, self.match)
        keys = await self._scan.step(count or self.count)
        prefixes = self.store.keys
        conn_prefix, inst_prefix = prefixes.prefix, prefixes.instance_prefix
        # the longer prefix first: with ``ws_`` and ``ws_inst:``, a record is no entry
        inst_first = len(inst_prefix) > len(conn_prefix)
        entries: list[str] = []
        for key in keys:
            is_inst = key.startswith(inst_prefix)
            is_conn = key.startswith(conn_prefix)
            if is_inst and (inst_first or not is_conn):
                self.current.records.add(prefixes.instance_of(key))
            elif is_conn:
                entries.append(key)
        if entries:
            self.current.add(await self.store.read_keys(entries), utcnow(), self.timeout)
        self.current.keys_seen += len(keys)
        if self._scan.done:
            self.current.finished = utcnow()
            if self.done is not None:
                self.stale_trend = (self.done.totals()["stale"], self.current.totals()["stale"])
            self.done, self.current = self.current, None
            self.unreachable = dict(self._scan.unreachable)
            self._scan = None
        return len(keys)

    async def full_pass(self) -> RegistryPass:
        """Run one whole pass now (``wsctl top --once``): steps until it completes."""
        self.current, self._scan = None, None
        while True:
            await self.step()
            if self.current is None and self.done is not None:
                return self.done
