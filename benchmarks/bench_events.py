"""Events: building an ``EvaluationEvent``, ``track_event``, what evaluation summaries add
to a read, and the flusher's ceiling at the default settings to a local server, none lost.

Run: ``python benchmarks/bench_events.py [--events 1000000] [--json PATH]``. The server
is ``phaseflag serve`` (PhaseFlagServer) in its own process, writing every event it
accepts to a file, which is counted (and every event's sequence number checked) at the
end. The ceiling: one producer thread offers events as fast as it can, waiting only
while the queue is at its bound (``max_event_queue_size``; a producer that did not wait
would have the oldest dropped, counted), so the delivered rate is what the flush path
sustains. Then a burst offered without waiting overflows the queue: every event must be
sent or counted as dropped. Prints a table and writes JSON; exit status 1 when a target
is missed, 2 when a result is wrong.
"""

from __future__ import annotations

import gc
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_evaluation as scen
from _common import at_least, at_most, expect, machine_info, main_of, rss_bytes, target

from phaseflag import EvaluationContext, EvaluationEvent, PhaseFlagClient

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "bench-events-key-0123"
TARGET_BUILD_NS = 1000.0  # issue 15: an EvaluationEvent under 1 µs
TARGET_TRACK_NS = 1000.0
TARGET_SUMMARY_NS = 50.0  # issue 15: evaluation counting at most 50 ns per read
TARGET_PER_MINUTE = 2_000_000  # issue 15: at the default settings, nothing lost
QUEUE_BOUND = 10_000  # the default max_event_queue_size (docs/configuration.md)
RSS_GROWTH_LIMIT_MB = 50.0  # 1M queued events would take far more than this
PAID = EvaluationContext(user_id="user-1", attributes={"plan": "pro"})

SERVER_CODE = """
import sys
from phaseflag.server import PhaseFlagServer
server = PhaseFlagServer(sys.argv[1], api_keys=[sys.argv[2]], events_out=sys.argv[3])
server.start()
print(server.port, flush=True)
sys.stdin.read()  # run until the parent closes our stdin
server.stop()
"""


def ruleset() -> dict[str, Any]:
    """The S1-S4 flags plus an S2-shaped pair differing only in ``track_events``."""
    doc = scen.build_ruleset()
    s2 = next(f for f in doc["flags"] if f["key"] == "s2")
    doc["flags"] += [
        {**s2, "key": "tracked", "track_events": True},
        {**s2, "key": "untracked", "track_events": False},
    ]
    return doc


