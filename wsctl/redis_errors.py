"""redis-py exceptions -> one operator-facing line (:class:`RedisUnavailable`, exit code 3).

Every message names the server through :meth:`Target.describe` and has the password scrubbed.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

from redis import exceptions as rx

from wsctl.errors import RedisUnavailable
from wsctl.redis_target import Target

__all__ = ["describe_error", "translate_errors"]


def describe_error(target: Target, exc: BaseException) -> RedisUnavailable:
    """Translate a redis-py exception into one operator-facing line (password scrubbed)."""
    where = target.describe()
    text = target.scrub(str(exc)) or exc.__class__.__name__
    upper = text.upper()
    auth_markers = ("WRONGPASS", "NOAUTH", "USERNAME-PASSWORD", "INVALID PASSWORD")
    if (
        isinstance(exc, rx.AuthenticationError)
        or isinstance(exc.__cause__, rx.AuthenticationError)
        or any(marker in upper for marker in auth_markers)
    ):
        msg = f"authentication failed at {where}: check REDIS_USERNAME / REDIS_PASSWORD"
    elif isinstance(exc, rx.ResponseError) and upper.startswith(("MOVED", "ASK", "CROSSSLOT")):
        msg = (
            f"{where} is a Redis Cluster node: set REDIS_USE_CLUSTER=true (or --cluster) "
            "and REDIS_NODES"
        )
    elif "CLUSTER MODE IS NOT ENABLED" in upper or "CLUSTER SUPPORT DISABLED" in upper:
        msg = f"{where} is not a Redis Cluster: unset REDIS_USE_CLUSTER / drop --cluster"
    elif isinstance(exc, rx.TimeoutError):
        msg = f"Redis at {where} timed out: check the network and server load"
    elif isinstance(exc, rx.ConnectionError):
        msg = f"cannot connect to Redis at {where}: {text}; check host, port and that it runs"
    elif isinstance(exc, rx.RedisClusterException):
        msg = f"Redis Cluster at {where}: {text}"
    else:
        msg = f"Redis error at {where}: {text}"
    return RedisUnavailable(msg)


@contextlib.contextmanager
def translate_errors(target: Target) -> Iterator[None]:
    """Re-raise any redis-py error inside the block as :class:`RedisUnavailable`."""
    try:
        yield
    except (rx.RedisError, rx.RedisClusterException) as exc:
        raise describe_error(target, exc) from exc
    except socket.gaierror as exc:  # a name that does not resolve
        raise describe_error(target, exc) from exc
