"""Effective settings and where each came from.

Precedence, highest first: command-line flags > environment (``WSCTL_*``, then the seed's own
``REDIS_*`` names so an existing deployment's environment just works) > config file (the selected
``[contexts.NAME]`` table over the file's top level) > built-in defaults.

This module only reads; it never connects and never prints. Passwords are kept in the
:class:`Settings` object but every rendering of it goes through :func:`redacted`.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from wsctl.durations import AGE_MAX_S, WAIT_MAX_S, check_seconds
from wsctl.errors import ConfigError, UsageError
from wsctl.redis.target import redact_url, split_url
from wsctl.shell import quoted
from wsctl.timezones import resolve_tz

__all__ = [
    "DEFAULT_SOCKET_TIMEOUT",
    "ENV_NAMES",
    "PATH_SETTINGS",
    "SECRET_FIELDS",
    "SETTING_NAMES",
    "TLS_SETTINGS",
    "Settings",
    "convert_value",
    "default_config_paths",
    "load_settings",
    "parse_bool",
    "parse_nodes",
    "redacted",
    "tls_env",
    "with_overrides",
    "without_tls",
]

SECRET_FIELDS = frozenset({"redis_password"})

# Seconds any one Redis read or write may take (redis-py's socket_timeout, and wsctl's own
# bulk reads); a command against a stalled server fails within about (retries + 1) times this.
DEFAULT_SOCKET_TIMEOUT = 5.0


@dataclass(frozen=True)
class Settings:
    """Everything wsctl needs to find the registry and judge its entries."""

    redis_url: str | None = None
    redis_host: str | None = None
    redis_port: int = 6379
    redis_db: int = 0
    redis_username: str | None = None
    redis_password: str | None = None
    redis_cluster: bool = False
    redis_nodes: tuple[tuple[str, int], ...] = ()
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT
    prefix: str = "ws_conn:"
    instance_prefix: str = "ws_inst:"
    control_prefix: str = "ws_ctl:"
    heartbeat_interval: float = 30.0
    timeout: float = 90.0
    naive_tz: str = "local"
    scan_count: int = 1000
    redis_tls: bool = False
    tls_ca_cert: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_insecure: bool = False
    context: str | None = None
    config_file: str | None = None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def embedded(self) -> bool:
        """True when no Redis is configured at all: wsctl then uses the running sandbox.

        Any of host, port, db, username or password set (``REDIS_PORT=16402`` alone, as in
        the original design's environment) means a configured Redis: the host then defaults
        to 127.0.0.1."""
        if self.redis_url or self.redis_host or self.redis_nodes:
            return False
        return not any(name in self.sources for name in _CONNECTION_PARTS)

    def source(self, name: str) -> str:
        """Where the value of setting ``name`` came from (flag, env, file or default)."""
        return self.sources.get(name, "default")


# Settings that, set anywhere, mean "a Redis is configured" even without a host.
_CONNECTION_PARTS = ("redis_port", "redis_db", "redis_username", "redis_password")

# Environment variables per setting, first match wins. WSCTL_* beat the seed's names.
ENV_NAMES: dict[str, tuple[str, ...]] = {
    "redis_url": ("WSCTL_REDIS_URL", "REDIS_URL"),
    "redis_host": ("WSCTL_REDIS_HOST", "REDIS_HOST"),
    "redis_port": ("WSCTL_REDIS_PORT", "REDIS_PORT"),
    "redis_db": ("WSCTL_REDIS_DB", "REDIS_DB"),
    "redis_username": ("WSCTL_REDIS_USERNAME", "REDIS_USERNAME"),
    "redis_password": ("WSCTL_REDIS_PASSWORD", "REDIS_PASSWORD"),
    "redis_cluster": ("WSCTL_REDIS_CLUSTER", "REDIS_USE_CLUSTER"),
    "redis_nodes": ("WSCTL_REDIS_NODES", "REDIS_NODES"),
    "socket_timeout": ("WSCTL_SOCKET_TIMEOUT",),
    "prefix": ("WSCTL_PREFIX",),
    "instance_prefix": ("WSCTL_INSTANCE_PREFIX",),
    "control_prefix": ("WSCTL_CONTROL_PREFIX",),
    "heartbeat_interval": ("WSCTL_HEARTBEAT_INTERVAL",),
    "timeout": ("WSCTL_TIMEOUT",),
    "naive_tz": ("WSCTL_NAIVE_TZ",),
    "scan_count": ("WSCTL_SCAN_COUNT",),
    "redis_tls": ("WSCTL_REDIS_TLS",),
    "tls_ca_cert": ("WSCTL_TLS_CA_CERT",),
    "tls_cert": ("WSCTL_TLS_CERT",),
    "tls_key": ("WSCTL_TLS_KEY",),
    "tls_insecure": ("WSCTL_TLS_INSECURE",),
}

# Settings that name files: ``~`` is expanded, and a relative path in a config file is taken
# relative to that file's directory (so a context and its certificates can live side by side).
PATH_SETTINGS = frozenset({"tls_ca_cert", "tls_cert", "tls_key"})
# The TLS settings, as environment variables, for a process started on the same Redis.
TLS_SETTINGS = ("redis_tls", "tls_ca_cert", "tls_cert", "tls_key", "tls_insecure")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_bool(raw: str) -> bool:
    """Read a boolean setting as people write it (1/0, true/false, yes/no, on/off)."""
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("expected true or false")


_NODE_HOST = re.compile(r"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+(%[A-Za-z0-9._-]+)?\]")
NODES_HINT = (
    "a node is host:port (IPv6 as [::1]:7000); credentials go in REDIS_USERNAME/"
    "REDIS_PASSWORD or the config file, never in a node"
)


class NodeSpecError(ConfigError):
    """A cluster node that is not plain host:port. Its text may hold credentials (a URL or
    user:password@ pasted in), so the message never quotes it: only its position."""


def parse_nodes(raw: str) -> tuple[tuple[str, int], ...]:
    """Parse ``host:port,host:port`` (IPv6 as ``[::1]:7000``) into start-up nodes.

    Anything else (a URL, ``user:password@host:port``, a path) is refused without being
    quoted: users paste credentials there, and a host name is echoed by every error.
    """
    nodes: list[tuple[str, int]] = []
    for number, part in enumerate(raw.split(","), start=1):
        part = part.strip()
        if not part:
            continue
        host, sep, port = part.rpartition(":")
        if not sep or not _NODE_HOST.fullmatch(host) or not port.isdigit():
            raise NodeSpecError(f"node #{number} is not host:port ({NODES_HINT})")
        try:
            nodes.append((host.strip("[]"), _parse_port(port)))
        except ValueError:
            raise NodeSpecError(
                f"node #{number}: its port is not a number from 1 to 65535"
            ) from None
    return tuple(nodes)


def _parse_port(raw: str) -> int:
    port = int(raw)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    return port


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be greater than 0")
    return value


def _wait_seconds(raw: str) -> float:
    return check_seconds(float(raw), maximum=WAIT_MAX_S)


def _age_seconds(raw: str) -> float:
    return check_seconds(float(raw), maximum=AGE_MAX_S)


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


def _db(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _text(raw: str) -> str:
    return raw


def _prefix(raw: str) -> str:
    if not raw:
        raise ValueError("must not be empty")
    return raw


def _path(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return os.path.expanduser(raw)


def _tz(raw: str) -> str:
    resolve_tz(raw)
    return raw


_PARSERS: dict[str, Callable[[str], Any]] = {
    "redis_url": _text,
    "redis_host": _text,
    "redis_port": _parse_port,
    "redis_db": _db,
    "redis_username": _text,
    "redis_password": _text,
    "redis_cluster": parse_bool,
    "redis_nodes": parse_nodes,
    "socket_timeout": _wait_seconds,
    "prefix": _prefix,
    "instance_prefix": _prefix,
    "control_prefix": _prefix,
    "heartbeat_interval": _wait_seconds,
    "timeout": _age_seconds,
    "naive_tz": _tz,
    "scan_count": _positive_int,
    "redis_tls": parse_bool,
    "tls_ca_cert": _path,
    "tls_cert": _path,
    "tls_key": _path,
    "tls_insecure": parse_bool,
}
SETTING_NAMES = tuple(_PARSERS)


# Settings whose flag is not spelled --{name}.
_FLAG_NAMES = {
    "redis_nodes": "--nodes",
    "redis_cluster": "--cluster",
    "socket_timeout": "--request-timeout",
    "redis_tls": "--tls",
}


def convert_value(name: str, raw: Any, where: str) -> Any:
    """Convert one raw value (a string from env/flags, or a TOML value) for setting ``name``."""
    try:
        if name == "redis_nodes" and isinstance(raw, list):
            return parse_nodes(",".join(str(item) for item in raw))
        if isinstance(raw, bool):
            raw = "true" if raw else "false"
        return _PARSERS[name](str(raw))
    except NodeSpecError as exc:  # never quoted, and a configuration error wherever it is
        flag = _FLAG_NAMES.get(name, name) if where == "flag" else f"{name} from {where}"
        raise ConfigError(f"invalid {flag}: {exc.message}") from None
    except (ValueError, ConfigError) as exc:
        shown = "***" if name in SECRET_FIELDS else repr(raw)
        if where == "flag":  # a bad flag value is a usage error (exit 2), not configuration
            flag = _FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
            raise UsageError(f"invalid {flag} {shown}: {exc}") from None
        message = f"invalid {name} {shown} from {where}: {exc}"
        raise ConfigError(message) from None


def default_config_paths(env: Mapping[str, str], cwd: Path) -> list[Path]:
    """The config files tried when none is given: ./wsctl.toml, then
    $XDG_CONFIG_HOME/wsctl/config.toml."""
    xdg = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", str(Path.home()))) / ".config")
    return [cwd / "wsctl.toml", Path(xdg) / "wsctl" / "config.toml"]


# A config file is a few hundred bytes: anything larger is the wrong file (read no further).
CONFIG_MAX_BYTES = 1 << 20


def _read_file(path: Path) -> dict[str, Any]:
    """The TOML document at ``path``: a file, or a pipe (``--config <(cmd)``), read up to
    :data:`CONFIG_MAX_BYTES` and no further (``--config /dev/zero`` fails at once)."""
    try:
        with path.open("rb") as fh:
            data = fh.read(CONFIG_MAX_BYTES + 1)
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    if len(data) > CONFIG_MAX_BYTES:
        raise ConfigError(f"config file {path} is larger than 1 MiB (the wrong file?)")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not valid TOML: not UTF-8 (byte {exc.start})"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Merge flags > env > config file > defaults into :class:`Settings`, recording sources.

    ``flags`` maps setting names to values given on the command line (``None`` means not
    given). Special flag keys: ``config`` (a config file path) and ``context``.
    """
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else cwd

    config_path: Path | None = None
    explicit = flags.get("config") or env.get("WSCTL_CONFIG")
    if explicit:
        config_path = Path(explicit)
        if not config_path.exists():
            raise ConfigError(f"config file {config_path} does not exist")
    else:
        config_path = next((p for p in default_config_paths(env, cwd) if p.is_file()), None)
    document = _read_file(config_path) if config_path else {}

    context = flags.get("context") or env.get("WSCTL_CONTEXT") or document.get("context")
    layers: list[tuple[dict[str, Any], str]] = []
    if config_path:
        top = {k: v for k, v in document.items() if k in _PARSERS}
        layers.append((top, str(config_path)))
        if context:
            contexts = document.get("contexts", {})
            if not isinstance(contexts, dict) or context not in contexts:
                known = ", ".join(sorted(contexts)) if isinstance(contexts, dict) else ""
                raise ConfigError(
                    f"context {quoted(context)} not found in {config_path}"
                    + (f" (known: {known})" if known else "")
                )
            layers.append((contexts[context], f"{config_path} [contexts.{context}]"))
        unknown = sorted(
            set(document) - set(_PARSERS) - {"context", "contexts"}
            | {k for table, _ in layers[1:] for k in table if k not in _PARSERS}
        )
        if unknown:
            raise ConfigError(f"unknown setting(s) in {config_path}: {', '.join(unknown)}")
    elif context:
        raise ConfigError(f"context {quoted(context)} given but no config file was found")

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for table, where in layers:
        for name, raw in table.items():
            values[name] = convert_value(name, raw, where)
            if name in PATH_SETTINGS and config_path is not None:
                values[name] = str(config_path.parent / values[name])  # absolute stays absolute
            sources[name] = where
    for name, env_names in ENV_NAMES.items():
        for env_name in env_names:
            raw = env.get(env_name)
            if raw is not None and raw != "":
                values[name] = convert_value(name, raw, f"env {env_name}")
                sources[name] = f"env {env_name}"
                break
    for name in SETTING_NAMES:
        if name in flags:
            values[name] = convert_value(name, flags[name], "flag")
            sources[name] = "flag"

    settings = Settings(
        **values,
        context=context,
        config_file=str(config_path) if config_path else None,
        sources=sources,
    )
    if settings.redis_url and not settings.redis_url.startswith(
        ("redis://", "rediss://", "unix://")
    ):
        raise ConfigError(
            f"redis_url from {settings.source('redis_url')} must start with redis://, "
            "rediss:// or unix://"
        )
    if settings.redis_url:
        try:
            split_url(settings.redis_url)
        except ValueError as exc:
            raise ConfigError(
                f"redis_url from {settings.source('redis_url')} is malformed: {exc}"
            ) from None
    return settings


def tls_env(settings: Settings) -> dict[str, str]:
    """The TLS settings as ``WSCTL_*`` environment variables, for a process (a gateway) that
    must reach the same Redis the same way; empty when none is set."""
    env: dict[str, str] = {}
    for name in TLS_SETTINGS:
        value = getattr(settings, name)
        if value is True:
            env[ENV_NAMES[name][0]] = "true"
        elif isinstance(value, str):
            env[ENV_NAMES[name][0]] = value
    return env


def without_tls(settings: Settings) -> Settings:
    """``settings`` with every TLS setting back at its default: for wsctl's own plain sandbox
    Redis, which TLS settings meant for a real Redis (say a config file's) must not reach."""
    defaults = Settings()
    sources = {k: v for k, v in settings.sources.items() if k not in TLS_SETTINGS}
    changes = {name: getattr(defaults, name) for name in TLS_SETTINGS}
    return replace(settings, sources=sources, **changes)


def with_overrides(settings: Settings, **changes: Any) -> Settings:
    """A copy of ``settings`` with some values replaced, their source marked as ``flag``."""
    sources = dict(settings.sources)
    sources.update({name: "flag" for name in changes})
    return replace(settings, sources=sources, **changes)


def redacted(settings: Settings) -> list[tuple[str, str, str]]:
    """``(name, shown value, source)`` for every setting, passwords and URL secrets masked."""
    rows: list[tuple[str, str, str]] = []
    for f in fields(Settings):
        if f.name in ("sources", "config_file", "context"):
            continue
        value = getattr(settings, f.name)
        if f.name in SECRET_FIELDS:
            shown = "***" if value else ""
        elif f.name == "redis_url" and value:
            shown = redact_url(value)
        elif f.name == "redis_nodes":
            shown = ",".join(f"{h}:{p}" for h, p in value)
        elif value is None:
            shown = ""
        else:
            shown = str(value)
        rows.append((f.name, shown, settings.source(f.name)))
    return rows
