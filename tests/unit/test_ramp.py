"""The adaptive connect ramp (wsctl.ops.simulate.ramp): a pure controller driven with explicit times,
and a model of a gateway that accepts a fixed number of handshakes per second."""

from __future__ import annotations

import heapq
import math

import pytest

from wsctl.ops.simulate.ramp import (
    BURST_S,
    DECREASE_ON_SLOW,
    MIN_IN_FLIGHT,
    MIN_RATE,
    SLOW_HANDSHAKE_S,
    WINDOW_S,
    ConnectRamp,
    combine,
    describe,
)


def _window(ramp: ConnectRamp, start: float, seconds: list[float | None]) -> float:
    """Start and end one handshake per entry within one decision window, then let the ramp
    decide at the window's end (returned)."""
    for _ in seconds:
        ramp.started(start)
    for s in seconds:
        ramp.ended(start + WINDOW_S * 0.99, s)
    end = start + WINDOW_S
    ramp.delay(end)
    return end


def _burst(ramp: ConnectRamp, now: float) -> int:
    """Start handshakes at ``now`` as long as the ramp allows; how many."""
    starts = 0
    while ramp.delay(now) == 0.0 and starts < 100_000:
        ramp.started(now)
        starts += 1
    return starts


def test_starts_are_paced_at_the_rate_asked() -> None:
    ramp = ConnectRamp(100.0)
    assert abs(_burst(ramp, 0.0) - 100.0 * BURST_S) <= 1  # a tenth of a second's worth
    assert ramp.delay(0.0) == pytest.approx(0.01, abs=0.01)
    now = 1.0
    assert _burst(ramp, now) <= 100.0 * BURST_S + 1
    for _ in range(50):  # then one every 10 ms
        now += ramp.delay(now)
        ramp.started(now)
        assert ramp.delay(now) == pytest.approx(0.01)


def test_late_starts_catch_up_by_a_tenth_of_a_second_at_most() -> None:
    """A loop that wakes late may start what fell due meanwhile, up to BURST_S worth; an idle
    ramp saves up no more than that."""
    ramp = ConnectRamp(100.0)
    ramp.started(0.0)
    ramp.ended(0.001, 0.001)
    assert abs(_burst(ramp, 5.0) - 100.0 * BURST_S) <= 1
    assert 0 < ramp.delay(5.0) <= 0.01


def test_a_timeout_halves_the_rate_from_what_was_accepted() -> None:
    ramp = ConnectRamp(1000.0)
    # 50 handshakes accepted in half a second (100/s), one timed out
    _window(ramp, 0.0, [0.05] * 50 + [None])
    assert ramp.rate == pytest.approx(50.0)
    assert ramp.slowdowns == 1 and ramp.lowest == pytest.approx(50.0) and ramp.failures == 1


def test_slow_handshakes_bring_the_rate_just_below_what_was_accepted() -> None:
    ramp = ConnectRamp(1000.0)
    _window(ramp, 0.0, [SLOW_HANDSHAKE_S * 2] * 100)  # 200/s accepted, all of them slow
    assert ramp.rate == pytest.approx(200.0 * DECREASE_ON_SLOW) and ramp.slowdowns == 1


def test_fast_windows_raise_the_rate_back_but_never_above_the_rate_asked() -> None:
    ramp = ConnectRamp(1000.0)
    end = _window(ramp, 0.0, [None] * 3)
    assert ramp.rate == MIN_RATE  # nothing accepted: the floor
    rates = []
    for _ in range(30):
        end = _window(ramp, end, [0.01] * 5)
        rates.append(ramp.rate)
    assert rates == sorted(rates) and rates[0] == pytest.approx(MIN_RATE * 1.5)
    assert max(rates) == 1000.0 and ramp.lowest == MIN_RATE


def test_the_rate_never_falls_below_the_floor() -> None:
    ramp = ConnectRamp(20.0)
    end = 0.0
    for _ in range(10):
        end = _window(ramp, end, [None])
    assert ramp.rate == MIN_RATE


def test_starts_wait_for_completions_when_too_many_are_in_flight() -> None:
    ramp = ConnectRamp(10.0)
    cap = max(MIN_IN_FLIGHT, 10.0 * SLOW_HANDSHAKE_S * 2)
    now = 0.0
    for _ in range(int(cap)):
        ramp.started(now)
        now += 0.1
    assert ramp.delay(now) == math.inf
    ramp.ended(now, 0.2)
    assert ramp.delay(now) < math.inf


