"""Validated JSON -> compiled Ruleset: all per-flag work happens here, once per change.

A document that fails the schema is rejected whole (RulesetError listing every
error with its JSON path). A flag that is schema-valid but unusable (unknown
operator, bad regex, unknown variation or segment, value of the wrong type, weights
not summing to 100, a prerequisite cycle) is isolated: it evaluates to the caller's
default with error INVALID_FLAG and the rest of the ruleset loads. Given the
previous Ruleset, flags whose definition did not change are reused untouched.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from ._codegen import generate
from ._model import Condition, Flag, Rollout, Rule, Ruleset, Segment, Serve
from ._operators import InvalidCondition, compile_condition
from ._readcost import plan_flag, plan_segment, read_work_problems
from ._schema import (
    MAX_DOCUMENT_BYTES,
    json_depth_exceeds,
    parse_document,
    reject,
    split_document,
    validate_item,
    validate_shell,
)
from .types import ErrorCode, EvaluationResult, Reason

__all__ = ["MAX_PREREQUISITE_DEPTH", "compile_ruleset", "expand_shorthand", "load_ruleset"]

#: Longest prerequisite chain accepted; deeper flags are isolated as INVALID_FLAG.
MAX_PREREQUISITE_DEPTH: Final = 16
#: Deepest chain of segments referring to segments.
MAX_SEGMENT_DEPTH: Final = 16

_TYPE_CHECKS: Final[Mapping[str, Any]] = {
    "boolean": lambda v: type(v) is bool,
    "string": lambda v: type(v) is str,
    "number": lambda v: type(v) is int or (type(v) is float and math.isfinite(v)),
    "json": lambda v: isinstance(v, (dict, list)),
}


#: Compact JSON of one flag: what "unchanged" means when reusing compiled flags.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_NO_KEYS: Final[frozenset[str]] = frozenset()
_NO_TARGETS: Final[Mapping[str, EvaluationResult]] = MappingProxyType({})
_UNUSED: Final = EvaluationResult("", None, Reason.ERROR, error_code=ErrorCode.GENERAL)


class _Invalid(Exception):
    """A flag or segment cannot be compiled; carries the JSON sub-path and message."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


# -- public entry points -------------------------------------------------------------------


def load_ruleset(raw: bytes | str, *, previous: Ruleset | None = None) -> Ruleset:
    """Parse JSON text (size/depth limited), validate and compile it.

    Flags are kept as their JSON text: given ``previous``, a flag whose text is
    unchanged is reused without being parsed or validated again.
    """
    split = None
    if len(raw) <= MAX_DOCUMENT_BYTES:
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
            split = split_document(text)
        except (ValueError, RecursionError):  # parse_document() below reports it
            split = None
    if split is None:
        return compile_ruleset(parse_document(raw), previous=previous)
    top, texts = split
    return _with_gc_paused(top, [(text, None) for text in texts], previous, False)


def expand_shorthand(document: Mapping[str, Any]) -> dict[str, Any]:
    """``{"flags": {"key": value}}`` -> a full schema-1 document of static flags."""
    flags = []
    static: dict[str, Any] = dict(document.get("flags", {}))
    static.update(document.get("configs", {}) if isinstance(document.get("configs"), dict) else {})
    for key, value in static.items():
        flags.append(
            {
                "key": key,
                "type": _infer_type(value),
                "variations": [{"key": "static", "value": value}],
                "default": {"variation": "static"},
            }
        )
    version = document.get("version", 0)
    return {"schema_version": 1, "version": version, "flags": flags}


def _infer_type(value: object) -> str:
    if type(value) is bool:
        return "boolean"
    if type(value) is str:
        return "string"
    if type(value) in (int, float):
        return "number"
    return "json"


