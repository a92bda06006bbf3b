"""Flag-read benchmark: S1-S4 through PhaseFlagClient vs a hand-written dict+if baseline.

Run: ``python benchmarks/bench_evaluation.py [--rounds N] [--json PATH]``. Prints a
table (median ns per read over interleaved rounds) and writes JSON. Every scenario's
answers are checked against the baseline first, so it cannot time an error path.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mmh3

from phaseflag import EvaluationContext, PhaseFlagClient

BOOL = [{"key": "on", "value": True}, {"key": "off", "value": False}]
N_CONTEXTS = 10_000
TARGETS_NS = {"S1": 400, "S2": 800, "S3": 1200, "S4": 4000, "context": 1500}


def _cond(attribute: str, operator: str, values: list[Any]) -> dict[str, Any]:
    return {"attribute": attribute, "operator": operator, "values": values}


def _split(on: float) -> dict[str, Any]:
    return {
        "rollout": {
            "variations": [
                {"variation": "on", "weight": on},
                {"variation": "off", "weight": 100 - on},
            ]
        }
    }


def build_ruleset() -> dict[str, Any]:
    """The four scenario flags (DESIGN-format ruleset)."""
    s4_rules = [
        {
            "id": f"r{i}",
            "conditions": [
                _cond("plan", "in", ["pro", "enterprise", "team"]),
                _cond("account_age", "gt", [10]),
                _cond("app_version", "semver_gte", [f"{9 - i}.0.0"]),
            ],
            "serve": {"variation": "on"},
        }
        for i in range(9)
    ]
    s4_rules.append(
        {
            "id": "r9",
            "conditions": [
                _cond("plan", "in", ["pro", "enterprise", "team"]),
                _cond("account_age", "gt", [10]),
                _cond("app_version", "semver_gte", ["1.0.0"]),
            ],
            "serve": _split(50),
        }
    )
    return {
        "schema_version": 1,
        "version": 1,
        "flags": [
            {"key": "s1", "type": "boolean", "variations": BOOL, "default": {"variation": "on"}},
            {
                "key": "s2",
                "type": "boolean",
                "variations": BOOL,
                "rules": [
                    {
                        "conditions": [_cond("plan", "in", ["pro", "enterprise"])],
                        "serve": {"variation": "on"},
                    }
                ],
                "default": {"variation": "off"},
            },
            {"key": "s3", "type": "boolean", "variations": BOOL, "default": _split(50)},
            {
                "key": "s4",
                "type": "string",
                "variations": [{"key": "on", "value": "on"}, {"key": "off", "value": "off"}],
                "rules": s4_rules,
                "default": {"variation": "off"},
            },
        ],
    }


# -- hand-written baseline: what a developer would write with a dict and if-statements ------

_FLAGS = {"s1": True}
_PAID = frozenset({"pro", "enterprise"})
_S4_PLANS = frozenset({"pro", "enterprise", "team"})


def _semver(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


_S4_MIN = [_semver(f"{9 - i}.0.0") for i in range(9)]


def base_s1(ctx: dict[str, Any]) -> bool:
    return _FLAGS.get("s1", False)


def base_s2(ctx: dict[str, Any]) -> bool:
    return ctx.get("plan") in _PAID


def _bucket(salt: str, key: str) -> int:
    h = mmh3.hash(f"{salt}:{key}", 0, False)
    return (h % 100) * 1000 + (h // 100) % 1000


def base_s3(ctx: dict[str, Any]) -> bool:
    return _bucket("s3", ctx["user_id"]) < 50_000


def base_s4(ctx: dict[str, Any]) -> str:
    version = _semver(ctx["app_version"])
    for minimum in _S4_MIN:
        if ctx["plan"] in _S4_PLANS and ctx["account_age"] > 10 and version >= minimum:
            return "on"
    if ctx["plan"] in _S4_PLANS and ctx["account_age"] > 10 and version >= (1, 0, 0):
        return "on" if _bucket("s4", ctx["user_id"]) < 50_000 else "off"
    return "off"


def make_contexts() -> tuple[list[EvaluationContext], list[dict[str, Any]]]:
    """10k users; half on a paid plan (S2 matches half); all on app 0.9.0 -> S4's tenth rule."""
    ctxs, plain = [], []
    for i in range(N_CONTEXTS):
        attrs = {
            "plan": "pro" if i % 2 else "free",
            "account_age": 30 + i % 50,
            "app_version": "0.9.0",
            "country": "US",
            "beta": False,
        }
        if i % 2 == 0:
            attrs["plan"] = "free"
        ctxs.append(EvaluationContext(user_id=f"user-{i}", attributes=attrs))
        plain.append({"user_id": f"user-{i}", **attrs})
    # S4: paid users fail rules 0-8 only on semver (0.9.0 < 1.0.0 .. 9.0.0) and match rule 9.
    return ctxs, plain


