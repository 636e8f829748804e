"""``wsctl completion bash|zsh|fish`` and id completion against a real Redis: candidates from
the registry, and bounded in time when Redis is stalled or unreachable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.conftest import Backend, invoke, open_test_store
from tests.seedlike import seed_store_connection
from wsctl.sandbox.redis_servers import RedisServer


def _complete(words: str, cword: int, env: dict[str, str]) -> tuple[list[str], float]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "wsctl"],
        capture_output=True,
        text=True,
        timeout=30,
        env={
            **os.environ,
            **env,
            "_WSCTL_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(cword),
        },
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split(), time.monotonic() - started


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_the_script_for_each_shell(shell: str) -> None:
    res = invoke(["completion", shell])
    assert res.code == 0 and "_WSCTL_COMPLETE" in res.out and "wsctl" in res.out


def test_an_unknown_shell_is_a_usage_error() -> None:
    res = invoke(["completion", "tcsh"])
    assert res.code == 2 and "unknown shell 'tcsh'" in res.err


def test_bash_accepts_the_script() -> None:
    script = subprocess.run(
        [sys.executable, "-m", "wsctl", "completion", "bash"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    proc = subprocess.run(
        ["bash", "-c", script + "\ncomplete -p wsctl"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0 and "_wsctl_completion" in proc.stdout, proc.stderr


async def test_robot_and_instance_ids_complete_from_the_registry(single: Backend) -> None:
    async with open_test_store(single) as store:
        for robot in ("robot-17", "robot-18", "other"):
            await seed_store_connection(store.client, robot, "gw-a")
        await store.client.hset("ws_inst:gw-alpha", mapping={"last_seen": "x"})
    assert _complete("wsctl show rob", 2, single.env)[0] == ["robot-17", "robot-18"]
    assert _complete("wsctl registry rm robot-1", 3, single.env)[0] == ["robot-17", "robot-18"]
    assert _complete("wsctl send x --via gw-", 4, single.env)[0] == ["gw-alpha"]
    assert _complete("wsctl li", 1, single.env)[0] == ["list"]
    # every command taking one robot or one instance completes it
    for words, cword in (
        ("wsctl kick rob", 2),
        ("wsctl history rob", 2),
        ("wsctl doctor rob", 2),
    ):
        assert _complete(words, cword, single.env)[0] == ["robot-17", "robot-18"], words
    for words in ("wsctl ping gw-", "wsctl drain gw-", "wsctl undrain gw-"):
        assert _complete(words, 2, single.env)[0] == ["gw-alpha"], words


def test_id_completion_is_bounded_when_redis_is_stalled_or_down() -> None:
    with RedisServer() as server:
        env = {"WSCTL_REDIS_URL": server.url}
        assert server.pid is not None
        os.kill(server.pid, signal.SIGSTOP)
        try:
            found, seconds = _complete("wsctl show rob", 2, env)
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert found == [] and seconds < 5
    found, seconds = _complete("wsctl show rob", 2, {"WSCTL_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert found == [] and seconds < 5


def _commands_with_option(option: str) -> list[list[str]]:
    """The command paths (``["list", "connections"]``...) of every command taking ``option``."""
    import typer.main

    from wsctl.cli.main import app

    found: list[list[str]] = []

    def walk(command: Any, path: list[str]) -> None:
        subcommands = getattr(command, "commands", None)  # a group (typer vendors click)
        if subcommands is not None:
            for name, sub in sorted(subcommands.items()):
                walk(sub, [*path, name])
        elif any(option in p.opts for p in command.params):
            found.append(path)

    walk(typer.main.get_command(app), [])
    return found


async def test_every_instance_option_completes_instance_ids(single: Backend) -> None:
    async with open_test_store(single) as store:
        await seed_store_connection(store.client, "robot-17", "gw-alpha")
        await store.client.hset("ws_inst:gw-alpha", mapping={"last_seen": "x"})
    paths = _commands_with_option("--instance")
    # the commands this test exists for are among those found (the walk itself works)
    assert ["send"] in paths and ["events"] in paths and ["list", "connections"] in paths
    for path in paths:
        words = ["wsctl", *path, "--instance", "gw-"]
        found = _complete(" ".join(words), len(words) - 1, single.env)[0]
        assert found == ["gw-alpha"], path
