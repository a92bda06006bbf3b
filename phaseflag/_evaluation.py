"""The evaluator: a pure function of (compiled flag, context values, ruleset).

No clock, no I/O, no globals, no locks. ``explain`` runs the interpreter with a trace
list and the same matcher (``_matcher.first_match``); a plain read runs the flag's
generated code (``_codegen``) when it has one, the interpreter otherwise.
Order (DESIGN.md §4): invalid -> disabled -> prerequisites -> targets -> rules -> default.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._bucketing import bucket, bucket_key_text
from ._matcher import ReadScope, Trace, first_match, scope_of
from ._model import Flag, Ruleset, Serve, Values
from .types import ErrorCode, EvaluationContext, EvaluationResult, Reason

__all__ = ["Explanation", "evaluate", "evaluate_flag", "explain", "not_found", "short"]

_NO_VALUES: Mapping[str, Any] = {}


def short(text: object, limit: int = 80) -> str:
    """``text`` for a message: long keys (no flag key is over 256 characters) cut short."""
    shown = text if isinstance(text, str) else repr(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def not_found(flag_key: str) -> EvaluationResult:
    """The result for a flag the ruleset does not hold."""
    return EvaluationResult(
        flag_key,
        None,
        Reason.ERROR,
        error_code=ErrorCode.FLAG_NOT_FOUND,
        error_message=f"flag {short(flag_key)!r} is not in the ruleset",
    )


def evaluate(
    ruleset: Ruleset, flag_key: str, context: EvaluationContext | None = None
) -> EvaluationResult:
    """Evaluate one flag for one context; never raises for a compiled ruleset."""
    flag = ruleset.table.get(flag_key) or ruleset.flags.get(flag_key)
    if flag is None:
        return not_found(flag_key)
    values = context._values if context is not None else _NO_VALUES
    return evaluate_flag(flag, values, ruleset, None)


def evaluate_flag(
    flag: Flag, values: Values, ruleset: Ruleset, trace: Trace | None = None
) -> EvaluationResult:
    """Evaluate a compiled flag against context ``values`` (``EvaluationContext._values``).

    Without a trace, a flag with a generated read (``_codegen``) runs it; otherwise the
    interpreter below walks the flag, ``explain`` included (one matching path).
    """
    static = flag.static
    if static is not None:
        if trace is not None:
            _trace_static(flag, trace)
        return static
    if trace is None:
        run = flag.run
        if run is not None:
            kind = type(values)  # contexts with list attributes take the interpreter
            if kind is dict or (kind is ReadScope and not values.lists):  # type: ignore[attr-defined]
                return run(values)
    if flag.needs_scope:
        values = scope_of(values)
    for parent_key, wanted in flag.prerequisites:
        got = _prerequisite(parent_key, values, ruleset)
        passed = got is not None and got.variation_key == wanted and got.error_code is None
        if trace is not None:
            trace.append(
                {
                    "step": "prerequisite",
                    "flag": parent_key,
                    "wanted": wanted,
                    "got": None if got is None else got.variation_key,
                    "passed": passed,
                }
            )
        if not passed:
            return flag.prerequisite_failed_result
    if flag.targets:
        user_id = values.get("user_id")
        hit = flag.targets.get(user_id) if type(user_id) is str else None
        if trace is not None:
            trace.append({"step": "targets", "user_id": user_id, "matched": hit is not None})
        if hit is not None:
            return hit
    rules = flag.rules
    first = len(trace) if trace is not None else 0
    index = first_match([rule.conditions for rule in rules], values, trace)
    if trace is not None:
        for step in trace[first:]:
            step["id"] = rules[step["index"]].id
        if index < 0:
            trace.append({"step": "default"})
    return _serve(rules[index].serve if index >= 0 else flag.default, values, trace)


def _prerequisite(key: str, values: Values, ruleset: Ruleset) -> EvaluationResult | None:
    """A prerequisite's result, evaluated at most once per read (memoised in the scope)."""
    memo = values.flags if type(values) is ReadScope else None
    if memo is not None and key in memo:
        got: EvaluationResult | None = memo[key]
        return got
    parent = ruleset.table.get(key) or ruleset.flags.get(key)
    got = None if parent is None else evaluate_flag(parent, values, ruleset, None)
    if memo is not None:
        memo[key] = got
    return got


