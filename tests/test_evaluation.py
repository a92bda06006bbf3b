"""The evaluator, one class per concern (tests/cases/*.json hold the table-driven cases)."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Any

import pytest
from conftest import boolean_flag, rule, ruleset, string_flag

from phaseflag._bucketing import bucket
from phaseflag._codegen import shapes
from phaseflag._compile import compile_ruleset
from phaseflag._evaluation import evaluate, explain
from phaseflag._model import Ruleset
from phaseflag.types import ErrorCode, EvaluationContext, EvaluationResult, Reason


def _compile(*flags: dict[str, Any], segments: list[dict[str, Any]] | None = None) -> Ruleset:
    return compile_ruleset(ruleset(*flags, segments=segments or []))


def _rollout(*slots: tuple[str, float], **fields: Any) -> dict[str, Any]:
    return {"rollout": {**fields, "variations": [{"variation": v, "weight": w} for v, w in slots]}}


def _condition(attribute: str, operator: str, values: list[Any], **fields: Any) -> dict[str, Any]:
    return {"attribute": attribute, "operator": operator, "values": values, **fields}


def _in_segment(*keys: str) -> dict[str, Any]:
    """A rule serving "on" to members of any of the segments ``keys``."""
    return {
        "conditions": [{"operator": "in_segment", "values": list(keys)}],
        "serve": {"variation": "on"},
    }


class TestResults:
    """What evaluate returns, whatever the path."""

    def test_missing_flag(self) -> None:
        """An unknown key is FLAG_NOT_FOUND with no value and a message naming it."""
        result = evaluate(_compile(boolean_flag("a")), "b", EvaluationContext("u"))
        assert (result.flag_key, result.value, result.reason) == ("b", None, Reason.ERROR)
        assert result.error_code == ErrorCode.FLAG_NOT_FOUND
        assert "'b'" in (result.error_message or "")

    def test_no_context(self) -> None:
        """A None context evaluates like an empty one."""
        compiled = _compile(boolean_flag("a", rules=[rule("plan", "in", ["pro"], "off")]))
        assert evaluate(compiled, "a", None) == evaluate(compiled, "a", EvaluationContext())

    def test_results_are_prebuilt_and_shared(self) -> None:
        """Outcomes that do not depend on the context are the same object on every call."""
        compiled = _compile(
            boolean_flag("static"),
            boolean_flag("ruled", rules=[rule("plan", "in", ["pro"], "off")]),
        )
        first = evaluate(compiled, "static", EvaluationContext("u1"))
        assert evaluate(compiled, "static", EvaluationContext("u2")) is first
        pro = EvaluationContext("u", attributes={"plan": "pro"})
        assert evaluate(compiled, "ruled", pro) is evaluate(compiled, "ruled", pro)

    def test_result_to_dict(self) -> None:
        """Results serialise to the /sdk/evaluate response shape."""
        compiled = _compile(boolean_flag("a", rules=[rule("plan", "in", ["pro"], "off", id="r")]))
        result = evaluate(compiled, "a", EvaluationContext("u", attributes={"plan": "pro"}))
        assert result.to_dict() == {
            "flag_key": "a",
            "value": False,
            "reason": "targeting_match",
            "variation_key": "off",
            "rule_id": "r",
        }

    def test_concurrent_reads(self) -> None:
        """Many threads evaluating one ruleset get the same results as one thread."""
        compiled = _compile(boolean_flag("a") | {"default": _rollout(("on", 50), ("off", 50))})
        expected = [evaluate(compiled, "a", EvaluationContext(f"u{i}")) for i in range(500)]
        failures: list[int] = []
        start = threading.Barrier(8)

        def read() -> None:
            start.wait()
            for i in range(500):
                if evaluate(compiled, "a", EvaluationContext(f"u{i}")) != expected[i]:
                    failures.append(i)

        threads = [threading.Thread(target=read) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert failures == []


class TestDisabled:
    """enabled: false."""

    def test_context_is_not_consulted(self) -> None:
        """A disabled flag returns its off result for every context, as one shared object."""
        compiled = _compile(
            boolean_flag("a", enabled=False, rules=[rule("plan", "in", ["pro"], "on")])
        )
        results = {
            id(evaluate(compiled, "a", EvaluationContext(u, attributes={"plan": "pro"})))
            for u in ("u1", "u2")
        }
        assert len(results) == 1
        assert evaluate(compiled, "a").reason == Reason.DISABLED

    def test_invalid_beats_disabled(self) -> None:
        """A disabled flag with an unusable rule is still INVALID_FLAG (validity comes first)."""
        compiled = _compile(
            boolean_flag("a", enabled=False, rules=[rule("x", "resembles", ["y"], "on")])
        )
        assert evaluate(compiled, "a").error_code == ErrorCode.INVALID_FLAG


class TestPrerequisites:
    """Prerequisites evaluate the parent flag for the same context."""

    def test_parent_targets_apply(self) -> None:
        """A parent serving the wanted variation only to targeted users gates its dependents."""
        parent = boolean_flag("parent", False, targets=[{"variation": "on", "user_ids": ["vip"]}])
        child = string_flag("child", prerequisites=[{"flag": "parent", "variation": "on"}])
        compiled = _compile(parent, child)
        assert evaluate(compiled, "child", EvaluationContext("vip")).value == "blue"
        failed = evaluate(compiled, "child", EvaluationContext("other"))
        assert (failed.value, failed.reason) == ("off", Reason.PREREQUISITE_FAILED)

    def test_parent_rollout_applies(self) -> None:
        """A parent rollout gates the child for exactly the users it serves 'on'."""
        parent = boolean_flag("parent") | {"default": _rollout(("on", 30), ("off", 70))}
        child = boolean_flag("child", prerequisites=[{"flag": "parent", "variation": "on"}])
        compiled = _compile(parent, child)
        for i in range(300):
            context = EvaluationContext(f"user-{i}")
            parent_on = evaluate(compiled, "parent", context).variation_key == "on"
            assert (evaluate(compiled, "child", context).reason == Reason.DEFAULT) is parent_on

    def test_every_prerequisite_is_checked_in_order(self) -> None:
        """The first failing prerequisite decides; later ones are not needed."""
        flags = [
            boolean_flag("p1"),
            boolean_flag("p2", False),
            boolean_flag("child", prerequisites=[{"flag": "p1", "variation": "on"},
                                                 {"flag": "p2", "variation": "on"}]),
        ]  # fmt: skip
        steps = explain(_compile(*flags), "child", EvaluationContext("u")).steps
        assert [(s["flag"], s["passed"]) for s in steps] == [("p1", True), ("p2", False)]


class TestTargets:
    """Target lists match user_id exactly."""

    def test_large_target_lists(self) -> None:
        """Thousands of targeted ids are matched by exact lookup."""
        ids = [f"user-{i}" for i in range(5000)]
        compiled = _compile(
            boolean_flag("a", False, targets=[{"variation": "on", "user_ids": ids}])
        )
        assert (
            evaluate(compiled, "a", EvaluationContext("user-4999")).reason == Reason.TARGETING_MATCH
        )
        assert evaluate(compiled, "a", EvaluationContext("user-5000")).reason == Reason.DEFAULT

    def test_user_id_attribute_is_not_a_target_when_not_a_string(self) -> None:
        """An attribute named user_id holding a number never matches a target."""
        compiled = _compile(
            boolean_flag("a", False, targets=[{"variation": "on", "user_ids": ["7"]}])
        )
        result = evaluate(compiled, "a", EvaluationContext(attributes={"user_id": 7}))
        assert result.reason == Reason.DEFAULT


def _tier_flag() -> dict[str, Any]:
    """Rules that share conditions, so the compiler builds its shared-condition matcher."""
    us = _condition("country", "in", ["US", "CA"])
    big = _condition("spend", "gte", [1000])
    mid = _condition("spend", "gte", [100])
    beta = _condition("beta", "equals", [True])
    rules = [
        {"id": "gold-beta", "conditions": [us, big, beta], "serve": {"variation": "gold"}},
        {"id": "gold", "conditions": [us, big], "serve": {"variation": "gold"}},
        {"id": "silver", "conditions": [us, mid], "serve": {"variation": "silver"}},
        {"id": "beta", "conditions": [beta, mid], "serve": {"variation": "silver"}},
        {"id": "four", "conditions": [mid, beta, _condition("name", "exists", []),
                                      _condition("name", "starts_with", ["a"])],
         "serve": {"variation": "gold"}},
    ]  # fmt: skip
    flag = string_flag("tiers", "basic", rules=rules)
    flag["variations"] += [{"key": "gold", "value": "gold"}, {"key": "silver", "value": "silver"}]
    return flag


class TestRules:
    """Rules: first match wins; shared conditions are evaluated once."""

    def test_shared_conditions_are_generated_once(self) -> None:
        """Rules sharing conditions compile to one generated read that tests each once."""
        flag = _compile(_tier_flag()).flags["tiers"]
        assert flag.run is not None
        source = next(s for s, code in shapes().items() if code is flag.run.__code__)
        assert ":= " in source  # shared conditions are memoised in locals

    @pytest.mark.parametrize("country", ["US", "CA", "DE", None])
    @pytest.mark.parametrize("spend", [5, 150, 5000, "2000", None])
    @pytest.mark.parametrize("beta", [True, False, None])
    @pytest.mark.parametrize("name", ["ann", "bob", None])
    def test_matcher_agrees_with_a_plain_walk(
        self, country: Any, spend: Any, beta: Any, name: Any
    ) -> None:
        """The matcher picks the same rule as walking the rules one by one (explain does that)."""
        compiled = _compile(_tier_flag())
        attrs = {"country": country, "spend": spend, "beta": beta, "name": name}
        context = EvaluationContext("u", attributes=attrs)
        assert evaluate(compiled, "tiers", context) == explain(compiled, "tiers", context).result

    def test_many_rules(self) -> None:
        """The first of many matching rules wins."""
        rules = [rule("n", "gte", [i], f"v{i % 3}", id=f"r{i}") for i in range(200, 0, -1)]
        flag = string_flag("f", rules=rules)
        flag["variations"] += [{"key": f"v{i}", "value": f"v{i}"} for i in range(3)]
        result = evaluate(_compile(flag), "f", EvaluationContext(attributes={"n": 150}))
        assert result.rule_id == "r150"


class TestRollout:
    """Percentage rollouts."""

    def test_shares_follow_weights(self) -> None:
        """Over 20,000 users each slot's share is within one point of its weight."""
        flag = string_flag("f") | {"default": _rollout(("a", 10), ("b", 25.5), ("c", 64.5))}
        flag["variations"] = [{"key": k, "value": k} for k in "abc"]
        flag["off_variation"] = "a"
        compiled = _compile(flag)
        counts = {"a": 0, "b": 0, "c": 0}
        for i in range(20_000):
            counts[evaluate(compiled, "f", EvaluationContext(f"user-{i}")).value] += 1
        for key, weight in (("a", 10), ("b", 25.5), ("c", 64.5)):
            assert abs(counts[key] / 200 - weight) < 1.0, counts

    def test_served_slot_follows_the_bucket(self) -> None:
        """The served slot is the first whose cumulative threshold exceeds bucket(salt, key)."""
        compiled = _compile(
            boolean_flag("f") | {"default": _rollout(("on", 12.345), ("off", 87.655))}
        )
        for i in range(2000):
            expected = "on" if bucket("f", f"u{i}") < 12_345 else "off"
            assert evaluate(compiled, "f", EvaluationContext(f"u{i}")).variation_key == expected

    def test_changing_weights_only_moves_users_up(self) -> None:
        """Raising the first weight keeps everyone who was in it (stable buckets)."""

        def served(percent: float) -> set[int]:
            compiled = _compile(
                boolean_flag("f") | {"default": _rollout(("on", percent), ("off", 100 - percent))}
            )
            return {
                i for i in range(3000) if evaluate(compiled, "f", EvaluationContext(f"u{i}")).value
            }

        assert served(10) <= served(20) <= served(50)

    def test_datetime_bucketing_attribute(self) -> None:
        """A datetime bucket_by value is bucketed by its ISO text (UTC)."""
        compiled = _compile(
            boolean_flag("f") | {"default": _rollout(("on", 50), ("off", 50), bucket_by="t")}
        )
        when = datetime(2024, 1, 1, tzinfo=timezone.utc)
        expected = "on" if bucket("f", when.isoformat()) < 50_000 else "off"
        assert (
            evaluate(compiled, "f", EvaluationContext(attributes={"t": when})).variation_key
            == expected
        )