def compile_ruleset(document: object, *, previous: Ruleset | None = None) -> Ruleset:
    """Validate and compile a parsed document; raises RulesetError if it fails the schema."""
    shorthand = isinstance(document, dict) and isinstance(document.get("flags"), dict)
    if shorthand:
        if "schema_version" in document:  # type: ignore[operator]
            raise reject([("flags", "must be an array in a schema_version document")])
        document = expand_shorthand(document)  # type: ignore[arg-type]
    if not isinstance(document, dict) or not isinstance(document.get("flags"), list):
        raise reject(validate_shell(document) or [("flags", "must be an array")])
    items: list[tuple[str, Any]] = []
    errors: list[tuple[str, str]] = []
    for index, raw in enumerate(document["flags"]):
        try:
            items.append((_encode(raw), raw))
        except (TypeError, ValueError) as exc:  # a bootstrap dict holding non-JSON values
            errors.append((f"flags[{index}]", f"is not JSON-serialisable: {exc}"))
    if errors:
        raise reject(errors)
    top = {k: v for k, v in document.items() if k != "flags"}
    return _with_gc_paused(top, items, previous, shorthand)


def _with_gc_paused(
    top: dict[str, Any], items: list[tuple[str, Any]], previous: Ruleset | None, shorthand: bool
) -> Ruleset:
    """Compile with the cyclic garbage collector paused.

    Building ~20 objects per flag otherwise triggers full collections that hold
    the GIL for up to a tenth of a second, stalling reads in other threads.
    """
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        return _compile_items(top, items, previous, shorthand)
    finally:
        if paused:
            gc.enable()


def _compile_items(
    top: dict[str, Any], items: list[tuple[str, Any]], previous: Ruleset | None, shorthand: bool
) -> Ruleset:
    """Validate and compile; ``items`` are (flag JSON text, parsed flag or None)."""
    errors = validate_shell({**top, "flags": []})
    if errors:
        raise reject(errors)
    raw_segments: list[dict[str, Any]] = top.get("segments", [])
    same_segments = previous is not None and previous.segments_source == raw_segments
    if not same_segments:
        for index, raw in enumerate(raw_segments):
            errors.extend(validate_item("segment", raw, index))
        errors.extend(_duplicate_segments(raw_segments) if not errors else [])
    segments: Mapping[str, Segment] = {}
    segment_problems: list[tuple[str, str]] = []
    if same_segments and previous is not None:
        segments = previous.segments
        segment_problems = [p for p in previous.problems if p[0].startswith("segments[")]
    elif not errors:
        segments, segment_problems = _compile_segments(raw_segments)

    # An isolated flag is never reused: its cause (a cycle, a missing segment) may be gone.
    reusable = (
        {f.source_text: f for f in previous.flags.values() if f.error is None}
        if previous is not None
        else {}
    )
    flags: dict[str, Flag] = {}
    seen: dict[str, int] = {}
    for index, (text, given) in enumerate(items):
        old = reusable.get(text)
        if old is not None and (same_segments or not old.segment_keys):
            flag: Flag | None = old
            key: object = old.key
        else:
            # Split from a document, this text is one JSON value (decoded once already).
            raw = given if given is not None else json.loads(text)
            found = validate_item("flag", raw, index)
            errors.extend(found)
            key = raw.get("key") if isinstance(raw, dict) else None
            flag = None if found or errors else _compile_flag(raw, text, segments)
        if isinstance(key, str):
            if key in seen:
                errors.append((f"flags[{index}].key", f"duplicate flag key {key!r}"))
            seen[key] = index
            if flag is not None and not errors:
                flags[key] = flag
    if errors:
        raise reject(errors)
    _check_prerequisites(flags)
    for key, message in read_work_problems(flags).items():
        flags[key] = _invalid_flag(
            flags[key].source, ".prerequisites", message, flags[key].source_text
        )
    problems = tuple(segment_problems) + tuple(
        (f"flags[{seen[f.key]}]{f.error_path}", f.error) for f in flags.values() if f.error
    )
    return Ruleset(
        version=int(top.get("version", 0)),
        flags=MappingProxyType(flags),
        segments=MappingProxyType(dict(segments)),
        table=flags,
        problems=problems,
        top_source=top,
        shorthand=shorthand,
    )


def _duplicate_segments(raw_segments: list[dict[str, Any]]) -> list[tuple[str, str]]:
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


# -- segments --------------------------------------------------------------------------------


