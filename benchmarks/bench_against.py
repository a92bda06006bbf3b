"""S1-S4 reads of this checkout against an earlier commit's, in one interleaved run.

Run: ``python benchmarks/bench_against.py [REV] [--rounds N] [--json PATH]`` (default REV:
the commit before evaluation hooks landed, so the rows show what hooks, scopes and the
other read-path changes since then cost a client that uses none of them). The earlier
``phaseflag`` package is taken with ``git archive`` into a temporary folder; each side
runs in its own fresh interpreter, the two alternating round by round so that drift on a
noisy machine affects both alike. Each child checks its answers against the hand-written
baseline first. Target: every row no slower than the earlier commit, within 5%.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

from _common import at_most, finish, machine_info, parse_args, print_targets

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: The last commit before evaluation hooks and request scopes (issue 13) were added.
BEFORE_HOOKS = "3658b49"
SCENARIOS = ("S1", "S2", "S3", "S4")

# One side's measurement: imports whichever phaseflag is first on sys.path.
_CHILD = r"""
import json, statistics, sys, time, gc
sys.path.insert(0, sys.argv[1])
import bench_evaluation as be
from phaseflag import PhaseFlagClient
client = PhaseFlagClient(base_url="", api_key="", bootstrap=be.build_ruleset())
ctxs, plain = be.make_contexts()
paid = [i for i in range(be.N_CONTEXTS) if plain[i]["plan"] == "pro"]
rows = {
    "S1": (client.get_boolean_value, "s1", False, be.base_s1, range(2000)),
    "S2": (client.get_boolean_value, "s2", False, be.base_s2, range(2000)),
    "S3": (client.get_boolean_value, "s3", False, be.base_s3, range(2000)),
    "S4": (client.get_string_value, "s4", "x", be.base_s4, paid[:2000]),
}
out = {}
for name, (get, key, default, base, indices) in rows.items():
    batch = [ctxs[i] for i in indices]
    for i in indices:
        if get(key, default, ctxs[i]) != base(plain[i]):
            sys.exit(f"{name}: wrong answer for {plain[i]}")
    gc.disable()
    samples = []
    for _ in range(int(sys.argv[2])):
        start = time.perf_counter_ns()
        for c in batch:
            get(key, default, c)
        samples.append((time.perf_counter_ns() - start) / len(batch))
    gc.enable()
    out[name] = statistics.median(samples)
print(json.dumps(out))
"""


def _extract(rev: str, into: Path) -> str:
    """The ``phaseflag`` package at ``rev``, unpacked into ``into``; returns the full hash."""
    full = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", rev], capture_output=True, text=True, check=True
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", full, "phaseflag"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return full


def _side(package_root: Path, samples: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(package_root), str(samples)],
        capture_output=True,
        text=True,
        env=env,
        cwd=HERE,
        timeout=600,
    )
    if done.returncode != 0:
        raise SystemExit(f"child for {package_root} failed: {done.stderr.strip()[-500:]}")
    rows: dict[str, float] = json.loads(done.stdout)
    return rows


def run(rev: str, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="phaseflag-before-") as tmp:
        full = _extract(rev, Path(tmp))
        sides: dict[str, dict[str, list[float]]] = {
            "before": {name: [] for name in SCENARIOS},
            "now": {name: [] for name in SCENARIOS},
        }
        for _ in range(rounds):  # alternating fresh interpreters
            for side, root in (("before", Path(tmp)), ("now", ROOT)):
                for name, ns in _side(root, 15).items():
                    sides[side][name].append(ns)
    results: dict[str, Any] = {}
    for name in SCENARIOS:
        before = statistics.median(sides["before"][name])
        now = statistics.median(sides["now"][name])
        spread = max(sides["before"][name]) / min(sides["before"][name])
        results[name] = {
            "before_ns": round(before, 1),
            "now_ns": round(now, 1),
            "ratio_now_to_before": round(now / before, 3),
            "before_spread": round(spread, 3),
        }
    targets = [
        at_most(f"{name} now / before", row["ratio_now_to_before"], "x", 1.05, digits=3)
        for name, row in results.items()
    ]
    return {
        **machine_info(),
        "against": rev,
        "against_commit": full,
        "rounds": rounds,
        "results": results,
        "targets": targets,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("rev", nargs="?", default=BEFORE_HOOKS)
    parser.add_argument("--rounds", type=int, default=5)
    args = parse_args(parser, "results_against.json")
    report = run(args.rev, args.rounds)
    print(f"against {report['against']} ({report['against_commit'][:10]})")
    print(f"{'row':<6}{'before ns':>11}{'now ns':>9}{'now/before':>12}{'spread':>8}")
    for name, row in report["results"].items():
        print(
            f"{name:<6}{row['before_ns']:>11.0f}{row['now_ns']:>9.0f}"
            f"{row['ratio_now_to_before']:>12.2f}{row['before_spread']:>8.2f}"
        )
    print_targets(report["targets"], name_width=24, value_width=8, unit_width=3, target_width=8)
    return finish(report, args.json)


if __name__ == "__main__":
    sys.exit(main())
