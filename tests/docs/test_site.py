"""The documentation site builds with ``mkdocs build --strict`` (no broken link or anchor, no
page outside the nav), offline, and its reference pages say what the code does: every
command's ``--help`` as wsctl prints it, every exit code, metric, doctor finding, JSON key and
SLO metric."""

from __future__ import annotations

import concurrent.futures
import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.docs.blocks import DOCS, ROOT, pages
from wsctl import errors
from wsctl.cli.reference import WIDTH, anchor, command_paths, reference_markdown

# any HTTP(S) request made by the build fails at once: it must need none
_OFFLINE = {
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "",
    "no_proxy": "",
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site built strictly into a temporary directory, once for this module."""
    out = tmp_path_factory.mktemp("site")
    proc = _build(ROOT / "mkdocs.yml", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    return out


def _build(config: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(out)],
        cwd=ROOT,  # snippets (--8<--) are found from the repository's root
        env={**os.environ, **_OFFLINE, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _text(page: Path) -> str:
    """A built page's text: tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8")))


def _config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    return config


def _nav_pages(nav: Any) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [p for item in nav for p in _nav_pages(item)]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in _nav_pages(value)]
    return []


def test_the_site_builds_strictly_with_every_page(site: Path) -> None:
    for page in pages():
        rel = page.relative_to(DOCS)
        folder = rel.parent if rel.name == "index.md" else rel.with_suffix("")
        assert (site / folder / "index.html").is_file(), page


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page() -> None:
    nav = _nav_pages(_config()["nav"])
    on_disk = sorted(str(p.relative_to(DOCS)) for p in pages())
    assert sorted(nav) == on_disk
    assert len(nav) == len(set(nav)), "a page is listed twice"


def test_the_strict_build_fails_on_a_broken_link_a_broken_anchor_and_a_page_outside_the_nav(
    tmp_path: Path,
) -> None:
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    (tmp_path / "docs" / "orphan.md").write_text("# Not in the nav\n", encoding="utf-8")
    with (tmp_path / "docs" / "decisions.md").open("a", encoding="utf-8") as page:
        page.write("\n[gone](no-such-page.md) and [lost](performance.md#no-such-anchor)\n")
    proc = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode != 0
    assert "orphan.md" in proc.stderr
    assert "no-such-page.md" in proc.stderr
    assert "no-such-anchor" in proc.stderr


def test_the_build_uses_nothing_that_needs_the_network() -> None:
    """Only the search plugin (it works offline; social cards or the privacy plugin fetch at
    build time), and no web fonts (the site then reads the same offline)."""
    config = _config()
    assert config["plugins"] == ["search"]
    assert config["theme"]["font"] is False
    assert config["strict"] is True


