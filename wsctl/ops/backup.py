"""Append-only JSONL backups of entries before they are deleted (reap, rm, doctor --fix).

The format is the export format, so ``wsctl registry import BACKUP`` restores a backup.
"""

from __future__ import annotations

import contextlib
import os
import stat
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO

from wsctl.errors import UsageError
from wsctl.paths import backups_dir
from wsctl.registry.model import Entry, format_ts
from wsctl.registry.records import dumps, entry_record

__all__ = ["BackupWriter", "check_backup_path", "default_backup_path"]


def default_backup_path(kind: str, now: datetime) -> Path:
    """A new backup file under the state dir, named by the command and the time (UTC)."""
    stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
    return backups_dir() / f"{kind}-{stamp}.jsonl"


class BackupWriter:
    """Writes each entry (with why and when it was removed) and flushes before the delete."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.count = 0
        self._fh: IO[str] | None = None

    def __enter__(self) -> BackupWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def write(self, entries: list[tuple[Entry, str]], now: datetime) -> None:
        """Append entries and make them durable (flush + fsync) before anything is deleted."""
        if self.path is None or not entries:
            return
        removed_at = format_ts(now)
        lines = [
            dumps(entry_record(entry, reason=reason, removed_at=removed_at))
            for entry, reason in entries
        ]
        try:
            if self._fh is None:
                check_backup_path(self.path)
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = self.path.open("a", encoding="utf-8", errors="backslashreplace")
            self._fh.write("\n".join(lines) + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            # the caller deletes nothing of this batch: its backup is not on disk
            raise UsageError(
                f"cannot write backup {self.path}: {exc.strerror or exc}; "
                "entries not backed up were not deleted"
            ) from None
        self.count += len(lines)

    def close(self) -> None:
        """Close the file (a no-op when nothing was written)."""
        if self._fh is not None:
            fh, self._fh = self._fh, None
            with contextlib.suppress(OSError):  # every batch was fsync'ed (or refused) already
                fh.close()


def check_backup_path(path: Path) -> None:
    """Refuse, before anything is read or deleted, a backup path that cannot hold a backup:
    a directory, or a device or pipe (where fsync cannot make it durable)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UsageError(f"cannot use backup {path}: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        raise UsageError(f"backup {path} is a directory; give a file path")
    if not stat.S_ISREG(mode):
        raise UsageError(f"backup {path} is not a regular file (it must be durable on disk)")
