"""Soak test: one client for N seconds against a loopback API that publishes a new ruleset
version every 50 ms, read from several threads, tracking events all the while.

Run: ``python benchmarks/soak.py [--seconds 120] [--threads 4] [--json PATH]``. Samples RSS,
thread count and open file descriptors every second; prints a table and writes JSON
(default ``benchmarks/results_soak.json``). Exit status 0 when every target holds: RSS grows
less than 10 MB after warm-up, no thread or descriptor is leaked (steady state, and back
to the starting count after stop), no error of any kind; 1 when a target is missed;
2 when a read returned a wrong value. The run is bounded by ``--seconds``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import random
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from _common import at_most, rss_mb, target

from phaseflag import EvaluationContext, EvaluationEvent, PhaseFlagClient

HERE = Path(__file__).resolve().parent
KEY = "sdk-soak-0123456789abcdef"
RSS_GROWTH_LIMIT_MB = 10.0
#: Threads or descriptors that may come and go in steady state (server connection threads).
LEAK_SLACK = 2
STRINGS = ("red", "green", "blue")
BOOL = [{"key": "on", "value": True}, {"key": "off", "value": False}]


# -- the loopback API -----------------------------------------------------------------------


def build_ruleset(version: int) -> dict[str, Any]:
    """Version ``version`` of a ruleset whose rules, splits and values move with the version."""
    split = version % 101
    flags: list[dict[str, Any]] = [
        {
            "key": "soak-bool",
            "type": "boolean",
            "variations": BOOL,
            "off_variation": "off",
            "track_events": True,
            "rules": [
                {
                    "id": "plans",
                    "conditions": [{"attribute": "plan", "operator": "in", "values": ["pro"]}],
                    "serve": {"variation": "on" if version % 2 else "off"},
                }
            ],
            "default": {
                "rollout": {
                    "variations": [
                        {"variation": "on", "weight": split},
                        {"variation": "off", "weight": 100 - split},
                    ]
                }
            },
        },
        {
            "key": "soak-string",
            "type": "string",
            "variations": [{"key": s, "value": s} for s in STRINGS],
            "rules": [
                {
                    "conditions": [
                        {"attribute": "app_version", "operator": "semver_gte", "values": ["2.0.0"]},
                        {"attribute": "email", "operator": "ends_with", "values": ["@example.com"]},
                    ],
                    "serve": {"variation": STRINGS[version % 3]},
                },
                {
                    "conditions": [{"operator": "in_segment", "values": ["beta"]}],
                    "serve": {"variation": STRINGS[(version + 1) % 3]},
                },
            ],
            "default": {"variation": "red"},
        },
        {
            "key": "soak-json",
            "type": "json",
            "variations": [{"key": "cfg", "value": {"v": version, "items": list(range(5))}}],
            "default": {"variation": "cfg"},
        },
    ]
    # Filler flags: only a few change per version, so incremental compiles are exercised too.
    flags += [
        {
            "key": f"filler-{i:03d}",
            "type": "number",
            "variations": [{"key": "n", "value": i + (version if i % 10 == 0 else 0)}],
            "default": {"variation": "n"},
        }
        for i in range(100)
    ]
    segments = [
        {
            "key": "beta",
            "included": [f"user-{i}" for i in range(0, 1000, 7)],
            "rules": [
                {"conditions": [{"attribute": "country", "operator": "in", "values": ["NZ"]}]}
            ],
        }
    ]
    return {"schema_version": 1, "version": version, "flags": flags, "segments": segments}


class LoopbackAPI:
    """``GET /api/v1/sdk/ruleset`` (ETag, 304) and ``POST /api/v1/sdk/events`` on 127.0.0.1;
    a thread publishes a new version every ``swap_every`` seconds."""

    def __init__(self, swap_every: float) -> None:
        self.swap_every = swap_every
        self.lock = threading.Lock()
        self.version = 1
        self.body = json.dumps(build_ruleset(1)).encode()
        self.events_received = 0
        self.fetches = 0
        self._stop = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self._threads = [
            threading.Thread(target=self.server.serve_forever, name="soak-http", daemon=True),
            threading.Thread(target=self._publish, name="soak-publisher", daemon=True),
        ]

    @property
    def base_url(self) -> str:
        """The API root."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/v1"

    def start(self) -> None:
        """Serve and publish."""
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop publishing and serving; join the threads."""
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
        for thread in self._threads:
            thread.join(5)

    def _publish(self) -> None:
        while not self._stop.wait(self.swap_every):
            with self.lock:
                version = self.version + 1
            body = json.dumps(build_ruleset(version)).encode()
            with self.lock:
                self.version, self.body = version, body


def _handler(api: LoopbackAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            with api.lock:
                version, body = api.version, api.body
                api.fetches += 1
            etag = f'"v{version}"'
            if self.headers.get("If-None-Match") == etag:
                self._send(304, b"", etag)
            else:
                self._send(200, body, etag)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            payload = json.loads(self.rfile.read(length))
            custom = sum(1 for e in payload["events"] if e.get("kind") == "custom")
            with api.lock:
                api.events_received += custom
            self._send(202, b"", None)

        def _send(self, status: int, body: bytes, etag: str | None) -> None:
            self.send_response(status)
            if etag:
                self.send_header("ETag", etag)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    return Handler


# -- measuring --------------------------------------------------------------------------------


def open_fds() -> int:
    """Open file descriptors of this process (-1 where /proc/self/fd is missing)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def sdk_threads() -> int:
    """Live ``phaseflag-*`` threads, not counting the request watchdog (it lives only while
    a request is in flight, so sampling would see it or not by chance)."""
    return sum(
        1
        for t in threading.enumerate()
        if t.name.startswith("phaseflag-") and t.name != "phaseflag-watchdog"
    )


