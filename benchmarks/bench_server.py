"""Benchmark ``phaseflag serve``: ruleset requests per second and 10,000 held SSE streams.

Run: ``python benchmarks/bench_server.py [--seconds 3] [--clients 4] [--streams 10000]
[--workers 1]``. The server runs in its own process (``--workers N``: N forked worker
processes on one socket, each watching the file); load comes from client processes, each
holding one keep-alive ``http.client`` connection. The stream test holds ``--streams``
connections from this process, rewrites the ruleset file and times the new version's
arrival on every stream (p50/p99/max), and reports the server's RSS with them open.
Prints a table and writes ``benchmarks/results_server.json``; exits non-zero when a
target is missed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import platform
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import realistic_ruleset

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().with_name("results_server.json")
API_KEY = "bench-key-0123456789"
TARGET_RPS = 2000
TARGET_STREAMS = 10_000
TARGET_P99_MS = 2000
RULESET_FLAGS = 40

SERVER_CODE = """
import resource, sys, threading
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
from phaseflag.server import PhaseFlagServer
server = PhaseFlagServer(sys.argv[1], api_keys=[sys.argv[2]])
server.start()
print(server.port, flush=True)
sys.stdin.read()  # run until the parent closes our stdin
server.stop()
"""


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit (10,000 streams need it)."""
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_mib(pids: list[int]) -> float:
    """Resident memory of ``pids`` together, in MiB (from /proc)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by ``pids`` (from /proc)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def server_pids(proc: subprocess.Popen[str]) -> list[int]:
    """The server process and its forked workers."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    try:
        return [proc.pid, *map(int, children.read_text().split())]
    except OSError:
        return [proc.pid]


def write_ruleset(path: Path, version: int) -> None:
    """Replace the file atomically (as a deploy would)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(realistic_ruleset(RULESET_FLAGS, version)), "utf-8")
    os.replace(tmp, path)


def start_server(path: Path, workers: int = 1) -> tuple[subprocess.Popen[str], int]:
    """Start the server process; returns it and its port."""
    env = {**os.environ, "PYTHONPATH": os.environ.get("BENCH_SERVER_PATH", str(ROOT))}
    if workers == 1:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVER_CODE, str(path), API_KEY],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        return proc, int(proc.stdout.readline())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = (
        "import resource, sys; s, h = resource.getrlimit(resource.RLIMIT_NOFILE); "
        "resource.setrlimit(resource.RLIMIT_NOFILE, (h, h)); "
        "from phaseflag._cli import main; sys.exit(main(sys.argv[1:]))"
    )
    argv = [sys.executable, "-c", command, "serve", str(path), "--port", str(port)]
    proc = subprocess.Popen(
        [*argv, "--workers", str(workers)],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "PHASEFLAG_SERVER_API_KEY": API_KEY},
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "workers on" in line:
            break
    deadline = time.time() + 20
    while time.time() < deadline:  # every worker serving
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.05)
    time.sleep(1.0)  # let every worker load its ruleset
    return proc, port


def _load_worker(port: int, mode: str, seconds: float, start_at: float, out: Any) -> None:
    """One client process: GET /sdk/ruleset on one keep-alive connection until time is up."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    conn.request("GET", "/api/v1/sdk/ruleset", headers=headers)
    first = conn.getresponse()
    etag = first.getheader("ETag")
    first.read()
    if mode == "304":
        headers["If-None-Match"] = etag or ""
        expected = 304
    else:
        expected = 200
        if mode == "gzip":
            headers["Accept-Encoding"] = "gzip"
    while time.time() < start_at:
        time.sleep(0.001)
    count = errors = 0
    end = start_at + seconds
    while time.time() < end:
        conn.request("GET", "/api/v1/sdk/ruleset", headers=headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status == expected:
            count += 1
        else:
            errors += 1
    conn.close()
    out.put((count, errors))


def measure_rps(
    port: int, mode: str, clients: int, seconds: float, pids: list[int]
) -> dict[str, Any]:
    """Requests per second over ``clients`` keep-alive connections (one process each), and
    the server's CPU time per request (what a loaded machine disturbs least)."""
    ctx = mp.get_context("fork" if hasattr(os, "fork") else "spawn")
    queue = ctx.Queue()
    start_at = time.time() + 0.5
    procs = [
        ctx.Process(target=_load_worker, args=(port, mode, seconds, start_at, queue))
        for _ in range(clients)
    ]
    cpu_before = cpu_seconds(pids)
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=seconds + 120) for _ in procs]
    cpu_used = cpu_seconds(pids) - cpu_before
    for proc in procs:
        proc.join()
    count = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    return {
        "mode": mode,
        "clients": clients,
        "requests": count,
        "errors": errors,
        "seconds": seconds,
        "rps": count / seconds,
        "server_cpu_us_per_request": 1e6 * cpu_used / count if count else None,
    }


def _open_stream(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        b"GET /api/v1/sdk/stream HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n"
        b"Authorization: Bearer " + API_KEY.encode() + b"\r\n\r\n"
    )
    sock.setblocking(False)
    return sock


