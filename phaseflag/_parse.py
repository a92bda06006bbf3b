"""JSON text -> values, under the limits that protect the host (size, nesting, constants).

``split_document`` reads a ruleset's top level but keeps each flag as its JSON text,
so a whole parsed document never exists at once and a flag whose text did not change
is recognised without being decoded again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from ._errors import RulesetError, RulesetTooLargeError

__all__ = [
    "KNOWN",
    "MAX_DOCUMENT_BYTES",
    "MAX_JSON_DEPTH",
    "Split",
    "Summary",
    "json_depth_exceeds",
    "parse_document",
    "split_document",
]

#: Largest ruleset document accepted, in bytes (also the download limit's default).
MAX_DOCUMENT_BYTES: Final = 10 * 1024 * 1024
#: Deepest nesting accepted inside a JSON flag value.
MAX_JSON_DEPTH: Final = 32

_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _no_constants(name: str) -> Any:
    """``NaN``/``Infinity`` are not JSON, though Python's decoder reads them."""
    raise ValueError(f"{name} is not a valid JSON value")


_DECODER = json.JSONDecoder(parse_constant=_no_constants)


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


def _skip(text: str, i: int) -> int:
    """Index of the first non-whitespace character at or after ``i``."""
    found = _WHITESPACE.match(text, i)
    return found.end() if found is not None else i


class _Known:
    """The value of a split element recognised as a known text (not decoded)."""

    def __repr__(self) -> str:
        return "KNOWN"


KNOWN: Final = _Known()


class Summary(tuple[Any, Any, Any]):
    """What loading keeps of a decoded flag: (key, version, prerequisites), so the
    parsed dict is dropped at once (its memory reused by the next flag's decode)."""

    __slots__ = ()


#: One element of ``flags``: its JSON text and its decoded value, or KNOWN when the
#: text is one of ``known`` (recognised by comparison, not decoded).
Split = tuple[str, Any]


def split_document(
    text: str, known: Sequence[tuple[str, str]] = ()
) -> tuple[dict[str, Any], list[Split]] | None:
    """Parse a ruleset's top level, keeping each element of ``flags`` as its JSON text.

    ``known`` are the (text, key) of the previous document's flags, in order, every
    text a JSON object: an element that starts with the expected text is taken without decoding,
    which makes a document with one changed flag cost a comparison per flag. Others
    are decoded once and returned with their value. Returns None when the document
    is not an object with a ``flags`` array (the caller parses it the ordinary way,
    which also produces the error messages); raises ValueError or RecursionError for
    malformed JSON.
    """
    decode = _DECODER.raw_decode
    i = _skip(text, 0)
    if text[i : i + 1] != "{":
        return None
    top: dict[str, Any] = {}
    flags: list[Split] | None = None
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
            flags, i = _split_array(text, i, known)
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


_WS: Final = " \t\n\r"


def _split_array(text: str, i: int, known: Sequence[tuple[str, str]]) -> tuple[list[Split], int]:
    """Elements of the array starting at ``text[i]`` (``[``) and the index after it.

    The hottest loop of a load: the C scanner is called directly (not through
    ``raw_decode``) and whitespace is skipped only where there is some.
    """
    scan, space = _DECODER.scan_once, _WHITESPACE.match  # type: ignore[attr-defined]
    startswith = text.startswith
    items: list[Split] = []
    append = items.append
    i = _skip(text, i + 1)
    if text[i : i + 1] == "]":
        return items, i + 1
    position = {t: n for n, (t, _) in enumerate(known)} if known else {}
    expect = 0  # index in ``known`` of the flag most likely to come next
    count = len(known)
    try:
        while True:
            candidate = known[expect][0] if expect < count else None
            if candidate is not None and startswith(candidate, i):
                # A JSON object cannot be a proper prefix of another: it ends here.
                i += len(candidate)
                append((candidate, KNOWN))
                expect += 1
            else:
                start = i
                value, i = scan(text, i)
                piece = text[start:i]
                seen = position.get(piece) if position else None
                if seen is not None:  # moved, or the expected one was removed
                    append((known[seen][0], KNOWN))
                    expect = seen + 1
                else:
                    if type(value) is dict:
                        key = value.get("key")
                        if type(key) is str:  # else kept whole, for the error messages
                            value = Summary((key, value.get("version"), value.get("prerequisites")))
                    append((piece, value))
                    # A changed flag usually replaces the expected one; an inserted one not.
                    if (
                        candidate is not None
                        and type(value) is Summary
                        and value[0] == known[expect][1]
                    ):
                        expect += 1
            mark = text[i]
            if mark in _WS:
                i = space(text, i).end()  # type: ignore[union-attr]
                mark = text[i]
            if mark == "]":
                return items, i + 1
            if mark != ",":
                raise ValueError(f"expected ',' or ']' at character {i}")
            i += 1
            if text[i] in _WS:
                i = space(text, i).end()  # type: ignore[union-attr]
    except StopIteration as exc:
        raise ValueError(f"expected a JSON value at character {exc.value}") from None
    except IndexError:
        raise ValueError("unterminated flags array") from None
