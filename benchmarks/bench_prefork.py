"""Prefork memory: a preloaded master with 10,000 flags forks 4 workers; total PSS.

Run: ``python benchmarks/bench_prefork.py [--flags 10000] [--workers 4] [--json PATH]``.
A master process (as under ``gunicorn --preload`` or Celery's prefork pool) starts a
client on a 10,000-flag bootstrap file, then forks the workers with ``os.fork()``.
Each worker reads ``--reads`` flags (100, spread over the ruleset, as serving an
app would), runs two full ``gc.collect()`` passes (what eventually happens in any
long-lived worker), and reports ready; the master then reads every worker's
``/proc/PID/smaps_rollup``.
Run as shipped (the fork hook calls ``gc.freeze()`` before the fork), with that hook
turned off to show what it saves, and with every flag read in every worker, both
as shipped and with the master compiling every flag first (reported, not targets). The target:
the 4 workers' total PSS under 1.5x the RSS of one worker. Exit 1 when missed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import machine_info, main_of, target

HERE = Path(__file__).resolve().parent
TARGET_RATIO = 1.5

_MASTER = r"""
import gc, json, os, sys
sys.path.insert(0, sys.argv[4])
import phaseflag
import phaseflag._process as process
from phaseflag import EvaluationContext, PhaseFlagClient

path, workers, share = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "share"
reads = int(sys.argv[5])
process.share_with_children = share
client = PhaseFlagClient(base_url="", api_key="", bootstrap_file=path, offline_mode=True)
client.start()
if sys.argv[6] == "compile":
    client.ruleset.flags.compile_all()
keys = list(client.ruleset.flags)
ctx = EvaluationContext(user_id="u-1", attributes={"plan": "pro", "account_age": 31,
                                                    "app_version": "9.1.0"})


def rollup(pid):
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[-1] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return out


children = []
for _ in range(workers):
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(done_w)
        get_b, get_s = client.get_boolean_value, client.get_string_value
        for key in keys[:: max(1, len(keys) // reads)] if reads else ():
            get_b(key, False, ctx) if key[-1] not in "37" else get_s(key, "x", ctx)
        gc.collect()
        gc.collect()
        os.write(ready_w, b"1")
        os.read(done_r, 1)
        os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    children.append((pid, ready_r, done_w))
for pid, ready_r, _ in children:
    assert os.read(ready_r, 1) == b"1"
stats = [rollup(pid) for pid, _, _ in children]
master = rollup(os.getpid())
for pid, _, done_w in children:
    os.write(done_w, b"1")
    os.waitpid(pid, 0)
print(json.dumps({"workers": stats, "master": master, "flags": len(keys)}))
client.stop()
"""


def measure(
    path: str, workers: int, share: bool, reads: int, *, compile_first: bool = False
) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", _MASTER, path, str(workers), "share" if share else "off",
         str(HERE), str(reads), "compile" if compile_first else "lazy"],
        capture_output=True,
        text=True,
        timeout=600,
        env={"PYTHONPATH": str(HERE.parent), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    pss = sum(w["Pss"] for w in data["workers"]) / 2**20
    rss = max(w["Rss"] for w in data["workers"]) / 2**20
    return {
        "total_pss_mb": pss,
        "one_worker_rss_mb": rss,
        "ratio": pss / rss,
        "master_rss_mb": data["master"]["Rss"] / 2**20,
        "worker_private_mb": [
            (w.get("Private_Dirty", 0) + w.get("Private_Clean", 0)) / 2**20 for w in data["workers"]
        ],
        "flags": data["flags"],
    }


def run(flags: int, workers: int, reads: int) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    from bench_load import phaseflag_doc

    with tempfile.TemporaryDirectory() as workdir:
        path = str(Path(workdir, "flags.json"))
        Path(path).write_text(json.dumps(phaseflag_doc(flags)), "utf-8")
        shared = measure(path, workers, True, reads)
        control = measure(path, workers, False, reads)
        every = measure(path, workers, True, flags)
        every_compiled = measure(path, workers, True, flags, compile_first=True)
    targets = [
        target(
            f"{workers} workers' PSS / one worker's RSS",
            round(shared["ratio"], 3),
            "x",
            f"< {TARGET_RATIO:g}",
            shared["ratio"] < TARGET_RATIO,
        )
    ]
    return {
        **machine_info(),
        "flags": flags,
        "workers": workers,
        "reads": reads,
        "shared": shared,
        "control": control,
        "all_flags_read": every,
        "all_flags_read_master_compiled": every_compiled,
        "targets": targets,
    }


def show(report: dict[str, Any]) -> None:
    print(
        f"{report['flags']:,} flags, {report['workers']} forked workers, each reads "
        f"{report['reads']} + 2 gc"
    )
    print(f"{'':<26}{'total PSS MB':>13}{'1 worker RSS':>14}{'ratio':>8}")
    rows = (
        ("fork hook (as shipped)", "shared"),
        ("hook off (control)", "control"),
        ("as shipped, all flags read", "all_flags_read"),
        ("all read, master compiled", "all_flags_read_master_compiled"),
    )
    for label, key in rows:
        row = report[key]
        print(
            f"{label:<26}{row['total_pss_mb']:>13.1f}{row['one_worker_rss_mb']:>14.1f}"
            f"{row['ratio']:>8.2f}"
        )


def main() -> int:
    options = {"--flags": 10_000, "--workers": 4, "--reads": (100, "flags each worker reads")}
    return main_of(__doc__, "results_prefork.json", run, show, options=options)


if __name__ == "__main__":
    sys.exit(main())
