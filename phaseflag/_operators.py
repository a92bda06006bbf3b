"""Condition operators: each compiles its operands once into a small predicate.

Semantics shared by every operator except ``exists`` and ``in_segment``: a missing
attribute, or a value of the wrong type, makes the condition false whether or not it
is negated; ``negate`` flips only a real comparison. Multi-valued operands mean
"any of": ``in``/``equals`` any value, ``gt`` greater than some value (the minimum),
``lt`` less than some value (the maximum), and so on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Final

from ._model import Condition, Segment, Test, Values

__all__ = [
    "MAX_REGEX_INPUT",
    "MAX_REGEX_LENGTH",
    "OPERATORS",
    "InvalidCondition",
    "compile_condition",
    "parse_date",
    "parse_semver",
]

#: Longest regex pattern accepted in a ``matches`` condition.
MAX_REGEX_LENGTH: Final = 256
#: Longest context string a regex is run against; longer values make ``matches`` false.
MAX_REGEX_INPUT: Final = 4096

_MISSING: Final[Any] = None  # context values never hold None: it means "absent"


class InvalidCondition(Exception):
    """A condition cannot be compiled; its flag is isolated (INVALID_FLAG)."""


# -- operand parsing -----------------------------------------------------------------------

_SEMVER = re.compile(
    r"v?(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?(?:\.(0|[1-9]\d*))?"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
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


def _iso_seconds(text: str) -> float | None:
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:  # documented: a date without an offset is UTC
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def parse_date(value: object) -> float | None:
    """Epoch seconds for a datetime, an epoch number or an ISO-8601 string; None if not a date."""
    kind = type(value)
    if kind is float or kind is int:
        seconds = float(value)  # type: ignore[arg-type]
        return seconds if math.isfinite(seconds) else None
    if kind is str:
        return _parse_date_text(value)  # type: ignore[arg-type]
    if isinstance(value, datetime):
        return value.timestamp() if value.tzinfo is not None else None
    return None


def _number(value: object) -> float | None:
    """A context value as a number: int/float (not bool) or a numeric string; else None."""
    kind = type(value)
    if kind is int or kind is float:
        return value  # type: ignore[return-value]
    if kind is str and len(value) < 64:  # type: ignore[arg-type]
        try:
            return float(value)  # type: ignore[arg-type]
        except ValueError:
            return None
    return None


# -- operator builders ---------------------------------------------------------------------
# Each builder gets (attribute, operands, negate, case_insensitive) and returns a Test.

Builder = Callable[[str, list[Any], bool, bool], Test]


def _strings(operator: str, operands: list[Any], fold: bool) -> tuple[str, ...]:
    if not all(type(v) is str for v in operands):
        raise InvalidCondition(f"{operator} needs string values")
    return tuple(v.casefold() for v in operands) if fold else tuple(operands)


def _in(attr: str, operands: list[Any], negate: bool, fold: bool) -> Test:
    strs = frozenset(_strings("in", [v for v in operands if type(v) is str], fold))
    bools = frozenset(v for v in operands if type(v) is bool)
    nums = frozenset(v for v in operands if type(v) in (int, float))
    if not bools and not nums and not fold and not negate:
        # The common case (plan in [...]): a non-str value can never be in a set of str.
        def in_strings(values: Values) -> bool:
            return values.get(attr) in strs

        return in_strings

    def test(values: Values) -> bool:
        value = values.get(attr)
        kind = type(value)
        if kind is str:
            hit = (value.casefold() if fold else value) in strs  # type: ignore[union-attr]
        elif kind is bool:
            hit = value in bools
        elif kind is int or kind is float:
            hit = value in nums
        else:
            return False
        return hit is not negate

    return test


def _string_op(method: Callable[[str, tuple[str, ...]], bool], name: str) -> Builder:
    def build(attr: str, operands: list[Any], negate: bool, fold: bool) -> Test:
        needles = _strings(name, operands, fold)

        def test(values: Values) -> bool:
            value = values.get(attr)
            if type(value) is not str:
                return False
            return method(value.casefold() if fold else value, needles) is not negate  # type: ignore[union-attr]

        return test

    return build


def _contains(value: str, needles: tuple[str, ...]) -> bool:
    return any(needle in value for needle in needles)


# Features that make backtracking blow up or cannot be bounded; rejected at compile time.
_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*[+*}](?:[^()\\]|\\.)*\)\s*(?:[+*]|\{\d*,)")
_BACKREFERENCE = re.compile(r"\\[1-9]|\(\?P=")


def _matches(attr: str, operands: list[Any], negate: bool, fold: bool) -> Test:
    patterns = []
    for pattern in _strings("matches", operands, False):
        if len(pattern) > MAX_REGEX_LENGTH:
            raise InvalidCondition(f"regex longer than {MAX_REGEX_LENGTH} characters")
        if _NESTED_QUANTIFIER.search(pattern) or _BACKREFERENCE.search(pattern):
            raise InvalidCondition(
                f"regex {pattern!r} uses a nested quantifier or backreference, "
                "which can backtrack catastrophically"
            )
        try:
            patterns.append(re.compile(pattern, re.IGNORECASE if fold else 0).search)
        except (re.error, RecursionError, OverflowError) as exc:
            raise InvalidCondition(f"bad regex {pattern!r}: {exc}") from None
    searches = tuple(patterns)

    def test(values: Values) -> bool:
        value = values.get(attr)
        if type(value) is not str or len(value) > MAX_REGEX_INPUT:  # type: ignore[arg-type]
            return False
        return any(search(value) is not None for search in searches) is not negate  # type: ignore[arg-type]

    return test


def _numbers(operator: str, operands: list[Any]) -> list[float]:
    out = []
    for v in operands:
        number = None if type(v) is bool else _number(v)
        if number is None or not math.isfinite(number):
            raise InvalidCondition(f"{operator} needs numeric values, got {v!r}")
        out.append(number)
    if not out:
        raise InvalidCondition(f"{operator} needs at least one value")
    return out


def _compare(name: str, convert: Callable[[object], Any], pick: Callable[..., Any], cmp: str) -> Builder:
    """A builder for ordered comparisons against the min/max operand ("any of" semantics)."""
    import operator as op

    compare: Callable[[Any, Any], bool] = getattr(op, cmp)

    def build(attr: str, operands: list[Any], negate: bool, fold: bool) -> Test:
        parsed = _operands_for(name, operands)
        bound = pick(parsed)

        def test(values: Values) -> bool:
            value = convert(values.get(attr))
            if value is None:
                return False
            return compare(value, bound) is not negate

        return test

    return build


def _operands_for(name: str, operands: list[Any]) -> list[Any]:
    if name.startswith("semver"):
        keys = [parse_semver(v) if type(v) is str else None for v in operands]
        if not keys or any(k is None for k in keys):
            raise InvalidCondition(f"{name} needs semantic versions, got {operands!r}")
        return keys
    if name in ("before", "after"):
        dates = [None if type(v) is bool else parse_date(v) for v in operands]
        if not dates or any(d is None for d in dates):
            raise InvalidCondition(f"{name} needs ISO-8601 dates or epoch seconds, got {operands!r}")
        return dates
    return _numbers(name, operands)


def _semver_value(value: object) -> SemverKey | None:
    return parse_semver(value) if type(value) is str else None  # type: ignore[arg-type]


def _semver_eq(attr: str, operands: list[Any], negate: bool, fold: bool) -> Test:
    keys = frozenset(_operands_for("semver_eq", operands))

    def test(values: Values) -> bool:
        key = _semver_value(values.get(attr))
        if key is None:
            return False
        return (key in keys) is not negate

    return test


def _exists(attr: str, operands: list[Any], negate: bool, fold: bool) -> Test:
    def test(values: Values) -> bool:
        return (attr in values) is not negate

    return test


OPERATORS: Final[Mapping[str, Builder]] = {
    "equals": _in,
    "in": _in,
    "contains": _string_op(_contains, "contains"),
    "starts_with": _string_op(str.startswith, "starts_with"),
    "ends_with": _string_op(str.endswith, "ends_with"),
    "matches": _matches,
    "gt": _compare("gt", _number, min, "gt"),
    "gte": _compare("gte", _number, min, "ge"),
    "lt": _compare("lt", _number, max, "lt"),
    "lte": _compare("lte", _number, max, "le"),
    "semver_eq": _semver_eq,
    "semver_gt": _compare("semver_gt", _semver_value, min, "gt"),
    "semver_gte": _compare("semver_gte", _semver_value, min, "ge"),
    "semver_lt": _compare("semver_lt", _semver_value, max, "lt"),
    "semver_lte": _compare("semver_lte", _semver_value, max, "le"),
    "before": _compare("before", parse_date, max, "lt"),
    "after": _compare("after", parse_date, min, "gt"),
    "exists": _exists,
}


def _in_segment(operands: list[Any], negate: bool, segments: Mapping[str, Segment]) -> Test:
    resolved = []
    for key in operands:
        segment = segments.get(key) if type(key) is str else None
        if segment is None:
            raise InvalidCondition(f"in_segment names unknown segment {key!r}")
        resolved.append(segment)
    members = tuple(resolved)

    def test(values: Values) -> bool:
        return any(segment.contains(values) for segment in members) is not negate

    return test


def compile_condition(raw: Mapping[str, Any], segments: Mapping[str, Segment]) -> Condition:
    """Compile one schema-valid condition; raises InvalidCondition for anything unusable."""
    operator = raw["operator"]
    attribute = raw.get("attribute")
    operands = list(raw.get("values", ()))
    negate = bool(raw.get("negate", False))
    fold = bool(raw.get("case_insensitive", False))
    if operator == "in_segment":
        test = _in_segment(operands, negate, segments)
    else:
        builder = OPERATORS.get(operator)
        if builder is None:
            raise InvalidCondition(f"unknown operator {operator!r}")
        if attribute is None:
            raise InvalidCondition(f"operator {operator!r} needs an attribute")
        if not operands and operator != "exists":
            raise InvalidCondition(f"operator {operator!r} needs at least one value")
        test = builder(attribute, operands, negate, fold)
    return Condition(attribute, operator, negate, test, raw)


def fuse(conditions: tuple[Condition, ...]) -> Test:
    """All conditions as one callable, unrolled for the common short cases."""
    tests = tuple(c.test for c in conditions)
    if not tests:
        return _always
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        a, b = tests
        return lambda values: a(values) and b(values)
    if len(tests) == 3:
        a, b, c = tests
        return lambda values: a(values) and b(values) and c(values)

    def all_hold(values: Values) -> bool:
        for test in tests:
            if not test(values):
                return False
        return True

    return all_hold


def _always(values: Values) -> bool:
    return True
