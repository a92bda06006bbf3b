"""Public value types: contexts, results, events, reasons and error codes.

Everything here is immutable and safe to share between threads.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, Final, Union

from ._errors import InvalidContextError

__all__ = [
    "AttributeValue",
    "ChangeEvent",
    "ClientStatus",
    "ErrorCode",
    "EvaluationContext",
    "EvaluationEvent",
    "EvaluationResult",
    "FlagChange",
    "JSONValue",
    "Reason",
]

#: Any value a JSON document can hold (flag values, event metadata).
JSONValue = Union[bool, int, float, str, list[Any], dict[str, Any], None]  # noqa: UP007  (a runtime alias)

#: A single value an EvaluationContext attribute may hold (or a tuple of them: see below).
ScalarAttribute = Union[str, int, float, bool, datetime]  # noqa: UP007  (a runtime alias)
#: A value an EvaluationContext attribute may hold; lists are stored as tuples.
AttributeValue = Union[ScalarAttribute, tuple[ScalarAttribute, ...]]  # noqa: UP007

_PLAIN_TYPES: Final = frozenset({str, int, float, bool})
_NO_ATTRIBUTES: Final[dict[str, Any]] = {}  # shared by contexts without attributes; never mutated
_ID_KEYS: Final = frozenset({"user_id", "session_id", "targetingKey"})


class Reason:
    """Why an evaluation produced its value (the ``reason`` of an EvaluationResult)."""

    TARGETING_MATCH: Final = "targeting_match"
    PERCENTAGE_ROLLOUT: Final = "percentage_rollout"
    DEFAULT: Final = "default"
    DISABLED: Final = "disabled"
    PREREQUISITE_FAILED: Final = "prerequisite_failed"
    OVERRIDE: Final = "override"
    ERROR: Final = "error"


class ErrorCode:
    """Why an evaluation fell back to the caller's default (reason ``error``)."""

    FLAG_NOT_FOUND: Final = "FLAG_NOT_FOUND"
    TYPE_MISMATCH: Final = "TYPE_MISMATCH"
    INVALID_FLAG: Final = "INVALID_FLAG"
    NOT_READY: Final = "NOT_READY"
    INVALID_CONTEXT: Final = "INVALID_CONTEXT"
    GENERAL: Final = "GENERAL"


class ListValues(dict[str, Any]):
    """The evaluation values of a context holding a list attribute (a marker type: reads
    of such contexts take the list-aware interpreter path; scalar contexts never pay)."""

    __slots__ = ()


def _normalise(key: str, value: object) -> AttributeValue:
    """Check one attribute value; aware datetimes become UTC, lists and tuples of scalars
    become tuples, anything unsupported raises."""
    if isinstance(value, (list, tuple)):
        return tuple(_scalar(key, item, f"element {i}: ") for i, item in enumerate(value))
    return _scalar(key, value)


def _scalar(key: str, value: object, where: str = "") -> ScalarAttribute:
    if type(value) in _PLAIN_TYPES:  # list elements arrive here unchecked (bools too)
        return value  # type: ignore[return-value]
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidContextError(
                key, "naive datetime; pass a timezone-aware one, e.g. datetime.now(timezone.utc)"
            )
        try:
            return value.astimezone(timezone.utc)
        except (OverflowError, ValueError) as exc:  # UTC would fall outside year 1..9999
            raise InvalidContextError(key, f"datetime out of range in UTC ({exc})") from None
    # Subclasses (enum members, numpy floats) become the plain type the operators test for.
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):  # bool cannot be subclassed: exact bools never get here
        return int(value)
    if isinstance(value, float):
        return float(value)
    if where:
        raise InvalidContextError(
            key,
            f"{where}unsupported type {type(value).__name__}; "
            "a list may hold only str, int, float, bool or datetime",
        )
    raise InvalidContextError(
        key,
        f"unsupported type {type(value).__name__}; "
        "use str, int, float, bool, datetime or a list of those",
    )


def _checked(attrs: dict[Any, Any]) -> dict[str, AttributeValue]:
    """The slow path of construction: names must be str, None is dropped, values normalised.
    Returns a new dict, a ``ListValues`` when it holds a list attribute."""
    out: dict[str, AttributeValue] = {}
    lists = False
    for key, value in attrs.items():
        if type(key) is not str:
            raise InvalidContextError(repr(key), "attribute names must be str")
        if type(value) in _PLAIN_TYPES:
            out[key] = value
        elif value is not None:
            out[key] = stored = _normalise(key, value)
            lists = lists or type(stored) is tuple
    return ListValues(out) if lists else out


