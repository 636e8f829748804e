"""What a simulate run needs of the machine (wsctl.ops.simulate.capacity) and the open-files limits
to try (wsctl.system.limit_targets): pure, no limit is changed here."""

from __future__ import annotations

import errno

from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

from wsctl.gateway.control import CONTROL_CONCURRENCY
from wsctl.gateway.core import SESSION_CONCURRENCY
from wsctl.ops.simulate.capacity import GATEWAY_REDIS, PROCESS_RESERVE, fd_advice, simulate_fd_needs
from wsctl.ops.simulate.robots import _worth_retrying
from wsctl.system import GENEROUS, UNLIMITED, limit_targets


def test_limit_targets_raise_the_soft_limit_then_the_hard_one_where_allowed() -> None:
    assert limit_targets(900, 1024, 4096) == []
    assert limit_targets(900, UNLIMITED, UNLIMITED) == []
    assert limit_targets(3000, 1024, 4096) == [(4096, 4096)]
    assert limit_targets(3000, 1024, 1_000_000) == [(GENEROUS, 1_000_000)]
    assert limit_targets(100_000, 1024, 1_000_000) == [(100_000, 1_000_000)]
    assert limit_targets(3000, 1024, UNLIMITED) == [(GENEROUS, UNLIMITED)]
    # over the hard limit: both (root / CAP_SYS_RESOURCE), else at least the soft one to it
    assert limit_targets(50_128, 1024, 20_000) == [(50_128, 50_128), (20_000, 20_000)]


def test_the_needs_count_the_robots_holders_the_sandbox_gateways_and_its_redis() -> None:
    one = simulate_fd_needs(50_000, 1, None)
    assert [(n.kind, n.count) for n in one] == [("robots", 50_000 + PROCESS_RESERVE)]
    spread = simulate_fd_needs(50_000, 4, 4)
    assert [(n.kind, n.count) for n in spread] == [
        ("robots", 12_500 + PROCESS_RESERVE),
        ("gateway", 12_500 + PROCESS_RESERVE + GATEWAY_REDIS),
        ("redis", 4 * GATEWAY_REDIS + PROCESS_RESERVE + 32),
    ]


def test_a_gateways_redis_allowance_covers_its_concurrency_limits() -> None:
    assert GATEWAY_REDIS >= SESSION_CONCURRENCY + CONTROL_CONCURRENCY + 8


def test_the_advice_names_the_processes_and_gateways_that_fit() -> None:
    line = fd_advice(50_000, 1, 2, limit=20_000, hard_raised=False)
    assert line == (
        "simulate: 50,000 robot(s) need 50,128 open files in simulate's process (it holds the "
        "robots), over the open-files limit of 20,000 (the hard limit; raising it needs root or "
        "CAP_SYS_RESOURCE): use --processes 3 --sandbox-gateways 3, or raise the open-files "
        "limit (ulimit -Hn / LimitNOFILE= for a service, as root)"
    )
    # what it advises fits
    assert fd_advice(50_000, 3, 3, limit=20_000, hard_raised=False) is None
    # gateways of a fleet simulate did not start are not counted
    assert "--sandbox-gateways" not in (fd_advice(50_000, 1, None, 20_000, False) or "")
    # only the gateways over: only more gateways
    line = fd_advice(30_000, 4, 1, limit=20_000, hard_raised=False) or ""
    assert "use --sandbox-gateways 2," in line and "--processes" not in line
    # a raised hard limit is the machine's ceiling
    assert "the most this machine allows" in (fd_advice(50_000, 1, None, 20_000, True) or "")


def test_no_advice_when_every_process_fits_or_nothing_limits() -> None:
    assert fd_advice(200, 1, 2, limit=1024, hard_raised=False) is None
    assert fd_advice(10_000_000, 1, 2, limit=UNLIMITED, hard_raised=False) is None


def test_a_limit_too_low_for_any_split_advises_raising_it() -> None:
    line = fd_advice(1000, 1, None, limit=100, hard_raised=False) or ""
    assert line.endswith(
        ": raise the open-files limit (ulimit -Hn / LimitNOFILE= for a service, as root)"
    )


def test_which_handshake_failures_the_connect_phase_tries_again() -> None:
    assert _worth_retrying(TimeoutError("timed out during opening handshake"))
    assert _worth_retrying(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
    assert _worth_retrying(InvalidStatus(Response(503, "Service Unavailable", {})))  # type: ignore[arg-type]
    assert not _worth_retrying(InvalidStatus(Response(401, "Unauthorized", {})))  # type: ignore[arg-type]
    assert not _worth_retrying(OSError(errno.EMFILE, "Too many open files"))
