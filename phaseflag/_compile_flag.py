"""One flag's JSON text -> a compiled Flag: the one per-flag compile step.

A flag that fails the schema or cannot be used (unknown operator, bad regex, unknown
variation or segment, a value of the wrong type, weights not summing to 100) compiles
to an isolated flag: it evaluates to the caller's default with error INVALID_FLAG.
Conditions compile here for segments too (``compile_conditions``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final

from ._codegen import generate
from ._model import Condition, Flag, Rollout, Rule, Segment, Serve
from ._operators import InvalidCondition, compile_condition
from ._parse import json_depth_exceeds
from ._readcost import plan_flag
from ._schema import validate_item
from .types import ErrorCode, EvaluationResult, Reason

__all__ = [
    "Invalid",
    "compile_conditions",
    "compile_flag",
    "encode",
    "invalid_flag",
    "segment_refs",
]

#: Compact JSON of one flag: what "unchanged" means when reusing compiled flags.
encode: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_NO_KEYS: Final[frozenset[str]] = frozenset()
_NO_TARGETS: Final[Mapping[str, EvaluationResult]] = MappingProxyType({})
_UNUSED: Final = EvaluationResult("", None, Reason.ERROR, error_code=ErrorCode.GENERAL)


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


class Invalid(Exception):
    """A flag or segment cannot be compiled; carries the JSON sub-path and message."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def compile_flag(text: str, segments: Mapping[str, Segment]) -> Flag:
    """Compile one flag from its JSON text.

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
            return invalid_flag(raw, path, message, text)
        return _build_flag(raw, text, segments)
    except Invalid as exc:
        return invalid_flag(raw, exc.path, exc.message, text)
    except Exception as exc:  # reads never raise: anything unforeseen isolates the flag
        return invalid_flag(raw, "", f"could not compile the flag ({type(exc).__name__})", text)


def invalid_flag(raw: object, path: str, message: str, text: str = "") -> Flag:
    """The isolated flag for ``raw``: every read answers INVALID_FLAG with ``message``."""
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
        source_text=text or encode(raw),
    )


def compile_conditions(
    raw_conditions: list[dict[str, Any]], segments: Mapping[str, Segment], path: str
) -> tuple[Condition, ...]:
    """Compile a rule's conditions; raises Invalid naming the condition that cannot be."""
    out = []
    for c, raw in enumerate(raw_conditions):
        try:
            out.append(compile_condition(raw, segments))
        except InvalidCondition as exc:
            raise Invalid(f"{path}.conditions[{c}]", str(exc)) from None
    return tuple(out)


def segment_refs(rules: Iterable[dict[str, Any]]) -> list[str]:
    """The segment keys named by ``in_segment`` conditions of (not yet validated) rules."""
    return [
        ref
        for rule in rules
        for cond in rule.get("conditions", [])
        if cond.get("operator") == "in_segment"
        for ref in cond.get("values", [])
        if isinstance(ref, str)
    ]


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
            raise Invalid(path, f"unknown variation {name!r}")
        return str(name)


def _build_flag(raw: dict[str, Any], text: str, segments: Mapping[str, Segment]) -> Flag:
    key, kind = raw["key"], raw["type"]
    variations = _variations(raw["variations"], kind)
    results = _Results(key, variations)
    off = raw.get("off_variation")
    off_variation = None if off is None else results.variation(off, ".off_variation")
    enabled = raw.get("enabled", True)
    prerequisites = tuple((p["flag"], p["variation"]) for p in raw.get("prerequisites", ()))
    # Results for paths this flag cannot take are shared placeholders (memory per flag).
    off_result = results.get(off_variation, Reason.DISABLED) if not enabled else _UNUSED
    salt = raw.get("salt") or key
    targets = _targets(raw.get("targets", ()), results)
    rules, used_segments = _rules(raw.get("rules", ()), segments, results, salt, off_variation)
    default_raw = raw.get("default")
    default = (
        Serve(results.get(None, Reason.DEFAULT), None)
        if default_raw is None
        else _serve(
            default_raw,
            results,
            salt,
            off_variation,
            path=".default",
            rule_id=None,
            reason=Reason.DEFAULT,
        )
    )
    static = None
    if not enabled:
        static = off_result
    elif not prerequisites and not targets and not rules and default.rollout is None:
        static = default.result
    try:
        needs_scope, work = plan_flag(tuple(r.conditions for r in rules), bool(prerequisites))
    except ValueError as exc:
        raise Invalid(".rules", str(exc)) from None
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
        rules=rules,
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


def _variations(raw_variations: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """{variation key: value}; each value checked against the flag's type."""
    variations: dict[str, Any] = {}
    fits = _TYPE_CHECKS[kind]
    for v, variation in enumerate(raw_variations):
        if variation["key"] in variations:
            raise Invalid(f".variations[{v}].key", f"duplicate variation {variation['key']!r}")
        if not fits(variation["value"]):
            why = " (a number must be a finite IEEE double)" if kind == "number" else ""
            raise Invalid(f".variations[{v}].value", f"value does not fit type {kind!r}{why}")
        if kind == "json" and json_depth_exceeds(variation["value"]):
            raise Invalid(f".variations[{v}].value", "JSON value is nested too deeply")
        variations[variation["key"]] = variation["value"]
    return variations


def _targets(raw_targets: Iterable[dict[str, Any]], results: _Results) -> dict[str, Any]:
    """{user id: its result}; a user listed twice keeps the first target naming it."""
    targets: dict[str, EvaluationResult] = {}
    for t, target in enumerate(raw_targets):
        name = results.variation(target["variation"], f".targets[{t}].variation")
        for user_id in target["user_ids"]:
            targets.setdefault(user_id, results.get(name, Reason.TARGETING_MATCH))
    return targets


def _rules(
    raw_rules: Iterable[dict[str, Any]],
    segments: Mapping[str, Segment],
    results: _Results,
    salt: str,
    off_variation: str | None,
) -> tuple[tuple[Rule, ...], set[str]]:
    """The compiled rules, and the segment keys they name."""
    rules = []
    used_segments: set[str] = set()
    for r, rule in enumerate(raw_rules):
        conditions = compile_conditions(rule["conditions"], segments, f".rules[{r}]")
        used_segments.update(segment_refs([rule]))
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
    return tuple(rules), used_segments


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
    """A ``serve`` (a variation, or a rollout whose weights sum to exactly 100)."""
    if "variation" in raw:
        name = results.variation(raw["variation"], f"{path}.variation")
        return Serve(results.get(name, reason, rule_id), None)
    rollout = raw["rollout"]
    thresholds, served, total = [], [], 0
    for w, slot in enumerate(rollout["variations"]):
        name = results.variation(slot["variation"], f"{path}.rollout.variations[{w}].variation")
        if not math.isfinite(slot["weight"]):
            raise Invalid(f"{path}.rollout.variations[{w}].weight", "weight must be a number")
        scaled = slot["weight"] * 1000
        if abs(scaled - round(scaled)) > 1e-6:
            raise Invalid(
                f"{path}.rollout.variations[{w}].weight", "weights allow at most three decimals"
            )
        total += round(scaled)
        thresholds.append(total)
        served.append(results.get(name, Reason.PERCENTAGE_ROLLOUT, rule_id))
    if total != 100_000:
        raise Invalid(f"{path}.rollout", f"weights sum to {total / 1000:g}, not 100")
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
