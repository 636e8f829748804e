"""The adaptive connect ramp of ``simulate``: start robots' opening handshakes as fast as the
gateways accept them, up to the rate asked, instead of at a fixed rate.

At a fixed rate, gateways that fall behind (a saturated machine, a slow TLS terminator) let
handshakes queue until they time out, and robots fail that a slower ramp would have
connected. :class:`ConnectRamp` follows what the gateways accept, the way load tools with an
adaptive arrival rate do, by additive-increase / multiplicative-decrease on the observed
handshakes:

- every :data:`WINDOW_S` seconds it judges the handshakes that ended in that window;
- a timeout or a refused connection halves the rate (from the lower of the rate and what was
  accepted in the window), and the robot is tried again later (the caller does that);
- handshakes slower than :data:`SLOW_HANDSHAKE_S` at the 90th percentile bring it just below
  what was accepted in the window (:data:`DECREASE_ON_SLOW`), so the backlog drains;
- a window of fast handshakes raises it by half, up to the rate asked;
- at most ``accepted x SLOW_HANDSHAKE_S x 2`` handshakes are in flight, ``accepted`` being the
  handshakes per second the gateways completed lately (the rate until it is known; at least
  :data:`MIN_IN_FLIGHT`): a backlog never grows beyond what they clear in a few seconds, so
  handshakes do not queue into their timeout while the window-by-window decisions catch up
  (a TCP window does the same);
- the rate never drops below :data:`MIN_RATE`, so the phase always progresses;
- starts that fall behind their schedule (a busy event loop wakes late) catch up by at most
  :data:`BURST_S` seconds' worth at once, so the rate asked is reached on a loaded machine
  without an idle ramp saving up a burst.

Pure: every method takes ``now`` (monotonic seconds); no clock, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BURST_S",
    "DECREASE_ON_FAILURE",
    "DECREASE_ON_SLOW",
    "INCREASE",
    "MIN_IN_FLIGHT",
    "MIN_RATE",
    "SLOW_HANDSHAKE_S",
    "WINDOW_S",
    "ConnectRamp",
    "combine",
    "describe",
]

WINDOW_S = 0.5  # seconds of observations behind each decision
SLOW_HANDSHAKE_S = 2.0  # a window whose p90 handshake is slower than this is a slow window
DECREASE_ON_FAILURE = 0.5
DECREASE_ON_SLOW = 0.9
INCREASE = 1.5
MIN_RATE = 5.0  # connects per second: the phase never stalls
MIN_IN_FLIGHT = 16
BURST_S = 0.1  # seconds of starts a late wake-up may catch up on at once


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]


@dataclass
class ConnectRamp:
    """The connect rate of one swarm of robots. ``asked``: connects per second asked for
    (``math.inf``: as fast as the gateways accept, starting all at once).

    Use: :meth:`delay` says how long to wait before the next start (``math.inf``: wait for a
    handshake to end); :meth:`started` when one starts; :meth:`ended` when it ends, with its
    duration, or ``None`` for a timeout or a refused connection (to be retried)."""

    asked: float
    rate: float = field(init=False)
    in_flight: int = field(default=0, init=False)
    lowest: float = field(init=False)  # the lowest rate the ramp went down to
    slowdowns: int = field(default=0, init=False)
    failures: int = field(default=0, init=False)  # timeouts and refusals observed
    _window_start: float | None = field(default=None, init=False)
    _durations: list[float] = field(default_factory=list, init=False)
    _failed: int = field(default=0, init=False)
    _next_at: float = field(default=-math.inf, init=False)
    _accepted: float | None = field(default=None, init=False)  # completions per second, smoothed

    def __post_init__(self) -> None:
        if not self.asked > 0:
            raise ValueError("the asked rate must be above 0 (math.inf: no limit)")
        self.rate = self.asked
        self.lowest = self.asked

    def _in_flight_cap(self) -> float:
        pace = self.rate if self._accepted is None else min(self.rate, self._accepted)
        if math.isinf(pace):
            return math.inf
        return max(MIN_IN_FLIGHT, pace * SLOW_HANDSHAKE_S * 2)

    def delay(self, now: float) -> float:
        """Seconds until the next handshake may start: 0 now, ``math.inf`` when as many are
        in flight as the rate allows (wait for one to end)."""
        self._decide(now)
        if self.in_flight >= self._in_flight_cap():
            return math.inf
        return max(0.0, self._next_at - now)

    def started(self, now: float) -> None:
        """A handshake started at ``now``."""
        if self._window_start is None:
            self._window_start = now
        self.in_flight += 1
        step = 0.0 if math.isinf(self.rate) else 1.0 / self.rate
        self._next_at = max(self._next_at, now - BURST_S) + step

    def ended(self, now: float, seconds: float | None) -> None:
        """A handshake ended at ``now``: after ``seconds``, or ``None`` when it timed out or
        the connection was refused (a sign the gateways are saturated)."""
        self.in_flight = max(0, self.in_flight - 1)
        if seconds is None:
            self._failed += 1
            self.failures += 1
        else:
            self._durations.append(seconds)
        self._decide(now)

    def _decide(self, now: float) -> None:
        if self._window_start is None:
            return
        elapsed = now - self._window_start
        if elapsed < WINDOW_S:
            return
        accepted = len(self._durations) / elapsed  # handshakes completed per second
        if self._durations:
            smoothed = self._accepted
            self._accepted = accepted if smoothed is None else (smoothed + accepted) / 2
        if self._failed:
            self._slow_to(min(self.rate, accepted) * DECREASE_ON_FAILURE)
        elif self._durations and _p90(self._durations) > SLOW_HANDSHAKE_S:
            self._slow_to(min(self.rate, accepted) * DECREASE_ON_SLOW)
        elif self._durations and not math.isinf(self.rate):
            self.rate = min(self.asked, self.rate * INCREASE)
        self._window_start = now
        self._durations.clear()
        self._failed = 0

    def _slow_to(self, rate: float) -> None:
        self.rate = max(MIN_RATE, rate)
        self.slowdowns += 1
        self.lowest = min(self.lowest, self.rate)
        # the start already scheduled at the old rate keeps its time; the next ones follow
        # the new rate (no burst to catch up)

    def summary(self) -> dict[str, Any]:
        """What the ramp did, for the report (rates in connects per second; ``None``: no
        limit)."""

        def per_s(rate: float) -> float | None:
            return None if math.isinf(rate) else round(rate, 1)

        return {
            "asked": per_s(self.asked),
            "lowest": per_s(self.lowest),
            "final": per_s(self.rate),
            "slowdowns": self.slowdowns,
            "failures": self.failures,
        }


def combine(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The ramps of several swarms (worker processes) as one: rates add up (``None``, no
    limit, when any is unlimited), counts add up. Each summary is :meth:`ConnectRamp.summary`
    plus ``retried`` (handshakes tried again)."""

    def total(key: str) -> float | None:
        values = [s.get(key) for s in summaries]
        if not values or any(v is None for v in values):
            return None
        return round(sum(float(v) for v in values if v is not None), 1)

    return {
        "ramp_asked_per_s": total("asked"),
        "ramp_lowest_per_s": total("lowest"),
        "ramp_final_per_s": total("final"),
        "ramp_slowdowns": sum(int(s.get("slowdowns", 0)) for s in summaries),
        "handshake_failures": sum(int(s.get("failures", 0)) for s in summaries),
        "retried": sum(int(s.get("retried", 0)) for s in summaries),
    }


def describe(ramp: dict[str, Any]) -> str:
    """One clause for a person, from :func:`combine`'s result: what the ramp asked and did."""

    def per_s(value: float | None) -> str:
        return "as fast as accepted" if value is None else f"{value:g}/s"

    asked = "all at once" if ramp["ramp_asked_per_s"] is None else per_s(ramp["ramp_asked_per_s"])
    if not ramp["ramp_slowdowns"] and not ramp["retried"]:
        return f"ramp {asked}, held"
    text = f"ramp {asked}"
    if ramp["ramp_slowdowns"]:
        text += (
            f", slowed {ramp['ramp_slowdowns']} time(s) to {per_s(ramp['ramp_lowest_per_s'])} "
            f"at the lowest (ended at {per_s(ramp['ramp_final_per_s'])})"
        )
    if ramp["retried"]:
        text += f"; {ramp['retried']} handshake(s) timed out or refused and retried"
    return text
