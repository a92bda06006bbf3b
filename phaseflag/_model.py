"""Compiled, immutable ruleset objects: what the evaluator walks.

Everything here is built once per ruleset change by ``_compile`` and then shared
read-only between threads; a new ruleset replaces the old one by one reference swap.
Outcomes that do not depend on the context are pre-built ``EvaluationResult``s, so a
read allocates nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, overload

from .types import EvaluationResult

__all__ = [
    "Condition",
    "Flag",
    "FlagSources",
    "FlagTable",
    "Rollout",
    "Rule",
    "Ruleset",
    "Segment",
    "Serve",
    "Values",
]

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
    # The condition as compact JSON (a parsed dict per condition would cost ~1 KB).
    source_text: str = field(repr=False, compare=False)
    # The compiled operand the generated read code binds (a set, a bound, segments).
    operand: Any = field(default=None, repr=False, compare=False)
    # The condition over a list attribute's elements (``_operators.any_of``); None for
    # operators that do not look at the value (exists, in_segment).
    any_of: Callable[[tuple[Any, ...]], bool] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def source(self) -> dict[str, Any]:
        """The condition's JSON definition (a fresh copy on each access)."""
        value: dict[str, Any] = json.loads(self.source_text)
        return value


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
    # Derived (__post_init__), for the two hottest getters: the answer of a static flag that
    # counts nothing, when it has the getter's type; and the generated read when every
    # result it can return has that type (so its value needs no type check).
    fixed_bool: bool | None = field(init=False, default=None, repr=False, compare=False)
    fixed_str: str | None = field(init=False, default=None, repr=False, compare=False)
    bool_run: Callable[[Values], EvaluationResult] | None = field(
        init=False, default=None, repr=False, compare=False
    )
    str_run: Callable[[Values], EvaluationResult] | None = field(
        init=False, default=None, repr=False, compare=False
    )
    # Derived too, for an untracked flag whose rules each test one attribute (the same one)
    # for membership in a set of strings and serve a fixed value: the value each string
    # gets (the first rule holding it wins) and the default's, so the getter answers with
    # two dict lookups and no call. ``*_lookup`` is set when every value has that type.
    lookup_attr: str | None = field(init=False, default=None, repr=False, compare=False)
    bool_lookup: Mapping[str, bool] | None = field(
        init=False, default=None, repr=False, compare=False
    )
    str_lookup: Mapping[str, str] | None = field(
        init=False, default=None, repr=False, compare=False
    )
    lookup_miss: Any = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        static = self.static
        if static is not None:
            if not self.track_events:
                value = static.value
                if type(value) is bool:
                    object.__setattr__(self, "fixed_bool", value)
                elif type(value) is str:
                    object.__setattr__(self, "fixed_str", value)
            return
        if self.run is not None:
            kinds = {type(result.value) for result in self.served()}
            if kinds == {bool}:
                object.__setattr__(self, "bool_run", self.run)
            elif kinds == {str}:
                object.__setattr__(self, "str_run", self.run)
            else:
                return
            lookup = None if self.track_events else self._membership()
            if lookup is not None:
                object.__setattr__(self, "lookup_attr", lookup[0])
                name = "bool_lookup" if kinds == {bool} else "str_lookup"
                object.__setattr__(self, name, lookup[1])
                object.__setattr__(self, "lookup_miss", lookup[2])

    def _membership(self) -> tuple[str, dict[str, Any], Any] | None:
        """(attribute, value by string, default's value) when every rule is one plain
        ``in``/``equals`` test of the same attribute serving a fixed result, else None.
        The generated read tests ``values.get(attribute) in strings`` rule by rule, so a
        string's value is that of the first rule listing it and any other value misses."""
        default = self.default.result
        if not self.rules or default is None or self.targets or self.needs_scope:
            return None  # (prerequisites always need a scope)
        attribute: str | None = None
        lookup: dict[str, Any] = {}
        for rule in self.rules:
            if len(rule.conditions) != 1 or rule.serve.result is None:
                return None
            condition = rule.conditions[0]
            if condition.operator not in ("in", "equals") or condition.operand is None:
                return None  # negated, case-insensitive or not only strings: not a set test
            if attribute is None:
                attribute = condition.attribute
            if attribute is None or condition.attribute != attribute:
                return None
            value = rule.serve.result.value
            for text in condition.operand:
                lookup.setdefault(text, value)
        assert attribute is not None
        return attribute, lookup, default.value

    def served(self) -> Iterator[EvaluationResult]:
        """Every result a read of this flag can return, prerequisites and static aside:
        its targets, each rule's and the default's fixed result or rollout results."""
        yield from self.targets.values()
        for serve in (*(rule.serve for rule in self.rules), self.default):
            if serve.result is not None:
                yield serve.result
            if serve.rollout is not None:
                yield from serve.rollout.results
                yield serve.rollout.no_key_result

    @property
    def source(self) -> dict[str, Any]:
        """The flag's JSON definition (a fresh copy on each access)."""
        value: dict[str, Any] = json.loads(self.source_text)
        return value


