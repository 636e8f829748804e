"""The one exception hierarchy of wsctl.

Library code raises subclasses of :class:`WsctlError`; the CLI translates them to exit codes in
exactly one place (``wsctl.cli.main``). Messages are single lines, never contain secrets.
"""

from __future__ import annotations

__all__ = [
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_NEGATIVE",
    "EXIT_NOT_REGISTERED",
    "EXIT_OK",
    "EXIT_REDIS",
    "EXIT_TIMEOUT",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "ConfigError",
    "FleetNotRunning",
    "NotFound",
    "RedisUnavailable",
    "TlsError",
    "UsageError",
    "WsctlError",
]

# Documented exit codes (docs/reference/exit-codes.md).
EXIT_OK = 0
EXIT_NEGATIVE = 1  # a negative result: robot not found, problems found, a check failed
EXIT_USAGE = 2  # bad flags or input
EXIT_REDIS = 3  # Redis unreachable, auth failure, cluster mismatch, configuration error
EXIT_NOT_REGISTERED = 4  # send, kick: no registry entry; drain, undrain: unknown instance
EXIT_UNREACHABLE = 5  # send, kick, ping, drain, undrain: the instance is not listening
EXIT_TIMEOUT = 6  # send, kick, ping: no reply within --timeout
EXIT_INTERNAL = 70  # a bug in wsctl (traceback with --debug)
EXIT_INTERRUPTED = 130


class WsctlError(Exception):
    """Base of every error wsctl reports to an operator; ``exit_code`` says how the CLI exits."""

    exit_code: int = EXIT_NEGATIVE

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        """The one-line text the CLI prints after ``wsctl: error:``."""
        return str(self.args[0]) if self.args else self.__class__.__name__


class UsageError(WsctlError):
    """Bad input from the operator: an invalid robot id, a malformed file, conflicting flags."""

    exit_code = EXIT_USAGE


class ConfigError(WsctlError):
    """The configuration (file, env or flags) cannot be used."""

    exit_code = EXIT_REDIS


class RedisUnavailable(WsctlError):
    """Redis could not be reached or refused us (auth, cluster mode mismatch, timeout)."""

    exit_code = EXIT_REDIS


class TlsError(RedisUnavailable):
    """TLS to Redis failed in a way retrying will not fix: an untrusted or misnamed server
    certificate, a client certificate required or rejected, TLS spoken to a plain server (or
    the reverse)."""


class NotFound(WsctlError):
    """The thing asked for does not exist (a negative result, not a failure of wsctl)."""

    exit_code = EXIT_NEGATIVE


class FleetNotRunning(WsctlError, RuntimeError):
    """The app's API was called on a fleet core that is not running: before ``start()`` or
    after ``stop()``. A bug in the calling code's order (raised at once, nothing is sent),
    not an outcome of the fleet."""

    exit_code = EXIT_INTERNAL
