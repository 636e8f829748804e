"""redis-py exceptions -> one operator-facing line (:class:`RedisUnavailable`, exit code 3).

Every message names the server through :meth:`Target.describe` and has the password scrubbed.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Iterator

from redis import exceptions as rx

from wsctl.errors import RedisUnavailable, TlsError
from wsctl.redis.target import Target

__all__ = ["describe_error", "plain_behind_tls", "tls_problem", "translate_errors"]

# Where to set things, said once for every message.
_CA_HINT = "give its CA bundle with --tls-ca-cert / WSCTL_TLS_CA_CERT (tls_ca_cert in a context)"
_CERT_HINT = "--tls-cert and --tls-key (WSCTL_TLS_CERT, WSCTL_TLS_KEY)"
# OpenSSL reasons a server gives when it refuses the client certificate we presented.
_REJECTED = (
    "ALERT_UNKNOWN_CA",
    "ALERT_BAD_CERTIFICATE",
    "ALERT_CERTIFICATE_UNKNOWN",
    "ALERT_CERTIFICATE_EXPIRED",
    "ALERT_CERTIFICATE_REVOKED",
    "ALERT_UNSUPPORTED_CERTIFICATE",
    "ALERT_ACCESS_DENIED",
    "ALERT_DECRYPT_ERROR",
)
# What a TLS client reads when the other end answers in plain text.
_NOT_TLS = (
    "WRONG_VERSION_NUMBER",
    "RECORD_LAYER_FAILURE",
    "UNKNOWN_PROTOCOL",
    "PACKET_LENGTH_TOO_LONG",
    "RECORD_TOO_LARGE",
    "HTTP_REQUEST",
)
# What a client sees when the server closed the connection under it: a TLS server dropping a
# plain client's bytes, or a server refusing a client certificate after a TLS 1.3 handshake
# whose alert was not read (redis-py: "Connection closed by the server before write", "...
# while writing", "Connection closed by server.", a reset, a broken pipe).
_CLOSED = (
    "CONNECTION CLOSED BY SERVER",
    "CLOSED BY THE SERVER",
    "CONNECTION RESET",
    "CONNECTION LOST",
    "BROKEN PIPE",
    "EOF",
    "WRITING TO SOCKET",
    "WHILE READING",
)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes (bounded: cause chains can loop)."""
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(found) < 10 and current not in found:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def _verify_message(chain: list[BaseException]) -> str:
    for item in chain:
        message = getattr(item, "verify_message", None)
        if isinstance(item, ssl.SSLCertVerificationError) and message:
            return str(message).rstrip(".")
    return "certificate verify failed"


def _endpoints(target: Target) -> list[tuple[str, int]]:
    if target.kind == "cluster":
        return list(target.nodes[:3])
    return [(target.host, target.port)] if target.kind == "tcp" else []


