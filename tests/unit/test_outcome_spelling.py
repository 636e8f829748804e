"""One spelling per outcome: what ``fleet.send`` and ``fleet.send_many`` (and ``wsctl send``
one robot or many) report for the same situation is the same string."""

from __future__ import annotations

from wsctl.gateway.outcomes import SendOutcome
from wsctl.protocol.envelopes import Status
from wsctl.protocol.fanout import FanOutcome


def test_send_many_spells_every_outcome_it_shares_with_send_as_send_does() -> None:
    shared = set(SendOutcome) - {SendOutcome.PUBLISHED}  # publish() only
    assert {o.value for o in shared} <= {o.value for o in FanOutcome}


def test_an_owner_nobody_hears_is_instance_unreachable_for_send_and_send_many() -> None:
    assert SendOutcome.INSTANCE_UNREACHABLE.value == "instance_unreachable"
    assert FanOutcome.INSTANCE_UNREACHABLE.value == "instance_unreachable"
    assert Status.INSTANCE_UNREACHABLE.value == "instance_unreachable"
