"""The conformance kit and its documentation say the same: docs/protocol.md §15 names, for
each checklist item, the checks that test it (every check of the kit, and only those); the
kit's page lists every check with its level, section and title; every check points at a
heading of the protocol that exists."""

from __future__ import annotations

import re

from markdown.extensions.toc import slugify

from tests.docs.blocks import DOCS
from wsctl.conformance.checks import CHECKS, check_ids

PROTOCOL = (DOCS / "protocol.md").read_text(encoding="utf-8")
PAGE = (DOCS / "gateway" / "conformance.md").read_text(encoding="utf-8")
CHECK_NAME = re.compile(r"`([a-z_]+\.[a-z_]+)`")


def _checklist() -> dict[int, str]:
    """The numbered items of §15, each with its continuation lines."""
    section = PROTOCOL.split("## 15. Checklist for an implementation", 1)[1]
    section = section.split("\n## ", 1)[0]
    items: dict[int, str] = {}
    number = 0
    for line in section.splitlines():
        found = re.match(r"^(\d+)\. (.*)", line)
        if found:
            number = int(found[1])
            items[number] = found[2]
        elif number and line.startswith("   "):
            items[number] += " " + line.strip()
    return items


def _named(item: str) -> set[str]:
    return set(CHECK_NAME.findall(item.split("Checks:", 1)[1])) if "Checks:" in item else set()


def test_every_checklist_item_but_the_last_names_its_checks_or_says_why_none() -> None:
    items = _checklist()
    assert sorted(items) == list(range(1, len(items) + 1)) and len(items) >= 9
    *named, last = sorted(items)
    assert items[last].startswith("Check it: `wsctl conformance")
    for number in named:
        item = items[number]
        assert "Checks:" in item, (number, item)
        assert _named(item) or "Checks: none (" in item, (number, item)


def test_the_checklist_names_every_check_of_the_kit_and_nothing_else() -> None:
    named = set().union(*(_named(item) for item in _checklist().values()))
    assert named == set(check_ids())


def test_the_kits_page_lists_every_check_with_its_level_section_and_title() -> None:
    table = PAGE.split("## The checks", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(
        r"^\| `([^`]+)` \| (\d) \| \[(§\d+)\]\(\.\./protocol\.md#([^)]+)\) \| (.+) \|$", table, re.M
    )
    assert rows == [(c.id, str(c.level), c.section, c.anchor, c.title) for c in CHECKS]


def test_every_check_points_at_a_heading_of_the_protocol() -> None:
    anchors = {slugify(h, "-") for h in re.findall(r"^#{2,4} (.+)$", PROTOCOL, re.M)}
    assert {c.anchor for c in CHECKS} <= anchors
