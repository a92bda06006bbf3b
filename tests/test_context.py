"""EvaluationContext: accepted value types, normalisation, validation errors, immutability."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum, IntEnum
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import phaseflag.types
from phaseflag._errors import InvalidContextError, PhaseFlagError
from phaseflag.types import EvaluationContext


class Plan(str, Enum):
    PRO = "pro"


class Level(IntEnum):
    HIGH = 3


class Ratio(float):
    """A float subclass, as numpy.float64 is."""


class TestAcceptedValues:
    """str, int, float, bool and aware datetimes are kept; None is dropped."""

    @pytest.mark.parametrize("value", ["x", "", 0, -7, 10**30, 1.5, float("inf"), True, False])
    def test_scalars_are_kept_as_given(self, value: Any) -> None:
        """Scalars keep their value and exact type."""
        context = EvaluationContext(attributes={"a": value})
        assert context.attributes["a"] == value
        assert type(context.attributes["a"]) is type(value)
        assert context.get("a") == value

    def test_aware_datetime_is_normalised_to_utc(self) -> None:
        """An aware datetime is stored as the same instant in UTC."""
        local = datetime(2024, 5, 1, 14, 30, tzinfo=timezone(timedelta(hours=2)))
        stored = EvaluationContext(attributes={"when": local}).attributes["when"]
        assert isinstance(stored, datetime)
        assert stored == local
        assert stored.utcoffset() == timedelta(0)
        assert stored.hour == 12

    def test_none_values_are_dropped(self) -> None:
        """An attribute given as None is absent."""
        context = EvaluationContext(attributes={"a": None, "b": 1})
        assert dict(context.attributes) == {"b": 1}
        assert context.get("a") is None

    @pytest.mark.parametrize(
        ("value", "expected"),
        [(Plan.PRO, "pro"), (Level.HIGH, 3), (Ratio(0.5), 0.5)],
        ids=["str-enum", "int-enum", "float-subclass"],
    )
    def test_subclasses_become_plain_values(self, value: Any, expected: Any) -> None:
        """str/int/float subclasses (enum members, numpy floats) become the plain type."""
        stored = EvaluationContext(attributes={"a": value}).attributes["a"]
        assert stored == expected
        assert type(stored) is type(expected)

    def test_ids(self) -> None:
        """user_id and session_id are kept and readable as condition attributes."""
        context = EvaluationContext(user_id="u-1", session_id="s-1", attributes={"plan": "pro"})
        assert (context.user_id, context.session_id) == ("u-1", "s-1")
        assert context.get("user_id") == "u-1"
        assert context.get("session_id") == "s-1"
        assert "user_id" not in context.attributes

    @pytest.mark.parametrize(
        ("given", "stored"), [(42, "42"), (Plan.PRO, "pro"), (Level.HIGH, "3")]
    )
    def test_ids_become_plain_strings(self, given: Any, stored: str) -> None:
        """An int id becomes its decimal text; enum members their value, not their name."""
        context = EvaluationContext(user_id=given, session_id=given)
        assert context.user_id == stored and type(context.user_id) is str
        assert context.session_id == stored

    def test_empty_context(self) -> None:
        """A context may hold nothing at all."""
        context = EvaluationContext()
        assert (context.user_id, context.session_id, dict(context.attributes)) == (None, None, {})


class TestRejectedValues:
    """Anything else raises InvalidContextError naming the key."""

    @pytest.mark.parametrize(
        "value",
        [
            [[1, 2]],  # lists hold scalars only (see TestListAttributes)
            {"a": 1},
            (1, None),
            ["a", {"b": 1}],
            {1},
            b"bytes",
            object(),
            Decimal("1.5"),
            date(2024, 1, 1),
            datetime(2024, 1, 1),  # naive
            1 + 2j,
        ],
        ids=lambda v: type(v).__name__,
    )
    def test_unsupported_attribute(self, value: Any) -> None:
        """The error names the attribute and is both a PhaseFlagError and a TypeError."""
        with pytest.raises(InvalidContextError) as info:
            EvaluationContext(attributes={"ok": 1, "bad_key": value})
        assert info.value.key == "bad_key"
        assert "bad_key" in str(info.value)
        assert isinstance(info.value, PhaseFlagError) and isinstance(info.value, TypeError)

    def test_datetime_with_no_utc_equivalent_is_refused(self) -> None:
        """An aware datetime whose instant falls outside datetime's range in UTC is an
        InvalidContextError naming the key, not an OverflowError."""
        early = datetime(1, 1, 1, tzinfo=timezone(timedelta(microseconds=1)))
        with pytest.raises(InvalidContextError, match=r"'plan'.*out of range"):
            EvaluationContext(attributes={"plan": early})
        with pytest.raises(InvalidContextError):
            EvaluationContext(attributes={"when": [early]})

    def test_naive_datetime_message_suggests_a_fix(self) -> None:
        """A naive datetime is refused with a hint to make it aware."""
        with pytest.raises(InvalidContextError, match="timezone-aware"):
            EvaluationContext(attributes={"when": datetime(2024, 1, 1)})

    @pytest.mark.parametrize("key", [1, None, ("a",)])
    def test_non_string_attribute_names(self, key: Any) -> None:
        """Attribute names must be str."""
        with pytest.raises(InvalidContextError):
            EvaluationContext(attributes={key: "x"})

    @pytest.mark.parametrize("field", ["user_id", "session_id"])
    @pytest.mark.parametrize("value", [True, 1.5, ["u"], object()])
    def test_bad_ids(self, field: str, value: Any) -> None:
        """Ids must be str (or int); the error names the field."""
        with pytest.raises(InvalidContextError) as info:
            EvaluationContext(**{field: value})
        assert info.value.key == field

    def test_integer_id_too_long_for_text(self) -> None:
        """An int id beyond Python's int-to-str limit is an InvalidContextError, not ValueError."""
        with pytest.raises(InvalidContextError):
            EvaluationContext(user_id=10**5000)


