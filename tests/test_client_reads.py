"""The inlined read of the two hottest getters equals the shared read path.

``get_boolean_value`` and ``get_string_value`` inline ``_resolve()`` for speed (a hot-path
copy); these tests prove they return what ``_value()`` (the path every other getter
takes) returns and count evaluations alike, for every kind of flag, context, override,
default context and bad input.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import boolean_flag, rule, ruleset, string_flag
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phaseflag import EvaluationContext, PhaseFlagClient
from phaseflag._reads import BOOLEAN, STRING

SLOTS = [{"variation": "on", "weight": 50}, {"variation": "off", "weight": 50}]
FLAGS = [
    boolean_flag("static"),
    boolean_flag("off", enabled=False),
    boolean_flag("paid", False, rules=[rule("plan", "in", ["pro"], "on")], track_events=True),
    boolean_flag("split", default={"rollout": {"variations": SLOTS}}, track_events=True),
    boolean_flag("needs", prerequisites=[{"flag": "paid", "variation": "on"}]),
    string_flag("colour", "blue", rules=[rule("n", "gt", [3], "off")], track_events=True),
    string_flag("static_s", "red"),
    boolean_flag("bad", rules=[rule("plan", "nope", ["x"], "on")]),
    # The getters' precomputed answers: static untracked, generated untracked, targets.
    boolean_flag("static_t", track_events=True),
    string_flag("static_st", "green", track_events=True),
    boolean_flag("paid_u", False, rules=[rule("plan", "in", ["pro"], "on")]),
    boolean_flag("who", False, targets=[{"variation": "on", "user_ids": ["u1"]}]),
    # Set lookups: rules of one plain in/equals test each, on one attribute (first wins).
    string_flag(
        "tier",
        "blue",
        rules=[
            rule("plan", "in", ["pro", "team"], "off"),
            rule("plan", "equals", ["pro", "free"], "value"),
        ],
    ),
    boolean_flag(
        "either",
        False,
        rules=[rule("plan", "in", ["free"], "off"), rule("plan", "in", ["free", "pro"], "on")],
    ),
    boolean_flag(
        "mixed", False, rules=[rule("plan", "in", ["pro"], "on"), rule("n", "in", ["3"], "on")]
    ),
    boolean_flag(
        "negated",
        False,
        rules=[
            {
                **rule("plan", "in", ["pro"], "on"),
                "conditions": [
                    {"attribute": "plan", "operator": "in", "values": ["pro"], "negate": True}
                ],
            }
        ],
    ),
    string_flag(
        "split_s",
        default={
            "rollout": {
                "variations": [
                    {"variation": "value", "weight": 50},
                    {"variation": "off", "weight": 50},
                ]
            }
        },
    ),
]
KEYS = [f["key"] for f in FLAGS] + ["missing"]

contexts = st.one_of(
    st.none(),
    st.builds(
        EvaluationContext,
        st.sampled_from([None, "u1", "u2"]),
        st.sampled_from([None, "s1"]),
        st.fixed_dictionaries({}, optional={"plan": st.sampled_from(["pro", "free", "team"]),
                                            "n": st.integers(0, 6)}),
    ),
    st.fixed_dictionaries({"user_id": st.just("u3")}, optional={"plan": st.just("pro")}),
    st.just(EvaluationContext("u1", attributes={"plan": ["free", "pro"]})),  # a list: any
    st.just(42),
    st.just(object()),
)  # fmt: skip


def _client(default_context: EvaluationContext | None) -> PhaseFlagClient:
    # A base URL so an EventProcessor exists (never started: no thread, no request).
    return PhaseFlagClient(
        base_url="http://127.0.0.1:9",
        api_key="k",
        bootstrap=ruleset(*FLAGS),
        default_context=default_context,
    )


def _counts(client: PhaseFlagClient) -> dict[tuple[str, Any], int]:
    events = client._events
    assert events is not None
    return (
        {
            (row["flag_key"], row["variation_key"]): row["count"]
            for row in events.counters.take()  # type: ignore[attr-defined]
        }
        if hasattr(events, "counters")
        else {
            (flag, variation): next(counter)
            for flag, by_variation in events._counts.items()
            for variation, counter in by_variation.items()
        }
    )


@pytest.mark.soak
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    reads=st.lists(st.tuples(st.sampled_from(KEYS), contexts), min_size=1, max_size=12),
    default_context=st.sampled_from([None, EvaluationContext("d", attributes={"plan": "pro"})]),
    override=st.sampled_from([None, ("paid", True), ("colour", "green"), ("missing", "x")]),
)
def test_inlined_getters_equal_the_shared_read(
    reads: list[tuple[str, Any]],
    default_context: EvaluationContext | None,
    override: tuple[str, Any] | None,
) -> None:
    """Same values and same evaluation counts as _value(), the non-inlined path."""
    inlined, shared = _client(default_context), _client(default_context)
    if override is not None:
        inlined.set_override(*override)
        shared.set_override(*override)
    for key, context in reads:
        assert inlined.get_boolean_value(key, False, context) == shared._value(
            key, False, context, BOOLEAN
        )
        assert inlined.get_string_value(key, "dflt", context) == shared._value(
            key, "dflt", context, STRING
        )
    assert _counts(inlined) == _counts(shared)


def test_bad_key_types_never_raise() -> None:
    """Unhashable or odd keys return the default through both paths."""
    client = _client(None)
    for key in ([], {}, None, 3):
        assert client.get_boolean_value(key, True) is True  # type: ignore[arg-type]
        assert client.get_string_value(key, "d") == "d"  # type: ignore[arg-type]


def test_precomputed_answers_are_derived_from_the_flag() -> None:
    """Flag.fixed_* holds a static untracked flag's answer of the getter's type; *_run is the
    generated read when every result it can serve has that type; neither otherwise."""
    import dataclasses

    table = _client(None).ruleset.flags
    assert table["static"].fixed_bool is True and table["static"].fixed_str is None
    assert table["static_s"].fixed_str == "red" and table["static_s"].fixed_bool is None
    assert table["off"].fixed_bool is False  # disabled: the off variation, static
    assert table["static_t"].fixed_bool is None  # tracked: the read must count it
    paid = table["paid_u"]
    assert paid.run is not None and paid.bool_run is paid.run and paid.str_run is None
    assert table["split_s"].str_run is table["split_s"].run is not None
    assert table["needs"].bool_run is None  # prerequisites: the interpreter
    assert dataclasses.replace(paid, run=None).bool_run is None  # derived again
    assert (paid.lookup_attr, paid.bool_lookup, paid.lookup_miss) == ("plan", {"pro": True}, False)
    assert paid.str_lookup is None and table["paid"].bool_lookup is None  # tracked: counted
    tier = table["tier"]
    assert (
        tier.str_lookup == {"pro": "off", "team": "off", "free": "blue"}
        and tier.bool_lookup is None
    )
    assert table["either"].bool_lookup == {"free": False, "pro": True}  # the first rule wins
    for key in (
        "mixed",
        "negated",
        "who",
        "split_s",
        "needs",
        "colour",
    ):  # two attributes, targets, ...
        assert table[key].bool_lookup is None and table[key].str_lookup is None, key


def test_read_table_follows_overrides_scopes_and_swaps() -> None:
    """The getters' lookup table is the held ruleset's while nothing else is in play; an
    override, a request scope or a new ruleset is seen by the very next read."""
    client = _client(None)
    pro = EvaluationContext("u9", attributes={"plan": "pro"})
    get = client.get_boolean_value  # bound before any change: must see every change
    assert get("paid_u", False, pro) is True and get("static", False) is True
    client.set_override("paid_u", False)
    client.set_override("static", False)
    assert get("paid_u", True, pro) is False and get("static", True) is False
    client._store.swap(_client(None).ruleset, "live", None)  # a swap keeps the overrides
    assert get("paid_u", True, pro) is False
    client.clear_all_overrides()
    assert get("paid_u", False, pro) is True and get("static", False) is True
    changed = [
        boolean_flag("paid_u", False, rules=[rule("plan", "in", ["team"], "on")]),
        boolean_flag("static", False),
    ]
    client._store.swap(PhaseFlagClient(base_url="", bootstrap=ruleset(*changed)).ruleset,
                       "live", None)  # fmt: skip
    assert get("paid_u", True, pro) is False and get("static", True) is False
    with client.request_context(EvaluationContext(attributes={"plan": "team"})):
        assert get("paid_u", False) is True  # the scope's context
    assert get("paid_u", True, pro) is False  # outside: the plain read, scoped client
