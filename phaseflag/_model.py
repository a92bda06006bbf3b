"""Compiled, immutable ruleset objects: what the evaluator walks.

Everything here is built once per ruleset change by ``_compile`` and then shared
read-only between threads; a new ruleset replaces the old one by one reference swap.
Outcomes that do not depend on the context are pre-built ``EvaluationResult``s, so a
read allocates nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .types import EvaluationResult

__all__ = ["Condition", "Flag", "Rollout", "Rule", "Ruleset", "Segment", "Serve", "Values"]

#: The flat view of a context that conditions read: attributes plus user_id/session_id.
Values = Mapping[str, Any]
#: A compiled condition: takes the context values, answers whether it holds.
Test = Callable[[Values], bool]

_EMPTY_MAP: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Condition:
    """One compiled condition; ``test`` already applies ``negate`` and the missing-value rule."""

    attribute: str | None
    operator: str
    negate: bool
    test: Test
    source: Mapping[str, Any] = field(repr=False, compare=False)
    # The compiled operand the generated read code binds (a set, a bound, segments).
    operand: Any = field(default=None, repr=False, compare=False)
    # The condition over a list attribute's elements (``_operators.any_of``); None for
    # operators that do not look at the value (exists, in_segment).
    any_of: Callable[[tuple[Any, ...]], bool] | None = field(
        default=None, repr=False, compare=False
    )


@dataclass(frozen=True, slots=True)
class Segment:
    """A reusable audience: explicit inclusions/exclusions plus rules (any rule matching).

    Membership is decided by ``_matcher.segment_contains``. ``tree`` (visits without a
    memo, capped), ``closure`` (segment keys it reaches, itself included) and ``work``
    (conditions over that closure, each counted once) are planned by ``_readcost``.
    """

    key: str
    included: frozenset[str]
    excluded: frozenset[str]
    rules: tuple[tuple[Condition, ...], ...]
    tree: int = field(default=1, compare=False)
    closure: frozenset[str] = field(default=frozenset(), compare=False)
    work: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Rollout:
    """A weighted split: cumulative thresholds in thousandths of a percent, one result each."""

    bucket_by: str
    salt: str
    prefix: str  # f"{salt}:", the part of the hashed text that never changes
    thresholds: tuple[int, ...]
    results: tuple[EvaluationResult, ...]
    # Served when the context has no bucketing key (never a random bucket).
    no_key_result: EvaluationResult


@dataclass(frozen=True, slots=True)
class Serve:
    """What a rule (or the default) serves: a fixed ``result`` or a ``rollout``."""

    result: EvaluationResult | None
    rollout: Rollout | None


@dataclass(frozen=True, slots=True)
class Rule:
    """An ordered targeting rule: all ``conditions`` hold -> ``serve``."""

    id: str | None
    conditions: tuple[Condition, ...]
    serve: Serve


@dataclass(frozen=True, slots=True)
class Flag:
    """A compiled flag.

    ``static`` is set when the outcome cannot depend on the context (disabled,
    invalid, or on with nothing to match): the evaluator returns it at once.
    ``error`` is set for a flag isolated at compile time (INVALID_FLAG).
    """

    key: str
    type: str
    enabled: bool
    version: int | None
    track_events: bool
    variations: Mapping[str, Any]
    off_result: EvaluationResult
    prerequisite_failed_result: EvaluationResult
    prerequisites: tuple[tuple[str, str], ...]
    targets: Mapping[str, EvaluationResult]
    rules: tuple[Rule, ...]
    default: Serve
    static: EvaluationResult | None
    error: str | None = None
    error_path: str = ""
    # The definition as compact JSON: compared to reuse unchanged flags, and ~8x
    # smaller than keeping the parsed dicts alive (``source`` rebuilds them).
    source_text: str = field(default="{}", repr=False, compare=False)
    segment_keys: frozenset[str] = frozenset()
    # The generated read (``_codegen``); None: the interpreter evaluates the flag.
    run: Callable[[Values], EvaluationResult] | None = field(default=None, compare=False)
    # Reads need a ReadScope: prerequisites, or a segment reached along two paths.
    needs_scope: bool = False
    # Conditions one read of this flag alone evaluates, its segments included (_readcost).
    work: int = 0
    # The definition's optional "metadata" object (surfaced by the OpenFeature provider).
    metadata: Mapping[str, Any] | None = None
    # "client_side": true: served by all_flags(client_side_only=True) (browser bootstrap).
    client_side: bool = False

    @property
    def source(self) -> dict[str, Any]:
        """The flag's JSON definition (a fresh copy on each access)."""
        value: dict[str, Any] = json.loads(self.source_text)
        return value


@dataclass(frozen=True, slots=True)
class Ruleset:
    """A complete, compiled ruleset: the unit that is swapped atomically.

    ``source`` rebuilds the validated JSON document it was compiled from (for the
    server and tools); ``problems`` lists ``(json_path, message)`` for isolated flags.
    """

    version: int
    flags: Mapping[str, Flag]
    segments: Mapping[str, Segment]
    problems: tuple[tuple[str, str], ...] = ()
    # The document's top-level fields other than "flags" (version, segments, ...).
    top_source: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    shorthand: bool = False
    # ``flags`` as the plain dict it wraps: the read path's lookup (a dict probe costs
    # less than a mappingproxy one). Never mutated after compile, like ``flags``.
    table: dict[str, Flag] = field(default_factory=dict, repr=False, compare=False)

    @property
    def segments_source(self) -> list[Any]:
        """The segments exactly as the document gave them."""
        segments: list[Any] = self.top_source.get("segments", [])
        return segments

    @property
    def source(self) -> dict[str, Any]:
        """The ruleset as a JSON document (a fresh copy built on each access)."""
        document: dict[str, Any] = json.loads(json.dumps(self.top_source))
        document["flags"] = [flag.source for flag in self.flags.values()]
        return document

    def __len__(self) -> int:
        return len(self.flags)

    def __contains__(self, key: object) -> bool:
        return key in self.flags


EMPTY_RULESET = Ruleset(version=-1, flags=_EMPTY_MAP, segments=_EMPTY_MAP)