class TestImmutability:
    """Contexts cannot change after construction."""

    def test_attributes_cannot_be_set_or_deleted(self) -> None:
        """Assigning or deleting any attribute raises AttributeError."""
        context = EvaluationContext(user_id="u", attributes={"a": 1})
        with pytest.raises(AttributeError):
            context.user_id = "other"  # type: ignore[misc]
        with pytest.raises(AttributeError):
            context.extra = 1  # type: ignore[attr-defined]
        with pytest.raises(AttributeError):
            del context.user_id

    def test_attribute_mapping_is_read_only(self) -> None:
        """The attributes mapping refuses item assignment."""
        context = EvaluationContext(attributes={"a": 1})
        with pytest.raises(TypeError):
            context.attributes["a"] = 2  # type: ignore[index]

    def test_caller_dict_changes_do_not_leak_in(self) -> None:
        """Mutating the dict passed in later does not change the context."""
        given: dict[str, Any] = {"a": 1}
        context = EvaluationContext(attributes=given)
        given["a"] = 2
        given["b"] = 3
        assert dict(context.attributes) == {"a": 1}
        assert context.get("a") == 1 and context.get("b") is None

    def test_equality_and_hash(self) -> None:
        """Equal contents compare equal and hash alike; merge builds a new context."""
        a = EvaluationContext("u", attributes={"x": 1, "y": "z"})
        b = EvaluationContext("u", attributes={"y": "z", "x": 1})
        assert a == b and hash(a) == hash(b)
        merged = a.merge(EvaluationContext(session_id="s", attributes={"x": 2}))
        assert (merged.user_id, merged.session_id, merged.get("x")) == ("u", "s", 2)
        assert a.get("x") == 1

    def test_to_dict_shows_datetimes_as_iso(self) -> None:
        """to_dict is JSON-ready: datetimes become ISO-8601 strings in UTC."""
        when = datetime(2024, 5, 1, 14, 30, tzinfo=timezone(timedelta(hours=2)))
        assert EvaluationContext("u", attributes={"when": when}).to_dict() == {
            "user_id": "u",
            "session_id": None,
            "attributes": {"when": "2024-05-01T12:30:00+00:00"},
        }


