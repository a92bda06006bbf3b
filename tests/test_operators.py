"""Every condition operator and its edges, evaluated end to end through a one-rule flag.

The shared rule (``phaseflag/_operators.py``): a missing attribute, or a value of a type the
operator cannot compare, makes a condition false whether or not it is negated; ``negate``
flips only a real comparison. Unusable operands isolate the flag (INVALID_FLAG).
"""

from __future__ import annotations

import itertools
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from conftest import CONFORMANCE, require_conformance

from phaseflag._compile import compile_ruleset
from phaseflag._errors import RulesetError
from phaseflag._evaluation import evaluate
from phaseflag._operators import (
    MAX_REGEX_INPUT,
    MAX_REGEX_LENGTH,
    OPERATORS,
    parse_date,
    parse_semver,
)
from phaseflag.types import ErrorCode, EvaluationContext, Reason

INVALID = "INVALID"
_ABSENT: Any = object()


def _flag(condition: dict[str, Any]) -> dict[str, Any]:
    return {
        "key": "f",
        "type": "boolean",
        "variations": [{"key": "on", "value": True}, {"key": "off", "value": False}],
        "off_variation": "off",
        "default": {"variation": "off"},
        "rules": [{"id": "r", "conditions": [condition], "serve": {"variation": "on"}}],
    }


def holds(
    operator: str,
    operands: list[Any] | None,
    value: Any = _ABSENT,
    *,
    negate: bool = False,
    case_insensitive: bool = False,
    attribute: str = "attr",
) -> bool | str:
    """Whether ``attribute <operator> operands`` holds for a context where it is ``value``.

    Returns INVALID when the flag was isolated at compile time.
    """
    condition: dict[str, Any] = {"attribute": attribute, "operator": operator}
    if operands is not None:
        condition["values"] = operands
    if negate:
        condition["negate"] = True
    if case_insensitive:
        condition["case_insensitive"] = True
    ruleset = compile_ruleset({"schema_version": 1, "flags": [_flag(condition)]})
    attributes = {} if value is _ABSENT else {attribute: value}
    result = evaluate(ruleset, "f", EvaluationContext(attributes=attributes))
    if result.error_code == ErrorCode.INVALID_FLAG:
        return INVALID
    assert result.error_code is None
    return result.variation_key == "on"


ALL_OPERATORS = sorted(OPERATORS)
_SAMPLE_OPERANDS = {
    "gt": [1],
    "gte": [1],
    "lt": [1],
    "lte": [1],
    "semver_eq": ["1.0.0"],
    "semver_gt": ["1.0.0"],
    "semver_gte": ["1.0.0"],
    "semver_lt": ["1.0.0"],
    "semver_lte": ["1.0.0"],
    "before": ["2024-01-01T00:00:00Z"],
    "after": ["2024-01-01T00:00:00Z"],
    "exists": [],
}


class TestSharedRules:
    """Rules every operator follows."""

    def test_every_documented_operator_is_registered(self) -> None:
        """The registry holds exactly the operators of DESIGN.md §4 (in_segment aside)."""
        assert set(OPERATORS) == {
            "equals", "in", "contains", "starts_with", "ends_with", "matches",
            "gt", "gte", "lt", "lte", "semver_eq", "semver_gt", "semver_gte",
            "semver_lt", "semver_lte", "before", "after", "exists",
        }  # fmt: skip

    @pytest.mark.parametrize("operator", [o for o in ALL_OPERATORS if o != "exists"])
    @pytest.mark.parametrize("negate", [False, True])
    def test_missing_attribute_is_false(self, operator: str, negate: bool) -> None:
        """A missing attribute makes the condition false, negated or not."""
        operands = _SAMPLE_OPERANDS.get(operator, ["x"])
        assert holds(operator, operands, negate=negate) is False

    @pytest.mark.parametrize(
        ("operator", "value"),
        [
            pytest.param(operator, value, id=f"{operator}-{type(value).__name__}")
            for operator in ALL_OPERATORS
            if operator != "exists"
            for value in (datetime(2024, 1, 1, tzinfo=timezone.utc), True)
            if not (operator in ("before", "after") and isinstance(value, datetime))
        ],
    )
    @pytest.mark.parametrize("negate", [False, True])
    def test_uncomparable_type_is_false(self, operator: str, negate: bool, value: Any) -> None:
        """A value the operator cannot compare is false, negated or not."""
        operands = _SAMPLE_OPERANDS.get(operator, ["x"])
        assert holds(operator, operands, value, negate=negate) is False

    @pytest.mark.parametrize("operator", ["resembles", "EQUALS", "semver_ne", "regex", "in "])
    def test_unknown_operator_isolates_the_flag(self, operator: str) -> None:
        """An operator phaseflag does not know marks its flag INVALID_FLAG."""
        assert holds(operator, ["x"], "x") == INVALID

    @pytest.mark.parametrize("operator", [o for o in ALL_OPERATORS if o != "exists"])
    def test_operators_need_values(self, operator: str) -> None:
        """Every operator but exists needs at least one operand."""
        assert holds(operator, [], "x") == INVALID
        assert holds(operator, None, "x") == INVALID

    def test_condition_without_attribute_isolates_the_flag(self) -> None:
        """Only in_segment may leave out the attribute."""
        ruleset = compile_ruleset(
            {"schema_version": 1, "flags": [_flag({"operator": "in", "values": ["x"]})]}
        )
        assert ruleset.flags["f"].error == "operator 'in' needs an attribute"


