"""The rule matcher: which rule's conditions all hold, and segment membership.

One matching path: ``first_match`` serves the interpreter, ``explain`` (with a trace)
and segments; the generated per-flag reads (``_codegen``) are checked against it.
A ``ReadScope`` carries one read's memo, so each prerequisite flag and each segment
is evaluated at most once per read however often the ruleset's graph reaches it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ._model import Condition, Segment, Values
from .types import ListValues

__all__ = ["ReadScope", "Trace", "first_match", "scope_of", "segment_contains", "show"]

Trace = list[dict[str, Any]]


class ReadScope(dict[str, Any]):
    """One read's context values plus its memo of prerequisite results and segments.

    Made per read (never shared between reads or threads) for flags whose evaluation
    could reach a flag or segment twice; read by conditions exactly like the values.
    """

    __slots__ = ("flags", "lists", "segments")

    flags: dict[str, Any]
    segments: dict[str, bool]
    lists: bool  # made from a context holding a list attribute (types.ListValues)


def scope_of(values: Values) -> ReadScope:
    """``values`` as a ReadScope: itself when it already is one (a nested evaluation)."""
    if type(values) is ReadScope:
        return values
    scope = ReadScope(values)
    scope.flags = {}
    scope.segments = {}
    scope.lists = type(values) is ListValues
    return scope


def first_match(
    rules: Sequence[tuple[Condition, ...]], values: Values, trace: Trace | None = None
) -> int:
    """Index of the first rule whose conditions all hold, or -1.

    With ``trace``, one step per rule tried records whether it matched and, when it did
    not, the first condition that failed and the context value it saw.
    """
    lists = type(values) is ListValues or (type(values) is ReadScope and values.lists)
    for index, conditions in enumerate(rules):
        for condition in conditions:
            if lists and condition.any_of is not None:
                items = values.get(condition.attribute or "")
                held = condition.any_of(items) if type(items) is tuple else condition.test(values)
            else:
                held = condition.test(values)
            if not held:
                if trace is not None:
                    trace.append(
                        {
                            "step": "rule",
                            "index": index,
                            "matched": False,
                            "failed_condition": dict(condition.source),
                            "context_value": show(values.get(condition.attribute or "")),
                        }
                    )
                break
        else:
            if trace is not None:
                trace.append({"step": "rule", "index": index, "matched": True})
            return index
    return -1


def segment_contains(segment: Segment, values: Values) -> bool:
    """True when the context belongs to ``segment``; exclusion beats inclusion.

    Within a ReadScope the answer is memoised for the rest of the read.
    """
    if type(values) is ReadScope:
        memo = values.segments
        hit = memo.get(segment.key)
        if hit is None:
            memo[segment.key] = hit = _contains(segment, values)
        return hit
    return _contains(segment, values)


def _contains(segment: Segment, values: Values) -> bool:
    user_id = values.get("user_id")
    if user_id is not None:
        if user_id in segment.excluded:
            return False
        if user_id in segment.included:
            return True
    return first_match(segment.rules, values) >= 0


def show(value: object) -> Any:
    """A context value as a trace shows it: long text cut, huge ints summarised."""
    if isinstance(value, str) and len(value) > 80:
        return value[:77] + "..."
    if type(value) is int and value.bit_length() > 64:  # keep the trace printable
        return f"<{value.bit_length()}-bit integer>"
    return value.isoformat() if isinstance(value, datetime) else value
