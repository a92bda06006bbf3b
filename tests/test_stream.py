"""Tests for the streamer: SSE updates, fallback polling, reconnect backoff, prompt stop.

Everything runs against a real loopback SSE server defined here and a real Transport.
"""

from __future__ import annotations

import json
import queue
import random
import statistics
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import phaseflag_thread_names, wait_for

from phaseflag._client import PhaseFlagClient
from phaseflag._compile import load_ruleset
from phaseflag._errors import AuthenticationError, RulesetError, TransportError
from phaseflag._stream import Streamer
from phaseflag._transport import Transport

pytestmark = pytest.mark.e2e

KEY = "sdk-test-key-0123456789"


def _ruleset(version: int, value: bool = True) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "version": version,
        "flags": [
            {
                "key": "feature",
                "type": "boolean",
                "enabled": True,
                "variations": [{"key": "on", "value": True}, {"key": "off", "value": False}],
                "off_variation": "off",
                "default": {"variation": "on" if value else "off"},
            }
        ],
    }


def _event(kind: str, data: str) -> bytes:
    return f"event: {kind}\ndata: {data}\n\n".encode()


def _ruleset_event(version: int, value: bool = True) -> bytes:
    return _event("ruleset", json.dumps(_ruleset(version, value)))


# -- the loopback server ------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        if self.path == "/api/v1/sdk/stream":
            self._stream()
        elif self.path == "/api/v1/sdk/ruleset":
            self._ruleset()
        else:
            self._reply(404, b"")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._reply(202, b"")

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _ruleset(self) -> None:
        server = self.server
        with server.lock:
            server.ruleset_gets += 1
            status = server.ruleset_status
            body = json.dumps(server.ruleset).encode()
            server.polled.set()
        if status != 200:
            self._reply(status, b"")
            return
        self._reply(200, body, {"Content-Type": "application/json"})

    def _stream(self) -> None:
        server = self.server
        feed: queue.Queue[bytes | None] = queue.Queue()
        with server.lock:
            server.stream_requests += 1
            status = server.stream_status
            if server.refuse_until_polled and not server.polled.is_set():
                status = 503
            if status == 200:
                server.streams_served += 1
                feed.put(server.first_bytes or _event("ruleset", json.dumps(server.ruleset)))
                server.feeds.append(feed)
        if status != 200:
            self._reply(status, b"")
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        try:
            while not server.closing.is_set():
                try:
                    item = feed.get(timeout=0.05)
                except queue.Empty:
                    continue
                if item is None:
                    return
                self.wfile.write(item)
                self.wfile.flush()
        except OSError:
            return
        finally:
            with server.lock:
                server.feeds.remove(feed)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    """An SSE + ruleset endpoint whose streams the test feeds through queues."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.closing = threading.Event()
        self.polled = threading.Event()
        self.ruleset: dict[str, Any] = _ruleset(1)
        self.first_bytes: bytes | None = None
        self.stream_status = 200
        self.ruleset_status = 200
        self.refuse_until_polled = False
        self.stream_requests = 0
        self.streams_served = 0
        self.ruleset_gets = 0
        self.feeds: list[queue.Queue[bytes | None]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api/v1"

    def open_streams(self) -> int:
        with self.lock:
            return len(self.feeds)

    def push(self, data: bytes) -> None:
        with self.lock:
            for feed in self.feeds:
                feed.put(data)

    def close_streams(self) -> None:
        with self.lock:
            for feed in self.feeds:
                feed.put(None)


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield srv
    srv.closing.set()
    srv.shutdown()
    srv.server_close()
    thread.join(5)


@pytest.fixture
def transport(server: _Server) -> Iterator[Transport]:
    t = Transport(server.url, KEY, timeout=2.0, stream_read_timeout=10.0)
    yield t
    t.close()


# -- helpers ----------------------------------------------------------------------------------


class _Sink:
    """Records what the synchroniser reports; validates rulesets for real."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, object]] = []
        self.applied: list[tuple[int, str, float]] = []

    def apply_document(self, raw: bytes, source: str) -> None:
        version = load_ruleset(raw).version
        with self.lock:
            self.applied.append((version, source, time.monotonic()))
            self.calls.append(("apply", version))

    def sync_succeeded(self) -> None:
        with self.lock:
            self.calls.append(("ok", None))

    def sync_failed(self, error: Exception) -> None:
        with self.lock:
            self.calls.append(("failed", error))

    def versions(self) -> list[int]:
        with self.lock:
            return [version for version, _, _ in self.applied]

    def wait_version(self, version: int, timeout: float = 3.0) -> bool:
        return bool(wait_for(lambda: self.versions()[-1:] == [version], timeout))

    def failures(self) -> list[Exception]:
        with self.lock:
            return [e for kind, e in self.calls if kind == "failed" and isinstance(e, Exception)]


