"""Where Redis is (:class:`Target`), how to name it safely (:func:`redact_url`), and the type
of the client that talks to it (:data:`AsyncClient`: one async code path for single node and
cluster).

A leaf module (standard library only): the settings loader uses it to render URLs, the client
factory builds targets from settings, and every error message names the server through
:meth:`Target.describe`, which never contains a password.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import SplitResult, urlsplit, urlunsplit

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    AsyncClient: TypeAlias = Redis | RedisCluster
else:  # redis is not imported at run time: this module stays light for --help
    AsyncClient = Any

__all__ = ["AsyncClient", "Target", "TlsOptions", "redact_url", "split_url"]


_URL_HINT = "percent-encode @ : / ? # in the password (%40 %3A %2F %3F %23) or set REDIS_PASSWORD"


def split_url(url: str) -> SplitResult:
    """``urlsplit(url)`` with every check that could fail later done now: the host part
    parses, the port is a number from 1 to 65535, and no ``@`` follows the host (the sign of a
    password with an unencoded ``/``, ``?`` or ``#``, which would otherwise be read as host,
    port or database and echoed).

    Raises:
        ValueError: its message holds no part of ``url``, so it is safe to print.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"its host or port cannot be parsed ({_URL_HINT})") from None
    after_host = parts.query + parts.fragment
    if parts.scheme != "unix":
        after_host += parts.path
    if "@" in after_host:
        raise ValueError(f"it has an '@' after the host ({_URL_HINT})")
    if port == 0:
        raise ValueError("its port is not a number from 1 to 65535")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError(f"it has no host ({_URL_HINT})")
    return parts


def redact_url(url: str) -> str:
    """``url`` without its user part (``***@`` in its place: users put passwords in the user
    name too); a URL that does not parse cleanly is hidden entirely, since its password
    cannot be told from its host."""
    try:
        parts = split_url(url)
    except ValueError:
        return "<malformed URL, hidden>"
    if "@" not in parts.netloc:
        return url
    netloc = "***@" + parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class TlsOptions:
    """How to speak TLS to Redis: every node of a cluster gets the same options.

    ``ca_cert`` is a CA bundle (None: the system's trust store); ``cert``/``key`` a client
    certificate for mutual TLS; ``insecure`` turns certificate and host name checks off;
    ``check_hostname`` is False only when a URL asked for it (``ssl_check_hostname=false``).
    """

    ca_cert: str | None = None
    cert: str | None = None
    key: str | None = None
    insecure: bool = False
    check_hostname: bool = True

    @property
    def verifies(self) -> bool:
        """True when the server's certificate chain is checked."""
        return not self.insecure


@dataclass(frozen=True)
class Target:
    """Where Redis is, resolved from settings; ``describe()`` is safe to print."""

    kind: str  # "tcp", "unix" or "cluster"
    host: str = "127.0.0.1"
    port: int = 6379
    path: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    nodes: tuple[tuple[str, int], ...] = ()
    tls: TlsOptions | None = None

    @property
    def ssl(self) -> bool:
        """True when every connection to this target speaks TLS."""
        return self.tls is not None

    def describe(self) -> str:
        """The server(s), without user name or password: for messages and logs (users put
        passwords in the user part too)."""
        user = "***@" if self.username else ""
        if self.kind == "unix":
            return f"unix://{user}{self.path}"
        if self.kind == "cluster":
            tls = "(TLS) " if self.ssl else ""
            return "cluster " + tls + user + ",".join(f"{h}:{p}" for h, p in self.nodes)
        scheme = "rediss" if self.ssl else "redis"
        return f"{scheme}://{user}{self.host}:{self.port}/{self.db}"

    def scrub(self, text: str) -> str:
        """Remove the password from any text (error messages from libraries, just in case)."""
        if self.password:
            text = text.replace(self.password, "***")
        return text
