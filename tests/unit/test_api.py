"""The public API (``wsctl.api``): every name it promises is there, is the object the library
uses, is listed in docs/reference/api.md, and importing it needs no web framework."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import wsctl.api

PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "api.md"


def test_every_promised_name_is_importable_from_wsctl_api() -> None:
    for name in wsctl.api.__all__:
        assert getattr(wsctl.api, name) is not None, name


def test_the_api_names_are_the_library_objects_not_copies() -> None:
    from wsctl.gateway.asgi import Fleet
    from wsctl.gateway.core import FleetCore
    from wsctl.gateway.outcomes import SendOutcome, SendResult

    assert wsctl.api.Fleet is Fleet
    assert wsctl.api.FleetCore is FleetCore
    assert wsctl.api.SendOutcome is SendOutcome
    assert wsctl.api.SendResult is SendResult


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        _ = wsctl.api.NoSuchThing  # type: ignore[attr-defined]
    except AttributeError as e:
        assert "NoSuchThing" in str(e)
    else:
        raise AssertionError("no AttributeError")


def test_the_reference_page_lists_exactly_the_public_names() -> None:
    listed = re.findall(r"^\| `(\w+)` \|", PAGE.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert sorted(listed) == sorted(wsctl.api.__all__)


def test_importing_the_api_imports_no_web_framework_until_fleet_is_used() -> None:
    code = (
        "import sys, wsctl.api\n"
        "assert 'starlette' not in sys.modules, 'starlette imported'\n"
        "wsctl.api.FleetCore\n"
        "assert 'starlette' not in sys.modules, 'starlette imported by FleetCore'\n"
        "wsctl.api.Fleet\n"
        "assert 'starlette' in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_no_wsctl_module_imports_the_public_api() -> None:
    """The façade is for embedders: wsctl's own modules import the real ones, so it can never
    take part in an import cycle."""
    from tests.unit.test_module_graph import import_graph

    importers = {name for name, deps in import_graph().items() if "wsctl.api" in deps}
    assert importers == set()
