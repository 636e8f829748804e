"""Writing text frames to ``websockets`` server connections without waiting: the websockets
adapter's fast path for batched sends (used by :mod:`wsctl.gateway.server` only).

An identical payload going to many sockets of one instance is **framed once**: the first
socket that writes a :class:`~wsctl.gateway.batching.SharedText` builds its frame (header +
UTF-8 payload, as ``websockets`` serializes an unmasked, uncompressed server frame) and keeps
it on the object; every other socket writes those same bytes. ``websockets.broadcast()``
encodes a message once but still frames it per connection (one header + payload copy each).
The frames of one socket in one batch leave in one transport write (one ``send`` system call
instead of one per message).

A connection with extensions (permessage-deflate compresses per connection), a client side
(masked frames), or a library without the attributes relied on here goes through
``protocol.send_text`` per payload, as ``broadcast()`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from websockets.frames import Frame, Opcode
from websockets.protocol import SERVER, State

from wsctl.gateway.batching import SharedText

__all__ = ["frame_of", "write_texts"]


def frame_of(payload: SharedText) -> bytes:
    """The unmasked, uncompressed text frame of ``payload``, built on first use and kept."""
    frame = payload.frame
    if frame is None:
        frame = payload.frame = Frame(Opcode.TEXT, payload.data).serialize(mask=False)
    return frame


def write_texts(ws: Any, payloads: Sequence[SharedText]) -> None:
    """Write ``payloads`` as text frames on ``ws`` (a ``websockets`` asyncio connection) now,
    in order, without waiting for the buffer to drain. Raises ConnectionError when the socket
    is not open or a fragmented message is being sent (nothing written then)."""
    protocol = ws.protocol
    if protocol.state is not State.OPEN:
        raise ConnectionError("socket not open")
    if ws.send_in_progress is not None:
        raise ConnectionError("a fragmented message is being sent")
    transport = getattr(ws, "transport", None)
    continuation = getattr(protocol, "expect_continuation_frame", None)
    if (
        protocol.extensions
        or protocol.side is not SERVER
        or transport is None
        or continuation is not False
    ):
        # per-connection frames (or a state send_text refuses, with its own error)
        for payload in payloads:
            protocol.send_text(payload.data)
        ws.send_data()
        return
    ws.send_data()  # whatever the protocol queued (a pong, a ping) goes first
    if len(payloads) == 1:
        transport.write(frame_of(payloads[0]))
    else:
        transport.write(b"".join([frame_of(p) for p in payloads]))
