"""The long-lived reaper (``reap --every``) on fakeredis: passes, per-pass backups, and the
error of a pass that fails part-way."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import fakeredis
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.seedlike import seed_hash
from wsctl.cli import ops_cmd
from wsctl.errors import RedisUnavailable
from wsctl.ops.reap import ReapLoop, ReapOptions
from wsctl.redis.errors import translate_errors
from wsctl.redis.target import Target
from wsctl.registry.model import Entry
from wsctl.registry.store import DeleteOutcome, RegistryStore


class FailingStore(RegistryStore):
    """Redis goes away at the second batch of deletes."""

    deletes = 0

    async def delete_observed(self, entries: Sequence[Entry]) -> list[DeleteOutcome]:
        self.deletes += 1
        if self.deletes == 2:
            raise RedisConnectionError("Connection reset by peer")
        return await super().delete_observed(entries)


async def _stale_store(cls: type[RegistryStore] = RegistryStore) -> RegistryStore:
    client = fakeredis.FakeAsyncRedis(decode_responses=True)
    for i in range(6):
        await client.hset(f"ws_conn:r{i}", mapping=seed_hash(f"r{i}", "gw-a", age_s=600))
    return cls(client, batch_size=2)


async def test_each_pass_writes_its_own_backup_until_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WSCTL_STATE_DIR", str(tmp_path))
    store = await _stale_store()
    loop = ReapLoop(ReapOptions(timeout=90, backup=tmp_path / "given.jsonl"), every=0.01)
    stop = asyncio.Event()
    reports = []
    async for _at, report in loop.passes(store, stop):
        reports.append(report)
        if len(reports) == 2:
            stop.set()
    assert [r.reaped for r in reports] == [6, 0]
    # the first pass's file holds the six entries; the second pass removed none, so no file
    (backup,) = (tmp_path / "backups").glob("reap-*.jsonl")
    assert len(backup.read_text().splitlines()) == 6
    assert not (tmp_path / "given.jsonl").exists()


async def test_a_reap_every_pass_that_fails_part_way_names_its_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fixed bug: with --every, a Redis failure mid-pass was reported without the backup of
    the entries already removed (the note was added inside the block where Redis errors are
    still redis-py's, so it never matched)."""
    monkeypatch.setenv("WSCTL_STATE_DIR", str(tmp_path))
    store = await _stale_store(FailingStore)

    @contextlib.asynccontextmanager
    async def open_store(settings: object) -> AsyncIterator[RegistryStore]:
        with translate_errors(Target("tcp")):
            yield store

    monkeypatch.setattr(ops_cmd, "open_store", open_store)
    monkeypatch.setattr(ops_cmd, "on_stop_signals", lambda stop: None)
    options = ReapOptions(timeout=90, backup=tmp_path / "given.jsonl")
    with pytest.raises(RedisUnavailable) as caught:
        await ops_cmd._reap_forever(None, options, 0.01, "json")  # type: ignore[arg-type]
    assert "entries removed before the failure are backed up in" in caught.value.message
    assert "undo: wsctl registry restore" in caught.value.message
    assert str(tmp_path / "backups") in caught.value.message
