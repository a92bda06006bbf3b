"""Compiling rulesets: schema errors with JSON paths, isolation, shorthand, incremental reuse."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from conftest import boolean_flag, number_flag, rule, ruleset, string_flag

from phaseflag._compile import MAX_PREREQUISITE_DEPTH, compile_ruleset, load_ruleset
from phaseflag._errors import RulesetError, RulesetTooLargeError
from phaseflag._evaluation import evaluate
from phaseflag._model import Ruleset
from phaseflag._schema import MAX_DOCUMENT_BYTES
from phaseflag.types import ErrorCode, EvaluationContext, Reason

Mutation = Callable[[dict[str, Any]], None]


def _base() -> dict[str, Any]:
    """A valid document touching every part of the schema; flags[3] is the busy one."""
    busy = boolean_flag(
        "busy",
        targets=[{"variation": "on", "user_ids": ["u1"]}],
        rules=[
            {
                "id": "r0",
                "conditions": [
                    {"attribute": "country", "operator": "in", "values": ["US"]},
                    {"attribute": "plan", "operator": "in", "values": ["pro"], "negate": False},
                ],
                "serve": {"variation": "on"},
            }
        ],
        default={"rollout": {"variations": [{"variation": "on", "weight": 50},
                                            {"variation": "off", "weight": 50}]}},
        prerequisites=[{"flag": "a", "variation": "on"}],
        salt="busy-salt",
        track_events=True,
    )  # fmt: skip
    segment = {
        "key": "beta",
        "included": ["u1"],
        "excluded": [],
        "rules": [
            {"conditions": [{"attribute": "email", "operator": "ends_with", "values": ["@x"]}]}
        ],
    }
    return ruleset(boolean_flag("a"), string_flag("b"), number_flag("c"), busy, segments=[segment])


def _at(document: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        document = document[part]
    return document


def setting(path: tuple[Any, ...], value: Any) -> Mutation:
    """A mutation that sets ``path`` to ``value``."""

    def mutate(document: dict[str, Any]) -> None:
        _at(document, path[:-1])[path[-1]] = value

    return mutate


def deleting(path: tuple[Any, ...]) -> Mutation:
    """A mutation that deletes ``path``."""

    def mutate(document: dict[str, Any]) -> None:
        del _at(document, path[:-1])[path[-1]]

    return mutate


def _errors(document: Any) -> list[tuple[str, str]]:
    with pytest.raises(RulesetError) as info:
        compile_ruleset(document)
    return list(info.value.errors)


R0 = ("flags", 3, "rules", 0)
C1 = (*R0, "conditions", 1)
ROLLOUT = ("flags", 3, "default", "rollout")

BAD_PAYLOADS: list[tuple[str, Mutation, str]] = [
    ("schema_version missing", deleting(("schema_version",)), "schema_version"),
    ("schema_version 2", setting(("schema_version",), 2), "schema_version"),
    ("version negative", setting(("version",), -1), "version"),
    ("version a string", setting(("version",), "7"), "version"),
    ("version a bool", setting(("version",), True), "version"),
    ("flags missing", deleting(("flags",)), "flags"),
    ("flags a string", setting(("flags",), "x"), "flags"),
    ("flag not an object", setting(("flags", 1), 5), "flags[1]"),
    ("flag key missing", deleting(("flags", 2, "key")), "flags[2].key"),
    ("flag key empty", setting(("flags", 2, "key"), ""), "flags[2].key"),
    ("flag key too long", setting(("flags", 2, "key"), "k" * 257), "flags[2].key"),
    ("flag key a list", setting(("flags", 2, "key"), ["a"]), "flags[2].key"),
    ("flag key duplicated", setting(("flags", 2, "key"), "a"), "flags[2].key"),
    ("type unknown", setting(("flags", 0, "type"), "integer"), "flags[0].type"),
    ("type missing", deleting(("flags", 0, "type")), "flags[0].type"),
    ("enabled a string", setting(("flags", 0, "enabled"), "yes"), "flags[0].enabled"),
    ("variations empty", setting(("flags", 0, "variations"), []), "flags[0].variations"),
    ("variations missing", deleting(("flags", 0, "variations")), "flags[0].variations"),
    ("variation value missing", deleting(("flags", 0, "variations", 1, "value")),
     "flags[0].variations[1].value"),
    ("variation key a number", setting(("flags", 0, "variations", 1, "key"), 1),
     "flags[0].variations[1].key"),
    ("off_variation empty", setting(("flags", 0, "off_variation"), ""), "flags[0].off_variation"),
    ("salt a number", setting(("flags", 3, "salt"), 5), "flags[3].salt"),
    ("track_events a string", setting(("flags", 3, "track_events"), "no"),
     "flags[3].track_events"),
    ("targets an object", setting(("flags", 3, "targets"), {}), "flags[3].targets"),
    ("target user_ids a string", setting(("flags", 3, "targets", 0, "user_ids"), "u1"),
     "flags[3].targets[0].user_ids"),
    ("target user id a number", setting(("flags", 3, "targets", 0, "user_ids"), ["u", 1]),
     "flags[3].targets[0].user_ids[1]"),
    ("target variation missing", deleting(("flags", 3, "targets", 0, "variation")),
     "flags[3].targets[0].variation"),
    ("rules an object", setting(("flags", 3, "rules"), {}), "flags[3].rules"),
    ("rule serve missing", deleting((*R0, "serve")), "flags[3].rules[0].serve"),
    ("rule conditions missing", deleting((*R0, "conditions")), "flags[3].rules[0].conditions"),
    ("rule id a number", setting((*R0, "id"), 7), "flags[3].rules[0].id"),
    ("serve names both", setting((*R0, "serve"), {"variation": "on", "rollout": {
        "variations": [{"variation": "on", "weight": 100}]}}), "flags[3].rules[0].serve"),
    ("serve names neither", setting((*R0, "serve"), {}), "flags[3].rules[0].serve"),
    ("condition operator missing", deleting((*C1, "operator")),
     "flags[3].rules[0].conditions[1].operator"),
    ("condition operator empty", setting((*C1, "operator"), ""),
     "flags[3].rules[0].conditions[1].operator"),
    ("condition operator a number", setting((*C1, "operator"), 3),
     "flags[3].rules[0].conditions[1].operator"),
    ("condition attribute empty", setting((*C1, "attribute"), ""),
     "flags[3].rules[0].conditions[1].attribute"),
    ("condition values a string", setting((*C1, "values"), "pro"),
     "flags[3].rules[0].conditions[1].values"),
    ("condition value null", setting((*C1, "values"), [None]),
     "flags[3].rules[0].conditions[1].values[0]"),
    ("condition value an object", setting((*C1, "values"), ["a", {}]),
     "flags[3].rules[0].conditions[1].values[1]"),
    ("condition negate a string", setting((*C1, "negate"), "yes"),
     "flags[3].rules[0].conditions[1].negate"),
    ("condition not an object", setting((*C1,), "plan=pro"), "flags[3].rules[0].conditions[1]"),
    ("rollout variations missing", setting(ROLLOUT, {}), "flags[3].default.rollout.variations"),
    ("rollout variations empty", setting((*ROLLOUT, "variations"), []),
     "flags[3].default.rollout.variations"),
    ("weight negative", setting((*ROLLOUT, "variations", 0, "weight"), -1),
     "flags[3].default.rollout.variations[0].weight"),
    ("weight over 100", setting((*ROLLOUT, "variations", 0, "weight"), 100.5),
     "flags[3].default.rollout.variations[0].weight"),
    ("weight a string", setting((*ROLLOUT, "variations", 1, "weight"), "50"),
     "flags[3].default.rollout.variations[1].weight"),
    ("bucket_by empty", setting((*ROLLOUT, "bucket_by"), ""),
     "flags[3].default.rollout.bucket_by"),
    ("prerequisite variation missing", deleting(("flags", 3, "prerequisites", 0, "variation")),
     "flags[3].prerequisites[0].variation"),
    ("too many prerequisites", setting(("flags", 3, "prerequisites"),
     [{"flag": "a", "variation": "on"}] * 101), "flags[3].prerequisites"),
    ("segments an object", setting(("segments",), {}), "segments"),
    ("segment not an object", setting(("segments", 0), "beta"), "segments[0]"),
    ("segment key missing", deleting(("segments", 0, "key")), "segments[0].key"),
    ("segment key a list", setting(("segments", 0, "key"), ["beta"]), "segments[0].key"),
    ("segment included numbers", setting(("segments", 0, "included"), [1]),
     "segments[0].included[0]"),
    ("segment rule without conditions", setting(("segments", 0, "rules"), [{}]),
     "segments[0].rules[0].conditions"),
    ("segment condition without operator", setting(("segments", 0, "rules"),
     [{"conditions": [{"attribute": "a"}]}]), "segments[0].rules[0].conditions[0].operator"),
]  # fmt: skip


def _rejects(path: str) -> bool:
    """Errors at these paths reject the whole document; inside a flag they isolate it."""
    return not re.match(r"flags\[\d+\]\.(?!key$)", path)


class TestSchemaErrors:
    """A document whose shape fails the schema is rejected whole, every error naming its
    JSON path; a flag failing it inside is isolated with that path (checked lazily)."""

    def test_base_document_is_valid(self) -> None:
        """The document the bad payloads start from compiles without problems."""
        compiled = compile_ruleset(_base())
        assert compiled.problems == ()
        assert set(compiled.flags) == {"a", "b", "c", "busy"}

    @pytest.mark.parametrize(
        ("mutate", "path"), [pytest.param(m, p, id=name) for name, m, p in BAD_PAYLOADS]
    )
    def test_bad_payload(self, mutate: Mutation, path: str) -> None:
        """The bad payload raises RulesetError listing its JSON path, or (inside a flag)
        isolates that flag alone: INVALID_FLAG, its path in ``problems``."""
        document = _base()
        mutate(document)
        if _rejects(path):
            errors = _errors(document)
            assert path in [p for p, _ in errors], errors
            return
        compiled = compile_ruleset(document)
        index = int(path[len("flags[") : path.index("]")])
        key = document["flags"][index]["key"]
        assert path in [p for p, _ in compiled.problems], compiled.problems
        result = evaluate(compiled, key, EvaluationContext(user_id="u1"))
        assert result.error_code == ErrorCode.INVALID_FLAG
        others = [f["key"] for f in document["flags"] if f["key"] != key]
        assert all(compiled.flags[k].error is None for k in others if k != "busy" or key != "a")

    def test_duplicate_segment_key(self) -> None:
        """Two segments with one key are rejected at the second."""
        document = _base()
        document["segments"].append({"key": "beta"})
        assert ("segments[1].key", "duplicate segment key 'beta'") in _errors(document)

    @pytest.mark.parametrize("document", [[], "ruleset", None, 42])
    def test_document_must_be_an_object(self, document: Any) -> None:
        """A non-object document is rejected at the root."""
        assert [p for p, _ in _errors(document)] == ["(document)"]

    def test_every_error_is_reported_in_path_order(self) -> None:
        """Errors across flags and segments are all listed, sorted by path."""
        document = _base()
        setting(("flags", 0, "key"), "")(document)
        setting(("flags", 2, "key"), "")(document)
        deleting(("segments", 0, "key"))(document)
        errors = _errors(document)
        paths = [p for p, _ in errors]
        assert {"flags[0].key", "flags[2].key", "segments[0].key"} <= set(paths)

    def test_error_message_names_paths(self) -> None:
        """The exception text carries the path and message; RulesetError is a ValueError."""
        document = _base()
        deleting(("segments", 0, "rules", 0, "conditions", 0, "operator"))(document)
        with pytest.raises(ValueError, match=r"segments\[0\]\.rules\[0\]\.conditions\[0\]"):
            compile_ruleset(document)

    def test_serve_message_is_explained(self) -> None:
        """A serve with both or neither target gets a readable message (the flag isolated)."""
        document = _base()
        setting((*R0, "serve"), {})(document)
        problems = compile_ruleset(document).problems
        assert ("flags[3].rules[0].serve", "must name exactly one of 'variation' or 'rollout'") in (
            problems
        )


class TestParsing:
    """load_ruleset: JSON text under size and depth limits."""

    def test_valid_text(self) -> None:
        """Bytes and str both load."""
        text = json.dumps(_base())
        assert set(load_ruleset(text).flags) == set(load_ruleset(text.encode()).flags)

    @pytest.mark.parametrize("raw", ["{", "", "nope", b"\xff\xfe{}", '{"flags": [] '])
    def test_not_json(self, raw: str | bytes) -> None:
        """Text that is not JSON is a RulesetError (not the too-large subclass)."""
        with pytest.raises(RulesetError) as info:
            load_ruleset(raw)
        assert type(info.value) is RulesetError

    def test_size_limit(self) -> None:
        """A document over MAX_DOCUMENT_BYTES is refused before parsing."""
        text = json.dumps(_base())
        padded = text + " " * (MAX_DOCUMENT_BYTES - len(text) + 1)
        with pytest.raises(RulesetTooLargeError):
            load_ruleset(padded)
        assert load_ruleset(padded[:-1]).flags

    def test_nesting_limit(self) -> None:
        """Absurdly deep JSON is refused as too large, not a RecursionError."""
        with pytest.raises(RulesetTooLargeError):
            load_ruleset("[" * 100_000 + "]" * 100_000)

    def test_nan_number_value_is_isolated(self) -> None:
        """A dict holding NaN isolates that flag; NaN in JSON text is not JSON at all."""
        document = ruleset(number_flag("n", float("nan")), boolean_flag("ok"))
        compiled = compile_ruleset(document)
        assert evaluate(compiled, "n").error_code == ErrorCode.INVALID_FLAG
        assert evaluate(compiled, "ok").value is True
        with pytest.raises(RulesetError, match="NaN is not a valid JSON value"):
            load_ruleset(json.dumps(document))

    def test_huge_integers_do_not_crash(self) -> None:
        """A number value beyond the float range isolates its flag (a getter converting it
        would raise OverflowError); as an operand it is still valid."""
        big = 10**400
        flag = number_flag("n", big, rules=[rule("score", "gt", [big], "value")])
        compiled = compile_ruleset(ruleset(flag))
        result = evaluate(compiled, "n")
        assert result.error_code == "INVALID_FLAG"
        assert "finite IEEE double" in (result.error_message or "")
        operand = number_flag("m", 1, rules=[rule("score", "gt", [big], "value")])
        assert compile_ruleset(ruleset(operand)).flags["m"].error is None


def _flag_with(**fields: Any) -> dict[str, Any]:
    flag = boolean_flag("bad")
    flag.update(fields)
    return flag


def _rollout(*weights: float, names: tuple[str, ...] = ("on", "off")) -> dict[str, Any]:
    return {
        "rollout": {
            "variations": [
                {"variation": n, "weight": w} for n, w in zip(names, weights, strict=True)
            ]
        }
    }


def _cond(operator: str, values: list[Any], attribute: str | None = "attr") -> list[dict[str, Any]]:
    condition: dict[str, Any] = {"operator": operator, "values": values}
    if attribute is not None:
        condition["attribute"] = attribute
    return [{"conditions": [condition], "serve": {"variation": "on"}}]


C0 = ".rules[0].conditions[0]"
ISOLATION_CAUSES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown operator", _flag_with(rules=_cond("resembles", ["x"])), C0),
    ("bad regex", _flag_with(rules=_cond("matches", ["(x"])), C0),
    ("regex RE2 lacks", _flag_with(rules=_cond("matches", [r"(x)\1"])), C0),
    ("regex too long", _flag_with(rules=_cond("matches", ["x" * 257])), C0),
    ("bad semver operand", _flag_with(rules=_cond("semver_gt", ["1.x"])), C0),
    ("bad date operand", _flag_with(rules=_cond("before", ["soon"])), C0),
    ("bad number operand", _flag_with(rules=_cond("gt", ["many"])), C0),
    ("no operands", _flag_with(rules=_cond("in", [])), C0),
    ("no attribute", _flag_with(rules=_cond("in", ["x"], attribute=None)), C0),
    ("unknown segment", _flag_with(rules=_cond("in_segment", ["ghosts"], attribute=None)),
     C0),
    ("unknown off variation", _flag_with(off_variation="none"), ".off_variation"),
    ("unknown target variation", _flag_with(targets=[{"variation": "x", "user_ids": ["u"]}]),
     ".targets[0].variation"),
    ("unknown rule variation", _flag_with(rules=[{"conditions": [], "serve": {"variation": "x"}}]),
     ".rules[0].serve.variation"),
    ("unknown default variation", _flag_with(default={"variation": "x"}), ".default.variation"),
    ("unknown rollout variation", _flag_with(default=_rollout(50, 50, names=("on", "x"))),
     ".default.rollout.variations[1].variation"),
    ("weights sum to 99.999", _flag_with(default=_rollout(50, 49.999)), ".default.rollout"),
    ("weights sum to 100.5", _flag_with(default=_rollout(50, 50.5)), ".default.rollout"),
    ("weights with four decimals", _flag_with(default=_rollout(33.3333, 66.6667)),
     ".default.rollout.variations[0].weight"),
    ("duplicate variation key", _flag_with(variations=[{"key": "on", "value": True},
     {"key": "on", "value": False}]), ".variations[1].key"),
    ("boolean flag with a string", _flag_with(variations=[{"key": "on", "value": "yes"}]),
     ".variations[0].value"),
    ("string flag with a number", string_flag("bad", 1), ".variations[0].value"),
    ("number flag with a string", number_flag("bad", "1"), ".variations[0].value"),  # type: ignore[arg-type]
    ("number flag with a bool", number_flag("bad", True), ".variations[0].value"),
    ("json flag with a string", {"key": "bad", "type": "json", "variations": [
        {"key": "v", "value": "{}"}]}, ".variations[0].value"),
    ("json flag nested too deeply", {"key": "bad", "type": "json", "variations": [
        {"key": "v", "value": json.loads("[" * 40 + "]" * 40)}]}, ".variations[0].value"),
]  # fmt: skip


class TestIsolation:
    """A schema-valid but unusable flag is isolated; the other flags load."""

    @pytest.mark.parametrize(
        ("bad", "path"), [pytest.param(f, p, id=name) for name, f, p in ISOLATION_CAUSES]
    )
    def test_isolated(self, bad: dict[str, Any], path: str) -> None:
        """The bad flag evaluates to INVALID_FLAG, the good one normally, problems name the path."""
        compiled = compile_ruleset(ruleset(boolean_flag("good"), bad))
        result = evaluate(compiled, "bad", EvaluationContext(user_id="u", attributes={"attr": "x"}))
        assert (result.value, result.variation_key, result.reason, result.error_code) == (
            None, None, Reason.ERROR, ErrorCode.INVALID_FLAG,
        )  # fmt: skip
        assert result.error_message
        assert evaluate(compiled, "good").value is True
        assert [p for p, _ in compiled.problems] == [f"flags[1]{path}"]
        assert compiled.flags["bad"].error_path == path

    def test_exactly_three_decimals_are_allowed(self) -> None:
        """Weights like 33.333 / 33.333 / 33.334 sum exactly to 100."""
        flag = string_flag("f", default=_rollout(33.333, 33.333, 33.334, names=("a", "b", "c")))
        flag["variations"] = [{"key": k, "value": k} for k in "abc"]
        flag["off_variation"] = "a"
        assert compile_ruleset(ruleset(flag)).problems == ()

    def test_unknown_fields_are_ignored(self) -> None:
        """Fields the schema does not know, at any level, neither fail nor change evaluation."""
        document = _base()
        document["future"] = {"x": 1}
        busy = document["flags"][3]
        busy["owner"] = "team-a"
        busy["rules"][0]["weight"] = 3
        busy["rules"][0]["conditions"][0]["unit"] = "iso"
        busy["default"]["rollout"]["strategy"] = "v2"
        busy["default"]["rollout"]["variations"][0]["label"] = "A"
        busy["variations"][0]["meta"] = [1, 2]
        busy["targets"][0]["note"] = None
        document["segments"][0]["tags"] = ["x"]
        compiled = compile_ruleset(document)
        plain = compile_ruleset(_base())
        assert compiled.problems == ()
        for user in ("u1", "u2", "u3"):
            context = EvaluationContext(user, attributes={"country": "US", "plan": "pro"})
            assert evaluate(compiled, "busy", context) == evaluate(plain, "busy", context)


def _chain(*links: tuple[str, str | None]) -> dict[str, Any]:
    """Flags named by ``links`` as (key, prerequisite key or None)."""
    flags = []
    for key, parent in links:
        fields: dict[str, Any] = {}
        if parent is not None:
            fields["prerequisites"] = [{"flag": parent, "variation": "on"}]
        flags.append(boolean_flag(key, **fields))
    return ruleset(*flags)


class TestPrerequisiteGraph:
    """Cycles isolate exactly their members; long chains are cut at the depth limit."""

    def test_two_flag_cycle(self) -> None:
        """Both members are isolated; a flag depending on the cycle only fails its prerequisite."""
        compiled = compile_ruleset(_chain(("a", "b"), ("b", "a"), ("c", "a"), ("d", None)))
        assert evaluate(compiled, "a").error_code == ErrorCode.INVALID_FLAG
        assert evaluate(compiled, "b").error_code == ErrorCode.INVALID_FLAG
        assert evaluate(compiled, "c").reason == Reason.PREREQUISITE_FAILED
        assert evaluate(compiled, "d").value is True
        assert {p for p, _ in compiled.problems} == {
            "flags[0].prerequisites",
            "flags[1].prerequisites",
        }

    def test_self_cycle(self) -> None:
        """A flag that requires itself is isolated."""
        compiled = compile_ruleset(_chain(("a", "a")))
        assert compiled.flags["a"].error == "prerequisite cycle among a"

    def test_cycle_members_do_not_depend_on_order(self) -> None:
        """Every flag of a strongly connected group is isolated, whatever the listing order."""
        flags = _chain(("a", "b"), ("b", "a"), ("c", "b"), ("x", "a"))["flags"]
        flags[0]["prerequisites"].append({"flag": "c", "variation": "on"})  # a -> c -> b -> a
        for order in (flags, flags[::-1], flags[1:] + flags[:1]):
            compiled = compile_ruleset(ruleset(*order))
            isolated = {k for k, f in compiled.flags.items() if f.error}
            assert isolated == {"a", "b", "c"}
            assert evaluate(compiled, "x").reason == Reason.PREREQUISITE_FAILED

    def test_depth_limit(self) -> None:
        """A chain of MAX_PREREQUISITE_DEPTH links is fine; one more isolates the next flag only."""
        links = [("f0", None)] + [(f"f{i}", f"f{i - 1}") for i in range(1, 20)]
        for order in (links, links[::-1]):
            compiled = compile_ruleset(_chain(*order))
            isolated = {k for k, f in compiled.flags.items() if f.error}
            assert isolated == {f"f{MAX_PREREQUISITE_DEPTH + 1}"}
            assert evaluate(compiled, f"f{MAX_PREREQUISITE_DEPTH}").value is True
            assert evaluate(compiled, "f19").reason == Reason.PREREQUISITE_FAILED

    @pytest.mark.slow
    def test_very_long_chains_compile_quickly(self) -> None:
        """Thousands of chained flags neither recurse too deep nor depend on order."""
        links = [("f0", None)] + [(f"f{i}", f"f{i - 1}") for i in range(1, 3000)]
        forward = compile_ruleset(_chain(*links))
        backward = compile_ruleset(_chain(*links[::-1]))
        isolated = {k for k, f in forward.flags.items() if f.error}
        assert isolated == {k for k, f in backward.flags.items() if f.error}
        # Evaluation stops at an isolated flag, so every 17th link is cut.
        assert isolated == {f"f{i}" for i in range(17, 3000, 17)}

    def test_missing_prerequisite_is_not_a_cycle(self) -> None:
        """A prerequisite naming no flag fails at evaluation; the flag stays valid."""
        compiled = compile_ruleset(_chain(("a", "ghost")))
        assert compiled.problems == ()
        assert evaluate(compiled, "a").reason == Reason.PREREQUISITE_FAILED


class TestShorthand:
    """{"flags": {key: value}} compiles to static flags with inferred types."""

    def test_types_are_inferred(self) -> None:
        """Each value's JSON type becomes the flag type; the variation is "static"."""
        compiled = compile_ruleset(
            {"flags": {"b": True, "s": "x", "i": 3, "f": 0.5, "o": {"k": [1]}, "l": [1, 2]}}
        )
        assert compiled.shorthand is True
        types = {key: flag.type for key, flag in compiled.flags.items()}
        assert types == {"b": "boolean", "s": "string", "i": "number", "f": "number",
                         "o": "json", "l": "json"}  # fmt: skip
        result = evaluate(compiled, "o")
        assert (result.value, result.variation_key, result.reason) == (
            {"k": [1]},
            "static",
            "default",
        )

    def test_configs_and_version(self) -> None:
        """A "configs" object adds flags and "version" is kept."""
        compiled = compile_ruleset({"flags": {"a": 1}, "configs": {"b": "x"}, "version": 9})
        assert set(compiled.flags) == {"a", "b"} and compiled.version == 9

    def test_null_value_is_isolated(self) -> None:
        """null fits no flag type: that flag is INVALID_FLAG, the others load."""
        compiled = compile_ruleset({"flags": {"gone": None, "ok": True}})
        assert evaluate(compiled, "gone").error_code == ErrorCode.INVALID_FLAG
        assert evaluate(compiled, "ok").value is True

    def test_bad_key_is_rejected(self) -> None:
        """An empty flag key fails the schema."""
        assert [p for p, _ in _errors({"flags": {"": True}})] == ["flags[0].key"]

    def test_schema_version_document_cannot_use_an_object(self) -> None:
        """flags must be an array once schema_version is given."""
        assert _errors({"schema_version": 1, "flags": {"a": True}}) == [
            ("flags", "must be an array in a schema_version document")
        ]