def _serve(serve: Serve, values: Values, trace: Trace | None) -> EvaluationResult:
    result = serve.result
    if result is not None:
        return result
    rollout = serve.rollout
    assert rollout is not None
    key = values.get(rollout.bucket_by)
    if key is None and rollout.bucket_by == "user_id":
        key = values.get("session_id")
    if key is not None and type(key) is not str:
        key = bucket_key_text(key)
    if key is None:
        if trace is not None:
            trace.append(
                {
                    "step": "rollout",
                    "bucket_by": rollout.bucket_by,
                    "key": None,
                    "note": "no bucketing key: serving the off variation",
                }
            )
        return rollout.no_key_result
    slot = bucket(rollout.salt, key)
    if trace is not None:
        trace.append(
            {
                "step": "rollout",
                "bucket_by": rollout.bucket_by,
                "key": key,
                "salt": rollout.salt,
                "bucket": slot,
                "thresholds": list(rollout.thresholds),
            }
        )
    return rollout.results[bisect_right(rollout.thresholds, slot)]


def _trace_static(flag: Flag, trace: Trace) -> None:
    if flag.error:
        trace.append({"step": "invalid", "error": flag.error, "path": flag.error_path})
    elif not flag.enabled:
        trace.append({"step": "disabled"})
    else:
        trace.append({"step": "default", "note": "no prerequisites, targets or rules"})


@dataclass(frozen=True, slots=True)
class Explanation:
    """An evaluation result with the trace of how it was reached."""

    result: EvaluationResult
    steps: tuple[dict[str, Any], ...]

    def lines(self) -> list[str]:
        """The trace as human-readable lines (what ``phaseflag eval --explain`` prints)."""
        return [_describe(step) for step in self.steps]


def explain(
    ruleset: Ruleset, flag_key: str, context: EvaluationContext | None = None
) -> Explanation:
    """Evaluate like ``evaluate`` and record every decision taken on the way."""
    trace: Trace = []
    flag = ruleset.table.get(flag_key) or ruleset.flags.get(flag_key)
    if flag is None:
        trace.append({"step": "missing", "flag": flag_key})
        return Explanation(not_found(flag_key), tuple(trace))
    values = context._values if context is not None else _NO_VALUES
    return Explanation(evaluate_flag(flag, values, ruleset, trace), tuple(trace))


def _describe(step: Mapping[str, Any]) -> str:
    kind = step["step"]
    if kind == "missing":
        return f"flag {step['flag']!r} is not in the ruleset"
    if kind == "invalid":
        return f"flag is invalid at {step['path'] or '(flag)'}: {step['error']}"
    if kind == "disabled":
        return "flag is disabled: serving the off variation"
    if kind == "prerequisite":
        verdict = "passed" if step["passed"] else "FAILED"
        return (
            f"prerequisite {step['flag']!r} wants {step['wanted']!r}, "
            f"got {step['got']!r}: {verdict}"
        )
    if kind == "targets":
        verdict = "matched" if step["matched"] else "no match"
        return f"target lists for user_id={step['user_id']!r}: {verdict}"
    if kind == "rule":
        name = f"rule {step['index']}" + (f" ({step['id']})" if step["id"] else "")
        if step["matched"]:
            return f"{name}: all conditions hold"
        cond = step["failed_condition"]
        return (
            f"{name}: condition {cond.get('attribute')!r} {cond.get('operator')} "
            f"{cond.get('values', [])!r} failed (context value {step['context_value']!r})"
        )
    if kind == "rollout":
        if step["key"] is None:
            return f"rollout by {step['bucket_by']!r}: {step['note']}"
        return (
            f"rollout by {step['bucket_by']!r}: key {step['key']!r}, salt {step['salt']!r}, "
            f"bucket {step['bucket']} of 100000, thresholds {step['thresholds']}"
        )
    if kind == "default":
        return "no rule matched: serving the default" + (
            f" ({step['note']})" if "note" in step else ""
        )
    return str(dict(step))