def run(rounds: int) -> dict[str, Any]:
    client = PhaseFlagClient(base_url="", api_key="", bootstrap=build_ruleset())
    ctxs, plain = make_contexts()
    paid = [i for i in range(N_CONTEXTS) if plain[i]["plan"] == "pro"]
    getters: dict[
        str, tuple[Callable[..., Any], str, Any, Callable[[dict[str, Any]], Any], Any]
    ] = {
        "S1": (client.get_boolean_value, "s1", False, base_s1, range(N_CONTEXTS)),
        "S2": (client.get_boolean_value, "s2", False, base_s2, range(N_CONTEXTS)),
        "S3": (client.get_boolean_value, "s3", False, base_s3, range(N_CONTEXTS)),
        "S4": (client.get_string_value, "s4", "x", base_s4, paid),
    }
    for name, (get, key, default, base, indices) in getters.items():  # correctness first
        for i in indices:
            if get(key, default, ctxs[i]) != base(plain[i]):
                raise SystemExit(f"{name}: phaseflag and baseline disagree for {plain[i]}")

    samples: dict[str, list[float]] = {name: [] for name in [*getters, "context"]}
    base_samples: dict[str, list[float]] = {name: [] for name in getters}
    attrs5 = {
        "plan": "pro",
        "country": "US",
        "app_version": "2.4.1",
        "account_age": 365,
        "beta": True,
    }
    gc.disable()
    try:
        for _ in range(rounds):  # interleaved rounds: drift affects both sides alike
            for name, (get, key, default, base, indices) in getters.items():
                idx = list(indices)[:2000]
                c_list = [ctxs[i] for i in idx]
                p_list = [plain[i] for i in idx]
                start = time.perf_counter_ns()
                for c in c_list:
                    get(key, default, c)
                samples[name].append((time.perf_counter_ns() - start) / len(c_list))
                start = time.perf_counter_ns()
                for p in p_list:
                    base(p)
                base_samples[name].append((time.perf_counter_ns() - start) / len(p_list))
            start = time.perf_counter_ns()
            for _ in range(2000):
                EvaluationContext(user_id="user-1", attributes=attrs5)
            samples["context"].append((time.perf_counter_ns() - start) / 2000)
    finally:
        gc.enable()
    results = {}
    for name, values in samples.items():
        median = statistics.median(values)
        row: dict[str, Any] = {
            "median_ns": round(median, 1),
            "target_ns": TARGETS_NS[name],
            "met": median <= TARGETS_NS[name],
        }
        if name in base_samples:
            base_ns = statistics.median(base_samples[name])
            row["baseline_ns"] = round(base_ns, 1)
            row["ratio_to_baseline"] = round(median / base_ns, 2)
        results[name] = row
    return {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "rounds": rounds,
        "results": results,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--json", default=str(Path(__file__).with_name("results_evaluation.json")))
    args = parser.parse_args()
    report = run(args.rounds)
    print(
        f"{'scenario':<10}{'phaseflag ns':>14}{'dict+if ns':>12}{'ratio':>8}{'target ns':>11}  met"
    )
    for name, row in report["results"].items():
        print(
            f"{name:<10}{row['median_ns']:>14.0f}{row.get('baseline_ns', float('nan')):>12.0f}"
            f"{row.get('ratio_to_baseline') or float('nan'):>8.2f}{row['target_ns']:>11}  "
            f"{'yes' if row['met'] else 'NO'}"
        )
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
