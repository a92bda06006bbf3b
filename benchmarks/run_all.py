"""Run every benchmark (each in its own process) and print one table of targets.

Run: ``python benchmarks/run_all.py [--quick]``. Writes ``benchmarks/results.json`` with
every target, whether it was met, each benchmark's full report and the machine's load
(other processes on a 2-core machine move the numbers). Takes several minutes on a quiet
machine (the peers' load row the longest); ``--quick`` shortens the long runs (fewer
rounds, 200,000 events). The load row comes from compare_peers.py (bench_load.py's
``load_row()``, in the same run as the reads). A benchmark that cannot run here (bench_fleet
without redis-server: exit status 3) is listed as skipped with its reason.
Exit status: 0 all targets met, 1 a target missed, 2 a benchmark failed or saw a wrong
result. Peers come from ``pip install -r benchmarks/requirements-peers.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import SKIPPED, machine_info, write_report

HERE = Path(__file__).resolve().parent

# (script, its results file, arguments with --quick)
BENCHMARKS: list[tuple[str, str, list[str]]] = [
    ("bench_evaluation.py", "results_evaluation.json", ["--rounds", "10"]),
    ("bench_against.py", "results_against.json", ["--rounds", "3"]),
    ("bench_hooks.py", "results_hooks.json", ["--rounds", "5"]),
    ("compare_peers.py", "results_peers.json", ["--rounds", "5", "--load-rounds", "1"]),
    ("bench_scale.py", "results_scale.json", ["--builds", "2"]),
    ("bench_prefork.py", "results_prefork.json", []),
    ("bench_threads.py", "results_threads.json", ["--seconds", "0.5"]),
    ("bench_regex.py", "results_regex.json", ["--reads", "500"]),
    ("bench_fleet.py", "results_fleet.json", ["--sizes", "1,10", "--changes", "3"]),
    ("bench_events.py", "results_events.json", ["--events", "200000"]),
    ("bench_startup.py", "results_startup.json", ["--runs", "5"]),
    ("soak.py", "results_soak.json", ["--seconds", "20"]),
]


def targets_of(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's targets; bench_evaluation predates the shared ``targets`` list."""
    if "targets" in report:
        return list(report["targets"])
    return [
        {
            "name": f"read {name}" if name != "context" else "build an EvaluationContext",
            "measured": row["median_ns"],
            "unit": "ns",
            "target": f"<= {row['target_ns']}",
            "met": row["met"],
        }
        for name, row in report["results"].items()
    ]


def run_one(script: str, results: str, args: list[str]) -> dict[str, Any]:
    """Run one benchmark; its report lands in its usual ``benchmarks/results_*.json``."""
    out = HERE / results
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(HERE / script), *args, "--json", str(out)],
        cwd=HERE.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.perf_counter() - start
    entry: dict[str, Any] = {"script": script, "exit": proc.returncode, "seconds": seconds}
    last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
    entry["targets"] = []
    if proc.returncode in (0, 1) and out.exists():
        entry["report"] = json.loads(out.read_text())
        entry["targets"] = targets_of(entry["report"])
    elif proc.returncode == SKIPPED:
        entry["skipped"] = last
    else:
        entry["error"] = last
    return entry


def _measured(t: dict[str, Any]) -> str:
    value = t["measured"]
    if value is None:
        return "n/a"
    text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return f"{text} {t['unit']}".strip()


def table(entries: list[dict[str, Any]]) -> str:
    rows = [("benchmark", "target", "measured", "wanted", "met")]
    for e in entries:
        name = e["script"].removesuffix(".py")
        if "error" in e:
            rows.append((name, f"FAILED (exit {e['exit']}): see below", "", "", "NO"))
        if "skipped" in e:
            rows.append((name, e["skipped"], "", "", "-"))
        for t in e["targets"]:
            rows.append(
                (
                    name,
                    t["name"],
                    _measured(t),
                    t["target"],
                    "yes" if t["met"] else "NO",
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (smoke test)")
    parser.add_argument("--json", default=str(HERE / "results.json"))
    args = parser.parse_args()
    load_before = os.getloadavg()
    began = time.perf_counter()
    entries = []
    for script, results, quick in BENCHMARKS:
        print(f"running {script} ...", file=sys.stderr, flush=True)
        entry = run_one(script, results, quick if args.quick else [])
        print(f"  {entry['seconds']:.0f} s, exit {entry['exit']}", file=sys.stderr, flush=True)
        entries.append(entry)
    every = [t for e in entries for t in e["targets"]]
    failed = [e["script"] for e in entries if "error" in e]
    skipped = [e["script"] for e in entries if "skipped" in e]
    missed = [t["name"] for t in every if not t["met"]]
    print(table(entries))
    for e in entries:
        if "error" in e:
            print(f"{e['script']} failed: {e['error']}")
    peers = next((e for e in entries if e["script"] == "compare_peers.py"), {})
    for name, info in peers.get("report", {}).get("peers", {}).items():
        if info["status"] != "ok":
            print(f"peer {name} skipped: {info['reason']}")
    load_after = os.getloadavg()
    print(
        f"\n{len(every) - len(missed)} of {len(every)} targets met"
        + (f"; {len(failed)} benchmark(s) failed: {', '.join(failed)}" if failed else "")
        + (f"; skipped: {', '.join(skipped)}" if skipped else "")
        + f"; {time.perf_counter() - began:.0f} s; load average {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after ({os.cpu_count()} CPUs)"
    )
    summary = {
        **machine_info(),
        "quick": args.quick,
        "seconds": round(time.perf_counter() - began, 1),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "all_met": not missed and not failed,
        "targets": [{"benchmark": e["script"], **t} for e in entries for t in e["targets"]],
        "failed": {e["script"]: e["error"] for e in entries if "error" in e},
        "skipped": {e["script"]: e["skipped"] for e in entries if "skipped" in e},
        "reports": {e["script"]: e.get("report") for e in entries},
    }
    write_report(summary, args.json)
    if failed:
        return 2
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
