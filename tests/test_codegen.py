"""Generated per-flag reads (phaseflag/_codegen.py): safe source, same answers as explain.

No ruleset text ever reaches ``compile()``: the generated source is tokenised and may only
hold template words and generated names. The fast path is fuzzed against ``explain``
(the interpreter) and against the interpreter with the generated read removed. The
hot-path copies the template inlines (bucketing, the semver memo) are proved equal to
their originals.
"""

from __future__ import annotations

import dataclasses
import io
import keyword
import re
import tokenize
from datetime import datetime, timezone
from typing import Any

import pytest
from conftest import boolean_flag, ruleset, string_flag
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phaseflag._bucketing import bucket
from phaseflag._codegen import MAX_GENERATED_RULES, shapes
from phaseflag._compile import compile_ruleset
from phaseflag._evaluation import evaluate, evaluate_flag, explain
from phaseflag._model import Ruleset
from phaseflag._operands import parse_semver, semver_of, semver_value
from phaseflag.types import EvaluationContext

EVIL = [
    '"); import os; os.system("echo pwned") #',
    "__import__('os').system('x')",
    "x\n    return None\ndef run(values):",
    "p0",
    "values",
    "'''",
    "\\",
    "{}",
    "\u2028",
    "\ud800",
    "lambda: 0",
]
TEMPLATE_WORDS = {
    *keyword.kwlist,
    "run",
    "values",
    "get",
    "key",
    "text",
    "isascii",
    "h",
    "slot",
    "v",
    "type",
    "int",
    "float",
    "str",
}
GENERATED = re.compile(r"[pvck]\d+")


def _check_source(source: str) -> None:
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.STRING:
            raise AssertionError(f"string literal in generated source: {token.string!r}")
        if token.type == tokenize.NAME:
            assert token.string in TEMPLATE_WORDS or GENERATED.fullmatch(token.string), token
        if token.type == tokenize.NUMBER:
            assert token.string in {"0", "100", "1000"}, token
        assert token.type not in (tokenize.COMMENT, tokenize.ERRORTOKEN), token


def _sources(compiled: Ruleset) -> list[str]:
    compiled.flags.compile_all()  # flags compile on first read: generate every read first
    by_code = {code: source for source, code in shapes().items()}
    return [by_code[f.run.__code__] for f in compiled.flags.values() if f.run is not None]


def _evil_flag(key: str, attribute: str, value: str) -> dict[str, Any]:
    conditions = [
        {"attribute": attribute, "operator": "in", "values": [value]},
        {"attribute": attribute, "operator": "gte", "values": [3]},
        {"attribute": attribute, "operator": "semver_gt", "values": ["1.2.3"]},
        {"attribute": attribute, "operator": "exists"},
        {"attribute": attribute, "operator": "starts_with", "values": [value]},
    ]
    rollout = {
        "rollout": {
            "bucket_by": attribute,
            "seed": value,
            "variations": [
                {"variation": "value", "weight": 50},
                {"variation": "off", "weight": 50},
            ],
        }
    }
    flag = string_flag(
        key,
        value,
        rules=[
            {"id": value, "conditions": conditions, "serve": {"variation": "value"}},
            {"conditions": conditions[:2], "serve": rollout},
        ],
        targets=[{"variation": "value", "user_ids": [value]}],
        salt=value,
    )
    flag["variations"].append({"key": value, "value": value})
    return flag


@pytest.mark.parametrize("evil", EVIL)
def test_ruleset_text_never_reaches_the_source(evil: str) -> None:
    """Keys, attribute names, operands, ids, salts and values full of code stay out."""
    compiled = compile_ruleset(ruleset(_evil_flag(evil, evil, evil), _evil_flag("k", "a", evil)))
    sources = _sources(compiled)
    assert len(sources) == 2
    for source in sources:
        _check_source(source)
        assert evil not in source or GENERATED.fullmatch(evil) or evil in TEMPLATE_WORDS


@pytest.mark.soak
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=st.text(min_size=1, max_size=20),
    attribute=st.text(min_size=1, max_size=40),
    value=st.text(min_size=1, max_size=40),
)
def test_fuzzed_text_never_reaches_the_source(key: str, attribute: str, value: str) -> None:
    """Any text anywhere in a flag: the generated source holds generated names only."""
    compiled = compile_ruleset(ruleset(_evil_flag(key, attribute, value)))
    for source in _sources(compiled):
        _check_source(source)


def test_same_shape_shares_one_code_object() -> None:
    """Flags differing only in constants share one compiled read."""
    flags = [boolean_flag(f"f{i}", rules=[_rule("plan", "in", [f"p{i}"])]) for i in range(20)]
    compiled = compile_ruleset(ruleset(*flags))
    codes = {f.run.__code__ for f in compiled.flags.values() if f.run is not None}
    assert len(codes) == 1


