"""``phaseflag serve`` over real loopback HTTP: the SDK API, limits, file watching and SSE."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import requests
from conftest import boolean_flag, number_flag, rule, ruleset, string_flag, wait_for

from phaseflag._errors import ConfigError, RulesetError
from phaseflag._sse import SSEEvent, parse_sse
from phaseflag._transport import Transport
from phaseflag.server import Limits, PhaseFlagServer
from phaseflag.server._watch import RulesetWatcher

pytestmark = pytest.mark.e2e

KEY = "test-key-3f9a1c77"
AUTH = {"Authorization": f"Bearer {KEY}"}


def document(version: int = 1) -> dict[str, Any]:
    """The ruleset the tests serve: a targeted boolean flag and two static ones."""
    return ruleset(
        boolean_flag("checkout", False, rules=[rule("plan", "in", ["pro"], "on", id="paid")]),
        string_flag("color", "blue"),
        number_flag("limit", 10),
        version=version,
    )


def write(path: Path, payload: Any) -> None:
    """Replace the ruleset file's contents."""
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload), "utf-8")


@pytest.fixture
def ruleset_path(tmp_path: Path) -> Path:
    """A ruleset file holding version 1."""
    path = tmp_path / "ruleset.json"
    write(path, document(1))
    return path


@pytest.fixture
def server(ruleset_path: Path, tmp_path: Path) -> Iterator[PhaseFlagServer]:
    """A started server with one API key, an events file and fast pings."""
    srv = PhaseFlagServer(
        str(ruleset_path),
        api_keys=[KEY],
        events_out=str(tmp_path / "events.jsonl"),
        ping_interval=0.2,
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def api(server: PhaseFlagServer) -> Iterator[requests.Session]:
    """A keep-alive session sending the API key."""
    with requests.Session() as session:
        session.headers.update(AUTH)
        yield session


def root(server: PhaseFlagServer) -> str:
    """``http://127.0.0.1:<port>`` without the API prefix."""
    return server.url.removesuffix("/api/v1")


def raw_exchange(server: PhaseFlagServer, data: bytes, *, close_early: bool = False) -> bytes:
    """Send raw bytes on a new connection; return everything the server answers."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(data)
        if close_early:
            return b""
        with contextlib.suppress(OSError):  # the server may have closed already
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


class SSEClient:
    """A raw-socket Server-Sent Events reader for ``/sdk/stream``."""

    def __init__(self, server: PhaseFlagServer, headers: bytes = b"") -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        self.sock.sendall(
            b"GET /api/v1/sdk/stream HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n"
            b"Authorization: Bearer " + KEY.encode() + b"\r\n" + headers + b"\r\n"
        )
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            chunk = self.sock.recv(65536)
            assert chunk, "the server closed the stream before its headers"
            buffer += chunk
        self.head, rest = buffer.split(b"\r\n\r\n", 1)
        self.events = parse_sse(self._chunks(rest))

    def _chunks(self, first: bytes) -> Iterator[bytes]:
        yield first
        while chunk := self.sock.recv(65536):
            yield chunk

    def next_event(self, kind: str) -> SSEEvent:
        """The next event named ``kind`` (skipping others); fails on a 5 s silence."""
        for event in self.events:
            if event.event == kind:
                return event
        raise AssertionError("the stream ended")

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()


class TestRuleset:
    """GET /sdk/ruleset: body, ETag, 304 and gzip."""

    def test_serves_the_document_with_a_strong_etag(self, server: PhaseFlagServer, api):
        """The body is the validated document and the ETag is a quoted, strong tag."""
        resp = api.get(server.url + "/sdk/ruleset", headers={"Accept-Encoding": "identity"})
        assert resp.status_code == 200
        assert resp.headers["Content-Type"] == "application/json"
        assert resp.json() == document(1)
        etag = resp.headers["ETag"]
        assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
        assert etag == server.etag

    def test_matching_if_none_match_gets_304(self, server: PhaseFlagServer, api):
        """A held ETag (strong or weak form) gets an empty 304; another tag gets the body."""
        etag = api.get(server.url + "/sdk/ruleset").headers["ETag"]
        for held in (etag, "W/" + etag, f'"other", {etag}'):
            resp = api.get(server.url + "/sdk/ruleset", headers={"If-None-Match": held})
            assert resp.status_code == 304
            assert resp.content == b""
            assert resp.headers["ETag"] == etag
        resp = api.get(server.url + "/sdk/ruleset", headers={"If-None-Match": '"stale"'})
        assert resp.status_code == 200

    def test_gzip_only_when_accepted(self, server: PhaseFlagServer, api):
        """Accept-Encoding: gzip gets gzip bytes of the same document; identity gets plain."""
        url = server.url + "/sdk/ruleset"
        zipped = api.get(url, headers={"Accept-Encoding": "gzip"}, stream=True)
        assert zipped.headers["Content-Encoding"] == "gzip"
        assert zipped.headers["Vary"] == "Accept-Encoding"
        assert json.loads(gzip.decompress(zipped.raw.read(decode_content=False))) == document(1)
        plain = api.get(url, headers={"Accept-Encoding": "gzip;q=0, identity"})
        assert "Content-Encoding" not in plain.headers
        assert plain.json() == document(1)

    def test_head_sends_headers_only(self, server: PhaseFlagServer, api):
        """HEAD answers with the GET headers (ETag, length) and no body."""
        resp = api.head(server.url + "/sdk/ruleset", headers={"Accept-Encoding": "identity"})
        assert resp.status_code == 200
        assert resp.headers["ETag"] == server.etag
        assert int(resp.headers["Content-Length"]) > 0
        assert resp.content == b""

    def test_connections_are_kept_alive(self, server: PhaseFlagServer):
        """Several requests travel over one HTTP/1.1 connection."""
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        try:
            conn.request("GET", "/api/v1/sdk/ruleset", headers=AUTH)
            conn.getresponse().read()
            sock = conn.sock
            for _ in range(3):
                conn.request("GET", "/api/v1/sdk/ruleset", headers=AUTH)
                assert conn.getresponse().read()
                assert conn.sock is sock
        finally:
            conn.close()

    def test_sdk_transport_reads_it(self, server: PhaseFlagServer):
        """The SDK's own Transport fetches the ruleset and gets a 304 with its ETag."""
        transport = Transport(server.url, KEY)
        try:
            first = transport.fetch_ruleset(None)
            assert first.body is not None and json.loads(first.body) == document(1)
            assert transport.fetch_ruleset(first.etag).not_modified
        finally:
            transport.close()


class TestAuth:
    """Bearer keys, X-API-Key, the open mode and what is never logged."""

    @pytest.mark.parametrize(
        "headers",
        [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}],
        ids=["missing", "wrong", "not-bearer"],
    )
    def test_without_a_valid_key_401(self, server: PhaseFlagServer, headers: dict[str, str]):
        """A missing, wrong or non-bearer key gets a 401 JSON error on every API route."""
        for method, path in [
            ("GET", "/sdk/ruleset"),
            ("GET", "/sdk/stream"),
            ("POST", "/sdk/events"),
            ("POST", "/sdk/evaluate"),
        ]:
            resp = requests.request(method, server.url + path, headers=headers, timeout=5)
            assert resp.status_code == 401, path
            assert resp.json()["error"] == "unauthorized"
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            assert KEY not in resp.text

    def test_any_configured_key_and_x_api_key_work(self, ruleset_path: Path):
        """Every configured key is accepted, as bearer or as X-API-Key."""
        with PhaseFlagServer(str(ruleset_path), api_keys=["first-key", "second-key"]) as srv:
            url = srv.url + "/sdk/ruleset"
            for headers in (
                {"Authorization": "Bearer second-key"},
                {"Authorization": "bearer first-key"},
                {"X-API-Key": "second-key"},
            ):
                assert requests.get(url, headers=headers, timeout=5).status_code == 200

    def test_no_keys_means_open_with_a_warning(self, ruleset_path: Path, caplog):
        """Without keys every route answers, and start() warns that the server is open."""
        caplog.set_level(logging.WARNING, logger="phaseflag")
        with PhaseFlagServer(str(ruleset_path)) as srv:
            assert requests.get(srv.url + "/sdk/ruleset", timeout=5).status_code == 200
        assert any("no API keys" in r.getMessage() for r in caplog.records)

    def test_keys_never_logged(self, server: PhaseFlagServer, caplog):
        """Neither a good nor a bad key appears in any log record, even at DEBUG."""
        caplog.set_level(logging.DEBUG, logger="phaseflag")
        requests.get(server.url + "/sdk/ruleset", headers=AUTH, timeout=5)
        requests.get(server.url + "/sdk/ruleset", headers={"X-API-Key": "bad-secret"}, timeout=5)
        text = caplog.text + repr(server)
        assert caplog.records
        assert KEY not in text and "bad-secret" not in text

    def test_health_needs_no_key(self, server: PhaseFlagServer):
        """/healthz answers without a key with versions and the flag count."""
        health = requests.get(root(server) + "/healthz", timeout=5).json()
        assert health["status"] == "ok"
        assert health["ruleset_version"] == 1
        assert health["flag_count"] == 3
        assert health["version"]
        assert health["ruleset_error"] is None


