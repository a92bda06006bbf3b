"""Properties (hypothesis): the compiler and evaluator never fail, rollouts follow weights.

Strategies build schema-valid rulesets with random operators (unknown ones included),
random operands, rollouts whose weights sum to exactly 100, prerequisites that may form
cycles and segments that may refer to each other.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import mmh3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phaseflag._bucketing import BUCKETS, bucket
from phaseflag._compile import compile_ruleset, load_ruleset
from phaseflag._errors import RulesetError
from phaseflag._evaluation import evaluate, explain
from phaseflag._model import Ruleset
from phaseflag._operators import OPERATORS
from phaseflag.types import EvaluationContext, Reason

pytestmark = pytest.mark.soak

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])

REASONS = {
    Reason.TARGETING_MATCH, Reason.PERCENTAGE_ROLLOUT, Reason.DEFAULT, Reason.DISABLED,
    Reason.PREREQUISITE_FAILED, Reason.ERROR,
}  # fmt: skip
ATTRIBUTES = ["plan", "n", "version", "when", "email", "user_id", "session_id"]
FLAG_KEYS = ["f0", "f1", "f2", "f3", "f4"]
SEGMENT_KEYS = ["s0", "s1", "s2"]
# Lone surrogates are valid Python str but not UTF-8 (they once crashed mmh3).
ODD_TEXT = ["", "\ud800", "a\udfffb", "é", "🚩", "x" * 5000, "  42 ", "nan", "1_0"]

text = st.one_of(st.text(max_size=12), st.sampled_from(ODD_TEXT))
operand = st.one_of(
    st.text(max_size=8),
    st.integers(-(10**6), 10**6),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(
        ["1.2.3", "1.0.0-rc.1", "v2", "2024-01-01T00:00:00Z", "2024-01-01", "1700000000",
         "^a+$", "(a+)+", "(", "a" * 300, "42", "beta", "s0", "s1", "s9"]
    ),
)  # fmt: skip
attribute_value = st.one_of(
    st.none(),
    text,
    st.integers(-(10**6), 10**6),
    st.just(10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.just(timezone.utc),
    ),
    st.sampled_from(["1.2.3", "2.0.0-beta.2", "2024-01-01T00:00:00+02:00", "pro", "a@example.com"]),
)
operator = st.one_of(
    st.sampled_from(sorted(OPERATORS)), st.sampled_from(["in_segment", "bogus", "EQUALS", "in "])
)


_SEGMENT_REFS = st.lists(st.sampled_from([*SEGMENT_KEYS, "ghost"]), max_size=2)
_OPERANDS = st.lists(operand, max_size=3)
_ATTRIBUTE = st.sampled_from(ATTRIBUTES)


@st.composite
def conditions(draw: st.DrawFn) -> dict[str, Any]:
    """One schema-valid condition: any operator name, optional fields, random operands."""
    condition: dict[str, Any] = {"operator": draw(operator)}
    if condition["operator"] == "in_segment":
        condition["values"] = draw(_SEGMENT_REFS)
    elif draw(st.booleans()) or condition["operator"] != "exists":
        condition["values"] = draw(_OPERANDS)
    if draw(st.integers(0, 9)):
        condition["attribute"] = draw(_ATTRIBUTE)
    for option in ("negate", "case_insensitive"):
        if draw(st.booleans()):
            condition[option] = draw(st.booleans())
    return condition


@st.composite
def weights(draw: st.DrawFn, count: int) -> list[float]:
    """``count`` weights with up to three decimals summing to exactly 100."""
    cuts = sorted(draw(st.lists(st.integers(0, 100_000), min_size=count - 1, max_size=count - 1)))
    edges = [0, *cuts, 100_000]
    return [(edges[i + 1] - edges[i]) / 1000 for i in range(count)]


_WEIGHTS = {count: weights(count) for count in range(1, 5)}
_SHORT_TEXT = st.text(max_size=5)


@st.composite
def serves(draw: st.DrawFn, names: Any, names_or_unknown: Any) -> dict[str, Any]:
    """A serve naming a variation (occasionally an unknown one) or a rollout."""
    pick = names_or_unknown if draw(st.integers(0, 9)) == 0 else names
    if draw(st.booleans()):
        return {"variation": draw(pick)}
    slots = [
        {"variation": draw(pick), "weight": w} for w in draw(_WEIGHTS[draw(st.integers(1, 4))])
    ]
    rollout: dict[str, Any] = {"variations": slots}
    if draw(st.booleans()):
        rollout["bucket_by"] = draw(_ATTRIBUTE)
    if draw(st.booleans()):
        rollout["seed"] = draw(_SHORT_TEXT)
    return {"rollout": rollout}


_VALUES = {
    "boolean": st.booleans(),
    "string": st.text(max_size=5),
    "number": st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False)),
    "json": st.one_of(st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                      st.lists(st.integers(), max_size=2)),
}  # fmt: skip
_ANY_VALUES = {kind: st.one_of(values, st.none(), st.text()) for kind, values in _VALUES.items()}
_KINDS = st.sampled_from(sorted(_VALUES))
_NAMES = st.lists(
    st.sampled_from(["a", "b", "c", "on", "off"]), min_size=1, max_size=4, unique=True
)
_USER_IDS = st.lists(st.sampled_from(["u1", "u2", "é"]), max_size=3)
_CONDITION_LISTS = st.lists(conditions(), max_size=3)
_PARENTS = st.sampled_from([*FLAG_KEYS, "ghost"])


@st.composite
def flags(draw: st.DrawFn, key: str) -> dict[str, Any]:
    """A schema-valid flag; values usually fit its type, sometimes not."""
    kind = draw(_KINDS)
    names = draw(_NAMES)
    pick, pick_any = st.sampled_from(names), st.sampled_from([*names, "unknown"])
    value = _ANY_VALUES[kind] if draw(st.integers(0, 9)) == 0 else _VALUES[kind]
    flag: dict[str, Any] = {
        "key": key,
        "type": kind,
        "variations": [{"key": name, "value": draw(value)} for name in names],
    }
    if draw(st.booleans()):
        flag["enabled"] = draw(st.booleans())
    if draw(st.booleans()):
        flag["off_variation"] = draw(pick)
    if draw(st.booleans()):
        flag["default"] = draw(serves(pick, pick_any))
    if draw(st.booleans()):
        flag["targets"] = [{"variation": draw(pick), "user_ids": draw(_USER_IDS)}]
    flag["rules"] = []
    for i in range(draw(st.integers(0, 4))):
        rule = {"conditions": draw(_CONDITION_LISTS), "serve": draw(serves(pick, pick_any))}
        if draw(st.booleans()):
            rule["id"] = f"r{i}"
        flag["rules"].append(rule)
    if draw(st.integers(0, 3)) == 0:
        flag["prerequisites"] = [{"flag": draw(_PARENTS), "variation": draw(pick)}]
    if draw(st.booleans()):
        flag["salt"] = draw(_SHORT_TEXT)
    return flag


_SEGMENT_CONDITIONS = st.lists(conditions(), max_size=2)


@st.composite
def segments(draw: st.DrawFn, key: str) -> dict[str, Any]:
    """A schema-valid segment whose rules may refer to other segments (cycles included)."""
    segment: dict[str, Any] = {"key": key}
    if draw(st.booleans()):
        segment["included"] = draw(st.lists(st.sampled_from(["u1", "u2"]), max_size=2))
    if draw(st.booleans()):
        segment["excluded"] = draw(st.lists(st.sampled_from(["u1", "u3"]), max_size=2))
    segment["rules"] = [{"conditions": draw(_SEGMENT_CONDITIONS)}
                        for _ in range(draw(st.integers(0, 2)))]  # fmt: skip
    return segment


_FLAG_KEY_LISTS = st.lists(st.sampled_from(FLAG_KEYS), min_size=1, max_size=5, unique=True)
_SEGMENT_KEY_LISTS = st.lists(st.sampled_from(SEGMENT_KEYS), max_size=3, unique=True)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """A schema-valid ruleset document."""
    return {
        "schema_version": 1,
        "version": draw(st.integers(0, 10**6)),
        "flags": [draw(flags(key)) for key in draw(_FLAG_KEY_LISTS)],
        "segments": [draw(segments(key)) for key in draw(_SEGMENT_KEY_LISTS)],
    }


@st.composite
def contexts(draw: st.DrawFn) -> EvaluationContext:
    """Any valid context: optional ids, attributes of every supported type (None included)."""
    zone = timezone(timedelta(minutes=draw(st.integers(-720, 720))))
    attributes = draw(st.dictionaries(st.sampled_from(ATTRIBUTES[:5]), attribute_value, max_size=5))
    attributes = {
        k: v.astimezone(zone) if isinstance(v, datetime) else v for k, v in attributes.items()
    }
    return EvaluationContext(
        user_id=draw(st.one_of(st.none(), text, st.sampled_from(["u1", "u2"]))),
        session_id=draw(st.one_of(st.none(), text)),
        attributes=attributes,
    )


def _check_result(compiled: Ruleset, key: str, context: EvaluationContext) -> None:
    result = evaluate(compiled, key, context)
    assert result.flag_key == key
    assert result.reason in REASONS
    flag = compiled.flags[key]
    if result.error_code is not None:
        assert result.reason == Reason.ERROR and result.value is None
    elif result.variation_key is None:
        assert result.value is None
    else:
        assert result.value == flag.variations[result.variation_key] or result.value != result.value
    assert explain(compiled, key, context).result == result


@FAST
@given(documents(), st.lists(contexts(), min_size=1, max_size=4))
def test_evaluator_never_raises(
    document: dict[str, Any], given_contexts: list[EvaluationContext]
) -> None:
    """Every schema-valid ruleset compiles, and every flag evaluates for any context."""
    compiled = compile_ruleset(document)
    assert set(compiled.flags) == {flag["key"] for flag in document["flags"]}
    for context in [*given_contexts, EvaluationContext()]:
        for key in compiled.flags:
            _check_result(compiled, key, context)


@st.composite
def document_pairs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A document and a later version of it: some flags/segments kept, others redrawn."""
    first = draw(documents())
    second = json.loads(json.dumps(first))
    for index, flag in enumerate(second["flags"]):
        if draw(st.booleans()):
            second["flags"][index] = draw(flags(flag["key"]))
    if draw(st.booleans()):
        second["segments"] = [draw(segments(key)) for key in draw(_SEGMENT_KEY_LISTS)]
    if draw(st.booleans()):
        second["flags"] = second["flags"][::-1]
    return first, second