def test_flags_the_template_cannot_hold_use_the_interpreter() -> None:
    """Prerequisites or too many rules: no generated read, same answers."""
    many = [_rule("n", "gt", [i]) | {"id": f"r{i}"} for i in range(MAX_GENERATED_RULES + 1)]
    child = boolean_flag("child", prerequisites=[{"flag": "big", "variation": "on"}])
    compiled = compile_ruleset(ruleset(boolean_flag("big", False, rules=many), child))
    assert compiled.flags["big"].run is None
    assert compiled.flags["child"].run is None
    context = EvaluationContext("u", attributes={"n": 5})
    assert evaluate(compiled, "big", context).rule_id == "r0"
    assert evaluate(compiled, "child", context).variation_key == "on"
    assert evaluate(compiled, "child", EvaluationContext("u")).reason == "prerequisite_failed"


def _rule(attribute: str, operator: str, values: list[Any], **fields: Any) -> dict[str, Any]:
    condition = {"attribute": attribute, "operator": operator, "values": values, **fields}
    return {"conditions": [condition], "serve": {"variation": "on"}}


# -- fast path against the interpreter -------------------------------------------------------

ATTRS = ["plan", "n", "version", "when", "user_id", "session_id", "email"]
OPS = [
    "in", "equals", "contains", "starts_with", "ends_with", "matches", "gt", "gte", "lt",
    "lte", "semver_eq", "semver_gt", "semver_gte", "semver_lt", "semver_lte", "before",
    "after", "exists", "in_segment",
]  # fmt: skip
operand = st.one_of(
    st.sampled_from(["pro", "free", "1.2.3", "2.0.0-rc.1", "v3", "2024-01-01", "a.*", "s0"]),
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=False),
    st.booleans(),
)
context_value = st.one_of(
    st.none(),
    st.sampled_from(["pro", "free", "1.2.3", "1.10.0", "2.0.0", "0.9", "2024-06-01", "3", "x"]),
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.just(datetime(2024, 3, 1, tzinfo=timezone.utc)),
    st.text(max_size=4),
)


@st.composite
def conditions(draw: st.DrawFn) -> dict[str, Any]:
    op = draw(st.sampled_from(OPS))
    out: dict[str, Any] = {"operator": op}
    if op != "in_segment":
        out["attribute"] = draw(st.sampled_from(ATTRS))
    if op != "exists":
        out["values"] = draw(st.lists(operand, min_size=1, max_size=3))
    if draw(st.booleans()):
        out["negate"] = True
    if draw(st.integers(0, 4)) == 0:
        out["case_insensitive"] = True
    return out


@st.composite
def serves(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        return {"variation": draw(st.sampled_from(["on", "off"]))}
    n = draw(st.integers(1, 6))
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=n - 1, max_size=n - 1)))
    weights = [b - a for a, b in zip([0, *cuts], [*cuts, 100], strict=True)]
    by = draw(st.sampled_from(["user_id", "plan", "n"]))
    slots = [{"variation": ["on", "off"][i % 2], "weight": w} for i, w in enumerate(weights)]
    return {"rollout": {"bucket_by": by, "variations": slots}}


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    pool = draw(st.lists(conditions(), min_size=1, max_size=6))  # reused: shared conditions
    rules = [
        {
            "id": f"r{i}",
            "conditions": draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4)),
            "serve": draw(serves()),
        }
        for i in range(draw(st.integers(0, 6)))
    ]
    fields: dict[str, Any] = {"rules": rules, "default": draw(serves())}
    if draw(st.booleans()):
        fields["targets"] = [{"variation": "on", "user_ids": ["t1", "t2"]}]
    segment_rules = [{"conditions": [draw(conditions().filter(lambda c: "attribute" in c))]}]
    segment = {"key": "s0", "rules": segment_rules, "included": ["inc"]}
    return ruleset(boolean_flag("f", **fields), segments=[segment])


def _agree(
    document: dict[str, Any], user: str | None, session: str | None, attrs: dict[str, Any]
) -> None:
    compiled = compile_ruleset(document)
    flag = compiled.flags["f"]
    context = EvaluationContext(user, session, attrs)
    fast = evaluate(compiled, "f", context)
    assert fast == explain(compiled, "f", context).result
    interpreted = dataclasses.replace(flag, run=None)
    assert fast == evaluate_flag(interpreted, context._values, compiled)
    if flag.error is None and flag.static is None:
        assert flag.run is not None  # this strategy only makes flags the template can hold
    lookup = flag.bool_lookup
    if lookup is not None and type(context) is EvaluationContext:  # the getters' set lookup
        assert lookup.get(context._values.get(flag.lookup_attr), flag.lookup_miss) == fast.value


_cases = given(
    document=documents(),
    user=st.sampled_from([None, "t1", "inc", "u1", "ü"]),
    session=st.sampled_from([None, "s1"]),
    attrs=st.dictionaries(st.sampled_from(ATTRS[:4] + ATTRS[6:]), context_value, max_size=5),
)


