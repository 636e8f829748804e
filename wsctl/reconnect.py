"""How a robot reconnects, as the docs tell robot authors (docs/operate/drain.md) and as
wsctl's own robots do (the demo robots of ``wsctl sandbox``, ``simulate``'s robots): after its
gateway closes it (1012 from a drain, 1001 from a shutdown), refuses its handshake (HTTP 503
while draining) or refuses the connection (a dead gateway), the next attempt goes to the next
gateway in its list, after a jittered exponential backoff, so a fleet's robots neither come back to the gateway that sent
them away nor all arrive at the same instant. Pure: the random number is an input.
"""

from __future__ import annotations

__all__ = ["FIRST_DELAY", "MAX_DELAY", "backoff", "next_gateway"]

FIRST_DELAY = 0.1  # seconds before the first attempt (jittered to 0.05-0.15)
MAX_DELAY = 2.0  # seconds the doubling stops at


def backoff(
    attempt: int, jitter: float, first: float = FIRST_DELAY, maximum: float = MAX_DELAY
) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0 for the first after a close):
    ``first`` doubling per attempt up to ``maximum``, times ``0.5 + jitter`` (``jitter`` a
    random number from 0 to 1), so the wait is within half and one and a half times that."""
    base = min(maximum, first * 2.0 ** min(attempt, 30))
    return base * (0.5 + min(max(jitter, 0.0), 1.0))


def next_gateway(count: int, current: int) -> int:
    """The index of the gateway to try after the one at ``current`` (of ``count``): the next
    in the list, round it; the only one when there is one."""
    return (current + 1) % count if count > 0 else 0