class TestEquality:
    """equals / in: any-of, exact types, case folding."""

    @pytest.mark.parametrize("operator", ["equals", "in"])
    @pytest.mark.parametrize(
        ("operands", "value", "expected"),
        [
            (["pro"], "pro", True),
            (["pro", "enterprise"], "enterprise", True),
            (["pro"], "Pro", False),
            (["pro"], "pro ", False),
            ([1], 1, True),
            ([1], 1.0, True),
            ([1.5], 1.5, True),
            ([1], 2, False),
            ([True], True, True),
            ([False], False, True),
            ([1], True, False),
            ([0], False, False),
            ([True], 1, False),
            ([False, True], 1, False),
            ([1], "1", False),
            (["1"], 1, False),
            (["a", 1, True], "a", True),
            (["a", 1, True], 1, True),
            (["a", 1, True], True, True),
            ([""], "", True),
        ],
    )
    def test_matches(self, operator: str, operands: list[Any], value: Any, expected: bool) -> None:
        """Membership compares exact JSON types: bools are not numbers, strings not numbers."""
        assert holds(operator, operands, value) is expected

    @pytest.mark.parametrize(
        ("operands", "value", "expected"),
        [
            (["pro"], "free", True),
            (["pro"], "pro", False),
            ([1, 2], 3, True),
            ([True], False, True),
            (["pro"], 3, False),  # wrong type for string operands: false even when negated
            (["pro"], False, False),
            ([1], "x", False),
            ([1], True, False),
        ],
    )
    def test_negated(self, operands: list[Any], value: Any, expected: bool) -> None:
        """Negation flips membership only for a value of a type the operands have."""
        assert holds("in", operands, value, negate=True) is expected

    @pytest.mark.parametrize(
        ("operands", "value", "expected"),
        [
            (["PRO"], "pro", True),
            (["pro"], "PRO", True),
            (["straße"], "STRASSE", True),
            (["ǅ"], "ǆ", True),
            (["pro"], "pr0", False),
        ],
    )
    def test_case_insensitive(self, operands: list[str], value: str, expected: bool) -> None:
        """case_insensitive compares casefolded strings (full Unicode folding)."""
        assert holds("in", operands, value, case_insensitive=True) is expected
        assert holds("in", operands, value, case_insensitive=True, negate=True) is not expected


class TestStringOperators:
    """contains / starts_with / ends_with."""

    @pytest.mark.parametrize(
        ("operator", "operands", "value", "expected"),
        [
            ("contains", ["@corp."], "ann@corp.example", True),
            ("contains", ["x", "@corp."], "ann@corp.example", True),
            ("contains", ["@CORP."], "ann@corp.example", False),
            ("contains", [""], "anything", True),
            ("starts_with", ["emp-"], "emp-7", True),
            ("starts_with", ["emp-"], "xemp-7", False),
            ("starts_with", ["a", "emp-"], "emp-7", True),
            ("starts_with", ["Emp-"], "emp-7", False),
            ("ends_with", ["@example.com"], "bob@example.com", True),
            ("ends_with", ["@example.com"], "bob@example.com.evil", False),
            ("ends_with", ["🚩"], "flag 🚩", True),
        ],
    )
    def test_matches(self, operator: str, operands: list[str], value: str, expected: bool) -> None:
        """Substring operators are case-sensitive and match any operand."""
        assert holds(operator, operands, value) is expected
        assert holds(operator, operands, value, negate=True) is not expected

    @pytest.mark.parametrize("operator", ["contains", "starts_with", "ends_with"])
    def test_case_insensitive(self, operator: str) -> None:
        """case_insensitive casefolds both sides."""
        assert holds(operator, ["STRASSE"], "straße", case_insensitive=True) is True

    @pytest.mark.parametrize("operator", ["contains", "starts_with", "ends_with"])
    @pytest.mark.parametrize("value", [99, 1.5, True, False])
    @pytest.mark.parametrize("negate", [False, True])
    def test_non_string_value_is_false(self, operator: str, value: Any, negate: bool) -> None:
        """A non-string context value never matches, negated or not (no str() coercion)."""
        assert holds(operator, [str(value), "true", "99"], value, negate=negate) is False

    @pytest.mark.parametrize("operator", ["contains", "starts_with", "ends_with", "matches"])
    @pytest.mark.parametrize("operands", [[1], [True], ["a", 2]])
    def test_non_string_operands_isolate(self, operator: str, operands: list[Any]) -> None:
        """String operators need string operands."""
        assert holds(operator, operands, "a") == INVALID


