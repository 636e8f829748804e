"""MkDocs hook: puts the command reference, generated from the Typer app, into
docs/reference/commands.md where the page says ``<!-- wsctl:commands -->``."""

from __future__ import annotations

from typing import Any

MARKER = "<!-- wsctl:commands -->"


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if page.file.src_uri != "reference/commands.md":
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"reference/commands.md lost its {MARKER} marker")
    from wsctl.cli.reference import reference_markdown

    return markdown.replace(MARKER, reference_markdown())
