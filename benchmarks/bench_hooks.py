"""Hooks and request scopes: what one S2 read costs with each of them.

Run: ``python benchmarks/bench_hooks.py [--rounds N] [--json PATH]``. Prints a table
(median ns per read over interleaved rounds, and the cost over a plain read) and writes
JSON; exit status 1 when a target is missed, 2 when a result is wrong. Every client's
answers are checked against the plain client's first, and each hook is checked to run
(a no-op hook that never ran would cost nothing). Rows: ``plain`` (no hooks, no scope
ever opened), ``client_hook`` (one ``add_hook`` whose three success-path stages do
nothing), ``call_hook`` (that hook as ``hooks=[noop]`` on the call), ``scope_opened``
(a client that opened a scope once, read outside one), ``in_scope`` (inside
``request_context``, no context passed), ``otel_noop`` (the OpenTelemetry hook on the
API's no-op providers), ``otel_sdk`` (on SDK providers with a metric reader and no log
exporter), and ``scope_enter_exit`` (one ``with`` per request, no read).
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import bench_evaluation as scen
from _common import at_most, expect, machine_info, main_of

from phaseflag import EvaluationResult, Hook, HookContext, PhaseFlagClient

READS = 2000  # reads per sample
#: Targets, in ns over the plain read: generous for a loaded 2-core machine, and far
#: below what a hook path doing work per stage (a lock, a copy, I/O) would cost.
HOOK_OVERHEAD_NS = 5000
CALL_HOOK_OVERHEAD_NS = 8000  # the call's hooks are checked and looked up on every read
SCOPE_OVERHEAD_NS = 1000
OTEL_SDK_OVERHEAD_NS = 60_000


class Counting(Hook):
    """Counts its stages: proves a hook ran during the correctness pass."""

    def __init__(self) -> None:
        self.before_calls = 0
        self.finally_calls = 0

    def before(self, ctx: HookContext) -> None:
        self.before_calls += 1

    def finally_after(self, ctx: HookContext, result: EvaluationResult) -> None:
        self.finally_calls += 1


class Noop(Hook):
    """A hook whose stages do nothing (Hook itself would have its stages skipped)."""

    def before(self, ctx: HookContext) -> None:
        pass

    def after(self, ctx: HookContext, result: EvaluationResult) -> None:
        pass

    def finally_after(self, ctx: HookContext, result: EvaluationResult) -> None:
        pass


def _client() -> PhaseFlagClient:
    return PhaseFlagClient(base_url="", api_key="", bootstrap=scen.build_ruleset())


def _otel_hooks() -> tuple[Hook, Hook, Callable[[], int]]:
    """The OpenTelemetry hook on no-op providers, on SDK providers, and a function
    counting the SDK hook's evaluation counter."""
    from opentelemetry._logs import NoOpLoggerProvider
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from phaseflag.otel import OpenTelemetryHook

    noop = OpenTelemetryHook(
        logger_provider=NoOpLoggerProvider(), meter_provider=NoOpMeterProvider()
    )
    reader = InMemoryMetricReader()
    sdk = OpenTelemetryHook(
        logger_provider=LoggerProvider(), meter_provider=MeterProvider(metric_readers=[reader])
    )

    def counted() -> int:
        data = reader.get_metrics_data()
        total = 0
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == "phaseflag.evaluations":
                        total += sum(p.value for p in metric.data.data_points)  # type: ignore[union-attr]
        return total

    return noop, sdk, counted


