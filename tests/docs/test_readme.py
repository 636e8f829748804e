"""README.md is the five-minute page: the two commands first, the tour, a table of every
command, and links into the documentation that all lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

from markdown.extensions.toc import slugify

from tests.docs.blocks import README, ROOT, blocks
from wsctl.cli.reference import command_paths

TEXT = README.read_text(encoding="utf-8")
MAX_LINES = 200


def test_the_readme_stays_a_short_page() -> None:
    lines = len(TEXT.splitlines())
    assert lines <= MAX_LINES, (
        f"README.md has {lines} lines; it is the five-minute page (at most {MAX_LINES}): "
        "put details into the docs/ page where they belong (mkdocs.yml lists them)"
    )


def test_the_readme_starts_with_the_install_and_test_commands() -> None:
    """The first two bash blocks: install and run the main job; install and run the tests
    (the one .ci/run runs)."""
    first, second = [b for b in blocks([README]) if b.lang == "bash"][:2]
    assert first.body.startswith("python3.11 -m venv .venv && .venv/bin/pip install -q -e . &&")
    assert second.body == (
        "python3.11 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && "
        ".venv/bin/python -m pytest -q -n 2"
    )


def test_the_readme_command_table_names_every_command() -> None:
    table = TEXT.split("## Commands", 1)[1].split("\n## ", 1)[0]
    named = " ".join(re.findall(r"^\| `([^|]*(?:\\\|[^|]*)*)`", table, re.M)).replace("\\|", "|")
    for path in command_paths():
        if len(path) == 1 and path[0] in ("list", "registry", "config"):
            continue  # groups: their commands are listed
        if path:
            words = path if len(path) == 1 else (path[0], path[1])
            assert f"wsctl {words[0]}" in named and words[-1] in named, path


def _anchors(page: Path) -> set[str]:
    """The heading anchors of a Markdown page, as the site's table of contents makes them."""
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", page.read_text(encoding="utf-8"), re.M):
        explicit = re.search(r"\{#([\w-]+)\}\s*$", heading)
        text = re.sub(r"[`*]|\[([^]]*)\]\([^)]*\)", r"\1", heading)
        found.add(explicit[1] if explicit else slugify(text, "-"))
    return found


def test_every_link_of_the_readme_leads_to_a_file_and_anchor_that_exist() -> None:
    links = re.findall(r"\]\(([^)\s]+)\)", TEXT)
    local = [link for link in links if "://" not in link]
    assert len(local) > 20
    broken = []
    for link in local:
        path, _, fragment = link.partition("#")
        target = ROOT / path
        if not target.is_file() or (fragment and fragment not in _anchors(target)):
            broken.append(link)
    assert broken == []
