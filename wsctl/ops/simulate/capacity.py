"""What a ``simulate`` run needs of this machine, checked before anything starts: open files.

Every robot is a socket, so a descriptor in the process holding it, and another in the gateway
it connects to. Without a check, a run over the open-files limit starts the sandbox, then fails
thousands of robots with "Too many open files". :func:`check_open_files` counts what each
process of the run needs (:func:`simulate_fd_needs`), raises the limits as far as this process
may (the soft limit up to the hard one; the hard one too as root or with CAP_SYS_RESOURCE;
processes started afterwards inherit them), and otherwise fails up front with one line saying
what to do (:func:`fd_advice`): more robot worker processes, more sandbox gateways, or a higher
limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from wsctl.errors import UsageError
from wsctl.system import UNLIMITED, open_files_limit, raise_open_files

__all__ = [
    "GATEWAY_REDIS",
    "PROCESS_RESERVE",
    "REDIS_RESERVE",
    "FdNeed",
    "check_open_files",
    "fd_advice",
    "simulate_fd_needs",
]

# descriptors a process needs besides its robots' sockets: stdio, its Redis connections, the
# event loop's, pipes to workers, log files, imported modules' (generous: it costs nothing)
PROCESS_RESERVE = 128
# a gateway's Redis connections at their busiest: session and control slots (40 + 48), its
# heartbeat, control subscription, event writer and clean-up loops
GATEWAY_REDIS = 128
REDIS_RESERVE = 32  # redis-server keeps 32 descriptors beyond its clients


@dataclass(frozen=True)
class FdNeed:
    """Open files one process of the run needs. ``kind``: ``robots`` (simulate's process or a
    robot worker), ``gateway`` (a sandbox gateway) or ``redis``; ``what`` names it for a
    person."""

    kind: str
    what: str
    count: int


def simulate_fd_needs(robots: int, processes: int, sandbox_gateways: int | None) -> list[FdNeed]:
    """The open files each kind of process of a run needs: the one holding the robots (or
    each of ``processes`` workers), and, when simulate starts the sandbox itself
    (``sandbox_gateways``), each gateway process and the sandbox's Redis. Gateways of a fleet
    simulate did not start have limits of their own."""
    if processes > 1:
        needs = [
            FdNeed(
                "robots",
                f"each of the {processes} robot worker processes",
                math.ceil(robots / processes) + PROCESS_RESERVE,
            )
        ]
    else:
        needs = [
            FdNeed("robots", "simulate's process (it holds the robots)", robots + PROCESS_RESERVE)
        ]
    if sandbox_gateways:
        needs.append(
            FdNeed(
                "gateway",
                f"each of the {sandbox_gateways} sandbox gateways",
                math.ceil(robots / sandbox_gateways) + PROCESS_RESERVE + GATEWAY_REDIS,
            )
        )
        needs.append(
            FdNeed(
                "redis",
                "the sandbox's Redis",
                sandbox_gateways * GATEWAY_REDIS + PROCESS_RESERVE + REDIS_RESERVE,
            )
        )
    return needs


def fd_advice(
    robots: int,
    processes: int,
    sandbox_gateways: int | None,
    limit: int,
    hard_raised: bool,
) -> str | None:
    """The one line that says why the run cannot start under an open-files ``limit`` (the
    most a process of the run gets) and what to do, or None when every process fits.
    ``hard_raised``: this process was allowed to raise the hard limit (so ``limit`` is the
    system's ceiling, not a per-user one)."""
    needs = simulate_fd_needs(robots, processes, sandbox_gateways)
    over = [n for n in needs if limit != UNLIMITED and n.count > limit]
    if not over:
        return None
    worst = max(over, key=lambda n: n.count)
    kinds = {n.kind for n in over}
    fixes: list[str] = []
    room = limit - PROCESS_RESERVE  # robots one worker process can hold
    if "robots" in kinds and room > 0:
        fixes.append(f"--processes {max(2, math.ceil(robots / room))}")
    gateway_room = limit - PROCESS_RESERVE - GATEWAY_REDIS  # robots one gateway can hold
    if "gateway" in kinds and gateway_room > 0:
        fixes.append(f"--sandbox-gateways {math.ceil(robots / gateway_room)}")
    why = (
        "the most this machine allows"
        if hard_raised
        else "the hard limit; raising it needs root or CAP_SYS_RESOURCE"
    )
    raise_it = "raise the open-files limit (ulimit -Hn / LimitNOFILE= for a service, as root)"
    fix = f"use {' '.join(fixes)}, or {raise_it}" if fixes else raise_it
    return (
        f"simulate: {robots:,} robot(s) need {worst.count:,} open files in {worst.what}, over "
        f"the open-files limit of {limit:,} ({why}): {fix}"
    )


def check_open_files(robots: int, processes: int, sandbox_gateways: int | None) -> int:
    """Raise this process's open-files limits to what the run needs (its worker processes
    and sandbox inherit them), as far as it may; raise :class:`UsageError` with
    :func:`fd_advice`'s line when that is not enough. Returns the soft limit in force."""
    needed = max(n.count for n in simulate_fd_needs(robots, processes, sandbox_gateways))
    before = open_files_limit()
    soft, hard = raise_open_files(needed)
    hard_raised = hard == UNLIMITED or (before[1] != UNLIMITED and hard > before[1])
    advice = fd_advice(robots, processes, sandbox_gateways, soft, hard_raised)
    if advice is not None:
        raise UsageError(advice)
    return soft
