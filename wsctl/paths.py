"""Where wsctl keeps local state (backups, the running sandbox's address)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["backups_dir", "sandbox_file", "state_dir"]


def state_dir() -> Path:
    """``$WSCTL_STATE_DIR``, else the platform's user state dir (``~/.local/state/wsctl``)."""
    override = os.environ.get("WSCTL_STATE_DIR")
    if override:
        return Path(override)
    from platformdirs import user_state_dir  # only without the override (tests set it)

    return Path(user_state_dir("wsctl"))


def sandbox_file() -> Path:
    """Where a running sandbox writes its address, for other commands to find it."""
    return state_dir() / "sandbox.json"


def backups_dir() -> Path:
    """Where reap and rm write their backups by default."""
    return state_dir() / "backups"
