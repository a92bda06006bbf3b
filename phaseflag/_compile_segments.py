"""A document's validated segments -> compiled Segments, children before their users.

A segment on a cycle of ``in_segment`` references, or atop a chain deeper than
MAX_SEGMENT_DEPTH, is dropped with a problem naming it (flags using it are isolated).
Iterative: chains of any length compile without recursion.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ._compile_flag import Invalid, compile_conditions, segment_refs
from ._graph import layers
from ._model import Segment
from ._readcost import plan_segment

__all__ = ["MAX_SEGMENT_DEPTH", "compile_segments", "duplicate_segments"]

#: Deepest chain of segments referring to segments.
MAX_SEGMENT_DEPTH: Final = 16


def compile_segments(
    raw_segments: list[dict[str, Any]],
) -> tuple[dict[str, Segment], list[tuple[str, str]]]:
    """The compiled segments by key, and the (JSON path, message) of each one dropped."""
    by_key = {raw["key"]: (index, raw) for index, raw in enumerate(raw_segments)}
    refs = {key: segment_refs(raw.get("rules", [])) for key, (_, raw) in by_key.items()}
    found = layers(refs, MAX_SEGMENT_DEPTH)
    compiled: dict[str, Segment] = {}
    problems: list[tuple[str, str]] = []
    for key in found.order:
        index, raw = by_key[key]
        try:
            broken = found.broken.get(key)
            if broken is not None:
                kind, members = broken
                why = (
                    f"segment cycle among {', '.join(members)}"
                    if kind == "cycle"
                    else f"segment chain deeper than {MAX_SEGMENT_DEPTH}"
                )
                raise Invalid(f"segments[{index}]", f"segment {key!r}: {why}")
            compiled[key] = _compile_segment(raw, index, compiled)
        except Invalid as exc:
            problems.append((exc.path, exc.message))
    problems.sort()
    return compiled, problems


def duplicate_segments(raw_segments: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """An error for each segment whose key an earlier segment already has."""
    seen: set[str] = set()
    errors = []
    for index, raw in enumerate(raw_segments):
        key = raw.get("key")
        if not isinstance(key, str):  # the schema reports it
            continue
        if key in seen:
            errors.append((f"segments[{index}].key", f"duplicate segment key {key!r}"))
        seen.add(key)
    return errors


def _compile_segment(raw: dict[str, Any], index: int, known: Mapping[str, Segment]) -> Segment:
    rules = []
    for r, rule in enumerate(raw.get("rules", [])):
        path = f"segments[{index}].rules[{r}]"
        rules.append(compile_conditions(rule["conditions"], known, path))
    return plan_segment(
        raw["key"],
        frozenset(raw.get("included", ())),
        frozenset(raw.get("excluded", ())),
        tuple(rules),
    )
