"""Getters never raise, whatever the data, the defaults, the overrides or the context (issue
10): a hypothesis property drives every public getter and ``*_details`` method."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest
from conftest import boolean_flag, flag, ruleset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phaseflag import EvaluationContext, PhaseFlagClient

ODD_NUMBERS = st.sampled_from(
    [math.nan, math.inf, -math.inf, 10**400, -(10**400), 2**63, 1e308, -0.0, 5e-324]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    ODD_NUMBERS,
    st.text(max_size=8),
    st.binary(max_size=4),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
ATTRIBUTE_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), ODD_NUMBERS, st.text(max_size=8)
)
CONTEXTS = st.one_of(
    st.none(),
    st.builds(
        EvaluationContext,
        user_id=st.one_of(st.none(), st.text(max_size=6)),
        attributes=st.dictionaries(
            st.sampled_from(["plan", "n", "s"]), ATTRIBUTE_VALUES, max_size=3
        ),
    ),
    st.dictionaries(st.text(max_size=4), SCALARS, max_size=3),
    SCALARS,
)
KEYS = st.sampled_from(["b", "n", "big", "s", "j", "missing", "over"]) | st.text(max_size=4)
GETTERS = [
    "get_boolean_value",
    "get_string_value",
    "get_integer_value",
    "get_float_value",
    "get_json_value",
    "get_boolean_details",
    "get_string_details",
    "get_integer_details",
    "get_float_details",
    "get_json_details",
    "get_details",
]

DOCUMENT = ruleset(
    boolean_flag("b"),
    flag("n", "number", {"a": 1.5, "b": 2}, serve="a"),
    flag("big", "number", {"a": 10**400}, serve="a"),  # refused at compile: INVALID_FLAG
    flag("s", "string", {"a": "x"}, serve="a"),
    flag("j", "json", {"a": {"k": [1, 2]}}, serve="a"),
)
CLIENT = PhaseFlagClient("", bootstrap=DOCUMENT)


@pytest.mark.soak
@settings(
    max_examples=300,
    deadline=timedelta(seconds=2),
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    getter=st.sampled_from(GETTERS),
    key=KEYS,
    default=VALUES,
    override=st.one_of(st.just(None), VALUES),
    context=CONTEXTS,
)
def test_every_getter_returns(
    getter: str, key: str, default: Any, override: Any, context: Any
) -> None:
    """Each getter returns (never raises) for any key, default, override and context."""
    if override is not None:
        CLIENT.set_override("over", override)
    try:
        getattr(CLIENT, getter)(key, default, context)
        CLIENT.get_variation(key, context)
        CLIENT.all_flags(context)
        CLIENT.all_flags(context, details=True)
    finally:
        CLIENT.clear_all_overrides()


def test_the_rows_of_issue_10() -> None:
    """The reads that raised: float reads of a 401-digit number flag, odd defaults and an
    override of 10**400."""
    assert CLIENT.get_float_value("big", 1.0) == 1.0
    assert CLIENT.get_float_details("big", 1.0).error_code == "INVALID_FLAG"
    assert CLIENT.get_integer_details("missing", math.nan).value != 0  # the default, unharmed
    CLIENT.get_float_details("missing", 10**400)
    CLIENT.set_override("over", 10**400)
    try:
        assert CLIENT.get_float_value("over", 1.0) == 1.0
        CLIENT.get_float_details("over", 1.0)
        CLIENT.get_integer_value("over", 1)
        CLIENT.get_integer_details("over", 1)
    finally:
        CLIENT.clear_all_overrides()
    CLIENT.set_override("over", math.nan)
    try:
        assert CLIENT.get_integer_value("over", 7) == 7
        CLIENT.get_integer_details("over", 7)
    finally:
        CLIENT.clear_all_overrides()


def test_all_flags_evaluates_against_one_ruleset_snapshot() -> None:
    """all_flags() during ruleset swaps never mixes two versions: every flag of one result
    comes from the same ruleset (issue 10, item 8)."""
    import threading

    from phaseflag import compile_ruleset

    def version(v: int) -> Any:
        flags = [flag(f"f{i}", "string", {"a": f"v{v}"}, serve="a") for i in range(20)]
        return compile_ruleset(ruleset(*flags, version=v))

    rulesets = [version(v) for v in range(1, 41)]
    client = PhaseFlagClient("", bootstrap=ruleset(boolean_flag("x")))
    stop = threading.Event()

    def swap() -> None:
        n = 0
        while not stop.is_set():
            client._store.swap(rulesets[n % len(rulesets)], "live", None)
            n += 1

    swapper = threading.Thread(target=swap, name="swapper", daemon=True)
    swapper.start()
    mixed = 0
    try:
        for _ in range(2000):
            values = set(client.all_flags().values())
            mixed += len(values) > 1
    finally:
        stop.set()
        swapper.join(5.0)
    assert mixed == 0
