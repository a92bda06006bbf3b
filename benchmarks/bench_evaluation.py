"""Flag-read benchmark: S1-S4 through PhaseFlagClient vs a hand-written dict+if baseline.

Run: ``python benchmarks/bench_evaluation.py [--rounds N] [--json PATH]``. Prints a
table (median ns per read over interleaved rounds) and writes JSON. Every scenario's
answers are checked against the baseline first, so it cannot time an error path.
Rows (JSON ``results``): S1-S4 and S2c (context built per call) with ``baseline_ns``
and ``ratio_to_baseline``; ``context`` (5 attributes, ``ratio_to_s2_read``);
``S2_counted``, ``S2_uncounted`` (the same tracked flag through a client that counts
nothing) and ``counting`` (the difference); two floors, timed, not targets:
``S2_floor`` (a getter with no checks, timed beside S2, ratio to S2's dict+if) and
``empty_class`` (a constructor that stores nothing, ratio to an S2 read); ``codegen``
holds compile time and memory per flag with and without generated reads, and S4's
evaluation both ways.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import mmh3
from _common import at_most, finish, machine_info, parse_args, print_targets, target

from phaseflag import EvaluationContext, PhaseFlagClient

BOOL = [{"key": "on", "value": True}, {"key": "off", "value": False}]
N_CONTEXTS = 10_000


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


def _s2_tracked() -> dict[str, Any]:
    """S2 with ``track_events``: the same read plus one evaluation count."""
    flag = next(f for f in build_ruleset()["flags"] if f["key"] == "s2")
    return {**flag, "key": "s2t", "track_events": True}


class _Floor:
    """The least any getter with the public signature can do for S2: the flag's lookup and
    the two dict reads of its set-lookup path, with no check at all (no hooks argument,
    no missing flag, no context type, no exception guard). Its ratio to dict+if is the
    floor a real getter cannot go under; it is timed, not a target."""

    def __init__(self, table: dict[str, Any]) -> None:
        self._table = table

    def get(self, flag_key: str, default: bool, context: Any = None, hooks: Any = None) -> Any:
        flag = self._table.get(flag_key)
        return flag.bool_lookup.get(context._values.get(flag.lookup_attr), flag.lookup_miss)


class _EmptyContext:
    """A class that stores nothing, called like the context row: the floor of any
    constructor written in Python."""

    __slots__ = ("_session_id", "_user_id", "_values")

    def __init__(
        self, user_id: str | None = None, session_id: str | None = None, attributes: Any = None
    ) -> None:
        pass


def _median_ns(samples: list[float]) -> float:
    return round(statistics.median(samples), 1)


def codegen_cost(n_flags: int = 1000) -> dict[str, Any]:
    """Compile time and memory per flag with generated reads and without (interpreter only),
    over ``n_flags`` S4-like flags with distinct constants; and S4's read both ways."""
    import tracemalloc

    import phaseflag._compile_flag as compile_module
    from phaseflag._codegen import shapes
    from phaseflag._compile import compile_ruleset
    from phaseflag._evaluation import evaluate_flag

    base = build_ruleset()["flags"][3]
    flags = []
    for i in range(n_flags):
        flag = json.loads(json.dumps(base))
        flag["key"] = f"s4-{i}"
        flag["rules"][0]["conditions"][1]["values"] = [10 + i]
        flags.append(flag)
    document = {"schema_version": 1, "version": 1, "flags": flags}
    out: dict[str, Any] = {"flags": n_flags}
    real_generate = compile_module.generate
    for mode in ("interpreter", "generated"):
        compile_module.generate = real_generate if mode == "generated" else (lambda flag: None)
        try:
            compile_ruleset(document)  # warm: shapes compiled, caches filled
            times = []
            for _ in range(3):
                start = time.perf_counter()
                compile_ruleset(document)
                times.append(time.perf_counter() - start)
            seconds = min(times)
            gc.collect()
            tracemalloc.start()  # memory apart: tracing slows compiling several times
            before = tracemalloc.get_traced_memory()[0]
            compiled = compile_ruleset(document)
            after = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
        finally:
            compile_module.generate = real_generate
        out[mode] = {
            "compile_us_per_flag": round(seconds / n_flags * 1e6, 1),
            "bytes_per_flag": round((after - before) / n_flags),
        }
        del compiled
    out["generated_extra_bytes_per_flag"] = (
        out["generated"]["bytes_per_flag"] - out["interpreter"]["bytes_per_flag"]
    )
    out["shapes"] = len(shapes())
    # S4's evaluation alone: the generated read against the interpreter.
    compiled = compile_ruleset(build_ruleset())
    flag = compiled.flags["s4"]
    interpreted = dataclasses.replace(flag, run=None)
    values = EvaluationContext(
        "user-1", attributes={"plan": "pro", "account_age": 40, "app_version": "0.9.0"}
    )._values
    timings = {}
    for name, chosen in (("generated", flag), ("interpreter", interpreted)):
        best = []
        for _ in range(7):
            start = time.perf_counter_ns()
            for _ in range(2000):
                evaluate_flag(chosen, values, compiled)
            best.append((time.perf_counter_ns() - start) / 2000)
        timings[name] = _median_ns(best)
    out["s4_evaluate_ns"] = timings
    return out