class Server:
    """``phaseflag serve`` in a child process, appending accepted events to a file."""

    def __init__(self, workdir: str) -> None:
        self.ruleset_path = Path(workdir, "ruleset.json")
        self.ruleset_path.write_text(json.dumps(ruleset()), "utf-8")
        self.events_path = events = Path(workdir, "events.jsonl")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER_CODE, *map(str, (self.ruleset_path, API_KEY, events))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}/api/v1"

    def received(self) -> int:
        """Events the server has accepted so far (its /healthz counter)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/healthz")
            return int(json.loads(conn.getresponse().read())["events_received"])
        finally:
            conn.close()

    def wait_received(self, count: int, timeout: float) -> float:
        """Poll until the server has accepted ``count`` events (or ``timeout`` passed);
        returns when, as ``time.perf_counter()``."""
        deadline = time.perf_counter() + timeout
        while self.received() < count and time.perf_counter() < deadline:
            time.sleep(0.02)
        return time.perf_counter()

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)

    def summaries(self) -> list[dict[str, Any]]:
        """The summary events the server has written so far."""
        with self.events_path.open("rb") as file:
            return [json.loads(line) for line in file if b'"kind":"summary"' in line]


def client_for(server: Server, **options: Any) -> PhaseFlagClient:
    client = PhaseFlagClient(server.url, API_KEY, bootstrap=ruleset(), **options)
    client.start()
    expect(client.wait_until_ready(10), "the client did not become ready")
    return client


# -- track_event and summary costs ------------------------------------------------------------


def measure_track(server: Server, rounds: int = 200, per_round: int = 1000) -> dict[str, Any]:
    """Median ns per ``track_event`` call (events built beforehand), flusher running.

    Tracking in a tight loop outruns any HTTP flusher, so the queue is made big enough to
    hold every event (a full queue drops the oldest: a different path); all must arrive.
    """
    client = client_for(server, max_event_queue_size=rounds * per_round)
    events = [
        EvaluationEvent(flag_key="track", variation_key="on", user_id=f"user-{i}")
        for i in range(per_round)
    ]
    track = client.track_event
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for event in events:
            track(event)
        samples.append((time.perf_counter_ns() - start) / per_round)
    expect(client.flush_events(), "flush_events() did not deliver everything")
    status = client.status()
    client.stop()
    tracked = rounds * per_round
    expect(status.events_sent == tracked, f"sent {status.events_sent} of {tracked}")
    expect(status.events_dropped == 0 and status.events_failed == 0, f"lost events: {status}")
    return {
        "median_ns": statistics.median(samples),
        "p90_ns": sorted(samples)[int(0.9 * len(samples))],
        "tracked": tracked,
    }


def measure_construction(rounds: int = 200, per_round: int = 1000) -> dict[str, Any]:
    """Median ns to build one ``EvaluationEvent`` with every usual field (metadata a fresh
    dict, the timestamp taken now), loop overhead included."""
    samples = []
    for r in range(rounds):
        start = time.perf_counter_ns()
        for i in range(per_round):
            EvaluationEvent("checkout", "on", "user-1", {"i": i})
        samples.append((time.perf_counter_ns() - start) / per_round)
        if r == 0:
            event = EvaluationEvent("checkout", "on", "user-1", {"i": 0})
            now = time.time_ns() // 1_000_000
            expect(abs(event.timestamp - now) < 1000, f"timestamp {event.timestamp} != {now}")
    return {
        "median_ns": statistics.median(samples),
        "p90_ns": sorted(samples)[int(0.9 * len(samples))],
    }


def measure_summary_overhead(server: Server, rounds: int = 41, reads: int = 5000) -> dict[str, Any]:
    """What counting a read for the evaluation summary adds: the same S2-shaped flag with
    ``track_events`` read through this client and through one that sends no events (the
    same read path, nothing counted), interleaved; the median of per-round differences.
    (The flag without ``track_events`` is answered by a set lookup, a shorter path, so it
    is no measure of counting.) The summary must count every tracked read."""
    earlier = len(server.summaries())
    client = client_for(server)
    quiet = PhaseFlagClient(base_url="", api_key="", bootstrap=ruleset())  # no events at all
    get = client.get_boolean_value
    expect(get("tracked", False, PAID) and get("untracked", False, PAID), "flags not served")
    getters = {"tracked": get, "untracked": quiet.get_boolean_value}
    diffs, tracked_ns, untracked_ns = [], [], []
    gc.disable()
    try:
        for r in range(rounds):
            pair = {}
            for key in ("tracked", "untracked") if r % 2 else ("untracked", "tracked"):
                read = getters[key]
                start = time.perf_counter_ns()
                for _ in range(reads):
                    read("tracked", False, PAID)
                pair[key] = (time.perf_counter_ns() - start) / reads
            diffs.append(pair["tracked"] - pair["untracked"])
            tracked_ns.append(pair["tracked"])
            untracked_ns.append(pair["untracked"])
    finally:
        gc.enable()
    expect(client.flush_events(), "flush_events() did not deliver the summary")
    client.stop()
    quiet.stop()
    counted: dict[str, int] = {}
    for event in server.summaries()[earlier:]:
        for counter in event["counters"]:
            key = counter["flag_key"]
            counted[key] = counted.get(key, 0) + counter["count"]
    want = rounds * reads + 1
    expect(counted.get("tracked") == want, f"summary counted {counted.get('tracked')} != {want}")
    expect("untracked" not in counted, "a flag without track_events was counted")
    return {
        "added_ns": statistics.median(diffs),
        "tracked_ns": statistics.median(tracked_ns),
        "untracked_ns": statistics.median(untracked_ns),
        "summary_count": counted["tracked"],
    }


# -- the flusher's ceiling at the default settings ---------------------------------------------


def measure_throughput(server: Server, total: int) -> dict[str, Any]:
    """Offer ``total`` events as fast as one producer can, with the default client
    settings, waiting only while the queue is at its bound; the server must accept every
    one exactly once and none may be dropped. Samples RSS and the queue while it runs."""
    already = server.received()
    client = client_for(server)
    batches: list[int] = []
    transport = client._transport  # count the batches the flusher posts
    assert transport is not None
    post = transport.post_events

    def counting_post(payload: Any, timeout: float | None = None) -> None:
        post(payload, timeout)
        batches.append(len(payload["events"]))

    transport.post_events = counting_post  # type: ignore[method-assign]
    track, status = client.track_event, client.status
    chunk = 100  # events offered between two looks at the queue
    gc.collect()
    rss_start = rss_bytes()
    rss_peak, queued_peak, waits = rss_start, 0, 0
    produced = 0
    began = time.perf_counter()
    next_sample = began
    while produced < total:
        queued = status().events_queued
        queued_peak = max(queued_peak, queued)
        if queued > QUEUE_BOUND - chunk:
            waits += 1
            time.sleep(0.0005)  # the queue is full: let the flusher take some
            continue
        for i in range(produced, min(total, produced + chunk)):
            track(EvaluationEvent("tput", None, "user-1", {"i": i}))
        produced = min(total, produced + chunk)
        if time.perf_counter() >= next_sample:
            next_sample += 0.25
            rss_peak = max(rss_peak, rss_bytes())
    produced_at = time.perf_counter()
    # The last partial batch would wait for the periodic flush (30 s by default), as at
    # shutdown: send it now, like stop() does.
    client.flush_events()
    delivered_at = server.wait_received(already + total, timeout=60)
    final = status()
    client.stop()
    seconds = delivered_at - began
    return {
        "events": total,
        "produce_seconds": produced_at - began,
        "deliver_seconds": seconds,
        "delivered_per_minute": total / seconds * 60,
        "producer_waits": waits,
        "batches": len(batches),
        "batch_size_mean": statistics.mean(batches) if batches else 0,
        "batch_size_max": max(batches, default=0),
        "queued_peak": queued_peak,
        "rss_start_mb": rss_start / 2**20,
        "rss_peak_mb": rss_peak / 2**20,
        "rss_growth_mb": (rss_peak - rss_start) / 2**20,
        "events_sent": final.events_sent,
        "events_dropped": final.events_dropped,
        "events_failed": final.events_failed,
    }


def measure_overload(server: Server, total: int) -> dict[str, Any]:
    """Offer ``total`` events in a tight loop that never waits (far beyond any flusher,
    so the queue overflows), then ``flush_events()``: every event must be delivered
    (the server's count rises by ``sent``) or counted as dropped, none unaccounted."""
    already = server.received()
    client = client_for(server)
    track = client.track_event
    for i in range(total):
        track(EvaluationEvent("burst", None, "user-1", {"i": i}))
    expect(client.flush_events(), "flush_events() after the burst did not deliver the queue")
    status = client.status()
    client.stop()
    received = server.received() - already
    expect(received >= status.events_sent, f"the server got {received} of {status.events_sent}")
    return {
        "events": total,
        "sent": status.events_sent,
        "dropped": status.events_dropped,
        "failed": status.events_failed,
        "server_received": received,
        "unaccounted": total - status.events_sent - status.events_dropped - status.events_failed,
    }


def count_delivered(server: Server, total: int) -> int:
    """Every ``tput`` event in the server's file, checking each sequence number once."""
    seen = bytearray(total)
    count = 0
    with server.events_path.open("rb") as file:
        for line in file:
            if b'"flag_key":"tput"' not in line:
                continue
            i = json.loads(line)["metadata"]["i"]
            expect(0 <= i < total and not seen[i], f"event {i} delivered twice or unknown")
            seen[i] = 1
            count += 1
    return count


def run(events: int) -> dict[str, Any]:
    build = measure_construction()
    with tempfile.TemporaryDirectory() as workdir:
        server = Server(workdir)
        try:
            throughput = measure_throughput(server, events)
            track = measure_track(server)
            summary = measure_summary_overhead(server)
            overload = measure_overload(server, 100_000)
        finally:
            server.stop()
        delivered = count_delivered(server, events)
    throughput["in_file"] = delivered
    t = throughput
    lost = events - delivered
    targets = [
        at_most(
            "EvaluationEvent construction", build["median_ns"], "ns", TARGET_BUILD_NS, digits=1
        ),
        at_most("track_event median", track["median_ns"], "ns", TARGET_TRACK_NS, digits=2),
        at_most(
            "summary cost added to a read", summary["added_ns"], "ns", TARGET_SUMMARY_NS, digits=2
        ),
        at_least(
            "events/min delivered at the default settings",
            t["delivered_per_minute"],
            "",
            TARGET_PER_MINUTE,
            digits=0,
        ),
        target("events lost (not in the server's file)", lost, "", "== 0", lost == 0),
        target(
            "events dropped (queue full)", t["events_dropped"], "", "== 0", not t["events_dropped"]
        ),
        target(
            "overload: events neither sent nor counted dropped",
            overload["unaccounted"],
            "",
            "== 0",
            overload["unaccounted"] == 0 and overload["server_received"] == overload["sent"],
        ),
        at_most(
            "RSS growth while sending them", t["rss_growth_mb"], "MB", RSS_GROWTH_LIMIT_MB, digits=2
        ),
    ]
    return {
        **machine_info(),
        "load_average": os.getloadavg(),
        "server": "phaseflag.server.PhaseFlagServer in a child process",
        "construction": build,
        "track_event": track,
        "summary": summary,
        "throughput": throughput,
        "overload": overload,
        "targets": targets,
    }


def show(report: dict[str, Any]) -> None:
    b, tr, su, t = (report[k] for k in ("construction", "track_event", "summary", "throughput"))
    print(f"EvaluationEvent(...): median {b['median_ns']:.0f} ns (p90 {b['p90_ns']:.0f})")
    print(f"track_event: median {tr['median_ns']:.0f} ns per call (p90 {tr['p90_ns']:.0f})")
    print(
        f"summary: read with track_events {su['tracked_ns']:.0f} ns vs "
        f"{su['untracked_ns']:.0f} ns through a client sending no events: "
        f"+{su['added_ns']:.0f} ns; the server's "
        f"summary counted {su['summary_count']:,} reads"
    )
    print(
        f"flusher: {t['events']:,} events offered in {t['produce_seconds']:.1f} s (the producer "
        f"waited {t['producer_waits']:,} times for room), all delivered after "
        f"{t['deliver_seconds']:.1f} s = {t['delivered_per_minute']:,.0f}/min; "
        f"{t['batches']:,} batches (mean {t['batch_size_mean']:.0f}, max "
        f"{t['batch_size_max']}); queue peak {t['queued_peak']:,}; RSS {t['rss_start_mb']:.0f}"
        f" -> peak {t['rss_peak_mb']:.0f} MB; {t['in_file']:,} in the server's file; load "
        f"average {report['load_average'][0]:.2f}"
    )
    o = report["overload"]
    print(
        f"overload: {o['events']:,} events offered without waiting: {o['sent']:,} sent, "
        f"{o['dropped']:,} counted dropped, {o['failed']} failed, {o['unaccounted']} "
        f"unaccounted; the server received {o['server_received']:,}"
    )


def main() -> int:
    return main_of(__doc__, "results_events.json", run, show, options={"--events": 1_000_000})


if __name__ == "__main__":
    sys.exit(main())
