"""Condition operators: each compiles its operands once into a small predicate.

Semantics shared by every operator except ``exists`` and ``in_segment``: a missing
attribute, or a value of the wrong type, makes the condition false whether or not it
is negated; ``negate`` flips only a real comparison (for ``in``/``equals`` the right
types are those the operands have: ``plan=3`` never matches ``not in ["free"]``).
Multi-valued operands mean "any of": ``in``/``equals`` any value, ``gt`` greater than
some value (the minimum), ``lt`` less than some value (the maximum), and so on.

Operand parsing lives in ``_operands``, rule matching and segment membership in
``_matcher``; the operators the generated reads inline (``_codegen``) also hand back
their compiled operand.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Mapping
from typing import Any, Final

from ._matcher import segment_contains
from ._model import Condition, Segment, Test, Values
from ._operands import (
    UNSEEN,
    InvalidCondition,
    comparable_operands,
    parse_date,
    parse_semver,
    semver_memo_get,
    semver_of,
    semver_value,
    shared,
    strings,
    to_number,
)
from ._regex import RegexError, compile_regex

#: A condition's compact JSON, kept on the compiled Condition instead of its parsed dict.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode

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
MAX_REGEX_INPUT: Final = 512

# -- operator builders ---------------------------------------------------------------------
# Each builder gets (attribute, operands, negate, case_insensitive) and returns the Test
# and, for the operators the generated reads inline (_codegen), the compiled operand.

Built = tuple[Test, Any]
Builder = Callable[[str, list[Any], bool, bool], Built]


_NOTHING: Final[frozenset[Any]] = frozenset()


def _in(attr: str, operands: list[Any], negate: bool, fold: bool) -> Built:
    strs = shared(frozenset(strings("in", [v for v in operands if type(v) is str], fold)))
    bools = frozenset(v for v in operands if type(v) is bool) or _NOTHING
    nums = frozenset(v for v in operands if type(v) in (int, float)) or _NOTHING
    if not bools and not nums and not fold and not negate:
        # The common case (plan in [...]): a non-str value can never be in a set of str.
        def in_strings(values: Values) -> bool:
            return values.get(attr) in strs

        return in_strings, strs

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

    return test, None


def _string_op(method: Callable[[str, tuple[str, ...]], bool], name: str) -> Builder:
    def build(attr: str, operands: list[Any], negate: bool, fold: bool) -> Built:
        needles = strings(name, operands, fold)

        def test(values: Values) -> bool:
            value = values.get(attr)
            if type(value) is not str:
                return False
            return method(value.casefold() if fold else value, needles) is not negate

        return test, None

    return build


def _contains(value: str, needles: tuple[str, ...]) -> bool:
    return any(needle in value for needle in needles)


def _matches(attr: str, operands: list[Any], negate: bool, fold: bool) -> Built:
    patterns = []
    for pattern in strings("matches", operands, False):
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

    return test, None


def _compare(name: str, kind: str, pick: Callable[..., Any], cmp: str) -> Builder:
    """A builder for ordered comparisons against the min/max operand ("any of" semantics).

    The context value is converted inline for the common types (one call fewer on
    the hot path); ``compare`` is the C-level ``operator`` function.
    """
    compare: Callable[[Any, Any], bool] = getattr(operator, cmp)

    def build(attr: str, operands: list[Any], negate: bool, fold: bool) -> Built:
        bound = pick(comparable_operands(name, operands))
        if kind == "number":

            def number_test(values: Values) -> bool:
                value = values.get(attr)
                kind_ = type(value)
                if kind_ is not int and kind_ is not float:
                    if kind_ is not str:
                        return False
                    value = to_number(value)
                    if value is None:
                        return False
                return compare(value, bound) is not negate

            return number_test, bound
        if kind == "semver":

            def semver_test(values: Values) -> bool:
                value = values.get(attr)
                if type(value) is not str:
                    return False
                key = semver_memo_get(value, UNSEEN)
                if key is UNSEEN:
                    key = semver_of(value)
                return key is not None and compare(key, bound) is not negate

            return semver_test, bound

        def date_test(values: Values) -> bool:
            value = parse_date(values.get(attr))
            return value is not None and compare(value, bound) is not negate

        return date_test, bound

    return build


def _semver_eq(attr: str, operands: list[Any], negate: bool, fold: bool) -> Built:
    keys = frozenset(comparable_operands("semver_eq", operands))

    def test(values: Values) -> bool:
        key = semver_value(values.get(attr))
        if key is None:
            return False
        return (key in keys) is not negate

    return test, None


def _exists(attr: str, operands: list[Any], negate: bool, fold: bool) -> Built:
    def test(values: Values) -> bool:
        return (attr in values) is not negate

    return test, None


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


def _in_segment(operands: list[Any], negate: bool, segments: Mapping[str, Segment]) -> Built:
    resolved = []
    for key in operands:
        segment = segments.get(key) if type(key) is str else None
        if segment is None:
            raise InvalidCondition(f"in_segment names unknown segment {key!r}")
        resolved.append(segment)
    members = tuple(resolved)

    def test(values: Values) -> bool:
        for segment in members:
            if segment_contains(segment, values):
                return not negate
        return negate

    return test, members


def compile_condition(raw: Mapping[str, Any], segments: Mapping[str, Segment]) -> Condition:
    """Compile one schema-valid condition; raises InvalidCondition for anything unusable."""
    operator = raw["operator"]
    attribute = raw.get("attribute")
    operands = list(raw.get("values", ()))
    negate = bool(raw.get("negate", False))
    fold = bool(raw.get("case_insensitive", False))
    if operator == "in_segment":
        test, operand = _in_segment(operands, negate, segments)
    else:
        builder = OPERATORS.get(operator)
        if builder is None:
            raise InvalidCondition(f"unknown operator {operator!r}")
        if attribute is None:
            raise InvalidCondition(f"operator {operator!r} needs an attribute")
        if not operands and operator != "exists":
            raise InvalidCondition(f"operator {operator!r} needs at least one value")
        test, operand = builder(attribute, operands, negate, fold)
    return Condition(
        attribute,
        operator,
        negate,
        test,
        _encode(raw),
        operand,
        any_of(attribute, operator, raw, test),
    )


def any_of(
    attribute: str | None, operator: str, raw: Mapping[str, Any], test: Test
) -> Callable[[tuple[Any, ...]], bool] | None:
    """The condition over a list attribute: it holds when any element satisfies the plain
    comparison (``contains`` on a list tests membership); ``negate`` flips that, and as
    for a scalar of the wrong type, a list with no element of the operands' type makes it
    false either way. So a one-element list behaves exactly like its element."""
    if attribute is None or operator in ("exists", "in_segment"):
        return None
    negate = bool(raw.get("negate", False))
    if operator == "contains":
        fold = bool(raw.get("case_insensitive", False))
        needles = frozenset(strings("contains", list(raw.get("values", ())), fold))

        def members(items: tuple[Any, ...]) -> bool:
            texts = [i.casefold() if fold else i for i in items if type(i) is str]
            if not texts:
                return False
            return any(t in needles for t in texts) is not negate

        return members
    positive = test
    if negate:  # the comparison without negate, to tell "no match" from "wrong type"
        positive = OPERATORS[operator](
            attribute, list(raw.get("values", ())), False, bool(raw.get("case_insensitive"))
        )[0]

    def elements(items: tuple[Any, ...]) -> bool:
        singles = [{attribute: item} for item in items]
        if not negate:
            return any(test(one) for one in singles)
        return any(test(one) for one in singles) and not any(positive(one) for one in singles)

    return elements
