"""``matches`` on RE2: the cost of one read for hostile patterns on 512-character inputs.

Run: ``python benchmarks/bench_regex.py [--reads 2000] [--json PATH]``. Every pattern of
issue 10's table and a corpus of classic catastrophic-backtracking patterns is compiled
into one flag each and read (``evaluate``) against 512-character inputs built to make a
backtracking engine explode; the worst pattern's median read time is the target row
(< 0.1 ms). A short everyday pattern on a short input shows the fixed cost of a search.
Prints a table and writes JSON; exit status 1 when a target is missed, 2 when a result is
wrong.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

from _common import at_most, expect, machine_info, main_of

from phaseflag import EvaluationContext, compile_ruleset, evaluate
from phaseflag._operators import MAX_REGEX_INPUT

N = MAX_REGEX_INPUT
EMAIL = ("a" * 240 + "@" + "b." * 200)[: N - 1] + "c"
#: (pattern, case_insensitive, a 512-character input that makes backtracking explode)
HOSTILE = [
    (r".*x.*x.*x.*y", False, "x" * N),
    (r"\d*0\d*0\d*0\d*!", False, "0" * N),
    ("[\u0430-\u044f]*[\u0430-\u044f]*[\u0430-\u044f]*[\u0430-\u044f]*!", False, "я" * N),
    (r"a*A*a*A*a*A*!", True, "a" * N),
    (r".*@.*\..*\.edu$", False, EMAIL),
    (r"(a+)+$", False, "a" * (N - 1) + "!"),
    (r"(a|aa)+$", False, "a" * (N - 1) + "!"),
    (r"(\w+\s?)+$", False, ("word " * N)[: N - 1] + "!"),
    (r"^(.*a){12}$", False, "a" * (N - 1) + "!"),
    (r"a*a*a*a*a*b", False, "a" * N),
    (r"[ab]*a[ab]{20}c", False, "ab" * (N // 2)),
]
EVERYDAY = (r"^/api/v[0-9]+/", False, "/api/v2/users")


def median_read_us(pattern: str, fold: bool, text: str, reads: int) -> float:
    """Median time of one ``evaluate`` of a one-rule ``matches`` flag, in µs."""
    condition = {"attribute": "s", "operator": "matches", "values": [pattern]}
    if fold:
        condition["case_insensitive"] = True
    flag = {
        "key": "r",
        "type": "boolean",
        "variations": [{"key": "on", "value": True}, {"key": "off", "value": False}],
        "default": {"variation": "off"},
        "rules": [{"conditions": [condition], "serve": {"variation": "on"}}],
    }
    compiled = compile_ruleset({"schema_version": 1, "flags": [flag]})
    expect(compiled.flags["r"].error is None, f"{pattern!r} was refused")
    ctx = EvaluationContext(attributes={"s": text})
    expect(evaluate(compiled, "r", ctx).error_code is None, f"{pattern!r} errored")
    samples = []
    for _ in range(reads):
        start = time.perf_counter_ns()
        evaluate(compiled, "r", ctx)
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


def run(reads: int) -> dict[str, Any]:
    """Measure every hostile pattern and the everyday one; the report with its targets."""
    rows = [
        {
            "pattern": p,
            "case_insensitive": fold,
            "input_chars": len(text),
            "median_us": median_read_us(p, fold, text, reads),
        }
        for p, fold, text in HOSTILE
    ]
    worst = max(rows, key=lambda row: row["median_us"])
    everyday = median_read_us(*EVERYDAY, reads)
    return {
        **machine_info(),
        "reads_per_pattern": reads,
        "patterns": rows,
        "everyday_us": everyday,
        "targets": [
            at_most(
                f"worst hostile pattern, {N}-char input",
                worst["median_us"] / 1000,
                "ms",
                0.1,
                digits=4,
            ),
        ],
    }


def show(report: dict[str, Any]) -> None:
    print(f"{'pattern':<32}{'input':>6}{'median':>10}")
    for row in report["patterns"]:
        print(f"{row['pattern']:<32}{row['input_chars']:>6}{row['median_us']:>8.1f}µs")
    print(f"{EVERYDAY[0]:<32}{len(EVERYDAY[2]):>6}{report['everyday_us']:>8.1f}µs  (everyday)")


def main() -> int:
    return main_of(__doc__, "results_regex.json", run, show, options={"--reads": 2000})


if __name__ == "__main__":
    sys.exit(main())
