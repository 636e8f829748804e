"""JUnit XML for CI: the one writer of ``simulate --junit`` and ``conformance --junit``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wsctl.errors import UsageError

__all__ = ["JunitCase", "write_junit_file"]


@dataclass(frozen=True)
class JunitCase:
    """One testcase: its name, ``passed``, ``failed`` or ``skipped``, the detail a failure or
    skip carries, and its duration."""

    name: str
    status: str
    detail: str = ""
    seconds: float = 0.0


def write_junit_file(path: Path, suite: str, classname: str, cases: Sequence[JunitCase]) -> None:
    """Write one ``testsuite`` named ``suite`` holding ``cases`` to ``path`` (its directory
    made if needed); a path that cannot be written is a usage error."""
    import xml.etree.ElementTree as ET

    element = ET.Element(
        "testsuite",
        name=suite,
        tests=str(len(cases)),
        failures=str(sum(1 for c in cases if c.status == "failed")),
        skipped=str(sum(1 for c in cases if c.status == "skipped")),
        time=f"{sum(c.seconds for c in cases):.3f}",
    )
    for case in cases:
        node = ET.SubElement(
            element, "testcase", classname=classname, name=case.name, time=f"{case.seconds:.3f}"
        )
        if case.status != "passed":
            tag = "failure" if case.status == "failed" else "skipped"
            detail = ET.SubElement(node, tag, message=case.detail[:200])
            detail.text = case.detail
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ET.ElementTree(element).write(path, encoding="utf-8", xml_declaration=True)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
