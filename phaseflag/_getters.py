"""The typed getters and the read path behind them, a base class of PhaseFlagClient.

Every ``get_*`` looks the flag up in the read table (the held ruleset's compiled flags,
published by ``_publish`` on each swap) and serves a precomputed answer, the flag's
generated read or the interpreter; overrides and request scopes switch the table off so
that reads take ``_resolve_full``. Reads take no lock, do no I/O and never raise.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast, overload

from ._errors import InvalidContextError
from ._evaluation import evaluate_flag, not_found
from ._hooks import Hook, hooked_read, hooked_variation
from ._model import EMPTY_RULESET, Flag
from ._reads import BOOLEAN, INTEGER, JSON, NUMBER, STRING, Kind, Misses, private
from ._scope import Scope
from ._snapshot import all_flags
from ._store import RulesetStore
from .types import (
    ErrorCode,
    EvaluationContext,
    EvaluationResult,
    JSONValue,
    ListValues,
    Reason,
)

if TYPE_CHECKING:
    from ._client import PhaseFlagClient
    from ._events import EventProcessor

__all__ = ["NO_TABLE", "Getters"]

#: The read table while overrides or request scopes are in play: every lookup misses.
NO_TABLE: Final[dict[str, Flag]] = {}

J = TypeVar("J", dict[str, Any], list[Any])


class Getters:
    """The read half of PhaseFlagClient (the client sets these attributes up)."""

    _table: dict[str, Flag]
    _table_lock: threading.Lock
    _store: RulesetStore
    _overrides: dict[str, EvaluationResult]
    _override_lock: threading.Lock
    _scopes: ContextVar[Scope | None] | None
    _plain_type: type | None
    _default_context: EvaluationContext | None
    _default_values: Mapping[str, Any]
    _misses: Misses
    _events: EventProcessor | None
    _counts: Any

    # -- the read path ---------------------------------------------------------------------

    def _resolve(self, flag_key: str, context: EvaluationContext | None) -> EvaluationResult:
        """The served result (counted when the flag tracks events); may raise on bad input."""
        flag = self._table.get(flag_key)
        if flag is None:  # overrides or scopes in play, not compiled yet, or unknown
            return self._resolve_full(flag_key, context)
        result = flag.static
        if result is None:
            run = flag.run
            if run is None or type(context) is not self._plain_type:  # interpreter or merge
                return self._resolve_full(flag_key, context)
            result = run(context._values)  # type: ignore[union-attr]
        if flag.track_events:
            self._count(flag_key, result)
        return result

    def _resolve_full(self, flag_key: str, context: EvaluationContext | None) -> EvaluationResult:
        """``_resolve`` when the read table cannot serve: overrides first, then the ruleset
        pinned by a request scope (or the held one), compiling the flag on its first read."""
        overrides = self._overrides
        if overrides:
            hit = overrides.get(flag_key)
            if hit is not None:
                return hit
        scopes = self._scopes
        scope = scopes.get() if scopes is not None else None
        if scope is None:
            ruleset = self._store.ruleset
            none_values = self._default_values
        else:
            ruleset = scope.ruleset
            none_values = scope.values
        flag = ruleset.table.get(flag_key) or ruleset.flags.get(flag_key)
        if flag is None:
            return self._missing(flag_key)
        result = flag.static
        if result is None:
            values = none_values if context is None else self._values_for(context)
            run = flag.run if type(values) is not ListValues else None  # lists: interpreter
            result = run(values) if run is not None else evaluate_flag(flag, values, ruleset)
        if flag.track_events:
            self._count(flag_key, result)
        return result

    def _publish(self) -> None:
        """Point the read table at the held ruleset's compiled flags, or at an empty table
        while overrides or request scopes need ``_resolve_full``; called after each change
        to any of the three (the lock makes the last call see the latest state)."""
        with self._table_lock:
            direct = not self._overrides and self._scopes is None
            self._table = self._store.ruleset.table if direct else NO_TABLE

    def _count(self, flag_key: str, result: EvaluationResult) -> None:
        """Count one evaluation for the summary events (EventProcessor.count, inlined)."""
        counts = self._counts
        if counts is not None:
            try:  # the counter exists after the first read
                next(counts[flag_key][result.variation_key])
            except KeyError:
                self._events.count(flag_key, result.variation_key)  # type: ignore[union-attr]

    def _values_for(self, context: object) -> Mapping[str, Any]:
        """What conditions read for ``context``: the default context's values merged in."""
        if context is None:
            return self._default_values
        if type(context) is self._plain_type:
            return context._values  # type: ignore[attr-defined, no-any-return]
        return self._context_values(context)

    def _context_values(self, context: object) -> Mapping[str, Any]:
        if isinstance(context, EvaluationContext):
            merged = self._default_context.merge(context) if self._default_context else context
            return merged._values
        if isinstance(context, Mapping):  # convenience: a plain dict of the same fields
            return self._context_values(EvaluationContext.from_dict(context))
        raise InvalidContextError(
            "context", f"expected an EvaluationContext, got {type(context).__name__}"
        )

    def _missing(self, flag_key: str) -> EvaluationResult:
        if self._store.ruleset is EMPTY_RULESET:
            return EvaluationResult(
                str(flag_key),
                None,
                Reason.ERROR,
                error_code=ErrorCode.NOT_READY,
                error_message="no ruleset loaded yet (not started, not ready, no bootstrap)",
            )
        return not_found(flag_key)

    def _read(self, flag_key: str, context: EvaluationContext | None) -> EvaluationResult | None:
        try:
            return self._resolve(flag_key, context)
        except Exception as exc:  # a read never raises: bad key type, bad context, a bug
            self._misses.read_failed(flag_key, exc)
            return None

    def _value(
        self, flag_key: str, default: Any, context: EvaluationContext | None, kind: Kind
    ) -> Any:
        result = self._read(flag_key, context)
        if result is not None and kind.accept(result.value):
            try:
                return kind.serve(result.value)
            except Exception as exc:  # a conversion that cannot be made: the default
                self._misses.read_failed(flag_key, exc)
                return default
        return self._misses.value(flag_key, default, context, result, kind)

    def get_boolean_value(
        self,
        flag_key: str,
        default: bool,
        context: EvaluationContext | None = None,
        hooks: Iterable[Hook] | None = None,
    ) -> bool:
        """The flag's boolean value for ``context``; ``default`` if missing, mistyped or failing.

        ``hooks`` (every getter takes it): extra :class:`Hook` objects for this read only.
        """
        if hooks is not None:  # the one test a read pays (client hooks: see add_hook)
            return cast(bool, self._hooked(BOOLEAN, flag_key, default, context, hooks).value)
        # _resolve(), inlined in the two hottest getters (a call costs as much as the rest
        # of a read) for the commonest flags: static, a set lookup, and generated with every
        # result of this type. tests/test_client_reads.py proves both getters equal to _resolve().
        try:
            flag = self._table.get(flag_key)
            if flag is not None:
                value = flag.fixed_bool
                if value is not None:
                    return value
                lookup = flag.bool_lookup
                if lookup is not None and type(context) is self._plain_type:
                    return lookup.get(context._values.get(flag.lookup_attr), flag.lookup_miss)  # type: ignore[union-attr, arg-type]
                run = flag.bool_run
                if run is not None and type(context) is self._plain_type:
                    result: EvaluationResult | None = run(context._values)  # type: ignore[union-attr]
                    if flag.track_events and self._counts is not None:
                        try:  # _count(), inlined: the counter exists after the first read
                            next(self._counts[flag_key][result.variation_key])  # type: ignore[union-attr]
                        except KeyError:
                            self._count(flag_key, result)  # type: ignore[arg-type]
                    return result.value  # type: ignore[union-attr, no-any-return]
                result = self._resolve(flag_key, context)
            else:  # overrides or scopes in play, not compiled yet, or unknown
                result = self._resolve_full(flag_key, context)
        except Exception as exc:  # a read never raises: bad key type, bad context, a bug
            self._misses.read_failed(flag_key, exc)
            result = None
        if result is not None and type(result.value) is bool:
            return result.value
        return self._misses.value(flag_key, default, context, result, BOOLEAN)

    def get_string_value(
        self,
        flag_key: str,
        default: str,
        context: EvaluationContext | None = None,
        hooks: Iterable[Hook] | None = None,
    ) -> str:
        """The flag's string value for ``context``, or ``default``."""
        if hooks is not None:  # the one test a read pays (client hooks: see add_hook)
            return cast(str, self._hooked(STRING, flag_key, default, context, hooks).value)
        # _resolve(), inlined in the two hottest getters (a call costs as much as the rest
        # of a read) for the commonest flags: static, a set lookup, and generated with every
        # result of this type. tests/test_client_reads.py proves both getters equal to _resolve().
        try:
            flag = self._table.get(flag_key)
            if flag is not None:
                value = flag.fixed_str
                if value is not None:
                    return value
                lookup = flag.str_lookup
                if lookup is not None and type(context) is self._plain_type:
                    return lookup.get(context._values.get(flag.lookup_attr), flag.lookup_miss)  # type: ignore[union-attr, arg-type]
                run = flag.str_run
                if run is not None and type(context) is self._plain_type:
                    result: EvaluationResult | None = run(context._values)  # type: ignore[union-attr]
                    if flag.track_events and self._counts is not None:
                        try:  # _count(), inlined: the counter exists after the first read
                            next(self._counts[flag_key][result.variation_key])  # type: ignore[union-attr]
                        except KeyError:
                            self._count(flag_key, result)  # type: ignore[arg-type]
                    return result.value  # type: ignore[union-attr, no-any-return]
                result = self._resolve(flag_key, context)
            else:  # overrides or scopes in play, not compiled yet, or unknown
                result = self._resolve_full(flag_key, context)
        except Exception as exc:  # a read never raises: bad key type, bad context, a bug
            self._misses.read_failed(flag_key, exc)
            result = None
        if result is not None and type(result.value) is str:
            return result.value
        return self._misses.value(flag_key, default, context, result, STRING)

    def get_integer_value(
        self,
        flag_key: str,
        default: int,
        context: EvaluationContext | None = None,
        hooks: Iterable[Hook] | None = None,
    ) -> int:
        """The flag's value as an int (a whole float counts), or ``default``; bools never count."""
        if hooks is not None:
            return cast(int, self._hooked(INTEGER, flag_key, default, context, hooks).value)
        return cast(int, self._value(flag_key, default, context, INTEGER))

    def get_float_value(
        self,
        flag_key: str,
        default: float,
        context: EvaluationContext | None = None,
        hooks: Iterable[Hook] | None = None,
    ) -> float:
        """The flag's numeric value as a float (an int counts), or ``default``; never a bool."""
        if hooks is not None:
            return cast(float, self._hooked(NUMBER, flag_key, default, context, hooks).value)
        return cast(float, self._value(flag_key, default, context, NUMBER))

    @overload
    def get_json_value(
        self,
        flag_key: str,
        default: J,
        context: EvaluationContext | None = None,
        hooks: Iterable[Hook] | None = None,
    ) -> J: ...
    @overload
    def get_json_value(
        self,
        flag_key: str,
        default: JSONValue,
        context: EvaluationContext | None = None,
        hooks: Iterable[Hook] | None = None,
    ) -> JSONValue: ...

    def get_json_value(
        self,
        flag_key: str,
        default: Any,
        context: EvaluationContext | None = None,
        hooks: Iterable[Hook] | None = None,
    ) -> Any:
        """The flag's JSON object/array value (a private copy), or ``default``."""
        if hooks is not None:
            return self._hooked(JSON, flag_key, default, context, hooks).value
        return self._value(flag_key, default, context, JSON)

    def get_variation(
        self,
        flag_key: str,
        context: EvaluationContext | None = None,
        hooks: Iterable[Hook] | None = None,
    ) -> EvaluationResult | None:
        """The full result (value, reason, variation key, rule id); None if the flag is unknown."""
        if hooks is not None:
            return hooked_variation(cast("PhaseFlagClient", self), flag_key, context, hooks)
        result = self._read(flag_key, context)
        if result is None or result.error_code in (ErrorCode.FLAG_NOT_FOUND, ErrorCode.NOT_READY):
            return None
        return private(result)

    def get_details(
        self,
        flag_key: str,
        default: Any,
        context: EvaluationContext | None = None,
        hooks: Iterable[Hook] | None = None,
    ) -> EvaluationResult:
        """Like ``get_variation`` but never None: on a miss the value is ``default``."""
        if hooks is not None:
            return self._hooked(None, flag_key, default, context, hooks)
        return self._details(flag_key, default, context)

    def _details(
        self, flag_key: str, default: Any, context: EvaluationContext | None
    ) -> EvaluationResult:
        result = self._read(flag_key, context)
        if result is None:
            return EvaluationResult(flag_key, default, Reason.ERROR, error_code=ErrorCode.GENERAL)
        if result.value is None:
            return replace(result, value=default)
        return private(result)

    def _typed_details(
        self, flag_key: str, default: Any, context: EvaluationContext | None, kind: Kind | None
    ) -> EvaluationResult:
        result = self._details(flag_key, default, context)
        if kind is None:  # get_details: any value
            return result
        try:
            return self._misses.details(flag_key, default, context, result, kind)
        except Exception as exc:  # a conversion that cannot be made: the default, as an error
            self._misses.read_failed(flag_key, exc)
            return EvaluationResult(
                str(flag_key), default, Reason.ERROR, error_code=ErrorCode.GENERAL
            )

    def _hooked(
        self,
        kind: Kind | None,
        flag_key: str,
        default: Any,
        context: EvaluationContext | None,
        call_hooks: Iterable[Hook] | None,
    ) -> EvaluationResult:
        """A read with hooks: the ``*_details`` result for ``kind`` between the hook stages
        (the typed value getters return its value: the same value they return without)."""
        return hooked_read(
            cast("PhaseFlagClient", self), kind, flag_key, default, context, call_hooks
        )

    def get_boolean_details(
        self,
        flag_key: str,
        default: bool,
        context: EvaluationContext | None = None,
        hooks: Iterable[Hook] | None = None,
    ) -> EvaluationResult:
        """The boolean result with reason and variation; TYPE_MISMATCH for a non-boolean flag."""
        if hooks is not None:
            return self._hooked(BOOLEAN, flag_key, default, context, hooks)
        return self._typed_details(flag_key, default, context, BOOLEAN)

    def get_string_details(
        self,
        flag_key: str,
        default: str,
        context: EvaluationContext | None = None,
        hooks: Iterable[Hook] | None = None,
    ) -> EvaluationResult:
        """The string result with reason and variation."""
        if hooks is not None:
            return self._hooked(STRING, flag_key, default, context, hooks)
        return self._typed_details(flag_key, default, context, STRING)

    def get_integer_details(
        self,
        flag_key: str,
        default: int,
        context: EvaluationContext | None = None,
        hooks: Iterable[Hook] | None = None,
    ) -> EvaluationResult:
        """The integer result with reason and variation (value made an int)."""
        if hooks is not None:
            return self._hooked(INTEGER, flag_key, default, context, hooks)
        return self._typed_details(flag_key, default, context, INTEGER)

    def get_float_details(
        self,
        flag_key: str,
        default: float,
        context: EvaluationContext | None = None,
        hooks: Iterable[Hook] | None = None,
    ) -> EvaluationResult:
        """The numeric result with reason and variation (value made a float)."""
        if hooks is not None:
            return self._hooked(NUMBER, flag_key, default, context, hooks)
        return self._typed_details(flag_key, default, context, NUMBER)

    def get_json_details(
        self,
        flag_key: str,
        default: Any,
        context: EvaluationContext | None = None,
        hooks: Iterable[Hook] | None = None,
    ) -> EvaluationResult:
        """The JSON result with reason and variation."""
        if hooks is not None:
            return self._hooked(JSON, flag_key, default, context, hooks)
        return self._typed_details(flag_key, default, context, JSON)

    def all_flags(
        self,
        context: EvaluationContext | None = None,
        *,
        details: bool = False,
        client_side_only: bool = False,
    ) -> dict[str, Any]:
        """Every flag evaluated for one context: ``{key: value}``, or with ``details=True``
        ``{key: {"value", "variation_key", "reason", "ruleset_version"}}``; flags that error
        are skipped. With ``client_side_only`` only flags marked ``"client_side": true``
        (the payload to embed in a page for browser code). Overrides apply. No exposure is
        counted and no hook runs: it is a snapshot, not a read. JSON-serialisable; never raises.
        """
        return all_flags(
            cast("PhaseFlagClient", self),
            context,
            details=details,
            client_side_only=client_side_only,
        )

    # -- overrides -------------------------------------------------------------------------------

    def set_override(self, flag_key: str, value: Any) -> None:
        """Serve ``value`` for ``flag_key`` to every context (reason ``override``) until cleared."""
        if not isinstance(flag_key, str):
            raise TypeError("flag_key must be a str")
        result = EvaluationResult(flag_key, value, Reason.OVERRIDE, variation_key="override")
        with self._override_lock:
            self._overrides = {**self._overrides, flag_key: result}
        self._publish()

    def clear_override(self, flag_key: str) -> None:
        """Remove one override (no error if there was none)."""
        with self._override_lock:
            if flag_key in self._overrides:
                self._overrides = {k: v for k, v in self._overrides.items() if k != flag_key}
        self._publish()

    def clear_all_overrides(self) -> None:
        """Remove every override."""
        with self._override_lock:
            self._overrides = {}
        self._publish()
