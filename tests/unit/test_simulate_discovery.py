"""Which gateways ``wsctl simulate`` runs against when none is given: the alive instances'
robot URLs from their liveness records (fakeredis)."""

from __future__ import annotations

from datetime import timedelta

import fakeredis
import pytest

from wsctl.errors import UsageError
from wsctl.ops.deployment import Deployment
from wsctl.ops.simulate.run import alive_gateways
from wsctl.registry.instances import InstanceRecord, write_record
from wsctl.registry.model import format_ts, utcnow


async def _record(store: Deployment, name: str, url: str, age_s: float) -> None:
    seen = format_ts(utcnow() - timedelta(seconds=age_s))
    record = InstanceRecord(name, ws_url=url, started_at=seen, last_seen=seen)
    await write_record(store.client, store.keys, record, ttl=600)


async def test_simulate_runs_against_the_alive_instances_urls_sorted() -> None:
    store = Deployment(fakeredis.FakeAsyncRedis(decode_responses=True))
    await _record(store, "gw-b", "ws://127.0.0.1:2", age_s=1)
    await _record(store, "gw-a", "ws://127.0.0.1:1", age_s=1)
    await _record(store, "gw-old", "ws://127.0.0.1:3", age_s=300)  # stale: not alive
    await _record(store, "gw-nourl", "", age_s=1)
    assert await alive_gateways(store, timeout=90) == ["ws://127.0.0.1:1", "ws://127.0.0.1:2"]


async def test_no_alive_instance_asks_for_gateway_urls() -> None:
    store = Deployment(fakeredis.FakeAsyncRedis(decode_responses=True))
    with pytest.raises(UsageError, match="pass --gateway ws://host:port for each"):
        await alive_gateways(store, timeout=90)
