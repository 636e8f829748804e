"""Instance liveness records: ``{instance_prefix}{instance_id}`` hashes with a TTL.

A gateway refreshes its record every heartbeat interval with a TTL of the connection timeout, so
a crashed instance's record disappears by itself. Instances that appear only in connection
entries (the seed's gateways write no record) are ``unknown``. Pure parts take ``now``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum

from wsctl.redis.pubsub import subscriber_count
from wsctl.redis.scan import scan_keys
from wsctl.redis.target import AsyncClient
from wsctl.registry.keys import Keyspace
from wsctl.registry.model import parse_timestamp

__all__ = [
    "COUNTER_FIELDS",
    "InstanceRecord",
    "Liveness",
    "delete_record",
    "get_record",
    "is_listening",
    "iter_records",
    "liveness",
    "write_record",
]


class Liveness(StrEnum):
    """An instance's liveness judged from its record: alive, dead (record too old) or unknown
    (none)."""

    ALIVE = "alive"
    DEAD = "dead"
    UNKNOWN = "unknown"


# The gateway's counters in its liveness record (totals since it started; ``wsctl top`` takes
# rates as deltas between two records): the record's field names, spelled once.
COUNTER_FIELDS = (
    "messages_delivered",
    "messages_forwarded",
    "messages_failed",
    "connections_opened",
    "connections_closed",
    "redis_errors",
)


@dataclass(frozen=True)
class InstanceRecord:
    """What a gateway says about itself in its liveness record, refreshed every heartbeat.

    The counters (:data:`COUNTER_FIELDS`), ``redis_up`` and ``heartbeat_interval`` are None in
    a record that does not carry them (an older gateway, or another implementation)."""

    instance_id: str
    host: str = ""
    port: int = 0
    pid: int = 0
    ws_url: str = ""
    started_at: str = ""
    last_seen: str = ""
    version: str = ""
    connections: int = 0
    # the highest control-protocol version the instance speaks (0: not said, i.e. 1 at most)
    protocol: int = 0
    draining: bool = False  # ``wsctl drain``: refuses new robots, closing the ones it has
    heartbeat_interval: float | None = None  # seconds between two writes of this record
    messages_delivered: int | None = None
    messages_forwarded: int | None = None
    messages_failed: int | None = None
    connections_opened: int | None = None
    connections_closed: int | None = None
    redis_errors: int | None = None
    redis_up: bool | None = None  # did its last Redis calls succeed (from its own view)

    def to_hash(self) -> dict[str, str]:
        """The record as the hash fields written to Redis (fields that are None left out)."""
        out: dict[str, str] = {}
        for name, value in asdict(self).items():
            if value is None:
                continue
            if isinstance(value, bool):
                out[name] = "1" if value else "0"
            elif isinstance(value, float):
                out[name] = f"{value:g}"
            else:
                out[name] = str(value)
        return out

    def counters(self) -> dict[str, int] | None:
        """The record's counters by field name; None unless it carries every one of them."""
        values = {name: getattr(self, name) for name in COUNTER_FIELDS}
        if any(v is None for v in values.values()):
            return None
        return values

    @classmethod
    def from_hash(cls, instance_id: str, mapping: Mapping[str, str]) -> InstanceRecord:
        """Read a record tolerantly: missing or non-numeric fields become empty or 0 (the
        optional counters, ``redis_up`` and ``heartbeat_interval``: None)."""

        def number(name: str) -> int:
            try:
                return int(mapping.get(name, "0"))
            except ValueError:
                return 0

        def count(name: str) -> int | None:
            raw = mapping.get(name)
            if raw is None:
                return None
            try:
                value = int(raw)
            except ValueError:
                return None
            return value if value >= 0 else None

        def seconds(name: str) -> float | None:
            try:
                value = float(mapping.get(name, ""))
            except ValueError:
                return None
            return value if math.isfinite(value) and value > 0 else None

        up = mapping.get("redis_up")
        return cls(
            instance_id=instance_id,
            host=mapping.get("host", ""),
            port=number("port"),
            pid=number("pid"),
            ws_url=mapping.get("ws_url", ""),
            started_at=mapping.get("started_at", ""),
            last_seen=mapping.get("last_seen", ""),
            version=mapping.get("version", ""),
            connections=number("connections"),
            protocol=number("protocol"),
            draining=mapping.get("draining", "0") == "1",
            heartbeat_interval=seconds("heartbeat_interval"),
            redis_up=None if up not in ("0", "1") else up == "1",
            **{name: count(name) for name in COUNTER_FIELDS},
        )

    def age(self, now: datetime) -> float | None:
        """Seconds since ``last_seen`` at ``now``; None when it cannot be parsed."""
        try:
            return (now - parse_timestamp(self.last_seen)).total_seconds()
        except ValueError:
            return None


def liveness(record: InstanceRecord | None, now: datetime, timeout: float) -> Liveness:
    """alive: a record seen within ``timeout``; dead: a record older than that; else unknown."""
    if record is None:
        return Liveness.UNKNOWN
    age = record.age(now)
    if age is not None and age <= timeout:
        return Liveness.ALIVE
    return Liveness.DEAD


async def write_record(
    client: AsyncClient, keys: Keyspace, record: InstanceRecord, ttl: float
) -> None:
    """Write (or refresh) an instance's record with a TTL, so a crashed instance's record expires."""
    key = keys.instance_key(record.instance_id)
    pipe = client.pipeline(transaction=False)
    pipe.hset(key, mapping=record.to_hash())  # type: ignore[arg-type]
    pipe.pexpire(key, max(1, int(ttl * 1000)))
    await pipe.execute()


async def delete_record(client: AsyncClient, keys: Keyspace, instance_id: str) -> None:
    """Remove an instance's record (a clean shutdown), so it reads as gone at once."""
    await client.delete(keys.instance_key(instance_id))


async def iter_records(
    client: AsyncClient, keys: Keyspace, unreachable: dict[str, str] | None = None
) -> AsyncIterator[InstanceRecord]:
    """Every liveness record (SCAN; cluster primaries that cannot be reached are skipped and
    named in ``unreachable`` when given)."""
    batch: list[str] = []

    async def flush(names: list[str]) -> list[InstanceRecord]:
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(name)
        out = []
        for name, mapping in zip(names, await pipe.execute(raise_on_error=False), strict=True):
            if isinstance(mapping, dict) and mapping:
                out.append(InstanceRecord.from_hash(keys.instance_of(name), mapping))
        return out

    async for key in scan_keys(client, keys.instance_match(), 1000, unreachable):
        batch.append(key)
        if len(batch) >= 500:
            for record in await flush(batch):
                yield record
            batch = []
    if batch:
        for record in await flush(batch):
            yield record


async def get_record(
    client: AsyncClient, keys: Keyspace, instance_id: str
) -> InstanceRecord | None:
    """One instance's liveness record (one HGETALL), None when it has none."""
    mapping: dict[str, str] = await client.hgetall(keys.instance_key(instance_id))  # type: ignore[assignment]
    return InstanceRecord.from_hash(instance_id, mapping) if mapping else None


async def is_listening(client: AsyncClient, keys: Keyspace, instance_id: str) -> bool:
    """Is anyone subscribed to the instance's control channel (counted on every node of a
    cluster)? The other half of liveness: original-design gateways write no record but may
    listen, and an instance that stopped listening cannot be reached whatever its record says.
    """
    return await subscriber_count(client, keys.control_channel(instance_id)) > 0
