"""Shared test helpers: ruleset builders, ``wait_for``, a loopback PhaseFlag API, client fixtures.

Two autouse fixtures apply to every test: one fails a test that leaves a ``phaseflag-*`` thread
alive (a client started and never stopped), one hides the shell's ``PHASEFLAG_*`` variables.
Test modules import the plain helpers directly: ``from conftest import ruleset, wait_for``.

Markers (registered in pyproject.toml): a test that starts processes, servers or sockets is
marked ``e2e``, ``fault``, ``soak``, ``redis``, ``browser`` or ``slow``; a test using one of
``SERVER_FIXTURES`` is marked ``e2e`` here; every other test gets ``unit``, the loop a
maintainer runs on each edit (``python -m pytest -q -m unit``). External conformance data is
found through ``require_conformance``: missing data skips locally and fails in CI (``CI=true``).
"""

from __future__ import annotations

import gc
import gzip
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

#: Seconds a test's leftover ``phaseflag-*`` threads get to finish before the test fails.
THREAD_LEAK_GRACE = 2.0

#: Markers of the tests that only CI runs; a test with none of them is a ``unit`` test.
CI_MARKERS = frozenset({"slow", "e2e", "fault", "soak", "redis", "browser"})
#: Fixtures that start a real server on loopback: tests using them are ``e2e``.
SERVER_FIXTURES = frozenset(
    {"loopback_api", "fault_server", "tls_api", "tls_server", "stream_server"}
)

#: External conformance data (never copied into the repository): ``../shared/conformance``
#: beside the checkout, or the directory named by ``PHASEFLAG_CONFORMANCE_DIR``.
CONFORMANCE = Path(
    os.environ.get("PHASEFLAG_CONFORMANCE_DIR")
    or Path(__file__).resolve().parents[2] / "shared" / "conformance"
)


def require_conformance(path: Path, what: str = "conformance data") -> Path:
    """Return ``path`` if it exists; otherwise skip the test, or fail it when ``CI`` is set.

    CI must never pass by skipping the conformance suites, so there a missing directory is
    an error that names where the data was looked for.
    """
    if path.exists():
        return path
    message = f"{what} not found at {path} (set PHASEFLAG_CONFORMANCE_DIR)"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests using a server fixture ``e2e``, and every test CI_MARKERS miss ``unit``."""
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
        if not CI_MARKERS.intersection(mark.name for mark in item.iter_markers()):
            item.add_marker(pytest.mark.unit)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Collect the session's garbage until none is left, then freeze what is still alive.

    Pytest's unraisable-exception check then runs five full collections over the heap the
    tests leave (about 1.5 s of the unit loop); after this they have nothing left to walk.
    Garbage is still collected here, while that check listens, so nothing it would report
    is hidden: only objects a full collection found reachable are frozen.
    """
    for _ in range(5):
        if not gc.collect():
            gc.freeze()
            return


Flag = dict[str, Any]
Document = dict[str, Any]

# -- ruleset builders ------------------------------------------------------------------------
#
# Each builder returns a plain JSON-ready dict; keyword arguments become (or replace) fields
# of the flag, e.g. ``boolean_flag("f", enabled=False, track_events=True, rules=[...])``.


def flag(key: str, type: str, variations: Mapping[str, Any], *, serve: str, **fields: Any) -> Flag:
    """A flag of ``type`` with ``variations`` ({variation key: value}) serving ``serve``."""
    names = list(variations)
    out: Flag = {
        "key": key,
        "type": type,
        "enabled": True,
        "variations": [{"key": name, "value": value} for name, value in variations.items()],
        "off_variation": names[-1],
        "default": {"variation": serve},
    }
    out.update(fields)
    return out


def boolean_flag(key: str, value: bool = True, **fields: Any) -> Flag:
    """A boolean flag with variations ``on``/``off`` serving ``value`` by default (off: ``off``)."""
    return flag(
        key, "boolean", {"on": True, "off": False}, serve="on" if value else "off", **fields
    )