class TestEvaluate:
    """POST /sdk/evaluate."""

    def test_returns_the_result(self, server: PhaseFlagServer, api):
        """The answer is the EvaluationResult dict for the posted context."""
        body = {
            "flag_key": "checkout",
            "context": {"user_id": "u1", "session_id": None, "attributes": {"plan": "pro"}},
        }
        resp = api.post(server.url + "/sdk/evaluate", json=body)
        assert resp.status_code == 200
        assert resp.json() == {
            "flag_key": "checkout",
            "value": True,
            "reason": "targeting_match",
            "variation_key": "on",
            "rule_id": "paid",
        }

    def test_unencodable_key_is_still_answered(self, server: PhaseFlagServer, api):
        """A flag key holding a lone surrogate escape gets a JSON 404, not a 500."""
        body = b'{"flag_key": "\\ud800", "context": {}}'
        resp = api.post(server.url + "/sdk/evaluate", data=body)
        assert resp.status_code == 404
        assert resp.json()["flag_key"] == "\ud800"

    def test_unknown_flag_404(self, server: PhaseFlagServer, api):
        """An unknown flag is 404 with error code FLAG_NOT_FOUND."""
        resp = api.post(server.url + "/sdk/evaluate", json={"flag_key": "nope", "context": {}})
        assert resp.status_code == 404
        assert resp.json()["error_code"] == "FLAG_NOT_FOUND"

    @pytest.mark.parametrize(
        "body",
        [
            {"flag_key": "checkout", "context": {"attributes": {"plan": {"nested": 1}}}},
            {"flag_key": "checkout", "context": {"user_id": ["x"]}},
            {"flag_key": "checkout", "context": {"attributes": []}},
            {"flag_key": "checkout", "context": "u1"},
            {"context": {}},
            ["checkout"],
        ],
        ids=[
            "nested-attribute",
            "list-user-id",
            "list-attributes",
            "string-context",
            "no-flag-key",
            "not-object",
        ],
    )
    def test_bad_request_400(self, server: PhaseFlagServer, api, body: Any):
        """A malformed body or context is 400 with a message."""
        resp = api.post(server.url + "/sdk/evaluate", json=body)
        assert resp.status_code == 400
        assert resp.json()["message"]


