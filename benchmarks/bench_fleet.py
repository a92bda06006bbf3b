"""Fleet benchmark: N processes sharing one Redis (RedisCache, shared mode).

For N = 1, 10, 50 worker processes (each one PhaseFlagClient) on one loopback API and one
redis-server started here, it measures:

* API ruleset requests per minute over a steady window (goal: independent of N; N processes
  without Redis would make N x 60 / polling_interval);
* change -> applied: from the leader applying a new version (after its poll) to each follower
  applying it, through the pub/sub notice (p50/p99; goal p99 < 250 ms);
* follower CPU per change (CPU seconds over the change phase, minus an idle window of the
  same length, per follower and change) and RSS per process.

    python benchmarks/bench_fleet.py [--sizes 1,10,50] [--changes 10] [--json PATH]

Needs redis-server on PATH (exit status 3, skipped, without it) and the [redis] extra.
Prints a table and writes JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Skip, at_most, machine_info, main_of, realistic_ruleset

ROOT = Path(__file__).resolve().parent.parent
KEY = "sdk-bench-fleet"
INTERVAL = 2.0
LEASE = 4.0
FLAGS = 50

WORKER = r"""
import json, resource, sys, threading, time
from phaseflag import PhaseFlagClient
from phaseflag.redis import RedisCache
opts = json.loads(sys.argv[1])
lock = threading.Lock()
def say(**fields):
    with lock:
        sys.stdout.write(json.dumps(fields) + "\n"); sys.stdout.flush()
client = PhaseFlagClient(base_url=opts["base_url"], api_key=opts["key"],
                         polling_interval=opts["interval"], send_events=False,
                         cache=RedisCache(opts["redis"], lease_time=opts["lease"]))
client.on("change", lambda e: say(event="version", version=e.current_version, t=time.time(),
                                  leader=bool(client.status().leader)))
client.start()
for line in sys.stdin:
    if line.strip() == "status":
        u = resource.getrusage(resource.RUSAGE_SELF)
        s = client.status()
        say(event="status", cpu=u.ru_utime + u.ru_stime, leader=bool(s.leader),
            version=s.ruleset_version)
    elif line.strip() == "stop":
        client.stop(); break
