"""Generated reads: one small Python function per flag, the fast path of ``evaluate``.

The generated source holds only identifiers made here (``p0``, ``v1``, ``c2``...) and
fixed template text: every constant of the ruleset (results, operand sets, bounds,
attribute names, salts) is bound as a default argument of the function, never written
into the source. So no ruleset text ever reaches ``compile()``, and flags of the same
shape share one code object (compiled once per shape, cached). What the template
inlines: targets, ``in`` over strings, numeric and semver comparisons (each version
parsed at most once per read), ``exists``, conditions shared between rules (evaluated
once), fixed serves and rollouts (bucketing inlined). Every other operator calls its
compiled test. A flag with prerequisites, or too large to generate, is left to the
interpreter (``run`` is None). tests/test_codegen.py fuzzes both paths against each other.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Callable
from types import CodeType, FunctionType
from typing import Any, Final

import mmh3

from ._bucketing import bucket, bucket_key_text
from ._matcher import scope_of
from ._model import Condition, Flag, Serve, Values
from ._operands import UNSEEN, semver_value
from .types import EvaluationResult

__all__ = ["MAX_GENERATED_RULES", "generate", "shapes"]

#: Flags with more rules than this are evaluated by the interpreter (source size).
MAX_GENERATED_RULES: Final = 256
#: Distinct attributes read into locals at the top of a generated read.
_MAX_HOISTED: Final = 8
_MAX_SHAPES: Final = 4096

_NUMBER_OPS: Final = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_SEMVER_OPS: Final = {"semver_gt": ">", "semver_gte": ">=", "semver_lt": "<", "semver_lte": "<="}
# The only globals a generated read sees: builtins it names, nothing from the ruleset.
_GLOBALS: Final[dict[str, Any]] = {
    "__builtins__": {"type": type, "int": int, "float": float, "str": str}
}

Read = Callable[[Values], EvaluationResult]

# Generated source -> the code object of its ``run`` (one per flag shape).
_SHAPES: dict[str, CodeType] = {}


def shapes() -> dict[str, CodeType]:
    """The generated sources compiled so far (what tests inspect)."""
    return dict(_SHAPES)


def generate(flag: Flag) -> Read | None:
    """The generated read of ``flag``, or None when the interpreter must evaluate it."""
    if flag.static is not None or flag.prerequisites or len(flag.rules) > MAX_GENERATED_RULES:
        return None
    source, params = _Writer(flag).write()
    code = _SHAPES.get(source)
    if code is None:
        namespace: dict[str, Any] = {}
        exec(compile(source, "<phaseflag read>", "exec"), _GLOBALS, namespace)  # noqa: S102
        code = namespace["run"].__code__
        if len(_SHAPES) < _MAX_SHAPES:
            _SHAPES[source] = code
    read: Read = FunctionType(code, _GLOBALS, "run", tuple(params))
    return read


def _identity(condition: Condition) -> str:
    source = condition.source
    return json.dumps(
        [
            condition.attribute,
            condition.operator,
            source.get("values", []),
            bool(source.get("negate")),
            bool(source.get("case_insensitive")),
        ],
        sort_keys=True,
        default=str,
    )


class _Writer:
    """Builds one flag's source; ``bind`` turns a constant into a parameter name."""

    def __init__(self, flag: Flag) -> None:
        self.flag = flag
        self.params: list[Any] = []
        self.lines: list[str] = []
        self.bound: dict[int, str] = {}  # id(value) -> its parameter (params keep it alive)

    def bind(self, value: Any) -> str:
        name = self.bound.get(id(value))
        if name is None:
            name = self.bound[id(value)] = f"p{len(self.params)}"
            self.params.append(value)
        return name

    def emit(self, depth: int, text: str) -> None:
        self.lines.append("    " * depth + text)

    def write(self) -> tuple[str, list[Any]]:
        flag = self.flag
        if flag.needs_scope:
            self.emit(1, f"values = {self.bind(scope_of)}(values)")
        if flag.targets:
            self.emit(1, f"v = values.get({self.bind('user_id')})")
            self.emit(1, "if type(v) is str:")
            self.emit(2, f"h = {self.bind(flag.targets)}.get(v)")
            self.emit(2, "if h is not None:")
            self.emit(3, "return h")
        self._rules()
        self._serve(1, flag.default)
        names = ", ".join(f"p{i}" for i in range(len(self.params)))
        head = f"def run(values, {names}):" if names else "def run(values):"
        return "\n".join([head, *self.lines]) + "\n", self.params

    def _rules(self) -> None:
        rules = self.flag.rules
        ids: dict[str, int] = {}
        distinct: list[Condition] = []
        layout: list[list[int]] = []
        for rule in rules:
            row = []
            for condition in rule.conditions:
                key = _identity(condition)
                if key not in ids:
                    ids[key] = len(distinct)
                    distinct.append(condition)
                row.append(ids[key])
            layout.append(row)
        uses = [0] * len(distinct)
        for row in layout:
            for index in set(row):
                uses[index] += 1
        self.attrs: dict[str, str] = {}
        self.semver: dict[str, str] = {}
        self.unseen = ""
        attributes = {c.attribute for c in distinct if _inlined(c) and c.attribute is not None}
        if len(attributes) <= _MAX_HOISTED:
            for n, attribute in enumerate(sorted(attributes)):
                self.attrs[attribute] = f"v{n}"
                self.emit(1, f"v{n} = values.get({self.bind(attribute)})")
        terms = [self._term(c) for c in distinct]
        shared = [i for i, n in enumerate(uses) if n > 1]
        if shared or self.semver:
            self.unseen = self.unseen or self.bind(UNSEEN)
            names = [f"c{i}" for i in shared] + sorted(self.semver.values())
            self.emit(1, " = ".join(names) + f" = {self.unseen}")
        seen: set[int] = set()
        for rule, row in zip(rules, layout, strict=True):
            parts = []
            for i in row:
                if uses[i] == 1:
                    parts.append(terms[i])
                elif i in seen:
                    parts.append(f"(c{i} if c{i} is not {self.unseen} else (c{i} := {terms[i]}))")
                else:  # no earlier rule holds it: it cannot have been computed yet
                    parts.append(f"(c{i} := {terms[i]})")
            seen.update(row)
            if not parts:  # a rule without conditions always matches: later ones never run
                self._serve(1, rule.serve)
                return
            self.emit(1, f"if {' and '.join(parts)}:")
            self._serve(2, rule.serve)

    def _value(self, attribute: str) -> str:
        local = self.attrs.get(attribute)
        return local if local is not None else f"values.get({self.bind(attribute)})"

    def _term(self, condition: Condition) -> str:
        """The expression for one condition (True when it holds)."""
        op, attribute, negate = condition.operator, condition.attribute, condition.negate
        if not _inlined(condition) or attribute is None:
            return f"{self.bind(condition.test)}(values)"
        if op in ("in", "equals"):
            return f"({self._value(attribute)} in {self.bind(condition.operand)})"
        if op == "exists":
            return f"({self.bind(attribute)} {'not in' if negate else 'in'} values)"
        bound = self.bind(condition.operand)
        value = self.attrs.get(attribute)
        if value is None:  # too many attributes to hoist: the compiled test reads it
            return f"{self.bind(condition.test)}(values)"
        if op in _NUMBER_OPS:
            test = f"{value} {_NUMBER_OPS[op]} {bound}"
            test = f"not ({test})" if negate else f"({test})"
            call = f"{self.bind(condition.test)}(values)"  # numeric strings, wrong types
            return f"({test} if (type({value}) is int or type({value}) is float) else {call})"
        key = self.semver.get(attribute)
        if key is None:
            key = self.semver[attribute] = f"k{len(self.semver)}"
            self.unseen = self.unseen or self.bind(UNSEEN)
        parse = f"({key} if {key} is not {self.unseen} else ({key} := "
        parse += f"{self.bind(semver_value)}({value})))"
        test = f"{key} {_SEMVER_OPS[op]} {bound}"
        return f"({parse} is not None and {'not ' if negate else ''}({test}))"

    def _serve(self, depth: int, serve: Serve) -> None:
        if serve.result is not None:
            self.emit(depth, f"return {self.bind(serve.result)}")
            return
        rollout = serve.rollout
        assert rollout is not None
        no_key = self.bind(rollout.no_key_result)
        self.emit(depth, f"key = values.get({self.bind(rollout.bucket_by)})")
        if rollout.bucket_by == "user_id":
            self.emit(depth, "if key is None:")
            self.emit(depth + 1, f"key = values.get({self.bind('session_id')})")
        self.emit(depth, "if key is None:")
        self.emit(depth + 1, f"return {no_key}")
        self.emit(depth, "if type(key) is not str:")
        self.emit(depth + 1, f"key = {self.bind(bucket_key_text)}(key)")
        self.emit(depth + 1, "if key is None:")
        self.emit(depth + 2, f"return {no_key}")
        # bucket(salt, key), inlined for ASCII text (test_codegen proves them equal).
        self.emit(depth, f"text = {self.bind(rollout.prefix)} + key")
        self.emit(depth, "if text.isascii():")
        self.emit(depth + 1, f"h = {self.bind(mmh3.hash)}(text, 0, False)")
        self.emit(depth + 1, "slot = (h % 100) * 1000 + (h // 100) % 1000")
        self.emit(depth, "else:")
        self.emit(depth + 1, f"slot = {self.bind(bucket)}({self.bind(rollout.salt)}, key)")
        results, thresholds = rollout.results, rollout.thresholds
        if len(results) > 4:
            chosen = f"{self.bind(bisect_right)}({self.bind(thresholds)}, slot)"
            self.emit(depth, f"return {self.bind(results)}[{chosen}]")
            return
        for threshold, result in zip(thresholds[:-1], results[:-1], strict=True):
            self.emit(depth, f"if slot < {self.bind(threshold)}:")
            self.emit(depth + 1, f"return {self.bind(result)}")
        self.emit(depth, f"return {self.bind(results[-1])}")


def _inlined(condition: Condition) -> bool:
    """Whether the template writes this condition out (else it calls the compiled test)."""
    op = condition.operator
    if op in ("in", "equals"):
        return condition.operand is not None  # the plain "value in set of str" case
    if op == "exists":
        return True
    return op in _NUMBER_OPS or op in _SEMVER_OPS
