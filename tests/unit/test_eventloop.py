"""The event loop choice: WSCTL_EVENT_LOOP (asyncio by default, uvloop on request)."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from wsctl.errors import ConfigError
from wsctl.eventloop import loop_name, run

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


async def _loop_type() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_asyncio_is_used_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSCTL_EVENT_LOOP", "asyncio")
    assert loop_name() == "asyncio"
    assert run(_loop_type()).startswith("asyncio")


def test_asyncio_is_the_default_even_with_uvloop_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WSCTL_EVENT_LOOP", raising=False)
    assert loop_name() == "asyncio"


@pytest.mark.skipif(not HAVE_UVLOOP, reason="uvloop not installed")
def test_uvloop_runs_commands_when_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSCTL_EVENT_LOOP", "uvloop")
    assert run(_loop_type()).startswith("uvloop")


def test_uvloop_required_but_missing_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WSCTL_EVENT_LOOP", "uvloop")
    if HAVE_UVLOOP:
        assert loop_name() == "uvloop"
    else:
        with pytest.raises(ConfigError, match="not installed"):
            loop_name()


def test_an_unknown_choice_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSCTL_EVENT_LOOP", "trio")
    with pytest.raises(ConfigError, match="WSCTL_EVENT_LOOP"):
        loop_name()


def test_a_bad_choice_closes_the_coroutine_it_was_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """run() with a bad WSCTL_EVENT_LOOP closes the coroutine, so no "never awaited" warning
    follows the one-line error."""
    monkeypatch.setenv("WSCTL_EVENT_LOOP", "bogus")
    coro = _loop_type()
    with pytest.raises(ConfigError):
        run(coro)
    assert coro.cr_frame is None  # closed: it can never run, and Python does not warn


@pytest.mark.parametrize("where", ["choosing the loop", "starting the loop"])
def test_ctrl_c_before_the_coroutine_starts_closes_it(
    monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Ctrl-C between the command building its coroutine and the loop running it (the first
    import of asyncio, the loop's set-up) left it unawaited: Python then printed a
    three-line "coroutine ... was never awaited" warning after ``wsctl: interrupted``."""
    import wsctl.eventloop as eventloop

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    if where == "choosing the loop":
        monkeypatch.setattr(eventloop, "loop_factory", interrupted)
    else:
        monkeypatch.setattr(asyncio.Runner, "run", interrupted)
    coro = _loop_type()
    with pytest.raises(KeyboardInterrupt):
        run(coro)
    assert coro.cr_frame is None  # closed: it can never run, and Python does not warn
