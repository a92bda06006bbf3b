"""Ruleset parsing and JSON Schema validation, with limits that protect the host.

The schema file (``schema/ruleset.schema.json``) is the single source of truth.
Flags and segments are validated one at a time against its ``$defs`` so a caller
can skip items that did not change, and every error names its JSON path
(``flags[3].rules[0].conditions[1].operator``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

from ._errors import RulesetError, RulesetTooLargeError
from ._fastschema import Check, Unsupported, compile_check

if TYPE_CHECKING:  # jsonschema is imported only to describe an invalid document
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "MAX_JSON_DEPTH",
    "format_path",
    "load_schema",
    "parse_document",
    "validate_item",
    "validate_shell",
]

#: Largest ruleset document accepted, in bytes (also the download limit's default).
MAX_DOCUMENT_BYTES: Final = 10 * 1024 * 1024
#: Deepest nesting accepted inside a JSON flag value.
MAX_JSON_DEPTH: Final = 32


_REQUIRED = re.compile(r"^'([^']+)' is a required property")


@cache
def load_schema() -> dict[str, Any]:
    """The ruleset JSON Schema shipped with the package."""
    text = resources.files("phaseflag").joinpath("schema/ruleset.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _shell_schema() -> dict[str, Any]:
    """The document schema with flags and segments reduced to "objects" (checked one by one)."""
    shell = dict(load_schema())
    props = dict(shell["properties"])
    props["flags"] = {"type": ["array", "object"], "items": {"type": "object"}}
    props["segments"] = {"type": "array", "items": {"type": "object"}}
    shell["properties"] = props
    return shell


@cache
def _validator(definition: str) -> Draft202012Validator:
    from jsonschema import Draft202012Validator

    if definition == "shell":
        return Draft202012Validator(_shell_schema())
    schema = load_schema()
    return Draft202012Validator({"$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"})


@cache
def _quick(definition: str) -> Check | None:
    """The fast yes/no check for ``definition``, or None to use jsonschema alone."""
    try:
        if definition == "shell":
            return compile_check(_shell_schema())
        return compile_check(load_schema(), definition)
    except Unsupported:
        return None


def format_path(parts: Iterable[str | int]) -> str:
    """``['flags', 3, 'key']`` -> ``'flags[3].key'``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(document)"


def _errors(
    validator: Draft202012Validator, instance: object, prefix: Sequence[str | int]
) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for error in validator.iter_errors(instance):
        found.append(_describe(error, prefix))
    found.sort()
    return found


def _describe(error: ValidationError, prefix: Sequence[str | int]) -> tuple[str, str]:
    if error.validator == "oneOf" and error.schema_path and "serve" in str(error.schema_path):
        message = "must name exactly one of 'variation' or 'rollout'"
    elif error.validator == "required":
        missing = _REQUIRED.match(error.message)
        if missing:
            return format_path([*prefix, *error.absolute_path, missing.group(1)]), "is required"
        message = error.message
    else:
        message = error.message
        if len(message) > 200:
            message = message[:197] + "..."
    return format_path([*prefix, *error.absolute_path]), message


def validate_shell(document: object) -> list[tuple[str, str]]:
    """Errors in the document outside the flags' and segments' own contents."""
    if not isinstance(document, dict):
        return [("(document)", "a ruleset must be a JSON object")]
    quick = _quick("shell")
    if quick is not None and quick(document):
        return []
    return _errors(_validator("shell"), document, ())


def validate_item(kind: str, item: object, index: int) -> list[tuple[str, str]]:
    """Errors in ``flags[index]`` (kind ``flag``) or ``segments[index]`` (kind ``segment``)."""
    quick = _quick(kind)
    if quick is not None and quick(item):
        return []
    return _errors(_validator(kind), item, (f"{kind}s", index))


def parse_document(raw: bytes | str, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> Any:
    """Parse JSON text under the size limit; raises RulesetError / RulesetTooLargeError."""
    if len(raw) > max_bytes:
        raise RulesetTooLargeError(f"ruleset is {len(raw)} bytes, over the {max_bytes}-byte limit")
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except RecursionError:
        raise RulesetTooLargeError("ruleset JSON is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise RulesetError(f"ruleset is not valid JSON: {exc}") from None


def json_depth_exceeds(value: object, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when ``value`` nests lists/objects deeper than ``limit`` (iterative, bounded)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, Mapping):
            children: Iterable[object] = current.values()
        elif isinstance(current, list):
            children = current
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def reject(errors: list[tuple[str, str]]) -> RulesetError:
    """The error that rejects a whole ruleset for schema ``errors``."""
    return RulesetError("ruleset failed schema validation", errors)


_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _no_constants(name: str) -> Any:
    """``NaN``/``Infinity`` are not JSON, though Python's decoder reads them."""
    raise ValueError(f"{name} is not a valid JSON value")


_DECODER = json.JSONDecoder(parse_constant=_no_constants)


def _skip(text: str, i: int) -> int:
    """Index of the first non-whitespace character at or after ``i``."""
    found = _WHITESPACE.match(text, i)
    return found.end() if found is not None else i


def split_document(text: str) -> tuple[dict[str, Any], list[str]] | None:
    """Parse a ruleset's top level, keeping each element of ``flags`` as its JSON text.

    Each flag is decoded once to find where it ends, then dropped: only its text
    slice is kept, so a whole parsed document never exists at once (memory), and
    a flag whose text did not change need not be decoded again. Returns None when
    the document is not an object with a ``flags`` array (the caller parses it the
    ordinary way, which also produces the error messages); raises ValueError or
    RecursionError for malformed JSON.
    """
    decode = _DECODER.raw_decode
    i = _skip(text, 0)
    if text[i : i + 1] != "{":
        return None
    top: dict[str, Any] = {}
    flags: list[str] | None = None
    i = _skip(text, i + 1)
    if text[i : i + 1] == "}":
        return None
    while True:
        key, i = decode(text, i)
        if type(key) is not str:
            raise ValueError(f"expected a property name at character {i}")
        i = _skip(text, i)
        if text[i : i + 1] != ":":
            raise ValueError(f"expected ':' at character {i}")
        i = _skip(text, i + 1)
        if key == "flags" and text[i : i + 1] == "[":
            flags, i = _split_array(text, i)
            top.pop("flags", None)
        else:
            top[key], i = decode(text, i)
            if key == "flags":
                flags = None
        i = _skip(text, i)
        mark = text[i : i + 1]
        i = _skip(text, i + 1)
        if mark == "}":
            break
        if mark != ",":
            raise ValueError(f"expected ',' or '}}' at character {i}")
    if i != len(text):
        raise ValueError(f"extra data at character {i}")
    return (top, flags) if flags is not None else None


def _split_array(text: str, i: int) -> tuple[list[str], int]:
    decode = _DECODER.raw_decode
    items: list[str] = []
    i = _skip(text, i + 1)
    if text[i : i + 1] == "]":
        return items, i + 1
    while True:
        start = i
        _, i = decode(text, i)
        items.append(text[start:i])
        i = _skip(text, i)
        mark = text[i : i + 1]
        if mark == "]":
            return items, i + 1
        if mark != ",":
            raise ValueError(f"expected ',' or ']' at character {i}")
        i = _skip(text, i + 1)