def _compile_segments(
    raw_segments: list[dict[str, Any]],
) -> tuple[dict[str, Segment], list[tuple[str, str]]]:
    """Compile segments children first; a segment on a cycle or atop a chain deeper than
    MAX_SEGMENT_DEPTH is dropped (flags using it are isolated). Iterative: any length."""
    by_key = {raw["key"]: (index, raw) for index, raw in enumerate(raw_segments)}
    refs = {
        key: [r for r in _segment_refs(raw.get("rules", [])) if r in by_key]
        for key, (_, raw) in by_key.items()
    }
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    height: dict[str, int] = {}
    broken: dict[str, str] = {}
    order: list[str] = []
    for root in by_key:
        if root in state:
            continue
        state[root] = 1
        path, stack = [root], [(root, iter(refs[root]))]
        while stack:
            key, pending = stack[-1]
            for ref in pending:
                if ref not in state:
                    state[ref] = 1
                    path.append(ref)
                    stack.append((ref, iter(refs[ref])))
                    break
                if state[ref] == 1:
                    cycle = path[path.index(ref) :]
                    for member in cycle:
                        broken[member] = "segment cycle: " + " -> ".join([*cycle, ref])
            else:
                stack.pop()
                path.pop()
                state[key] = 2
                height[key] = max((height.get(r, 0) + 1 for r in refs[key]), default=0)
                if key not in broken and height[key] > MAX_SEGMENT_DEPTH:
                    broken[key] = f"segment chain deeper than {MAX_SEGMENT_DEPTH}"
                order.append(key)
    compiled: dict[str, Segment] = {}
    problems: list[tuple[str, str]] = []
    for key in order:
        index, raw = by_key[key]
        try:
            if key in broken:
                raise _Invalid(f"segments[{index}]", f"segment {key!r}: {broken[key]}")
            compiled[key] = _compile_segment(raw, index, compiled)
        except _Invalid as exc:
            problems.append((exc.path, exc.message))
    problems.sort()
    return compiled, problems


def _segment_refs(rules: list[dict[str, Any]]) -> list[str]:
    return [
        ref
        for rule in rules
        for cond in rule.get("conditions", [])
        if cond.get("operator") == "in_segment"
        for ref in cond.get("values", [])
        if isinstance(ref, str)
    ]


def _compile_segment(raw: dict[str, Any], index: int, known: Mapping[str, Segment]) -> Segment:
    rules = []
    for r, rule in enumerate(raw.get("rules", [])):
        rules.append(_conditions(rule["conditions"], known, f"segments[{index}].rules[{r}]"))
    return plan_segment(
        raw["key"],
        frozenset(raw.get("included", ())),
        frozenset(raw.get("excluded", ())),
        tuple(rules),
    )


def _conditions(
    raw_conditions: list[dict[str, Any]], segments: Mapping[str, Segment], path: str
) -> tuple[Condition, ...]:
    out = []
    for c, raw in enumerate(raw_conditions):
        try:
            out.append(compile_condition(raw, segments))
        except InvalidCondition as exc:
            raise _Invalid(f"{path}.conditions[{c}]", str(exc)) from None
    return tuple(out)


# -- flags -------------------------------------------------------------------------------------


class _Results:
    """Builds (and shares) the pre-built EvaluationResults of one flag."""

    def __init__(self, key: str, variations: Mapping[str, Any]) -> None:
        self.key = key
        self.variations = variations
        self._made: dict[tuple[str | None, str, str | None], EvaluationResult] = {}

    def get(
        self, variation: str | None, reason: str, rule_id: str | None = None
    ) -> EvaluationResult:
        memo = (variation, reason, rule_id)
        made = self._made.get(memo)
        if made is None:
            value = None if variation is None else self.variations[variation]
            made = EvaluationResult(self.key, value, reason, variation, rule_id)
            self._made[memo] = made
        return made

    def variation(self, name: object, path: str) -> str:
        if name not in self.variations:
            raise _Invalid(path, f"unknown variation {name!r}")
        return str(name)


