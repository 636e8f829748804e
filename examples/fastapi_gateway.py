"""The original design's FastAPI robot gateway, rewritten on wsctl's fleet core.

Run from a checkout (``pip install 'wsctl[fastapi]'``)::

    REDIS_HOST=127.0.0.1 REDIS_PORT=6379 SERVER_INSTANCE_ID=gw-a PORT=8001 \\
        uvicorn examples.fastapi_gateway:app --port 8001 --ws-per-message-deflate false

``--ws-per-message-deflate false``: otherwise uvicorn compresses every message to a client that
asks for per-message deflate (Python's ``websockets`` clients do by default): 1.3-1.9x the
server's CPU per 60-byte JSON message (``bench/app_send_deflate.py``); socket.io and Node's
``ws`` leave it off by default. What it costs is bandwidth: keep deflate on (drop the flag)
for robots behind a slow or metered link.

Configured by the original environment variables: ``REDIS_HOST``, ``REDIS_PORT``,
``REDIS_PASSWORD``, ``REDIS_USE_CLUSTER``, ``REDIS_NODES`` (``host:port,host:port``),
``SERVER_INSTANCE_ID`` and ``PORT`` (the instance-id rule md5("hostname:PORT:pid") when no id
is given; set it to uvicorn's ``--port``). Optional: ``WSCTL_AUTH_SECRET`` (robots present
``wsctl token ROBOT``), ``WSCTL_ADVERTISE_URL``.

What the original did by hand (and got wrong) the fleet core does: registration fenced by
``conn_id`` (a disconnect never deletes a newer session's entry), batched heartbeats, a liveness
record, cross-instance forwarding over the control channel, and clean-up on shutdown. The app
keeps only its own business: here, the robot's online status (the original's database column).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, WebSocket

from wsctl.api import Fleet

log = logging.getLogger("robot_gateway")

# Stands in for the original's ``Robot.status`` database column: 1 online, 0 offline.
robot_status: dict[str, int] = {}


async def on_connect(robot_id: str) -> None:
    robot_status[robot_id] = 1
    log.info("robot %s connected", robot_id)


async def on_message(robot_id: str, text: str) -> None:
    log.debug("robot %s says %s", robot_id, text[:200])


async def on_disconnect(robot_id: str) -> None:
    robot_status[robot_id] = 0
    log.info("robot %s disconnected", robot_id)


fleet = Fleet.from_env(on_connect=on_connect, on_message=on_message, on_disconnect=on_disconnect)
app = FastAPI(title="robot gateway", lifespan=fleet.lifespan)
app.router.routes.extend(fleet.routes())  # GET /healthz, GET /metrics


@app.websocket("/ws/{robot_id}")
async def robot_socket(websocket: WebSocket, robot_id: str) -> None:
    await fleet.serve(websocket, robot_id)


@app.post("/robots/{robot_id}/messages")
async def send_message_to_robot(robot_id: str, message: dict[str, Any]) -> dict[str, Any]:
    """The original ``send_message_to_robot``: deliver here or on the robot's instance."""
    result = await fleet.send(robot_id, json.dumps(message, ensure_ascii=False))
    if not result.delivered:
        robot_status[robot_id] = 0
    return {"status": result.outcome.value, "route": list(result.route), "reason": result.reason}


@app.get("/robots/{robot_id}/status")
async def robot_online(robot_id: str) -> dict[str, Any]:
    return {"robot_id": robot_id, "status": robot_status.get(robot_id, 0)}