@pytest.fixture
def sink() -> _Sink:
    return _Sink()


@pytest.fixture
def streamer(transport: Transport, sink: _Sink) -> Iterator[Streamer]:
    s = Streamer(transport, sink, 0.2, rng=random.Random(7), reconnect_base=0.05, reconnect_cap=0.2)
    yield s
    assert s.stop(2.0)


def _started(streamer: Streamer, sink: _Sink) -> None:
    streamer.start()
    assert wait_for(lambda: sink.versions() == [1])


# -- behaviour ----------------------------------------------------------------------------------


def test_initial_ruleset_applied(server: _Server, streamer: Streamer, sink: _Sink) -> None:
    """The ruleset sent on connect is applied as live data and reported as a success."""
    _started(streamer, sink)
    assert wait_for(lambda: ("ok", None) in sink.calls)
    assert sink.applied[0][1] == "live"
    assert sink.calls == [("apply", 1), ("ok", None)]
    assert "phaseflag-stream" in phaseflag_thread_names()
    assert "phaseflag-sync" not in phaseflag_thread_names()
    assert not streamer.polling
    assert server.ruleset_gets == 0


def test_pushed_change_applied_quickly(server: _Server, streamer: Streamer, sink: _Sink) -> None:
    """A ruleset pushed on the open stream is applied from the stream itself (no poll, no
    reconnect), well within the margin a loaded 2-core machine keeps."""
    _started(streamer, sink)
    pushed = time.monotonic()
    server.push(_ruleset_event(2, value=False))
    assert wait_for(lambda: sink.versions() == [1, 2])
    assert sink.applied[-1][2] - pushed < 2.0
    assert (server.streams_served, server.ruleset_gets) == (1, 0)


def test_ping_only_marks_stream_alive(server: _Server, streamer: Streamer, sink: _Sink) -> None:
    """A ping updates last_event_at and reaches the sink not at all."""
    _started(streamer, sink)
    assert wait_for(lambda: len(sink.calls) == 2)
    before = streamer.last_event_at
    server.push(_event("ping", ""))
    server.push(b": comment\nevent: ping\ndata: {}\n\n")
    assert wait_for(lambda: streamer.last_event_at != before)
    server.push(_ruleset_event(2))
    assert wait_for(lambda: sink.versions() == [1, 2])
    assert sink.calls == [("apply", 1), ("ok", None), ("apply", 2), ("ok", None)]


def test_garbage_and_half_events_do_not_crash(
    server: _Server, streamer: Streamer, sink: _Sink
) -> None:
    """Garbage, unknown events and a half event cut by a close leave the thread working."""
    _started(streamer, sink)
    server.push(b"\x00\xff\xfe\xfd garbage\r\nretry: soon\nid\n\n:\n\n")
    server.push(b"event: surprise\ndata: 1\n\ndata: nameless\n\nevent: ruleset\n\n")
    server.push(_ruleset_event(2))
    assert wait_for(lambda: sink.versions() == [1, 2])
    assert sink.failures() == []
    server.ruleset = _ruleset(3)
    server.push(b'event: ruleset\ndata: {"schema_version": 1, "ver')
    server.close_streams()
    assert wait_for(lambda: server.streams_served == 2)
    assert wait_for(lambda: sink.versions()[-1] == 3)
    assert not any(isinstance(e, RulesetError) for e in sink.failures())
    assert "phaseflag-stream" in phaseflag_thread_names()