def _wire(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


def _id_text(name: str, value: object) -> str:
    """A user or session id as a plain str: str subclasses keep their text, ints become decimal."""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return str(int(value))
        except ValueError:  # beyond sys.get_int_max_str_digits()
            raise InvalidContextError(name, "integer too long to use as an id") from None
    raise InvalidContextError(name, "must be a str (or an int, made a str)")


class EvaluationContext:
    """Who a flag is evaluated for: a user id, a session id and targeting attributes.

    ``user_id`` drives percentage-rollout bucketing; ``session_id`` is the fallback
    when there is no user id. Attribute values may be ``str``, ``int``, ``float``,
    ``bool`` or a timezone-aware ``datetime`` (stored in UTC), or a list of those
    (stored as a tuple; a condition holds when any element satisfies it); ``None``
    values are dropped (an absent attribute), anything else raises
    ``InvalidContextError`` naming the key, when the context is built (docs/contexts.md).
    Instances are immutable; equal contexts hash alike.
    """

    # Read-only properties over private slots: assigning a public name raises
    # AttributeError, and construction sets slots directly (it is on the request path).
    __slots__ = ("_attributes", "_merged", "_session_id", "_user_id", "_values")

    _user_id: str | None
    _session_id: str | None
    # The attributes alone; None while they are ``_values`` minus the ids (made on demand).
    _attributes: dict[str, AttributeValue] | None
    _values: dict[str, AttributeValue]  # attributes plus the ids: what conditions read
    # (base, base.merge(self)) of the last merge under this context; unset until then.
    _merged: tuple[EvaluationContext, EvaluationContext]

    def __init__(
        self,
        user_id: str | None = None,
        session_id: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        # Every request builds one: one copy of the attributes, one type test per name
        # and value, no call unless something needs converting (_checked: the slow path).
        if user_id is not None and type(user_id) is not str:
            user_id = _id_text("user_id", user_id)
        if session_id is not None and type(session_id) is not str:
            session_id = _id_text("session_id", session_id)
        self._user_id = user_id
        self._session_id = session_id
        if not attributes:
            self._attributes = _NO_ATTRIBUTES
            values: dict[str, Any] = {}
        else:
            values = attributes.copy() if type(attributes) is dict else dict(attributes)
            for key, value in values.items():
                if type(value) not in _PLAIN_TYPES or type(key) is not str:
                    values = _checked(values)
                    if type(values) is ListValues and type(self) is EvaluationContext:
                        self.__class__ = ListContext  # off the clients' plain-context path
                    break
            if user_id is None and session_id is None:
                self._attributes = values  # shared: the ids add nothing to values
                self._values = values
                return
            # An attribute named like an id is shadowed in values: keep the attributes apart.
            self._attributes = (
                values.copy() if "user_id" in values or "session_id" in values else None
            )
        if user_id is not None:
            values["user_id"] = user_id
        if session_id is not None:
            values["session_id"] = session_id
        self._values = values

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationContext:
        """A context from a dict: the one converter every dict-shaped context goes through.

        Accepts the flat shape (``{"user_id": ..., "plan": "pro"}``), the wire shape
        (``{"user_id", "session_id", "attributes": {...}}``) and OpenFeature's
        ``targetingKey`` (it wins over ``user_id``; an empty one counts as absent). Every
        other key is an attribute; ``None`` values are dropped. Raises InvalidContextError.
        """
        # The commonest call, a request's flat dict of plain values with str ids, takes a
        # copy of it as the values (the ids already sit where conditions read them);
        # anything else goes through _from_mapping. tests/test_context.py proves them equal.
        if (
            type(data) is dict
            and cls is EvaluationContext
            and "targetingKey" not in data
            and "attributes" not in data
        ):
            values = data.copy()
            for key, value in values.items():
                if type(value) not in _PLAIN_TYPES or type(key) is not str:
                    break
            else:  # every value plain (so an id is None only when absent): ids must be str
                user_id = values.get("user_id")
                session_id = values.get("session_id")
                if (user_id is None or type(user_id) is str) and (
                    session_id is None or type(session_id) is str
                ):
                    self = _new_context(cls)
                    self._user_id = user_id
                    self._session_id = session_id
                    no_ids = user_id is None and session_id is None
                    self._attributes = values if no_ids else None  # None: made on demand
                    self._values = values
                    return self
        return cls._from_mapping(data)

    @classmethod
    def _from_mapping(cls, data: Mapping[str, Any]) -> EvaluationContext:
        """``from_dict`` for every shape: separates the ids, then builds through __init__."""
        if not isinstance(data, Mapping):
            raise InvalidContextError("context", f"expected a dict, got {type(data).__name__}")
        attributes = dict(data)
        targeting_key = attributes.pop("targetingKey", None)
        user_id = attributes.pop("user_id", None)
        session_id = attributes.pop("session_id", None)
        nested = attributes.get("attributes")
        if isinstance(nested, Mapping):  # the wire shape (a dict is never an attribute value)
            del attributes["attributes"]
            attributes.update(nested)
        return cls(targeting_key or user_id, session_id, attributes)

    def _attribute_dict(self) -> dict[str, AttributeValue]:
        """The attributes alone (never mutated by callers: they get read-only views)."""
        attributes = self._attributes
        if attributes is None:  # made once, on first use: values minus the ids
            attributes = dict(self._values)
            if self._user_id is not None:
                del attributes["user_id"]
            if self._session_id is not None:
                del attributes["session_id"]
            self._attributes = attributes
        return attributes

    @property
    def user_id(self) -> str | None:
        """The user's id: the default bucketing key for percentage rollouts."""
        return self._user_id

    @property
    def session_id(self) -> str | None:
        """The session's id: the bucketing key when there is no user id."""
        return self._session_id

    @property
    def attributes(self) -> Mapping[str, AttributeValue]:
        """The targeting attributes (read-only; datetimes in UTC)."""
        return MappingProxyType(self._attribute_dict())

    def __repr__(self) -> str:
        return (
            f"EvaluationContext(user_id={self.user_id!r}, session_id={self.session_id!r}, "
            f"attributes={self._attribute_dict()!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EvaluationContext):
            return NotImplemented
        return self._values == other._values

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, repr(v)) for k, v in self._values.items())))

    def get(self, name: str) -> AttributeValue | None:
        """The value a condition on ``name`` sees: ``user_id``, ``session_id`` or an attribute."""
        return self._values.get(name)

    def merge(self, other: EvaluationContext | None) -> EvaluationContext:
        """A new context: this one's values overlaid by ``other``'s (its ids win when set).

        A client's ``default_context`` merges under every read's context, so ``other``
        remembers its last merge: a request's later reads reuse it (both are immutable).
        """
        if other is None:
            return self
        try:
            base, merged = other._merged
            if base is self:
                return merged
        except AttributeError:  # never merged under anything yet
            pass
        merged = EvaluationContext(
            other._user_id if other._user_id is not None else self._user_id,
            other._session_id if other._session_id is not None else self._session_id,
            {**self._attribute_dict(), **other._attribute_dict()},
        )
        other._merged = (self, merged)
        return merged

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape the wire protocol uses (datetimes as ISO-8601 strings, lists as
        arrays)."""
        attrs = {
            k: [_wire(e) for e in v] if type(v) is tuple else _wire(v)
            for k, v in self._attribute_dict().items()
        }
        return {"user_id": self.user_id, "session_id": self.session_id, "attributes": attrs}


_new_context = object.__new__  # from_dict's fast path builds without __init__ (request path)


class ListContext(EvaluationContext):
    """An EvaluationContext holding a list attribute (``EvaluationContext`` makes itself one):
    its own type keeps it off the clients' plain-context fast path, whose generated reads
    compare single values."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class EvaluationResult:
    """The outcome of evaluating one flag for one context.

    ``value`` is None when the evaluation fell back to the caller's default (the
    typed getters then return that default). ``error_code`` is set only when
    ``reason`` is ``"error"``. Results may be shared between calls and threads.
    """

    flag_key: str
    value: Any
    reason: str
    variation_key: str | None = None
    rule_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None

    def __bool__(self) -> bool:
        """Always true, so ``if result:`` tests for a result rather than its value."""
        return True

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``POST /sdk/evaluate`` responses."""
        out: dict[str, Any] = {
            "flag_key": self.flag_key,
            "value": self.value,
            "reason": self.reason,
            "variation_key": self.variation_key,
            "rule_id": self.rule_id,
        }
        if self.error_code is not None:
            out["error_code"] = self.error_code
        if self.error_message is not None:
            out["error_message"] = self.error_message
        return out


_time_ns = time.time_ns


def _now_ms() -> int:
    return _time_ns() // 1_000_000


class EvaluationEvent:
    """A custom analytics event sent by ``track_event`` (kind ``"custom"`` on the wire).

    ``timestamp`` is integer milliseconds since the epoch, taken at construction unless
    given. ``metadata`` must be JSON-serialisable; ``value`` is an optional number (for
    example a revenue figure) sent when set. Immutable: the fields are read-only, and
    events compare equal when all fields do.

    A plain class rather than a frozen dataclass so that building one stays well under a
    microsecond on the hot path (issue 15): a frozen dataclass pays a call per field.
    """

    __slots__ = ("_flag_key", "_metadata", "_timestamp", "_user_id", "_value", "_variation_key")
    __match_args__ = ("flag_key", "variation_key", "user_id", "metadata", "timestamp", "value")

    def __init__(  # noqa: PLR0917 - positional, as the dataclass it replaces accepted
        self,
        flag_key: str,
        variation_key: str | None = None,
        user_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
        value: float | None = None,
    ) -> None:
        self._flag_key = flag_key
        self._variation_key = variation_key
        self._user_id = user_id
        self._metadata: Mapping[str, Any] = {} if metadata is None else metadata
        self._timestamp = _time_ns() // 1_000_000 if timestamp is None else timestamp
        self._value = value

    @property
    def flag_key(self) -> str:
        """The event's name: usually the flag it concerns."""
        return self._flag_key

    @property
    def variation_key(self) -> str | None:
        """The variation the user was served, when the event concerns one."""
        return self._variation_key

    @property
    def user_id(self) -> str | None:
        """Who the event is about."""
        return self._user_id

    @property
    def metadata(self) -> Mapping[str, Any]:
        """JSON-serialisable details (an empty dict when none were given)."""
        return self._metadata

    @property
    def timestamp(self) -> int:
        """Milliseconds since the epoch."""
        return self._timestamp

    @property
    def value(self) -> float | None:
        """An optional number, sent when set and finite."""
        return self._value

    def _fields(self) -> tuple[Any, ...]:
        return (
            self._flag_key,
            self._variation_key,
            self._user_id,
            self._metadata,
            self._timestamp,
            self._value,
        )

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())  # like a frozen dataclass: fails for a dict of metadata

    def __repr__(self) -> str:
        return (
            f"EvaluationEvent(flag_key={self._flag_key!r}, variation_key={self._variation_key!r}"
            f", user_id={self._user_id!r}, metadata={self._metadata!r}, "
            f"timestamp={self._timestamp!r}, value={self._value!r})"
        )

    def to_dict(self) -> dict[str, Any]:
        """The wire shape of this event."""
        out: dict[str, Any] = {
            "kind": "custom",
            "flag_key": self._flag_key,
            "variation_key": self._variation_key,
            "user_id": self._user_id,
            "metadata": dict(self._metadata),
            "timestamp": self._timestamp,
        }
        value = self._value
        if value is not None and math.isfinite(value):
            out["value"] = value
        return out


