"""Process limits and tuning that matter for thousands of sockets."""

from __future__ import annotations

__all__ = [
    "GC_THRESHOLD0",
    "GENEROUS",
    "UNLIMITED",
    "limit_targets",
    "open_files_limit",
    "raise_fd_limit",
    "raise_open_files",
    "tune_gc",
]

# The cycle collector's gen-0 threshold once tuned (CPython's default is 700). Measured
# (bench/app_send_bench.py --wsctl-only, the sending instance's collections timed with
# gc.callbacks, per 20,000-message blast): 50,000 makes 1-2 gen-0 collections of 7-14 ms
# (15-25 ms in all, 3-5% of its CPU) and none while paced 1 per ms; 100,000 and 200,000 one
# of 13-49 ms (the count carries over between blasts: rarer, longer pauses, no less work);
# 20,000 and 30,000 four to seven short ones, but every tenth is a gen-1 collection of
# 40-120 ms (it rescans the sessions of robots connected since start-up), and paced got one.
GC_THRESHOLD0 = 50_000

UNLIMITED = -1  # what ``resource.RLIM_INFINITY`` is on Linux and macOS
GENEROUS = 65536  # the soft limit raise_fd_limit aims at


def raise_fd_limit(wanted: int = GENEROUS) -> int:
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


_gc_tuned = False


def tune_gc() -> bool:
    """Make CPython's cycle collector cheap for a process holding thousands of sockets and
    messages in flight: what is alive now (imports, configuration) is frozen out of
    collections, and collections run every :data:`GC_THRESHOLD0` net allocations instead of
    700. Without it a blast of messages (every send in flight holds a few containers) makes
    full collections rescan every socket's objects, several times a second. Cycles are still
    collected. Once per process (objects frozen by a later call would never be collected);
    returns whether this call tuned it."""
    global _gc_tuned
    if _gc_tuned:
        return False
    _gc_tuned = True
    import gc

    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD0, gen1, gen2)
    return True


def limit_targets(needed: int, soft: int, hard: int) -> list[tuple[int, int]]:
    """The ``(soft, hard)`` open-files limits to try, in order, so that one process may hold
    ``needed`` descriptors (``-1``: unlimited). None when the soft limit already allows it.

    Below the hard limit: the soft limit is raised to at least ``needed`` (to
    :data:`GENEROUS` if that is more, as :func:`raise_fd_limit` does). Above it: first both
    to ``needed`` (allowed to root, or with CAP_SYS_RESOURCE), then the soft limit to the hard
    one, the most an unprivileged process gets."""
    if soft == UNLIMITED or needed <= soft:
        return []
    if hard == UNLIMITED:
        return [(max(needed, GENEROUS), hard)]
    if needed <= hard:
        return [(max(needed, min(GENEROUS, hard)), hard)]
    return [(needed, needed), (hard, hard)]


def open_files_limit() -> tuple[int, int]:
    """The ``(soft, hard)`` open-files limits of this process (``-1``: unlimited; ``(-1,
    -1)`` where the platform has none)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return UNLIMITED, UNLIMITED
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return _plain(soft), _plain(hard)


def _plain(value: int) -> int:
    import resource

    return UNLIMITED if value == resource.RLIM_INFINITY else int(value)


def raise_open_files(needed: int) -> tuple[int, int]:
    """Raise this process's open-files limits so that it may hold ``needed`` descriptors,
    as far as it is allowed (:func:`limit_targets`); processes it starts afterwards inherit
    them. Returns the ``(soft, hard)`` limits in force afterwards."""
    soft, hard = open_files_limit()
    targets = limit_targets(needed, soft, hard)
    if not targets:
        return soft, hard
    import resource

    def native(value: int) -> int:
        return int(resource.RLIM_INFINITY) if value == UNLIMITED else value

    for new_soft, new_hard in targets:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (native(new_soft), native(new_hard)))
        except (ValueError, OSError):  # not allowed (the hard limit) or above the system's
            continue
        break
    return open_files_limit()
