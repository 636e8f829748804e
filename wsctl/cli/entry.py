"""The entry point of the ``wsctl`` console script and of ``python -m wsctl``.

It imports nothing heavy itself: wsctl's own imports (Typer, rich, redis) take a few tenths
of a second before any handler is in place, and Ctrl-C during them printed a
KeyboardInterrupt traceback. Here it exits 130 with one line, like Ctrl-C at any other moment.
"""

from __future__ import annotations

import os
import sys

__all__ = ["main"]

EXIT_INTERRUPTED = 130  # wsctl.errors.EXIT_INTERRUPTED, not imported: this module stays light


def main(argv: list[str] | None = None) -> None:
    """Import the CLI and run it (see :func:`wsctl.cli.main.main`)."""
    try:
        from wsctl.cli.main import main as run
    except KeyboardInterrupt:
        try:
            sys.stderr.write("wsctl: interrupted\n")
            sys.stderr.flush()
        finally:
            os._exit(EXIT_INTERRUPTED)
    run(argv)