"""


class Api:
    """A loopback PhaseFlag API serving one ruleset with an ETag; counts ruleset requests."""

    def __init__(self) -> None:
        self.version = 1
        self.body = b""
        self.requests = 0
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with api.lock:
                    api.requests += 1
                    version, body = api.version, api.body
                etag = f'"v{version}"'
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("ETag", etag)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:  # a worker stopped mid-request at the end of a size
                    self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        self.publish(1)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/v1"

    def publish(self, version: int) -> None:
        document = realistic_ruleset(FLAGS, version)
        # One flag changes with every version (a version alone changes no flag: no event).
        document["flags"][0]["default"] = {"variation": "on" if version % 2 else "off"}
        body = json.dumps(document).encode()
        with self.lock:
            self.version, self.body = version, body

    def count(self) -> int:
        with self.lock:
            return self.requests


class Worker:
    def __init__(self, options: dict[str, Any]) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PHASEFLAG_")}
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER, json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self.applied: dict[int, tuple[float, bool]] = {}  # version -> (time, was leader)
        self.replies: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = json.loads(raw)
            with self.cond:
                if line["event"] == "version":
                    self.applied[line["version"]] = (line["t"], line["leader"])
                else:
                    self.replies.append(line)
                self.cond.notify_all()

    def status(self) -> dict[str, Any]:
        with self.cond:
            seen = len(self.replies)
        assert self.process.stdin is not None
        self.process.stdin.write(b"status\n")
        self.process.stdin.flush()
        with self.cond:
            self.cond.wait_for(lambda: len(self.replies) > seen, 60)
            return self.replies[seen]

    def rss_mb(self) -> float:
        with open(f"/proc/{self.process.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(b"stop\n")
            self.process.stdin.flush()
            self.process.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(10)


def wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench_fleet: timed out waiting for {what}")
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_size(n: int, changes: int, redis_url: str, api: Api, first: int) -> dict[str, Any]:
    options = {
        "base_url": api.base_url,
        "key": KEY,
        "redis": redis_url,
        "interval": INTERVAL,
        "lease": LEASE,
    }
    api.publish(first)
    workers = [Worker(options) for _ in range(n)]
    try:
        wait(lambda: all(first in w.applied for w in workers), 300, f"{n} workers ready")
        wait(lambda: sum(w.status()["leader"] for w in workers) == 1, 60, "one leader")
        window = 6 * INTERVAL
        idle_before = [w.status()["cpu"] for w in workers]
        before = api.count()
        time.sleep(window)  # a fixed window to measure a rate and idle CPU
        per_minute = (api.count() - before) * 60 / window
        idle_after = [w.status()["cpu"] for w in workers]
        latencies: list[float] = []
        cpu_before = [w.status()["cpu"] for w in workers]
        started = time.monotonic()
        for step in range(1, changes + 1):
            version = first + step
            api.publish(version)
            wait(
                lambda v=version: all(v in w.applied for w in workers), 60, f"v{version} everywhere"
            )
            times = [w.applied[version] for w in workers]
            leader_t = [t for t, lead in times if lead]
            if leader_t and n > 1:
                latencies += [t - leader_t[0] for t, lead in times if not lead]
        spent = time.monotonic() - started
        cpu_after = [w.status()["cpu"] for w in workers]
        leaders = {i for i, w in enumerate(workers) if w.status()["leader"]}
        followers = [i for i in range(n) if i not in leaders] or list(range(n))
        idle_rate = statistics.mean((idle_after[i] - idle_before[i]) / window for i in followers)
        cpu_per_change = statistics.mean(
            max(0.0, cpu_after[i] - cpu_before[i] - idle_rate * spent) / changes for i in followers
        )
        rss = statistics.mean(w.rss_mb() for w in workers)
    finally:
        for worker in workers:
            worker.stop()
    latencies.sort()

    def pct(p: float) -> float | None:
        if not latencies:
            return None
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {
        "processes": n,
        "ruleset_requests_per_min": round(per_minute, 1),
        "alone_requests_per_min": round(n * 60 / INTERVAL, 1),
        "change_to_applied_p50_ms": None if pct(0.5) is None else round(pct(0.5) or 0, 1),
        "change_to_applied_p99_ms": None if pct(0.99) is None else round(pct(0.99) or 0, 1),
        "samples": len(latencies),
        "follower_cpu_per_change_ms": round(cpu_per_change * 1000, 2),
        "rss_mb_per_process": round(rss, 1),
    }


def run(sizes: str, changes: int) -> dict[str, Any]:
    server = shutil.which("redis-server")
    if server is None:
        raise Skip("redis-server is not installed (it is not on PATH)")
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        redis = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir",
             directory, "--maxclients", "10000"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait(lambda: _ping(port), 20, "redis-server")
            api = Api()
            rows = []
            first = 1
            for n in (int(s) for s in sizes.split(",")):
                rows.append(run_size(n, changes, f"redis://127.0.0.1:{port}/0", api, first))
                first += changes + 1
                print(json.dumps(rows[-1]))
        finally:
            redis.kill()
            redis.wait(10)
    targets = []
    for r in rows:
        n = r["processes"]
        targets.append(
            at_most(
                f"N={n} ruleset requests/min",
                r["ruleset_requests_per_min"],
                "/min",
                60 / INTERVAL * 1.5,
                digits=1,
            )
        )
        if r["change_to_applied_p99_ms"] is not None:
            targets.append(
                at_most(
                    f"N={n} change->applied p99", r["change_to_applied_p99_ms"], "ms", 250, digits=1
                )
            )
    return {
        **machine_info(),
        "polling_interval": INTERVAL,
        "lease_time": LEASE,
        "flags": FLAGS,
        "rows": rows,
        "targets": targets,
    }


def show(report: dict[str, Any]) -> None:
    print(
        f"\n{'N':>4} {'req/min':>8} {'alone':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'CPU/change ms':>14} {'RSS MB':>7}"
    )
    for r in report["rows"]:
        p50 = r["change_to_applied_p50_ms"]
        p99 = r["change_to_applied_p99_ms"]
        print(
            f"{r['processes']:>4} {r['ruleset_requests_per_min']:>8} "
            f"{r['alone_requests_per_min']:>7} {'-' if p50 is None else p50:>7} "
            f"{'-' if p99 is None else p99:>7} {r['follower_cpu_per_change_ms']:>14} "
            f"{r['rss_mb_per_process']:>7}"
        )


def main() -> int:
    options = {"--sizes": "1,10,50", "--changes": 10}
    return main_of(__doc__, "results_fleet.json", run, show, options=options)


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
