"""Data-driven evaluation cases: every ``tests/cases/*.json`` file, one test per case.

A case file is ``{"description", "ruleset", "cases": [{"name", "flag", "context", "expect"}]}``;
``context`` holds ``user_id``, ``session_id`` and ``attributes`` (each optional) and
``expect`` holds ``value``, ``variation_key``, ``reason`` and, when not null, ``rule_id``
and ``error_code``. The files are plain JSON so other phaseflag SDKs can run them too.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from phaseflag._compile import compile_ruleset
from phaseflag._evaluation import evaluate, explain
from phaseflag._model import Ruleset
from phaseflag.types import EvaluationContext

CASES_DIR = Path(__file__).resolve().parent / "cases"
_EXPECT_KEYS = {"value", "variation_key", "reason", "rule_id", "error_code"}


def _files() -> list[Path]:
    return sorted(CASES_DIR.glob("*.json"))


@cache
def _load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return document


@cache
def _ruleset(path: Path) -> Ruleset:
    return compile_ruleset(_load(path)["ruleset"])


def _params() -> list[Any]:
    params = []
    for path in _files():
        for case in _load(path)["cases"]:
            params.append(pytest.param(path, case, id=f"{path.stem}::{case['name']}"))
    return params


def _context(raw: dict[str, Any]) -> EvaluationContext:
    return EvaluationContext(
        user_id=raw.get("user_id"),
        session_id=raw.get("session_id"),
        attributes=raw.get("attributes"),
    )


def test_case_files_are_well_formed() -> None:
    """Every case file has a description, a ruleset and uniquely named, complete cases."""
    files = _files()
    assert len(files) >= 8
    for path in files:
        document = _load(path)
        assert set(document) == {"description", "ruleset", "cases"}, path.name
        names = [case["name"] for case in document["cases"]]
        assert names and len(names) == len(set(names)), path.name
        for case in document["cases"]:
            assert set(case) == {"name", "flag", "context", "expect"}, case["name"]
            assert {"value", "variation_key", "reason"} <= set(case["expect"]) <= _EXPECT_KEYS


@pytest.mark.parametrize(("path", "case"), _params())
def test_case(path: Path, case: dict[str, Any]) -> None:
    """The flag evaluates for the context to exactly the expected value, variation and reason."""
    result = evaluate(_ruleset(path), case["flag"], _context(case["context"]))
    expect = case["expect"]
    got = {
        "value": result.value,
        "variation_key": result.variation_key,
        "reason": result.reason,
        "rule_id": result.rule_id,
        "error_code": result.error_code,
    }
    wanted = {key: expect.get(key) for key in _EXPECT_KEYS}
    assert got == wanted
    # JSON cannot tell 1 from True; the value's type must match as well.
    assert type(result.value) is type(expect["value"])


@pytest.mark.parametrize(("path", "case"), _params())
def test_explain_agrees(path: Path, case: dict[str, Any]) -> None:
    """explain() reaches the same result as evaluate() and records at least one step."""
    ruleset, context = _ruleset(path), _context(case["context"])
    explanation = explain(ruleset, case["flag"], context)
    assert explanation.result == evaluate(ruleset, case["flag"], context)
    assert explanation.steps
    assert all(isinstance(line, str) and line for line in explanation.lines())