def test_invalid_ruleset_rejected_and_stream_kept(
    server: _Server, streamer: Streamer, sink: _Sink
) -> None:
    """A ruleset that is not JSON or fails the schema is reported; the stream stays open."""
    _started(streamer, sink)
    server.push(_event("ruleset", "{not json"))
    server.push(_event("ruleset", json.dumps({"schema_version": 1})))
    assert wait_for(lambda: len(sink.failures()) == 2)
    assert all(isinstance(e, RulesetError) for e in sink.failures())
    server.push(_ruleset_event(4))
    assert wait_for(lambda: sink.versions() == [1, 4])
    assert server.streams_served == 1
    assert not streamer.polling


def test_server_close_falls_back_to_polling_then_reconnects(
    server: _Server, streamer: Streamer, sink: _Sink
) -> None:
    """A closed stream starts the fallback poller; the stream's return stops it."""
    _started(streamer, sink)
    server.refuse_until_polled = True  # the stream stays down until a poll has happened
    server.ruleset = _ruleset(2)  # changed while the stream is down: only a poll sees it
    server.close_streams()
    assert wait_for(lambda: ("apply", 2) in sink.calls)
    assert server.ruleset_gets >= 1
    assert wait_for(lambda: server.streams_served == 2)
    assert wait_for(lambda: not streamer.polling)
    assert wait_for(lambda: "phaseflag-sync" not in phaseflag_thread_names())
    gets = server.ruleset_gets
    server.push(_ruleset_event(3))
    assert wait_for(lambda: sink.versions()[-1] == 3)
    assert server.ruleset_gets == gets  # no more polling once the stream is back


def test_refused_stream_reported_and_retried_with_backoff(
    server: _Server, transport: Transport, sink: _Sink
) -> None:
    """A 503 on the stream is reported; reconnect delays are full-jitter and capped."""
    server.stream_status = 503
    s = Streamer(transport, sink, 30.0, rng=random.Random(1), reconnect_base=1.0, reconnect_cap=4.0)
    try:
        delays = []
        for _ in range(5):
            delays.append(s.step())
            s._reconnect_at = 0.0  # as if the wait had passed: the next step reconnects
        assert s.polling
        assert all(0.0 <= d <= c for d, c in zip(delays, [1.0, 2.0, 4.0, 4.0, 4.0], strict=True))
        assert [type(e) for e in sink.failures()[:5]] == [TransportError] * 5
        assert all(getattr(e, "status", None) == 503 for e in sink.failures()[:5])
        assert server.stream_requests == 5
    finally:
        assert s.stop(2.0)


def test_auth_failure_uses_long_backoff(server: _Server, transport: Transport, sink: _Sink) -> None:
    """A 401 on the stream is reported and the next connect waits the long auth backoff."""
    server.stream_status = 401
    server.ruleset_status = 401
    s = Streamer(transport, sink, 30.0, rng=random.Random(3), reconnect_base=0.05)
    try:
        first = s.step()
        s._reconnect_at = 0.0  # as if the wait had passed: the next step reconnects
        second = s.step()
        assert 30.0 <= first <= 60.0
        assert 30.0 <= second <= 120.0
        failure = sink.failures()[0]
        assert isinstance(failure, AuthenticationError)
        assert failure.status == 401
        assert s.polling  # a 403 may be stream-only, so polling still gets its chance
    finally:
        assert s.stop(2.0)


def test_stop_while_blocked_in_read_is_prompt(streamer: Streamer, sink: _Sink) -> None:
    """stop() interrupts a read on a silent stream and leaves no phaseflag thread."""
    _started(streamer, sink)
    assert wait_for(lambda: ("ok", None) in sink.calls)
    started = time.monotonic()
    assert streamer.stop(1.0)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, elapsed
    assert "phaseflag-stream" not in phaseflag_thread_names()
    # The request watchdog ends on its own once the aborted stream is forgotten.
    assert wait_for(lambda: phaseflag_thread_names() == [], timeout=1.0)
    assert sink.failures() == []  # stopping is not a failure


def test_stop_ends_fallback_polling(server: _Server, transport: Transport, sink: _Sink) -> None:
    """While the stream is down the stream thread itself polls (no second thread); stop()
    ends it promptly."""
    server.stream_status = 503
    s = Streamer(transport, sink, 0.05, reconnect_base=5.0)
    try:
        s.start()
        assert wait_for(lambda: server.ruleset_gets >= 2)
        # One sync thread (the request watchdog may be up while a poll is in flight).
        names = [n for n in phaseflag_thread_names() if n != "phaseflag-watchdog"]
        assert names == ["phaseflag-stream"]
        started = time.monotonic()
        assert s.stop(1.0)
        assert time.monotonic() - started < 1.0
    finally:
        s.stop(2.0)
    assert wait_for(lambda: phaseflag_thread_names() == [])