def run(rounds: int) -> dict[str, Any]:
    ctxs, plain_ctx = scen.make_contexts()
    ctxs, plain_ctx = ctxs[:READS], plain_ctx[:READS]
    want = [scen.base_s2(p) for p in plain_ctx]

    plain = _client()
    client_hooked = _client()
    call_hooked = _client()
    scoped = _client()
    otel_noop_client = _client()
    otel_sdk_client = _client()
    otel_noop, otel_sdk, otel_counted = _otel_hooks()
    noop = Noop()
    call_hooks = [noop]

    # -- correctness first: every configuration answers as the baseline, and hooks run --
    counting = Counting()
    remove = client_hooked.add_hook(counting)
    for label, read in (
        ("plain", lambda c: plain.get_boolean_value("s2", False, c)),
        ("client_hook", lambda c: client_hooked.get_boolean_value("s2", False, c)),
        ("call_hook", lambda c: call_hooked.get_boolean_value("s2", False, c, [counting])),
    ):
        got = [read(c) for c in ctxs]
        expect(got == want, f"{label}: answers differ from the dict+if baseline")
    expect(
        counting.before_calls == counting.finally_calls == 2 * READS,
        f"the counting hook ran {counting.before_calls}/{counting.finally_calls} times",
    )
    remove()
    client_hooked.add_hook(noop)
    for c, expected in zip(ctxs, want, strict=True):
        with scoped.request_context(c):
            expect(scoped.get_boolean_value("s2", False) is expected, "in_scope: wrong answer")
    got = [scoped.get_boolean_value("s2", False, c) for c in ctxs]
    expect(got == want, "scope_opened: answers differ")
    otel_noop_client.add_hook(otel_noop)
    otel_sdk_client.add_hook(otel_sdk)
    for label, otel_client in (("otel_noop", otel_noop_client), ("otel_sdk", otel_sdk_client)):
        got = [otel_client.get_boolean_value("s2", False, c) for c in ctxs]
        expect(got == want, f"{label}: answers differ")
    expect(otel_counted() == READS, f"the OpenTelemetry hook counted {otel_counted()} reads")

    # -- timing: interleaved rounds, so drift affects every row alike --
    def loop(get: Callable[..., Any], *extra: Any) -> float:
        start = time.perf_counter_ns()
        for c in ctxs:
            get("s2", False, c, *extra)
        return (time.perf_counter_ns() - start) / READS

    def in_scope() -> float:
        get = scoped.get_boolean_value
        with scoped.request_context(ctxs[0]):
            start = time.perf_counter_ns()
            for _ in ctxs:
                get("s2", False)
            return (time.perf_counter_ns() - start) / READS

    def enter_exit() -> float:
        request_context = scoped.request_context
        start = time.perf_counter_ns()
        for c in ctxs:
            with request_context(c):
                pass
        return (time.perf_counter_ns() - start) / READS

    rows: dict[str, Callable[[], float]] = {
        "plain": lambda: loop(plain.get_boolean_value),
        "client_hook": lambda: loop(client_hooked.get_boolean_value),
        "call_hook": lambda: loop(call_hooked.get_boolean_value, call_hooks),
        "scope_opened": lambda: loop(scoped.get_boolean_value),
        "in_scope": in_scope,
        "otel_noop": lambda: loop(otel_noop_client.get_boolean_value),
        "otel_sdk": lambda: loop(otel_sdk_client.get_boolean_value),
        "scope_enter_exit": enter_exit,
    }
    samples: dict[str, list[float]] = {name: [] for name in rows}
    gc.disable()
    try:
        for _ in range(rounds):
            for name, measure in rows.items():
                samples[name].append(measure())
    finally:
        gc.enable()
    results: dict[str, Any] = {}
    base = statistics.median(samples["plain"])
    for name, values in samples.items():
        median = statistics.median(values)
        row: dict[str, Any] = {"median_ns": round(median, 1), "min_ns": round(min(values), 1)}
        if name not in ("plain", "scope_enter_exit"):
            row["over_plain_ns"] = round(median - base, 1)
        results[name] = row
    for c in (plain, client_hooked, call_hooked, scoped, otel_noop_client, otel_sdk_client):
        c.stop()
    over = {name: row.get("over_plain_ns", 0.0) for name, row in results.items()}
    targets = [
        at_most("one no-op client hook, over a plain read", over["client_hook"], "ns",
                HOOK_OVERHEAD_NS, digits=0),
        at_most("one no-op hooks= hook, over a plain read", over["call_hook"], "ns",
                CALL_HOOK_OVERHEAD_NS, digits=0),
        at_most("a read inside a request scope, over plain", over["in_scope"], "ns",
                SCOPE_OVERHEAD_NS, digits=0),
        at_most("a read after a scope was opened, over plain", over["scope_opened"], "ns",
                SCOPE_OVERHEAD_NS, digits=0),
        at_most("the OpenTelemetry hook (SDK), over plain", over["otel_sdk"], "ns",
                OTEL_SDK_OVERHEAD_NS, digits=0),
    ]  # fmt: skip
    return {**machine_info(), "rounds": rounds, "results": results, "targets": targets}


def show(report: dict[str, Any]) -> None:
    """The rows: ns per read and the cost over a plain read."""
    print(f"{'row':<18}{'median ns':>10}{'min ns':>9}{'over plain':>12}   (one S2 read)")
    for name, row in report["results"].items():
        over = row.get("over_plain_ns")
        shown = "" if over is None else f"{over:>+12.0f}"
        print(f"{name:<18}{row['median_ns']:>10.0f}{row['min_ns']:>9.0f}{shown:>12}")


def main() -> int:
    return main_of(__doc__, "results_hooks.json", run, show, options={"--rounds": 15})


if __name__ == "__main__":
    sys.exit(main())
