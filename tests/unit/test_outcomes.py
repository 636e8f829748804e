"""Which failures count as Redis's (wsctl.gateway.outcomes): a cluster client's errors too,
never the app's own bugs; and which leave a message maybe published."""

from __future__ import annotations

import pytest
from redis.exceptions import (
    ConnectionError,
    MaxConnectionsError,
    NoPermissionError,
    RedisClusterException,
    SlotNotCoveredError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from wsctl.gateway.outcomes import is_redis_failure, may_have_published
from wsctl.redis.factory import is_pool_busy
from wsctl.redis.pubsub import PublishUncertain


@pytest.mark.parametrize(
    "exc",
    [
        RedisClusterException("Redis Cluster cannot be connected. Please provide at least one"),
        SlotNotCoveredError('Slot "13197" is not covered by the cluster.'),
        ConnectionError("Error 111 connecting to 127.0.0.1:6379."),
        NoPermissionError("this user has no permissions to run the 'publish' command"),
        PublishUncertain("ConnectionError: Error 111"),
        TimeoutError(),
        OSError("Connection reset by peer"),
    ],
)
def test_a_cluster_client_or_connection_error_is_a_redis_failure(exc: BaseException) -> None:
    assert is_redis_failure(exc)


@pytest.mark.parametrize("exc", [ValueError("bad"), KeyError("robot"), AttributeError("x")])
def test_a_bug_in_the_code_is_not_a_redis_failure(exc: BaseException) -> None:
    assert not is_redis_failure(exc)


def test_a_timeout_or_an_uncertain_publish_may_have_published_a_refusal_did_not() -> None:
    assert may_have_published(RedisTimeoutError("Timeout reading from 127.0.0.1:6379"))
    assert may_have_published(PublishUncertain("the publish lanes were closed"))
    assert not may_have_published(NoPermissionError("no permissions to run 'publish'"))
    assert not may_have_published(ConnectionError("Error 111 connecting"))


def test_a_lost_lanes_messages_the_busy_pool_could_not_take_count_as_a_busy_pool() -> None:
    busy = MaxConnectionsError("Too many connections")
    try:
        raise PublishUncertain("MaxConnectionsError: Too many connections") from busy
    except PublishUncertain as exc:
        assert is_pool_busy(exc)
    assert not is_pool_busy(PublishUncertain("ConnectionError: Error 111"))