def _invalid_flag(raw: Mapping[str, Any], path: str, message: str, text: str = "") -> Flag:
    key = str(raw.get("key", ""))
    result = EvaluationResult(
        key, None, Reason.ERROR, error_code=ErrorCode.INVALID_FLAG, error_message=message
    )
    return Flag(
        key=key,
        type=str(raw.get("type", "json")),
        enabled=False,
        version=raw.get("version"),
        track_events=False,
        variations=MappingProxyType({}),
        off_result=result,
        prerequisite_failed_result=result,
        prerequisites=(),
        targets=MappingProxyType({}),
        rules=(),
        default=Serve(result, None),
        static=result,
        error=message,
        error_path=path,
        source_text=text or _encode(raw),
    )


def _compile_flag(raw: dict[str, Any], text: str, segments: Mapping[str, Segment]) -> Flag:
    try:
        return _build_flag(raw, text, segments)
    except _Invalid as exc:
        return _invalid_flag(raw, exc.path, exc.message, text)


def _build_flag(raw: dict[str, Any], text: str, segments: Mapping[str, Segment]) -> Flag:
    key, kind = raw["key"], raw["type"]
    variations: dict[str, Any] = {}
    fits = _TYPE_CHECKS[kind]
    for v, variation in enumerate(raw["variations"]):
        if variation["key"] in variations:
            raise _Invalid(f".variations[{v}].key", f"duplicate variation {variation['key']!r}")
        if not fits(variation["value"]):
            raise _Invalid(f".variations[{v}].value", f"value does not fit type {kind!r}")
        if kind == "json" and json_depth_exceeds(variation["value"]):
            raise _Invalid(f".variations[{v}].value", "JSON value is nested too deeply")
        variations[variation["key"]] = variation["value"]
    results = _Results(key, variations)
    off = raw.get("off_variation")
    off_variation = None if off is None else results.variation(off, ".off_variation")
    enabled = raw.get("enabled", True)
    prerequisites = tuple((p["flag"], p["variation"]) for p in raw.get("prerequisites", ()))
    # Results for paths this flag cannot take are shared placeholders (memory per flag).
    off_result = results.get(off_variation, Reason.DISABLED) if not enabled else _UNUSED
    salt = raw.get("salt") or key

    targets: dict[str, EvaluationResult] = {}
    for t, target in enumerate(raw.get("targets", ())):
        name = results.variation(target["variation"], f".targets[{t}].variation")
        for user_id in target["user_ids"]:
            targets.setdefault(user_id, results.get(name, Reason.TARGETING_MATCH))

    rules = []
    used_segments: set[str] = set()
    for r, rule in enumerate(raw.get("rules", ())):
        conditions = _conditions(rule["conditions"], segments, f".rules[{r}]")
        used_segments.update(_segment_refs([rule]))
        rule_id = rule.get("id")
        serve = _serve(
            rule["serve"],
            results,
            salt,
            off_variation,
            path=f".rules[{r}].serve",
            rule_id=rule_id,
            reason=Reason.TARGETING_MATCH,
        )
        rules.append(Rule(rule_id, conditions, serve))

    default_raw = raw.get("default")
    if default_raw is None:
        default = Serve(results.get(None, Reason.DEFAULT), None)
    else:
        default = _serve(
            default_raw,
            results,
            salt,
            off_variation,
            path=".default",
            rule_id=None,
            reason=Reason.DEFAULT,
        )
    static = None
    if not enabled:
        static = off_result
    elif not prerequisites and not targets and not rules and default.rollout is None:
        static = default.result
    try:
        needs_scope, work = plan_flag(tuple(r.conditions for r in rules), bool(prerequisites))
    except ValueError as exc:
        raise _Invalid(".rules", str(exc)) from None
    flag = Flag(
        key=key,
        type=kind,
        enabled=enabled,
        version=raw.get("version"),
        track_events=bool(raw.get("track_events", False)),
        variations=MappingProxyType(variations),
        off_result=off_result,
        prerequisite_failed_result=(
            results.get(off_variation, Reason.PREREQUISITE_FAILED) if prerequisites else _UNUSED
        ),
        prerequisites=prerequisites,
        targets=MappingProxyType(targets) if targets else _NO_TARGETS,
        rules=tuple(rules),
        default=default,
        static=static,
        source_text=text,
        metadata=raw["metadata"] if isinstance(raw.get("metadata"), dict) else None,
        client_side=raw.get("client_side") is True,
        segment_keys=frozenset(used_segments) if used_segments else _NO_KEYS,
        needs_scope=needs_scope,
        work=work,
    )
    run = generate(flag) if static is None else None
    return flag if run is None else dataclasses.replace(flag, run=run)