def _speaks_tls(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when ``host:port`` answers a TLS handshake (certificates not checked: this only
    tells a TLS port from a plain one, to explain an error)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return True
    except ssl.SSLError as exc:  # an alert (e.g. "certificate required") is still TLS
        return "ALERT" in str(exc.reason or "").upper()
    except OSError:
        return False


def _speaks_plain_redis(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when ``host:port`` answers a plain ``PING`` like Redis (+PONG, or an error such as
    NOAUTH)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH", b"-ERR", b"-WRONGPASS"))


def _tls_verdict(target: Target, text: str, chain: list[BaseException]) -> str | None:
    """The TLS failure that ``text`` (an upper-cased error chain) shows, for a TLS target."""
    assert target.tls is not None
    where = target.describe()
    verify = next((e for e in chain if isinstance(e, ssl.SSLCertVerificationError)), None)
    code = getattr(verify, "verify_code", None)
    if code in (62, 64) or "HOSTNAME MISMATCH" in text or "IP ADDRESS MISMATCH" in text:
        return (
            f"TLS: the certificate of {where} is not valid for the host name used "
            f"({_verify_message(chain)}): connect with a name the certificate lists"
        )
    if verify is not None or "CERTIFICATE_VERIFY_FAILED" in text:
        return (
            f"TLS: the certificate of {where} is not trusted ({_verify_message(chain)}): {_CA_HINT}"
        )
    if "CERTIFICATE_REQUIRED" in text or "PEER_DID_NOT_RETURN_A_CERTIFICATE" in text:
        return f"TLS: {where} requires a client certificate: give {_CERT_HINT}"
    rejected = next((r for r in _REJECTED if r in text), None)
    if rejected is not None:
        if target.tls.cert is None:
            return f"TLS: {where} requires a client certificate: give {_CERT_HINT}"
        return (
            f"TLS: {where} rejected the client certificate {target.tls.cert} "
            f"({rejected.removeprefix('ALERT_').replace('_', ' ').lower()}): use one "
            "signed by a CA the server trusts"
        )
    if "ALERT_HANDSHAKE_FAILURE" in text and target.tls.cert is None:
        return (
            f"TLS: {where} refused the handshake; it may require a client certificate: "
            f"give {_CERT_HINT}"
        )
    if any(marker in text for marker in _NOT_TLS):
        return _plain_behind_tls(where)
    return None


def _plain_behind_tls(where: str) -> str:
    return (
        f"TLS: {where} does not speak TLS (a plain Redis?): use redis:// and drop "
        "--tls / WSCTL_REDIS_TLS"
    )


def plain_behind_tls(target: Target, timeout: float = 1.0) -> str | None:
    """The operator-facing line when ``target`` is configured for TLS but its server answers a
    plain ``PING`` (a plain Redis behind a ``rediss://`` URL), else None. Blocking (short
    probes, ``timeout`` each): callers run it in a thread while their TLS handshake waits."""
    if target.tls is None:
        return None
    if any(_speaks_plain_redis(h, p, timeout) for h, p in _endpoints(target)):
        return _plain_behind_tls(target.describe())
    return None


class _ClosedAfterHandshake(Exception):
    """A probe's finding: the server closed (or reset) the connection right after a completed
    TLS handshake, before the client wrote anything, and sent no alert saying why."""


# How long the TLS 1.3 probe listens, after its handshake, for a refusal before it asks again
# in TLS 1.2; the bound of each probe's connect and handshake; and of a whole probe.
_PROBE_LISTEN_S = 0.5
_PROBE_HANDSHAKE_S = 2.0
_PROBE_DEADLINE_S = 4.0


def _probe_context(target: Target, *, tls12: bool) -> ssl.SSLContext | None:
    """A client context with the target's CA, verification and client certificate; with
    ``tls12``, capped at TLS 1.2. None when the files cannot be loaded (reported elsewhere)."""
    tls = target.tls
    assert tls is not None
    try:
        context = ssl.create_default_context(cafile=tls.ca_cert if not tls.insecure else None)
        if tls.insecure or not tls.check_hostname:
            context.check_hostname = False
        if tls.insecure:
            context.verify_mode = ssl.CERT_NONE
        if tls.cert:
            context.load_cert_chain(tls.cert, tls.key, password=lambda: b"")
        if tls12:
            context.maximum_version = ssl.TLSVersion.TLSv1_2
    except (OSError, ValueError):
        return None
    return context


def _listen_after_handshake(
    context: ssl.SSLContext, host: str, port: int, timeout: float
) -> BaseException | bool | None:
    """Handshake (TLS 1.3 where the server speaks it), then read without writing anything.

    Returns the server's alert (or any TLS error), True when the server closed or reset the
    connection with no alert, False when it stayed silent (it waits for a command: accepted,
    or still checking the certificate), None when nothing could be learnt.
    """
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host) as sock,
        ):
            sock.settimeout(min(_PROBE_LISTEN_S, timeout))
            try:
                data = sock.recv(1)
            except TimeoutError:
                return False
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError):
                return True
            return not data or None  # data first: a Redis error line, not a TLS matter
    except ssl.SSLError as exc:
        return exc
    except OSError:
        return None


def _tls12_refusal(
    context: ssl.SSLContext, host: str, port: int, timeout: float
) -> BaseException | bool:
    """The alert of a TLS 1.2 handshake; True when the handshake completed (the server accepted
    the client's certificate, or asks for none); False when nothing could be learnt (no TLS
    1.2 at all, a reset, a timeout).

    In TLS 1.2 the server checks the client certificate inside the handshake, before its own
    Finished, so its refusal comes within the handshake however long the check takes: no
    reading after it, and no race with a first command.
    """
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return True
    except ssl.SSLError as exc:
        reason = str(exc.reason or "").upper()
        return exc if "ALERT" in reason and "PROTOCOL_VERSION" not in reason else False
    except OSError:
        return False


def _tls_handshake_verdict(target: Target) -> BaseException | None:
    """Handshake as the client does and get the server's verdict on it, without writing.

    With TLS 1.3 a server checks the client certificate after the client considers the
    handshake done. Its alert ("certificate required", "unknown CA") can reach the client
    before its first command (redis-py: "closed by the server before write"), after it (a
    read error naming the alert), or be lost when that command crosses the server's close (a
    reset). So: handshake and listen, writing nothing, for the alert itself; if the server
    stays silent (a slow check, or it accepted us), handshake again in TLS 1.2, where the
    verdict comes inside the handshake. A server that closes right after the handshake with
    no alert at all (and does not take the certificate in TLS 1.2 either) is reported as
    :class:`_ClosedAfterHandshake`. Bounded by :data:`_PROBE_DEADLINE_S` in all.
    """
    latest = _probe_context(target, tls12=False)
    capped = _probe_context(target, tls12=True)
    if latest is None or capped is None:
        return None
    deadline = time.monotonic() + _PROBE_DEADLINE_S
    closed = False
    for host, port in _endpoints(target):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        heard = _listen_after_handshake(latest, host, port, min(_PROBE_HANDSHAKE_S, left))
        if isinstance(heard, BaseException):
            return heard
        if heard is None:
            continue
        closed = closed or heard
        left = deadline - time.monotonic()
        if left > 0:
            refusal = _tls12_refusal(capped, host, port, min(_PROBE_HANDSHAKE_S, left))
            if isinstance(refusal, BaseException):
                return refusal
            if refusal:  # the certificate is accepted: a close after it is not about it
                return None
    return _ClosedAfterHandshake() if closed else None