@SLOW
@given(document_pairs())
def test_incremental_compile_matches_a_fresh_compile(
    pair: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    """Compiling with previous= gives the same outcomes as compiling from scratch."""
    first, second = pair
    previous = compile_ruleset(first)
    incremental = compile_ruleset(second, previous=previous)
    fresh = compile_ruleset(second)
    assert {k: f.error for k, f in incremental.flags.items()} == {
        k: f.error for k, f in fresh.flags.items()
    }
    for user in ("u1", "u2", None):
        context = EvaluationContext(user_id=user, attributes={"plan": "pro", "n": 5})
        for key in fresh.flags:
            assert evaluate(incremental, key, context) == evaluate(fresh, key, context)


@FEW
@given(st.integers(2, 5).flatmap(weights), st.text(max_size=10))
def test_rollout_shares_follow_weights(shares: list[float], salt: str) -> None:
    """Over 10,000 keys each variation's share is within 2 points of its weight."""
    names = [f"v{i}" for i in range(len(shares))]
    flag = {
        "key": "f",
        "type": "string",
        "variations": [{"key": n, "value": n} for n in names],
        "default": {"rollout": {"seed": salt, "variations": [
            {"variation": n, "weight": w} for n, w in zip(names, shares, strict=True)]}},
    }  # fmt: skip
    compiled = compile_ruleset({"schema_version": 1, "flags": [flag]})
    counts = dict.fromkeys(names, 0)
    for i in range(10_000):
        counts[evaluate(compiled, "f", EvaluationContext(user_id=f"key-{i}")).value] += 1
    for name, weight in zip(names, shares, strict=True):
        assert abs(counts[name] / 100 - weight) <= 2.0, (counts, shares)


@settings(max_examples=500, deadline=None)
@given(st.one_of(text, st.text()), st.one_of(text, st.text()))
def test_bucket_is_stable_and_in_range(salt: str, key: str) -> None:
    """bucket() is deterministic, in [0, 100000), and follows the formula on UTF-8 bytes."""
    b = bucket(salt, key)
    assert 0 <= b < BUCKETS
    assert bucket(salt, key) == b
    h = mmh3.hash(f"{salt}:{key}".encode("utf-8", "surrogatepass"), 0, signed=False)
    assert b == (h % 100) * 1000 + (h // 100) % 1000


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=6),
    st.sampled_from(["flags", "key", "type", "boolean", "variations", "in", "rollout", "on"]),
)  # fmt: skip
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(["schema_version", "flags", "segments", "key", "type", "variations",
                             "value", "rules", "conditions", "operator", "values", "serve",
                             "variation", "rollout", "weight", "default", "x"]),
            inner, max_size=5),
    ),
    max_leaves=25,
)  # fmt: skip


