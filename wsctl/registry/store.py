"""Async reads and safe writes of the registry, one code path for single node and cluster.

* Bulk reads stream: SCAN (``scan_iter``, which on a cluster walks every primary) in batches,
  each batch read with one non-transactional pipeline. Memory is bounded by the batch size.
* Every delete is a compare-and-delete script on one key (so it is valid on a cluster): the
  entry goes only if it is still exactly what the caller judged.
* Scripts are run with EVALSHA through ``execute_command`` (``Script`` objects fail inside
  cluster pipelines) and fall back to EVAL on ``NOSCRIPT`` (a restarted or promoted node).
* Liveness records, listeners, cluster facts and pub/sub go through its methods too (thin
  delegates to :mod:`wsctl.registry.instances`, :mod:`wsctl.redis.topology` and
  :mod:`wsctl.redis.pubsub`), so no operation reaches into its client. Control-channel requests
  are the layer above's (:class:`wsctl.ops.deployment.Deployment` adds them): the registry
  depends only on the layers below it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from enum import IntEnum
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

from wsctl.redis.internals import bulk_execute
from wsctl.redis.pubsub import publish_many, subscription
from wsctl.redis.scan import scan_keys
from wsctl.redis.target import AsyncClient
from wsctl.redis.topology import cluster_facts, keys_per_node, refresh_topology
from wsctl.registry.instances import InstanceRecord, get_record, is_listening, iter_records
from wsctl.registry.keys import Keyspace
from wsctl.registry.model import (
    F_CONN_ID,
    F_INSTANCE_ID,
    F_LAST_HEARTBEAT,
    Entry,
    entry_from_hash,
    wrong_type_entry,
)
from wsctl.tasks import settle

__all__ = [
    "COMPARE_AND_DELETE",
    "FENCED_DELETE",
    "FENCE_FIELDS",
    "REGISTER",
    "TOUCH",
    "WRITE_HASH",
    "DeleteOutcome",
    "LuaScript",
    "RegistryStore",
    "TouchOutcome",
    "expectations",
    "run_script",
    "run_script_batch",
]


class DeleteOutcome(IntEnum):
    """What a compare-and-delete did to one key: the delete scripts' replies, one name each.

    ``WOULD_DELETE`` is never returned by Redis: dry runs report it for what they would delete.
    """

    CHANGED = 0  # the key is not what the caller judged (heartbeat, session, type): kept
    DELETED = 1
    GONE = -1  # no such key any more
    WOULD_DELETE = 2


class TouchOutcome(IntEnum):
    """What a heartbeat (the TOUCH script) did to one local session's entry."""

    SUPERSEDED = 0  # another session owns the robot now
    REFRESHED = 1
    REREGISTERED = 2  # the key was gone: written again from the session's registration


@dataclass(frozen=True)
class LuaScript:
    """A script body with its SHA1, run per key (one KEYS element: cluster-safe)."""

    body: str
    sha: str = field(init=False, repr=False)  # computed once: read per call on hot paths

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.body.encode()).hexdigest())


# Delete KEYS[1] only if it still has type ARGV[1] and every (field, expectation) pair in the
# rest of ARGV holds. An expectation is "=value" (field equals value) or "!" (field absent).
# Returns a DeleteOutcome: 1 deleted, 0 changed (kept), -1 already gone.
COMPARE_AND_DELETE = LuaScript(
    """
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'none' then return -1 end
if t ~= ARGV[1] then return 0 end
for i = 2, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  local want = ARGV[i + 1]
  if want == '!' then
    if cur then return 0 end
  elseif cur ~= string.sub(want, 2) then
    return 0
  end
end
return redis.call('DEL', KEYS[1])
"""
)

# The fencing set: the fields that identify one observation of an entry. A delete of an
# observed entry (reap, rm, ghost cleanup) requires all of them unchanged.
FENCE_FIELDS = (F_INSTANCE_ID, F_CONN_ID, F_LAST_HEARTBEAT)