class ErrorLog(logging.Handler):
    """Counts (and keeps the first few of) the SDK's WARNING and ERROR records."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.first) < 5:
            self.first.append(record.getMessage()[:300])


class Reader(threading.Thread):
    """Reads the three soak flags in a loop, checking every answer; tracks an event per 500."""

    def __init__(self, client: PhaseFlagClient, seed: int, stop: threading.Event) -> None:
        super().__init__(name=f"soak-reader-{seed}", daemon=True)
        self.client, self.stop, self.rng = client, stop, random.Random(seed)
        self.reads = 0
        self.tracked = 0
        self.wrong: list[str] = []
        self.errors: list[str] = []

    def run(self) -> None:
        contexts = [
            EvaluationContext(
                user_id=f"user-{self.rng.randrange(10_000)}",
                attributes={
                    "plan": self.rng.choice(["free", "pro"]),
                    "country": self.rng.choice(["US", "NZ", "DE"]),
                    "email": self.rng.choice(["a@example.com", "b@other.org"]),
                    "app_version": self.rng.choice(["1.9.9", "2.0.0", "3.1.4-beta.1"]),
                },
            )
            for _ in range(500)
        ]
        client, track = self.client, self.client.track_event
        try:
            for i in itertools.count():
                if self.stop.is_set():
                    return
                ctx = contexts[i % 500]
                flag = client.get_variation("soak-bool", ctx)
                text = client.get_string_value("soak-string", "MISSING", ctx)
                config = client.get_json_value("soak-json", {"missing": True}, ctx)
                if flag is None or flag.variation_key not in ("on", "off") or text not in STRINGS:
                    self.wrong.append(f"{flag!r} {text!r}")
                elif "v" not in config or type(config.get("v")) is not int:
                    self.wrong.append(repr(config)[:200])
                self.reads += 3
                if i % 500 == 0:
                    track(
                        EvaluationEvent(
                            "soak-bool",
                            flag.variation_key if flag else None,
                            ctx.user_id,
                            metadata={"i": i},
                        )
                    )
                    self.tracked += 1
        except Exception as exc:  # the soak's own failure, counted and reported
            self.errors.append(f"{type(exc).__name__}: {exc}")


# -- the run ----------------------------------------------------------------------------------


def soak(seconds: float, threads: int, swap_every: float) -> dict[str, Any]:
    """Run the soak and return its report (samples, summary, targets)."""
    errors = ErrorLog()
    logger = logging.getLogger("phaseflag")
    logger.addHandler(errors)
    baseline = {"threads": threading.active_count(), "fds": open_fds(), "rss_mb": rss_mb()}
    api = LoopbackAPI(swap_every)
    api.start()
    client = PhaseFlagClient(
        base_url=api.base_url,
        api_key=KEY,
        polling_interval=0.05,
        event_flush_interval=0.5,
        max_event_queue_size=100_000,
    )
    versions: set[int] = set()
    client.on("change", lambda change: versions.add(change.current_version))
    client.start()
    if not client.wait_until_ready(10):
        raise SystemExit("soak: the client never became ready")
    stop = threading.Event()
    readers = [Reader(client, seed, stop) for seed in range(threads)]
    for reader in readers:
        reader.start()

    samples: list[dict[str, Any]] = []
    began = time.monotonic()
    last_reads = 0
    for second in itertools.count(1):
        if stop.wait(max(0.0, began + second - time.monotonic())):
            break
        reads = sum(r.reads for r in readers)
        status = client.status()
        samples.append(
            {
                "t": second,
                "rss_mb": round(rss_mb(), 2),
                "threads": threading.active_count(),
                "sdk_threads": sdk_threads(),
                "fds": open_fds(),
                "version": status.ruleset_version,
                "reads_per_s": reads - last_reads,
                "events_sent": status.events_sent,
            }
        )
        last_reads = reads
        if second >= seconds:
            break
    stop.set()
    for reader in readers:
        reader.join(5)
    delivered = client.flush_events()
    status = client.status()
    client.stop()
    api.stop()
    logger.removeHandler(errors)
    after = _settle(baseline)
    return _report(
        seconds,
        threads,
        swap_every,
        baseline,
        after,
        samples,
        readers,
        status,
        delivered,
        api,
        versions,
        errors,
    )


def _settle(baseline: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Threads and descriptors after stop, once connection threads have finished."""
    deadline = time.monotonic() + timeout
    while True:
        now = {"threads": threading.active_count(), "fds": open_fds(), "rss_mb": rss_mb()}
        settled = now["threads"] <= baseline["threads"] and now["fds"] <= baseline["fds"]
        if settled or time.monotonic() >= deadline:
            return now
        time.sleep(0.05)