def _compile_or_reject(document: Any) -> Ruleset | None:
    try:
        return compile_ruleset(document)
    except RulesetError:
        return None


def _load_or_reject(text: str) -> Ruleset | None:
    try:
        return load_ruleset(text)
    except RulesetError:
        return None


@FAST
@given(json_values)
def test_compile_accepts_or_rejects_any_json(document: Any) -> None:
    """Any JSON document either compiles or raises RulesetError; nothing else escapes."""
    compiled = _compile_or_reject(document)
    if compiled is not None:
        for key in compiled.flags:
            _check_result(compiled, key, EvaluationContext("u1", attributes={"plan": "pro"}))


@SLOW
@given(documents(), st.data())
def test_compile_survives_corrupted_documents(
    document: dict[str, Any], data: st.DataObject
) -> None:
    """Replacing any node of a valid document with random JSON never escapes RulesetError."""
    node: Any = document
    while True:
        children = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        if not children:
            break
        slot, child = data.draw(st.sampled_from(children))
        if not isinstance(child, (dict, list)) or data.draw(st.integers(0, 2)) == 0:
            node[slot] = data.draw(json_values)
            break
        node = child
    compiled = _compile_or_reject(json.loads(json.dumps(document)))
    try:  # NaN/Infinity: a dict may hold them, JSON text may not (load rejects the text)
        text = json.dumps(document, allow_nan=False)
    except ValueError:
        text = None
    if text is not None:
        assert (compiled is None) == (_load_or_reject(text) is None)
    if compiled is not None:
        for key in compiled.flags:
            _check_result(compiled, key, EvaluationContext("u1", attributes={"n": 1}))
