"""Threads: read throughput with 1, 2 and 8 threads, and 1,000 ruleset swaps under reads
with no error and no read mixing two ruleset versions.

Run: ``python benchmarks/bench_threads.py [--seconds 1.0] [--swaps 1000] [--json PATH]``.
Prints a table and writes JSON; exit status 1 when a target is missed, 2 when a result
is wrong. CPython runs one thread's bytecode at a time (the GIL), so total reads/s
cannot grow with threads; the target is that it does not collapse either (no lock).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import bench_evaluation as scen
from _common import at_least, expect, machine_info, main_of, target

from phaseflag import EvaluationContext, PhaseFlagClient, Ruleset, compile_ruleset, evaluate

THREADS = (1, 2, 8)
SCALING_FLOOR = 0.8  # total reads/s with 8 threads >= 80% of 1 thread's
SWITCH_INTERVAL = 20e-6  # seconds; CPython's default is 5 ms
STALE = "stale"  # the child's off variation: served only when its prerequisite fails


# -- read throughput ------------------------------------------------------------------------


def measure_throughput(seconds: float) -> dict[str, Any]:
    """Threads read S1-S4 in turn for ``seconds``; every answer is checked."""
    client = PhaseFlagClient(base_url="", api_key="", bootstrap=scen.build_ruleset())
    ctxs, plain = scen.make_contexts()
    paid = [i for i in range(len(ctxs)) if plain[i]["plan"] == "pro"][:500]
    work: list[tuple[Callable[..., Any], str, Any, EvaluationContext, Any]] = []
    for i in paid:
        p, c = plain[i], ctxs[i]
        work.append((client.get_boolean_value, "s1", False, c, scen.base_s1(p)))
        work.append((client.get_boolean_value, "s2", False, c, scen.base_s2(p)))
        work.append((client.get_boolean_value, "s3", False, c, scen.base_s3(p)))
        work.append((client.get_string_value, "s4", "x", c, scen.base_s4(p)))
        q, d = plain[i - 1], ctxs[i - 1]  # a free-plan user too
        work.append((client.get_boolean_value, "s2", False, d, scen.base_s2(q)))
    rows = []
    for n in THREADS:
        rows.append({"threads": n, **_read_in_threads(n, work, seconds)})
    return {"rows": rows, "reads_per_pass": len(work)}


def _read_in_threads(n: int, work: list[Any], seconds: float) -> dict[str, Any]:
    counts, wrong = [0] * n, [0] * n
    start_line = threading.Barrier(n + 1)
    stop = threading.Event()

    def reader(slot: int) -> None:
        done = bad = 0
        start_line.wait()
        while not stop.is_set():
            for get, key, default, ctx, want in work:
                if get(key, default, ctx) != want:
                    bad += 1
            done += len(work)
        counts[slot], wrong[slot] = done, bad

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    start_line.wait()
    began = time.perf_counter()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    expect(not sum(wrong), f"{sum(wrong)} wrong reads with {n} threads")
    return {"reads": sum(counts), "reads_per_s": sum(counts) / elapsed}


# -- swaps under reads ----------------------------------------------------------------------


def pair_ruleset(version: int) -> dict[str, Any]:
    """A parent and a child flag that both serve ``v<version>``; the child requires the
    parent's ``v<version>``, so evaluating the child against any other version's parent
    serves ``stale``. Filler flags make each swap a realistic size."""

    def string_flag(key: str, variations: list[str], **extra: Any) -> dict[str, Any]:
        return {
            "key": key,
            "type": "string",
            "variations": [{"key": v, "value": v} for v in variations],
            "default": {"variation": variations[0]},
            **extra,
        }

    tag = f"v{version}"
    flags = [
        string_flag("parent", [tag]),
        string_flag(
            "child",
            [tag, STALE],
            off_variation=STALE,
            prerequisites=[{"flag": "parent", "variation": tag}],
        ),
    ]
    flags += [string_flag(f"filler-{i}", [f"f{i}"]) for i in range(50)]
    return {"schema_version": 1, "version": version, "flags": flags}


def check_detector() -> None:
    """Negative control: a child evaluated against another version's parent must show."""
    v1, v2 = compile_ruleset(pair_ruleset(1)), compile_ruleset(pair_ruleset(2))
    mixed = Ruleset(
        version=2, flags={"parent": v2.flags["parent"], "child": v1.flags["child"]}, segments={}
    )
    expect(
        evaluate(mixed, "child").value == STALE,
        "the mixed-version detector does not detect a mixed read",
    )
    expect(
        evaluate(v1, "child").value == "v1" and evaluate(v2, "child").value == "v2",
        "the flag pair does not serve its own version",
    )