# Delete KEYS[1] only if it is still what was observed: same type ARGV[1] and, for a hash, each
# FENCE_FIELDS value as in ARGV[2..] ("=value", or "!" for absent). The field names are baked
# in from FENCE_FIELDS so the hot path (reap) sends 4 arguments per key, not 8.
# Returns a DeleteOutcome: 1 deleted, 0 changed (kept), -1 already gone.
FENCED_DELETE = LuaScript(
    """
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'none' then return -1 end
if t ~= ARGV[1] then return 0 end
if t == 'hash' then
  local cur = redis.call('HMGET', KEYS[1], __FIELDS__)
  for i = 1, __COUNT__ do
    local want = ARGV[i + 1]
    if want == '!' then
      if cur[i] then return 0 end
    elseif cur[i] ~= string.sub(want, 2) then
      return 0
    end
  end
elseif ARGV[2] then
  if redis.call('DUMP', KEYS[1]) ~= ARGV[2] then return 0 end
end
return redis.call('DEL', KEYS[1])
""".replace("__FIELDS__", ", ".join(f"'{name}'" for name in FENCE_FIELDS)).replace(
        "__COUNT__", str(len(FENCE_FIELDS))
    )
)

# Write a whole hash. ARGV[1] = 'replace' (drop what was there) or 'absent' (only if no key).
# Returns 1 written, 0 skipped because the key exists.
WRITE_HASH = LuaScript(
    """
local exists = redis.call('EXISTS', KEYS[1])
if ARGV[1] == 'absent' and exists == 1 then return 0 end
if exists == 1 then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""
)

# Register a new session: return the previous {instance_id, conn_id}, then write the fields
# (keeping extra fields of a hash that was there; replacing a key of another type).
# ARGV[1], ARGV[2] = the instance_id and conn_id field names; the rest are field/value pairs.
REGISTER = LuaScript(
    """
local t = redis.call('TYPE', KEYS[1]).ok
local prev = {false, false}
if t == 'hash' then
  prev = redis.call('HMGET', KEYS[1], ARGV[1], ARGV[2])
elseif t ~= 'none' then
  redis.call('DEL', KEYS[1])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
return prev
"""
)

# Heartbeat of one local session. ARGV[1] conn_id field, ARGV[2] our conn_id, ARGV[3] the
# last_heartbeat field, ARGV[4] its new value, ARGV[5..] the full registration (re-register
# when the key is gone, e.g. after a Redis restart or a reaper's mistake).
# Returns a TouchOutcome: 1 refreshed, 2 re-registered, 0 superseded (another session owns
# the robot now).
TOUCH = LuaScript(
    """
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'none' then
  redis.call('HSET', KEYS[1], unpack(ARGV, 5))
  return 2
end
if t ~= 'hash' then return 0 end
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
  return 1
end
return 0
"""
)


def expectations(conditions: Mapping[str, str | None]) -> list[str]:
    """Flatten ``{field: value or None}`` into COMPARE_AND_DELETE's ARGV tail."""
    argv: list[str] = []
    for name, value in conditions.items():
        argv.extend((name, "!" if value is None else "=" + value))
    return argv


async def run_script(
    client: AsyncClient, script: LuaScript, keys: Sequence[str], args: Sequence[str]
) -> Any:
    """Run ``script`` once by its SHA, sending the body only when Redis lacks it (NOSCRIPT)."""
    try:
        return await client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
    except NoScriptError:
        return await client.execute_command("EVAL", script.body, len(keys), *keys, *args)


async def run_script_batch(
    client: AsyncClient,
    script: LuaScript,
    calls: Sequence[tuple[Sequence[str], Sequence[str]]],
) -> list[Any]:
    """Run ``script`` once per (keys, args) in one non-transactional pipeline.

    Results are in order; a per-call Redis error is returned as the exception object.
    """
    if not calls:
        return []
    if all(len(keys) == 1 for keys, _ in calls):
        sha = script.sha
        results: list[Any] = await bulk_execute(
            client,
            [(keys[0], ("EVALSHA", sha, "1", keys[0], *args)) for keys, args in calls],
            fixed=3,
        )
    else:
        pipe = client.pipeline(transaction=False)
        for keys, args in calls:
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        results = list(await pipe.execute(raise_on_error=False))
    missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
    if missing:
        pipe = client.pipeline(transaction=False)
        for i in missing:
            keys, args = calls[i]
            pipe.execute_command("EVAL", script.body, len(keys), *keys, *args)
        for i, result in zip(missing, await pipe.execute(raise_on_error=False), strict=True):
            results[i] = result
    return results


class RegistryStore:
    """The registry of one deployment (a :class:`Keyspace`) on one client."""

    def __init__(
        self,
        client: AsyncClient,
        keyspace: Keyspace | None = None,
        *,
        naive_tz: tzinfo | None = None,
        scan_count: int = 1000,
        batch_size: int = 1000,
    ) -> None:
        self.client = client
        self.keys = keyspace or Keyspace()
        self.naive_tz = naive_tz
        self.scan_count = scan_count
        self.batch_size = batch_size
        # cluster primaries skipped by the last walks (node -> reason): their slots were missed
        self.unreachable: dict[str, str] = {}

    # ----------------------------------------------------------------- reads
    async def iter_keys(self, robot_glob: str | None = None) -> AsyncIterator[str]:
        """Connection keys under the prefix (SCAN, every primary on a cluster). Primaries that
        cannot be reached are skipped and named in :attr:`unreachable`."""
        async for key in scan_keys(
            self.client, self.keys.conn_match(robot_glob), self.scan_count, self.unreachable
        ):
            yield key

    async def iter_batches(self, robot_glob: str | None = None) -> AsyncIterator[list[Entry]]:
        """Entries in batches of ``batch_size``, each batch read with one pipeline.

        The next batch is already being read while the caller works on this one (two batches
        in memory at most), so Redis and wsctl work at the same time.
        """
        ahead: asyncio.Task[list[Entry]] | None = None
        try:
            pending: list[str] = []
            async for key in self.iter_keys(robot_glob):
                pending.append(key)
                if len(pending) >= self.batch_size:
                    previous, ahead = ahead, asyncio.create_task(self.read_keys(pending))
                    pending = []
                    if previous is not None:
                        yield await previous
            if pending:
                previous, ahead = ahead, asyncio.create_task(self.read_keys(pending))
                if previous is not None:
                    yield await previous
            if ahead is not None:
                last, ahead = ahead, None
                yield await last
        finally:
            if ahead is not None:  # the caller stopped early (--limit) or failed
                await settle(ahead)

    async def iter_entries(self, robot_glob: str | None = None) -> AsyncIterator[Entry]:
        """Every entry (streamed in batches; see :meth:`iter_batches`)."""
        async for batch in self.iter_batches(robot_glob):
            for entry in batch:
                yield entry

    async def read_keys(self, keys: Sequence[str]) -> list[Entry]:
        """Read many keys with one pipeline; keys gone since SCAN are left out."""
        results = await bulk_execute(self.client, [(key, ("HGETALL", key)) for key in keys])
        entries: list[Entry] = []
        wrong: list[str] = []
        naive_tz = self.naive_tz
        for key, robot_id, result in zip(keys, self.keys.robots_of(keys), results, strict=True):
            if type(result) is list:  # HGETALL's flat field/value list: the common case
                if result:
                    it = iter(result)
                    entries.append(
                        entry_from_hash(robot_id, dict(zip(it, it, strict=True)), naive_tz)
                    )
            elif isinstance(result, ResponseError) and "WRONGTYPE" in str(result):
                wrong.append(key)
            elif isinstance(result, BaseException):
                raise result
            elif result:  # a mapping (RESP3, or a MOVED retry through redis-py)
                entries.append(entry_from_hash(robot_id, result, naive_tz))
        if wrong:
            pipe = self.client.pipeline(transaction=False)
            for key in wrong:
                pipe.type(key)
            for key, key_type in zip(wrong, await pipe.execute(), strict=True):
                if key_type != "none":
                    entries.append(wrong_type_entry(self.keys.robot_of(key), key_type))
        return entries

    async def get(self, robot_id: str) -> Entry | None:
        """One robot's entry by exact key (no pattern: glob characters are literal)."""
        found = await self.read_keys([self.keys.conn_key(robot_id)])
        return found[0] if found else None

    async def attach_dumps(self, entries: Sequence[Entry]) -> None:
        """Read the DUMP payload of each entry that is not a hash (one pipeline), so a backup
        holds its value and the fenced delete removes only that value. Keys gone since are
        left without one (their delete then reports them gone)."""
        others = [e for e in entries if e.key_type != "hash" and e.dump is None]
        if not others:
            return
        pipe = self.client.pipeline(transaction=False)
        for entry in others:
            pipe.dump(self.keys.conn_key(entry.robot_id))
        for entry, payload in zip(others, await pipe.execute(), strict=True):
            if isinstance(payload, bytes):
                payload = payload.decode("utf-8", "surrogateescape")
            entry.dump = payload if isinstance(payload, str) else None

    async def restore_many(
        self, items: Sequence[tuple[str, bytes]], *, replace: bool
    ) -> list[BaseException | None]:
        """RESTORE keys that are not hashes from their DUMP payloads (one pipeline). Per key:
        None restored, else the error (``BUSYKEY`` when it exists and not ``replace``)."""
        if not items:
            return []
        pipe = self.client.pipeline(transaction=False)
        for robot_id, payload in items:
            args: list[Any] = ["RESTORE", self.keys.conn_key(robot_id), 0, payload]
            if replace:
                args.append("REPLACE")
            pipe.execute_command(*args)
        results = await pipe.execute(raise_on_error=False)
        return [r if isinstance(r, BaseException) else None for r in results]

    async def existing(self, robot_ids: Sequence[str]) -> list[bool]:
        """Whether each robot has a key (one pipeline of EXISTS), in order."""
        if not robot_ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for robot_id in robot_ids:
            pipe.exists(self.keys.conn_key(robot_id))
        return [bool(n) for n in await pipe.execute()]

    # ------------------------------------------------------ instances, cluster
    async def instance_record(self, instance_id: str) -> InstanceRecord | None:
        """One instance's liveness record, None when it writes none (or it expired)."""
        return await get_record(self.client, self.keys, instance_id)

    async def instance_records(self) -> AsyncIterator[InstanceRecord]:
        """Every liveness record (SCAN; unreachable primaries are named in :attr:`unreachable`)."""
        async for record in iter_records(self.client, self.keys, self.unreachable):
            yield record

    async def is_listening(self, instance_id: str) -> bool:
        """Is anyone subscribed to the instance's control channel?"""
        return await is_listening(self.client, self.keys, instance_id)

    async def owners(self, robot_ids: Sequence[str], chunk: int = 1000) -> list[Any]:
        """The ``instance_id`` field of each robot's entry, in order (one pipelined HGET per
        ``chunk`` robots): a str, None for no entry, or the error a node answered with."""
        out: list[Any] = []
        for start in range(0, len(robot_ids), chunk):
            pipe = self.client.pipeline(transaction=False)
            for robot_id in robot_ids[start : start + chunk]:
                pipe.hget(self.keys.conn_key(robot_id), F_INSTANCE_ID)
            out.extend(await pipe.execute(raise_on_error=False))
        return out

    async def sessions(self, robot_ids: Sequence[str]) -> list[tuple[Any, Any]]:
        """The ``instance_id`` and ``conn_id`` of each robot's entry, in order (one pipeline
        of HMGET): str values, None for a missing field or entry."""
        if not robot_ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for robot_id in robot_ids:
            pipe.hmget(self.keys.conn_key(robot_id), [F_INSTANCE_ID, F_CONN_ID])
        return [(pair[0], pair[1]) for pair in await pipe.execute()]

    async def delete_instance_record_if(self, record: InstanceRecord) -> bool:
        """Remove an instance's liveness record only if every field is still as in ``record``
        (a live or new process under the id rewrites ``last_seen``, and keeps its record);
        True when removed. For an instance known to be gone that left its record behind."""
        argv = ["hash", *expectations(dict(record.to_hash()))]
        key = self.keys.instance_key(record.instance_id)
        return bool(_ok(await run_script(self.client, COMPARE_AND_DELETE, [key], argv)) == 1)

    async def cluster_view(
        self, *, count_single_node: bool = True
    ) -> tuple[dict[str, Any] | None, dict[str, int]]:
        """The cluster's topology (None on a single node) and how many connection keys each
        primary holds (one more streamed SCAN of the registry). ``count_single_node=False``
        skips that SCAN on a single node, where the count adds nothing to a listing."""
        cluster = await cluster_facts(self.client)
        if cluster is None and not count_single_node:
            return None, {}
        return cluster, await keys_per_node(self.client, self.keys.conn_match(), self.scan_count)

    async def refresh_topology(self) -> None:
        """Re-read the cluster's slot map after a node failure (a no-op on a single node)."""
        await refresh_topology(self.client)

    # --------------------------------------------------------------- pub/sub
    async def publish_many(self, messages: list[tuple[str, str]]) -> None:
        """PUBLISH many ``(channel, message)`` pairs in one pipeline."""
        await publish_many(self.client, messages)

    def subscription(
        self,
        channel: str,
        on_state: Callable[[bool, BaseException | None], None] | None = None,
    ) -> AsyncIterator[Any]:
        """The payloads published on ``channel``, surviving node failures
        (see :func:`wsctl.redis.pubsub.subscription`)."""
        return subscription(self.client, channel, on_state)

    # ---------------------------------------------------------------- writes
    async def set_fields(self, robot_id: str, mapping: Mapping[str, str]) -> None:
        """HSET some fields, keeping every other field (creates the hash if needed)."""
        await self.client.hset(self.keys.conn_key(robot_id), mapping=dict(mapping))  # type: ignore[arg-type]

    async def write(self, robot_id: str, mapping: Mapping[str, str], *, replace: bool) -> bool:
        """Write a whole hash: ``replace`` drops what was there, else only if absent."""
        results = await self.write_many([(robot_id, mapping)], replace=replace)
        return results[0]

    async def write_many(
        self, items: Iterable[tuple[str, Mapping[str, str]]], *, replace: bool
    ) -> list[bool]:
        """Write whole hashes (one script call per key, one pipeline); True where written."""
        mode = "replace" if replace else "absent"
        calls: list[tuple[Sequence[str], Sequence[str]]] = []
        for robot_id, mapping in items:
            flat = [mode]
            for name, value in mapping.items():
                flat.extend((name, value))
            calls.append(([self.keys.conn_key(robot_id)], flat))
        results = await run_script_batch(self.client, WRITE_HASH, calls)
        return [_ok(r) == 1 for r in results]

    async def register(self, robot_id: str, mapping: Mapping[str, str]) -> tuple[str, str] | None:
        """Write a new session's fields; returns the previous (instance_id, conn_id) if any."""
        flat = [F_INSTANCE_ID, F_CONN_ID]
        for name, value in mapping.items():
            flat.extend((name, value))
        prev = await run_script(self.client, REGISTER, [self.keys.conn_key(robot_id)], flat)
        if prev and (prev[0] or prev[1]):
            return (prev[0] or "", prev[1] or "")
        return None

    async def delete_if(
        self, robot_id: str, conditions: Mapping[str, str | None], key_type: str = "hash"
    ) -> DeleteOutcome:
        """Compare-and-delete one entry: deleted, changed since (kept) or already gone."""
        result = await self.delete_many_if([(robot_id, conditions, key_type)])
        return result[0]

    async def delete_many_if(
        self, items: Iterable[tuple[str, Mapping[str, str | None], str]]
    ) -> list[DeleteOutcome]:
        """Compare-and-delete many entries in one pipeline (one script call per key)."""
        calls: list[tuple[Sequence[str], Sequence[str]]] = [
            ([self.keys.conn_key(robot_id)], [key_type, *expectations(conditions)])
            for robot_id, conditions, key_type in items
        ]
        results = await run_script_batch(self.client, COMPARE_AND_DELETE, calls)
        return [DeleteOutcome(_ok(r)) for r in results]

    async def delete_observed(self, entries: Sequence[Entry]) -> list[DeleteOutcome]:
        """Delete entries only if each is still exactly as observed (type and fencing fields).

        One FENCED_DELETE call per key in one pipeline; an outcome per entry, in order.
        """
        calls: list[tuple[Sequence[str], Sequence[str]]] = []
        for entry in entries:
            args = [entry.key_type]
            if entry.key_type == "hash":
                for name in FENCE_FIELDS:
                    value = entry.fields.get(name)
                    args.append("!" if value is None else "=" + value)
            elif entry.dump is not None:  # only if still the value that was backed up
                args.append(entry.dump)
            calls.append(([self.keys.conn_key(entry.robot_id)], args))
        results = await run_script_batch(self.client, FENCED_DELETE, calls)
        return [DeleteOutcome(_ok(r)) for r in results]

    async def touch_many(
        self, sessions: Iterable[tuple[str, str, str, Mapping[str, str]]]
    ) -> list[TouchOutcome]:
        """Heartbeat many local sessions ``(robot_id, conn_id, stamp, registration)``.

        Returns per session whether it was refreshed, re-registered or superseded.
        """
        calls: list[tuple[Sequence[str], Sequence[str]]] = []
        for robot_id, conn_id, stamp, registration in sessions:
            flat = [F_CONN_ID, conn_id, F_LAST_HEARTBEAT, stamp]
            for name, value in registration.items():
                flat.extend((name, value if name != F_LAST_HEARTBEAT else stamp))
            calls.append(([self.keys.conn_key(robot_id)], flat))
        return [TouchOutcome(_ok(r)) for r in await run_script_batch(self.client, TOUCH, calls)]


def _ok(result: Any) -> Any:
    if isinstance(result, BaseException):
        raise result
    return result
