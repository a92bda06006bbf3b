"""Start-up: ``import phaseflag`` in a fresh interpreter, and a client built from a
1,000-flag bootstrap file until it is ready.

Run: ``python benchmarks/bench_startup.py [--runs 9] [--json PATH]``. Every number comes
from fresh subprocesses (median of ``--runs``). The import is timed with
``python -X importtime`` (phaseflag's cumulative line); optional extras must not be
imported. Prints a table and writes JSON; exit status 1 when a target is missed, 2 when
a result is wrong.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import at_most, expect, machine_info, main_of, realistic_ruleset

ROOT = Path(__file__).resolve().parents[1]
TARGET_IMPORT_MS = 150.0
TARGET_READY_S = 0.3
BOOTSTRAP_FLAGS = 1000
NOT_IMPORTED = ("openfeature", "fastapi", "flask")  # optional extras
REPORTED = ("requests", "jsonschema", "urllib3", "phaseflag.server", "phaseflag.openfeature")

READY_CODE = """
import json, sys, time
started = time.perf_counter()
from phaseflag import EvaluationContext, PhaseFlagClient
imported = time.perf_counter()
client = PhaseFlagClient(base_url="", api_key="", bootstrap_file=sys.argv[1])
client.start()
ready = client.wait_until_ready(0)
done = time.perf_counter()
qa = EvaluationContext(user_id="qa-1", attributes={"plan": "free"})
free = EvaluationContext(user_id="someone", attributes={"plan": "free"})
values = [client.get_boolean_value(f"flag-{i}", False, ctx) for i in (0, 999) for ctx in (qa, free)]
client.stop()
print(json.dumps({"import_s": imported - started, "ready_s": done - imported, "ready": ready,
                  "flags": len(client.ruleset), "values": values}))
"""


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )


def import_time_ms() -> tuple[float, list[tuple[float, str]]]:
    """phaseflag's cumulative import time (ms) in a fresh interpreter, and the packages
    it pulls in that cost most, as (cumulative ms, package); they overlap (requests
    includes urllib3)."""
    err = _python("-X", "importtime", "-c", "import phaseflag").stderr
    rows = []
    for line in err.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|")
        if cumulative.strip().isdigit():
            rows.append((int(cumulative) / 1000, name.rstrip()))
    end = max(k for k, (_, name) in enumerate(rows) if name.strip() == "phaseflag")
    total = rows[end][0]
    # Nested imports print before their parent, indented: phaseflag's own are the lines
    # after the previous top-level (unindented) one, such as site's.
    top = [k for k in range(end) if len(rows[k][1]) - len(rows[k][1].lstrip()) == 1]
    start = max(top, default=-1)
    # A package's outermost import line has its largest cumulative time.
    packages: dict[str, float] = {}
    for ms, name in rows[start + 1 : end]:
        package = name.strip().split(".")[0]
        if package != "phaseflag" and not package.startswith("_"):
            packages[package] = max(ms, packages.get(package, 0.0))
    heaviest = sorted(((ms, name) for name, ms in packages.items()), reverse=True)
    return total, heaviest[:6]


def imported_modules() -> dict[str, bool]:
    code = (
        "import json, sys, phaseflag; "
        f"print(json.dumps({{m: m in sys.modules for m in {NOT_IMPORTED + REPORTED!r}}}))"
    )
    return dict(json.loads(_python("-c", code).stdout))


def measure_import(runs: int) -> dict[str, Any]:
    times, heaviest = [], []
    for _ in range(runs):
        total, children = import_time_ms()
        times.append(total)
        heaviest.append(children)
    median = statistics.median(times)
    median_run = min(range(runs), key=lambda k: abs(times[k] - median))
    modules = imported_modules()
    extras = [m for m in NOT_IMPORTED if modules[m]]
    expect(not extras, f"import phaseflag imported optional extras: {extras}")
    return {
        "median_ms": median,
        "first_ms": times[0],
        "runs_ms": times,
        "heaviest_imports_ms": heaviest[median_run],
        "modules": modules,
    }


def measure_ready(runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as workdir:
        path = Path(workdir, "bootstrap.json")
        path.write_text(json.dumps(realistic_ruleset(BOOTSTRAP_FLAGS)), "utf-8")
        size = path.stat().st_size
        results = [json.loads(_python("-c", READY_CODE, str(path)).stdout) for _ in range(runs)]
    for r in results:
        expect(
            r["ready"] and r["flags"] == BOOTSTRAP_FLAGS, f"client not ready with every flag: {r}"
        )
        expect(
            r["values"] == [True, False, True, False],
            f"wrong values after bootstrap: {r['values']}",
        )
    ready = [r["ready_s"] for r in results]
    return {
        "median_s": statistics.median(ready),
        "runs_s": ready,
        "import_then_ready_s": statistics.median(r["import_s"] + r["ready_s"] for r in results),
        "file_bytes": size,
        "flags": BOOTSTRAP_FLAGS,
    }


def run(runs: int) -> dict[str, Any]:
    imp = measure_import(runs)
    ready = measure_ready(max(3, runs // 2))
    targets = [
        at_most(
            "import phaseflag (cold, -X importtime)",
            imp["median_ms"],
            "ms",
            TARGET_IMPORT_MS,
            digits=1,
        ),
        at_most(
            "client ready on a 1,000-flag bootstrap file",
            ready["median_s"],
            "s",
            TARGET_READY_S,
            digits=3,
        ),
    ]
    return {
        **machine_info(),
        "runs": runs,
        "import": imp,
        "ready": ready,
        "targets": targets,
    }


def show(report: dict[str, Any]) -> None:
    imp, ready = report["import"], report["ready"]
    print(
        f"import phaseflag: median {imp['median_ms']:.0f} ms over {report['runs']} fresh "
        f"interpreters (first {imp['first_ms']:.0f} ms); heaviest packages (cumulative):"
    )
    for ms, name in imp["heaviest_imports_ms"]:
        print(f"  {ms:7.1f} ms  {name}")
    loaded = [m for m, present in imp["modules"].items() if present]
    print(f"  loaded after import: {', '.join(loaded) or 'none of the tracked modules'}")
    print(
        f"client on a {ready['flags']:,}-flag bootstrap file ({ready['file_bytes'] / 1024:.0f} "
        f"KiB): ready {ready['median_s'] * 1000:.0f} ms after import (import + ready "
        f"{ready['import_then_ready_s'] * 1000:.0f} ms)"
    )


def main() -> int:
    return main_of(__doc__, "results_startup.json", run, show, options={"--runs": 9})


if __name__ == "__main__":
    sys.exit(main())