class TestIncremental:
    """compile_ruleset(previous=...) reuses the compiled flags whose definition did not change."""

    def _documents(self) -> tuple[dict[str, Any], dict[str, Any]]:
        old = _base()
        old["flags"].append(boolean_flag("seg-user", rules=_cond("in_segment", ["beta"], None)))
        new = copy.deepcopy(old)
        new["version"] = 2
        new["flags"][1]["variations"][0]["value"] = "green"
        return old, new

    def test_unchanged_flags_are_reused(self) -> None:
        """Unchanged compiled flags are the same objects; the changed one is recompiled."""
        old, new = self._documents()
        first = compile_ruleset(old)
        first.flags.compile_all()
        second = compile_ruleset(new, previous=first)
        for key in ("a", "c", "busy", "seg-user"):
            assert second.flags[key] is first.flags[key], key
        assert second.flags["b"] is not first.flags["b"]
        assert evaluate(second, "b").value == "green"
        assert second.version == 2

    def test_reparsed_equal_document_is_reused(self) -> None:
        """The flag's JSON text, not the identity of parsed dicts, decides reuse."""
        first = load_ruleset(json.dumps(_base()))
        second = load_ruleset(json.dumps(_base()), previous=first)
        assert all(second.flags[k] is first.flags[k] for k in first.flags)
        third = compile_ruleset(_base(), previous=compile_ruleset(_base()))
        assert third.flags.keys() == first.flags.keys()

    def test_reformatted_document_recompiles_to_equal_results(self) -> None:
        """Whitespace changes are not reuse hits, but the recompiled flags behave the same."""
        first = load_ruleset(json.dumps(_base()))
        second = load_ruleset(json.dumps(_base(), indent=2), previous=first)
        for key, flag in first.flags.items():
            assert second.flags[key] is not flag
            assert second.flags[key].source == flag.source

    def test_added_and_removed_flags(self) -> None:
        """New flags are compiled and removed ones disappear."""
        first = compile_ruleset(ruleset(boolean_flag("a"), boolean_flag("b")))
        first.flags.compile_all()
        second = compile_ruleset(ruleset(boolean_flag("a"), boolean_flag("c")), previous=first)
        assert set(second.flags) == {"a", "c"}
        assert second.flags["a"] is first.flags["a"]

    def test_segment_change_recompiles_segment_users_only(self) -> None:
        """Changing segments recompiles flags that use them and reuses the rest."""
        old, _ = self._documents()
        new = copy.deepcopy(old)
        new["segments"][0]["included"] = ["u2"]
        first = compile_ruleset(old)
        first.flags.compile_all()
        second = compile_ruleset(new, previous=first)
        assert second.flags["seg-user"] is not first.flags["seg-user"]
        assert second.flags["a"] is first.flags["a"]
        assert (
            evaluate(second, "seg-user", EvaluationContext("u2")).reason == Reason.TARGETING_MATCH
        )
        assert evaluate(first, "seg-user", EvaluationContext("u2")).reason == Reason.DEFAULT

    def test_isolated_flag_recovers_when_its_cycle_is_broken(self) -> None:
        """An unchanged flag isolated by a cycle is valid again once the other member changes."""
        first = compile_ruleset(_chain(("a", "b"), ("b", "a")))
        second = compile_ruleset(_chain(("a", "b"), ("b", None)), previous=first)
        assert second.problems == ()
        assert evaluate(second, "a").value is True

    def test_unchanged_flag_joins_a_new_cycle(self) -> None:
        """An unchanged flag is isolated when another flag's change closes a cycle through it."""
        first = compile_ruleset(_chain(("a", "b"), ("b", None)))
        second = compile_ruleset(_chain(("a", "b"), ("b", "a")), previous=first)
        assert {k for k, f in second.flags.items() if f.error} == {"a", "b"}

    def test_isolated_flag_recovers_when_its_segment_appears(self) -> None:
        """An unchanged flag isolated for an unknown segment compiles once the segment exists."""
        flag = boolean_flag("f", rules=_cond("in_segment", ["beta"], None))
        first = compile_ruleset(ruleset(flag))
        assert first.flags["f"].error
        second = compile_ruleset(ruleset(flag, segments=[{"key": "beta"}]), previous=first)
        assert second.flags["f"].error is None

    def test_segment_problems_survive_reuse(self) -> None:
        """Problems of reused (unchanged) segments are still reported."""
        document = ruleset(boolean_flag("a"), segments=[
            {"key": "s", "rules": [{"conditions": [{"attribute": "x", "operator": "bogus"}]}]}
        ])  # fmt: skip
        first = compile_ruleset(document)
        second = compile_ruleset(copy.deepcopy(document), previous=first)
        assert first.problems and second.problems == first.problems

    def test_changed_flags_are_still_validated(self) -> None:
        """A changed flag is validated despite previous=: isolated when its contents fail
        the schema, the document rejected when its key does."""
        first = compile_ruleset(_base())
        first.flags.compile_all()
        document = _base()
        document["flags"][0]["type"] = "bad"
        second = compile_ruleset(document, previous=first)
        assert [p for p, _ in second.problems] == ["flags[0].type"]
        document["flags"][0]["key"] = ""
        with pytest.raises(RulesetError):
            compile_ruleset(document, previous=first)

    def test_previous_can_be_shorthand(self) -> None:
        """A shorthand ruleset can be the previous one of a full document."""
        first = compile_ruleset({"flags": {"a": True}})
        second = compile_ruleset(ruleset(boolean_flag("b")), previous=first)
        assert isinstance(second, Ruleset) and set(second.flags) == {"b"}