def _wait_all(
    socks: list[socket.socket], buffers: dict[socket.socket, bytes], marker: bytes, timeout: float
) -> dict[socket.socket, float]:
    """Read every socket until ``marker`` arrived on it; returns arrival times.

    Only the last bytes of what was read before are kept (enough to find a marker that
    spans two reads), so reading 10,000 copies of the ruleset stays cheap.
    """
    sel = selectors.DefaultSelector()
    arrived: dict[socket.socket, float] = {}
    keep = len(marker)
    for sock in socks:
        if marker in buffers[sock]:
            arrived[sock] = time.perf_counter()
        else:
            sel.register(sock, selectors.EVENT_READ)
    deadline = time.perf_counter() + timeout
    while len(arrived) < len(socks) and time.perf_counter() < deadline:
        for key, _ in sel.select(timeout=0.1):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(262144)
            except (BlockingIOError, InterruptedError):
                continue
            if not data:
                sel.unregister(sock)
                continue
            seen = buffers[sock][-keep:] + data
            if marker in seen:
                arrived[sock] = time.perf_counter()
                buffers[sock] = b""
                sel.unregister(sock)
            else:
                buffers[sock] = seen[-keep:]
    sel.close()
    return arrived


def measure_streams(
    port: int, path: Path, streams: int, version: int, pids: list[int]
) -> dict[str, Any]:
    """Hold ``streams`` SSE connections, change the file, time its arrival on every one."""
    rss_before = rss_mib(pids)
    started = time.perf_counter()
    socks = [_open_stream(port) for _ in range(streams)]
    buffers = {s: b"" for s in socks}
    initial = _wait_all(socks, buffers, b"id: %d\n" % version, timeout=120)
    connect_seconds = time.perf_counter() - started
    rss_held = rss_mib(pids)
    for sock in socks:
        buffers[sock] = b""
    changed_at = time.perf_counter()
    write_ruleset(path, version + 1)
    arrived = _wait_all(socks, buffers, b"id: %d\n" % (version + 1), timeout=60)
    latencies = sorted(t - changed_at for t in arrived.values())
    for sock in socks:
        sock.close()

    def pct(q: float) -> float | None:
        if not latencies:
            return None
        return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    return {
        "streams": streams,
        "connected_with_initial_ruleset": len(initial),
        "connect_all_seconds": connect_seconds,
        "received_change": len(arrived),
        "change_latency_p50_ms": pct(0.50),
        "change_latency_p99_ms": pct(0.99),
        "change_latency_max_ms": 1000 * latencies[-1] if latencies else None,
        "server_rss_mib_idle": rss_before,
        "server_rss_mib_with_streams": rss_held,
        "note": "latency includes the file poll (every 0.2 s) and this one reader process",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--streams", type=int, default=TARGET_STREAMS)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    fd_limit = raise_fd_limit()
    if args.streams + 100 > fd_limit:
        print(f"--streams {args.streams}: the open-file limit is {fd_limit}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ruleset.json"
        write_ruleset(path, 1)
        proc, port = start_server(path, args.workers)
        pids = server_pids(proc)
        try:
            size = len(json.dumps(realistic_ruleset(RULESET_FLAGS), separators=(",", ":")))
            rps = [
                measure_rps(port, mode, args.clients, args.seconds, pids)
                for mode in ("304", "200", "gzip")
            ]
            streams = measure_streams(port, path, args.streams, version=1, pids=pids)
            # Throughput again while the streams of a second batch stay connected.
            held_count = min(args.streams, 1000)
            held = [_open_stream(port) for _ in range(held_count)]
            _wait_all(held, {s: b"" for s in held}, b"id: 2\n", timeout=120)  # all connected
            loaded = measure_rps(port, "304", args.clients, args.seconds, pids)
            loaded["mode"] = f"304 with {held_count} streams open"
            for sock in held:
                sock.close()
            rps.append(loaded)
        finally:
            if args.workers == 1:
                assert proc.stdin is not None
                proc.stdin.close()
            else:
                proc.terminate()
            proc.wait(timeout=20)

    print(
        f"phaseflag serve benchmark ({platform.python_version()}, {os.cpu_count()} CPUs, "
        f"{args.workers} worker(s), ruleset {size} bytes, {args.clients} keep-alive client "
        "processes)"
    )
    print(f"{'GET /sdk/ruleset':<32}{'requests':>10}{'errors':>8}{'req/s':>10}{'CPU us/req':>12}")
    for row in rps:
        cpu = row["server_cpu_us_per_request"] or 0
        print(
            f"{row['mode']:<32}{row['requests']:>10}{row['errors']:>8}{row['rps']:>10.0f}"
            f"{cpu:>12.0f}"
        )
    print(
        f"SSE: {streams['connected_with_initial_ruleset']}/{streams['streams']} got the initial "
        f"ruleset in {streams['connect_all_seconds']:.2f} s; "
        f"{streams['received_change']}/{streams['streams']} got the change, "
        f"p50 {streams['change_latency_p50_ms'] or 0:.0f} ms, "
        f"p99 {streams['change_latency_p99_ms'] or 0:.0f} ms, "
        f"max {streams['change_latency_max_ms'] or 0:.0f} ms after the file was written; "
        f"server RSS {streams['server_rss_mib_idle']:.0f} MiB idle, "
        f"{streams['server_rss_mib_with_streams']:.0f} MiB with the streams open"
    )

    results = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "workers": args.workers,
        "ruleset_bytes": size,
        "ruleset_requests": rps,
        "streams": streams,
        "targets": {"rps": TARGET_RPS, "streams": TARGET_STREAMS, "p99_ms": TARGET_P99_MS},
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    ok = all(r["errors"] == 0 and r["rps"] >= TARGET_RPS for r in rps)
    ok = ok and streams["received_change"] == args.streams
    ok = ok and streams["connected_with_initial_ruleset"] == args.streams
    ok = ok and (streams["change_latency_p99_ms"] or 1e9) < TARGET_P99_MS
    if not ok:
        print("FAILED: a target was missed", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
