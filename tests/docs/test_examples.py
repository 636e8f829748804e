"""The documentation's examples work: every ``wsctl`` command line in its shell code is
accepted by the real command-line interface, every config file example loads, the YAML
examples parse and their ``wsctl`` commands too, and the FastAPI adapter example runs under
uvicorn on a real Redis and delivers a message to a real robot."""

from __future__ import annotations

import asyncio
import json
import os
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from websockets.asyncio.client import connect

from tests.conftest import Backend, open_test_store
from tests.docs.blocks import ROOT, Block, blocks, check_wsctl, pages, wsctl_commands
from tests.fleet import wait_for
from tests.uvicorn_fleet import healthy, uvicorn_gateways
from wsctl.config import load_settings
from wsctl.gateway.admission import HEALTH_PATH

SHELL = ("bash", "sh", "shell", "console")
# what each test marker means: the test below that runs such blocks
MARKERS = {"config", "fastapi-app", "kubernetes", "yaml"}


def _marked(marker: str) -> list[Block]:
    return [b for b in blocks() if b.marker == marker]


def _lines() -> list[tuple[str, list[str]]]:
    return [(b.where, args) for b in blocks() if b.lang in SHELL for args in wsctl_commands(b.body)]


@pytest.mark.parametrize(("where", "args"), _lines(), ids=[w for w, _ in _lines()])
def test_every_wsctl_line_in_the_docs_is_accepted_by_the_cli(where: str, args: list[str]) -> None:
    check_wsctl(args)


def test_the_docs_have_wsctl_lines_in_every_section() -> None:
    where = {w.split(":")[0] for w, _ in _lines()}
    assert {"README.md", "docs/getting-started.md", "docs/operate/drain.md"} <= where
    assert len(_lines()) > 50


@pytest.mark.parametrize(
    "args",
    [
        ["list", "connections", "--stail"],
        ["lst", "connections"],
        ["reap", "--timeout", "nan"],
        ["simulate", "--slo", "p99<5"],
        ["drain"],
    ],
)
def test_the_line_check_refuses_what_wsctl_refuses(args: list[str]) -> None:
    with pytest.raises(Exception, match=r"\S"):
        check_wsctl(args)


def test_every_config_and_yaml_example_is_marked_for_a_test() -> None:
    """A TOML or YAML block without a marker would be an example no test runs."""
    docs = blocks(pages())
    unmarked = [b.where for b in docs if b.lang in ("toml", "yaml") and b.marker is None]
    assert unmarked == []
    assert {b.marker for b in docs if b.marker} == MARKERS


@pytest.mark.parametrize("block", _marked("config"), ids=lambda b: b.where)
def test_a_config_file_example_loads_in_every_context(block: Block, tmp_path: Path) -> None:
    path = tmp_path / "wsctl.toml"
    path.write_text(block.body, encoding="utf-8")
    contexts = tomllib.loads(block.body).get("contexts", {})
    settings = load_settings({"config": str(path)}, env={}, cwd=tmp_path)
    assert settings.config_file == str(path)
    for name, table in contexts.items():
        settings = load_settings({"config": str(path), "context": name}, env={}, cwd=tmp_path)
        assert settings.context == name
        for key in table:
            assert f"[contexts.{name}]" in settings.source(key), (name, key)


def _yaml_wsctl(node: Any) -> list[list[str]]:
    """The wsctl commands of a YAML document: an argument list starting with ``wsctl``
    (a container's ``args``), or a ``wsctl`` line in any string (``sh -c "..."``, ``run:``)."""
    if isinstance(node, dict):
        return [c for value in node.values() for c in _yaml_wsctl(value)]
    if isinstance(node, list):
        if node and all(isinstance(x, str) for x in node) and Path(node[0]).name == "wsctl":
            return [node[1:]]
        return [c for value in node for c in _yaml_wsctl(value)]
    return wsctl_commands(node) if isinstance(node, str) else []


@pytest.mark.parametrize("block", _marked("kubernetes") + _marked("yaml"), ids=lambda b: b.where)
def test_a_yaml_example_parses_and_its_wsctl_commands_are_accepted(block: Block) -> None:
    commands = [c for doc in yaml.safe_load_all(block.body) for c in _yaml_wsctl(doc)]
    assert commands, "no wsctl command in the example"
    for args in commands:
        check_wsctl(args)


def test_the_kubernetes_example_drains_its_pod_in_prestop_and_probes_healthz() -> None:
    (block,) = _marked("kubernetes")
    spec = yaml.safe_load(block.body)["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    hook = container["lifecycle"]["preStop"]["exec"]["command"]
    (drain,) = wsctl_commands(hook[-1])
    assert drain[:2] == ["drain", "$SERVER_INSTANCE_ID"]
    env = {e["name"]: e for e in container["env"]}
    assert env["SERVER_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert container["readinessProbe"]["httpGet"]["path"] == HEALTH_PATH
    assert spec["terminationGracePeriodSeconds"] > 60  # longer than the drain's --timeout


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
        return answer


async def test_the_fastapi_adapter_example_delivers_a_posted_message_to_its_robot(
    single: Backend, tmp_path: Path
) -> None:
    """The example of the FastAPI page, as it is, under uvicorn on a real Redis: it joins the
    fleet (healthy), registers a robot that connects, and its POST endpoints (send, publish,
    send_many) deliver."""
    (block,) = _marked("fastapi-app")
    (tmp_path / "docs_fastapi_app.py").write_text(block.body, encoding="utf-8")
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "WSCTL_HEARTBEAT_INTERVAL": "0.5"}
    with uvicorn_gateways(
        "docs_fastapi_app:app",
        single,
        ("doc-a",),
        ready=healthy,
        what="documentation example",
        log_dir=tmp_path,
        env=env,
    ) as (gw,):
        async with open_test_store(single) as store:
            robot = await connect(f"{gw.ws_url}/ws/robot-doc", ping_interval=None)
            try:
                await wait_for(lambda: store.get("robot-doc"))
                url = f"{gw.http_url}/robots/robot-doc/messages"
                answer = await asyncio.to_thread(_post, url, {"cmd": "ping"})
                assert answer == {"status": "delivered", "route": ["doc-a"]}
                assert json.loads(await asyncio.wait_for(robot.recv(), 5)) == {"cmd": "ping"}
                url = f"{gw.http_url}/robots/robot-doc/notices"
                answer = await asyncio.to_thread(_post, url, {"notice": 1})
                assert answer == {"status": "delivered"}  # the robot is here: written at once
                assert json.loads(await asyncio.wait_for(robot.recv(), 5)) == {"notice": 1}
                answer = await asyncio.to_thread(_post, f"{gw.http_url}/broadcast", {"all": 1})
                assert answer == {"robot-doc": "delivered"}
                assert json.loads(await asyncio.wait_for(robot.recv(), 5)) == {"all": 1}
            finally:
                await robot.close()
            await wait_for(lambda: _gone(store, "robot-doc"))


async def _gone(store: Any, robot_id: str) -> bool:
    return await store.get(robot_id) is None
