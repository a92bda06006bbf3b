"""Lazy compilation: shape checked at load, each flag compiled on first read.

What must hold: a lazily compiled flag evaluates exactly like an eagerly compiled
one; the same bytes again cost no compile; one changed flag decodes only that flag;
a flag failing the schema is isolated (INVALID_FLAG) without touching the others;
threads racing to compile one flag get one object; the flags_changed payload
decodes nothing until read.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import boolean_flag, ruleset

import phaseflag._compile as compile_module
import phaseflag._compile_flag as compile_flag_module
from phaseflag._compile import compile_flag, compile_ruleset, load_ruleset
from phaseflag._errors import RulesetError
from phaseflag._evaluation import evaluate
from phaseflag._model import FlagSources
from phaseflag._parse import KNOWN, split_document
from phaseflag.types import ErrorCode, EvaluationContext

CASES = sorted((Path(__file__).parent / "cases").glob("*.json"))


def _case_documents() -> list[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
    out = []
    for path in CASES:
        data = json.loads(path.read_text("utf-8"))
        out.append((path.stem, data["ruleset"], data["cases"]))
    return out


def _context(raw: dict[str, Any] | None) -> EvaluationContext | None:
    if raw is None:
        return None
    return EvaluationContext(
        user_id=raw.get("user_id"),
        session_id=raw.get("session_id"),
        attributes=raw.get("attributes") or {},
    )


def _counting_compiles(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = compile_module.compile_flag

    def counting(text: str, segments: Any) -> Any:
        calls.append(text)
        return real(text, segments)

    monkeypatch.setattr(compile_module, "compile_flag", counting)
    return calls


@pytest.mark.parametrize(("name", "document", "cases"), _case_documents(), ids=lambda v: v)
def test_lazy_and_eager_compiles_evaluate_identically(
    name: str, document: dict[str, Any], cases: list[dict[str, Any]]
) -> None:
    """Every case, read from a never-read ruleset (each flag compiled by its first read),
    equals the same case read after every flag was compiled up front."""
    if not isinstance(document.get("flags"), list):
        pytest.skip("shorthand document")
    raw = json.dumps(document)
    eager = load_ruleset(raw)
    eager.flags.compile_all()
    assert eager.flags.pending() == 0
    for case in cases:
        lazy = load_ruleset(raw)  # fresh: the flag under test is compiled by this read
        context = _context(case.get("context"))
        assert evaluate(lazy, case["flag"], context) == evaluate(eager, case["flag"], context)


def test_compile_flag_is_deterministic_and_the_one_seam() -> None:
    """compile_flag on the same text twice gives equal results, and it is what a read runs."""
    condition = {"attribute": "plan", "operator": "in", "values": ["pro"]}
    rules = [{"conditions": [condition], "serve": {"variation": "on"}}]
    text = json.dumps(boolean_flag("f", rules=rules))
    a, b = compile_flag(text, {}), compile_flag(text, {})
    assert a is not b
    assert (a.key, a.type, a.static, a.default, a.error) == (
        b.key,
        b.type,
        b.static,
        b.default,
        b.error,
    )
    assert [r.id for r in a.rules] == [r.id for r in b.rules]


def test_load_compiles_no_flag_until_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading indexes the flags; each is compiled once, by its first read."""
    calls = _counting_compiles(monkeypatch)
    loaded = load_ruleset(json.dumps(ruleset(*(boolean_flag(f"f{i}") for i in range(50)))))
    assert calls == [] and loaded.flags.pending() == 50 and len(loaded) == 50
    assert evaluate(loaded, "f7").value is True
    assert evaluate(loaded, "f7").value is True
    assert len(calls) == 1 and loaded.flags.pending() == 49
    assert "f8" in loaded.flags and len(calls) == 1  # membership never compiles