def _closed_after_handshake(target: Target) -> str:
    assert target.tls is not None
    where = target.describe()
    said = f"TLS: {where} closed the connection right after the TLS handshake, saying nothing:"
    if target.tls.cert is None:
        return f"{said} it may require a client certificate (give {_CERT_HINT})"
    return (
        f"{said} it may have rejected the client certificate {target.tls.cert} (use one "
        "signed by a CA the server trusts)"
    )


def tls_problem(target: Target, exc: BaseException, *, probe: bool = True) -> str | None:
    """The operator-facing line for a TLS failure (or a TLS/plain mismatch), else None.

    Says which: the server's certificate is not trusted, its name does not match, the server
    requires or rejected our client certificate, a plain Redis behind a TLS setting, or a TLS
    port spoken to in plain. Ambiguous symptoms (a timeout, a closed or reset connection) are
    checked with short probes of the server when ``probe`` is true.
    """
    chain = _chain(exc)
    text = " ".join(target.scrub(str(item)) for item in chain).upper()
    where = target.describe()
    ambiguous = any(marker in text for marker in _CLOSED)
    if target.tls is not None:
        verdict = _tls_verdict(target, text, chain)
        if verdict is not None or not probe:
            return verdict
        if not (ambiguous or isinstance(exc, rx.TimeoutError)):
            return None
        found = _tls_handshake_verdict(target)
        if isinstance(found, _ClosedAfterHandshake):
            return _closed_after_handshake(target)
        if found is not None:
            verdict = _tls_verdict(target, target.scrub(str(found)).upper(), [found])
            if verdict is not None:
                return verdict
        if any(_speaks_plain_redis(h, p) for h, p in _endpoints(target)):
            return _plain_behind_tls(where)
        return None
    if probe and ambiguous and any(_speaks_tls(h, p) for h, p in _endpoints(target)):
        return (
            f"TLS: {where} expects TLS but wsctl spoke plain Redis: use a rediss:// URL, "
            "--tls or WSCTL_REDIS_TLS=true"
        )
    return None


def describe_error(target: Target, exc: BaseException, *, probe: bool = True) -> RedisUnavailable:
    """Translate a redis-py exception into one operator-facing line (password scrubbed).

    ``probe`` allows one short connection to the server to tell TLS from plain when the
    symptom alone does not (see :func:`tls_problem`).
    """
    tls = tls_problem(target, exc, probe=probe)
    if tls is not None:
        return TlsError(tls)
    where = target.describe()
    text = target.scrub(str(exc)) or exc.__class__.__name__
    upper = text.upper()
    auth_markers = ("WRONGPASS", "NOAUTH", "USERNAME-PASSWORD", "INVALID PASSWORD")
    if (
        isinstance(exc, rx.AuthenticationError)
        or isinstance(exc.__cause__, rx.AuthenticationError)
        or any(marker in upper for marker in auth_markers)
    ):
        msg = f"authentication failed at {where}: check REDIS_USERNAME / REDIS_PASSWORD"
    elif isinstance(exc, rx.ResponseError) and upper.startswith(("MOVED", "ASK", "CROSSSLOT")):
        msg = (
            f"{where} is a Redis Cluster node: set REDIS_USE_CLUSTER=true (or --cluster) "
            "and REDIS_NODES"
        )
    elif "CLUSTER MODE IS NOT ENABLED" in upper or "CLUSTER SUPPORT DISABLED" in upper:
        msg = f"{where} is not a Redis Cluster: unset REDIS_USE_CLUSTER / drop --cluster"
    elif isinstance(exc, rx.TimeoutError):
        # on a cluster, redis-py's text names the node that did not answer
        node = f" ({text})" if target.kind == "cluster" and text != "TimeoutError" else ""
        msg = f"Redis at {where} timed out{node}: check the network and server load"
    elif isinstance(exc, rx.ConnectionError):
        msg = f"cannot connect to Redis at {where}: {text}; check host, port and that it runs"
    elif isinstance(exc, rx.RedisClusterException):
        msg = f"Redis Cluster at {where}: {text}"
    else:
        msg = f"Redis error at {where}: {text}"
    return RedisUnavailable(msg)


@contextlib.contextmanager
def translate_errors(target: Target) -> Iterator[None]:
    """Re-raise any redis-py error inside the block as :class:`RedisUnavailable`."""
    try:
        yield
    except (rx.RedisError, rx.RedisClusterException) as exc:
        raise describe_error(target, exc) from exc
    except socket.gaierror as exc:  # a name that does not resolve
        raise describe_error(target, exc) from exc
