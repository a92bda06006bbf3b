"""Pieces every benchmark script shares: wrong-result checks, RSS, target rows, the
target table, writing the JSON report, and ``main_of()``, the scripts' ``main()``.
Imported as ``_common`` (the scripts' own folder is on ``sys.path`` when they run as
``python benchmarks/<script>.py``)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

#: Exit status of a benchmark: every target met, a target missed, a wrong result seen,
#: cannot run here (a tool it needs is missing; the reason is the last line on stderr).
ALL_MET, MISSED, WRONG, SKIPPED = 0, 1, 2, 3


class WrongResult(AssertionError):
    """The benchmark saw a wrong answer; its numbers would mean nothing."""


class Skip(Exception):
    """The benchmark cannot run on this machine; the message says why."""


def expect(condition: bool, message: str) -> None:
    """Raise WrongResult(``message``) unless ``condition`` holds."""
    if not condition:
        raise WrongResult(message)


def wrong_result(exc: WrongResult) -> int:
    """Report ``exc`` on stderr; returns the exit status for a wrong result (2)."""
    print(f"WRONG RESULT: {exc}", file=sys.stderr)
    return WRONG


def rss_bytes() -> int:
    """Resident set size now (Linux /proc), in bytes; raises OSError without /proc and
    RuntimeError when it has no VmRSS line."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def rss_mb() -> float:
    """Resident set size now, in MB (/proc on Linux; peak RSS elsewhere)."""
    try:
        return rss_bytes() / 2**20
    except (OSError, RuntimeError):
        import resource  # Unix only: needed only where /proc is missing

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine_info() -> dict[str, Any]:
    """The first keys of every report: Python version, machine type and CPU count."""
    return {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }


def target(
    name: str,
    measured: float | None,
    unit: str,
    wanted: str,
    met: bool,
    *,
    digits: int | None = None,
) -> dict[str, Any]:
    """One row of a report's ``targets`` list (the keys run_all.py reads). ``measured`` is
    rounded to ``digits`` when given (``met`` is decided by the caller, on the raw value)."""
    if digits is not None and measured is not None:
        measured = round(measured, digits)
    return {"name": name, "measured": measured, "unit": unit, "target": wanted, "met": bool(met)}


def at_most(name: str, measured: float, unit: str, limit: float, *, digits: int) -> dict[str, Any]:
    """A target row met when ``measured <= limit`` (compared before rounding)."""
    return target(name, measured, unit, f"<= {limit:g}", measured <= limit, digits=digits)


def at_least(name: str, measured: float, unit: str, floor: float, *, digits: int) -> dict[str, Any]:
    """A target row met when ``measured >= floor`` (compared before rounding)."""
    return target(name, measured, unit, f">= {floor:g}", measured >= floor, digits=digits)


def print_targets(
    targets: Iterable[dict[str, Any]],
    *,
    name_width: int | None = None,
    value_width: int | None = None,
    unit_width: int | None = None,
    target_width: int | None = None,
    group_from: float | None = None,
) -> None:
    """Print the "target / measured / target / met" table after a blank line. Values are
    shown with ``g``, or as whole numbers with thousands separators from ``group_from``.
    A width left out fits the widest cell of its column."""
    rows = list(targets)

    def shown(value: float | None) -> str:
        if value is None:
            return "n/a"
        big = group_from is not None and abs(value) >= group_from
        return f"{value:,.0f}" if big else f"{value:g}"

    if name_width is None:
        name_width = max([len("target"), *(len(t["name"]) for t in rows)]) + 2
    if value_width is None:
        value_width = max([len("measured"), *(len(shown(t["measured"])) for t in rows)])
    if unit_width is None:
        unit_width = max([0, *(len(t["unit"]) + 1 for t in rows)])
    if target_width is None:
        target_width = max([len("target"), *(len(t["target"]) for t in rows)])
    print(
        f"\n{'target':<{name_width}}{'measured':>{value_width}}{'':<{unit_width}}  "
        f"{'target':<{target_width}} met"
    )
    for t in rows:
        unit = f" {t['unit']}" if t["unit"] else ""
        print(
            f"{t['name']:<{name_width}}{shown(t['measured']):>{value_width}}"
            f"{unit:<{unit_width}}  {t['target']:<{target_width}} "
            f"{'yes' if t['met'] else 'NO'}"
        )


def parse_args(parser: argparse.ArgumentParser, results: str) -> argparse.Namespace:
    """Add the ``--json PATH`` option every benchmark has (default ``benchmarks/<results>``)
    to ``parser`` and parse the command line; exits on a usage error, as argparse does."""
    parser.add_argument("--json", default=str(Path(__file__).with_name(results)))
    return parser.parse_args()


def write_report(report: dict[str, Any], path: str | Path) -> None:
    """Write ``report`` as indented JSON to ``path`` and say so on stdout."""
    Path(path).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


def finish(report: dict[str, Any], path: str | Path) -> int:
    """Write the report (see write_report); returns the exit status: 0 when every target
    in ``report["targets"]`` was met, else 1."""
    write_report(report, path)
    return ALL_MET if all(t["met"] for t in report["targets"]) else MISSED


def main_of(
    doc: str,
    results: str,
    run: Callable[..., dict[str, Any]],
    show: Callable[[dict[str, Any]], None] | None = None,
    *,
    options: Mapping[str, Any] | None = None,
) -> int:
    """A benchmark script's whole ``main()``; returns its exit status.

    Parses ``--json PATH`` (default ``benchmarks/<results>``) and ``options``: flag ->
    default (the type is the default's) or ``(default, help)``. Calls ``run`` with the
    options by name (``--swap-every`` -> ``swap_every``) for the report, whose
    ``targets`` list is printed as a table after ``show(report)``'s own lines; writes the
    JSON. Exit status 0 every target met, 1 one missed, 2 a wrong result (WrongResult),
    3 when ``run`` raised Skip (nothing written)."""
    parser = argparse.ArgumentParser(description=doc.strip().split("\n")[0])
    for flag, spec in (options or {}).items():
        default, help_text = spec if isinstance(spec, tuple) else (spec, None)
        parser.add_argument(flag, type=type(default), default=default, help=help_text)
    args = vars(parse_args(parser, results))
    path = args.pop("json")
    try:
        report = run(**args)
    except WrongResult as exc:
        return wrong_result(exc)
    except Skip as exc:
        print(f"skipped: {exc}", file=sys.stderr)
        return SKIPPED
    if show is not None:
        show(report)
    print_targets(report["targets"], group_from=10_000)
    return finish(report, path)


def realistic_ruleset(flags: int, version: int = 1) -> dict[str, Any]:
    """``flags`` realistic boolean flags ``flag-<i>``: two targeted users, and a plan rule
    serving a 25% rollout."""
    out = []
    for i in range(flags):
        rollout = [{"variation": "on", "weight": 25}, {"variation": "off", "weight": 75}]
        out.append(
            {
                "key": f"flag-{i}",
                "type": "boolean",
                "variations": [{"key": "on", "value": True}, {"key": "off", "value": False}],
                "off_variation": "off",
                "targets": [{"variation": "on", "user_ids": [f"user-{i}", "qa-1"]}],
                "rules": [
                    {
                        "id": f"rule-{i}",
                        "conditions": [
                            {"attribute": "plan", "operator": "in", "values": ["pro", "team"]}
                        ],
                        "serve": {"rollout": {"variations": rollout}},
                    }
                ],
                "default": {"variation": "off"},
            }
        )
    return {"schema_version": 1, "version": version, "flags": out}