class TestMatches:
    """matches: regex search, limits, catastrophic patterns."""

    @pytest.mark.parametrize(
        ("pattern", "value", "expected"),
        [
            ("b", "abc", True),  # search, not fullmatch
            ("^b", "abc", False),
            ("^[A-Za-z]+", "matchThisName", True),
            ("^[A-Za-z]+", "_Don't match", False),
            (r"^\d{3}-\d{4}$", "555-1234", True),
            ("(foo|bar)+", "xbarfoo", True),
            ("(ab)+c", "ababc", True),
            ("[(a+)]+", "(", True),
            ("ü", "Grüße", True),
        ],
    )
    def test_search(self, pattern: str, value: str, expected: bool) -> None:
        """A pattern matches when re.search finds it anywhere in the value."""
        assert holds("matches", [pattern], value) is expected
        assert holds("matches", [pattern], value, negate=True) is not expected

    def test_any_pattern(self) -> None:
        """Several patterns mean any of them."""
        assert holds("matches", ["^x", "z$"], "abz") is True

    def test_case_insensitive(self) -> None:
        """case_insensitive compiles the pattern with IGNORECASE."""
        assert holds("matches", ["^admin"], "ADMIN-1") is False
        assert holds("matches", ["^admin"], "ADMIN-1", case_insensitive=True) is True

    @pytest.mark.parametrize("pattern", ["(", "[a-", "a{2,1}", "*a", "a{1001}"])
    def test_bad_regex_isolates(self, pattern: str) -> None:
        """A pattern that does not compile isolates the flag."""
        assert holds("matches", [pattern], "a") == INVALID

    def test_pattern_length_limit(self) -> None:
        """Patterns up to MAX_REGEX_LENGTH compile; one character more isolates the flag."""
        assert holds("matches", ["a" * MAX_REGEX_LENGTH], "a" * MAX_REGEX_LENGTH) is True
        assert holds("matches", ["a" * (MAX_REGEX_LENGTH + 1)], "a") == INVALID

    @pytest.mark.parametrize(
        "pattern",
        [
            "^(a+)+$",
            "(a*)*",
            "(?:a+)+b",
            "((a+))+",
            "((a+)b)*",
            "((a)+)+",
            "(a+){2,}",
            "(a+){1,100}",
            r"^(\w+\s?)+$",
            "([a-z]+)*@",
            r"(\d*)*",
        ],
    )
    def test_nested_quantifiers_compile(self, pattern: str) -> None:
        """Nested quantifiers are safe on RE2 (linear-time matching): they compile and match."""
        assert holds("matches", [pattern], "a") != INVALID

    @pytest.mark.parametrize("pattern", [r"(a)\1", "(?P<x>a)(?P=x)", "(?=a)", "(?>a+)", "a++"])
    def test_backreferences_isolate(self, pattern: str) -> None:
        """Backreferences, lookaround, atomic groups, possessive quantifiers: RE2 has none."""
        assert holds("matches", [pattern], "aa") == INVALID

    @pytest.mark.parametrize("pattern", ["(ab)+", "a+b+", "(a|b)*c", "(a+)?", r"\(a+\)+", "[+*]+"])
    def test_safe_repetitions_compile(self, pattern: str) -> None:
        """Repetition without nesting is allowed."""
        assert holds("matches", [pattern], "zzz") != INVALID

    def test_input_length_limit(self) -> None:
        """Values longer than MAX_REGEX_INPUT never match, negated or not; at the limit they do."""
        at_limit = "a" * MAX_REGEX_INPUT
        assert holds("matches", ["a$"], at_limit) is True
        assert holds("matches", ["a$"], at_limit + "a") is False
        assert holds("matches", ["zzz"], at_limit + "a", negate=True) is False


