"""Export and import of registry entries (JSONL), used by ``wsctl registry export|import``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from wsctl.registry.model import Entry
from wsctl.registry.records import Record
from wsctl.registry.store import RegistryStore

__all__ = ["IMPORT_BATCH", "ImportResult", "export_entries", "import_records"]

IMPORT_BATCH = 500


async def export_entries(
    store: RegistryStore, instance: str | None = None, robot_glob: str | None = None
) -> AsyncIterator[Entry]:
    """Entries to export (streaming). Non-hash keys are yielded too; callers decide."""
    async for entry in store.iter_entries(robot_glob):
        if instance is None or entry.instance_id == instance:
            yield entry


@dataclass
class ImportResult:
    """What an import wrote, skipped (the robot exists) and could not restore."""

    written: int = 0
    skipped_existing: list[str] = field(default_factory=list)
    would_write: int = 0
    dry_run: bool = False
    not_restored: list[dict[str, Any]] = field(default_factory=list)
    superseded: int = 0

    def as_dict(self) -> dict[str, object]:
        """The result as stable snake_case JSON (item lists capped at 100)."""
        return {
            "written": self.written,
            "would_write": self.would_write,
            "skipped_existing": len(self.skipped_existing),
            "skipped_robot_ids": self.skipped_existing[:100],
            "superseded": self.superseded,
            "not_restored": len(self.not_restored),
            "not_restored_items": self.not_restored[:100],
            "dry_run": self.dry_run,
        }


async def import_records(
    store: RegistryStore,
    records: Iterable[Record],
    *,
    overwrite: bool,
    dry_run: bool,
    on_written: Callable[[list[str]], Awaitable[None]] | None = None,
) -> ImportResult:
    """Write records in pipelined batches; without ``overwrite`` existing robots are skipped.

    Hashes are written whole by a per-key script; keys of other types (backups) are restored
    from their DUMP payload. A key that cannot be restored is reported in ``not_restored`` and
    the rest are still written. ``dry_run`` checks which robots exist and writes nothing.
    ``on_written`` is awaited with each batch's written robot ids (every one, e.g. to record
    events; the result keeps only the count).
    """
    result = ImportResult(dry_run=dry_run)
    batch: list[Record] = []

    async def flush() -> None:
        written: list[str] = []
        try:
            await write(written)
        finally:
            result.written += len(written)
        if written and on_written is not None:
            await on_written(written)

    async def write(written: list[str]) -> None:
        if dry_run:
            if overwrite:
                result.would_write += len(batch)
                return
            found = await store.existing([rec.robot_id for rec in batch])
            for rec, exists in zip(batch, found, strict=True):
                if exists:
                    result.skipped_existing.append(rec.robot_id)
                else:
                    result.would_write += 1
            return
        hashes = [rec for rec in batch if rec.dump is None]
        outcomes = await store.write_many(
            [(rec.robot_id, rec.fields) for rec in hashes], replace=overwrite
        )
        for rec, ok in zip(hashes, outcomes, strict=True):
            if ok:
                written.append(rec.robot_id)
            else:
                result.skipped_existing.append(rec.robot_id)
        others = [rec for rec in batch if rec.dump is not None]
        errors = await store.restore_many(
            [(rec.robot_id, rec.dump or b"") for rec in others], replace=overwrite
        )
        for rec, error in zip(others, errors, strict=True):
            if error is None:
                written.append(rec.robot_id)
            elif "BUSYKEY" in str(error):
                result.skipped_existing.append(rec.robot_id)
            else:
                result.not_restored.append(
                    {"line": rec.line, "robot_id": rec.robot_id, "reason": str(error)[:200]}
                )

    for record in records:
        batch.append(record)
        if len(batch) >= IMPORT_BATCH:
            await flush()
            batch = []
    if batch:
        await flush()
    return result
