"""The robots' reconnect policy (wsctl.reconnect): the next gateway, after a jittered
exponential backoff."""

from __future__ import annotations

import itertools

from wsctl.reconnect import FIRST_DELAY, MAX_DELAY, backoff, next_gateway


def test_the_next_attempt_goes_to_the_next_gateway_round_the_list() -> None:
    assert [next_gateway(3, i) for i in range(3)] == [1, 2, 0]
    assert next_gateway(1, 0) == 0


def test_the_first_wait_is_jittered_around_the_first_delay() -> None:
    assert backoff(0, 0.0) == FIRST_DELAY * 0.5
    assert backoff(0, 1.0) == FIRST_DELAY * 1.5


def test_the_wait_doubles_up_to_the_maximum() -> None:
    waits = [backoff(n, 0.5) for n in range(8)]
    assert waits[:3] == [FIRST_DELAY, FIRST_DELAY * 2, FIRST_DELAY * 4]
    assert waits[-1] == MAX_DELAY and all(a <= b for a, b in itertools.pairwise(waits))
    assert backoff(10_000, 0.5) == MAX_DELAY  # no overflow for a robot that keeps trying


def test_a_jitter_outside_0_to_1_is_clamped() -> None:
    assert backoff(0, -3.0) == FIRST_DELAY * 0.5 and backoff(0, 7.0) == FIRST_DELAY * 1.5