class TestSegments:
    """Segment membership through in_segment."""

    def test_segment_cycle_isolates_users_of_the_segments(self) -> None:
        """Segments referring to each other in a cycle are dropped; flags using them are invalid."""
        segments = [
            {"key": "a", "rules": [{"conditions": [{"operator": "in_segment", "values": ["b"]}]}]},
            {"key": "b", "rules": [{"conditions": [{"operator": "in_segment", "values": ["a"]}]}]},
            {"key": "c", "included": ["u"]},
        ]
        flags = [
            boolean_flag("uses-a", False, rules=[_in_segment("a")]),
            boolean_flag("uses-c", False, rules=[_in_segment("c")]),
        ]
        compiled = _compile(*flags, segments=segments)
        assert (
            evaluate(compiled, "uses-a", EvaluationContext("u")).error_code
            == ErrorCode.INVALID_FLAG
        )
        assert evaluate(compiled, "uses-c", EvaluationContext("u")).value is True
        assert {p for p, _ in compiled.problems} >= {"segments[0]", "segments[1]"}

    def test_segment_rules_use_all_operators(self) -> None:
        """Segment rules accept any operator, e.g. a semver range."""
        segments = [
            {
                "key": "new-apps",
                "rules": [{"conditions": [_condition("app", "semver_gte", ["2.0.0"])]}],
            }
        ]
        flag = boolean_flag("f", False, rules=[_in_segment("new-apps")])
        compiled = _compile(flag, segments=segments)
        assert evaluate(compiled, "f", EvaluationContext(attributes={"app": "2.1.0"})).value is True
        assert (
            evaluate(compiled, "f", EvaluationContext(attributes={"app": "1.9.9"})).value is False
        )