def test_byte_identical_body_costs_no_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same bytes again return the ruleset already held, compiling and decoding nothing."""
    raw = json.dumps(ruleset(*(boolean_flag(f"f{i}") for i in range(20)))).encode()
    first = load_ruleset(raw)
    first.flags.compile_all()
    calls = _counting_compiles(monkeypatch)
    splits: list[int] = []
    real_split = compile_module.split_document
    monkeypatch.setattr(
        compile_module, "split_document", lambda *a: splits.append(1) or real_split(*a)
    )
    assert load_ruleset(raw, previous=first) is first
    assert calls == [] and splits == []


def test_one_changed_flag_is_the_only_one_decoded() -> None:
    """Given the previous texts, the split decodes only the changed element."""
    flags = [boolean_flag(f"f{i}") for i in range(30)]
    before = load_ruleset(json.dumps(ruleset(*flags)))
    flags[12] = boolean_flag("f12", False)
    text = json.dumps(ruleset(*flags, version=2))
    known = [(t, k) for k, t in before.flags.texts().items()]
    split = split_document(text, known)
    assert split is not None
    decoded = [value[0] for _, value in split[1] if value is not KNOWN]
    assert decoded == ["f12"]
    after = load_ruleset(text, previous=before)
    assert evaluate(after, "f12").value is False and evaluate(after, "f13").value is True


@pytest.mark.parametrize(
    "edit",
    ["insert", "delete", "move", "replace-first", "replace-last", "all-new", "same"],
)
def test_split_with_known_texts_equals_a_plain_split(edit: str) -> None:
    """Whatever changed, the split given the previous texts yields the same elements."""
    flags = [boolean_flag(f"f{i}") for i in range(8)]
    before = json.dumps(ruleset(*flags))
    known = [(t, k) for k, t in load_ruleset(before).flags.texts().items()]
    after = list(flags)
    if edit == "insert":
        after.insert(3, boolean_flag("new"))
    elif edit == "delete":
        del after[4]
    elif edit == "move":
        after.append(after.pop(0))
    elif edit == "replace-first":
        after[0] = boolean_flag("f0", False)
    elif edit == "replace-last":
        after[-1] = boolean_flag("f7", False)
    elif edit == "all-new":
        after = [boolean_flag(f"g{i}") for i in range(8)]
    text = json.dumps(ruleset(*after))
    with_known, plain = split_document(text, known), split_document(text)
    assert with_known is not None and plain is not None
    assert [t for t, _ in with_known[1]] == [t for t, _ in plain[1]]
    assert with_known[0] == plain[0]


def test_invalid_flag_is_isolated_when_compiled_lazily() -> None:
    """A flag failing the schema inside loads; its read is INVALID_FLAG, never an error,
    the others serve, and problems names its path."""
    bad = boolean_flag("bad")
    bad["variations"] = "not a list"
    loaded = load_ruleset(json.dumps(ruleset(boolean_flag("good"), bad)))
    result = evaluate(loaded, "bad", EvaluationContext(user_id="u"))
    assert result.error_code == ErrorCode.INVALID_FLAG and result.value is None
    assert evaluate(loaded, "good").value is True
    assert [p for p, _ in loaded.problems] == ["flags[1].variations"]


def test_document_shape_still_rejects_whole() -> None:
    """A flag that is not an object, lacks a key, or repeats one rejects the document."""
    for flags in ([5], [{"type": "boolean"}], [boolean_flag("a"), boolean_flag("a")]):
        with pytest.raises(RulesetError):
            load_ruleset(json.dumps({"schema_version": 1, "flags": flags}))


def test_unforeseen_compile_failure_isolates_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever goes wrong inside compiling one flag, the read returns INVALID_FLAG."""
    loaded = load_ruleset(json.dumps(ruleset(boolean_flag("a"))))

    def explode(*args: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(compile_flag_module, "_build_flag", explode)
    assert evaluate(loaded, "a").error_code == ErrorCode.INVALID_FLAG


def test_threads_racing_to_compile_one_flag_share_one_object() -> None:
    """Eight threads reading one uncompiled flag at once all get the same Flag object."""
    for _ in range(20):
        loaded = load_ruleset(json.dumps(ruleset(boolean_flag("a"))))
        barrier = threading.Barrier(8)
        got: list[Any] = []

        def read(loaded: Any = loaded, barrier: Any = barrier, got: Any = got) -> None:
            barrier.wait(timeout=10)
            got.append(loaded.flags.get("a"))

        threads = [threading.Thread(target=read, name=f"race-{i}") for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert len(got) == 8 and all(flag is got[0] for flag in got)
        assert loaded.table["a"] is got[0]


def test_prerequisite_flags_are_compiled_at_load() -> None:
    """Flags linked by prerequisites are compiled at load (cycles are found there)."""
    a = boolean_flag("a", prerequisites=[{"flag": "b", "variation": "on"}])
    loaded = load_ruleset(json.dumps(ruleset(a, boolean_flag("b"), boolean_flag("c"))))
    assert set(loaded.table) == {"a", "b"}


def test_flags_changed_payload_decodes_only_what_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """FlagSources decodes a definition only when a listener looks it up."""
    loaded = load_ruleset(json.dumps(ruleset(*(boolean_flag(f"f{i}") for i in range(10)))))
    decoded: list[str] = []
    real = json.loads
    payload = FlagSources(loaded.flags)
    monkeypatch.setattr(json, "loads", lambda s, **k: decoded.append(s) or real(s, **k))
    assert len(payload) == 10 and "f3" in payload and next(iter(payload)) == "f0"
    assert decoded == []
    assert payload["f3"]["key"] == "f3" and len(decoded) == 1
    monkeypatch.undo()
    assert payload == {f"f{i}": boolean_flag(f"f{i}") for i in range(10)}


def test_shorthand_and_parsed_documents_compile_lazily_too() -> None:
    """compile_ruleset (parsed dicts, shorthand) shares the lazy path."""
    loaded = compile_ruleset({"flags": {"a": True, "b": "x"}})
    assert loaded.flags.pending() == 2
    assert evaluate(loaded, "b").value == "x"
