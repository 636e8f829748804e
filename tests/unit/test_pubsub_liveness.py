"""A subscription's liveness, decided without Redis: when a silent subscription PINGs its node
and when the node counts as gone (:class:`wsctl.redis.pubsub.Liveness`); the frozen node itself
is tested in tests/integration/test_frozen_subscriptions.py."""

from __future__ import annotations

import pytest

from wsctl.redis.pubsub import PING_AFTER_SILENCE, Liveness, LivenessStep

BOUND = 1.0  # the answer bound (the client's socket timeout)


def confirmed(at: float = 0.0) -> Liveness:
    """A subscription made at ``at`` whose SUBSCRIBE was confirmed at once."""
    alive = Liveness(at, BOUND)
    alive.heard(at)
    return alive


def test_a_new_subscription_waits_for_its_confirmation_then_is_lost_without_it() -> None:
    alive = Liveness(10.0, BOUND)
    assert not alive.confirmed
    assert alive.step(10.0 + BOUND - 0.01) is LivenessStep.LISTEN
    assert alive.step(10.0 + BOUND) is LivenessStep.LOST


def test_a_confirmed_subscription_listens_without_pinging_while_it_hears_something() -> None:
    alive = confirmed()
    # a message every second for a minute: never a PING
    for second in range(1, 61):
        now = float(second)
        assert alive.step(now) is LivenessStep.LISTEN
        alive.heard(now)
    assert alive.confirmed


def test_a_silent_subscription_pings_after_the_silence_and_not_before() -> None:
    alive = confirmed()
    assert alive.step(PING_AFTER_SILENCE - 0.01) is LivenessStep.LISTEN
    assert alive.step(PING_AFTER_SILENCE) is LivenessStep.PING


def test_an_unanswered_ping_makes_the_subscription_lost_after_the_bound() -> None:
    alive = confirmed()
    alive.asked(PING_AFTER_SILENCE)
    assert alive.step(PING_AFTER_SILENCE + BOUND - 0.01) is LivenessStep.LISTEN  # no second PING
    assert alive.step(PING_AFTER_SILENCE + BOUND) is LivenessStep.LOST


def test_an_answered_ping_starts_a_new_silence() -> None:
    alive = confirmed()
    alive.asked(2.0)
    alive.heard(2.3)  # the pong
    assert alive.step(2.3 + BOUND + 0.5) is LivenessStep.LISTEN
    assert alive.step(2.3 + PING_AFTER_SILENCE) is LivenessStep.PING


def test_an_idle_subscription_pings_at_most_once_per_silence() -> None:
    alive = confirmed()
    pings = 0
    now = 0.0
    while now < 60.0:  # a minute of idleness, each PING answered 10 ms later
        now = round(now + 0.05, 2)
        if alive.step(now) is LivenessStep.PING:
            pings += 1
            alive.asked(now)
            alive.heard(now + 0.01)
    assert pings <= 60.0 / PING_AFTER_SILENCE


def test_the_read_wait_ends_when_the_next_step_is_due_within_its_limits() -> None:
    alive = confirmed()
    assert alive.read_for(0.0) == 1.0  # at most a second per read
    assert alive.read_for(PING_AFTER_SILENCE - 0.25) == 0.25  # the PING falls due then
    assert alive.read_for(PING_AFTER_SILENCE + 5) == 0.05  # overdue: still one short read
    alive.asked(PING_AFTER_SILENCE)
    assert alive.read_for(PING_AFTER_SILENCE + 0.6) == pytest.approx(BOUND - 0.6)
