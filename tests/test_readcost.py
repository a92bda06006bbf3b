"""Reads are linear in the ruleset whatever its shape (issue 15 item 1).

Each prerequisite flag and each segment is evaluated at most once per read, counted
(not timed) here; the exponential shapes at the allowed depth of 16 also run in a
killable subprocess with a hard timeout; a flag whose read could exceed
MAX_READ_CONDITIONS is isolated at compile time with a message.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import boolean_flag, ruleset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import phaseflag._evaluation as evaluation
import phaseflag._matcher as matcher
import phaseflag._readcost as readcost
from phaseflag._compile import MAX_PREREQUISITE_DEPTH, MAX_SEGMENT_DEPTH, compile_ruleset
from phaseflag._evaluation import evaluate, explain
from phaseflag.types import ErrorCode, EvaluationContext, Reason

DEPTH = MAX_PREREQUISITE_DEPTH
assert DEPTH == MAX_SEGMENT_DEPTH == 16


def prerequisite_diamonds(depth: int = DEPTH) -> tuple[dict[str, Any], str]:
    """Two flags per level, each needing both flags of the level below: 2^depth paths."""
    flags = [boolean_flag("f0"), boolean_flag("g0")]
    for i in range(1, depth + 1):
        below = [{"flag": f"f{i - 1}", "variation": "on"}, {"flag": f"g{i - 1}", "variation": "on"}]
        flags += [boolean_flag(f"f{i}", prerequisites=below)]
        flags += [boolean_flag(f"g{i}", prerequisites=below)]
    return ruleset(*flags), f"f{depth}"


def prerequisite_fan(depth: int = DEPTH, width: int = 6) -> tuple[dict[str, Any], str]:
    """Each level needs every flag of the level below: width^depth paths."""
    flags = [boolean_flag(f"l0w{w}") for w in range(width)]
    for i in range(1, depth + 1):
        below = [{"flag": f"l{i - 1}w{w}", "variation": "on"} for w in range(width)]
        flags += [boolean_flag(f"l{i}w{w}", prerequisites=below) for w in range(width)]
    return ruleset(*flags), f"l{depth}w0"


def nested_segments(depth: int = DEPTH, mentions: int = 4) -> tuple[dict[str, Any], str]:
    """Each segment names the one below in ``mentions`` rules: mentions^depth paths."""
    segments = [{"key": "s0", "rules": [{"conditions": [_cond("plan", "in", ["never"])]}]}]
    for i in range(1, depth + 1):
        rules = [
            {"conditions": [_cond("n", "gt", [m]), _in_segment(f"s{i - 1}")]}
            for m in range(mentions)
        ]
        segments.append({"key": f"s{i}", "rules": rules})
    flag = boolean_flag(
        "top",
        False,
        rules=[{"conditions": [_in_segment(f"s{depth}")], "serve": {"variation": "on"}}],
    )
    return ruleset(flag, segments=segments), "top"


def segments_under_prerequisites() -> tuple[dict[str, Any], str]:
    """Diamond prerequisites whose flags all test the same nested segment."""
    document, key = prerequisite_diamonds()
    segments, _ = nested_segments(mentions=3)
    for flag in document["flags"]:
        flag["rules"] = [{"conditions": [_in_segment(f"s{DEPTH}")], "serve": {"variation": "off"}}]
    document["segments"] = segments["segments"]
    return document, key


SHAPES: dict[str, Callable[[], tuple[dict[str, Any], str]]] = {
    "prerequisite_diamonds": prerequisite_diamonds,
    "prerequisite_fan": prerequisite_fan,
    "nested_segments": nested_segments,
    "segments_under_prerequisites": segments_under_prerequisites,
}
CONTEXT = EvaluationContext("u", attributes={"plan": "free", "n": 9})


def _cond(attribute: str, operator: str, values: list[Any]) -> dict[str, Any]:
    return {"attribute": attribute, "operator": operator, "values": values}


def _in_segment(key: str, negate: bool = False) -> dict[str, Any]:
    return {"operator": "in_segment", "values": [key], "negate": negate}


class Counter:
    """Counts flag and segment evaluations; raises past ``limit`` (never hangs a test)."""

    def __init__(self, limit: int) -> None:
        self.flags = 0
        self.segments = 0
        self.limit = limit

    def check(self) -> None:
        if self.flags + self.segments > self.limit:
            raise AssertionError(f"more than {self.limit} evaluations in one read")


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter]:
    """Wrap the evaluator's two node evaluations: a flag and a segment's rules."""
    count = Counter(limit=100_000)
    flag_eval, segment_eval = evaluation.evaluate_flag, matcher._contains

    def counted_flag(*args: Any, **kwargs: Any) -> Any:
        count.flags += 1
        count.check()
        return flag_eval(*args, **kwargs)

    def counted_segment(*args: Any) -> bool:
        count.segments += 1
        count.check()
        return segment_eval(*args)

    monkeypatch.setattr(evaluation, "evaluate_flag", counted_flag)
    monkeypatch.setattr(matcher, "_contains", counted_segment)
    yield count


def _read(compiled: Any, key: str, count: Counter, context: EvaluationContext = CONTEXT) -> Any:
    count.flags = count.segments = 0
    return evaluate(compiled, key, context)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_exponential_shapes_evaluate_each_node_once(shape: str, counter: Counter) -> None:
    """At depth 16 each flag and segment is evaluated at most once per read."""
    document, key = SHAPES[shape]()
    compiled = compile_ruleset(document)
    assert compiled.problems == ()
    result = _read(compiled, key, counter)
    assert result.error_code is None
    assert counter.flags <= len(compiled.flags)
    assert counter.segments <= len(compiled.segments)
    assert counter.flags + counter.segments >= 1  # the wrappers really counted


def test_diamond_results_are_the_plain_answers() -> None:
    """Memoised prerequisites give the answers of a plain walk (small enough to walk)."""
    document, key = prerequisite_diamonds(depth=4)
    compiled = compile_ruleset(document)
    assert evaluate(compiled, key, CONTEXT).variation_key == "on"
    document["flags"][0]["default"] = {"variation": "off"}  # f0 fails: every level fails
    compiled = compile_ruleset(document)
    assert evaluate(compiled, key, CONTEXT).reason == Reason.PREREQUISITE_FAILED
    steps = explain(compiled, key, CONTEXT).steps
    assert [s["passed"] for s in steps if s["step"] == "prerequisite"] == [False]


def test_nested_segment_membership_is_right() -> None:
    """The memo does not change membership: a context in s0 is in every level."""
    document, key = nested_segments(depth=5, mentions=3)
    compiled = compile_ruleset(document)
    assert evaluate(compiled, key, CONTEXT).variation_key == "off"
    inside = EvaluationContext("u", attributes={"plan": "never", "n": 9})
    assert evaluate(compiled, key, inside).variation_key == "on"
    document["segments"][0]["included"] = ["u"]
    assert evaluate(compile_ruleset(document), key, CONTEXT).variation_key == "on"


@pytest.mark.slow
def test_exponential_shapes_read_in_microseconds_not_minutes(tmp_path: Path) -> None:
    """Each shape at depth 16 reads in well under 10 ms (a subprocess killed after 120 s).

    Without the memo these reads take minutes; the median of 21 reads is held to 10 ms, a
    margin over the ~50 us they take that a loaded 2-core machine keeps.
    """
    script = tmp_path / "shapes.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, time
            sys.path[:0] = [{str(Path(__file__).parent)!r}]
            from test_readcost import SHAPES, CONTEXT
            from phaseflag._compile import compile_ruleset
            from phaseflag._evaluation import evaluate
            for name, make in sorted(SHAPES.items()):
                document, key = make()
                compiled = compile_ruleset(document)
                times = []
                for _ in range(21):
                    start = time.perf_counter()
                    evaluate(compiled, key, CONTEXT)
                    times.append(time.perf_counter() - start)
                print(name, sorted(times)[10])
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True
    )
    medians = dict(line.split() for line in done.stdout.splitlines())
    assert sorted(medians) == sorted(SHAPES)
    for name, seconds in medians.items():
        assert float(seconds) < 0.01, (name, seconds)


# -- random graphs -------------------------------------------------------------------------

N_FLAGS = 8
N_SEGMENTS = 6
REASONS = {v for k, v in vars(Reason).items() if k.isupper()}


@st.composite
def graphs(draw: st.DrawFn) -> dict[str, Any]:
    """Flags needing random other flags (cycles included), segments naming random segments
    (repeatedly, negated or not), flags testing random segments."""
    segments = []
    for s in range(N_SEGMENTS):
        rules = []
        for _ in range(draw(st.integers(0, 3))):
            conditions = [_cond("n", "gt", [draw(st.integers(0, 10))])]
            for ref in draw(st.lists(st.integers(0, N_SEGMENTS - 1), max_size=3)):
                conditions.append(_in_segment(f"s{ref}", draw(st.booleans())))
            rules.append({"conditions": conditions})
        included = draw(st.lists(st.sampled_from(["u", "v"]), max_size=1))
        segments.append({"key": f"s{s}", "rules": rules, "included": included})
    flags = []
    for f in range(N_FLAGS):
        parents = draw(st.lists(st.integers(0, N_FLAGS - 1), max_size=3, unique=True))
        prerequisites = [
            {"flag": f"f{p}", "variation": draw(st.sampled_from(["on", "off"]))} for p in parents
        ]
        rules = [
            {
                "conditions": [_in_segment(f"s{ref}", draw(st.booleans()))],
                "serve": {"variation": draw(st.sampled_from(["on", "off"]))},
            }
            for ref in draw(st.lists(st.integers(0, N_SEGMENTS - 1), max_size=3))
        ]
        fields: dict[str, Any] = {"rules": rules}
        if prerequisites:
            fields["prerequisites"] = prerequisites
        flags.append(boolean_flag(f"f{f}", draw(st.booleans()), **fields))
    return ruleset(*flags, segments=segments)


@pytest.mark.soak
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    document=graphs(),
    user=st.sampled_from(["u", "v", "w"]),
    n=st.integers(-1, 11),
)
def test_work_per_read_is_bounded_on_random_graphs(
    document: dict[str, Any], user: str, n: int
) -> None:
    """On any graph a read evaluates each flag and each segment at most once."""
    with pytest.MonkeyPatch.context() as patch:
        count = Counter(limit=10_000)
        flag_eval, segment_eval = evaluation.evaluate_flag, matcher._contains

        def counted_flag(*args: Any, **kwargs: Any) -> Any:
            count.flags += 1
            count.check()
            return flag_eval(*args, **kwargs)

        def counted_segment(*args: Any) -> bool:
            count.segments += 1
            count.check()
            return segment_eval(*args)

        patch.setattr(evaluation, "evaluate_flag", counted_flag)
        patch.setattr(matcher, "_contains", counted_segment)
        compiled = compile_ruleset(document)
        context = EvaluationContext(user, attributes={"n": n})
        for key in compiled.flags:
            result = _read(compiled, key, count, context)
            assert result.reason in REASONS
            assert count.flags <= len(compiled.flags), key
            assert count.segments <= len(compiled.segments), key
            assert explain(compiled, key, context).result == result


# -- the compile-time bound ----------------------------------------------------------------


def test_flag_over_the_read_bound_is_isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """A flag whose segments could make one read evaluate too much is INVALID_FLAG."""
    monkeypatch.setattr(readcost, "MAX_READ_CONDITIONS", 40)
    document, key = nested_segments(depth=8, mentions=3)  # 8 levels x 3 rules x 2 conditions
    compiled = compile_ruleset(document)
    result = evaluate(compiled, key, CONTEXT)
    assert result.error_code == ErrorCode.INVALID_FLAG
    assert "more than the limit of 40" in (result.error_message or "")
    assert any("more than the limit" in message for _, message in compiled.problems)
    small, key = nested_segments(depth=2, mentions=3)
    assert evaluate(compile_ruleset(small), key, CONTEXT).error_code is None


def test_prerequisite_closure_over_the_bound_is_isolated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Prerequisites count too: each flag of the closure once, so diamonds stay cheap."""
    monkeypatch.setattr(readcost, "MAX_READ_CONDITIONS", 30)
    document, key = prerequisite_diamonds(depth=16)  # 34 flags of 1 unit each
    compiled = compile_ruleset(document)
    top = evaluate(compiled, key, CONTEXT)
    assert top.error_code == ErrorCode.INVALID_FLAG
    assert "with its prerequisites" in (top.error_message or "")
    assert evaluate(compiled, "f3", CONTEXT).error_code is None  # 8 flags: within the bound


def test_default_bound_accepts_the_largest_schema_valid_flag() -> None:
    """The bound is the schema's maximum for one flag: no single valid flag is refused."""
    assert readcost.MAX_READ_CONDITIONS == 1000 * 100
