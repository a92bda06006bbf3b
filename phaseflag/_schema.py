"""Ruleset validation against the JSON Schema shipped with the package.

The schema file (``schema/ruleset.schema.json``) is the single source of truth.
Flags and segments are validated one at a time against its ``$defs`` so a caller
can skip items that did not change (or validate a flag only when it is first
compiled), and every error names its JSON path
(``flags[3].rules[0].conditions[1].operator``). Parsing JSON text is ``_parse``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from ._errors import RulesetError
from ._fastschema import Check, Unsupported, compile_check
from ._parse import MAX_DOCUMENT_BYTES, MAX_JSON_DEPTH

if TYPE_CHECKING:  # jsonschema is imported only to describe an invalid document
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

__all__ = [
    "MAX_DOCUMENT_BYTES",  # re-exported from _parse for existing importers
    "MAX_JSON_DEPTH",
    "format_path",
    "checker",
    "load_schema",
    "reject",
    "validate_item",
    "validate_shell",
]


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


def validate_item(kind: str, item: object, index: int | None = None) -> list[tuple[str, str]]:
    """Errors in ``flags[index]`` (kind ``flag``) or ``segments[index]`` (kind ``segment``).

    Without ``index`` the paths are relative to the item (``.rules[0].serve``).
    """
    quick = _quick(kind)
    if quick is not None and quick(item):
        return []
    if index is None:
        return [(_relative(p), m) for p, m in _errors(_validator(kind), item, ())]
    return _errors(_validator(kind), item, (f"{kind}s", index))


def _relative(path: str) -> str:
    if path == "(document)":
        return ""
    return path if path.startswith("[") else "." + path


def checker(kind: str) -> Check:
    """A yes/no check of ``$defs[kind]`` (the fast one; jsonschema if unsupported)."""
    quick = _quick(kind)
    if quick is not None:
        return quick
    validator = _validator(kind)
    return lambda item: not _errors(validator, item, ())


def reject(errors: list[tuple[str, str]]) -> RulesetError:
    """The error that rejects a whole ruleset for schema ``errors``."""
    return RulesetError("ruleset failed schema validation", errors)