def _help(path: tuple[str, ...]) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "wsctl", *path, "--help"],
        env={**os.environ, "COLUMNS": str(WIDTH)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_command_reference_shows_every_commands_help_as_wsctl_prints_it(site: Path) -> None:
    """What ``wsctl ... --help`` prints on an 80-column terminal is on the built page, for
    every command: the reference cannot drift from the code."""
    page = _text(site / "reference" / "commands" / "index.html")
    built = (site / "reference" / "commands" / "index.html").read_text(encoding="utf-8")
    paths = command_paths()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        helps = dict(zip(paths, pool.map(_help, paths), strict=True))
    missing = [" ".join(p) for p, text in helps.items() if text.rstrip("\n") not in page]
    assert missing == [], missing
    assert all(f'id="{anchor(p)}"' in built for p in paths)


def test_the_reference_lists_every_command_wsctl_help_lists() -> None:
    """The generator walks every command: each group's ``--help`` names no command it left
    out."""
    paths = set(command_paths())
    for group in [p for p in paths if not p or p in {("list",), ("registry",), ("config",)}]:
        listed = _help(group).split("\nCommands:\n", 1)[1]
        names = re.findall(r"^  (\S+)", listed, re.M)
        assert names and all((*group, n) in paths for n in names), (group, names)
    assert {("send",), ("list", "connections"), ("registry", "restore")} <= paths


def test_the_reference_page_keeps_its_marker_for_the_generated_part() -> None:
    stub = (DOCS / "reference" / "commands.md").read_text(encoding="utf-8")
    assert "<!-- wsctl:commands -->" in stub
    assert "## `wsctl send` {#wsctl-send}" in reference_markdown()


def _page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def test_the_exit_codes_page_lists_every_exit_code() -> None:
    codes = {v for k, v in vars(errors).items() if k.startswith("EXIT_") and isinstance(v, int)}
    rows = {int(m) for m in re.findall(r"^\| (\d+) \|", _page("reference/exit-codes.md"), re.M)}
    assert rows == codes


def test_the_metrics_page_lists_every_metric_the_gateway_exports_with_its_type() -> None:
    from wsctl.gateway.core import CoreConfig, FleetCore
    from wsctl.redis.target import Target

    text = FleetCore(CoreConfig(instance_id="doc"), Target("tcp")).metrics_text()
    exported = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    documented = dict(
        re.findall(r"^\| `(wsctl_\w+)` \| (\w+) \|", _page("reference/metrics.md"), re.M)
    )
    assert documented == exported


def test_the_doctor_page_lists_every_finding_kind() -> None:
    from wsctl.ops.doctor.diagnose import Kind

    rows = set(
        re.findall(r"^\| `(\w+)` \| (?:error|warning|info) \|", _page("operate/doctor.md"), re.M)
    )
    assert rows == {k.value for k in Kind}


def test_the_simulate_page_lists_every_slo_metric() -> None:
    from wsctl.ops.simulate.options import SLO_METRICS

    table = _page("simulate.md").split("## SLOs", 1)[1].split("\n## ", 1)[0]
    assert set(re.findall(r"`([a-z_0-9]+)`", table)) >= set(SLO_METRICS)


def _top_keys() -> dict[str, set[str]]:
    """Every key of ``wsctl top --once -o json``, from a snapshot with one of each part."""
    from datetime import UTC, datetime

    from wsctl.ops.summary import InstanceTally
    from wsctl.ops.top import (
        Alert,
        AlertKind,
        InstanceRow,
        Rates,
        RedisState,
        RegistryPass,
        Severity,
        Snapshot,
        registry_summary,
    )
    from wsctl.registry.instances import InstanceRecord, Liveness

    now = datetime.now(UTC)
    row = InstanceRow(
        "gw",
        2,
        Liveness.ALIVE,
        True,
        InstanceRecord("gw"),
        0.0,
        0,
        "record",
        Rates(1.0, {"delivered_per_s": 0.0}),
        "",
        True,
        InstanceTally("gw"),
    )
    registry = registry_summary(RegistryPass(started=now), None, {}, set(), now, 90)
    snap = Snapshot(
        now,
        RedisState(ok=True),
        [row],
        registry,
        [],
        [Alert(AlertKind.NOT_LISTENING, Severity.ERROR, "m")],
    ).as_dict()
    instance = snap["instances"][0]
    return {
        "top": set(snap),
        "top redis": set(snap["redis"]),
        "top alert": set(snap["alerts"][0]) | {k.value for k in AlertKind},
        "top instance": set(instance) | set(instance["rates"]) | set(instance["entries"]),
        "top registry": set(registry)
        | set(registry["heartbeat_age"])
        | set(registry["heartbeat_age"]["bands"][0]),
    }


def test_the_json_page_names_every_key_of_each_commands_json_output() -> None:
    from datetime import UTC, datetime

    from wsctl.conformance.checks import Verdict
    from wsctl.conformance.results import CheckResult, ConformanceReport
    from wsctl.ops.doctor.diagnose import Facts, Finding, Kind, Severity
    from wsctl.ops.doctor.fleet import DoctorReport
    from wsctl.ops.drain import DrainReport
    from wsctl.ops.fanout import FanOutcome, FanoutSummary, RobotOutcome
    from wsctl.ops.kick import KickOutcome, KickStatus, PingOutcome, PingStatus
    from wsctl.ops.reap import ReapReport
    from wsctl.ops.send import SendOutcome
    from wsctl.ops.views import connection_row
    from wsctl.registry.model import Entry

    outputs = {
        "reap": ReapReport(dry_run=True, timeout=90),
        "drain": DrainReport("gw", 50, 1.0, 60.0),
        "kick": KickOutcome(next(iter(KickStatus)), "r"),
        "ping": PingOutcome(next(iter(PingStatus)), "gw"),
        "send": SendOutcome("delivered", "r", "gw", via=False),
        "fan-out summary": FanoutSummary(),
        "fan-out row": RobotOutcome("r", FanOutcome.DELIVERED),
        "doctor finding": Finding(Kind.GHOST, Severity.WARNING, "", ""),
        "doctor": DoctorReport([], Facts(), datetime.now(UTC), 90.0),
    }
    named = set(re.findall(r"`([a-z][a-z_0-9]*)`", _page("reference/json.md")))
    keys = {what: set(o.as_dict()) for what, o in outputs.items()}
    keys["conformance"] = set(ConformanceReport("ws://g/ws/{robot_id}", 2, "run").as_dict())
    keys["conformance check"] = set(CheckResult("registry.entry", Verdict.PASS).as_dict())
    keys["list connections"] = set(connection_row(Entry("r", {}), datetime.now(UTC), 90.0))
    keys.update(_top_keys())
    missing = {what: sorted(k - named) for what, k in keys.items()}
    assert {k: v for k, v in missing.items() if v} == {}


_SOURCE_PATH = re.compile(r"`((?:[A-Za-z_0-9]+/)*[A-Za-z_0-9]+\.py)`")


def test_every_python_file_the_docs_name_exists() -> None:
    """A module path in the docs or README (``registry/store.py``, ``wsctl/gateway/core.py``,
    or a bare ``factory.py``) names a file that exists, so a moved module leaves no stale path."""
    bases = ("", "wsctl/", "tests/", "examples/", "bench/", "docs/")
    sources = {p.name for base in bases[1:] for p in (ROOT / base).rglob("*.py")}
    stale = []
    for page in [*DOCS.rglob("*.md"), ROOT / "README.md"]:
        for name in _SOURCE_PATH.findall(page.read_text(encoding="utf-8")):
            if "/" in name:
                found = any((ROOT / f"{base}{name}").is_file() for base in bases)
            else:
                found = name in sources
            if not found:
                stale.append(f"{page.relative_to(ROOT)}: {name}")
    assert stale == []