def measure_swaps(swaps: int, readers: int = 2) -> dict[str, Any]:
    """``readers`` threads read the child flag (and details) while the main thread applies
    ``swaps`` rulesets. Every read must be an error-free ``v<n>``, never ``stale``, and
    each thread's versions must never go backwards."""
    check_detector()
    client = PhaseFlagClient(base_url="", api_key="", bootstrap=pair_ruleset(0))
    raws = [json.dumps(pair_ruleset(v)).encode() for v in range(1, swaps + 1)]
    ctx = EvaluationContext(user_id="user-1")
    stop = threading.Event()
    started = threading.Barrier(readers + 1)
    stats = [{"reads": 0, "errors": 0, "mixed": 0, "backwards": 0, "versions": 0}]
    stats += [dict(stats[0]) for _ in range(readers - 1)]

    def reader(slot: int) -> None:
        s = stats[slot]
        last, seen = -1, set()
        get, details = client.get_string_value, client.get_variation
        started.wait()
        while True:
            finished = stop.is_set()  # read once more after the last swap
            for _ in range(50):
                value = get("child", "ERROR", ctx)
                result = details("child", ctx)
                s["reads"] += 2
                for v in (value, None if result is None else result.value):
                    if v == "ERROR" or v is None or (result is not None and result.error_code):
                        s["errors"] += 1
                    elif v == STALE:
                        s["mixed"] += 1
                    else:
                        version = int(v[1:])
                        if version < last:
                            s["backwards"] += 1
                        last = version
                        seen.add(version)
            if finished:
                break
        s["versions"] = len(seen)
        s["last"] = last

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(readers)]
    for t in threads:
        t.start()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)  # hand the GIL over often: more interleavings
    try:
        started.wait()
        began = time.perf_counter()
        for raw in raws:
            client._store.apply_document(raw, "live")
            time.sleep(0)  # release the GIL: readers run between most swaps
        elapsed = time.perf_counter() - began
        stop.set()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    total = {k: sum(s[k] for s in stats) for k in ("reads", "errors", "mixed", "backwards")}
    expect(
        all(s["last"] == swaps for s in stats), f"a reader did not see the last version: {stats}"
    )
    expect(
        client.get_string_value("child", "ERROR", ctx) == f"v{swaps}",
        "the last ruleset is not being served",
    )
    return {
        "swaps": swaps,
        "readers": readers,
        "seconds": elapsed,
        "swaps_per_s": swaps / elapsed,
        **total,
        "versions_seen_per_reader": [s["versions"] for s in stats],
        "switch_interval_s": SWITCH_INTERVAL,
    }


def run(seconds: float, swaps: int) -> dict[str, Any]:
    throughput = measure_throughput(seconds)
    swap = measure_swaps(swaps)
    one = throughput["rows"][0]["reads_per_s"]
    eight = throughput["rows"][-1]["reads_per_s"]
    errors, mixed = swap["errors"], swap["mixed"] + swap["backwards"]
    targets = [
        at_least("8-thread reads/s vs 1 thread", eight / one, "x", SCALING_FLOOR, digits=3),
        target(f"{swaps} swaps under reads: errors", errors, "", "== 0", errors == 0),
        target(f"{swaps} swaps under reads: mixed/backwards", mixed, "", "== 0", mixed == 0),
    ]
    return {
        **machine_info(),
        "throughput": throughput,
        "swaps": swap,
        "targets": targets,
    }


def show(report: dict[str, Any]) -> None:
    print(f"{'threads':>8}{'reads':>12}{'reads/s':>14}   (S1-S4 mixed, every answer checked)")
    for row in report["throughput"]["rows"]:
        print(f"{row['threads']:>8}{row['reads']:>12,}{row['reads_per_s']:>14,.0f}")
    s = report["swaps"]
    print(
        f"\n{s['swaps']} swaps in {s['seconds']:.2f} s ({s['swaps_per_s']:,.0f}/s) under "
        f"{s['readers']} reader threads: {s['reads']:,} reads, {s['errors']} errors, "
        f"{s['mixed']} mixed-version, {s['backwards']} backwards; versions seen per "
        f"reader {s['versions_seen_per_reader']}"
    )


def main() -> int:
    options = {"--seconds": (1.5, "per thread count"), "--swaps": 1000}
    return main_of(__doc__, "results_threads.json", run, show, options=options)


if __name__ == "__main__":
    sys.exit(main())