def test_the_handshakes_in_flight_follow_what_the_gateways_complete() -> None:
    """Once completions are seen, at most what the gateways clear in 2 x SLOW_HANDSHAKE_S
    seconds is in flight, however high the rate asked."""
    ramp = ConnectRamp(math.inf)
    _window(ramp, 0.0, [0.1] * 100)  # 200 completed per second
    cap = 200 * SLOW_HANDSHAKE_S * 2
    assert _burst(ramp, WINDOW_S) == cap and ramp.delay(WINDOW_S) == math.inf


def test_no_limit_starts_everything_at_once_until_a_failure() -> None:
    ramp = ConnectRamp(math.inf)
    for _ in range(10_000):
        assert ramp.delay(0.0) == 0.0
        ramp.started(0.0)
    for _ in range(9_000):
        ramp.ended(0.2, 0.2)
    ramp.ended(0.3, None)
    ramp.delay(WINDOW_S)
    assert ramp.rate == pytest.approx(9_000 / WINDOW_S * 0.5)
    assert _burst(ramp, WINDOW_S) <= ramp.rate * BURST_S + 1  # paced from now on


def test_an_asked_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ConnectRamp(0.0)


def _run(
    asked: float, robots: int, capacity: float, timeout: float, adaptive: bool, attempts: int
) -> int:
    """Connect ``robots`` to a model gateway that completes ``capacity`` handshakes per second
    in arrival order (a robot that gives up after ``timeout`` seconds still costs it its
    turn), with ``attempts`` per robot: the adaptive ramp, or starts at the fixed rate (what
    simulate did before). Returns how many robots never connected."""
    ramp = ConnectRamp(asked)
    events: list[tuple[float, int, int, float | None]] = []  # (time, seq, attempt, seconds)
    server_free = 0.0
    pending = [1] * robots  # attempt numbers waiting to start
    failed = seq = 0
    now = 0.0
    next_fixed = 0.0
    for _ in range(5_000_000):
        if not pending and not events:
            return failed
        while events and events[0][0] <= now:
            _, _, attempt, seconds = heapq.heappop(events)
            ramp.ended(now, seconds)
            if seconds is None:
                if attempt < attempts:
                    pending.append(attempt + 1)
                else:
                    failed += 1
        due = ramp.delay(now) if adaptive else next_fixed - now
        if pending and due <= 0:
            attempt = pending.pop(0)
            ramp.started(now)
            next_fixed = now + 1 / asked
            server_free = max(server_free, now) + 1 / capacity
            took = server_free - now
            seq += 1
            if took > timeout:
                heapq.heappush(events, (now + timeout, seq, attempt, None))
            else:
                heapq.heappush(events, (server_free, seq, attempt, took))
            continue
        # on to the next event: a handshake ending, or the next start falling due
        step = events[0][0] if events else math.inf
        if pending:
            step = min(step, now + due)
        now = max(now + 1e-4, step if step < math.inf else now + 0.01)
    raise AssertionError("the model did not finish")


def test_the_ramp_connects_every_robot_a_fixed_rate_loses_to_timeouts() -> None:
    """1,000/s asked of a gateway that accepts 200/s, 10 s handshake timeout, 4,000 robots: at
    the fixed rate with one attempt (simulate before) the backlog outgrows the timeout and
    1,500 robots fail; the adaptive ramp slows to what the gateway accepts and connects them
    all, with one attempt as with three."""
    model = {"asked": 1000.0, "robots": 4000, "capacity": 200.0, "timeout": 10.0}
    assert _run(**model, adaptive=False, attempts=1) > 1400  # type: ignore[arg-type]
    assert _run(**model, adaptive=True, attempts=1) == 0  # type: ignore[arg-type]
    assert _run(**model, adaptive=True, attempts=3) == 0  # type: ignore[arg-type]


def test_combine_adds_up_the_swarms_and_describe_says_what_happened() -> None:
    one = {"asked": 500.0, "lowest": 90.0, "final": 300.0, "slowdowns": 2, "failures": 4}
    two = {"asked": 500.0, "lowest": 110.0, "final": 320.0, "slowdowns": 1, "failures": 0}
    ramp = combine([{**one, "retried": 4}, {**two, "retried": 0}])
    assert ramp == {
        "ramp_asked_per_s": 1000.0,
        "ramp_lowest_per_s": 200.0,
        "ramp_final_per_s": 620.0,
        "ramp_slowdowns": 3,
        "handshake_failures": 4,
        "retried": 4,
    }
    assert describe(ramp) == (
        "ramp 1000/s, slowed 3 time(s) to 200/s at the lowest (ended at 620/s); "
        "4 handshake(s) timed out or refused and retried"
    )
    held = combine([{"asked": None, "lowest": None, "final": None, "slowdowns": 0, "failures": 0}])
    assert describe({**held, "retried": 0}) == "ramp all at once, held"