class TestNumeric:
    """gt / gte / lt / lte: numbers and numeric strings."""

    @pytest.mark.parametrize(
        ("operator", "operand", "below", "equal", "above"),
        [
            ("gt", 100, False, False, True),
            ("gte", 100, False, True, True),
            ("lt", 100, True, False, False),
            ("lte", 100, True, True, False),
        ],
    )
    def test_boundaries(
        self, operator: str, operand: int, below: bool, equal: bool, above: bool
    ) -> None:
        """Each comparison is strict or not exactly as its name says, for ints and floats."""
        assert holds(operator, [operand], 99) is below
        assert holds(operator, [operand], 99.999) is below
        assert holds(operator, [operand], 100) is equal
        assert holds(operator, [operand], 100.0) is equal
        assert holds(operator, [operand], 100.001) is above
        assert holds(operator, [float(operand)], 101) is above

    @pytest.mark.parametrize("text", ["42", " 42 ", "42.0", "4.2e1", "+42", "042", "42.", "420e-1"])
    def test_numeric_strings_are_parsed(self, text: str) -> None:
        """A context string that spells a number compares as that number."""
        assert holds("gte", [42], text) is True
        assert holds("gt", [42], text) is False

    @pytest.mark.parametrize(
        "text",
        ["", "abc", "42abc", "nan", "NaN", "inf", "-Infinity", "1_000", "١٢", "0x10", "1" * 64],
    )
    @pytest.mark.parametrize("negate", [False, True])
    def test_non_numeric_strings_are_false(self, text: str, negate: bool) -> None:
        """Strings that float() reads but no other SDK would (nan, inf, 1_000, non-ASCII
        digits) and non-numbers are not numbers: false, negated or not."""
        assert holds("gt", [-1e300], text, negate=negate) is False
        assert holds("lt", [1e300], text, negate=negate) is False

    def test_multiple_operands_mean_any(self) -> None:
        """gt is 'greater than some operand' (the minimum), lt 'less than some' (the maximum)."""
        assert holds("gt", [10, 20], 15) is True
        assert holds("gt", [10, 20], 5) is False
        assert holds("lt", [10, 20], 15) is True
        assert holds("lt", [10, 20], 25) is False

    def test_numeric_string_operands(self) -> None:
        """Operands may be numeric strings too."""
        assert holds("gt", ["100"], 101) is True

    @pytest.mark.parametrize("operand", ["abc", True, "nan", "inf", "", "1_0"])
    def test_bad_operands_isolate(self, operand: Any) -> None:
        """A non-numeric operand isolates the flag."""
        assert holds("gt", [operand], 1) == INVALID

    def test_huge_integers(self) -> None:
        """Integers beyond the float range compare exactly and never raise."""
        assert holds("gt", [10**30], 10**30 + 1) is True
        assert holds("lt", [10**400], 5) is True
        assert holds("gt", [5], 10**400) is True

    def test_negated(self) -> None:
        """negate flips a real comparison."""
        assert holds("gt", [10], 5, negate=True) is True
        assert holds("gt", [10], 50, negate=True) is False

    def test_infinities_and_nan_in_the_context(self) -> None:
        """A float attribute is compared as IEEE does: inf is large; NaN compares false,
        so a negated comparison with NaN holds (decided: NaN is still a float)."""
        assert holds("gt", [1e308], float("inf")) is True
        assert holds("gt", [0], float("nan")) is False
        assert holds("lte", [0], float("nan")) is False
        assert holds("gt", [0], float("nan"), negate=True) is True


SEMVER_ORDER = [
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.1.0",
    "1.10.0",
    "2.0.0-0",
    "2.0.0-0.a",
    "2.0.0-a",
    "2.0.0",
]