def run(rounds: int) -> dict[str, Any]:
    document = build_ruleset()
    document["flags"].append(_s2_tracked())
    client = PhaseFlagClient(base_url="", api_key="", bootstrap=document)
    # Never started: an EventProcessor exists (counting on) but no thread, no request.
    counting = PhaseFlagClient(base_url="http://127.0.0.1:9", api_key="bench", bootstrap=document)
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
    count_s2, get_s2t = counting.get_boolean_value, client.get_boolean_value
    for i in range(100):
        if count_s2("s2t", False, ctxs[i]) != base_s2(plain[i]):
            raise SystemExit("s2t: phaseflag and baseline disagree")
    # S2c: the request's data -> a context -> the read, per call (ids apart, as a request has).
    requests = [(p["user_id"], {k: v for k, v in p.items() if k != "user_id"}) for p in plain]

    def s2c(batch: list[tuple[str, dict[str, Any]]]) -> None:
        get = client.get_boolean_value
        for user_id, attrs in batch:
            get("s2", False, EvaluationContext(user_id, None, attrs))

    def s2c_base(batch: list[tuple[str, dict[str, Any]]]) -> None:
        for user_id, attrs in batch:
            base_s2({"user_id": user_id, **attrs})

    samples: dict[str, list[float]] = {
        name: [] for name in [*getters, "S2c", "S2_counted", "S2_uncounted", "context", "S2_floor"]
    }
    samples["empty_class"] = []
    base_samples: dict[str, list[float]] = {name: [] for name in [*getters, "S2c"]}
    floor = _Floor(client._table).get
    if any(floor("s2", False, c) != base_s2(p) for c, p in zip(ctxs, plain, strict=True)):
        raise SystemExit("the S2 floor and the baseline disagree")
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
                if name == "S2":  # the floor, beside the read it bounds and its baseline
                    start = time.perf_counter_ns()
                    for c in c_list:
                        floor(key, default, c)
                    samples["S2_floor"].append((time.perf_counter_ns() - start) / len(c_list))
                start = time.perf_counter_ns()
                for p in p_list:
                    base(p)
                base_samples[name].append((time.perf_counter_ns() - start) / len(p_list))
            c_list = ctxs[:2000]
            start = time.perf_counter_ns()
            for c in c_list:
                count_s2("s2t", False, c)
            samples["S2_counted"].append((time.perf_counter_ns() - start) / len(c_list))
            start = time.perf_counter_ns()
            for c in c_list:  # the same flag and read path, through the client that counts nothing
                get_s2t("s2t", False, c)
            samples["S2_uncounted"].append((time.perf_counter_ns() - start) / len(c_list))
            batch = requests[:2000]
            start = time.perf_counter_ns()
            s2c(batch)
            samples["S2c"].append((time.perf_counter_ns() - start) / len(batch))
            start = time.perf_counter_ns()
            s2c_base(batch)
            base_samples["S2c"].append((time.perf_counter_ns() - start) / len(batch))
            start = time.perf_counter_ns()
            for _ in range(2000):
                EvaluationContext(user_id="user-1", attributes=attrs5)
            samples["context"].append((time.perf_counter_ns() - start) / 2000)
            start = time.perf_counter_ns()
            for _ in range(2000):
                _EmptyContext(user_id="user-1", attributes=attrs5)
            samples["empty_class"].append((time.perf_counter_ns() - start) / 2000)
    finally:
        gc.enable()
    results: dict[str, Any] = {}
    for name, values in samples.items():
        row: dict[str, Any] = {"median_ns": _median_ns(values)}
        if name in base_samples:
            row["baseline_ns"] = _median_ns(base_samples[name])
            row["ratio_to_baseline"] = round(row["median_ns"] / row["baseline_ns"], 2)
        results[name] = row
    s2 = results["S2"]["median_ns"]
    results["context"]["ratio_to_s2_read"] = round(results["context"]["median_ns"] / s2, 2)
    results["S2_floor"]["ratio_to_baseline"] = round(
        results["S2_floor"]["median_ns"] / results["S2"]["baseline_ns"], 2
    )
    empty = results["empty_class"]
    empty["ratio_to_s2_read"] = round(empty["median_ns"] / s2, 2)
    uncounted = results["S2_uncounted"]["median_ns"]
    results["counting"] = {"median_ns": round(results["S2_counted"]["median_ns"] - uncounted, 1)}
    codegen = codegen_cost()
    targets = [
        at_most(f"{name} read / dict+if", results[name]["ratio_to_baseline"], "x", 2.0, digits=2)
        for name in ("S1", "S2", "S3")
    ]
    s4_ratio = results["S4"]["ratio_to_baseline"]
    targets.append(target("S4 read / dict+if", s4_ratio, "x", "< 1", s4_ratio < 1))
    targets.append(
        at_most(
            "build a 5-attribute context / S2 read",
            results["context"]["ratio_to_s2_read"],
            "x",
            1.0,
            digits=2,
        )
    )
    targets.append(
        at_most("evaluation counting", results["counting"]["median_ns"], "ns", 50, digits=1)
    )
    return {
        **machine_info(),
        "rounds": rounds,
        "results": results,
        "codegen": codegen,
        "targets": targets,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=25)
    args = parse_args(parser, "results_evaluation.json")
    report = run(args.rounds)
    print(f"{'row':<12}{'phaseflag ns':>14}{'dict+if ns':>12}{'ratio':>8}")
    for name, row in report["results"].items():
        print(
            f"{name:<12}{row['median_ns']:>14.0f}{row.get('baseline_ns', float('nan')):>12.0f}"
            f"{row.get('ratio_to_baseline') or float('nan'):>8.2f}"
        )
    codegen = report["codegen"]
    print(
        f"\ncodegen over {codegen['flags']} S4-like flags ({codegen['shapes']} shapes compiled): "
        f"compile {codegen['interpreter']['compile_us_per_flag']} -> "
        f"{codegen['generated']['compile_us_per_flag']} us/flag, memory "
        f"{codegen['interpreter']['bytes_per_flag']} -> {codegen['generated']['bytes_per_flag']}"
        f" B/flag; S4 evaluate {codegen['s4_evaluate_ns']['interpreter']} -> "
        f"{codegen['s4_evaluate_ns']['generated']} ns"
    )
    print_targets(report["targets"], name_width=40, value_width=8, unit_width=3, target_width=8)
    return finish(report, args.json)


if __name__ == "__main__":
    sys.exit(main())
