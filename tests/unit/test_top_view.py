"""How `wsctl top` puts a snapshot into words (wsctl/cli/topview.py) and the alerts' sentences
with hostile ids: bounded lines whatever the width or the id, ids as shell words, suggested
commands quoted. Pure, no Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from wsctl.cli.topview import registry_lines
from wsctl.ops.top import RegistryPass, registry_summary
from wsctl.registry.model import entry_from_hash, format_ts

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _summary(ages: list[float]) -> dict[str, object]:
    done = RegistryPass(started=NOW, finished=NOW)
    entries = [
        entry_from_hash(
            f"r{i}",
            {"instance_id": "gw-a", "last_heartbeat": format_ts(NOW - timedelta(seconds=age))},
            UTC,
        )
        for i, age in enumerate(ages)
    ]
    done.add(entries, NOW, 90)
    return registry_summary(done, None, {}, set(), NOW, 90)


def test_histogram_bars_stay_short_on_an_unlimited_width() -> None:
    # piped without COLUMNS, --once -o table renders at an unlimited width
    lines = registry_lines(_summary([1, 2, 3, 100]), 100_000)
    assert max(len(line) for line in lines) <= 120, max(len(line) for line in lines)
    assert any("#" in line for line in lines)


def test_registry_counts_read_with_thousands_separators() -> None:
    lines = registry_lines(_summary([1.0] * 1234), 200)
    assert lines[0].startswith("registry: 1,234 entries: 1,234 fresh,"), lines[0]
