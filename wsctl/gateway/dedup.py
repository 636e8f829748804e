"""Dropping a control message that arrives twice. Pure: no I/O, no clock (``now`` is passed).

A PUBLISH whose reply timed out (a frozen Redis) is retried by redis-py on a new connection;
when Redis resumes it runs both copies, and every subscriber gets the message twice. wsctl's
publishers do not retry themselves, but the client library does (that retry is what carries a
request over a connection Redis closed). So the receiver drops a copy: every control message
is unique by construction (each envelope, batch and hint has its own random id, and a forward
carries its own route timestamps), so an identical payload seen again within the window is a
copy. Memory is bounded: at most ``size`` digests, each kept ``window`` seconds.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

__all__ = ["DEDUP_SIZE", "DEDUP_WINDOW", "RecentPayloads"]

DEDUP_SIZE = 65_536  # digests remembered at most (about 6 MB)
DEDUP_WINDOW = 120.0  # seconds a digest is remembered (a resumed Redis runs the copies at once)


class RecentPayloads:
    """The digests of the control messages seen lately."""

    def __init__(self, size: int = DEDUP_SIZE, window: float = DEDUP_WINDOW) -> None:
        self.size = size
        self.window = window
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self.dropped = 0

    def seen(self, payload: str | bytes, now: float) -> bool:
        """True when ``payload`` was seen within the window (a copy: counted in ``dropped``);
        else remembers it and returns False."""
        data = payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else payload
        digest = hashlib.blake2b(data, digest_size=16).digest()
        seen = self._seen
        while seen:
            oldest, at = next(iter(seen.items()))
            if now - at <= self.window and len(seen) < self.size:
                break
            del seen[oldest]
        if digest in seen:
            self.dropped += 1
            return True
        seen[digest] = now
        return False

    def __len__(self) -> int:
        return len(self._seen)
