"""A fast yes/no JSON Schema check compiled from the same schema file.

``jsonschema`` is the reference: it produces every error with its path. But it
costs ~300 µs per flag, so validating 10,000 flags would take seconds. This module
compiles the subset of draft 2020-12 that ``ruleset.schema.json`` uses into nested
closures answering only "valid or not" (~100x faster). Valid items never touch
``jsonschema``; an invalid one is re-checked by it for the messages. A schema using
a keyword outside the subset raises ``Unsupported`` and callers fall back to
``jsonschema`` alone, so the two can never silently disagree on the schema's meaning
(a property test also cross-checks them on generated documents).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

__all__ = ["Check", "Unsupported", "compile_check"]

Check = Callable[[Any], bool]

_ANNOTATIONS: Final = frozenset(
    {"$schema", "$id", "$comment", "$defs", "title", "description", "default", "examples"}
)


class Unsupported(Exception):
    """The schema uses a keyword this compiler does not implement."""


def _is_type(name: str) -> Check:
    if name == "object":
        return lambda v: type(v) is dict
    if name == "array":
        return lambda v: type(v) is list
    if name == "string":
        return lambda v: type(v) is str
    if name == "boolean":
        return lambda v: type(v) is bool
    if name == "null":
        return lambda v: v is None
    if name == "number":
        return lambda v: type(v) is int or type(v) is float
    if name == "integer":
        return lambda v: type(v) is int or (type(v) is float and v.is_integer())
    raise Unsupported(f"type {name!r}")


def _json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON Schema means it: booleans are never numbers."""
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    return bool(a == b)


class _Compiler:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self.refs: dict[str, list[Check]] = {}

    def ref(self, pointer: str) -> Check:
        if not pointer.startswith("#/"):
            raise Unsupported(f"$ref {pointer!r}")
        cell = self.refs.get(pointer)
        if cell is None:  # a cell allows recursive references
            cell = []
            self.refs[pointer] = cell
            node: Any = self.root
            for part in pointer[2:].split("/"):
                node = node[part.replace("~1", "/").replace("~0", "~")]
            cell.append(self.build(node))
        return lambda v: cell[0](v)  # noqa: PLW0108  (the cell is filled after this returns)

    def build(self, node: Any) -> Check:
        if node is True or node == {}:
            return lambda v: True
        if node is False:
            return lambda v: False
        if not isinstance(node, Mapping):
            raise Unsupported(f"schema {node!r}")
        checks: list[Check] = []
        for keyword, value in node.items():
            if keyword in _ANNOTATIONS:
                continue
            builder = getattr(self, "kw_" + keyword.lstrip("$"), None)
            if builder is None:
                raise Unsupported(f"keyword {keyword!r}")
            checks.append(builder(value, node))
        return _all(checks)

    def kw_ref(self, value: str, node: Mapping[str, Any]) -> Check:
        return self.ref(value)

    def kw_type(self, value: str | list[str], node: Mapping[str, Any]) -> Check:
        names = [value] if isinstance(value, str) else list(value)
        tests = [_is_type(name) for name in names]
        if len(tests) == 1:
            return tests[0]
        return lambda v: any(t(v) for t in tests)

    def kw_enum(self, value: list[Any], node: Mapping[str, Any]) -> Check:
        if all(type(x) is str for x in value):
            options = frozenset(value)
            return lambda v: type(v) is str and v in options
        return lambda v: any(_json_equal(v, x) for x in value)

    def kw_const(self, value: Any, node: Mapping[str, Any]) -> Check:
        return lambda v: _json_equal(v, value)

    def kw_required(self, value: list[str], node: Mapping[str, Any]) -> Check:
        names = tuple(value)
        return lambda v: type(v) is not dict or all(name in v for name in names)

    def kw_properties(self, value: Mapping[str, Any], node: Mapping[str, Any]) -> Check:
        subs = tuple((name, self.build(sub)) for name, sub in value.items())

        def properties(v: Any) -> bool:
            if type(v) is not dict:
                return True
            for name, check in subs:
                if name in v and not check(v[name]):
                    return False
            return True

        return properties

    def kw_propertyNames(self, value: Any, node: Mapping[str, Any]) -> Check:
        check = self.build(value)
        return lambda v: type(v) is not dict or all(check(k) for k in v)

    def kw_items(self, value: Any, node: Mapping[str, Any]) -> Check:
        check = self.build(value)
        return lambda v: type(v) is not list or all(check(x) for x in v)

    def kw_minItems(self, value: int, node: Mapping[str, Any]) -> Check:
        return lambda v: type(v) is not list or len(v) >= value

    def kw_maxItems(self, value: int, node: Mapping[str, Any]) -> Check:
        return lambda v: type(v) is not list or len(v) <= value

    def kw_minLength(self, value: int, node: Mapping[str, Any]) -> Check:
        return lambda v: type(v) is not str or len(v) >= value

    def kw_maxLength(self, value: int, node: Mapping[str, Any]) -> Check:
        return lambda v: type(v) is not str or len(v) <= value

    def kw_minimum(self, value: float, node: Mapping[str, Any]) -> Check:
        # "not v < value": NaN passes, exactly as in jsonschema (the compiler rejects it later).
        return lambda v: type(v) not in (int, float) or not v < value

    def kw_maximum(self, value: float, node: Mapping[str, Any]) -> Check:
        return lambda v: type(v) not in (int, float) or not v > value

    def kw_oneOf(self, value: list[Any], node: Mapping[str, Any]) -> Check:
        subs = [self.build(sub) for sub in value]
        return lambda v: sum(1 for check in subs if check(v)) == 1

    def kw_anyOf(self, value: list[Any], node: Mapping[str, Any]) -> Check:
        subs = [self.build(sub) for sub in value]
        return lambda v: any(check(v) for check in subs)

    def kw_not(self, value: Any, node: Mapping[str, Any]) -> Check:
        check = self.build(value)
        return lambda v: not check(v)


def _all(checks: list[Check]) -> Check:
    if not checks:
        return lambda v: True
    if len(checks) == 1:
        return checks[0]
    items = tuple(checks)

    def every(v: Any) -> bool:
        for check in items:
            if not check(v):
                return False
        return True

    return every


def compile_check(schema: Mapping[str, Any], definition: str | None = None) -> Check:
    """A yes/no validator for ``schema`` (or its ``$defs[definition]``); raises Unsupported."""
    compiler = _Compiler(schema)
    if definition is None:
        return compiler.build(schema)
    return compiler.ref(f"#/$defs/{definition}")
