"""The websockets adapter's frame writer, on real connections over loopback."""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from wsctl.gateway.batching import SharedText
from wsctl.gateway.wsframes import frame_of, write_texts


async def _pair(compression: str | None) -> tuple[Any, Any, Any]:
    """A server, the server side of one connection, and its client."""
    accepted: asyncio.Queue[Any] = asyncio.Queue()
    done = asyncio.Event()

    async def handler(ws: Any) -> None:
        await accepted.put(ws)
        await done.wait()

    server = await serve(handler, "127.0.0.1", 0, compression=compression)
    port = server.sockets[0].getsockname()[1]
    client = await connect(f"ws://127.0.0.1:{port}", compression=compression)
    server_side = await accepted.get()
    server_side.done = done
    return server, server_side, client


async def test_a_shared_payload_is_framed_once_and_frames_of_a_socket_go_in_order() -> None:
    server, ws, client = await _pair(None)
    try:
        shared = SharedText("é-shared", "é-shared".encode())
        write_texts(ws, [shared, SharedText("own", b"own"), shared])
        first = shared.frame
        assert first is not None and frame_of(shared) is first  # built once, then reused
        assert [await client.recv() for _ in range(3)] == ["é-shared", "own", "é-shared"]
    finally:
        ws.done.set()
        await client.close()
        server.close()
        await server.wait_closed()


async def test_a_compressed_connection_gets_its_own_frames() -> None:
    server, ws, client = await _pair("deflate")
    try:
        assert ws.protocol.extensions  # permessage-deflate negotiated
        shared = SharedText("x" * 200, b"x" * 200)
        write_texts(ws, [shared])
        assert shared.frame is None  # not shareable: compressed per connection
        assert await client.recv() == "x" * 200
    finally:
        ws.done.set()
        await client.close()
        server.close()
        await server.wait_closed()


async def test_a_closed_socket_refuses_and_writes_nothing() -> None:
    server, ws, client = await _pair(None)
    try:
        await client.close()
        await ws.wait_closed()
        shared = SharedText("late", b"late")
        try:
            write_texts(ws, [shared])
        except ConnectionError:
            pass
        else:
            raise AssertionError("a closed socket took a write")
        assert shared.frame is None
    finally:
        ws.done.set()
        server.close()
        await server.wait_closed()
