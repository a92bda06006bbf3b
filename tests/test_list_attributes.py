"""List-valued context attributes: construction, "any element" semantics as properties,
the CLI ``--attr`` form and the OpenFeature provider. (End-to-end cases per operator are
in tests/cases/list_attributes.json.)"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phaseflag import EvaluationContext, InvalidContextError, compile_ruleset, evaluate
from phaseflag.testing import create_mock_client, flag, rule, ruleset


class TestContext:
    def test_lists_and_tuples_become_tuples(self) -> None:
        ctx = EvaluationContext(attributes={"roles": ["a", "b"], "ids": (1, 2.5, True)})
        assert ctx.attributes["roles"] == ("a", "b")
        assert ctx.get("ids") == (1, 2.5, True)
        assert type(ctx.get("ids")[2]) is bool  # type: ignore[index]

    def test_elements_are_normalised_like_scalars(self) -> None:
        when = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
        ctx = EvaluationContext(attributes={"dates": [when]})
        assert ctx.to_dict()["attributes"] == {"dates": [when.isoformat()]}

    def test_wire_shape_has_arrays(self) -> None:
        ctx = EvaluationContext(user_id="u", attributes={"roles": ["a"], "plan": "pro"})
        assert json.loads(json.dumps(ctx.to_dict()))["attributes"] == {
            "roles": ["a"],
            "plan": "pro",
        }

    @pytest.mark.parametrize("bad", [[["nested"]], [None], [{"a": 1}], [b"x"]])
    def test_non_scalar_elements_are_refused_naming_the_attribute(self, bad: Any) -> None:
        with pytest.raises(InvalidContextError) as info:
            EvaluationContext(attributes={"roles": bad})
        assert info.value.key == "roles"
        assert "element 0" in str(info.value)

    def test_merge_keeps_lists(self) -> None:
        base = EvaluationContext(attributes={"roles": ["a"]})
        merged = base.merge(EvaluationContext(user_id="u"))
        assert merged.get("roles") == ("a",)
        client = create_mock_client(
            bootstrap=ruleset(
                flag(
                    "f",
                    variations={"on": True, "off": False},
                    default="off",
                    rules=[rule(_cond("roles", "in", ["a"]), serve="on")],
                )
            ),
            default_context=base,
        )
        try:
            assert client.get_boolean_value("f", False) is True
            assert client.get_boolean_value("f", False, EvaluationContext(user_id="x")) is True
        finally:
            client.stop()


def _cond(attribute: str, operator: str, values: list[Any], negate: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"attribute": attribute, "operator": operator, "values": values}
    if negate:
        out["negate"] = True
    return out


OPERATORS = {
    "in": st.lists(st.one_of(st.sampled_from(["a", "b", "c"]), st.integers(0, 3)), min_size=1),
    "equals": st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=1),
    "contains": st.lists(st.sampled_from(["a", "b", "ab"]), min_size=1, max_size=2),
    "starts_with": st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=2),
    "ends_with": st.lists(st.sampled_from(["a", "c"]), min_size=1, max_size=2),
    "gt": st.lists(st.integers(0, 5), min_size=1, max_size=2),
    "lte": st.lists(st.integers(0, 5), min_size=1, max_size=2),
    "semver_gte": st.lists(st.sampled_from(["1.0.0", "2.0.0"]), min_size=1, max_size=1),
}
SCALARS = st.one_of(
    st.sampled_from(["a", "b", "c", "ab", "ba", "abc", "1.5.0", "2.1.0", ""]),
    st.integers(-1, 6),
    st.booleans(),
)


def _result(operator: str, operands: list[Any], negate: bool, value: Any) -> bool:
    """The condition evaluated for ``attr=value`` (True when the rule matched)."""
    doc = ruleset(
        flag(
            "f",
            variations={"on": True, "off": False},
            default="off",
            rules=[rule(_cond("attr", operator, operands, negate), serve="on")],
        )
    )
    result = evaluate(compile_ruleset(doc), "f", EvaluationContext(attributes={"attr": value}))
    return result.value is True


@st.composite
def conditions(draw: st.DrawFn) -> tuple[str, list[Any], bool]:
    operator = draw(st.sampled_from(sorted(OPERATORS)))
    return operator, draw(OPERATORS[operator]), draw(st.booleans())


@pytest.mark.soak
@settings(max_examples=150, deadline=None)
@given(conditions(), SCALARS)
def test_one_element_list_is_its_element(
    condition: tuple[str, list[Any], bool], value: Any
) -> None:
    """[x] and x give the same answer for every operator, negated or not (for contains,
    a one-element list is a membership test, so compare with equality of strings)."""
    operator, operands, negate = condition
    if operator == "contains":
        plain = _result("in", operands, negate, value) if isinstance(value, str) else False
    else:
        plain = _result(operator, operands, negate, value)
    assert _result(operator, operands, negate, [value]) == plain


@pytest.mark.soak
@settings(max_examples=150, deadline=None)
@given(conditions(), st.lists(SCALARS, max_size=4))
def test_list_is_any_element(condition: tuple[str, list[Any], bool], items: list[Any]) -> None:
    """Un-negated: the list matches when some element does. Negated: when no element
    matches and some element has a type the comparison accepts (what [x] would say)."""
    operator, operands, negate = condition
    one = [_result(operator, operands, False, [item]) for item in items]
    if not negate:
        assert _result(operator, operands, False, items) == any(one)
    else:
        flipped = [_result(operator, operands, True, [item]) for item in items]
        assert _result(operator, operands, True, items) == (any(flipped) and not any(one))


@pytest.mark.soak
@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c"]), max_size=4))
def test_explain_agrees_with_evaluate_on_lists(items: list[str]) -> None:
    from phaseflag import explain

    doc = ruleset(
        flag(
            "f",
            variations={"on": True, "off": False},
            default="off",
            rules=[rule(_cond("attr", "in", ["b"]), serve="on", id="r")],
        )
    )
    compiled = compile_ruleset(doc)
    ctx = EvaluationContext(attributes={"attr": items})
    assert explain(compiled, "f", ctx).result == evaluate(compiled, "f", ctx)


def test_scalar_contexts_keep_the_generated_read() -> None:
    """Only contexts holding a list leave the generated fast path: a scalar context's
    values stay a plain dict."""
    assert type(EvaluationContext(attributes={"a": "x"})._values) is dict
    assert type(EvaluationContext(attributes={"a": ["x"]})._values) is not dict


def test_cli_attr_takes_a_json_array(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from phaseflag._cli import main

    path = tmp_path / "rules.json"
    path.write_text(
        json.dumps(
            ruleset(
                flag(
                    "admin",
                    variations={"on": True, "off": False},
                    default="off",
                    rules=[rule(_cond("roles", "contains", ["admin"]), serve="on", id="r")],
                )
            )
        )
    )
    assert (
        main(["eval", "admin", "-f", str(path), "--attr", 'roles=["dev","admin"]', "--json"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["value"] is True
    assert main(["eval", "admin", "-f", str(path), "--attr", 'roles=["dev"]', "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["value"] is False


def test_openfeature_context_with_a_list_attribute() -> None:
    pytest.importorskip("openfeature")
    from openfeature.evaluation_context import EvaluationContext as OFContext

    from phaseflag.openfeature import PhaseFlagProvider, to_phaseflag_context

    ctx = to_phaseflag_context(OFContext("u1", {"groups": ["eng", "ops"]}))
    assert ctx is not None and ctx.get("groups") == ("eng", "ops")
    client = create_mock_client(
        bootstrap=ruleset(
            flag(
                "eng-only",
                variations={"on": True, "off": False},
                default="off",
                rules=[rule(_cond("groups", "in", ["eng"]), serve="on", id="eng")],
            )
        )
    )
    provider = PhaseFlagProvider(client)
    try:
        details = provider.resolve_boolean_details(
            "eng-only", False, OFContext("u1", {"groups": ["eng"]})
        )
        assert details.value is True
        assert details.error_code is None
    finally:
        client.stop()


def test_every_client_read_path_sees_lists() -> None:
    """The getters that inline the read, the others, all_flags, a request scope and a
    client with a default_context all take the list-aware path for a list context."""
    doc = ruleset(
        flag(
            "b",
            variations={"on": True, "off": False},
            default="off",
            rules=[rule(_cond("roles", "in", ["admin"]), serve="on", id="r")],
        ),
        flag(
            "s",
            variations={"yes": "yes", "no": "no"},
            default="no",
            rules=[rule(_cond("roles", "contains", ["admin"]), serve="yes", id="r")],
        ),
        flag(
            "n",
            variations={"big": 10, "small": 1},
            default="small",
            rules=[rule(_cond("roles", "starts_with", ["adm"]), serve="big", id="r")],
        ),
    )
    ctx = EvaluationContext(user_id="u", attributes={"roles": ["dev", "admin"]})
    for options in ({}, {"default_context": EvaluationContext(attributes={"plan": "pro"})}):
        client = create_mock_client(bootstrap=doc, **options)
        try:
            assert client.get_boolean_value("b", False, ctx) is True
            assert client.get_string_value("s", "", ctx) == "yes"
            assert client.get_integer_value("n", 0, ctx) == 10
            assert client.get_details("b", False, ctx).reason == "targeting_match"
            assert client.all_flags(ctx) == {"b": True, "n": 10, "s": "yes"}
            with client.request_context(ctx):
                assert client.get_boolean_value("b", False) is True
                assert client.get_string_value("s", "") == "yes"
        finally:
            client.stop()
