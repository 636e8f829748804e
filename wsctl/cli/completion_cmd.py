"""``wsctl completion bash|zsh|fish``: print the shell's completion script (like kubectl), and
the completers of robot and instance ids it calls back into.

Id completion must never hang a shell: it asks Redis only when that is cheap (a single node or
the running sandbox; nothing on a cluster), with sub-second socket timeouts, one overall
deadline and at most a few SCAN round trips, and gives up silently (no candidates) on any
failure.
"""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer

from wsctl.errors import UsageError

__all__ = [
    "COMPLETE_VAR",
    "DEADLINE_S",
    "MAX_CANDIDATES",
    "MAX_SCANS",
    "SHELLS",
    "SOCKET_TIMEOUT_S",
    "complete_instance_ids",
    "complete_robot_ids",
    "completion",
]

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_WSCTL_COMPLETE"
# bounds of one completion: wall time, socket timeouts, candidates, SCAN round trips
DEADLINE_S = 0.8
SOCKET_TIMEOUT_S = 0.3
MAX_CANDIDATES = 200
MAX_SCANS = 20


def completion(
    shell: Annotated[str, typer.Argument(help="bash, zsh or fish.", show_default=False)],
) -> None:
    """Print the shell completion script for bash, zsh or fish.

    Completes commands and options, and robot and instance ids from the configured Redis
    when that is cheap (a single node or the running sandbox; with a timeout well under a
    second, so a Redis that is down never hangs the shell).

    Example: source <(wsctl completion bash)   # or add that line to ~/.bashrc
    """
    from typer._completion_classes import completion_init
    from typer._completion_shared import get_completion_script

    if shell not in SHELLS:
        raise UsageError(f"unknown shell {shell!r}; use one of {', '.join(SHELLS)}")
    completion_init()
    script = get_completion_script(prog_name="wsctl", complete_var=COMPLETE_VAR, shell=shell)
    sys.stdout.write(script + "\n")


def complete_robot_ids(incomplete: str) -> list[str]:
    """Robot ids starting with ``incomplete`` (bounded; empty on any problem)."""
    return _complete("conn", incomplete)


def complete_instance_ids(incomplete: str) -> list[str]:
    """Instance ids with a liveness record, starting with ``incomplete`` (bounded)."""
    return _complete("inst", incomplete)


def _complete(kind: str, incomplete: str) -> list[str]:
    try:
        return _scan_ids(kind, incomplete)
    except Exception:  # completion must never fail loudly or hang
        return []


def _scan_ids(kind: str, incomplete: str) -> list[str]:
    from wsctl.cli.common import resolve_target
    from wsctl.config import load_settings
    from wsctl.registry.keys import Keyspace, escape_glob

    settings = load_settings()
    target = resolve_target(settings)
    if target.kind == "cluster" or target.tls is not None:
        return []  # a walk over every primary, or a TLS handshake: not cheap enough
    keys = Keyspace(settings.prefix, settings.instance_prefix, settings.control_prefix)
    prefix = keys.prefix if kind == "conn" else keys.instance_prefix
    client = _client(target)
    deadline = time.monotonic() + DEADLINE_S
    found: set[str] = set()
    try:
        cursor = 0
        for _ in range(MAX_SCANS):
            cursor, batch = client.scan(
                cursor, match=escape_glob(prefix + incomplete) + "*", count=1000
            )
            for key in batch:
                found.add(key[len(prefix) :])
            if not cursor or len(found) >= MAX_CANDIDATES or time.monotonic() > deadline:
                break
    finally:
        client.close()
    return sorted(i for i in found if i.isprintable())[:MAX_CANDIDATES]


def _client(target: Any) -> Any:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    common: dict[str, Any] = {
        "retry": Retry(NoBackoff(), 0),  # one attempt: the shell is waiting
        "db": target.db,
        "username": target.username,
        "password": target.password,
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": SOCKET_TIMEOUT_S,
        "decode_responses": True,
        "encoding_errors": "surrogateescape",
        "retry_on_timeout": False,
    }
    if target.kind == "unix":
        return redis.Redis(unix_socket_path=target.path, **common)
    return redis.Redis(host=target.host, port=target.port, **common)