def string_flag(key: str, value: str = "blue", *, off: str = "off", **fields: Any) -> Flag:
    """A string flag serving ``value`` (variation ``value``) by default; off serves ``off``."""
    return flag(key, "string", {"value": value, "off": off}, serve="value", **fields)


def number_flag(key: str, value: float = 42, *, off: float = 0, **fields: Any) -> Flag:
    """A number flag serving ``value`` (variation ``value``) by default; off serves ``off``."""
    return flag(key, "number", {"value": value, "off": off}, serve="value", **fields)


def json_flag(key: str, value: Any = None, **fields: Any) -> Flag:
    """A JSON flag serving ``value`` (default ``{"a": 1}``) by default; off serves ``{}``."""
    payload = {"a": 1} if value is None else value
    return flag(key, "json", {"value": payload, "off": {}}, serve="value", **fields)


def rule(
    attribute: str, operator: str, values: Sequence[Any], variation: str, **fields: Any
) -> dict[str, Any]:
    """A one-condition targeting rule serving ``variation``."""
    out = {
        "conditions": [{"attribute": attribute, "operator": operator, "values": list(values)}],
        "serve": {"variation": variation},
    }
    out.update(fields)
    return out


def ruleset(*flags: Flag, version: int = 1, segments: Sequence[Mapping[str, Any]] = ()) -> Document:
    """A schema_version 1 ruleset document holding ``flags`` and ``segments``."""
    return {
        "schema_version": 1,
        "version": version,
        "flags": list(flags),
        "segments": [dict(s) for s in segments],
    }


def to_bytes(document: Any) -> bytes:
    """The JSON bytes of ``document``, as an API or cache would hold them."""
    return json.dumps(document).encode("utf-8")


# -- waiting ---------------------------------------------------------------------------------

