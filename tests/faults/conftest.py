"""The fault server (a raw-socket HTTP/1.1 server on 127.0.0.1 whose faults switch at run time),
clients tuned to retry within milliseconds, and the read-latency probe every scenario uses.

Each endpoint has a mode (``server.set(ruleset="hang")``); a handler stuck in a fault (hang,
stall, trickle) lets go as soon as any mode changes, so recovery is the client's own work.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest
from conftest import boolean_flag, rule, ruleset, string_flag, wait_for

import phaseflag._backoff
import phaseflag._events
import phaseflag._transport
from phaseflag import EvaluationContext, PhaseFlagClient
from phaseflag._backoff import Backoff
from phaseflag._stream import Streamer

KEY = "sdk-faults-0123456789abcdef"
#: The context every probe read uses: the rule on ``plan`` decides the value.
CONTEXT = EvaluationContext(user_id="user-1", attributes={"plan": "pro", "country": "US"})
#: Bound on the 99th-percentile read latency while a fault is going on.
READ_P99_LIMIT_US = 2000.0  # a blocked read takes seconds; a loaded 2-core machine keeps 2 ms
#: What fast clients use: short enough for quick tests, long enough for a loaded CI box.
REQUEST_TIMEOUT = 0.5
POLL = 0.05
RETRY_CAP = 0.2
#: 10 MiB: the ruleset download limit.
LIMIT = phaseflag._transport.DEFAULT_MAX_BODY_BYTES
HUGE = 500 * 1024 * 1024
_CHUNK = 64 * 1024
_HANDLER_POLL = 0.01


def document(version: int, value: bool, *, padding: int = 40) -> dict[str, Any]:
    """A ruleset whose ``flag`` serves ``value`` to CONTEXT (through a rule), plus filler flags."""
    target = "on" if value else "off"
    flags = [
        boolean_flag("flag", not value, rules=[rule("plan", "in", ["pro", "enterprise"], target)]),
        *(string_flag(f"filler-{i:03d}", f"value-{i}") for i in range(padding)),
    ]
    return ruleset(*flags, version=version)


# -- the server ---------------------------------------------------------------------------------


@dataclass
class Received:
    """One request as the fault server parsed it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FaultServer:
    """HTTP/1.1 on raw sockets, so that every byte (and every missing byte) is under test control.

    Endpoints (under ``/api/v1``): ``GET /sdk/ruleset``, ``POST /sdk/events``,
    ``POST /sdk/evaluate`` and ``GET /sdk/stream``, each with a mode set by
    ``set(ruleset=..., events=..., evaluate=..., stream=...)``.
    Ruleset modes: ``ok`` (200 + ETag, 304 on a match), ``hang`` (never answers), ``stall``
    (headers and 100 body bytes, then silence), ``trickle`` (one byte per ``trickle_every``
    seconds), ``reset`` (half the body, then a TCP RST), ``close`` (closes without a byte),
    ``truncated_gzip``, ``html``, ``bad_schema``, ``nan_weight``, ``deep`` (100k ``[``),
    ``huge_declared`` (Content-Length 500 MB), ``huge_unframed`` (no length, close-delimited),
    ``huge_chunked``,
    ``gzip_bomb``, ``retry_after`` (503, Retry-After: 3600), ``flap`` (503 and 200 in turn),
    ``trickle_head`` (the status line, then one header byte per ``trickle_every`` seconds),
    ``redirect_other`` (302 to ``redirect_to``), ``redirect_same`` (302 to ``ruleset-moved``
    on this server) and ``503``. Events modes: ``ok`` (202, payload kept), ``503``,
    ``retry_after``, ``hang``, ``trickle_head`` and ``cut_head`` (``200 OK`` and half a
    header, then a clean close: what http.client reads as a complete answer). Evaluate
    modes: ``ok``, ``trickle_head`` and ``trickle`` (a long body, byte by byte). Stream
    modes: ``heartbeat`` (``:`` comments only), ``bad_utf8`` (one ruleset with a byte that
    is not UTF-8), ``ok`` (the ruleset, then pushes and pings), ``garbage`` (noise,
    broken and half events, then close) and ``503``.

    ``hits[(endpoint, mode)]`` counts requests, ``sent[mode]`` body bytes the kernel accepted
    and ``transfers[mode]`` those of each response of the huge modes; ``down()``/``up()``
    close and reopen the port (connection refused between);
    ``blackhole()`` stops accepting and fills the backlog (connects time out) until ``up()``.
    """

    def __init__(self, doc: dict[str, Any]) -> None:
        self.document = doc
        self.modes = {"ruleset": "ok", "events": "ok", "stream": "ok", "evaluate": "ok"}
        #: Where ``redirect_other`` sends the ruleset request (another origin's API root).
        self.redirect_to = ""
        self.keep_alive = True
        self.trickle_every = 0.05
        self.lock = threading.Lock()
        self.hits: Counter[tuple[str, str]] = Counter()
        self.sent: Counter[str] = Counter()
        self.transfers: dict[str, list[int]] = {}
        self.requests: list[Received] = []
        self.log: list[tuple[str, str, float]] = []  # (endpoint, mode, monotonic time)
        self.event_payloads: list[dict[str, Any]] = []
        self.generation = 0
        self.port = 0
        self._flap = 0
        self._stopping = threading.Event()
        self._accepting = threading.Event()
        self._idle = threading.Event()
        self._listener: socket.socket | None = None
        self._fillers: list[socket.socket] = []
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []

    # -- control ----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/api/v1``."""
        return self.url_for("127.0.0.1")

    def url_for(self, host: str) -> str:
        """The API root under another host name (for resolver faults)."""
        return f"http://{host}:{self.port}/api/v1"

    def set(self, **modes: str) -> None:
        """Switch endpoint modes; handlers stuck in the previous fault let go."""
        if "gzip_bomb" in modes.values():
            _bomb()  # built before it is served, so that building it cannot time a request out
        with self.lock:
            self.modes.update(modes)
            self.generation += 1

    def publish(self, doc: dict[str, Any]) -> None:
        """Serve ``doc`` from now on (and push it on open streams)."""
        with self.lock:
            self.document = doc

    def count(self, endpoint: str, mode: str) -> int:
        """How many requests ``endpoint`` got while in ``mode``."""
        with self.lock:
            return self.hits[endpoint, mode]

    def times(self, endpoint: str, mode: str) -> list[float]:
        """When ``endpoint`` was requested in ``mode`` (``time.monotonic()``)."""
        with self.lock:
            return [t for e, m, t in self.log if (e, m) == (endpoint, mode)]

    def event_ids(self) -> list[Any]:
        """``metadata["id"]`` of every custom event received, in arrival order."""
        with self.lock:
            return [
                e["metadata"]["id"]
                for p in self.event_payloads
                for e in p["events"]
                if e.get("kind") == "custom"
            ]

    def start(self) -> None:
        """Bind a free port and start accepting."""
        self._listen()
        thread = threading.Thread(target=self._accept_loop, name="fault-server", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        """Close every socket and join the server's threads."""
        self._stopping.set()
        self.down()
        for thread in self._threads:
            thread.join(5)

    def down(self) -> None:
        """Close the listening socket and every connection: new connects are refused."""
        self._accepting.clear()
        with self.lock:
            listener, self._listener = self._listener, None
            conns = list(self._conns)
            fillers, self._fillers = self._fillers, []
        for sock in [*fillers, *conns]:
            _shut(sock)
        if listener is not None:
            listener.close()

    def up(self) -> None:
        """Listen (again) on the same port and accept connections."""
        with self.lock:
            listener = self._listener
            fillers, self._fillers = self._fillers, []
        if listener is None:
            self._listen()
        else:
            listener.listen(64)
        for sock in fillers:
            sock.close()
        self._accepting.set()

    def blackhole(self) -> None:
        """Stop accepting and fill the accept queue, so that connects time out."""
        self._idle.clear()
        self._accepting.clear()
        assert self._idle.wait(2), "the accept loop did not pause"
        self.drop_connections()
        with self.lock:
            listener = self._listener
        assert listener is not None
        listener.listen(0)
        while True:
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.settimeout(0.2)
            try:
                filler.connect(("127.0.0.1", self.port))
            except OSError:
                filler.close()
                return
            with self.lock:
                self._fillers.append(filler)

    def drop_connections(self) -> None:
        """Close every open connection (kept-alive ones too), keeping the port open."""
        with self.lock:
            conns = list(self._conns)
        for sock in conns:
            _shut(sock)

    # -- sockets ------------------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(_HANDLER_POLL * 5)
        self.port = listener.getsockname()[1]
        with self.lock:
            self._listener = listener
        self._accepting.set()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            if not self._accepting.is_set():
                self._idle.set()
                self._accepting.wait(_HANDLER_POLL)
                continue
            with self.lock:
                listener = self._listener
            if listener is None:
                continue
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _CHUNK)
            conn.settimeout(30)
            with self.lock:
                self._conns.add(conn)
            thread = threading.Thread(
                target=self._serve, args=(conn,), name="fault-conn", daemon=True
            )
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        try:
            while not self._stopping.is_set():
                request, buffer = _read_request(conn, buffer)
                if request is None:
                    return
                with self.lock:
                    self.requests.append(request)
                if not self._dispatch(conn, request):
                    return
        except OSError:
            return
        finally:
            with self.lock:
                self._conns.discard(conn)
            conn.close()

    # -- dispatch ---------------------------------------------------------------------------

    def _dispatch(self, conn: socket.socket, request: Received) -> bool:
        """Answer one request; False closes the connection."""
        endpoint = request.path.split("?", 1)[0].removeprefix("/api/v1/sdk/")
        with self.lock:
            mode = self.modes.get(endpoint, "missing")
            self.hits[endpoint, mode] += 1
            self.log.append((endpoint, mode, time.monotonic()))
            doc, generation = self.document, self.generation
        if endpoint == "events" and request.method == "POST":
            return self._events(conn, request, mode, generation)
        if endpoint == "stream" and request.method == "GET":
            return self._stream(conn, mode, generation)
        if endpoint == "ruleset" and request.method == "GET":
            return self._ruleset(conn, request, mode, doc, generation)
        if endpoint == "ruleset-moved" and request.method == "GET":  # redirect_same's target
            return self._ruleset(conn, request, "ok", doc, generation)
        if endpoint == "evaluate" and request.method == "POST":
            return self._evaluate(conn, mode, generation)
        return self._reply(conn, 404, {}, b"{}")

    def _evaluate(self, conn: socket.socket, mode: str, gen: int) -> bool:
        answer = b'{"flag_key": "flag", "value": "remote", "reason": "TARGETING_MATCH"}'
        if mode == "ok":
            return self._reply(conn, 200, {"Content-Type": "application/json"}, answer)
        if mode == "trickle_head":
            self._trickle_head(conn, mode, gen)
            return False
        if mode == "trickle":
            self._head(conn, 200, {"Content-Length": str(len(answer) * 1000)})
            self._trickle(conn, mode, answer * 1000, gen)
            return False
        raise AssertionError(f"unknown evaluate mode {mode!r}")

    def _trickle_head(self, conn: socket.socket, mode: str, gen: int) -> None:
        """A status line, then one header byte per ``trickle_every`` seconds, never done."""
        if not self._send(conn, mode, b"HTTP/1.1 200 OK\r\nX-Pad: "):
            return
        while self._hold(gen, self.trickle_every) and self._send(conn, mode, b"a"):
            pass

    def _trickle(self, conn: socket.socket, mode: str, body: bytes, gen: int) -> None:
        for i in range(len(body)):
            if not self._send(conn, mode, body[i : i + 1]) or not self._hold(
                gen, self.trickle_every
            ):
                return

    def _ruleset(
        self, conn: socket.socket, request: Received, mode: str, doc: dict[str, Any], gen: int
    ) -> bool:
        body = json.dumps(doc).encode()
        etag = f'"v{doc["version"]}"'
        if mode == "flap":
            with self.lock:
                self._flap += 1
                mode = "503" if self._flap % 2 else "ok"
        if mode == "ok":
            if request.headers.get("if-none-match") == etag:
                return self._reply(conn, 304, {"ETag": etag}, b"")
            return self._reply(conn, 200, {"ETag": etag, "Content-Type": "application/json"}, body)
        if mode == "503":
            return self._reply(conn, 503, {}, b'{"error": "unavailable"}')
        if mode == "retry_after":
            return self._reply(conn, 503, {"Retry-After": "3600"}, b'{"error": "later"}')
        if mode == "html":
            page = b"<!doctype html><html><body><h1>502 Bad Gateway</h1></body></html>"
            return self._reply(conn, 200, {"Content-Type": "text/html"}, page)
        if mode == "bad_schema":
            bad = {"schema_version": 1, "version": 999, "flags": [{"key": 7, "type": "maybe"}]}
            return self._reply(conn, 200, {"ETag": '"bad"'}, json.dumps(bad).encode())
        if mode == "nan_weight":  # valid to the schema, yet NaN is not a number to compile
            split = {"variations": [{"variation": "on", "weight": math.nan}]}
            bad = document(999, False)
            bad["flags"][0]["default"] = {"rollout": split}
            return self._reply(conn, 200, {}, json.dumps(bad).encode())
        if mode == "deep":
            return self._reply(conn, 200, {"Content-Type": "application/json"}, b"[" * 100_000)
        if mode == "truncated_gzip":
            packed = gzip.compress(body)
            cut = packed[: len(packed) // 2]
            return self._reply(conn, 200, {"Content-Encoding": "gzip"}, cut)
        if mode == "gzip_bomb":
            return self._reply(conn, 200, {"Content-Encoding": "gzip"}, _bomb())
        if mode == "hang":
            self._hold(gen)
            return False
        if mode == "close":
            return False
        if mode == "trickle_head":
            self._trickle_head(conn, mode, gen)
            return False
        if mode == "redirect_other":
            return self._reply(conn, 302, {"Location": self.redirect_to + "/sdk/ruleset"}, b"")
        if mode == "redirect_same":
            return self._reply(conn, 302, {"Location": "/api/v1/sdk/ruleset-moved"}, b"")
        return self._broken_body(conn, mode, body, gen)

    def _broken_body(self, conn: socket.socket, mode: str, body: bytes, gen: int) -> bool:
        if mode == "stall":
            self._head(conn, 200, {"Content-Length": str(len(body))})
            self._send(conn, mode, body[:100])
            self._hold(gen)
        elif mode == "trickle":
            self._head(conn, 200, {"Content-Length": str(len(body))})
            self._trickle(conn, mode, body, gen)
        elif mode == "reset":
            self._head(conn, 200, {"Content-Length": str(len(body))})
            self._send(conn, mode, body[: len(body) // 2])
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif mode.startswith("huge_"):
            headers = {
                "huge_declared": {"Content-Length": str(HUGE)},
                "huge_unframed": {"Connection": "close"},
                "huge_chunked": {"Transfer-Encoding": "chunked"},
            }[mode]
            self._head(conn, 200, headers)
            filler = b" " * _CHUNK
            if mode == "huge_chunked":
                filler = f"{len(filler):x}\r\n".encode() + filler + b"\r\n"
            total = 0
            while total < HUGE and self._send(conn, mode, filler):
                total += len(filler)
            with self.lock:
                self.transfers.setdefault(mode, []).append(total)
        else:
            raise AssertionError(f"unknown ruleset mode {mode!r}")
        return False

    def _events(self, conn: socket.socket, request: Received, mode: str, gen: int) -> bool:
        if mode == "ok":
            with self.lock:
                self.event_payloads.append(json.loads(request.body))
            return self._reply(conn, 202, {}, b"")
        if mode == "hang":
            self._hold(gen)
            return False
        if mode == "trickle_head":
            self._trickle_head(conn, mode, gen)
            return False
        if mode == "cut_head":
            self._send(conn, mode, b"HTTP/1.1 200 OK\r\nX-Pad: a")
            return False
        if mode == "retry_after":
            return self._reply(conn, 503, {"Retry-After": "3600"}, b"{}")
        return self._reply(conn, 503, {}, b"{}")

    def _stream(self, conn: socket.socket, mode: str, gen: int) -> bool:
        if mode not in ("ok", "garbage", "heartbeat", "bad_utf8"):
            return self._reply(conn, 503, {}, b"{}")
        self._head(conn, 200, {"Content-Type": "text/event-stream", "Connection": "close"})
        if mode == "heartbeat":  # comments only, every 20 ms: a live socket, never data
            while self._hold(gen, 0.02) and self._send(conn, mode, b": heartbeat\n\n"):
                pass
            return False
        if mode == "bad_utf8":  # one ruleset whose bytes are not UTF-8, then silence
            with self.lock:
                doc = self.document
            data = json.dumps(doc).encode().replace(b'"value-0"', b'"value-\xff0"')
            self._send(conn, mode, b"event: ruleset\ndata: " + data + b"\n\n")
            self._hold(gen)
            return False
        if mode == "garbage":
            for piece in _GARBAGE:
                if not self._send(conn, mode, piece):
                    break
            return False
        sent_version = None
        pinged = time.monotonic()
        while self._hold(gen, _HANDLER_POLL):
            with self.lock:
                doc = self.document
            if doc["version"] != sent_version:
                sent_version = doc["version"]
                event = f"event: ruleset\ndata: {json.dumps(doc)}\n\n".encode()
                if not self._send(conn, mode, event):
                    break
            elif time.monotonic() - pinged > 0.2:
                pinged = time.monotonic()
                if not self._send(conn, mode, b"event: ping\ndata: {}\n\n"):
                    break
        return False

    # -- writing ------------------------------------------------------------------------------

    def _hold(self, generation: int, seconds: float | None = None) -> bool:
        """Wait ``seconds`` (or for good); False as soon as the modes change or the server stops."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            with self.lock:
                changed = self.generation != generation
            if changed or self._stopping.is_set():
                return False
            if deadline is not None and time.monotonic() >= deadline:
                return True
            self._stopping.wait(_HANDLER_POLL)

    def _head(self, conn: socket.socket, status: int, headers: dict[str, str]) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Whatever')}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if not self.keep_alive and "Connection" not in headers:
            lines.append("Connection: close")
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def _reply(
        self, conn: socket.socket, status: int, headers: dict[str, str], body: bytes
    ) -> bool:
        self._head(conn, status, {**headers, "Content-Length": str(len(body))})
        if body:
            conn.sendall(body)
        return self.keep_alive

    def _send(self, conn: socket.socket, mode: str, data: bytes) -> bool:
        """Send ``data``, counting it; False when the client has gone."""
        try:
            conn.sendall(data)
        except OSError:
            return False
        with self.lock:
            self.sent[mode] += len(data)
        return True


_REASONS = {200: "OK", 202: "Accepted", 304: "Not Modified", 404: "Not Found", 503: "Unavailable"}

# What a broken proxy or a confused server might put on an event stream.
_GARBAGE = [
    b"\x00\xff\xfe\x89PNG\r\n\x1a\n binary noise",
    b"\n\n",
    b"data: {not json at all\n\n",
    b'event: ruleset\ndata: {"schema_version": 1, "versi\n\n',
    b'event: ruleset\ndata: {"schema_version": 1, "version": 77, "flags": "nope"}\n\n',
    b"event: ruleset\ndata: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n\n",
    b"event: surprise\ndata: \xc3\x28\xa0\xa1\n\n",
    b"retry: soon\nid: \x00\nevent\n\n",
    b'event: ruleset\ndata: {"schema_version": 1, "version": 78, "flags": [',
]


@cache
def _bomb() -> bytes:
    """About 70 KiB of gzip that inflates to 64 MiB of zeros."""
    return gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=1)


def _read_request(conn: socket.socket, buffer: bytes) -> tuple[Received | None, bytes]:
    while b"\r\n\r\n" not in buffer:
        data = conn.recv(_CHUNK)
        if not data or len(buffer) > _CHUNK:
            return None, b""
        buffer += data
    head, _, rest = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length") or 0)
    while len(rest) < length:
        data = conn.recv(_CHUNK)
        if not data:
            return None, b""
        rest += data
    return Received(method, path, headers, rest[:length]), rest[length:]


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrink the retry ceilings so that each fault clears within a second."""
    monkeypatch.setattr(phaseflag._backoff, "RETRY_CAP", RETRY_CAP)
    monkeypatch.setattr(phaseflag._events, "_BACKOFF_CAP", RETRY_CAP)


@pytest.fixture
def server() -> Iterator[FaultServer]:
    """A running FaultServer serving ``document(1, True)``."""
    srv = FaultServer(document(1, True))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def make_client() -> Iterator[Callable[..., PhaseFlagClient]]:
    """``make_client(base_url, **options)``: a started client tuned for fast retries.

    Polls every 50 ms, flushes events every 50 ms, times requests out after 0.5 s; a
    streaming client reconnects within 20-200 ms. Every client is stopped afterwards.
    """
    made: list[PhaseFlagClient] = []

    def make(base_url: str, **options: Any) -> PhaseFlagClient:
        settings: dict[str, Any] = {
            "polling_interval": POLL,
            "event_flush_interval": POLL,
            "request_timeout": REQUEST_TIMEOUT,
            **options,
        }
        client = PhaseFlagClient(base_url=base_url, api_key=KEY, **settings)
        made.append(client)
        if settings.get("fetch_mode") == "streaming":
            assert client._transport is not None
            client._sync = Streamer(
                client._transport, client._store, POLL, reconnect_base=0.02, reconnect_cap=RETRY_CAP
            )
        if client._events is not None:
            client._events._backoff = Backoff(0.02, RETRY_CAP)
        client.start()
        return client

    yield make
    for client in reversed(made):
        client.stop()


@pytest.fixture
def live_client(
    server: FaultServer, make_client: Callable[..., PhaseFlagClient]
) -> PhaseFlagClient:
    """A polling client that has applied version 1 from ``server`` (serving True)."""
    client = make_client(server.base_url)
    assert client.wait_until_ready(5)
    assert client.ruleset.version == 1
    return client


# -- probes -------------------------------------------------------------------------------------


def read_p99_us(client: PhaseFlagClient, expected: bool, count: int = 20_000) -> float:
    """Read ``flag`` ``count`` times; every read must be ``expected``; returns the p99 in µs."""
    get, clock, ctx = client.get_boolean_value, time.perf_counter_ns, CONTEXT
    samples = [0] * count
    wrong = 0
    for i in range(count):
        start = clock()
        value = get("flag", not expected, ctx)
        samples[i] = clock() - start
        wrong += value is not expected
    assert wrong == 0, f"{wrong} of {count} reads did not serve the last good value"
    samples.sort()
    return samples[int(count * 0.99)] / 1000


def hit(
    server: FaultServer, mode: str, times: int = 2, endpoint: str = "ruleset"
) -> Callable[[], bool]:
    """A predicate: ``endpoint`` has been requested ``times`` times in ``mode``."""
    return lambda: server.count(endpoint, mode) >= times


def failed(client: PhaseFlagClient, times: int = 2) -> Callable[[], bool]:
    """A predicate: the client's sync has failed ``times`` times in a row."""
    return lambda: client.status().consecutive_failures >= times


def serves_during_fault(client: PhaseFlagClient, met: Callable[[], bool]) -> float:
    """Wait until ``met()`` (the client is meeting the fault); then reads must serve True, fast.

    Returns the read p99 in µs (already checked against READ_P99_LIMIT_US).
    """
    wait_for(met, timeout=10)
    p99 = read_p99_us(client, True)
    assert p99 < READ_P99_LIMIT_US, f"read p99 {p99:.1f} µs during the fault"
    assert client.ruleset.version == 1
    return p99


def recovers(
    client: PhaseFlagClient, server: FaultServer, *, version: int = 2, **modes: str
) -> float:
    """Publish ``version`` (serving False), end the fault, and wait until the client serves it.

    Returns the seconds from the fault's end to the new version being served.
    """
    server.publish(document(version, False))
    began = time.monotonic()
    server.set(**(modes or {"ruleset": "ok"}))
    wait_for(lambda: client.ruleset.version == version, timeout=10)
    assert client.get_boolean_value("flag", True, CONTEXT) is False
    return time.monotonic() - began