class TestEvents:
    """POST /sdk/events and the events file."""

    def test_concurrent_posters_lose_and_interleave_nothing(
        self, server: PhaseFlagServer, tmp_path: Path
    ):
        """Two clients posting at once: every event is one valid JSON line, none missing."""
        batches, per_batch = 40, 25
        failures: list[int] = []

        def post(poster: int) -> None:
            with requests.Session() as session:
                for b in range(batches):
                    events = [
                        {
                            "kind": "custom",
                            "flag_key": "checkout",
                            "metadata": {"poster": poster, "batch": b, "i": i, "pad": "x" * 300},
                        }
                        for i in range(per_batch)
                    ]
                    resp = session.post(
                        server.url + "/sdk/events",
                        headers=AUTH,
                        json={"sdk": {"name": "t"}, "events": events},
                    )
                    if resp.status_code != 202:
                        failures.append(resp.status_code)

        threads = [threading.Thread(target=post, args=(p,)) for p in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert failures == []
        lines = (tmp_path / "events.jsonl").read_bytes().splitlines()
        assert len(lines) == 2 * batches * per_batch
        seen = {
            (e["metadata"]["poster"], e["metadata"]["batch"], e["metadata"]["i"])
            for e in map(json.loads, lines)
        }
        assert len(seen) == 2 * batches * per_batch

    def test_accepted_with_202(self, server: PhaseFlagServer, api, tmp_path: Path):
        """A batch gets 202 and its events are appended exactly as sent."""
        event = {
            "kind": "summary",
            "start": 1,
            "end": 2,
            "counters": [{"flag_key": "a", "variation_key": "on", "count": 3}],
        }
        resp = api.post(server.url + "/sdk/events", json={"sdk": {}, "events": [event]})
        assert resp.status_code == 202
        assert json.loads((tmp_path / "events.jsonl").read_text("utf-8")) == event

    @pytest.mark.parametrize(
        "body",
        [
            b"{not json",
            b"",
            b'{"events": [{"kind": "custom", "value": NaN}]}',
            b"[]",
            b'{"events": {}}',
            b'{"events": [1]}',
            b'{"events": [{"no": "kind"}]}',
            b'{"sdk": 1, "events": []}',
            b"[" * 100_000,
        ],
        ids=[
            "bad-json",
            "empty",
            "nan",
            "array",
            "events-object",
            "event-number",
            "no-kind",
            "sdk-number",
            "deep",
        ],
    )
    def test_bad_payload_400(self, server: PhaseFlagServer, api, tmp_path: Path, body: bytes):
        """Bad JSON or a bad shape is 400 with a message, and nothing is written."""
        resp = api.post(
            server.url + "/sdk/events", data=body, headers={"Content-Type": "application/json"}
        )
        assert resp.status_code == 400
        assert resp.json()["message"]
        assert (tmp_path / "events.jsonl").read_bytes() == b""


class TestLimitsAndRobustness:
    """Size limits and malformed traffic never take the server down."""

    def test_body_too_large_413(self, server: PhaseFlagServer, api):
        """A body over 1 MiB is refused with 413 (and the client reads the answer)."""
        resp = api.post(server.url + "/sdk/events", data=b"x" * (1024 * 1024 + 1))
        assert resp.status_code == 413
        assert "limit" in resp.json()["message"]

    def test_headers_too_large_431(self, server: PhaseFlagServer):
        """Request headers over 16 KiB are refused with 431."""
        answer = raw_exchange(
            server, b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 431 ")

    @pytest.mark.parametrize(
        ("data", "status"),
        [
            (b"GARBAGE\r\n\r\n", b"400"),
            (b"GET /healthz HTTP/9.9\r\n\r\n", b"505"),
            (b"\x00\xff\x16\x03\x01 binary\r\n\r\n", b"400"),
            (b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n", b"400"),
            (b"POST /api/v1/sdk/events HTTP/1.1\r\nContent-Length: -5\r\n\r\n", b"400"),
            (b"POST /api/v1/sdk/events HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n", b"400"),
            (b"POST /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\n", b"400"),
            (b"POST /healthz HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", b"501"),
            (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", b"414"),
        ],
        ids=[
            "garbage",
            "http-9",
            "tls-bytes",
            "bad-header",
            "negative-length",
            "superscript-length",
            "negative-chunk",
            "unknown-coding",
            "long-line",
        ],
    )
    def test_malformed_requests_get_an_error(self, server: PhaseFlagServer, data, status):
        """Malformed HTTP gets a 4xx/5xx answer and the server keeps serving."""
        assert raw_exchange(server, data).startswith(b"HTTP/1.1 " + status)
        assert requests.get(root(server) + "/healthz", timeout=5).status_code == 200

    def test_abrupt_disconnects_are_harmless(self, server: PhaseFlagServer):
        """Clients vanishing mid-headers, mid-body or mid-stream leave the server serving."""
        raw_exchange(server, b"GET /api/v1/sdk/rule", close_early=True)
        raw_exchange(
            server,
            b"POST /api/v1/sdk/events HTTP/1.1\r\nContent-Length: 100\r\n"
            b"Authorization: Bearer " + KEY.encode() + b'\r\n\r\n{"ev',
            close_early=True,
        )
        stream = SSEClient(server)
        stream.close()
        assert requests.get(root(server) + "/healthz", timeout=5).status_code == 200

    def test_chunked_body_is_read(self, server: PhaseFlagServer):
        """A chunked request body is accepted like a Content-Length one."""
        body = b'{"events": [{"kind": "custom"}]}'
        answer = raw_exchange(
            server,
            b"POST /api/v1/sdk/events HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\nAuthorization: Bearer "
            + KEY.encode()
            + b"\r\n\r\n"
            + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body),
        )
        assert answer.startswith(b"HTTP/1.1 202 ")

    def test_unknown_path_404_and_wrong_method_405(self, server: PhaseFlagServer, api):
        """Unknown paths are 404 and known paths with another method 405 with Allow."""
        assert api.get(server.url + "/nope").status_code == 404
        resp = api.post(server.url + "/sdk/ruleset", json={})
        assert resp.status_code == 405
        assert resp.headers["Allow"] == "GET, HEAD"


class TestWatching:
    """The ruleset file is watched: valid changes served, invalid ones refused."""

    def test_change_served_within_a_second(self, server: PhaseFlagServer, ruleset_path, api):
        """A valid edit is served (new body and ETag) within 1 s."""
        old_etag = server.etag
        write(ruleset_path, document(2))

        def served_version() -> int:
            return api.get(server.url + "/sdk/ruleset").json()["version"] == 2

        wait_for(served_version, timeout=1.0)
        assert server.etag != old_etag

    def test_invalid_edit_refused_last_good_served(
        self, server: PhaseFlagServer, ruleset_path: Path, api, caplog
    ):
        """Broken JSON or a schema error is logged and refused; the last good version stays."""
        caplog.set_level(logging.ERROR, logger="phaseflag")
        for bad in ("{broken", json.dumps({"schema_version": 1, "version": 5, "flags": [{}]})):
            caplog.clear()
            write(ruleset_path, bad)
            # Refused once the file has settled (2 s after the write).
            wait_for(lambda: any("refused" in r.getMessage() for r in caplog.records), 10.0)
            assert api.get(server.url + "/sdk/ruleset").json() == document(1)
            health = requests.get(root(server) + "/healthz", timeout=5).json()
            assert health["ruleset_version"] == 1 and health["ruleset_error"]
        write(ruleset_path, document(3))
        wait_for(lambda: server.ruleset.version == 3, 1.0)
        assert requests.get(root(server) + "/healthz", timeout=5).json()["ruleset_error"] is None

    def test_missing_file_keeps_serving(self, server: PhaseFlagServer, ruleset_path: Path, api):
        """Deleting the file keeps the last version served; restoring it picks it up."""
        ruleset_path.unlink()
        wait_for(lambda: requests.get(root(server) + "/healthz", timeout=5).json()["ruleset_error"])
        assert api.get(server.url + "/sdk/ruleset").json() == document(1)
        write(ruleset_path, document(4))
        wait_for(lambda: server.ruleset.version == 4, 1.0)

    def test_reload_reads_now(self, server: PhaseFlagServer, ruleset_path: Path):
        """reload() applies a change at once and reports whether one was applied."""
        write(ruleset_path, document(7))
        assert server.reload() or server.ruleset.version == 7  # the poller may win the race
        assert server.ruleset.version == 7
        assert server.reload() is False

    def test_unchanged_file_is_not_reread(self, ruleset_path: Path):
        """Polling an old, unchanged file only stats it; a new write is then picked up."""
        old = time.time() - 60
        os.utime(ruleset_path, (old, old))
        watcher = RulesetWatcher(str(ruleset_path))
        watcher.load()
        with mock.patch.object(watcher, "_read", wraps=watcher._read) as read:
            assert not any(watcher.check() for _ in range(3))
            assert read.call_count == 0
            write(ruleset_path, document(2))
            assert watcher.check() is True
        assert watcher.snapshot.version == 2

    def test_half_written_file_is_refused_only_once_settled(self, ruleset_path: Path, caplog):
        """A write in place read half-done (a cut file with a fresh mtime) is neither refused,
        logged nor counted: the whole file is served when it lands. Contents that still do not
        load once the file is 2 s old are refused, and the last good version stays."""
        caplog.set_level(logging.ERROR, logger="phaseflag")
        watcher = RulesetWatcher(str(ruleset_path))
        watcher.load()
        whole = json.dumps(document(2))
        ruleset_path.write_text(whole[: len(whole) // 2], "utf-8")
        assert watcher.check() is False
        assert (watcher.reload_errors, watcher.last_error) == (0, None)
        ruleset_path.write_text(whole, "utf-8")
        assert watcher.check() is True
        assert watcher.snapshot.version == 2
        assert watcher.reload_errors == 0 and not caplog.records

        ruleset_path.write_text("{broken", "utf-8")
        assert watcher.check() is False
        assert watcher.reload_errors == 0  # still settling
        settled = time.time() - 60
        os.utime(ruleset_path, (settled, settled))
        assert watcher.check() is False
        assert watcher.reload_errors == 1 and watcher.last_error
        assert [r.getMessage().split(":")[0] for r in caplog.records] == ["phaseflag serve"]
        assert watcher.snapshot.version == 2

    def test_start_refuses_a_bad_file(self, tmp_path: Path):
        """start() raises ConfigError for a missing file and RulesetError for an invalid one."""
        with pytest.raises(ConfigError):
            PhaseFlagServer(str(tmp_path / "missing.json")).start()
        bad = tmp_path / "bad.json"
        write(bad, {"schema_version": 1, "flags": "nope"})
        with pytest.raises(RulesetError):
            PhaseFlagServer(str(bad)).start()


class TestStream:
    """GET /sdk/stream: Server-Sent Events."""

    def test_initial_ruleset_change_and_pings(self, server: PhaseFlagServer, ruleset_path):
        """The stream sends the ruleset at once (id = version), pings, then each change."""
        stream = SSEClient(server)
        try:
            assert stream.head.startswith(b"HTTP/1.1 200 ")
            assert b"content-type: text/event-stream" in stream.head.lower()
            first = stream.next_event("ruleset")
            assert (first.id, json.loads(first.data)) == ("1", document(1))
            assert stream.next_event("ping").data
            write(ruleset_path, document(2))
            second = stream.next_event("ruleset")
            assert (second.id, json.loads(second.data)) == ("2", document(2))
        finally:
            stream.close()

    def test_every_client_gets_the_change(self, server: PhaseFlagServer, ruleset_path: Path):
        """A change is pushed to every connected stream."""
        streams = [SSEClient(server) for _ in range(5)]
        try:
            for stream in streams:
                assert stream.next_event("ruleset").id == "1"
            wait_for(
                lambda: (
                    requests.get(root(server) + "/healthz", timeout=5).json()["stream_clients"] == 5
                )
            )
            write(ruleset_path, document(2))
            assert all(stream.next_event("ruleset").id == "2" for stream in streams)
        finally:
            for stream in streams:
                stream.close()

    def test_sdk_transport_reads_it(self, server: PhaseFlagServer):
        """The SDK's own Transport parses the stream's first event."""
        transport = Transport(server.url, KEY)
        try:
            event = next(iter(transport.open_stream()))
            assert (event.event, event.id) == ("ruleset", "1")
        finally:
            transport.close()

    def test_stop_ends_open_streams(self, ruleset_path: Path):
        """stop() closes open streams (the client sees the end) and joins every thread."""
        srv = PhaseFlagServer(str(ruleset_path), ping_interval=60)
        srv.start()
        stream = SSEClient(srv)
        stream.next_event("ruleset")
        srv.stop()
        with pytest.raises(AssertionError, match="ended"):
            stream.next_event("ruleset")
        stream.close()
        assert not [t for t in threading.enumerate() if t.name.startswith("phaseflag-server")]


class TestLifecycle:
    """Configuration checks, the connection cap and the blocking ``run()`` entry point."""

    @pytest.mark.parametrize("keys", [[""], ["ok", " padded "], "single-string"])
    def test_malformed_keys_refused(self, ruleset_path: Path, keys: Any):
        """Empty or padded keys, or one string instead of a list, raise ConfigError."""
        with pytest.raises(ConfigError, match="api_keys") as info:
            PhaseFlagServer(str(ruleset_path), api_keys=keys)
        assert "padded" not in str(info.value)

    def test_connection_cap_answers_503(self, ruleset_path: Path):
        """Past ``max_connections`` a new connection gets 503; a closed stream frees its slot
        at its next ping."""
        limits = Limits(max_connections=1)
        with PhaseFlagServer(str(ruleset_path), limits=limits, ping_interval=0.1) as srv:
            held = SSEClient(srv)
            try:
                held.next_event("ruleset")
                # Send nothing: the refusal comes before any request is read.
                assert raw_exchange(srv, b"").startswith(b"HTTP/1.1 503 ")
            finally:
                held.close()
            wait_for(lambda: requests.get(root(srv) + "/healthz", timeout=5).ok)

    def test_run_serves_until_sigterm(self, ruleset_path: Path):
        """run() logs its URL, serves, and returns cleanly on SIGTERM."""
        code = "import sys; from phaseflag.server import run; run(sys.argv[1], port=0)"
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(ruleset_path)],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )
        try:
            assert proc.stderr is not None
            url = None
            for line in proc.stderr:
                if "listening on " in line:
                    url = line.split("listening on ", 1)[1].strip()
                    break
            assert url is not None and url.startswith("http://127.0.0.1:")
            assert requests.get(url + "/sdk/ruleset", timeout=5).json() == document(1)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            proc.kill()
            proc.wait()


class TestWithTheSDK:
    """The phaseflag client itself, streaming from the server and posting events to it."""

    def test_client_streams_changes_and_posts_events(
        self, server: PhaseFlagServer, ruleset_path: Path, tmp_path: Path, make_client
    ):
        """A streaming client gets the ruleset, sees an edit, and its events land in the file."""
        from phaseflag import EvaluationContext
        from phaseflag.types import EvaluationEvent

        client = make_client(base_url=server.url, api_key=KEY, fetch_mode="streaming")
        client.start()
        assert client.wait_until_ready(5)
        pro = EvaluationContext(user_id="u1", attributes={"plan": "pro"})
        assert client.get_boolean_value("checkout", False, pro) is True
        changed = document(2)
        changed["flags"][0]["enabled"] = False
        write(ruleset_path, changed)
        wait_for(lambda: client.get_boolean_value("checkout", True, pro) is False, 2.0)
        client.track_event(EvaluationEvent(flag_key="checkout", user_id="u1"))
        assert client.flush_events()
        lines = (tmp_path / "events.jsonl").read_text("utf-8").splitlines()
        assert any(json.loads(line).get("kind") == "custom" for line in lines)


class TestDirectAnswer:
    """GET /sdk/ruleset is answered by the protocol in one write; the ASGI path (taken for an
    absolute-form target) gives byte-identical answers but for the Date header."""

    @staticmethod
    def answer(server: PhaseFlagServer, target: bytes, headers: bytes, method: bytes = b"GET"):
        request = method + b" " + target + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        raw = raw_exchange(server, request + headers + b"\r\n")
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        fields = sorted(line.lower() for line in lines[1:] if not line.lower().startswith(b"date:"))
        return lines[0], fields, body

    def test_both_paths_answer_alike(self, server: PhaseFlagServer):
        key = b"Authorization: Bearer " + KEY.encode() + b"\r\n"
        etag = server.etag.encode()
        cases = [
            (b"GET", key),
            (b"GET", key + b"If-None-Match: " + etag + b"\r\n"),
            (b"GET", key + b"Accept-Encoding: gzip\r\n"),
            (b"HEAD", key),
            (b"GET", b""),
            (b"GET", b"Authorization: Bearer wrong\r\n"),
            (b"POST", key + b"Content-Length: 0\r\n"),
        ]
        direct_path = b"/api/v1/sdk/ruleset"
        asgi_path = b"http://t/api/v1/sdk/ruleset"
        for method, headers in cases:
            direct = self.answer(server, direct_path, headers, method)
            via_asgi = self.answer(server, asgi_path, headers, method)
            assert direct == via_asgi, (method, headers)
            assert direct[0].startswith(b"HTTP/1.1 ")
