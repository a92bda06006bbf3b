"""Benchmark ``phaseflag serve``: ruleset requests per second and 200 held SSE streams.

Run: ``python benchmarks/bench_server.py [--seconds 3] [--clients 4] [--streams 200]``.
The server runs in its own process; load comes from client processes, each holding one
keep-alive ``http.client`` connection. Prints a table and writes
``benchmarks/results_server.json``; exits non-zero when a target is missed.
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
TARGET_STREAMS = 200
RULESET_FLAGS = 40

SERVER_CODE = """
import sys, threading
from phaseflag.server import PhaseFlagServer
server = PhaseFlagServer(sys.argv[1], api_keys=[sys.argv[2]])
server.start()
print(server.port, flush=True)
sys.stdin.read()  # run until the parent closes our stdin
server.stop()
"""


def write_ruleset(path: Path, version: int) -> None:
    """Replace the file atomically (as a deploy would)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(realistic_ruleset(RULESET_FLAGS, version)), "utf-8")
    os.replace(tmp, path)


def start_server(path: Path) -> tuple[subprocess.Popen[str], int]:
    """Start the server process; returns it and its port."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER_CODE, str(path), API_KEY],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, port


def _load_worker(port: int, mode: str, seconds: float, start_at: float, out: Any) -> None:
    """One client process: GET /sdk/ruleset on one keep-alive connection until time is up."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
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


def measure_rps(port: int, mode: str, clients: int, seconds: float) -> dict[str, Any]:
    """Requests per second over ``clients`` keep-alive connections (one process each)."""
    ctx = mp.get_context("fork" if hasattr(os, "fork") else "spawn")
    queue = ctx.Queue()
    start_at = time.time() + 0.5
    procs = [
        ctx.Process(target=_load_worker, args=(port, mode, seconds, start_at, queue))
        for _ in range(clients)
    ]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=seconds + 30) for _ in procs]
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
    """Read every socket until its buffer holds ``marker``; returns arrival times."""
    sel = selectors.DefaultSelector()
    arrived: dict[socket.socket, float] = {}
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
            data = sock.recv(1 << 20)
            if not data:
                sel.unregister(sock)
                continue
            buffers[sock] += data
            if marker in buffers[sock]:
                arrived[sock] = time.perf_counter()
                sel.unregister(sock)
    sel.close()
    return arrived


def measure_streams(port: int, path: Path, streams: int, version: int) -> dict[str, Any]:
    """Hold ``streams`` SSE connections, change the file, time its arrival on every one."""
    started = time.perf_counter()
    socks = [_open_stream(port) for _ in range(streams)]
    buffers = {s: b"" for s in socks}
    initial = _wait_all(socks, buffers, b"id: %d\n" % version, timeout=30)
    connect_seconds = time.perf_counter() - started
    for sock in socks:
        buffers[sock] = b""
    changed_at = time.perf_counter()
    write_ruleset(path, version + 1)
    arrived = _wait_all(socks, buffers, b"id: %d\n" % (version + 1), timeout=30)
    latencies = sorted(t - changed_at for t in arrived.values())
    for sock in socks:
        sock.close()
    return {
        "streams": streams,
        "connected_with_initial_ruleset": len(initial),
        "connect_all_seconds": connect_seconds,
        "received_change": len(arrived),
        "change_latency_p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
        "change_latency_max_ms": 1000 * latencies[-1] if latencies else None,
        "note": "latency includes the file poll (default: every 0.2 s)",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--streams", type=int, default=TARGET_STREAMS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ruleset.json"
        write_ruleset(path, 1)
        proc, port = start_server(path)
        try:
            size = len(json.dumps(realistic_ruleset(RULESET_FLAGS), separators=(",", ":")))
            rps = [
                measure_rps(port, mode, args.clients, args.seconds)
                for mode in ("304", "200", "gzip")
            ]
            streams = measure_streams(port, path, args.streams, version=1)
            # Throughput again while the streams of a second batch stay connected.
            held = [_open_stream(port) for _ in range(args.streams)]
            loaded = measure_rps(port, "304", args.clients, args.seconds)
            loaded["mode"] = f"304 with {args.streams} streams open"
            for sock in held:
                sock.close()
            rps.append(loaded)
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=10)

    print(
        f"phaseflag serve benchmark ({platform.python_version()}, {os.cpu_count()} CPUs, "
        f"ruleset {size} bytes, {args.clients} keep-alive client processes)"
    )
    print(f"{'GET /sdk/ruleset':<32}{'requests':>10}{'errors':>8}{'req/s':>10}")
    for row in rps:
        print(f"{row['mode']:<32}{row['requests']:>10}{row['errors']:>8}{row['rps']:>10.0f}")
    print(
        f"SSE: {streams['connected_with_initial_ruleset']}/{streams['streams']} got the initial "
        f"ruleset in {streams['connect_all_seconds']:.2f} s; "
        f"{streams['received_change']}/{streams['streams']} got the change, "
        f"p50 {streams['change_latency_p50_ms']:.0f} ms, "
        f"max {streams['change_latency_max_ms']:.0f} ms after the file was written"
    )

    results = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "ruleset_bytes": size,
        "ruleset_requests": rps,
        "streams": streams,
        "targets": {"rps": TARGET_RPS, "streams": TARGET_STREAMS},
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    ok = all(r["errors"] == 0 and r["rps"] >= TARGET_RPS for r in rps)
    ok = ok and streams["received_change"] == args.streams >= TARGET_STREAMS
    ok = ok and streams["connected_with_initial_ruleset"] == args.streams
    if not ok:
        print("FAILED: a target was missed", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