def test_after_first_runs_once_after_the_first_poll(
    server: _Server, transport: Transport, sink: _Sink
) -> None:
    """after_first (the bootstrap URL) runs once in the stream thread, after the stream's
    first failure and the poll standing in for it, never before live data is tried."""
    server.stream_status = 503
    seen: list[tuple[str, int, int]] = []
    s = Streamer(
        transport,
        sink,
        0.05,
        after_first=lambda: seen.append(
            (threading.current_thread().name, server.stream_requests, server.ruleset_gets)
        ),
        reconnect_base=0.05,
    )
    try:
        s.start()
        assert wait_for(lambda: server.stream_requests >= 2 and server.ruleset_gets >= 2)
        assert seen == [("phaseflag-stream", 1, 1)]
    finally:
        assert s.stop(2.0)


def test_interval_reaches_fallback_poller(
    server: _Server, transport: Transport, sink: _Sink
) -> None:
    """Setting interval while polling retimes the running fallback poller."""
    server.stream_status = 503
    s = Streamer(transport, sink, 30.0, reconnect_base=5.0)
    try:
        s.start()
        assert wait_for(lambda: server.ruleset_gets == 1)
        s.interval = 0.02
        assert s.interval == 0.02
        assert wait_for(lambda: server.ruleset_gets >= 3)
    finally:
        assert s.stop(2.0)


def test_restart_after_stop_reconnects(server: _Server, streamer: Streamer, sink: _Sink) -> None:
    """A stopped streamer can be started again and opens a new stream."""
    _started(streamer, sink)
    assert streamer.stop(1.0)
    server.ruleset = _ruleset(2)
    streamer.start()
    assert wait_for(lambda: sink.versions() == [1, 2])
    assert server.streams_served == 2


def test_client_streaming_end_to_end(server: _Server) -> None:
    """A streaming client serves a pushed change and keeps it when a bad ruleset follows."""
    client = PhaseFlagClient(
        base_url=server.url, api_key="k" * 16, fetch_mode="streaming", bootstrap=None
    )
    errors: list[object] = []
    client.on("error", errors.append)
    try:
        client.start()
        assert client.wait_until_ready(3.0)
        assert client.get_boolean_value("feature", False) is True
        server.push(_ruleset_event(2, value=False))
        assert wait_for(lambda: client.get_boolean_value("feature", True) is False)
        server.push(_event("ruleset", "{broken"))
        assert wait_for(lambda: errors)
        assert client.get_boolean_value("feature", True) is False
        assert client.ruleset.version == 2
    finally:
        client.stop()


def test_push_to_apply_latency(server: _Server, streamer: Streamer, sink: _Sink) -> None:
    """100 pushed changes are each applied in order from the one open stream; p50/p99
    latency is printed (a sanity bound only: the stream never waits for a poll)."""
    _started(streamer, sink)
    latencies = []
    for version in range(2, 102):
        pushed = time.monotonic()
        server.push(_ruleset_event(version, value=version % 2 == 0))
        assert sink.wait_version(version, timeout=2.0)
        latencies.append(sink.applied[-1][2] - pushed)
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[98] * 1000
    print(f"\npush -> apply over {len(latencies)} changes: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    assert p50 < 1000.0
    assert (server.streams_served, server.ruleset_gets) == (1, 0)


def test_idle_stream_that_delivered_is_polled_and_reopened(
    server: _Server, transport: Transport, sink: _Sink
) -> None:
    """A stream that delivered a ruleset and then only keeps quiet past its idle limit is
    polled once and reopened at once; that is not a failure."""
    s = Streamer(transport, sink, 30.0, reconnect_base=0.05, reconnect_cap=0.2, idle_limit=0.3)
    try:
        s.start()
        assert wait_for(lambda: sink.versions()[:1] == [1])
        assert wait_for(lambda: server.streams_served >= 2 and server.ruleset_gets >= 1)
        assert sink.failures() == []
    finally:
        assert s.stop(2.0)
