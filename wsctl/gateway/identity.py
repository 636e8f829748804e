"""Instance identity and robot authentication tokens. Pure functions."""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
from collections.abc import Mapping

from wsctl.registry.keys import validate_id

__all__ = ["instance_id_for", "robot_token", "token_ok"]


def instance_id_for(port: int, env: Mapping[str, str] | None = None) -> str:
    """``SERVER_INSTANCE_ID``, else the seed's rule: md5("hostname:port:pid")[:16]."""
    env = os.environ if env is None else env
    explicit = env.get("SERVER_INSTANCE_ID")
    if explicit:
        return validate_id(explicit, "instance id (SERVER_INSTANCE_ID)", utf8=True)
    seed = f"{socket.gethostname()}:{port}:{os.getpid()}"
    return hashlib.md5(seed.encode()).hexdigest()[:16]


def robot_token(secret: str, robot_id: str) -> str:
    """hex HMAC-SHA256(secret, robot_id): what a robot presents when the gateway has a secret."""
    return hmac.new(secret.encode(), robot_id.encode(), hashlib.sha256).hexdigest()


def token_ok(secret: str, robot_id: str, presented: str | None) -> bool:
    """Whether ``presented`` is the robot's token under ``secret`` (constant-time compare)."""
    return presented is not None and hmac.compare_digest(robot_token(secret, robot_id), presented)
