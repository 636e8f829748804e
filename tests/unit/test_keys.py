"""Key and channel naming, glob escaping and robot id validation."""

from __future__ import annotations

import pytest

from wsctl.errors import UsageError
from wsctl.registry.keys import Keyspace, escape_glob, validate_id


def test_keys_use_the_seed_prefix_by_default() -> None:
    ks = Keyspace()
    assert ks.conn_key("r1") == "ws_conn:r1"
    assert ks.robot_of("ws_conn:r1") == "r1"
    assert ks.instance_key("gw") == "ws_inst:gw"
    assert ks.control_channel("gw") == "ws_ctl:gw"


def test_exact_match_escapes_every_glob_metacharacter() -> None:
    assert escape_glob(Keyspace().conn_key("a*b?[c]\\")) == "ws_conn:a\\*b\\?\\[c\\]\\\\"


def test_prefix_with_metacharacters_is_escaped_in_patterns() -> None:
    assert Keyspace(prefix="t[1]:").conn_match() == "t\\[1\\]:*"


@pytest.mark.parametrize("bad", ["", "a\nb", "tab\there", "x" * 257, "\x00"])
def test_invalid_robot_ids_are_rejected(bad: str) -> None:
    with pytest.raises(UsageError):
        validate_id(bad)


@pytest.mark.parametrize("good", ["robot*", "机器人-1", "a b", "[x]", "\\", "é" * 128])
def test_unusual_but_valid_ids_are_accepted(good: str) -> None:
    assert validate_id(good) == good
