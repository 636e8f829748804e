"""Line-oriented input (``--robots-from``, ``registry import|restore``) read in bounded memory.

A line is read up to its limit plus one character and no further, so a file without newlines
(``/dev/zero``, a binary dump, the wrong file) fails at once with a usage error naming the
line instead of growing without end. Input that can be read only once (stdin, a pipe such as
``<(cmd)``, a FIFO, a device) and is needed twice (validate, then write) is copied to a
private temporary file as the first pass reads it, line by line: the first bad line stops
the copy, so ``yes | wsctl registry import -`` fails at line 1 instead of filling the disk.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from wsctl.errors import UsageError
from wsctl.protocol.envelopes import format_bytes

__all__ = ["ID_LINE_LIMIT", "RECORD_LINE_LIMIT", "TwoPassInput", "bounded_lines"]

# One robot id a line: far above any id a registry holds in practice (wsctl creates ids up
# to 256 bytes) and far below what would hurt.
ID_LINE_LIMIT = 1 << 20
# One entry a line (an export, a backup): its fields JSON-escaped, or a DUMP payload.
RECORD_LINE_LIMIT = 64 << 20


def _too_long(source: str, number: int, limit: int, what: str) -> UsageError:
    return UsageError(
        f"{source} line {number} is longer than {format_bytes(limit)}; {what} (the wrong file?)"
    )


def bounded_lines(
    stream: IO[str], source: str, limit: int, what: str = "one item a line"
) -> Iterator[str]:
    """The lines of a text ``stream`` (newlines kept), each read up to ``limit`` characters
    plus one and no further: a longer line raises UsageError naming it and ``what`` a line
    should hold."""
    number = 0
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        number += 1
        if len(line) > limit and not (len(line) == limit + 1 and line.endswith("\n")):
            raise _too_long(source, number, limit, what)
        yield line


class TwoPassInput:
    """A file, ``-`` (stdin) or anything readable once, read twice in bounded memory.

    ``first()`` yields its lines (see :func:`bounded_lines`); ``second()`` yields them again
    from the file itself, or for input that cannot be read twice from the private temporary
    copy the first pass wrote as it read (removed on exit). Both passes decode UTF-8 with
    surrogateescape: bytes that are not UTF-8 stay the very same bytes."""

    def __init__(self, file: str, limit: int, what: str) -> None:
        self.file = file
        self.limit = limit
        self.what = what
        self.label = "<stdin>" if file == "-" else file
        self.path: Path | None = None  # the regular file read twice
        self.copy: Path | None = None  # the temporary copy of input readable once
        self._first: Iterator[str] | None = None

    def __enter__(self) -> TwoPassInput:
        if self.file != "-":
            path = Path(self.file)
            try:
                mode = path.stat().st_mode
            except OSError as exc:
                raise UsageError(f"cannot read {path}: {exc.strerror}") from None
            if stat.S_ISDIR(mode):
                raise UsageError(f"cannot read {path}: it is a directory")
            if stat.S_ISREG(mode):
                self.path = path
        return self

    def __exit__(self, *exc: object) -> None:
        if self.copy is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.copy)
            self.copy = None

    def _text(self, path: Path) -> IO[str]:
        try:
            return path.open(encoding="utf-8", errors="surrogateescape")
        except OSError as exc:
            raise UsageError(f"cannot read {self.label}: {exc.strerror}") from None

    def first(self) -> Iterator[str]:
        """The first pass over the lines."""
        if self._first is None:
            self._first = self._read_first()
        return self._first

    def _read_first(self) -> Iterator[str]:
        if self.path is not None:
            with self._text(self.path) as fh:
                yield from bounded_lines(fh, self.label, self.limit, self.what)
            return
        import tempfile

        fd, name = tempfile.mkstemp(prefix="wsctl-import-", suffix=".jsonl")
        self.copy = Path(name)
        with os.fdopen(fd, "wb") as out, self._source() as source:
            for line in source:
                out.write(line.encode("utf-8", "surrogateescape"))
                yield line

    @contextlib.contextmanager
    def _source(self) -> Iterator[Iterator[str]]:
        """The lines of stdin or of a file that can be read once."""
        if self.file == "-":
            raw: Any = getattr(sys.stdin, "buffer", None)
            if raw is None:  # an in-process caller's text stream
                yield bounded_lines(sys.stdin, self.label, self.limit, self.what)
                return
            stream = _text_of(raw)
            try:
                yield bounded_lines(stream, self.label, self.limit, self.what)
            finally:
                stream.detach()  # stdin itself stays open
            return
        try:
            fh = open(self.file, encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"cannot read {self.file}: {exc.strerror}") from None
        with fh:
            yield bounded_lines(fh, self.label, self.limit, self.what)

    def second(self) -> Iterator[str]:
        """The second pass: the same lines again (the first pass is finished first)."""
        for _ in self.first():  # a first pass left unfinished: the copy must be whole
            pass
        path = self.path or self.copy
        if path is None:  # pragma: no cover - first() always sets one
            raise UsageError(f"cannot read {self.label} twice")
        with self._text(path) as fh:
            yield from bounded_lines(fh, self.label, self.limit, self.what)


def _text_of(raw: Any) -> io.TextIOWrapper:
    return io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape")