# Seconds to wait for readiness or a first sync failure: a margin a loaded 2-core CI keeps
# (a TLS handshake or a first fetch can take seconds there; the waits end as soon as the
# condition holds).
READY_WAIT = 10.0


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.005) -> Any:
    """Poll ``predicate`` until it returns a truthy value, and return that value.

    Fails the test (with the predicate's name) when ``timeout`` seconds pass first. This is
    the way to wait for a background thread: never ``time.sleep`` a guessed duration.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            name = getattr(predicate, "__qualname__", repr(predicate))
            pytest.fail(f"wait_for: {name} still false after {timeout} s")
        threading.Event().wait(interval)  # a bounded pause between polls, not a sync point


def phaseflag_threads() -> list[threading.Thread]:
    """The live threads whose names start with ``phaseflag-`` (the SDK's own threads)."""
    return [t for t in threading.enumerate() if t.name.startswith("phaseflag-") and t.is_alive()]


def phaseflag_thread_names() -> list[str]:
    """Sorted names of the live ``phaseflag-*`` threads."""
    return sorted(t.name for t in phaseflag_threads())


# -- leaked-thread check (autouse) -------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a ``phaseflag-*`` thread running after it ends.

    Threads that were already running before the test (leaked by an earlier, already
    failed test) are ignored, so one leak is reported once. Threads get THREAD_LEAK_GRACE
    seconds to end, which covers a stop() whose join is still finishing.
    """
    before = set(phaseflag_threads())
    yield
    deadline = time.monotonic() + THREAD_LEAK_GRACE
    leaked = [t for t in phaseflag_threads() if t not in before]
    for thread in leaked:
        thread.join(max(0.0, deadline - time.monotonic()))
    leaked = [t for t in leaked if t.is_alive()]
    if leaked:
        names = ", ".join(sorted(t.name for t in leaked))
        pytest.fail(f"test leaked running phaseflag threads: {names} (stop() every client)")


@pytest.fixture(autouse=True)
def clean_phaseflag_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide any ``PHASEFLAG_*`` environment variables of the developer's shell from tests."""
    for name in list(os.environ):
        if name.startswith("PHASEFLAG_"):
            monkeypatch.delenv(name)


# -- clients -------------------------------------------------------------------------------------


@pytest.fixture
def make_client() -> Iterator[Callable[..., Any]]:
    """A factory ``make_client(**options) -> PhaseFlagClient`` that stops every client it made.

    Options are passed to PhaseFlagClient as they are (give ``base_url`` and ``api_key``).
    The clients are not started. Request this fixture after any fixture that mocks HTTP
    (e.g. a ``responses`` mock), so clients stop before the mock is removed.
    """
    from phaseflag import PhaseFlagClient

    made: list[PhaseFlagClient] = []

    def make(**options: Any) -> PhaseFlagClient:
        client = PhaseFlagClient(**options)
        made.append(client)
        return client

    yield make
    for client in reversed(made):
        client.stop()


# -- a loopback PhaseFlag API --------------------------------------------------------------------


@dataclass
class Request:
    """One request the loopback API received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass
class LoopbackAPI:
    """A real HTTP server on 127.0.0.1 speaking the PhaseFlag SDK protocol (DESIGN §3).

    ``GET /api/v1/sdk/ruleset`` serves ``document`` with an ETag derived from its version
    and honours If-None-Match (304); ``status`` forces another status for that endpoint.
    ``POST /api/v1/sdk/events`` answers 202 and keeps the payloads in ``event_payloads``.
    Set ``document`` (or call ``publish``) from the test to change what is served; every
    request is recorded in ``requests``. Thread-safe.
    """

    document: Document = field(default_factory=lambda: ruleset(boolean_flag("flag")))
    status: int | None = None
    gzip: bool = False
    requests: list[Request] = field(default_factory=list)
    event_payloads: list[Any] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        """The API root (``http://127.0.0.1:<port>/api/v1``) to give a client."""
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/v1"

    def publish(self, document: Document) -> None:
        """Serve ``document`` from now on."""
        with self.lock:
            self.document = document

    def calls(self, path: str) -> list[Request]:
        """The recorded requests to ``path`` (e.g. ``"/sdk/ruleset"``)."""
        with self.lock:
            return [r for r in self.requests if r.path == "/api/v1" + path]

    def events(self) -> list[dict[str, Any]]:
        """Every event object received so far, across payloads."""
        with self.lock:
            return [e for p in self.event_payloads for e in p.get("events", [])]

    def _handle(self, handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        path = handler.path.split("?", 1)[0]
        with self.lock:
            self.requests.append(Request(handler.command, path, dict(handler.headers), body))
            document, status = self.document, self.status
        if path == "/api/v1/sdk/ruleset" and handler.command == "GET":
            if status is not None:
                return status, {}, b"{}"
            etag = f'"v{document.get("version")}"'
            if handler.headers.get("If-None-Match") == etag:
                return 304, {"ETag": etag}, b""
            raw = to_bytes(document)
            headers = {"ETag": etag, "Content-Type": "application/json"}
            if self.gzip:
                raw = gzip.compress(raw)
                headers["Content-Encoding"] = "gzip"
            return 200, headers, raw
        if path == "/api/v1/sdk/events" and handler.command == "POST":
            with self.lock:
                self.event_payloads.append(json.loads(body))
            return 202, {}, b""
        return 404, {}, b'{"error": "not found"}'


def _handler_for(api: LoopbackAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _respond(self) -> None:
            status, headers, body = api._handle(self)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body and self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = _respond

        def log_message(self, format: str, *args: Any) -> None:
            """Keep the test output quiet."""

    return Handler


class _LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # http.server's 5 refuses connections when many clients start


@pytest.fixture
def loopback_api() -> Iterator[LoopbackAPI]:
    """A running LoopbackAPI on 127.0.0.1 (a free port), shut down after the test."""
    api = LoopbackAPI()
    server = _LoopbackServer(("127.0.0.1", 0), _handler_for(api))
    api.server = server
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="loopback-api", daemon=True
    )
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
