"""The public API: what a gateway or an app embeds, importable from here and kept stable.

::

    from wsctl.api import Fleet, SendOutcome

Everything listed in ``__all__`` (and documented in docs/reference/api.md) keeps its name and
behaviour across minor versions; every other module of wsctl is internal and may move without
notice. :class:`Fleet` is the Starlette/FastAPI adapter (``pip install 'wsctl[fastapi]'``): it
is imported on first use, so the rest of this module (the transport-independent
:class:`FleetCore` included) needs neither Starlette nor FastAPI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from wsctl.errors import ConfigError, FleetNotRunning, WsctlError
from wsctl.eventlog.model import EventLimits
from wsctl.gateway.core import CoreConfig, FleetCore, RobotSocket
from wsctl.gateway.outcomes import SendOutcome, SendResult
from wsctl.protocol.envelopes import CloseCode
from wsctl.protocol.fanout import FanOutcome, FanoutResult, FanoutSummary, RobotOutcome, Selection
from wsctl.registry.keys import Keyspace

if TYPE_CHECKING:
    from wsctl.gateway.asgi import Fleet

__all__ = [
    "CloseCode",
    "ConfigError",
    "CoreConfig",
    "EventLimits",
    "FanOutcome",
    "FanoutResult",
    "FanoutSummary",
    "Fleet",
    "FleetCore",
    "FleetNotRunning",
    "Keyspace",
    "RobotOutcome",
    "RobotSocket",
    "Selection",
    "SendOutcome",
    "SendResult",
    "WsctlError",
]

# names imported on first use, and the module that holds each (it needs an optional extra)
_LAZY = {"Fleet": "wsctl.gateway.asgi"}


def __getattr__(name: str) -> Any:
    """``Fleet`` on first use (PEP 562): importing it needs Starlette."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