class TestFromDict:
    """EvaluationContext.from_dict: the one converter for dict-shaped contexts."""

    def test_flat_shape(self) -> None:
        """Ids by name, every other key an attribute, None dropped."""
        ctx = EvaluationContext.from_dict({"user_id": "u", "plan": "pro", "gone": None})
        assert ctx == EvaluationContext("u", attributes={"plan": "pro"})

    def test_wire_shape(self) -> None:
        """``{"user_id", "session_id", "attributes": {...}}`` as the wire protocol sends it."""
        data = {"user_id": "u", "session_id": "s", "attributes": {"plan": "pro", "n": 3}}
        ctx = EvaluationContext.from_dict(data)
        assert ctx == EvaluationContext("u", "s", {"plan": "pro", "n": 3})
        assert dict(ctx.attributes) == {"plan": "pro", "n": 3}

    def test_targeting_key_wins_and_empty_counts_as_absent(self) -> None:
        """OpenFeature's targetingKey is the user id; an empty one leaves user_id in charge."""
        assert EvaluationContext.from_dict({"targetingKey": "t", "user_id": "u"}).user_id == "t"
        assert EvaluationContext.from_dict({"targetingKey": "", "user_id": "u"}).user_id == "u"
        assert EvaluationContext.from_dict({"targetingKey": ""}).user_id is None

    @pytest.mark.parametrize("data", [{"plan": object()}, {3: "x"}, {"user_id": []}])
    def test_bad_values_raise(self, data: dict[Any, Any]) -> None:
        """The constructor's checks apply: an unsupported value names its key."""
        with pytest.raises(InvalidContextError):
            EvaluationContext.from_dict(data)

    def test_not_a_mapping_raises(self) -> None:
        """A list is not a context."""
        with pytest.raises(InvalidContextError, match="expected a dict"):
            EvaluationContext.from_dict([("user_id", "u")])  # type: ignore[arg-type]


class TestValuesView:
    """``_values`` (what conditions and the read path read directly) equals the public view."""

    @given(
        user_id=st.one_of(st.none(), st.text(max_size=5), st.integers(-5, 5)),
        session_id=st.one_of(st.none(), st.text(max_size=5)),
        attributes=st.dictionaries(
            st.sampled_from(["plan", "n", "user_id", "session_id", "x"]),
            st.one_of(
                st.none(),
                st.text(max_size=3),
                st.integers(),
                st.floats(allow_nan=False),
                st.booleans(),
            ),
            max_size=5,
        ),
    )
    @settings(max_examples=80, deadline=None)
    def test_values_are_attributes_plus_ids(
        self, user_id: Any, session_id: str | None, attributes: dict[str, Any]
    ) -> None:
        """Attributes without their Nones, then the ids (which win over same-named attributes)."""
        ctx = EvaluationContext(user_id, session_id, attributes)
        expected = {k: v for k, v in attributes.items() if v is not None}
        assert dict(ctx.attributes) == expected
        if ctx.user_id is not None:
            expected["user_id"] = ctx.user_id
        if ctx.session_id is not None:
            expected["session_id"] = ctx.session_id
        assert ctx._values == expected
        assert all(ctx.get(k) == v for k, v in expected.items())
        assert EvaluationContext.from_dict(ctx.to_dict()) == ctx

    def test_ids_never_leak_into_attributes(self) -> None:
        """A context without attributes keeps an empty attributes view (ids live apart)."""
        ctx = EvaluationContext("u", "s")
        assert dict(ctx.attributes) == {}
        assert dict(EvaluationContext().attributes) == {}
        assert ctx._values == {"user_id": "u", "session_id": "s"}

    def test_later_changes_to_the_input_do_not_reach_the_context(self) -> None:
        """The attributes mapping is copied at construction."""
        attrs: dict[str, Any] = {"plan": "pro"}
        ctx = EvaluationContext("u", attributes=attrs)
        attrs["plan"] = "free"
        assert ctx.get("plan") == "pro" and ctx.attributes["plan"] == "pro"


# -- the fast path and the slow path ---------------------------------------------------------
# The constructor accepts str/int/float/bool values under str names with one type test each
# and no call; anything else (None, a list, a datetime, a subclass, a bad name or value)
# sends the whole mapping through types._checked. Both must build exactly what the
# documented rules say, which _Reference spells out independently of the implementation.


class KeyStr(str):
    """A str subclass used as an attribute name (refused: names must be plain str)."""


