"""The typed-read policy: which values each getter accepts, how they are converted, and
what a read that misses (unknown flag, wrong type, error) returns instead."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final, TypeVar

from ._evaluation import short
from ._oncelog import OnceLog
from .types import ErrorCode, EvaluationContext, EvaluationResult, Reason

__all__ = [
    "BOOLEAN",
    "INTEGER",
    "JSON",
    "NUMBER",
    "STRING",
    "Kind",
    "Misses",
    "copy_json",
    "private",
]

T = TypeVar("T")
Fallback = Callable[[str, "EvaluationContext | None"], Any]


def copy_json(value: Any) -> Any:
    """A deep copy of a JSON value (dicts and lists), so callers can't alter the ruleset."""
    if isinstance(value, dict):
        return {k: copy_json(v) if isinstance(v, (dict, list)) else v for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) if isinstance(v, (dict, list)) else v for v in value]
    return value


def private(result: EvaluationResult) -> EvaluationResult:
    """``result`` with a JSON value the caller may change without touching the ruleset."""
    if isinstance(result.value, (dict, list)):
        return replace(result, value=copy_json(result.value))
    return result


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True, slots=True)
class Kind:
    """One value kind of the typed getters: what it accepts and how a value becomes its type.

    ``convert`` is applied to accepted served values and accepted fallback values alike;
    ``copy`` says the getter hands out a private copy (JSON containers).
    """

    name: str
    accept: Callable[[object], bool]
    convert: Callable[[Any], Any] = _same
    copy: bool = False

    def serve(self, value: Any) -> Any:
        """An accepted value as the getter returns it."""
        value = self.convert(value)
        return copy_json(value) if self.copy else value


BOOLEAN: Final = Kind("boolean", lambda v: type(v) is bool)
STRING: Final = Kind("string", lambda v: type(v) is str)
#: A whole float counts as an integer; bools never count as numbers.
INTEGER: Final = Kind(
    "integer", lambda v: type(v) is int or (type(v) is float and v.is_integer()), int
)
NUMBER: Final = Kind("number", lambda v: type(v) in (int, float), float)
JSON: Final = Kind("json", lambda v: isinstance(v, (dict, list)), copy=True)


class Misses:
    """What a getter returns when the served result is missing, mistyped or failed.

    Each cause is logged once (per flag and cause); the ``fallback`` function, when
    configured, supplies the value for missing and failing flags before the default.
    """

    __slots__ = ("_fallback", "_warn")

    def __init__(self, warn: OnceLog, fallback: Fallback | None) -> None:
        self._warn = warn
        self._fallback = fallback

    @property
    def has_fallback(self) -> bool:
        """True when a fallback function is configured."""
        return self._fallback is not None

    def read_failed(self, flag_key: object, exc: Exception) -> None:
        """Log a read that raised; the getter then returns its default."""
        self._warn(
            f"read:{short(flag_key)}:{type(exc).__name__}",
            "phaseflag: reading flag %r failed (%s); returning the default",
            flag_key,
            exc,
        )

    def value(
        self,
        flag_key: str,
        default: T,
        context: object,
        result: EvaluationResult | None,
        kind: Kind,
    ) -> T:
        """The caller's default (or the fallback function's value) after a miss or mismatch."""
        if result is not None and result.value is not None:
            self._warn(
                f"type:{short(flag_key)}:{kind.name}",
                "phaseflag: flag %r is not a %s flag (got %s); returning the default",
                flag_key,
                kind.name,
                type(result.value).__name__,
            )
            return default
        if result is not None and result.error_code is not None:
            level = logging.DEBUG if result.error_code == ErrorCode.NOT_READY else logging.WARNING
            self._warn(
                f"err:{short(flag_key)}:{result.error_code}",
                "phaseflag: %s for flag %r: %s",
                result.error_code,
                flag_key,
                result.error_message,
                level=level,
            )
        if self._fallback is not None and (result is None or result.error_code is not None):
            try:
                value = self._fallback(
                    flag_key, context if isinstance(context, EvaluationContext) else None
                )
                if kind.accept(value):
                    return kind.convert(value)  # type: ignore[no-any-return]
            except Exception:
                self._warn.logger.exception(
                    "phaseflag: fallback raised for flag %r; returning the default", flag_key
                )
        return default

    def details(
        self,
        flag_key: str,
        default: Any,
        context: object,
        result: EvaluationResult,
        kind: Kind,
    ) -> EvaluationResult:
        """``result`` checked against ``kind``: TYPE_MISMATCH, the fallback, or converted."""
        if result.error_code is None and not kind.accept(result.value):
            return EvaluationResult(
                flag_key,
                default,
                Reason.ERROR,
                result.variation_key,
                result.rule_id,
                ErrorCode.TYPE_MISMATCH,
                f"flag {flag_key!r} is not a {kind.name} flag",
            )
        if result.error_code is not None:
            if self._fallback is None:
                return result
            # value=None: the default that get_details filled in is not a served value
            value = self.value(flag_key, default, context, replace(result, value=None), kind)
            return replace(result, value=value)
        converted = kind.convert(result.value)
        if type(converted) is not type(result.value):
            return replace(result, value=converted)
        return result