class TestInvalidFlagIsolation:
    """An isolated flag affects nothing else."""

    def test_isolated_flag_result(self) -> None:
        """An invalid flag always returns the same INVALID_FLAG result, with its problem."""
        compiled = _compile(boolean_flag("bad", rules=[rule("x", "resembles", ["y"], "on")]),
                            boolean_flag("good"))  # fmt: skip
        result = evaluate(compiled, "bad", EvaluationContext("u", attributes={"x": "y"}))
        assert result == EvaluationResult(
            "bad", None, Reason.ERROR, error_code=ErrorCode.INVALID_FLAG,
            error_message="unknown operator 'resembles'",
        )  # fmt: skip
        assert compiled.problems == (
            ("flags[0].rules[0].conditions[0]", "unknown operator 'resembles'"),
        )
        assert evaluate(compiled, "good").value is True


class TestExplain:
    """explain(): the same result plus a readable trace of every decision."""

    def _explain(
        self, *flags: dict[str, Any], key: str, context: EvaluationContext | None = None
    ) -> Any:
        compiled = _compile(*flags)
        explanation = explain(compiled, key, context)
        assert explanation.result == evaluate(compiled, key, context)
        return explanation

    def test_missing(self) -> None:
        """A missing flag is one 'missing' step."""
        explanation = self._explain(boolean_flag("a"), key="nope")
        assert explanation.steps == ({"step": "missing", "flag": "nope"},)
        assert explanation.lines() == ["flag 'nope' is not in the ruleset"]

    def test_invalid_and_disabled(self) -> None:
        """Invalid and disabled flags explain themselves in one step."""
        bad = self._explain(boolean_flag("a", rules=[rule("x", "resembles", ["y"], "on")]), key="a")
        assert bad.steps[0]["step"] == "invalid"
        assert bad.steps[0]["path"] == ".rules[0].conditions[0]"
        assert "unknown operator" in bad.lines()[0]
        off = self._explain(boolean_flag("a", enabled=False), key="a")
        assert off.lines() == ["flag is disabled: serving the off variation"]

    def test_rule_trace_names_the_failing_condition(self) -> None:
        """A rule that fails records the condition that failed and the value it saw."""
        flag = boolean_flag("a", False, rules=[
            {"id": "us-pro", "conditions": [_condition("country", "in", ["US"]),
                                            _condition("plan", "in", ["pro"])],
             "serve": {"variation": "on"}},
        ])  # fmt: skip
        explanation = self._explain(flag, key="a", context=EvaluationContext(
            "u", attributes={"country": "US", "plan": "free"}))  # fmt: skip
        rule_step = explanation.steps[0]
        assert rule_step["matched"] is False
        assert rule_step["failed_condition"]["attribute"] == "plan"
        assert rule_step["context_value"] == "free"
        assert explanation.steps[-1] == {"step": "default"}
        assert "rule 0 (us-pro): condition 'plan' in ['pro'] failed" in explanation.lines()[0]

    def test_prerequisite_and_target_steps(self) -> None:
        """Prerequisites and targets each leave a step."""
        flags = [
            boolean_flag("p"),
            boolean_flag("a", False, prerequisites=[{"flag": "p", "variation": "on"}],
                         targets=[{"variation": "on", "user_ids": ["vip"]}]),
        ]  # fmt: skip
        explanation = self._explain(*flags, key="a", context=EvaluationContext("vip"))
        assert [s["step"] for s in explanation.steps] == ["prerequisite", "targets"]
        assert explanation.lines()[1] == "target lists for user_id='vip': matched"

    def test_rollout_step_shows_the_bucket(self) -> None:
        """A rollout step records key, salt, bucket and thresholds."""
        flag = boolean_flag("a") | {"default": _rollout(("on", 50), ("off", 50), seed="s")}
        explanation = self._explain(flag, key="a", context=EvaluationContext("user-1"))
        step = explanation.steps[-1]
        assert step == {
            "step": "rollout", "bucket_by": "user_id", "key": "user-1", "salt": "s",
            "bucket": bucket("s", "user-1"), "thresholds": [50_000, 100_000],
        }  # fmt: skip

    def test_rollout_without_key(self) -> None:
        """A rollout with no bucketing key says so."""
        flag = boolean_flag("a") | {"default": _rollout(("on", 50), ("off", 50))}
        explanation = self._explain(flag, key="a")
        assert "no bucketing key" in explanation.lines()[-1]

    def test_long_and_huge_values_stay_printable(self) -> None:
        """Long strings are shortened and huge ints summarised in the trace."""
        flag = boolean_flag(
            "a", False, rules=[rule("s", "in", ["x"], "on"), rule("n", "gt", [0], "off")]
        )
        context = EvaluationContext(attributes={"s": "y" * 500, "n": -(10**5000)})
        explanation = self._explain(flag, key="a", context=context)
        assert len(explanation.steps[0]["context_value"]) == 80
        assert "-bit integer" in explanation.steps[1]["context_value"]
        assert all(len(line) < 400 for line in explanation.lines())