class TestSemver:
    """semver_*: SemVer 2.0 precedence, including pre-releases."""

    def test_spec_order_through_parse_semver(self) -> None:
        """parse_semver keys sort in SemVer 2.0 precedence order (spec §11 example included)."""
        keys = [parse_semver(v) for v in SEMVER_ORDER]
        assert all(k is not None for k in keys)
        assert sorted(keys) == keys  # type: ignore[type-var]
        assert len(set(keys)) == len(keys)

    @pytest.mark.parametrize(("low", "high"), list(itertools.combinations(SEMVER_ORDER, 2)))
    def test_pairwise_operators(self, low: str, high: str) -> None:
        """For every ordered pair every semver operator answers as precedence says."""
        assert holds("semver_lt", [high], low) is True
        assert holds("semver_lte", [high], low) is True
        assert holds("semver_gt", [low], high) is True
        assert holds("semver_gte", [low], high) is True
        assert holds("semver_gt", [high], low) is False
        assert holds("semver_eq", [high], low) is False

    @pytest.mark.parametrize(
        ("a", "b"),
        [
            ("2.0.0", "2.0.0"),
            ("2.0", "2.0.0"),
            ("2", "2.0.0"),
            ("2.0.0+build.5", "2.0.0"),
            ("2.0.0-rc+build", "2.0.0-rc"),
            ("2-rc", "2.0.0-rc"),
            ("v2.0.0", "2.0.0"),
        ],
    )
    def test_equal_versions(self, a: str, b: str) -> None:
        """Missing minor/patch are zero, build metadata is ignored, a leading v is allowed."""
        for value, operand in ((a, b), (b, a)):
            assert holds("semver_eq", [operand], value) is True
            assert holds("semver_gte", [operand], value) is True
            assert holds("semver_lte", [operand], value) is True
            assert holds("semver_lt", [operand], value) is False

    @pytest.mark.parametrize(
        "text",
        ["02.0.0", "2.0.0.0", "1.0.0-01", "1.0.0-", "1.0.0+", "1.0.0-a..b", "", "x", "1.٢.0"],
    )
    def test_invalid_versions(self, text: str) -> None:
        """Leading zeros, four parts, empty identifiers and non-ASCII digits are not SemVer:
        false as a context value (negated too), INVALID_FLAG as an operand."""
        assert parse_semver(text) is None
        assert holds("semver_gte", ["0.0.0"], text) is False
        assert holds("semver_lt", ["99.0.0"], text, negate=True) is False
        assert holds("semver_eq", [text or "x"], "1.0.0") == INVALID

    def test_long_versions_are_not_versions(self) -> None:
        """Versions over 256 characters are refused without parsing."""
        assert parse_semver("1.0.0-" + "a" * 300) is None

    @pytest.mark.parametrize("value", [2, 2.0, True])
    def test_non_string_values(self, value: Any) -> None:
        """A version must be a string: 2 is not '2.0.0'."""
        assert holds("semver_eq", ["2.0.0"], value) is False
        assert holds("semver_eq", ["2.0.0"], value, negate=True) is False

    @pytest.mark.parametrize("operand", [2, True])
    def test_non_string_operands_isolate(self, operand: Any) -> None:
        """Operands must be version strings."""
        assert holds("semver_gt", [operand], "3.0.0") == INVALID

    def test_any_of_operands(self) -> None:
        """semver_eq matches any operand; semver_gt compares against the lowest."""
        assert holds("semver_eq", ["1.0.0", "2.0.0"], "2.0") is True
        assert holds("semver_gt", ["3.0.0", "1.0.0"], "2.0.0") is True
        assert holds("semver_eq", ["1.0.0"], "1.0.1", negate=True) is True


EPOCH_2024 = 1_704_067_200  # 2024-01-01T00:00:00Z