@pytest.mark.soak
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@_cases
def test_fast_path_agrees_with_explain(
    document: dict[str, Any], user: str | None, session: str | None, attrs: dict[str, Any]
) -> None:
    """The generated read, the interpreter and explain give the same result."""
    _agree(document, user, session, attrs)


@pytest.mark.soak
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@_cases
def test_fast_path_agrees_with_explain_at_length(
    document: dict[str, Any], user: str | None, session: str | None, attrs: dict[str, Any]
) -> None:
    """The same agreement over many more random flags and contexts (the fuzz run)."""
    _agree(document, user, session, attrs)


@st.composite
def memberships(draw: st.DrawFn) -> dict[str, Any]:
    """Flags the getters answer with a set lookup, and near misses of that shape."""

    def condition() -> dict[str, Any]:
        out = {
            "attribute": draw(st.sampled_from(["plan", "plan", "plan", "n"])),
            "operator": draw(st.sampled_from(["in", "equals"])),
            "values": draw(st.lists(st.sampled_from(["pro", "free", "3", "ü"]), min_size=1)),
        }
        if draw(st.integers(0, 5)) == 0:
            out[draw(st.sampled_from(["negate", "case_insensitive"]))] = True
        if draw(st.integers(0, 5)) == 0:
            out["values"] = [*out["values"], draw(st.sampled_from([3, True, 1.5]))]
        return out

    rules = [
        {"conditions": [condition()], "serve": {"variation": draw(st.sampled_from(["on", "off"]))}}
        for _ in range(draw(st.integers(1, 4)))
    ]
    return ruleset(boolean_flag("f", draw(st.booleans()), rules=rules))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    document=memberships(),
    user=st.sampled_from([None, "u1"]),
    attrs=st.dictionaries(st.sampled_from(["plan", "n"]), context_value, max_size=2),
)
def test_set_lookup_agrees_with_explain(
    document: dict[str, Any], user: str | None, attrs: dict[str, Any]
) -> None:
    """The getters' set lookup (one dict per flag, no call) serves what explain serves."""
    _agree(document, user, None, attrs)
    flag = compile_ruleset(document).flags["f"]
    plain = all(
        c["attribute"] == document["flags"][0]["rules"][0]["conditions"][0]["attribute"]
        and not c.get("negate") and not c.get("case_insensitive")
        and all(type(v) is str for v in c["values"])
        for r in document["flags"][0]["rules"] for c in r["conditions"]
    )  # fmt: skip
    assert (flag.bool_lookup is not None) == plain


# -- hot-path copies -------------------------------------------------------------------------


def _rollout_ruleset(salt: str) -> Ruleset:
    slots = [{"variation": "on", "weight": 33.333}, {"variation": "off", "weight": 66.667}]
    flag = boolean_flag("f", salt=salt, default={"rollout": {"variations": slots}})
    return compile_ruleset(ruleset(flag))


@settings(max_examples=100, deadline=None)
@given(salt=st.text(min_size=1, max_size=10), key=st.text(max_size=30))
def test_inlined_bucketing_equals_bucket(salt: str, key: str) -> None:
    """The generated read's inlined bucket() picks the slot bucket() picks (ASCII or not)."""
    compiled = _rollout_ruleset(salt)
    assert compiled.flags["f"].run is not None
    served = evaluate(compiled, "f", EvaluationContext(key)).variation_key
    assert served == ("on" if bucket(salt, key) < 33_333 else "off")


@pytest.mark.soak
@settings(max_examples=80, deadline=None)
@given(
    text=st.one_of(
        st.from_regex(r"v?\d{1,3}(\.\d{1,3}){0,2}(-[0-9A-Za-z.-]{1,8})?(\+[a-z0-9]{1,4})?"),
        st.text(max_size=12),
    )
)
def test_semver_memo_equals_parse_semver(text: str) -> None:
    """The read-path memo (semver_of, semver_value) answers what parse_semver answers."""
    assert semver_of(text) == parse_semver(text)
    assert semver_of(text) == parse_semver(text)  # the second answer comes from the memo
    assert semver_value(text) == parse_semver(text)
    assert semver_value(3) is None


def test_version_is_parsed_once_per_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten semver rules on one attribute parse its value at most once per read."""
    import phaseflag._codegen as codegen

    calls = []

    def counting(value: object) -> Any:
        calls.append(value)
        return semver_value(value)

    monkeypatch.setattr(codegen, "semver_value", counting)
    rules = [_rule("version", "semver_gte", [f"{10 - i}.0.0"]) | {"id": f"r{i}"} for i in range(10)]
    compiled = compile_ruleset(ruleset(boolean_flag("f", False, rules=rules)))
    result = evaluate(compiled, "f", EvaluationContext(attributes={"version": "0.5.0"}))
    assert result.variation_key == "off"
    assert calls == ["0.5.0"]
