"""The event loop every wsctl command, gateway and robot worker runs on: one place to choose.

``WSCTL_EVENT_LOOP``: ``asyncio`` (the default) or ``uvloop`` (when installed; an error
otherwise). asyncio's own loop is the default because uvloop measured no better here
(docs/decisions.md, event loop and JSON codec); the switch stays so that the
measurement can be repeated on other machines.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from wsctl.errors import ConfigError

__all__ = ["loop_factory", "loop_name", "run"]

T = TypeVar("T")
CHOICES = ("asyncio", "uvloop")


def _choice() -> str:
    choice = os.environ.get("WSCTL_EVENT_LOOP", "asyncio").strip().lower() or "asyncio"
    if choice not in CHOICES:
        raise ConfigError(f"WSCTL_EVENT_LOOP={choice!r}: use one of {', '.join(CHOICES)}")
    return choice


def loop_factory() -> Callable[[], Any] | None:
    """uvloop's loop factory when chosen; None for asyncio's default loop."""
    if _choice() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        raise ConfigError("WSCTL_EVENT_LOOP=uvloop but uvloop is not installed") from None
    factory: Callable[[], Any] = uvloop.new_event_loop
    return factory


def loop_name() -> str:
    """``uvloop`` when :func:`loop_factory` picks it, else ``asyncio`` (for logs and metrics)."""
    return "asyncio" if loop_factory() is None else "uvloop"


# After Ctrl-C a command has this long to end by cancellation (its clean-up runs) before it
# is interrupted where it stands, and again after as long while it has not ended.
INTERRUPT_GRACE = 0.3


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)`` on the chosen loop. A bad choice raises ConfigError before the
    coroutine starts; then, as after Ctrl-C before the loop ran it, the coroutine is closed
    (no "never awaited" warning after the one-line error).

    Ctrl-C stops it within a second: asyncio cancels the coroutine on the first SIGINT, which
    only takes effect at its next ``await``; work that does not await (rendering a table,
    a long computation) would ignore it. So SIGINT also starts a watchdog that, while the
    coroutine has not ended after :data:`INTERRUPT_GRACE` seconds, interrupts the main thread
    where it stands (KeyboardInterrupt, as a second Ctrl-C does). A coroutine that installs
    its own SIGINT handler (``wsctl gateway``'s graceful stop) keeps its own behaviour."""
    try:
        return _run(coro)
    finally:
        _close_unstarted(coro)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    import asyncio
    import signal
    import threading

    factory = loop_factory()
    # asyncio.Runner installs its SIGINT handler in exactly this case
    guarded = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )
    watchdog = _Watchdog()
    main = _guard(coro, watchdog) if guarded else coro
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(main)
    finally:
        watchdog.stop()
        _close_unstarted(main)


def _close_unstarted(coro: Coroutine[Any, Any, Any]) -> None:
    """Close ``coro`` if it never started (a bad loop choice, Ctrl-C before the loop ran it),
    so no "coroutine ... was never awaited" warning follows the one-line error. One that ran
    is left alone: closing it here would run its clean-up outside any loop."""
    import inspect

    if inspect.iscoroutine(coro) and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
        coro.close()


class _Watchdog:
    """Interrupts the main thread every :data:`INTERRUPT_GRACE` seconds once started, until
    stopped (the run ended)."""

    def __init__(self) -> None:
        import threading

        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, loop: Any) -> None:
        import threading

        if self.thread is not None:
            return

        def watch() -> None:
            import _thread
            import contextlib

            while not self.stopped.wait(INTERRUPT_GRACE):
                _thread.interrupt_main()
                # the handler runs when the main thread next runs Python code: wake a loop
                # blocked in select()
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(lambda: None)

        self.thread = threading.Thread(target=watch, name="wsctl-interrupt", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()


async def _guard(coro: Coroutine[Any, Any, T], watchdog: _Watchdog) -> T:
    """``coro`` with asyncio.Runner's SIGINT handler wrapped so that SIGINT also starts the
    watchdog; the runner's handler is put back when ``coro`` ends (the runner then restores
    the default)."""
    import asyncio
    import signal

    runner_handler = signal.getsignal(signal.SIGINT)
    if not callable(runner_handler):  # pragma: no cover - the runner installs one
        return await coro
    loop = asyncio.get_running_loop()

    def on_sigint(signum: int, frame: Any) -> None:
        watchdog.start(loop)
        runner_handler(signum, frame)

    signal.signal(signal.SIGINT, on_sigint)
    try:
        return await coro
    finally:
        if signal.getsignal(signal.SIGINT) is on_sigint:
            signal.signal(signal.SIGINT, runner_handler)