class TestDates:
    """before / after: ISO-8601 strings with offsets, aware datetimes, epoch seconds."""

    @pytest.mark.parametrize(
        "text",
        [
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00.000Z",
            "2024-01-01T00:00:00+00:00",
            "2024-01-01T01:00:00+01:00",
            "2023-12-31T17:00:00-07:00",
            "2024-01-01T05:30:00+0530",
            "2024-01-01T02:00+02",
            "2024-01-01t00:00:00z",
            "2024-01-01 00:00:00Z",
            "2024-01-01T00:00:00",  # no offset: UTC
            "2024-01-01T00:00",
            "2024-01-01",  # a date alone: midnight UTC
            "1704067200",  # digits: epoch seconds
            " 2024-01-01T00:00:00Z ",
        ],
    )
    def test_iso_forms(self, text: str) -> None:
        """Every accepted form of 2024-01-01T00:00:00Z parses to the same instant."""
        assert parse_date(text) == EPOCH_2024

    def test_fractions(self) -> None:
        """Fractional seconds of any length are read to the microsecond."""
        assert parse_date("2024-01-01T00:00:00.5Z") == EPOCH_2024 + 0.5
        assert parse_date("2024-01-01T00:00:00,25Z") == EPOCH_2024 + 0.25
        assert parse_date("2024-01-01T00:00:00.123456789Z") == pytest.approx(EPOCH_2024 + 0.123456)

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "yesterday",
            "2024-01-01X00:00:00Z",  # fromisoformat would accept any separator
            "20240101T000000",  # basic format: Python 3.11 only, so refused everywhere
            "2024-W01-1",
            "2024-001",
            "2024-13-01",
            "2024-02-30",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:60Z",
            "2024-01-01T00:00:00+25:00",
            "2024-01-01T00:00:00+01:60",
            "2024-01-01Z",
            "1e9",
            "٢٠٢٤-01-01",
            "x" * 100,
        ],
    )
    def test_not_dates(self, text: str) -> None:
        """Other strings are not dates, whatever the Python version: false, or INVALID_FLAG
        as an operand."""
        assert parse_date(text) is None
        assert holds("before", ["2100-01-01T00:00:00Z"], text) is False
        assert holds("after", ["1900-01-01T00:00:00Z"], text, negate=True) is False
        assert holds("before", [text or "nope"], "2024-01-01T00:00:00Z") == INVALID

    @pytest.mark.parametrize(
        "value",
        [
            "2024-01-01T00:00:00Z",
            EPOCH_2024,
            float(EPOCH_2024),
            str(EPOCH_2024),
            datetime(2024, 1, 1, tzinfo=timezone.utc),
            datetime(2024, 1, 1, 9, tzinfo=timezone(timedelta(hours=9))),
            datetime(2023, 12, 31, 19, tzinfo=timezone(timedelta(hours=-5))),
        ],
    )
    def test_equal_instants_are_neither_before_nor_after(self, value: Any) -> None:
        """An instant equal to the operand, in any representation, is neither before nor after."""
        for operand in ("2024-01-01T00:00:00Z", EPOCH_2024, "2024-01-01T01:00:00+01:00"):
            assert holds("before", [operand], value) is False
            assert holds("after", [operand], value) is False
            assert holds("before", [operand], value, negate=True) is True

    def test_before_and_after(self) -> None:
        """One second either side of the operand decides."""
        operand = ["2024-01-01T00:00:00Z"]
        assert holds("before", operand, EPOCH_2024 - 1) is True
        assert holds("after", operand, EPOCH_2024 + 1) is True
        assert holds("before", operand, "2024-01-01T00:59:59+01:00") is True
        assert holds("after", operand, "2023-12-31T19:00:01-05:00") is True
        assert holds("after", operand, EPOCH_2024 + 0.001) is True

    def test_aware_datetime_in_another_zone(self) -> None:
        """A timezone-aware datetime attribute compares by instant, not wall-clock time."""
        tokyo = datetime(2024, 1, 1, 8, 59, tzinfo=timezone(timedelta(hours=9)))
        assert holds("before", ["2024-01-01T00:00:00Z"], tokyo) is True

    def test_epoch_operands_and_any_of(self) -> None:
        """Operands may be epoch seconds; before compares with the latest, after the earliest."""
        assert holds("before", [EPOCH_2024], EPOCH_2024 - 10) is True
        assert holds("before", [EPOCH_2024 - 100, EPOCH_2024], EPOCH_2024 - 10) is True
        assert holds("after", [EPOCH_2024 + 100, EPOCH_2024], EPOCH_2024 + 10) is True

    @pytest.mark.parametrize("operand", [True, float("inf"), 10**400])
    def test_bad_operands_isolate(self, operand: Any) -> None:
        """Booleans, infinities and integers beyond the float range are not dates."""
        assert holds("before", [operand], EPOCH_2024) == INVALID

    def test_huge_int_context_value_is_false(self) -> None:
        """An int beyond the float range is not a date (and never raises)."""
        assert holds("before", [EPOCH_2024], 10**400) is False
        assert holds("before", [EPOCH_2024], 10**400, negate=True) is False


class TestExists:
    """exists: presence only."""

    @pytest.mark.parametrize(
        "value", ["", 0, 0.0, False, "x", datetime(2024, 1, 1, tzinfo=timezone.utc)]
    )
    def test_present_values(self, value: Any) -> None:
        """Any present value counts, falsy ones included."""
        assert holds("exists", None, value) is True
        assert holds("exists", None, value, negate=True) is False

    def test_absent_and_none(self) -> None:
        """An absent attribute, or one passed as None (dropped), does not exist."""
        assert holds("exists", None) is False
        assert holds("exists", None, None) is False
        assert holds("exists", None, negate=True) is True

    def test_ids_are_attributes(self) -> None:
        """user_id and session_id can be tested like attributes."""
        ruleset = compile_ruleset(
            {
                "schema_version": 1,
                "flags": [_flag({"attribute": "session_id", "operator": "exists"})],
            }
        )
        assert evaluate(ruleset, "f", EvaluationContext(session_id="s")).value is True
        assert evaluate(ruleset, "f", EvaluationContext(user_id="u")).value is False


# -- LaunchDarkly operator conformance files, mapped onto phaseflag ------------------------------

