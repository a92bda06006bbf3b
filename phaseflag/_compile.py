"""Validated JSON -> compiled Ruleset, each flag compiled when it is first read.

Loading checks the document's shape up front and rejects it whole (RulesetError
listing every error with its JSON path) when the top level, a segment, or a flag's
key is wrong, or two flags share a key. Each flag is then kept as its JSON text and
compiled by ``compile_flag`` on first read; a flag that fails the schema or is
unusable (unknown operator, bad regex, unknown variation or segment, value of the
wrong type, weights not summing to 100) compiles to an isolated flag that evaluates
to the caller's default with error INVALID_FLAG, and the rest of the ruleset serves.
Flags linked by prerequisites are compiled at load, where cycles and chains deeper
than MAX_PREREQUISITE_DEPTH are isolated. Given the previous Ruleset, the same bytes
again cost nothing, and flags whose text did not change are reused untouched.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final, TypeVar

from ._codegen import generate
from ._graph import layers
from ._model import Condition, Flag, FlagTable, Rollout, Rule, Ruleset, Segment, Serve
from ._operators import InvalidCondition, compile_condition
from ._parse import (
    KNOWN,
    MAX_DOCUMENT_BYTES,
    Summary,
    json_depth_exceeds,
    parse_document,
    split_document,
)
from ._readcost import plan_flag, plan_segment, read_work_problems
from ._schema import checker, reject, validate_item, validate_shell
from .types import ErrorCode, EvaluationResult, Reason

__all__ = [
    "MAX_PREREQUISITE_DEPTH",
    "compile_flag",
    "compile_ruleset",
    "expand_shorthand",
    "load_ruleset",
]

#: Longest prerequisite chain accepted; deeper flags are isolated as INVALID_FLAG.
MAX_PREREQUISITE_DEPTH: Final = 16
#: Deepest chain of segments referring to segments.
MAX_SEGMENT_DEPTH: Final = 16


def _finite_double(value: object) -> bool:
    """A ``number`` value is a finite IEEE double: floats as they are, ints that convert
    (a 401-digit integer overflows float() and would make every float read fail)."""
    if type(value) is float:
        return math.isfinite(value)
    if type(value) is not int:
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


_TYPE_CHECKS: Final[Mapping[str, Any]] = {
    "boolean": lambda v: type(v) is bool,
    "string": lambda v: type(v) is str,
    "number": _finite_double,
    "json": lambda v: isinstance(v, (dict, list)),
}


#: Compact JSON of one flag: what "unchanged" means when reusing compiled flags.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_NO_KEYS: Final[frozenset[str]] = frozenset()
_NO_TARGETS: Final[Mapping[str, EvaluationResult]] = MappingProxyType({})
_UNUSED: Final = EvaluationResult("", None, Reason.ERROR, error_code=ErrorCode.GENERAL)
_T = TypeVar("_T")


class _Invalid(Exception):
    """A flag or segment cannot be compiled; carries the JSON sub-path and message."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


# -- public entry points -------------------------------------------------------------------


def load_ruleset(raw: bytes | str, *, previous: Ruleset | None = None) -> Ruleset:
    """Parse JSON text (size/depth limited), check its shape, and index its flags.

    Given ``previous``: the same bytes return ``previous`` itself, and a flag whose
    text is unchanged is recognised by comparison (not decoded) and reused.
    """
    if len(raw) > MAX_DOCUMENT_BYTES:
        parse_document(raw)  # raises the size error
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    digest = hashlib.sha1(data, usedforsecurity=False).digest()  # identity, not integrity
    if previous is not None and previous.digest == digest:
        return previous
    return _gc_paused(lambda: _load(raw, previous, digest))


def _load(raw: bytes | str, previous: Ruleset | None, digest: bytes) -> Ruleset:
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        split = split_document(text, _known_texts(previous))
    except (ValueError, RecursionError):  # parse_document() below reports it
        split = None
    if split is None:
        ruleset = compile_ruleset(parse_document(raw), previous=previous)
        return _with_digest(ruleset, digest)
    top, items = split
    return _assemble(top, items, previous, False, digest)


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
    """Check and index a parsed document; raises RulesetError if its shape is wrong."""
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
    return _gc_paused(lambda: _assemble(top, items, previous, shorthand, b""))


