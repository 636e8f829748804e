"""What per-message deflate costs a uvicorn server: its CPU per message with and without.

Starts ``uvicorn`` (a bare Starlette app, nothing of wsctl) twice per run, once with
``--ws-per-message-deflate true`` and once with ``false``; 100 Python ``websockets`` clients
connect (they offer compression by default, as the robots of a Python fleet would), then the
server writes 20,000 JSON messages of about 60 bytes (the shape of ``app_send_bench.py``'s) to
them in turn and reports the CPU it spent writing them (``getrusage``, user + system). Prints
each run and the ratio with / without. Loopback only; every process it starts is stopped.

    .venv/bin/python bench/app_send_deflate.py --runs 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

APP = r"""
import asyncio, json, os, resource, time
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute

MESSAGES = int(os.environ["DEFLATE_MESSAGES"])
CLIENTS = int(os.environ["DEFLATE_CLIENTS"])
socks = []


async def blast():
    before = resource.getrusage(resource.RUSAGE_SELF)
    for k in range(MESSAGES):
        text = json.dumps({"m": "x", "n": k, "t": time.time() * 1000.0}, separators=(",", ":"))
        await socks[k % len(socks)].send_text(text)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    for sock in socks:
        await sock.send_text(f"done:{cpu:f}")


async def endpoint(websocket):
    await websocket.accept()
    if websocket.query_params.get("client") != "1":  # the readiness probe
        await websocket.close()
        return
    socks.append(websocket)
    if len(socks) == CLIENTS:
        asyncio.get_running_loop().create_task(blast())
    try:
        while True:
            await websocket.receive_text()
    except Exception:
        pass


app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
"""


async def one_run(deflate: bool, messages: int, clients: int, where: Path) -> tuple[float, int]:
    """Server CPU seconds for ``messages`` writes, and the messages the clients received."""
    import websockets

    from wsctl.sandbox.processes import free_port

    (where / "deflate_app.py").write_text(APP)
    port = free_port()
    env = {
        **os.environ,
        "DEFLATE_MESSAGES": str(messages),
        "DEFLATE_CLIENTS": str(clients),
        "PYTHONPATH": str(where),
    }
    command = [sys.executable, "-m", "uvicorn", "deflate_app:app", "--port", str(port)]
    command += ["--log-level", "warning", "--ws-per-message-deflate", str(deflate).lower()]
    proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, cwd=where)
    url = f"ws://127.0.0.1:{port}/ws"
    try:
        for _ in range(200):  # bounded: 20 s to start
            try:
                probe = await websockets.connect(url)
            except OSError:
                await asyncio.sleep(0.1)
            else:
                await probe.close()
                break
        conns = [
            await websockets.connect(url + "?client=1", max_queue=None) for _ in range(clients)
        ]
        negotiated = [e.name for e in conns[0].protocol.extensions]
        if deflate != ("permessage-deflate" in negotiated):
            raise RuntimeError(f"deflate={deflate} but the client negotiated {negotiated}")

        async def read(conn: websockets.ClientConnection) -> tuple[int, float]:
            received = 0
            async for message in conn:
                if isinstance(message, str) and message.startswith("done:"):
                    return received, float(message[5:])
                received += 1
            raise RuntimeError("the server closed before it was done")

        got = await asyncio.wait_for(asyncio.gather(*(read(c) for c in conns)), 120)
        for conn in conns:
            await conn.close()
        return got[0][1], sum(n for n, _ in got)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=100)
    args = parser.parse_args(argv)
    if min(args.runs, args.messages, args.clients) < 1:
        parser.error("--runs, --messages and --clients must be > 0")
    with contextlib.ExitStack() as stack:
        where = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="deflate-")))
        for run in range(1, args.runs + 1):
            per: dict[bool, float] = {}
            for deflate in (True, False):
                cpu, received = asyncio.run(one_run(deflate, args.messages, args.clients, where))
                per[deflate] = cpu / args.messages * 1e6
                print(
                    f"run {run} deflate {'on ' if deflate else 'off'}: {received:,}/"
                    f"{args.messages:,} received, server CPU {per[deflate]:.1f} us per message"
                )
            print(f"run {run}: with / without deflate {per[True] / per[False]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
