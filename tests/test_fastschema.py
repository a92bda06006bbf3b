"""The fast yes/no schema check must agree with jsonschema on every document."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from phaseflag._fastschema import Unsupported, compile_check
from phaseflag._schema import load_schema

SCHEMA = load_schema()


def _reference(definition: str) -> Draft202012Validator:
    return Draft202012Validator({"$defs": SCHEMA["$defs"], "$ref": f"#/$defs/{definition}"})


VALID_FLAG: dict[str, Any] = {
    "key": "f",
    "type": "boolean",
    "enabled": True,
    "variations": [{"key": "on", "value": True}, {"key": "off", "value": False}],
    "off_variation": "off",
    "targets": [{"variation": "on", "user_ids": ["u1"]}],
    "rules": [
        {
            "id": "r",
            "conditions": [
                {"attribute": "plan", "operator": "in", "values": ["pro", 1, True]},
                {"operator": "in_segment", "values": ["beta"], "negate": True},
            ],
            "serve": {
                "rollout": {
                    "bucket_by": "user_id",
                    "seed": "s",
                    "variations": [
                        {"variation": "on", "weight": 12.5},
                        {"variation": "off", "weight": 87.5},
                    ],
                }
            },
        }
    ],
    "default": {"variation": "off"},
    "prerequisites": [{"flag": "g", "variation": "on"}],
    "salt": "x",
    "track_events": False,
}

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 200),
    st.floats(-1, 150, allow_nan=False),
    st.text(max_size=3),
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.extend(_paths(value, (*prefix, index)))
    return out


@st.composite
def mutated_flags(draw: st.DrawFn) -> Any:
    """A valid flag with a few random edits: replaced values, deleted or added keys."""
    flag = copy.deepcopy(VALID_FLAG)
    for _ in range(draw(st.integers(0, 3))):
        paths = [p for p in _paths(flag) if p]
        path = draw(st.sampled_from(paths))
        parent: Any = flag
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "empty", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(JSON_SCALARS)
        elif action == "delete":
            if isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent.pop(path[-1])
        elif action == "empty":
            parent[path[-1]] = draw(st.sampled_from([[], {}, ""]))
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(["variation", "rollout", "extra", "key"]))] = draw(
                JSON_SCALARS
            )
    return flag


@pytest.mark.soak
class TestAgreement:
    """compile_check(schema) answers exactly what jsonschema answers."""

    def test_valid_flag_passes_both(self) -> None:
        """The hand-written full flag is valid for both validators."""
        assert compile_check(SCHEMA, "flag")(VALID_FLAG)
        assert _reference("flag").is_valid(VALID_FLAG)

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(mutated_flags())
    def test_mutated_flags_agree(self, flag: Any) -> None:
        """Random edits of a valid flag are judged identically."""
        assert compile_check(SCHEMA, "flag")(flag) == _reference("flag").is_valid(flag)

    @settings(max_examples=200, deadline=None)
    @given(
        st.recursive(
            JSON_SCALARS,
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(
                    st.sampled_from(["key", "included", "rules", "x"]), inner, max_size=3
                )
            ),
            max_leaves=8,
        )
    )
    def test_arbitrary_segments_agree(self, value: Any) -> None:
        """Arbitrary JSON is judged identically as a segment."""
        assert compile_check(SCHEMA, "segment")(value) == _reference("segment").is_valid(value)

    def test_booleans_are_not_numbers(self) -> None:
        """``const: 1`` rejects ``true`` the way JSON Schema says (Python's True == 1)."""
        check = compile_check({"const": 1})
        assert check(1) and check(1.0) and not check(True)

    def test_unknown_keyword_is_refused(self) -> None:
        """A keyword outside the compiled subset raises instead of being ignored."""
        with pytest.raises(Unsupported):
            compile_check({"type": "string", "pattern": "^a"})
