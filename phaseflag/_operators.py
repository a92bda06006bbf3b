"""Condition operators: each compiles its operands once into a small predicate.

Semantics shared by every operator except ``exists`` and ``in_segment``: a missing
attribute, or a value of the wrong type, makes the condition false whether or not it
is negated; ``negate`` flips only a real comparison (for ``in``/``equals`` the right
types are those the operands have: ``plan=3`` never matches ``not in ["free"]``).
Multi-valued operands mean "any of": ``in``/``equals`` any value, ``gt`` greater than
some value (the minimum), ``lt`` less than some value (the maximum), and so on.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Final

from ._model import Condition, Segment, Test, Values
from ._regex import RegexError, compile_regex

__all__ = [
    "MAX_REGEX_INPUT",
    "MAX_REGEX_LENGTH",
    "OPERATORS",
    "InvalidCondition",
    "compile_condition",
    "match_rules",
    "parse_date",
    "parse_semver",
]

#: Longest regex pattern accepted in a ``matches`` condition.
MAX_REGEX_LENGTH: Final = 256
#: Longest context string a regex is run against; longer values make ``matches`` false.
MAX_REGEX_INPUT: Final = 512

_MISSING: Final[Any] = None  # context values never hold None: it means "absent"


class InvalidCondition(Exception):
    """A condition cannot be compiled; its flag is isolated (INVALID_FLAG)."""


# -- operand parsing -----------------------------------------------------------------------

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


def _number(value: object) -> float | None:
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


# -- operator builders ---------------------------------------------------------------------
# Each builder gets (attribute, operands, negate, case_insensitive) and returns a Test.

Builder = Callable[[str, list[Any], bool, bool], Test]


def _strings(operator: str, operands: list[Any], fold: bool) -> tuple[str, ...]:
    if not all(type(v) is str for v in operands):
        raise InvalidCondition(f"{operator} needs string values")
    return tuple(v.casefold() for v in operands) if fold else tuple(operands)


_NOTHING: Final[frozenset[Any]] = frozenset()


# Equal operand sets are shared between conditions (large rulesets repeat the same
# lists: plans, countries). Bounded; a race only costs a missed share.
_SHARED_SETS: dict[frozenset[Any], frozenset[Any]] = {}


def _shared(values: frozenset[Any]) -> frozenset[Any]:
    if len(values) > 64:
        return values
    found = _SHARED_SETS.get(values)
    if found is None:
        if len(_SHARED_SETS) >= 4096:
            _SHARED_SETS.clear()
        _SHARED_SETS[values] = found = values
    return found


def _in(attr: str, operands: list[Any], negate: bool, fold: bool) -> Test:
    strs = _shared(frozenset(_strings("in", [v for v in operands if type(v) is str], fold)))
    bools = frozenset(v for v in operands if type(v) is bool) or _NOTHING
    nums = frozenset(v for v in operands if type(v) in (int, float)) or _NOTHING
    if not bools and not nums and not fold and not negate:
        # The common case (plan in [...]): a non-str value can never be in a set of str.
        def in_strings(values: Values) -> bool:
            return values.get(attr) in strs

        return in_strings

    def test(values: Values) -> bool:
        value: Any = values.get(attr)
        kind = type(value)
        group: frozenset[Any]
        if kind is str:
            group, value = strs, (value.casefold() if fold else value)
        elif kind is bool:
            group = bools
        elif kind is int or kind is float:
            group = nums
        else:
            return False
        # A type that no operand has is the wrong type: false, negated or not.
        return (value in group) is not negate if group else False

    return test


def _string_op(method: Callable[[str, tuple[str, ...]], bool], name: str) -> Builder:
    def build(attr: str, operands: list[Any], negate: bool, fold: bool) -> Test:
        needles = _strings(name, operands, fold)

        def test(values: Values) -> bool:
            value = values.get(attr)
            if type(value) is not str:
                return False
            return method(value.casefold() if fold else value, needles) is not negate

        return test

    return build


def _contains(value: str, needles: tuple[str, ...]) -> bool:
    return any(needle in value for needle in needles)


def _matches(attr: str, operands: list[Any], negate: bool, fold: bool) -> Test:
    patterns = []
    for pattern in _strings("matches", operands, False):
        if len(pattern) > MAX_REGEX_LENGTH:
            raise InvalidCondition(f"regex longer than {MAX_REGEX_LENGTH} characters")
        try:
            patterns.append(compile_regex(pattern, ignore_case=fold))
        except RegexError as exc:
            raise InvalidCondition(f"bad regex {pattern!r}: {exc}") from None
    searches = tuple(patterns)

    def test(values: Values) -> bool:
        value = values.get(attr)
        if type(value) is not str or len(value) > MAX_REGEX_INPUT:
            return False
        return any(search(value) for search in searches) is not negate

    return test


def _numbers(operator: str, operands: list[Any]) -> list[float]:
    out = []
    for v in operands:
        number = None if type(v) is bool else _number(v)
        if number is None or (type(number) is float and not math.isfinite(number)):
            raise InvalidCondition(f"{operator} needs numeric values, got {v!r}")
        out.append(number)
    if not out:
        raise InvalidCondition(f"{operator} needs at least one value")
    return out


def _compare(name: str, kind: str, pick: Callable[..., Any], cmp: str) -> Builder:
    """A builder for ordered comparisons against the min/max operand ("any of" semantics).

    The context value is converted inline for the common types (one call fewer on
    the hot path); ``compare`` is the C-level ``operator`` function.
    """
    compare: Callable[[Any, Any], bool] = getattr(operator, cmp)

    def build(attr: str, operands: list[Any], negate: bool, fold: bool) -> Test:
        bound = pick(_operands_for(name, operands))
        if kind == "number":

            def number_test(values: Values) -> bool:
                value = values.get(attr)
                kind_ = type(value)
                if kind_ is not int and kind_ is not float:
                    if kind_ is not str:
                        return False
                    value = _number(value)
                    if value is None:
                        return False
                return compare(value, bound) is not negate

            return number_test
        if kind == "semver":

            def semver_test(values: Values) -> bool:
                value = values.get(attr)
                if type(value) is not str:
                    return False
                key = memo_get(value, _UNSEEN)
                if key is _UNSEEN:
                    key = semver_of(value)
                return key is not None and compare(key, bound) is not negate

            return semver_test

        def date_test(values: Values) -> bool:
            value = parse_date(values.get(attr))
            return value is not None and compare(value, bound) is not negate

        return date_test

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
            raise InvalidCondition(
                f"{name} needs ISO-8601 dates or epoch seconds, got {operands!r}"
            )
        return dates
    return _numbers(name, operands)


def _semver_value(value: object) -> SemverKey | None:
    return semver_of(value) if type(value) is str else None


# Context versions parsed so far: a bounded memo of a pure function (a plain dict,
# because a dict lookup costs a third of an lru_cache call on the read path).
_SEMVER_MEMO: dict[str, SemverKey | None] = {}
_SEMVER_MEMO_SIZE: Final = 4096
_UNSEEN: Final[Any] = object()
memo_get = _SEMVER_MEMO.get


def semver_of(text: str) -> SemverKey | None:
    """``parse_semver`` through the read-path memo."""
    key = _SEMVER_MEMO.get(text, _UNSEEN)
    if key is _UNSEEN:
        key = parse_semver(text)
        if len(_SEMVER_MEMO) >= _SEMVER_MEMO_SIZE:
            _SEMVER_MEMO.clear()
        _SEMVER_MEMO[text] = key
    return key  # type: ignore[no-any-return]


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
    "gt": _compare("gt", "number", min, "gt"),
    "gte": _compare("gte", "number", min, "ge"),
    "lt": _compare("lt", "number", max, "lt"),
    "lte": _compare("lte", "number", max, "le"),
    "semver_eq": _semver_eq,
    "semver_gt": _compare("semver_gt", "semver", min, "gt"),
    "semver_gte": _compare("semver_gte", "semver", min, "ge"),
    "semver_lt": _compare("semver_lt", "semver", max, "lt"),
    "semver_lte": _compare("semver_lte", "semver", max, "le"),
    "before": _compare("before", "date", max, "lt"),
    "after": _compare("after", "date", min, "gt"),
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


def _identity(condition: Condition) -> str:
    source = condition.source
    return json.dumps(
        [
            condition.attribute,
            condition.operator,
            source.get("values", []),
            bool(source.get("negate")),
            bool(source.get("case_insensitive")),
        ],
        sort_keys=True,
        default=str,
    )


def match_rules(rules: tuple[tuple[Condition, ...], ...]) -> Callable[[Values], int] | None:
    """One function answering "index of the first rule whose conditions all hold, or -1".

    Worth it only when rules share identical conditions: each shared condition is then
    evaluated at most once per read (common-subexpression elimination). Returns None
    when nothing is shared, and the evaluator walks the rules' fused tests instead.
    The generated source contains only generated identifiers; attribute names and
    operands stay in the namespace as values, never in the code.
    """
    ids: dict[str, int] = {}
    tests: list[Test] = []
    layout: list[list[int]] = []
    for conditions in rules:
        row = []
        for condition in conditions:
            key = _identity(condition)
            if key not in ids:
                ids[key] = len(tests)
                tests.append(condition.test)
            row.append(ids[key])
        layout.append(row)
    uses = [0] * len(tests)
    for row in layout:
        for index in set(row):
            uses[index] += 1
    shared = sorted(i for i, n in enumerate(uses) if n > 1)
    if not shared or len(rules) > 1000:
        return None
    lines = ["def match(values):"]
    lines.append("    " + " = ".join(f"c{i}" for i in shared) + " = _U")
    for number, row in enumerate(layout):
        terms = [
            f"(c{i} if c{i} is not _U else (c{i} := t{i}(values)))"
            if uses[i] > 1
            else f"t{i}(values)"
            for i in row
        ]
        lines.append(f"    if {' and '.join(terms)}:" if terms else "    if True:")
        lines.append(f"        return {number}")
    lines.append("    return -1")
    namespace: dict[str, Any] = {"_U": _UNSEEN, **{f"t{i}": t for i, t in enumerate(tests)}}
    exec(compile("\n".join(lines), "<phaseflag rules>", "exec"), namespace)  # noqa: S102
    matcher: Callable[[Values], int] = namespace["match"]
    return matcher
