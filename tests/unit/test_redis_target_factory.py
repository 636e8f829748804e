"""Target resolution, URL redaction and reply parsing: no server needed."""

from __future__ import annotations

import pytest

from wsctl.config import Settings, load_settings
from wsctl.errors import ConfigError
from wsctl.redis_factory import target_from_settings
from wsctl.redis_internals import pack_commands
from wsctl.redis_pubsub import _numsub_value
from wsctl.redis_target import redact_url


def test_redact_url_masks_only_the_password() -> None:
    assert redact_url("redis://ops:p%40ss@host:6379/1") == "redis://ops:***@host:6379/1"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"


def test_password_with_url_specials_from_env_is_passed_verbatim() -> None:
    settings = load_settings(env={"REDIS_HOST": "h", "REDIS_PASSWORD": "a@b:c/d&e#f"})
    target = target_from_settings(settings)
    assert target.password == "a@b:c/d&e#f" and target.host == "h"
    assert "a@b" not in target.describe()
    assert target.scrub("failed for a@b:c/d&e#f") == "failed for ***"


def test_percent_encoded_url_password_is_decoded() -> None:
    target = target_from_settings(load_settings(env={"REDIS_URL": "redis://u:p%40%3Ass@h:7/3"}))
    assert (target.username, target.password, target.port, target.db) == ("u", "p@:ss", 7, 3)


def test_seed_cluster_settings_give_a_cluster_target() -> None:
    env = {"REDIS_USE_CLUSTER": "true", "REDIS_NODES": "a:1,b:2", "REDIS_USERNAME": "u"}
    target = target_from_settings(load_settings(env=env))
    assert target.kind == "cluster" and target.nodes == (("a", 1), ("b", 2))
    assert target.describe() == "cluster u@a:1,b:2"


def test_unix_url_and_rediss() -> None:
    assert (
        target_from_settings(load_settings(env={"REDIS_URL": "unix:///tmp/r.sock?db=2"})).path
        == "/tmp/r.sock"
    )
    assert target_from_settings(load_settings(env={"REDIS_URL": "rediss://h:1/0"})).ssl


def test_embedded_without_a_running_server_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        target_from_settings(load_settings(env={}))


@pytest.mark.parametrize(
    ("reply", "count"),
    [([("ch", 2)], 2), (["ch", 3], 3), ({"n1": [("ch", 1)], "n2": [("ch", 2)]}, 3), ([], 0)],
)
def test_numsub_reply_shapes(reply: object, count: int) -> None:
    assert _numsub_value(reply) == count


@pytest.mark.parametrize("url", ["redis://h:1/abc", "unix:///tmp/r.sock?db=x"])
def test_a_database_that_is_not_a_number_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="not a number"):
        target_from_settings(load_settings(env={"REDIS_URL": url}))


@pytest.mark.parametrize(
    ("commands", "fixed"),
    [
        ([("HGETALL", "ws_conn:r1"), ("HGETALL", "ws_conn:é*[x]"), ("HGETALL", "")], 1),
        (
            [("EVALSHA", "0123abcd", "1", "k1", "a"), ("EVALSHA", "0123abcd", "1", "k2", "a", "b")],
            3,
        ),
        ([("PUBLISH", "ws_ctl:gw-1", '{"op": "ping"}')], 1),
        ([("EVAL", "return '%s%%d'", "1", "k%d", "a%")], 3),
    ],
)
def test_packed_commands_are_byte_identical_to_redis_py(
    commands: list[tuple[str, ...]], fixed: int
) -> None:
    """wsctl's own bulk packer writes exactly the bytes redis-py would send."""
    from redis.connection import Connection

    reference = Connection()
    expected = [b"".join(reference.pack_command(*command)) for command in commands]
    assert pack_commands(commands, fixed) == expected


# Malformed URLs whose password would be misread as host, port or database. Each holds the
# marker S3cr (or the Hunter2Secret) inside its credentials.
MALFORMED_URLS = [
    "redis://:x@y:Hunter2Secret/zz@127.0.0.1:6379/0",  # the reported case
    "redis://:S3cr/et@127.0.0.1:6379/0",  # unencoded '/'
    "redis://:S3cr#et@127.0.0.1:6379",  # unencoded '#'
    "redis://:S3cr?et@127.0.0.1:6379",  # unencoded '?'
    "redis://ops:S3cr/et?x@127.0.0.1:6379/0",
    "redis://:S3cret",  # no host: the password is read as a port
    "redis://:S3cret@h:99999/0",  # port out of range
    "redis://:S3cret@h:0/0",
    "redis://u:S3cret@[::1:6379/0",  # unbalanced IPv6 bracket
    "rediss://:S3cr:et@h:12ab/0",
    "unix://:S3cr#et@/tmp/r.sock?db=0",
]


def _leaks(text: str) -> bool:
    return any(marker in text for marker in ("S3cr", "Hunter2", "Secret", "x@y"))


@pytest.mark.parametrize("url", MALFORMED_URLS)
def test_a_malformed_url_is_a_config_error_without_its_credentials(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"REDIS_URL": url})
    assert "malformed" in caught.value.message and not _leaks(caught.value.message)
    assert "\n" not in caught.value.message


@pytest.mark.parametrize("url", MALFORMED_URLS)
def test_redact_url_hides_a_malformed_url_entirely(url: str) -> None:
    assert not _leaks(redact_url(url))


@pytest.mark.parametrize("url", MALFORMED_URLS)
def test_target_from_settings_refuses_a_malformed_url(url: str) -> None:
    """Settings built without load_settings (library callers) are checked as well."""
    with pytest.raises(ConfigError) as caught:
        target_from_settings(Settings(redis_url=url))
    assert not _leaks(caught.value.message)


@pytest.mark.parametrize("url", ["redis://:p%2Fw%23d%40x@127.0.0.1:6379/0", "unix:///tmp/a@b.sock"])
def test_well_formed_urls_with_encoded_or_path_at_signs_still_work(url: str) -> None:
    target = target_from_settings(load_settings(env={"REDIS_URL": url}))
    assert target.password in (None, "p/w#d@x")