def compile_flag(text: str, segments: Mapping[str, Segment]) -> Flag:
    """Compile one flag from its JSON text: the one per-flag compile step.

    Never raises: a flag that fails the schema, or cannot be used, comes back
    isolated (``error`` set; it evaluates to INVALID_FLAG). Deterministic, so
    concurrent compiles of the same text give equal flags.
    """
    raw: Any = None
    try:
        raw = json.loads(text)
        errors = validate_item("flag", raw)
        if errors:
            path, message = errors[0]
            if len(errors) > 1:
                message += f" (and {len(errors) - 1} more problem(s))"
            return _invalid_flag(raw, path, message, text)
        return _build_flag(raw, text, segments)
    except _Invalid as exc:
        return _invalid_flag(raw, exc.path, exc.message, text)
    except Exception as exc:  # reads never raise: anything unforeseen isolates the flag
        return _invalid_flag(raw, "", f"could not compile the flag ({type(exc).__name__})", text)


def _known_texts(previous: Ruleset | None) -> list[tuple[str, str]]:
    if previous is None or previous.shorthand:
        return []
    texts = previous.flags.texts()
    return [(text, key) for key, text in texts.items()]


def _with_digest(ruleset: Ruleset, digest: bytes) -> Ruleset:
    from dataclasses import replace

    return replace(ruleset, digest=digest)


def _gc_paused(work: Callable[[], _T]) -> _T:
    """Run ``work`` with the cyclic garbage collector paused.

    Building many objects otherwise triggers full collections that hold the GIL
    for up to a tenth of a second, stalling reads in other threads.
    """
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        return work()
    finally:
        if paused:
            gc.enable()


def _assemble(
    top: dict[str, Any],
    items: list[tuple[str, Any]],
    previous: Ruleset | None,
    shorthand: bool,
    digest: bytes,
) -> Ruleset:
    """Check the shape and index the flags; ``items`` are (flag JSON text, decoded flag
    or KNOWN for a text known from ``previous``)."""
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
        segment_problems = list(previous.segment_problems)
    elif not errors:
        segments, segment_problems = _compile_segments(raw_segments)

    old_texts = previous.flags.texts() if previous is not None else {}
    old_keys = {text: key for key, text in old_texts.items()} if old_texts else {}
    old_compiled = previous.table.copy() if previous is not None else {}  # atomic copy
    old_graph = previous.prerequisite_graph if previous is not None else {}
    old_versions = previous.flag_versions if previous is not None else {}
    texts: dict[str, str] = {}
    compiled: dict[str, Flag] = {}
    versions: dict[str, int] = {}
    graph: dict[str, tuple[str, ...]] = {}
    key_ok = checker("key")
    for index, (text, given) in enumerate(items):
        value = given
        if value is KNOWN or text in old_keys:  # the text of one of the previous flags
            key = old_keys[text]
            old = old_compiled.get(key)
            # An isolated flag is never reused: its cause (a missing segment) may be gone.
            if old is not None and old.error is None and (same_segments or not old.segment_keys):
                compiled[key] = old
            parents = old_graph.get(key)
            version = old_versions.get(key)
        else:
            if type(value) is dict:  # from compile_ruleset: a parsed flag
                value = Summary(
                    (value.get("key"), value.get("version"), value.get("prerequisites"))
                )
            found = value[0] if type(value) is Summary else None
            if type(found) is not str or not key_ok(found):
                if type(value) is Summary:  # a bad key: validate what the text holds
                    value = json.loads(text)
                errors.extend(
                    e for e in validate_item("flag", value, index) if _is_shape_error(e[0], index)
                )
                continue
            key = found
            named = value[2]
            parents = _parents(named) if named else None
            version = value[1]
            if version is not None and (type(version) is not int or version < 0):
                version = None
        if key in texts:
            errors.append((f"flags[{index}].key", f"duplicate flag key {key!r}"))
            continue
        texts[key] = text
        if version is not None:
            versions[key] = version
        if parents:
            graph[key] = parents
    if errors:
        raise reject(errors)

    frozen_segments = MappingProxyType(dict(segments))

    def compile_one(text: str) -> Flag:
        return compile_flag(text, frozen_segments)

    table = FlagTable(texts, compiled, compile_one)
    _check_prerequisites(table, compiled, graph)
    return Ruleset(
        version=int(top.get("version", 0)),
        flags=table,
        segments=frozen_segments,
        top_source=top,
        shorthand=shorthand,
        table=compiled,
        segment_problems=tuple(segment_problems),
        digest=digest,
        flag_versions=versions,
        prerequisite_graph=graph,
    )