class FlagTable(Mapping[str, Flag]):
    """A ruleset's flags by key, each compiled from its JSON text on first access.

    Loading keeps only each flag's text; ``compile(text)`` runs when a flag is first
    read (and never raises: an unusable flag compiles to an INVALID_FLAG flag). The
    result is published into ``table`` with ``dict.setdefault``, one atomic step,
    so threads racing to compile the same flag all end up with the first published
    object (compiling is deterministic, so the losers' copies are equal anyway).
    Iterating, ``len`` and ``in`` never compile.
    """

    __slots__ = ("_compile", "_compiled", "_problems", "_texts")

    def __init__(
        self,
        texts: dict[str, str],
        compiled: dict[str, Flag],
        compile: Callable[[str], Flag],
    ) -> None:
        self._texts = texts
        self._compiled = compiled
        self._compile = compile
        self._problems: tuple[tuple[str, str], ...] | None = None

    def __getitem__(self, key: str) -> Flag:
        flag = self._compiled.get(key)
        if flag is None:
            flag = self._compiled.setdefault(key, self._compile(self._texts[key]))
        return flag

    @overload
    def get(self, key: str, /) -> Flag | None: ...
    @overload
    def get(self, key: str, /, default: Flag | Any) -> Flag | Any: ...
    def get(self, key: str, /, default: Any = None) -> Any:
        flag = self._compiled.get(key)
        if flag is not None:
            return flag
        text = self._texts.get(key)
        if text is None:
            return default
        return self._compiled.setdefault(key, self._compile(text))

    def __iter__(self) -> Iterator[str]:
        return iter(self._texts)

    def __len__(self) -> int:
        return len(self._texts)

    def __contains__(self, key: object) -> bool:
        return key in self._texts

    def text(self, key: str) -> str | None:
        """The flag's definition as JSON text, without compiling it."""
        return self._texts.get(key)

    def texts(self) -> Mapping[str, str]:
        """Every flag's JSON text by key, in document order (never compiles)."""
        return self._texts

    def compile_all(self) -> None:
        """Compile every flag not compiled yet."""
        for key in self._texts:
            self.get(key)

    def pending(self) -> int:
        """How many flags have not been compiled yet."""
        return len(self._texts) - len(self._compiled)


class FlagSources(Mapping[str, dict[str, Any]]):
    """Flag key -> its JSON definition, decoded only when looked up.

    The ``flags_changed`` payload: building it costs nothing, and a listener pays
    only for the definitions it reads (each access returns a fresh copy).
    """

    __slots__ = ("_table",)

    def __init__(self, table: FlagTable) -> None:
        self._table = table

    def __getitem__(self, key: str) -> dict[str, Any]:
        text = self._table.text(key)
        if text is None:
            raise KeyError(key)
        value: dict[str, Any] = json.loads(text)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, key: object) -> bool:
        return key in self._table

    def __repr__(self) -> str:
        return f"<FlagSources of {len(self)} flags>"


def _no_flags(text: str) -> Flag:  # pragma: no cover - the empty table has no texts
    raise KeyError(text)


_EMPTY_TABLE = FlagTable({}, {}, _no_flags)


@dataclass(frozen=True, slots=True)
class Ruleset:
    """A complete, compiled ruleset: the unit that is swapped atomically.

    ``flags`` compiles each flag on first access (see ``FlagTable``); ``table``
    holds those compiled so far, for the read path's plain dict lookup
    (``ruleset.table.get(key) or ruleset.flags.get(key)``). ``source`` rebuilds
    the JSON document it was loaded from (for the server and tools).
    """

    version: int
    flags: FlagTable
    segments: Mapping[str, Segment]
    # The document's top-level fields other than "flags" (version, segments, ...).
    top_source: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    shorthand: bool = False
    # The flags compiled so far, a plain dict: the read path's lookup (``table.get(key) or
    # flags.get(key)``, the second compiling on first read). Only ever added to.
    table: dict[str, Flag] = field(default_factory=dict, repr=False, compare=False)
    segment_problems: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    # A digest of the exact bytes loaded: the same bytes again cost no work at all.
    digest: bytes = field(default=b"", repr=False, compare=False)
    # Version of each flag whose definition gives one (change events need it uncompiled).
    flag_versions: Mapping[str, int] = field(default_factory=dict, repr=False, compare=False)
    # Flag key -> the flag keys it names as prerequisites (only flags that have any).
    prerequisite_graph: Mapping[str, tuple[str, ...]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @property
    def problems(self) -> tuple[tuple[str, str], ...]:
        """``(json_path, message)`` for every isolated segment and flag.

        Compiles every flag not compiled yet (a flag's problems are found when it
        is compiled): meant for tools and tests, not for the read path. Computed once.
        """
        table = self.flags
        if table._problems is None:
            table.compile_all()
            found = list(self.segment_problems)
            for index, key in enumerate(table):
                flag = table[key]
                if flag.error:
                    found.append((f"flags[{index}]{flag.error_path}", flag.error))
            table._problems = tuple(found)
        return table._problems

    @property
    def segments_source(self) -> list[Any]:
        """The segments exactly as the document gave them."""
        segments: list[Any] = self.top_source.get("segments", [])
        return segments

    @property
    def source(self) -> dict[str, Any]:
        """The ruleset as a JSON document (a fresh copy built on each access)."""
        document: dict[str, Any] = json.loads(json.dumps(self.top_source))
        document["flags"] = [json.loads(self.flags.text(key) or "{}") for key in self.flags]
        return document

    def __len__(self) -> int:
        return len(self.flags)

    def __contains__(self, key: object) -> bool:
        return key in self.flags


EMPTY_RULESET = Ruleset(version=-1, flags=_EMPTY_TABLE, segments=_EMPTY_MAP)
