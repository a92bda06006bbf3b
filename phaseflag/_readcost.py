"""The work one read can do, planned at compile time.

A read evaluates each prerequisite flag and each segment at most once (a ``ReadScope``
memoises them when the ruleset's graph reaches one along two paths), so its work is the
conditions of the flag, of its prerequisite closure and of their segment closure, each
counted once. A flag whose read could evaluate more than ``MAX_READ_CONDITIONS`` is
isolated at compile time (INVALID_FLAG) with a message saying so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from ._model import Condition, Flag, Segment

__all__ = ["MAX_READ_CONDITIONS", "plan_flag", "plan_segment", "read_work_problems"]

#: Most conditions one read may evaluate (its flag, prerequisites and segments, each once):
#: the schema's own maximum for a single flag (1,000 rules of 100 conditions).
MAX_READ_CONDITIONS: Final = 100_000
_CAP: Final = 1 << 62  # path counts saturate here: they only need comparing


def _segments_in(rules: Iterable[tuple[Condition, ...]]) -> list[Segment]:
    """Every segment named by an ``in_segment`` condition, once per mention."""
    found: list[Segment] = []
    for conditions in rules:
        for condition in conditions:
            if condition.operator == "in_segment":
                found.extend(condition.operand)
    return found


def _own(rules: Iterable[tuple[Condition, ...]]) -> int:
    return 1 + sum(len(conditions) for conditions in rules)


def _reach(mentions: list[Segment]) -> tuple[int, dict[str, int]]:
    """(segment visits without a memo, {segment key: own work} over the closure)."""
    tree = 0
    closure: dict[str, int] = {}
    stack = list(mentions)
    for segment in mentions:
        tree = min(_CAP, tree + segment.tree)
    while stack:
        segment = stack.pop()
        if segment.key in closure:
            continue
        closure[segment.key] = _own(segment.rules)
        stack.extend(_segments_in(segment.rules))
    return tree, closure


def plan_segment(
    key: str,
    included: frozenset[str],
    excluded: frozenset[str],
    rules: tuple[tuple[Condition, ...], ...],
) -> Segment:
    """A compiled segment with its planned read cost (children compiled first)."""
    tree, closure = _reach(_segments_in(rules))
    closure[key] = _own(rules)
    return Segment(
        key=key,
        included=included,
        excluded=excluded,
        rules=rules,
        tree=min(_CAP, 1 + tree),
        closure=frozenset(closure),
        work=sum(closure.values()),
    )


def plan_flag(rules: tuple[tuple[Condition, ...], ...], prerequisites: bool) -> tuple[bool, int]:
    """(whether reads need a ReadScope, conditions one read of the flag alone evaluates).

    Raises ValueError when that work exceeds MAX_READ_CONDITIONS.
    """
    tree, closure = _reach(_segments_in(rules))
    work = _own(rules) + sum(closure.values())
    if work > MAX_READ_CONDITIONS:
        raise ValueError(_too_much(work))
    return prerequisites or tree > len(closure), work


def read_work_problems(flags: Mapping[str, Flag]) -> dict[str, str]:
    """Flags whose read, prerequisites included, could exceed MAX_READ_CONDITIONS.

    Cycles are isolated before this runs; a missing or isolated parent adds nothing.
    """
    closures: dict[str, frozenset[str]] = {}
    problems: dict[str, str] = {}
    for root, root_flag in flags.items():
        if not root_flag.prerequisites or root in closures:
            continue
        stack = [root]
        while stack:  # depth first: parents' closures before their dependents'
            key = stack[-1]
            if key in closures:
                stack.pop()
                continue
            pending = [p for p, _ in flags[key].prerequisites if p in flags and p not in closures]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            members = {key}
            for parent, _ in flags[key].prerequisites:
                members |= closures.get(parent, frozenset())
            closures[key] = frozenset(members)
    for key, closure in closures.items():
        work = sum(flags[m].work for m in closure)
        if work > MAX_READ_CONDITIONS:
            problems[key] = _too_much(work) + " with its prerequisites"
    return problems


def _too_much(work: int) -> str:
    return (
        f"one read could evaluate {work} conditions, more than the limit of "
        f"{MAX_READ_CONDITIONS}; split the flag or its segments, or share fewer prerequisites"
    )