LD_DIR = CONFORMANCE / "launchdarkly-sdk-test-harness" / "server-side-eval"
LD_OPERATORS = {
    "in": "in",
    "startsWith": "starts_with",
    "endsWith": "ends_with",
    "contains": "contains",
    "matches": "matches",
    "lessThan": "lt",
    "lessThanOrEqual": "lte",
    "greaterThan": "gt",
    "greaterThanOrEqual": "gte",
    "before": "before",
    "after": "after",
    "semVerEqual": "semver_eq",
    "semVerLessThan": "semver_lt",
    "semVerGreaterThan": "semver_gt",
}
_PLACEHOLDER = re.compile(r"<([A-Za-z0-9_]+)>")


def _substitute(node: Any, names: dict[str, Any]) -> Any:
    """The harness's constants/parameters expansion: "<NAME>" alone keeps the value's type."""
    if isinstance(node, dict):
        return {k: _substitute(v, names) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, names) for v in node]
    if isinstance(node, str):
        whole = _PLACEHOLDER.fullmatch(node)
        if whole and whole.group(1) in names:
            return _substitute(names[whole.group(1)], names)
        return _PLACEHOLDER.sub(
            lambda m: str(names[m.group(1)]) if m.group(1) in names else m.group(0), node
        )
    return node


def _expand(document: dict[str, Any]) -> list[dict[str, Any]]:
    constants = document.get("constants") or {}
    parameters = document.get("parameters") or [{}]
    if isinstance(parameters[0], list):
        combos = [
            {k: v for part in combo for k, v in part.items()}
            for combo in itertools.product(*parameters)
        ]
    else:
        combos = parameters
    body = {k: v for k, v in document.items() if k not in ("constants", "parameters")}
    return [_substitute(body, {**constants, **combo}) for combo in combos]


def _ld_cases() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(id, LD flag, LD evaluation) for every evaluation in the operators-*.yml files."""
    if not LD_DIR.is_dir():
        return []
    try:
        import yaml
    except ImportError:
        return []
    cases = []
    for path in sorted(LD_DIR.glob("operators-*.yml")):
        document = yaml.safe_load(path.read_text("utf-8"))
        for n, expanded in enumerate(_expand(document)):
            flags = expanded["sdkData"]["flags"]
            for evaluation in expanded["evaluations"]:
                case_id = f"{path.stem}#{n}::{evaluation['name']}"
                cases.append((case_id, flags[evaluation["flagKey"]], evaluation))
    return cases


def _ld_is_date_flag(ld_flag: dict[str, Any]) -> bool:
    return any(
        clause["op"] in ("before", "after")
        for rule in ld_flag.get("rules", [])
        for clause in rule["clauses"]
    )


def _ld_number_to_seconds(value: Any) -> Any:
    """LD dates given as numbers are epoch milliseconds; phaseflag's are epoch seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value / 1000
    return value


def _to_phaseflag(ld_flag: dict[str, Any]) -> dict[str, Any] | None:
    dates = _ld_is_date_flag(ld_flag)
    rules = []
    for rule in ld_flag.get("rules", []):
        conditions = []
        for clause in rule["clauses"]:
            if clause["op"] not in LD_OPERATORS:
                return None
            values = clause["values"]
            conditions.append(
                {
                    "attribute": clause["attribute"],
                    "operator": LD_OPERATORS[clause["op"]],
                    "values": [_ld_number_to_seconds(v) for v in values] if dates else values,
                    "negate": bool(clause.get("negate", False)),
                }
            )
        out_rule: dict[str, Any] = {
            "conditions": conditions,
            "serve": {"variation": f"v{rule['variation']}"},
        }
        if "id" in rule:
            out_rule["id"] = rule["id"]
        rules.append(out_rule)
    return {
        "key": "ld",
        "type": "boolean",
        "enabled": ld_flag.get("on", ld_flag.get(True)),  # YAML 1.1 reads the key on: as True
        "variations": [{"key": f"v{i}", "value": v} for i, v in enumerate(ld_flag["variations"])],
        "default": {"variation": f"v{ld_flag['fallthrough']['variation']}"},
        "rules": rules,
    }