def _report(
    seconds: float,
    threads: int,
    swap_every: float,
    baseline: dict[str, Any],
    after: dict[str, Any],
    samples: list[dict[str, Any]],
    readers: list[Reader],
    status: Any,
    delivered: bool,
    api: LoopbackAPI,
    versions: set[int],
    errors: ErrorLog,
) -> dict[str, Any]:
    warmup = max(1, min(10, round(seconds * 0.2)))
    steady = [s for s in samples if s["t"] > warmup] or samples[-1:]
    start = steady[0]
    end = steady[-1]
    rss_growth = end["rss_mb"] - start["rss_mb"]
    slope = _slope([s["t"] for s in steady], [s["rss_mb"] for s in steady]) * 60
    tracked = sum(r.tracked for r in readers)
    wrong = [w for r in readers for w in r.wrong]
    reader_errors = [e for r in readers for e in r.errors]
    problems = {
        "reader exceptions": len(reader_errors),
        "SDK warnings/errors logged": errors.count,
        "sync failures in a row at the end": status.consecutive_failures,
        "events dropped or failed": status.events_dropped + status.events_failed,
        "events not delivered": tracked - status.events_sent,
        "flush failed": 0 if delivered else 1,
    }
    thread_growth = max(s["threads"] for s in steady[-3:]) - start["threads"]
    fd_growth = max(s["fds"] for s in steady[-3:]) - start["fds"]
    threads_left = after["threads"] - baseline["threads"]
    fds_left = after["fds"] - baseline["fds"]
    targets = [
        target(
            f"RSS growth after {warmup} s warm-up",
            rss_growth,
            "MB",
            f"< {RSS_GROWTH_LIMIT_MB:g}",
            rss_growth < RSS_GROWTH_LIMIT_MB,
            digits=2,
        ),
        at_most("thread growth in steady state", thread_growth, "threads", LEAK_SLACK, digits=2),
        at_most("fd growth in steady state", fd_growth, "fds", LEAK_SLACK, digits=2),
        target(
            "SDK threads while running",
            max(s["sdk_threads"] for s in samples),
            "threads",
            "== 2",
            all(s["sdk_threads"] == 2 for s in samples),
            digits=2,
        ),
        at_most("threads after stop vs before start", threads_left, "threads", 0, digits=2),
        at_most("fds after stop vs before start", fds_left, "fds", 0, digits=2),
        target(
            "errors",
            sum(problems.values()),
            "count",
            "== 0",
            not any(problems.values()),
            digits=2,
        ),
        target("wrong reads", len(wrong), "count", "== 0", not wrong, digits=2),
    ]
    return {
        "benchmark": "soak",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "config": {
            "seconds": seconds,
            "threads": threads,
            "swap_every": swap_every,
            "warmup_s": warmup,
        },
        "summary": {
            "rss_start_mb": samples[0]["rss_mb"],
            "rss_after_warmup_mb": start["rss_mb"],
            "rss_end_mb": end["rss_mb"],
            "rss_growth_mb": round(rss_growth, 2),
            "rss_slope_mb_per_min": round(slope, 3),
            "threads_before": baseline["threads"],
            "threads_running": [
                min(s["threads"] for s in samples),
                max(s["threads"] for s in samples),
            ],
            "threads_after": after["threads"],
            "fds_before": baseline["fds"],
            "fds_running": [min(s["fds"] for s in samples), max(s["fds"] for s in samples)],
            "fds_after": after["fds"],
            "reads": sum(r.reads for r in readers),
            "reads_per_s": round(statistics.mean(s["reads_per_s"] for s in steady)),
            "versions_applied": len(versions),
            "versions_published": api.version,
            "fetches": api.fetches,
            "events_tracked": tracked,
            "events_sent": status.events_sent,
            "events_received_by_server": api.events_received,
            "problems": problems,
            "first_errors": errors.first + reader_errors[:5],
            "first_wrong_reads": wrong[:5],
        },
        "targets": targets,
        "samples": samples,
    }


