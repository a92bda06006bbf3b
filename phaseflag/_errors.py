"""The phaseflag error tree; every exception the SDK raises derives from PhaseFlagError.

    PhaseFlagError
    ├── ConfigError (ValueError)            a constructor or CLI option is missing or malformed
    ├── InvalidContextError (TypeError)     an EvaluationContext attribute has an unsupported type
    ├── RulesetError (ValueError)           a ruleset failed parsing, the schema or a size limit
    │   └── RulesetTooLargeError            it exceeded a download/size/depth limit
    ├── TransportError                      an HTTP exchange with the PhaseFlag API failed
    │   └── AuthenticationError             the API answered 401/403: the SDK key is wrong
    └── SharedCacheError                    the shared cache (Redis) failed or refused us

Getters never raise any of these: they return the caller's default instead.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "InvalidContextError",
    "PhaseFlagError",
    "RulesetError",
    "RulesetTooLargeError",
    "SharedCacheError",
    "TransportError",
]


class PhaseFlagError(Exception):
    """Base class of every error raised by phaseflag."""


class ConfigError(PhaseFlagError, ValueError):
    """A configuration option is missing or malformed; the message names the option and the fix."""

    def __init__(self, option: str, problem: str, fix: str = "") -> None:
        self.option = option
        message = f"{option}: {problem}"
        if fix:
            message += f" ({fix})"
        super().__init__(message)


class InvalidContextError(PhaseFlagError, TypeError):
    """An EvaluationContext was given a value it cannot evaluate against."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        super().__init__(f"EvaluationContext attribute {key!r}: {problem}")


class RulesetError(PhaseFlagError, ValueError):
    """A ruleset was rejected whole; ``errors`` lists ``(json_path, message)`` pairs."""

    def __init__(self, message: str, errors: Sequence[tuple[str, str]] = ()) -> None:
        self.errors: tuple[tuple[str, str], ...] = tuple(errors)
        if self.errors:
            details = "; ".join(f"{path}: {msg}" for path, msg in self.errors[:5])
            more = len(self.errors) - 5
            if more > 0:
                details += f"; and {more} more"
            message = f"{message}: {details}"
        super().__init__(message)


class RulesetTooLargeError(RulesetError):
    """A ruleset exceeded a size, nesting-depth or count limit and was not parsed."""


class TransportError(PhaseFlagError):
    """An HTTP exchange with the PhaseFlag API failed (network error or unexpected status).

    ``status`` is the HTTP status (None for network errors); ``retry_after`` is the
    server's ``Retry-After`` in seconds when it sent a usable one.
    """

    def __init__(
        self, message: str, status: int | None = None, *, retry_after: float | None = None
    ) -> None:
        self.status = status
        self.retry_after = retry_after
        super().__init__(message)


class AuthenticationError(TransportError):
    """The API rejected the SDK key (401/403); check ``api_key`` for this environment."""


class SharedCacheError(PhaseFlagError):
    """The shared cache (Redis) failed; ``option`` names the setting to fix, if one is wrong.

    The held ruleset stays in use; ``option`` is set for refused credentials or a failed TLS
    handshake (a configuration problem, logged once), None when Redis is merely unreachable.
    """

    def __init__(self, message: str, *, option: str | None = None) -> None:
        self.option = option
        super().__init__(message)
