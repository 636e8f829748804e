"""What became of a message the app sent through the fleet core (``send``, ``publish``).

Pure values, below the core and the outbox that fill them in, so that both (and the adapters)
share one spelling of every outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from wsctl.protocol.envelopes import Status
from wsctl.redis.pubsub import PublishUncertain

__all__ = [
    "SendOutcome",
    "SendResult",
    "is_redis_failure",
    "may_have_published",
    "redis_reason",
    "unsure_reason",
]


class SendOutcome(StrEnum):
    """What became of one :meth:`~wsctl.gateway.core.FleetCore.send` or
    :meth:`~wsctl.gateway.core.FleetCore.publish`: the reply statuses of a ``send``, plus
    ``timeout`` (no answer in time: the message may or may not have arrived) and, for
    ``publish`` only, ``published``: handed to Redis for the robot's owner, no acknowledgement
    awaited (like socket.io's ``emit``). Spelled as the wire's statuses, and as
    ``send_many``'s :class:`~wsctl.protocol.fanout.FanOutcome` for the same situation."""

    DELIVERED = Status.DELIVERED.value
    NOT_CONNECTED = Status.NOT_CONNECTED.value
    INSTANCE_UNREACHABLE = Status.INSTANCE_UNREACHABLE.value
    REJECTED = Status.REJECTED.value
    ERROR = Status.ERROR.value
    TIMEOUT = "timeout"
    PUBLISHED = "published"


@dataclass(frozen=True)
class SendResult:
    """What became of one message: the outcome, the instances it went through, and the
    reason when it was not delivered."""

    outcome: SendOutcome
    robot_id: str
    route: tuple[str, ...] = ()
    reason: str | None = None

    @property
    def delivered(self) -> bool:
        """True when the robot's socket took the message."""
        return self.outcome is SendOutcome.DELIVERED


def is_redis_failure(exc: BaseException) -> bool:
    """Did Redis (or the way to it) fail, rather than the app's input or code? A Redis error,
    a cluster client's error (no node reachable, a slot no primary serves during a failover:
    redis-py raises those outside RedisError), a socket error or a timeout; anything else is
    a bug to report as one, never as Redis being down."""
    return isinstance(exc, RedisError | RedisClusterException | OSError | TimeoutError)


def may_have_published(exc: BaseException) -> bool:
    """Does ``exc``, raised while publishing, leave the messages maybe published? Redis did
    not answer in time (a stalled Redis runs what it had read once it resumes), or they were
    written and the way to Redis was lost before it answered
    (:class:`~wsctl.redis.pubsub.PublishUncertain`)."""
    return isinstance(exc, RedisTimeoutError | TimeoutError | PublishUncertain)


def unsure_reason(why: str, *, published: bool = False) -> str:
    """The reason of a message whose fate is not known, from what failed (``why``): it was
    written and Redis never answered, or (``published``) it went out and who heard it could
    not be asked."""
    if published:
        return f"published, then {why}: it may have arrived"
    return f"{why}: it may have been published"


def redis_reason(scrubbed: str) -> str:
    """The reason of an outcome that failed because Redis did, from the error's text with
    addresses' passwords already scrubbed (``Target.scrub``)."""
    return f"Redis unavailable: {scrubbed[:200]}"