def _slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (0 for fewer than two points)."""
    if len(xs) < 2:
        return 0.0
    mean_x, mean_y = statistics.mean(xs), statistics.mean(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    return (
        sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0
    )


def print_report(report: dict[str, Any]) -> None:
    """The samples (every tenth second, and the last) and the targets as tables."""
    samples = report["samples"]
    every = max(1, len(samples) // 12)
    print(
        f"{'t(s)':>5} {'RSS MB':>8} {'threads':>7} {'sdk':>4} {'fds':>5} {'version':>8} "
        f"{'reads/s':>9} {'events':>7}"
    )
    for s in samples:
        if s["t"] % every == 0 or s is samples[-1]:
            print(
                f"{s['t']:>5} {s['rss_mb']:>8.1f} {s['threads']:>7} {s['sdk_threads']:>4} "
                f"{s['fds']:>5} {s['version']:>8} {s['reads_per_s']:>9} {s['events_sent']:>7}"
            )
    summary = report["summary"]
    print(
        f"\nversions applied {summary['versions_applied']} of {summary['versions_published']}"
        f" published; {summary['reads']:,} reads; events tracked {summary['events_tracked']},"
        f" sent {summary['events_sent']}, received {summary['events_received_by_server']}"
    )
    print(
        f"RSS {summary['rss_start_mb']:.1f} -> {summary['rss_after_warmup_mb']:.1f} (warm) -> "
        f"{summary['rss_end_mb']:.1f} MB; slope {summary['rss_slope_mb_per_min']:+.3f} MB/min"
    )
    print(
        f"threads {summary['threads_before']} -> {summary['threads_running']} -> "
        f"{summary['threads_after']}; fds {summary['fds_before']} -> {summary['fds_running']}"
        f" -> {summary['fds_after']}\n"
    )
    print(f"{'target':<40} {'measured':>10} {'unit':<8} {'target':<8} met")
    for t in report["targets"]:
        print(
            f"{t['name']:<40} {t['measured']:>10} {t['unit']:<8} {t['target']:<8} "
            f"{'yes' if t['met'] else 'NO'}"
        )
    for line in summary["first_errors"] + summary["first_wrong_reads"]:
        print("  !", line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="run time (default 120)")
    parser.add_argument("--threads", type=int, default=4, help="reader threads (default 4)")
    parser.add_argument(
        "--swap-every",
        type=float,
        default=0.05,
        help="seconds between published versions (default 0.05)",
    )
    parser.add_argument("--json", type=Path, default=HERE / "results_soak.json")
    args = parser.parse_args(argv)
    if not 1 <= args.seconds <= 24 * 3600:
        parser.error("--seconds must be between 1 and 86400")
    report = soak(args.seconds, args.threads, args.swap_every)
    print_report(report)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    if any(t["name"] == "wrong reads" and not t["met"] for t in report["targets"]):
        return 2
    return 0 if all(t["met"] for t in report["targets"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
