"""Operand parsing: condition operands and context values as comparable keys.

Versions, dates and numbers are parsed here once: operands at compile time, context
values through small bounded memos on the read path. Every function is pure and total
(None for "not a version/date/number"), so the operators built on them never raise.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Final

__all__ = [
    "UNSEEN",
    "InvalidCondition",
    "SemverKey",
    "comparable_operands",
    "numbers",
    "parse_date",
    "parse_semver",
    "semver_memo_get",
    "semver_of",
    "semver_value",
    "shared",
    "strings",
    "to_number",
]


class InvalidCondition(Exception):
    """A condition cannot be compiled; its flag is isolated (INVALID_FLAG)."""


_SEMVER = re.compile(
    r"v?(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?(?:\.(0|[1-9]\d*))?"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?",
    re.ASCII,
)

SemverKey = tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]


@lru_cache(maxsize=4096)
def parse_semver(text: str) -> SemverKey | None:
    """A sortable key for a semantic version (``1``, ``1.2`` and ``v`` allowed), or None.

    Pre-releases sort before their release; numeric identifiers sort numerically
    and before alphanumeric ones; build metadata is ignored, as SemVer 2.0 says.
    """
    if len(text) > 256:
        return None
    m = _SEMVER.fullmatch(text)
    if m is None:
        return None
    major, minor, patch, pre = m.groups()
    if pre is None:
        return (int(major), int(minor or 0), int(patch or 0), 1, ())
    ids: list[tuple[int, int | str]] = []
    for part in pre.split("."):
        if part.isdigit():
            if len(part) > 1 and part[0] == "0":
                return None
            ids.append((0, int(part)))
        else:
            ids.append((1, part))
    return (int(major), int(minor or 0), int(patch or 0), 0, tuple(ids))


@lru_cache(maxsize=4096)
def _parse_date_text(text: str) -> float | None:
    text = text.strip()
    if not text or len(text) > 64:
        return None
    try:
        return float(text) if _looks_numeric(text) else _iso_seconds(text)
    except (ValueError, OverflowError):
        return None


def _looks_numeric(text: str) -> bool:
    return text.lstrip("+-").replace(".", "", 1).isdigit()


# RFC 3339 plus a date alone and an optional offset. Parsed here rather than by
# datetime.fromisoformat, whose accepted forms differ between Python 3.10 and 3.11.
_ISO_DATE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?([Zz]|[+-]\d{2}(?::?\d{2})?)?)?",
    re.ASCII,
)


def _iso_seconds(text: str) -> float | None:
    m = _ISO_DATE.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = m.groups()
    zone = timezone.utc  # documented: a date or time without an offset is UTC
    if offset is not None and offset not in ("Z", "z"):
        digits = offset[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:] or 0)
        if minutes > 59:
            return None
        delta = timedelta(hours=hours, minutes=minutes)
        zone = timezone(-delta if offset[0] == "-" else delta)
    moment = datetime(
        int(year),
        int(month),
        int(day),
        int(hour or 0),
        int(minute or 0),
        int(second or 0),
        int((fraction or "0")[:6].ljust(6, "0")),
        tzinfo=zone,
    )
    return moment.timestamp()


def parse_date(value: object) -> float | None:
    """Epoch seconds for a datetime, an epoch number or an ISO-8601 string; None if not a date.

    Strings: ``YYYY-MM-DD``, optionally followed by ``T``/space, ``HH:MM[:SS[.fraction]]``
    and ``Z`` or an offset (``+HH:MM``, ``+HHMM``, ``+HH``); no offset means UTC. A string
    of digits is epoch seconds.
    """
    kind = type(value)
    if kind is float or kind is int:
        try:
            seconds = float(value)  # type: ignore[arg-type]
        except OverflowError:  # an int beyond the float range
            return None
        return seconds if math.isfinite(seconds) else None
    if kind is str:
        return _parse_date_text(value)
    if isinstance(value, datetime):
        return value.timestamp() if value.tzinfo is not None else None
    return None


def to_number(value: object) -> float | None:
    """A context value as a number: int/float (not bool) or a numeric string; else None."""
    if type(value) is int or type(value) is float:
        return value
    if type(value) is str and len(value) < 64:
        try:
            number = float(value)
        except ValueError:
            return None
        # float() also reads "nan", "inf", "1_000" and non-ASCII digits, which no other
        # SDK would call numeric: treat them as not numbers.
        if number - number != 0 or "_" in value or not value.isascii():
            return None
        return number
    return None


# -- context values on the read path -------------------------------------------------------

# Context versions parsed so far: a bounded memo of a pure function (a plain dict,
# because a dict lookup costs a third of an lru_cache call on the read path).
_SEMVER_MEMO: dict[str, SemverKey | None] = {}
_SEMVER_MEMO_SIZE: Final = 4096
#: "Not computed yet" in read-path memos (None is a real answer: "not a version").
UNSEEN: Final[Any] = object()
#: ``_SEMVER_MEMO.get``: the memo probe that hot-path copies inline before ``semver_of``.
semver_memo_get = _SEMVER_MEMO.get


def semver_of(text: str) -> SemverKey | None:
    """``parse_semver`` through the read-path memo."""
    key = _SEMVER_MEMO.get(text, UNSEEN)
    if key is UNSEEN:
        key = parse_semver(text)
        if len(_SEMVER_MEMO) >= _SEMVER_MEMO_SIZE:
            _SEMVER_MEMO.clear()
        _SEMVER_MEMO[text] = key
    return key  # type: ignore[no-any-return]


def semver_value(value: object) -> SemverKey | None:
    """The version key of a context value: None unless it is a str holding a version."""
    return semver_of(value) if type(value) is str else None


# -- condition operands at compile time ----------------------------------------------------


def strings(operator: str, operands: list[Any], fold: bool) -> tuple[str, ...]:
    """String operands (casefolded when ``fold``); raises unless every operand is a str."""
    if not all(type(v) is str for v in operands):
        raise InvalidCondition(f"{operator} needs string values")
    return tuple(v.casefold() for v in operands) if fold else tuple(operands)


# Equal operand sets are shared between conditions (large rulesets repeat the same
# lists: plans, countries). Bounded; a race only costs a missed share.
_SHARED_SETS: dict[frozenset[Any], frozenset[Any]] = {}


def shared(values: frozenset[Any]) -> frozenset[Any]:
    """One instance per distinct small operand set (memory for large rulesets)."""
    if len(values) > 64:
        return values
    found = _SHARED_SETS.get(values)
    if found is None:
        if len(_SHARED_SETS) >= 4096:
            _SHARED_SETS.clear()
        _SHARED_SETS[values] = found = values
    return found


def numbers(operator: str, operands: list[Any]) -> list[float]:
    """Numeric operands (not bools, finite); raises for anything else or none at all."""
    out = []
    for v in operands:
        number = None if type(v) is bool else to_number(v)
        if number is None or (type(number) is float and not math.isfinite(number)):
            raise InvalidCondition(f"{operator} needs numeric values, got {v!r}")
        out.append(number)
    if not out:
        raise InvalidCondition(f"{operator} needs at least one value")
    return out


def comparable_operands(name: str, operands: list[Any]) -> list[Any]:
    """The operands of an ordered operator as keys: versions, epoch seconds or numbers."""
    if name.startswith("semver"):
        keys = [parse_semver(v) if type(v) is str else None for v in operands]
        if not keys or any(k is None for k in keys):
            raise InvalidCondition(f"{name} needs semantic versions, got {operands!r}")
        return keys
    if name in ("before", "after"):
        dates = [None if type(v) is bool else parse_date(v) for v in operands]
        if not dates or any(d is None for d in dates):
            raise InvalidCondition(
                f"{name} needs ISO-8601 dates or epoch seconds, got {operands!r}"
            )
        return dates
    return numbers(name, operands)