@dataclass(frozen=True, slots=True)
class FlagChange:
    """One flag that changed in an applied ruleset; a version is None when absent.

    ``previous`` / ``current`` are the values served to the client's ``default_context``
    before and after the change (None when no default_context is set, or where the flag
    was absent or failing), the fields edgeflags' change objects had. For any other
    context use ``client.on_flag_value_change``.
    """

    key: str
    previous_version: int | None
    current_version: int | None
    removed: bool = False
    added: bool = False
    previous: Any = None
    current: Any = None


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """Payload of the ``change`` event: what changed between two applied rulesets."""

    flags: tuple[FlagChange, ...]
    previous_version: int | None
    current_version: int
    source: str

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys of the flags that changed."""
        return tuple(change.key for change in self.flags)


@dataclass(frozen=True, slots=True)
class ClientStatus:
    """An immutable health snapshot of a client (``client.status()``).

    Times are ``time.time()`` seconds; ``ruleset_age`` is seconds since the held
    ruleset was last confirmed fresh (applied or 304), None when none is held.
    ``leader`` is True while this process fetches for a fleet sharing a RedisCache,
    False while it follows Redis, None without a shared cache. ``listener_failures``
    counts every listener call that raised: ``on(...)``, ``on_flags_changed`` and
    ``on_flag_value_change`` callbacks, ``async def`` ones included (each listener's
    first failure is also logged at WARNING).
    """

    state: str
    ready: bool
    ruleset_version: int | None
    ruleset_source: str | None
    ruleset_age: float | None
    flag_count: int
    last_sync: float | None
    consecutive_failures: int
    last_error: str | None
    stale: bool
    events_sent: int
    events_dropped: int
    events_failed: int
    events_queued: int
    leader: bool | None = None
    listener_failures: int = 0