def _is_shape_error(path: str, index: int) -> bool:
    """Errors that reject the document: the flag itself or its key (it cannot be indexed)."""
    return path in (f"flags[{index}]", f"flags[{index}].key")


def _parents(raw: object) -> tuple[str, ...]:
    """The flag keys named by a (not yet validated) ``prerequisites`` value."""
    if type(raw) is not list or not raw:
        return ()
    return tuple(p["flag"] for p in raw if type(p) is dict and type(p.get("flag")) is str) or (
        "",
    )  # malformed entries still make the flag one to compile at load


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
    refs = {key: _segment_refs(raw.get("rules", [])) for key, (_, raw) in by_key.items()}
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
                raise _Invalid(f"segments[{index}]", f"segment {key!r}: {why}")
            compiled[key] = _compile_segment(raw, index, compiled)
        except _Invalid as exc:
            problems.append((exc.path, exc.message))
    problems.sort()
    return compiled, problems


def _segment_refs(rules: Iterable[dict[str, Any]]) -> list[str]:
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


def _invalid_flag(raw: object, path: str, message: str, text: str = "") -> Flag:
    if not isinstance(raw, Mapping):
        raw = {}
    key = str(raw.get("key", ""))
    result = EvaluationResult(
        key, None, Reason.ERROR, error_code=ErrorCode.INVALID_FLAG, error_message=message
    )
    return Flag(
        key=key,
        type=str(raw.get("type", "json")),
        enabled=False,
        version=raw.get("version") if type(raw.get("version")) is int else None,
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


def _build_flag(raw: dict[str, Any], text: str, segments: Mapping[str, Segment]) -> Flag:
    key, kind = raw["key"], raw["type"]
    variations: dict[str, Any] = {}
    fits = _TYPE_CHECKS[kind]
    for v, variation in enumerate(raw["variations"]):
        if variation["key"] in variations:
            raise _Invalid(f".variations[{v}].key", f"duplicate variation {variation['key']!r}")
        if not fits(variation["value"]):
            why = " (a number must be a finite IEEE double)" if kind == "number" else ""
            raise _Invalid(f".variations[{v}].value", f"value does not fit type {kind!r}{why}")
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
    # perf-eval's generated read: part of the one per-flag compile step.
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


def _check_prerequisites(
    table: FlagTable, compiled: dict[str, Flag], graph: Mapping[str, tuple[str, ...]]
) -> None:
    """Isolate flags on a prerequisite cycle, or whose chain is deeper than the limit.

    Every flag with prerequisites, and every flag named as one, is compiled here (at
    load). A flag that merely depends on an isolated flag stays valid: its
    prerequisite fails at evaluation time (reason ``prerequisite_failed``). The
    result does not depend on the order the flags are listed in.
    """
    if not graph:
        return
    linked = set(graph)
    for parents in graph.values():
        linked.update(parent for parent in parents if parent in table)
    flags = {key: table[key] for key in linked}
    valid = {key: flag for key, flag in flags.items() if not flag.error}
    edges = {
        key: tuple(parent for parent, _ in flag.prerequisites if parent in valid)
        for key, flag in valid.items()
    }
    found = layers(
        edges, MAX_PREREQUISITE_DEPTH, counted=lambda key: bool(valid[key].prerequisites)
    )
    for key, (kind, members) in found.broken.items():
        message = (
            f"prerequisite cycle among {', '.join(members)}"
            if kind == "cycle"
            else f"prerequisite chain deeper than {MAX_PREREQUISITE_DEPTH}"
        )
        text = table.text(key) or "{}"
        compiled[key] = _invalid_flag(json.loads(text), ".prerequisites", message, text)
    linked_now = {key: compiled[key] for key in linked if key in compiled}
    for key, message in read_work_problems(linked_now).items():
        text = table.text(key) or "{}"
        compiled[key] = _invalid_flag(json.loads(text), ".prerequisites", message, text)