class Refused(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _ref_scalar(key: str, value: Any) -> Any:
    if type(value) in (str, int, float, bool):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise Refused(key)
        try:
            return value.astimezone(timezone.utc)
        except (OverflowError, ValueError):  # the instant has no UTC datetime
            raise Refused(key) from None
    for plain in (str, int, float):  # subclasses become the plain type, with its value
        if isinstance(value, plain):
            return str.__str__(value) if plain is str else plain(value)
    raise Refused(key)


def _ref_id(name: str, value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(int(value))
    raise Refused(name)


def _reference(user_id: Any, session_id: Any, attributes: dict[Any, Any]) -> Any:
    """What the documented rules build: (ids, attributes, values, holds a list), or the key
    refused."""
    try:
        uid, sid = _ref_id("user_id", user_id), _ref_id("session_id", session_id)
        attrs: dict[str, Any] = {}
        for key, value in attributes.items():
            if type(key) is not str:
                raise Refused(repr(key))
            if value is None:
                continue
            if isinstance(value, (list, tuple)):
                attrs[key] = tuple(_ref_scalar(key, e) for e in value)
            else:
                attrs[key] = _ref_scalar(key, value)
    except Refused as refused:
        return ("refused", refused.key)
    values = dict(attrs)
    if uid is not None:
        values["user_id"] = uid
    if sid is not None:
        values["session_id"] = sid
    lists = any(type(v) is tuple for v in attrs.values())
    return ("ok", uid, sid, _exact(attrs), _exact(values), lists)


def _exact(mapping: Any) -> list[Any]:
    """Items with each value's exact type and repr (1, 1.0 and True differ; NaN equals NaN)."""

    def shape(v: Any) -> Any:
        return tuple(shape(e) for e in v) if type(v) is tuple else (type(v), repr(v))

    return [(type(k), k, shape(v)) for k, v in mapping.items()]


def _built(make: Any) -> Any:
    """The same shape as _reference, from a real construction."""
    try:
        ctx = make()
    except InvalidContextError as error:
        return ("refused", error.key)
    lists = type(ctx._values) is not dict
    # ListValues marks list contexts for the read path; a list context has its own type.
    assert lists == (type(ctx) is not EvaluationContext)
    assert type(ctx.attributes) is not dict  # a read-only view
    return (
        "ok",
        ctx.user_id,
        ctx.session_id,
        _exact(ctx.attributes),
        _exact(ctx._values),
        lists,
    )


_wire_scalars = st.one_of(  # what survives to_dict -> from_dict unchanged
    st.text(max_size=3),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False),  # NaN is never equal to itself
    st.booleans(),
)
_good_scalars = st.one_of(
    st.text(max_size=3),
    st.integers(-(10**20), 10**20),
    st.floats(),  # NaN and infinities included
    st.booleans(),
    st.sampled_from([Plan.PRO, Level.HIGH, Ratio(0.5)]),
    st.datetimes(
        timezones=st.builds(timezone, st.timedeltas(timedelta(hours=-23), timedelta(hours=23)))
    ),
)
_bad_scalars = st.one_of(
    st.none(),  # dropped on its own, refused inside a list
    st.datetimes(),  # naive
    st.sampled_from([b"x", Decimal("1.5"), date(2024, 1, 1), object(), {"a": 1}, {1}, 1 + 2j]),
)
_values = st.one_of(
    _good_scalars,
    _good_scalars,
    st.none(),
    _bad_scalars,
    st.lists(
        st.one_of(_good_scalars, _good_scalars, _bad_scalars, st.lists(st.integers())), max_size=3
    ),
    st.tuples(_good_scalars, _good_scalars),
)
_names = st.one_of(
    st.sampled_from(["plan", "n", "user_id", "session_id"]),
    st.text(alphabet="xyz", min_size=1, max_size=2),
)
_bad_names = st.one_of(st.integers(0, 2), st.sampled_from([KeyStr("plan"), None, ("a",)]))
_ids = st.one_of(
    st.none(),
    st.text(max_size=3),
    st.integers(-5, 5),
    st.sampled_from([Plan.PRO, Level.HIGH, True, 1.5, ["u"]]),
)


class TestFastAndSlowPaths:
    """Plain contexts skip the conversion step; every context matches the documented rules."""

    @given(user_id=_ids, session_id=_ids, attributes=st.dictionaries(_names, _values, max_size=6))
    @settings(max_examples=200, deadline=None)
    def test_both_paths_build_what_the_rules_say(
        self, user_id: Any, session_id: Any, attributes: dict[str, Any]
    ) -> None:
        """The constructor as called, and the same mapping forced through the slow path (a
        leading None makes the first value unplain), both equal the reference model: exact
        value types (bools stay bools, NaN stays a float), order, ids, the list marker."""
        expected = _reference(user_id, session_id, attributes)
        assert _built(lambda: EvaluationContext(user_id, session_id, attributes)) == expected
        slow = {"~slow": None, **attributes}
        assert _built(lambda: EvaluationContext(user_id, session_id, slow)) == expected

    @given(
        attributes=st.dictionaries(
            st.one_of(_names, _bad_names), st.one_of(_good_scalars, st.none()), max_size=5
        )
    )
    @settings(max_examples=80, deadline=None)
    def test_names_must_be_plain_str_on_both_paths(self, attributes: dict[Any, Any]) -> None:
        """A name that is not exactly str is refused (its repr is the key), fast path or not."""
        expected = _reference("u", None, attributes)
        assert _built(lambda: EvaluationContext("u", None, attributes)) == expected
        assert _built(lambda: EvaluationContext("u", None, {"~slow": None, **attributes})) == (
            expected
        )

    @given(
        attributes=st.dictionaries(
            _names, st.one_of(st.text(max_size=3), st.integers(), st.floats(), st.booleans())
        ),
        user_id=st.one_of(st.none(), st.text(max_size=3)),
    )
    @settings(max_examples=100, deadline=None)
    def test_plain_values_never_call_the_conversion(
        self, attributes: dict[str, Any], user_id: str | None
    ) -> None:
        """str/int/float/bool under str names (NaN included) take the fast path."""
        with mock.patch.object(phaseflag.types, "_checked", side_effect=AssertionError("slow")):
            ctx = EvaluationContext(user_id, attributes=attributes)
            with pytest.raises(AssertionError, match="slow"):
                EvaluationContext(
                    user_id, attributes={**attributes, "t": datetime.now(timezone.utc)}
                )
        assert _built(lambda: ctx) == _reference(user_id, None, attributes)

    def test_the_slow_path_copies_too(self) -> None:
        """A context that needed converting is as independent of the caller's dict."""
        given: dict[str, Any] = {"roles": ["a"], "plan": Plan.PRO}
        ctx = EvaluationContext("u", attributes=given)
        given["roles"].append("b")
        given["plan"] = "free"
        assert dict(ctx.attributes) == {"roles": ("a",), "plan": "pro"}

    def test_other_mappings_are_copied(self) -> None:
        """Any Mapping is accepted and copied (a read-only view, a dict subclass)."""
        from collections import OrderedDict
        from types import MappingProxyType

        for mapping in (MappingProxyType({"a": 1}), OrderedDict(a=1)):
            ctx = EvaluationContext("u", attributes=mapping)
            assert type(ctx._values) is dict and ctx._values == {"a": 1, "user_id": "u"}

    def test_a_subclass_with_a_list_keeps_its_type(self) -> None:
        """A user's subclass (with or without slots of its own) holding a list can be built
        and stays that subclass; its values still carry the list marker reads check."""

        class Tagged(EvaluationContext):
            __slots__ = ("tag",)

        class Plain(EvaluationContext):
            pass

        for kind in (Tagged, Plain):
            ctx = kind("u", attributes={"roles": ["a", "b"]})
            assert type(ctx) is kind
            assert type(ctx._values) is not dict and ctx.get("roles") == ("a", "b")


def _outcome(make: Any) -> Any:
    """What a construction gives, for comparing two ways of building the same context."""
    try:
        ctx = make()
    except InvalidContextError as error:
        return ("refused", error.key, str(error))
    values = sorted(_exact(ctx._values), key=repr)  # the ids' place in it is no one's concern
    return ("ok", type(ctx), ctx.user_id, ctx.session_id, _exact(ctx.attributes), values)


_flat_keys = st.one_of(
    st.sampled_from(["user_id", "session_id", "targetingKey", "attributes", "plan", "n"]),
    _bad_names,
)


class TestFromDictFastPath:
    """from_dict's path for a flat dict of plain values equals the general converter."""

    @given(
        data=st.dictionaries(
            _flat_keys,
            st.one_of(_values, _ids, st.dictionaries(_names, _good_scalars, max_size=2)),
            max_size=6,
        )
    )
    @settings(max_examples=300, deadline=None)
    def test_equals_the_general_converter(self, data: dict[Any, Any]) -> None:
        """Same context (type, ids, attributes in order, values) or the same refusal."""
        fast = _outcome(lambda: EvaluationContext.from_dict(data))
        assert fast == _outcome(lambda: EvaluationContext._from_mapping(data))

    @given(
        attributes=st.dictionaries(
            st.sampled_from(["plan", "n", "x"]),
            st.one_of(st.text(max_size=3), st.integers(), st.floats(), st.booleans()),
        ),
        ids=st.fixed_dictionaries(
            {}, optional={"user_id": st.text(max_size=3), "session_id": st.text(max_size=3)}
        ),
    )
    @settings(max_examples=100, deadline=None)
    def test_plain_flat_dicts_take_it(
        self, attributes: dict[str, Any], ids: dict[str, str]
    ) -> None:
        """A flat dict of plain values and str ids never reaches the general converter."""
        slow = mock.patch.object(
            EvaluationContext, "_from_mapping", side_effect=AssertionError("slow")
        )
        data = {**ids, **attributes}
        with slow:
            ctx = EvaluationContext.from_dict(data)
        assert _outcome(lambda: ctx) == _outcome(lambda: EvaluationContext._from_mapping(data))
        data["plan"] = "changed later"
        assert ctx.attributes.get("plan") != "changed later"  # a copy, not a view


class TestDerivedViews:
    """from_dict and merge build what the constructor builds from the same fields."""

    @given(
        user_id=st.one_of(st.none(), st.text(max_size=3)),
        session_id=st.one_of(st.none(), st.text(max_size=3)),
        attributes=st.dictionaries(
            _names, st.one_of(_wire_scalars, st.lists(_wire_scalars, max_size=2)), max_size=5
        ),
    )
    @settings(max_examples=80, deadline=None)
    def test_from_dict_of_to_dict_round_trips(
        self, user_id: str | None, session_id: str | None, attributes: dict[str, Any]
    ) -> None:
        """to_dict -> from_dict gives an equal context of the same shape (datetimes apart:
        the wire carries them as ISO-8601 strings)."""
        ctx = EvaluationContext(user_id, session_id, attributes)
        again = EvaluationContext.from_dict(ctx.to_dict())
        assert again == ctx and type(again) is type(ctx)
        assert _exact(again.attributes) == _exact(ctx.attributes)

    @given(
        a_ids=st.tuples(st.one_of(st.none(), st.just("a")), st.one_of(st.none(), st.just("as"))),
        b_ids=st.tuples(st.one_of(st.none(), st.just("b")), st.one_of(st.none(), st.just("bs"))),
        a_attrs=st.dictionaries(
            _names, st.one_of(_good_scalars, st.lists(_good_scalars, max_size=2)), max_size=4
        ),
        b_attrs=st.dictionaries(
            _names, st.one_of(_good_scalars, st.lists(_good_scalars, max_size=2)), max_size=4
        ),
    )
    @settings(max_examples=80, deadline=None)
    def test_merge_overlays_attributes_and_ids(
        self, a_ids: Any, b_ids: Any, a_attrs: dict[str, Any], b_attrs: dict[str, Any]
    ) -> None:
        """merge: other's attributes over this one's, other's ids where set."""
        a, b = EvaluationContext(*a_ids, a_attrs), EvaluationContext(*b_ids, b_attrs)
        merged = a.merge(b)
        uid = b_ids[0] if b_ids[0] is not None else a_ids[0]
        sid = b_ids[1] if b_ids[1] is not None else a_ids[1]
        expected = _reference(uid, sid, {**a_attrs, **b_attrs})
        assert _built(lambda: merged) == expected
        assert a.merge(b) is merged  # remembered: a client merges under every read
        assert a.merge(None) is a

    def test_merge_is_remembered_per_base(self) -> None:
        """A context remembers its last merge under one base; another base gets its own."""
        eu = EvaluationContext("d", attributes={"plan": "free", "region": "eu"})
        us = EvaluationContext(attributes={"region": "us"})
        ctx = EvaluationContext("u", attributes={"plan": "pro"})
        first = eu.merge(ctx)
        assert eu.merge(ctx) is first
        assert (first.user_id, dict(first.attributes)) == ("u", {"plan": "pro", "region": "eu"})
        assert dict(us.merge(ctx).attributes) == {"plan": "pro", "region": "us"}
        again = eu.merge(ctx)
        assert again == first and dict(again.attributes) == dict(first.attributes)