def _serve(
    raw: Mapping[str, Any],
    results: _Results,
    salt: str,
    off_variation: str | None,
    *,
    path: str,
    rule_id: str | None,
    reason: str,
) -> Serve:
    if "variation" in raw:
        name = results.variation(raw["variation"], f"{path}.variation")
        return Serve(results.get(name, reason, rule_id), None)
    rollout = raw["rollout"]
    thresholds, served, total = [], [], 0
    for w, slot in enumerate(rollout["variations"]):
        name = results.variation(slot["variation"], f"{path}.rollout.variations[{w}].variation")
        if not math.isfinite(slot["weight"]):
            raise _Invalid(f"{path}.rollout.variations[{w}].weight", "weight must be a number")
        scaled = slot["weight"] * 1000
        if abs(scaled - round(scaled)) > 1e-6:
            raise _Invalid(
                f"{path}.rollout.variations[{w}].weight", "weights allow at most three decimals"
            )
        total += round(scaled)
        thresholds.append(total)
        served.append(results.get(name, Reason.PERCENTAGE_ROLLOUT, rule_id))
    if total != 100_000:
        raise _Invalid(f"{path}.rollout", f"weights sum to {total / 1000:g}, not 100")
    return Serve(
        None,
        Rollout(
            bucket_by=rollout.get("bucket_by", "user_id"),
            salt=rollout.get("seed") or salt,
            prefix=(rollout.get("seed") or salt) + ":",
            thresholds=tuple(thresholds),
            results=tuple(served),
            no_key_result=results.get(off_variation, Reason.DEFAULT, rule_id),
        ),
    )


def _check_prerequisites(flags: dict[str, Flag]) -> None:
    """Isolate flags on a prerequisite cycle, or whose chain is deeper than the limit.

    A flag that merely depends on an isolated flag stays valid: its prerequisite
    fails at evaluation time (reason ``prerequisite_failed``). Iterative, and the
    result does not depend on the order the flags are listed in.
    """
    valid = {key for key, flag in flags.items() if not flag.error}
    graph = {
        key: tuple(parent for parent, _ in flags[key].prerequisites if parent in valid)
        for key in valid
    }
    depth: dict[str, int] = {}
    broken: dict[str, str] = {}
    for component in _components(graph):
        first = component[0]
        if len(component) > 1 or first in graph[first]:
            members = ", ".join(sorted(component))
            for member in component:
                broken[member] = f"prerequisite cycle among {members}"
                depth[member] = 0
            continue
        deepest = 0
        if flags[first].prerequisites:  # a missing or isolated parent adds no depth
            deepest = 1 + max((depth[parent] for parent in graph[first]), default=0)
        if deepest > MAX_PREREQUISITE_DEPTH:
            broken[first] = f"prerequisite chain deeper than {MAX_PREREQUISITE_DEPTH}"
            deepest = 0  # evaluation stops at an isolated flag: no depth for dependents
        depth[first] = deepest
    for key, message in broken.items():
        flags[key] = _invalid_flag(
            flags[key].source, ".prerequisites", message, flags[key].source_text
        )


def _components(graph: Mapping[str, tuple[str, ...]]) -> list[list[str]]:
    """Strongly connected components (iterative Tarjan), prerequisites before dependents."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(graph[root]))]
        while work:
            node, parents = work[-1]
            for parent in parents:
                if parent not in index:
                    index[parent] = low[parent] = len(index)
                    stack.append(parent)
                    on_stack.add(parent)
                    work.append((parent, iter(graph[parent])))
                    break
                if parent in on_stack:
                    low[node] = min(low[node], index[parent])
            else:
                work.pop()
                if work:
                    caller = work[-1][0]
                    low[caller] = min(low[caller], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    found.append(component)
    return found
