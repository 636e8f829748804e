"""Handshake admission, shared by both adapters: paths, tokens and the refusals, pure."""

from __future__ import annotations

from dataclasses import dataclass

from wsctl.gateway.admission import (
    CLOSE_POLICY,
    CLOSE_TRY_LATER,
    Refusal,
    health_answer,
    presented_token,
    refusal,
    robot_from_path,
)
from wsctl.gateway.identity import robot_token


@dataclass
class State:
    stopping: bool = False
    draining: bool = False
    retry_after: int = 5


SECRET = "s3cret"
GOOD = "?token=" + robot_token(SECRET, "r1")


def test_robot_ids_come_percent_decoded_from_the_path() -> None:
    assert robot_from_path("/ws/robot%2A17?token=x") == "robot*17"
    assert robot_from_path("/ws/%E6%9C%BA") == "机"
    assert robot_from_path("/other") is None


def test_token_from_bearer_header_wins_over_query() -> None:
    assert presented_token("/ws/r?token=q", "Bearer h") == "h"
    assert presented_token("/ws/r?token=q", None) == "q"
    assert presented_token("?token=q", None) == "q"
    assert presented_token("/ws/r", None) is None


def test_a_valid_robot_with_its_token_is_admitted() -> None:
    assert refusal(State(), "r1", "/ws/r1" + GOOD, None, SECRET) is None
    bearer = "Bearer " + robot_token(SECRET, "r1")
    assert refusal(State(), "r1", "/ws/r1", bearer, SECRET) is None


def test_without_a_secret_any_valid_id_is_admitted() -> None:
    assert refusal(State(), "r1", "/ws/r1", None, None) is None


def test_a_wrong_or_missing_token_is_refused_with_401() -> None:
    r2_token = "?token=" + robot_token(SECRET, "r2")
    for target in ("/ws/r1", "/ws/r1?token=nope", "/ws/r1" + r2_token):
        assert refusal(State(), "r1", target, None, SECRET) == Refusal(
            401, "bad or missing token\n"
        )
    assert refusal(State(), "r2", GOOD, None, SECRET) is not None  # r1's token, not r2's


def test_an_invalid_robot_id_is_refused_with_400_before_the_token_is_checked() -> None:
    refused = refusal(State(), "bad\x01id", "", None, SECRET)
    assert refused is not None and refused.status == 400
    assert refused.body.endswith("\n") and refused.close_code == CLOSE_POLICY
    assert "\n" not in refused.reason


def test_a_draining_instance_refuses_with_503_and_retry_after() -> None:
    refused = refusal(State(draining=True, retry_after=7), "r1", GOOD, None, SECRET)
    assert refused == Refusal(503, "draining\n", (("Retry-After", "7"),), CLOSE_TRY_LATER)


def test_shutting_down_wins_over_draining_and_bad_input() -> None:
    refused = refusal(State(stopping=True, draining=True), "bad\x01id", "", None, SECRET)
    assert refused == Refusal(503, "shutting down\n", close_code=CLOSE_TRY_LATER)
    assert refused.headers == () and refused.reason == "shutting down"


def test_health_answers_end_with_a_newline() -> None:
    assert health_answer(200, "ok") == (200, "ok\n")
    assert health_answer(503, "draining") == (503, "draining\n")