def _ld_outcome(ld_flag: dict[str, Any], evaluation: dict[str, Any]) -> tuple[str, str]:
    """(category, detail): "pass", a documented difference, or "unexplained"."""
    flag = _to_phaseflag(ld_flag)
    if flag is None:
        return "unmappable", "operator with no phaseflag equivalent"
    custom = dict(evaluation["context"].get("custom") or {})
    if any(isinstance(v, (list, dict)) for v in custom.values()):
        return "unmappable", "array/object attribute values (EvaluationContext accepts scalars)"
    if _ld_is_date_flag(ld_flag):
        custom = {k: _ld_number_to_seconds(v) for k, v in custom.items()}
    try:
        ruleset = compile_ruleset({"schema_version": 1, "flags": [flag]})
    except RulesetError:
        return "schema-rejected", "null/object operands fail the ruleset schema"
    if any(".values[" in path for path, _ in ruleset.problems):  # isolated by the schema
        return "schema-rejected", "null/object operands fail the ruleset schema"
    context = EvaluationContext(user_id=evaluation["context"]["key"], attributes=custom)
    result = evaluate(ruleset, "ld", context)
    expect = evaluation["expect"]
    kind = expect["reason"]["kind"]
    wanted = (
        expect["value"],
        Reason.TARGETING_MATCH if kind == "RULE_MATCH" else Reason.DEFAULT,
        expect["reason"].get("ruleId"),
    )
    if (result.value, result.reason, result.rule_id) == wanted:
        return "pass", ""
    return _ld_difference(flag, custom.get("attrname"), result)


def _ld_difference(flag: dict[str, Any], value: Any, result: Any) -> tuple[str, str]:
    """Which documented phaseflag decision explains a differing outcome (checked, not assumed)."""
    condition = flag["rules"][0]["conditions"][0]
    operator, operand = condition["operator"], condition["values"][0]
    hit = result.value is True and result.reason == Reason.TARGETING_MATCH
    if result.error_code == ErrorCode.INVALID_FLAG:
        if operator.startswith("semver"):
            assert not isinstance(operand, str) or parse_semver(operand) is None
        else:
            assert operator in ("before", "after")
            assert isinstance(operand, bool) or parse_date(operand) is None
        return "invalid-operand", f"{operand!r} is not a valid {operator} operand"
    if operator in ("lt", "lte", "gt", "gte") and isinstance(value, str):
        number = float(value)
        compare = {"lt": number < operand, "lte": number <= operand}
        compare |= {"gt": number > operand, "gte": number >= operand}
        assert hit is compare[operator]
        return "numeric-string", "numeric strings are parsed (DESIGN §4)"
    if operator.startswith("semver") and any(
        isinstance(v, str) and v.startswith("v") for v in (value, operand)
    ):
        assert hit is (parse_semver(str(value)) == parse_semver(str(operand)))
        return "semver-v-prefix", "a leading 'v' is accepted"
    if operator in ("before", "after") and any(
        isinstance(v, str) and (v.isdigit() or len(v) == 10) for v in (value, operand)
    ):
        instant, bound = parse_date(value), parse_date(operand)
        assert instant is not None and bound is not None
        assert hit is (instant < bound if operator == "before" else instant > bound)
        return "date-forms", "date-only strings and digit strings (epoch seconds) are dates"
    return "unexplained", repr((operator, operand, value, result))


_LD_CASES = _ld_cases()


@pytest.mark.parametrize(
    ("ld_flag", "evaluation"),
    [pytest.param(flag, ev, id=case_id) for case_id, flag, ev in _LD_CASES]
    or [pytest.param(None, None, id="absent")],
)
def test_launchdarkly_operator_case(
    ld_flag: dict[str, Any] | None, evaluation: dict[str, Any] | None
) -> None:
    """An LD operator case passes, or differs only by a documented phaseflag decision."""
    if ld_flag is None or evaluation is None:
        pytest.importorskip("yaml")
        require_conformance(LD_DIR, "LaunchDarkly conformance files")
    category, detail = _ld_outcome(ld_flag, evaluation)
    assert category != "unexplained", detail


def test_launchdarkly_operator_summary() -> None:
    """Pins how many LD operator cases map and pass, and how many differ by which decision."""
    if not _LD_CASES:
        pytest.importorskip("yaml")
        require_conformance(LD_DIR, "LaunchDarkly conformance files")
    counts: dict[str, int] = {}
    for _, flag, evaluation in _LD_CASES:
        category = _ld_outcome(flag, evaluation)[0]
        counts[category] = counts.get(category, 0) + 1
    assert counts == {
        "pass": 380,
        "invalid-operand": 50,  # LD: no match; phaseflag: the flag is INVALID_FLAG
        "schema-rejected": 30,  # null/{} operands fail the schema: the flag is isolated
        "numeric-string": 4,  # "99" lessThan 100 holds in phaseflag
        "semver-v-prefix": 2,  # "v2.0.0" == "2.0.0" in phaseflag
        "date-forms": 6,  # "2017-12-06" and "1512543600000" (epoch seconds) are dates
        "unmappable": 40,  # array/object context values
    }
