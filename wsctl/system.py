"""Process limits that matter for thousands of sockets."""

from __future__ import annotations

__all__ = ["raise_fd_limit"]


def raise_fd_limit(wanted: int = 65536) -> int:
    """Raise the soft open-files limit towards ``wanted`` (never above the hard limit).

    A gateway or a simulation holds one descriptor per robot; many systems default to 1024.
    Returns the soft limit in force afterwards.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return int(soft)
