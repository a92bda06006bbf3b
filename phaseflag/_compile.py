"""Validated JSON -> compiled Ruleset, each flag compiled when it is first read.

Loading checks the document's shape up front and rejects it whole (RulesetError
listing every error with its JSON path) when the top level, a segment, or a flag's
key is wrong, or two flags share a key. Segments compile at load
(``_compile_segments``); each flag is kept as its JSON text and compiled by
``compile_flag`` (``_compile_flag``) on first read, where a flag that cannot be used
is isolated (INVALID_FLAG) and the rest of the ruleset serves. Flags linked by
prerequisites are compiled at load, where cycles and chains deeper than
MAX_PREREQUISITE_DEPTH are isolated. Given the previous Ruleset, the same bytes again
cost nothing, and flags whose text did not change are reused untouched.
"""

from __future__ import annotations

import gc
import hashlib
import json
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final, TypeVar

from ._compile_flag import compile_flag, encode, invalid_flag
from ._compile_segments import MAX_SEGMENT_DEPTH, compile_segments, duplicate_segments
from ._graph import layers
from ._model import Flag, FlagTable, Ruleset, Segment
from ._parse import KNOWN, MAX_DOCUMENT_BYTES, Summary, parse_document, split_document
from ._readcost import read_work_problems
from ._schema import checker, reject, validate_item, validate_shell

__all__ = [
    "MAX_PREREQUISITE_DEPTH",
    "MAX_SEGMENT_DEPTH",
    "compile_flag",
    "compile_ruleset",
    "expand_shorthand",
    "load_ruleset",
]

#: Longest prerequisite chain accepted; deeper flags are isolated as INVALID_FLAG.
MAX_PREREQUISITE_DEPTH: Final = 16
_T = TypeVar("_T")


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
            items.append((encode(raw), raw))
        except (TypeError, ValueError) as exc:  # a bootstrap dict holding non-JSON values
            errors.append((f"flags[{index}]", f"is not JSON-serialisable: {exc}"))
    if errors:
        raise reject(errors)
    top = {k: v for k, v in document.items() if k != "flags"}
    return _gc_paused(lambda: _assemble(top, items, previous, shorthand, b""))


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
    segments, segment_problems = _segments(raw_segments, previous, same_segments, errors)
    index = _Index(previous, same_segments, errors)
    for position, (text, given) in enumerate(items):
        index.add(position, text, given)
    if errors:
        raise reject(errors)
    frozen_segments = MappingProxyType(dict(segments))

    def compile_one(text: str) -> Flag:
        return compile_flag(text, frozen_segments)

    table = FlagTable(index.texts, index.compiled, compile_one)
    _check_prerequisites(table, index.compiled, index.graph)
    return Ruleset(
        version=int(top.get("version", 0)),
        flags=table,
        segments=frozen_segments,
        top_source=top,
        shorthand=shorthand,
        table=index.compiled,
        segment_problems=tuple(segment_problems),
        digest=digest,
        flag_versions=index.versions,
        prerequisite_graph=index.graph,
    )


def _segments(
    raw_segments: list[dict[str, Any]],
    previous: Ruleset | None,
    same: bool,
    errors: list[tuple[str, str]],
) -> tuple[Mapping[str, Segment], list[tuple[str, str]]]:
    """The compiled segments and their problems: the previous ruleset's when its segments
    are the ``same``; none when a segment fails the schema (added to ``errors``)."""
    if same and previous is not None:
        return previous.segments, list(previous.segment_problems)
    for position, raw in enumerate(raw_segments):
        errors.extend(validate_item("segment", raw, position))
    if errors:
        return {}, []
    errors.extend(duplicate_segments(raw_segments))
    if errors:
        return {}, []
    return compile_segments(raw_segments)


class _Index:
    """The document's flags by key: JSON text, version, prerequisites, and the compiled
    flags reused from ``previous`` (a flag whose text did not change)."""

    def __init__(
        self, previous: Ruleset | None, same_segments: bool, errors: list[tuple[str, str]]
    ) -> None:
        self.texts: dict[str, str] = {}
        self.compiled: dict[str, Flag] = {}
        self.versions: dict[str, int] = {}
        self.graph: dict[str, tuple[str, ...]] = {}
        self.errors = errors
        old_texts = previous.flags.texts() if previous is not None else {}
        self._old_keys = {text: key for key, text in old_texts.items()}
        self._old_compiled = previous.table.copy() if previous is not None else {}  # atomic
        self._old_graph = previous.prerequisite_graph if previous is not None else {}
        self._old_versions = previous.flag_versions if previous is not None else {}
        self._same = same_segments  # segments unchanged: flags using them reusable
        self._key_ok = checker("key")

    def add(self, position: int, text: str, given: Any) -> None:
        """Index ``flags[position]``; a bad or duplicate key is added to the errors."""
        if given is KNOWN or text in self._old_keys:  # the text of one of the previous flags
            key = self._old_keys[text]
            old = self._old_compiled.get(key)
            # An isolated flag is never reused: its cause (a missing segment) may be gone.
            if old is not None and old.error is None and (self._same or not old.segment_keys):
                self.compiled[key] = old
            parents = self._old_graph.get(key)
            version = self._old_versions.get(key)
        else:
            summary = self._summary(position, text, given)
            if summary is None:
                return
            key, version, named = summary
            parents = _parents(named) if named else None
        if key in self.texts:
            self.errors.append((f"flags[{position}].key", f"duplicate flag key {key!r}"))
            return
        self.texts[key] = text
        if version is not None:
            self.versions[key] = version
        if parents:
            self.graph[key] = parents

    def _summary(self, position: int, text: str, given: Any) -> tuple[str, int | None, Any] | None:
        """(key, version or None, prerequisites) of a new flag; None (an error added) when
        its key cannot index it."""
        value = given
        if type(value) is dict:  # from compile_ruleset: a parsed flag
            value = Summary((value.get("key"), value.get("version"), value.get("prerequisites")))
        key = value[0] if type(value) is Summary else None
        if type(key) is not str or not self._key_ok(key):
            if type(value) is Summary:  # a bad key: validate what the text holds
                value = json.loads(text)
            problems = validate_item("flag", value, position)
            self.errors.extend(e for e in problems if _is_shape_error(e[0], position))
            return None
        version = value[1]
        if version is not None and (type(version) is not int or version < 0):
            version = None
        return key, version, value[2]


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
        compiled[key] = invalid_flag(json.loads(text), ".prerequisites", message, text)
    linked_now = {key: compiled[key] for key in linked if key in compiled}
    for key, message in read_work_problems(linked_now).items():
        text = table.text(key) or "{}"
        compiled[key] = invalid_flag(json.loads(text), ".prerequisites", message, text)
