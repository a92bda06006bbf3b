"""Tests for the HTTP transport: headers, status mapping, size limits, streaming, redaction."""

from __future__ import annotations

import gzip
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
import responses

from phaseflag._errors import (
    AuthenticationError,
    ConfigError,
    RulesetTooLargeError,
    TransportError,
)
from phaseflag._sse import SSEEvent
from phaseflag._transport import FetchResult, Transport
from phaseflag._version import __version__

BASE = "https://api.test/api/v1"
KEY = "sdk-secret-0123456789abcd"
RULESET_URL = f"{BASE}/sdk/ruleset"
EVENTS_URL = f"{BASE}/sdk/events"
EVALUATE_URL = f"{BASE}/sdk/evaluate"
STREAM_URL = f"{BASE}/sdk/stream"
RULESET = json.dumps({"schema_version": 1, "version": 3, "flags": []}).encode()


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def transport() -> Iterator[Transport]:
    t = Transport(BASE, KEY)
    yield t
    t.close()


class CountingRaw(io.RawIOBase):
    """A response body that records how many bytes the transport pulled from it."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._data[self.consumed : self.consumed + min(len(buffer), 4096)]
        buffer[: len(chunk)] = chunk
        self.consumed += len(chunk)
        return len(chunk)


def counting_body(data: bytes) -> tuple[io.BufferedReader, CountingRaw]:
    raw = CountingRaw(data)
    return io.BufferedReader(raw, buffer_size=4096), raw


def sent_kwargs(mock: responses.RequestsMock, index: int = 0) -> dict[str, Any]:
    """The keyword arguments requests received for the index-th call (timeout, verify...)."""
    kwargs: dict[str, Any] = mock.calls[index].request.req_kwargs  # type: ignore[attr-defined]
    return kwargs


def sent_json(mock: responses.RequestsMock, index: int = 0) -> Any:
    body = mock.calls[index].request.body
    assert isinstance(body, bytes)
    return json.loads(body.decode("utf-8"))


def error_of(call: Any) -> BaseException:
    with pytest.raises(Exception) as info:
        call()
    return info.value


class TestFetchRuleset:
    def test_200_returns_body_and_etag(
        self, mock: responses.RequestsMock, transport: Transport
    ) -> None:
        """A 200 yields the body bytes and the ETag header."""
        mock.get(RULESET_URL, body=RULESET, headers={"ETag": 'W/"v3"'})
        assert transport.fetch_ruleset(None) == FetchResult(False, RULESET, 'W/"v3"')

    def test_headers_sent(self, mock: responses.RequestsMock, transport: Transport) -> None:
        """Authorization, User-Agent, Accept and Accept-Encoding go out; no If-None-Match."""
        mock.get(RULESET_URL, body=RULESET)
        transport.fetch_ruleset(None)
        headers = mock.calls[0].request.headers
        assert headers["Authorization"] == f"Bearer {KEY}"
        assert headers["User-Agent"] == f"phaseflag-python/{__version__}"
        assert headers["Accept"] == "application/json"
        assert headers["Accept-Encoding"] == "gzip"
        assert "If-None-Match" not in headers

    def test_if_none_match_and_304(
        self, mock: responses.RequestsMock, transport: Transport
    ) -> None:
        """The held ETag is sent; a 304 is reported as not modified with no body."""
        mock.get(RULESET_URL, status=304)
        result = transport.fetch_ruleset('"v3"')
        assert mock.calls[0].request.headers["If-None-Match"] == '"v3"'
        assert result == FetchResult(True, None, '"v3"')

    def test_304_with_new_etag(self, mock: responses.RequestsMock, transport: Transport) -> None:
        """An ETag repeated on the 304 is the one reported."""
        mock.get(RULESET_URL, status=304, headers={"ETag": '"v4"'})
        assert transport.fetch_ruleset('"v3"').etag == '"v4"'

    def test_200_without_etag(self, mock: responses.RequestsMock, transport: Transport) -> None:
        """A 200 without an ETag reports etag None."""
        mock.get(RULESET_URL, body=RULESET)
        assert transport.fetch_ruleset(None).etag is None

    @pytest.mark.parametrize("status", [401, 403])
    def test_auth_errors(
        self, mock: responses.RequestsMock, transport: Transport, status: int
    ) -> None:
        """401 and 403 raise AuthenticationError with the status and no key in the text."""
        mock.get(RULESET_URL, status=status, body=f"bad key {KEY}")
        with pytest.raises(AuthenticationError) as info:
            transport.fetch_ruleset(None)
        assert info.value.status == status
        assert isinstance(info.value, TransportError)
        assert KEY not in str(info.value)
        assert "api_key" in str(info.value)

    def test_429_retry_after_seconds(
        self, mock: responses.RequestsMock, transport: Transport
    ) -> None:
        """A 429 carries status 429 and Retry-After seconds."""
        mock.get(RULESET_URL, status=429, headers={"Retry-After": "7"})
        err = error_of(lambda: transport.fetch_ruleset(None))
        assert type(err) is TransportError
        assert (err.status, err.retry_after) == (429, 7.0)

    def test_429_retry_after_http_date(
        self, mock: responses.RequestsMock, transport: Transport
    ) -> None:
        """A Retry-After HTTP-date becomes the seconds until then."""
        mock.get(
            RULESET_URL,
            status=429,
            headers={"Retry-After": formatdate(time.time() + 120, usegmt=True)},
        )
        err = error_of(lambda: transport.fetch_ruleset(None))
        assert isinstance(err, TransportError)
        assert err.retry_after is not None
        assert 117.0 <= err.retry_after <= 120.0

    @pytest.mark.parametrize(("status", "retry_after"), [(500, None), (502, None), (503, 30.0)])
    def test_5xx(
        self,
        mock: responses.RequestsMock,
        transport: Transport,
        status: int,
        retry_after: float | None,
    ) -> None:
        """5xx raise TransportError with the status and any Retry-After."""
        headers = {"Retry-After": "30"} if retry_after else {}
        mock.get(RULESET_URL, status=status, headers=headers)
        err = error_of(lambda: transport.fetch_ruleset(None))
        assert type(err) is TransportError
        assert (err.status, err.retry_after) == (status, retry_after)
        assert str(status) in str(err)

    def test_other_status_ignores_retry_after(
        self, mock: responses.RequestsMock, transport: Transport
    ) -> None:
        """A 404 is a plain TransportError and its Retry-After is not used."""
        mock.get(RULESET_URL, status=404, headers={"Retry-After": "5"})
        err = error_of(lambda: transport.fetch_ruleset(None))
        assert type(err) is TransportError
        assert (err.status, err.retry_after) == (404, None)

    def test_connection_error(self, mock: responses.RequestsMock, transport: Transport) -> None:
        """A network error raises TransportError with status None."""
        mock.get(RULESET_URL, body=requests.ConnectionError("connection refused"))
        err = error_of(lambda: transport.fetch_ruleset(None))
        assert type(err) is TransportError
        assert err.status is None
        assert "connection refused" in str(err)

    def test_timeout(self, mock: responses.RequestsMock, transport: Transport) -> None:
        """A timeout raises TransportError with status None saying it timed out."""
        mock.get(RULESET_URL, body=requests.ReadTimeout("read timed out"))
        err = error_of(lambda: transport.fetch_ruleset(None))
        assert type(err) is TransportError
        assert err.status is None
        assert "timed out" in str(err)

    def test_timeout_passed_to_requests(self, mock: responses.RequestsMock) -> None:
        """Connect and each read get what is left of the request's deadline (at most 2.5 s)."""
        mock.get(RULESET_URL, body=RULESET)
        Transport(BASE, KEY, timeout=2.5).fetch_ruleset(None)
        connect, read = sent_kwargs(mock)["timeout"]
        assert 1.0 < connect <= 2.5
        assert 1.0 < read <= 2.5

    def test_network_error_message_never_contains_key(
        self, mock: responses.RequestsMock, transport: Transport
    ) -> None:
        """Even an underlying error quoting the key is redacted in the TransportError."""
        mock.get(RULESET_URL, body=requests.ConnectionError(f"proxy said Bearer {KEY}"))
        err = error_of(lambda: transport.fetch_ruleset(None))
        assert KEY not in str(err)
        assert "...abcd" in str(err)


class TestSizeLimits:
    def test_oversize_content_length_refused_unread(self, mock: responses.RequestsMock) -> None:
        """A Content-Length above the limit is refused before any body byte is read."""
        body, raw = counting_body(b"x" * 5000)
        mock.get(RULESET_URL, body=body, headers={"Content-Length": "5000"})
        with pytest.raises(RulesetTooLargeError):
            Transport(BASE, KEY, max_body_bytes=1000).fetch_ruleset(None)
        assert raw.consumed == 0

    def test_oversize_streamed_stops_early(self, mock: responses.RequestsMock) -> None:
        """Without Content-Length, reading stops soon after the limit is passed."""
        body, raw = counting_body(b"x" * 5_000_000)
        mock.get(RULESET_URL, body=body)
        with pytest.raises(RulesetTooLargeError):
            Transport(BASE, KEY, max_body_bytes=100_000).fetch_ruleset(None)
        assert raw.consumed < 300_000

    def test_body_shorter_than_content_length(
        self, mock: responses.RequestsMock, transport: Transport
    ) -> None:
        """A connection cut before Content-Length bytes arrived raises TransportError."""
        mock.get(RULESET_URL, body=RULESET[:10], headers={"Content-Length": str(len(RULESET))})
        err = error_of(lambda: transport.fetch_ruleset(None))
        assert type(err) is TransportError
        assert err.status is None

    def test_body_at_limit_accepted(self, mock: responses.RequestsMock) -> None:
        """A body of exactly max_body_bytes is accepted."""
        mock.get(RULESET_URL, body=b"x" * 1000)
        assert Transport(BASE, KEY, max_body_bytes=1000).fetch_ruleset(None).body == b"x" * 1000

    def test_gzip_decoded(self, mock: responses.RequestsMock, transport: Transport) -> None:
        """A gzip body is returned decompressed."""
        mock.get(RULESET_URL, body=gzip.compress(RULESET), headers={"Content-Encoding": "gzip"})
        assert transport.fetch_ruleset(None).body == RULESET

    def test_large_gzip_decoded_in_pieces(self, mock: responses.RequestsMock) -> None:
        """A gzip body larger than one read chunk decompresses completely."""
        data = json.dumps({"flags": [{"key": f"flag-{i}"} for i in range(50_000)]}).encode()
        mock.get(RULESET_URL, body=gzip.compress(data), headers={"Content-Encoding": "gzip"})
        assert Transport(BASE, KEY).fetch_ruleset(None).body == data

    def test_multi_member_gzip(self, mock: responses.RequestsMock, transport: Transport) -> None:
        """Concatenated gzip members decode to the concatenated data."""
        body = gzip.compress(b'{"a":') + gzip.compress(b"1}")
        mock.get(RULESET_URL, body=body, headers={"Content-Encoding": "gzip"})
        assert transport.fetch_ruleset(None).body == b'{"a":1}'

    def test_gzip_bomb_stopped(self, mock: responses.RequestsMock) -> None:
        """Decompressed size counts: 300 KB of gzip inflating to 300 MB is refused early."""
        bomb = gzip.compress(b"\0" * 10_000_000, compresslevel=9) * 30
        body, raw = counting_body(bomb)
        mock.get(RULESET_URL, body=body, headers={"Content-Encoding": "gzip"})
        with pytest.raises(RulesetTooLargeError):
            Transport(BASE, KEY, max_body_bytes=1_000_000).fetch_ruleset(None)
        assert raw.consumed <= 2 * 64 * 1024

    def test_truncated_gzip(self, mock: responses.RequestsMock, transport: Transport) -> None:
        """A gzip body cut short raises TransportError."""
        body = gzip.compress(RULESET * 20)
        mock.get(RULESET_URL, body=body[: len(body) // 2], headers={"Content-Encoding": "gzip"})
        err = error_of(lambda: transport.fetch_ruleset(None))
        assert type(err) is TransportError
        assert "truncated" in str(err)

    def test_corrupt_gzip(self, mock: responses.RequestsMock, transport: Transport) -> None:
        """Bytes that are not gzip under Content-Encoding: gzip raise TransportError."""
        mock.get(RULESET_URL, body=b"not gzip at all", headers={"Content-Encoding": "gzip"})
        assert type(error_of(lambda: transport.fetch_ruleset(None))) is TransportError

    def test_unsupported_encoding(self, mock: responses.RequestsMock, transport: Transport) -> None:
        """An encoding the SDK did not ask for raises TransportError."""
        mock.get(RULESET_URL, body=b"\x1b...", headers={"Content-Encoding": "br"})
        err = error_of(lambda: transport.fetch_ruleset(None))
        assert type(err) is TransportError
        assert "br" in str(err)


class TestHeaders:
    def test_static_headers_sent(self, mock: responses.RequestsMock) -> None:
        """Static headers go out with every API request."""
        mock.get(RULESET_URL, body=RULESET)
        Transport(BASE, KEY, headers={"X-Tenant": "acme"}).fetch_ruleset(None)
        assert mock.calls[0].request.headers["X-Tenant"] == "acme"

    def test_headers_factory_called_per_request(self, mock: responses.RequestsMock) -> None:
        """headers_factory runs once per request and its headers are sent."""
        mock.get(RULESET_URL, body=RULESET)
        mock.post(EVENTS_URL, status=202)
        counter = iter(range(100))
        t = Transport(BASE, KEY, headers_factory=lambda: {"X-Request-Id": str(next(counter))})
        t.fetch_ruleset(None)
        t.fetch_ruleset(None)
        t.post_events({"events": []})
        assert [c.request.headers["X-Request-Id"] for c in mock.calls] == ["0", "1", "2"]

    def test_headers_factory_raising(
        self, mock: responses.RequestsMock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A raising factory gives TransportError and a log line; nothing is sent."""

        def factory() -> dict[str, str]:
            raise RuntimeError("vault down")

        mock.get(RULESET_URL, body=RULESET)
        t = Transport(BASE, KEY, headers_factory=factory)
        with caplog.at_level(logging.WARNING, logger="phaseflag"):
            err = error_of(lambda: t.fetch_ruleset(None))
        assert type(err) is TransportError
        assert "headers_factory" in str(err)
        assert len(mock.calls) == 0
        assert any("headers_factory" in r.getMessage() for r in caplog.records)
        assert KEY not in caplog.text

    def test_headers_factory_bad_return(self, mock: responses.RequestsMock) -> None:
        """A factory returning a non-mapping gives TransportError."""
        t = Transport(BASE, KEY, headers_factory=lambda: None)  # type: ignore[arg-type,return-value]
        assert type(error_of(lambda: t.fetch_ruleset(None))) is TransportError

    def test_factory_supplies_authorization(self, mock: responses.RequestsMock) -> None:
        """A factory's Authorization (a rotating JWT) replaces 'Bearer <api_key>'."""
        mock.get(RULESET_URL, body=RULESET)
        t = Transport(BASE, KEY, headers_factory=lambda: {"authorization": "Bearer jwt-1"})
        t.fetch_ruleset(None)
        assert mock.calls[0].request.headers["Authorization"] == "Bearer jwt-1"

    def test_factory_authorization_without_api_key(self, mock: responses.RequestsMock) -> None:
        """With a headers_factory, api_key may be empty; no Bearer header is invented."""
        mock.get(RULESET_URL, body=RULESET)
        mock.get(RULESET_URL, body=RULESET)
        tokens = iter(["Bearer jwt-1", "Bearer jwt-2"])
        t = Transport(BASE, "", headers_factory=lambda: {"Authorization": next(tokens)})
        t.fetch_ruleset(None)
        t.fetch_ruleset(None)
        sent = [c.request.headers["Authorization"] for c in mock.calls]
        assert sent == ["Bearer jwt-1", "Bearer jwt-2"]
        with pytest.raises(ConfigError) as info:
            Transport(BASE, "")
        assert info.value.option == "api_key"

    def test_static_authorization_rejected(self) -> None:
        """Static headers may not set Authorization."""
        with pytest.raises(ConfigError) as info:
            Transport(BASE, KEY, headers={"Authorization": "Basic x"})
        assert info.value.option == "headers"

    def test_user_agent_can_be_overridden(self, mock: responses.RequestsMock) -> None:
        """A static User-Agent replaces the default (apps may identify themselves)."""
        mock.get(RULESET_URL, body=RULESET)
        Transport(BASE, KEY, headers={"User-Agent": "shop/1.0"}).fetch_ruleset(None)
        assert mock.calls[0].request.headers["User-Agent"] == "shop/1.0"


class TestPostEvents:
    @pytest.mark.parametrize("status", [200, 202, 204])
    def test_success(self, mock: responses.RequestsMock, transport: Transport, status: int) -> None:
        """200, 202 and 204 return None after posting the payload as UTF-8 JSON."""
        payload = {
            "sdk": {"name": "phaseflag-python", "version": __version__},
            "events": [{"kind": "custom", "flag_key": "ünï", "timestamp": 1}],
        }
        mock.post(EVENTS_URL, status=status)
        transport.post_events(payload)
        request = mock.calls[0].request
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["Authorization"] == f"Bearer {KEY}"
        assert sent_json(mock) == payload

    @pytest.mark.parametrize(
        ("status", "headers", "retry_after"),
        [(400, {}, None), (413, {}, None), (429, {"Retry-After": "3"}, 3.0), (500, {}, None)],
    )
    def test_failure_status(
        self,
        mock: responses.RequestsMock,
        transport: Transport,
        status: int,
        headers: dict[str, str],
        retry_after: float | None,
    ) -> None:
        """Other statuses raise TransportError with status and retry_after for the caller."""
        mock.post(EVENTS_URL, status=status, headers=headers)
        err = error_of(lambda: transport.post_events({"events": []}))
        assert type(err) is TransportError
        assert (err.status, err.retry_after) == (status, retry_after)

    def test_auth_error(self, mock: responses.RequestsMock, transport: Transport) -> None:
        """A 401 on events is an AuthenticationError."""
        mock.post(EVENTS_URL, status=401)
        assert type(error_of(lambda: transport.post_events({}))) is AuthenticationError

    def test_unserialisable_payload_sends_nothing(
        self, mock: responses.RequestsMock, transport: Transport
    ) -> None:
        """NaN or objects are rejected with ValueError/TypeError before any request."""
        with pytest.raises(ValueError):
            transport.post_events({"value": float("nan")})
        with pytest.raises(TypeError):
            transport.post_events({"value": object()})
        assert len(mock.calls) == 0


def _answer_once(head: bytes) -> tuple[str, threading.Thread]:
    """A loopback API that reads one request, sends ``head`` and closes cleanly (a FIN)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                received = b""
                while b"\r\n\r\n" not in received:
                    received += conn.recv(65536)
                header, _, body = received.partition(b"\r\n\r\n")
                length = int(header.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(body) < length:
                    body += conn.recv(65536)
                conn.sendall(head)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/api/v1", thread


class TestPostEventsFraming:
    """Only an answer that says where it ends proves delivery: a connection cut inside the
    headers reads, in http.client, as a whole answer with an empty body."""

    @pytest.mark.parametrize(
        "head",
        [
            b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"HTTP/1.1 202 Accepted\r\nConnection: close\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.0 200 OK\r\n\r\n",
        ],
    )
    def test_complete_answers_deliver(self, head: bytes) -> None:
        url, server = _answer_once(head)
        transport = Transport(url, KEY, timeout=5.0)
        try:
            transport.post_events({"events": []})
        finally:
            transport.close()
            server.join(5)

    @pytest.mark.parametrize(
        "head",
        [b"HTTP/1.1 200 OK\r\nX-Pad: a", b"HTTP/1.1 202 Accepted\r\n", b"HTTP/1.1 200 OK\r\n\r\n"],
    )
    def test_answers_cut_inside_the_headers_are_retryable(self, head: bytes) -> None:
        url, server = _answer_once(head)
        transport = Transport(url, KEY, timeout=5.0)
        try:
            err = error_of(lambda: transport.post_events({"events": []}))
        finally:
            transport.close()
            server.join(5)
        assert type(err) is TransportError
        assert err.status is None  # retried with backoff, like any network failure
        assert "cut inside its headers" in str(err)


class TestEvaluate:
    def test_200(self, mock: responses.RequestsMock, transport: Transport) -> None:
        """The request carries flag_key and context; the answer is returned as a dict."""
        answer = {"flag_key": "f", "value": True, "reason": "default", "variation_key": "on"}
        mock.post(EVALUATE_URL, json=answer)
        context = {"user_id": "u1", "session_id": None, "attributes": {"plan": "pro"}}
        assert transport.evaluate("f", context) == answer
        assert sent_json(mock) == {"flag_key": "f", "context": context}

    def test_404(self, mock: responses.RequestsMock, transport: Transport) -> None:
        """An unknown flag raises TransportError with status 404."""
        mock.post(EVALUATE_URL, status=404)
        err = error_of(lambda: transport.evaluate("nope", {}))
        assert type(err) is TransportError
        assert err.status == 404

    @pytest.mark.parametrize(
        "body", [b"not json", b"[1, 2]", b'{"value": 1}', b'{"reason": "default"}', b"\xff"]
    )
    def test_malformed_answer(
        self, mock: responses.RequestsMock, transport: Transport, body: bytes
    ) -> None:
        """An answer that is not an object with value and reason raises TransportError."""
        mock.post(EVALUATE_URL, body=body)
        assert type(error_of(lambda: transport.evaluate("f", {}))) is TransportError

    def test_auth_error(self, mock: responses.RequestsMock, transport: Transport) -> None:
        """A 403 on evaluate is an AuthenticationError."""
        mock.post(EVALUATE_URL, status=403)
        assert type(error_of(lambda: transport.evaluate("f", {}))) is AuthenticationError

    def test_oversize_answer(self, mock: responses.RequestsMock) -> None:
        """The size limit applies to evaluate answers too."""
        mock.post(EVALUATE_URL, body=b'{"value": "' + b"x" * 5000 + b'", "reason": "default"}')
        with pytest.raises(RulesetTooLargeError):
            Transport(BASE, KEY, max_body_bytes=1000).evaluate("f", {})


class TestFetchUrl:
    CDN = "https://cdn.example.com/flags/bootstrap.json"

    def test_no_authorization_or_custom_headers(self, mock: responses.RequestsMock) -> None:
        """The API key and custom headers are never sent to a third-party URL."""
        mock.get(self.CDN, body=RULESET)
        t = Transport(BASE, KEY, headers={"X-Tenant": "a"}, headers_factory=lambda: {"X-B": "b"})
        assert t.fetch_url(self.CDN) == RULESET
        headers = mock.calls[0].request.headers
        assert "Authorization" not in headers
        assert "X-Tenant" not in headers
        assert "X-B" not in headers
        assert headers["User-Agent"] == f"phaseflag-python/{__version__}"

    @pytest.mark.parametrize("url", ["ftp://cdn.example.com/b.json", "file:///etc/passwd", "b"])
    def test_bad_scheme(self, transport: Transport, url: str) -> None:
        """Only http(s) URLs are accepted; the ConfigError names bootstrap_url."""
        with pytest.raises(ConfigError) as info:
            transport.fetch_url(url)
        assert info.value.option == "bootstrap_url"

    def test_gzip_and_size_limit(self, mock: responses.RequestsMock) -> None:
        """fetch_url decodes gzip and enforces the size limit."""
        mock.get(self.CDN, body=gzip.compress(RULESET), headers={"Content-Encoding": "gzip"})
        assert Transport(BASE, KEY).fetch_url(self.CDN) == RULESET
        mock.get(self.CDN + "?big", body=b"x" * 2000)
        with pytest.raises(RulesetTooLargeError):
            Transport(BASE, KEY, max_body_bytes=1000).fetch_url(self.CDN + "?big")

    def test_403_is_not_an_auth_error(self, mock: responses.RequestsMock) -> None:
        """A CDN's 403 says nothing about the SDK key; the query token is not echoed."""
        signed = self.CDN + "?token=s3cr3t"
        mock.get(signed, status=403)
        err = error_of(lambda: Transport(BASE, KEY).fetch_url(signed))
        assert type(err) is TransportError
        assert err.status == 403
        assert "s3cr3t" not in str(err)
        assert "cdn.example.com" in str(err)


class TestConstruction:
    def test_trailing_slash_stripped(self, mock: responses.RequestsMock) -> None:
        """A base_url ending in '/' does not produce '//' in request paths."""
        mock.get(RULESET_URL, body=RULESET)
        Transport(BASE + "/", KEY).fetch_ruleset(None)
        assert mock.calls[0].request.url == RULESET_URL

    @pytest.mark.parametrize(
        "base_url", ["ftp://api.test", "api.test/api/v1", "https://", "https://x/?a=1", "nope"]
    )
    def test_bad_base_url(self, base_url: str) -> None:
        """Anything but '' or an http(s) URL raises ConfigError naming base_url."""
        with pytest.raises(ConfigError) as info:
            Transport(base_url, KEY)
        assert info.value.option == "base_url"
        assert KEY not in str(info.value)

    def test_disabled_every_method_raises(self, mock: responses.RequestsMock) -> None:
        """base_url='' disables HTTP: every method raises TransportError, nothing is sent."""
        t = Transport("", "")
        assert not t.enabled
        calls = [
            lambda: t.fetch_ruleset(None),
            lambda: t.post_events({}),
            lambda: t.evaluate("f", {}),
            lambda: t.fetch_url("https://cdn.example.com/b.json"),
            lambda: next(t.open_stream()),
        ]
        for call in calls:
            err = error_of(call)
            assert type(err) is TransportError
            assert "HTTP disabled (base_url='')" in str(err)
        assert len(mock.calls) == 0

    @pytest.mark.parametrize("api_key", ["", f"{KEY}\n", f" {KEY}", "sdk-kéy-0123456789"])
    def test_bad_api_key(self, api_key: str) -> None:
        """An empty key or one with whitespace/control/non-ASCII characters is refused unquoted."""
        with pytest.raises(ConfigError) as info:
            Transport(BASE, api_key)
        assert info.value.option == "api_key"
        if api_key:
            assert api_key.strip() not in str(info.value)

    @pytest.mark.parametrize(
        ("option", "value"),
        [
            ("timeout", 0),
            ("timeout", -1.0),
            ("timeout", float("inf")),
            ("stream_read_timeout", 0.0),
            ("max_body_bytes", 0),
            ("max_body_bytes", 1.5),
            ("verify", "/no/such/ca-bundle.pem"),
            ("headers", {"X-A": 1}),
        ],
    )
    def test_bad_options(self, option: str, value: Any) -> None:
        """Malformed options raise ConfigError naming the option."""
        with pytest.raises(ConfigError) as info:
            Transport(BASE, KEY, **{option: value})
        assert info.value.option == option

    def test_verify_false_warns_once(
        self, mock: responses.RequestsMock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """verify=False logs one WARNING at construction, none per request."""
        mock.get(RULESET_URL, body=RULESET)
        with caplog.at_level(logging.WARNING, logger="phaseflag"):
            t = Transport(BASE, KEY, verify=False)
            t.fetch_ruleset(None)
            t.fetch_ruleset(None)
        warnings = [r for r in caplog.records if "TLS verification disabled" in r.getMessage()]
        assert len(warnings) == 1
        assert sent_kwargs(mock)["verify"] is False

    def test_proxies_passed(self, mock: responses.RequestsMock) -> None:
        """Configured proxies are handed to requests for each request."""
        mock.get(RULESET_URL, body=RULESET)
        proxies = {"https": "http://proxy.internal:3128"}
        Transport(BASE, KEY, proxies=proxies).fetch_ruleset(None)
        assert sent_kwargs(mock)["proxies"] == proxies

    @pytest.mark.parametrize(("api_key", "shown"), [(KEY, "...abcd"), ("short-key", "***")])
    def test_repr_redacts_key(self, api_key: str, shown: str) -> None:
        """repr shows only the last four characters of a long key and nothing of a short one."""
        text = repr(Transport(BASE, api_key))
        assert api_key not in text
        assert f"api_key='{shown}'" in text
        assert BASE in text

    def test_url_credentials_refused(self) -> None:
        """Credentials embedded in base_url are a ConfigError that does not show them."""
        with pytest.raises(ConfigError) as info:
            Transport("https://u:hunter2@api.test/api/v1", KEY)
        assert info.value.option == "base_url"
        assert "hunter2" not in str(info.value)
        assert "credentials" in str(info.value)

    def test_closed_transport_raises(self, mock: responses.RequestsMock) -> None:
        """After close(), methods raise TransportError without sending."""
        t = Transport(BASE, KEY)
        t.close()
        t.close()
        assert type(error_of(lambda: t.fetch_ruleset(None))) is TransportError
        assert len(mock.calls) == 0

    def test_supplied_session_used_not_closed(self, mock: responses.RequestsMock) -> None:
        """A caller's session carries the requests and stays open after close()."""
        mock.get(RULESET_URL, body=RULESET)
        session = requests.Session()
        closed: list[bool] = []
        session.close = lambda: closed.append(True)  # type: ignore[method-assign]
        t = Transport(BASE, KEY, session=session)
        t.fetch_ruleset(None)
        t.close()
        assert len(mock.calls) == 1
        assert closed == []


class TestOpenStreamMocked:
    SSE = b': hi\n\nevent: ruleset\ndata: {"version": 4}\n\nevent: ping\ndata: \n\n'

    def test_events_parsed(self, mock: responses.RequestsMock, transport: Transport) -> None:
        """A text/event-stream body yields its events; the right headers are sent."""
        mock.get(STREAM_URL, body=self.SSE, content_type="text/event-stream")
        assert list(transport.open_stream()) == [
            SSEEvent("ruleset", '{"version": 4}', None),
            SSEEvent("ping", "", None),
        ]
        request = mock.calls[0].request
        assert request.headers["Accept"] == "text/event-stream"
        assert request.headers["Authorization"] == f"Bearer {KEY}"
        assert sent_kwargs(mock)["stream"] is True
        connect, read = sent_kwargs(mock)["timeout"]
        assert 5.0 < connect <= 10.0  # what is left of the deadline until the headers
        assert read == 60.0

    def test_stream_read_timeout_option(self, mock: responses.RequestsMock) -> None:
        """stream_read_timeout sets the read timeout of the stream request only."""
        mock.get(STREAM_URL, body=self.SSE, content_type="text/event-stream")
        list(Transport(BASE, KEY, timeout=3.0, stream_read_timeout=25.0).open_stream())
        connect, read = sent_kwargs(mock)["timeout"]
        assert 1.0 < connect <= 3.0
        assert read == 25.0

    @pytest.mark.parametrize(("status", "error"), [(401, AuthenticationError), (503, None)])
    def test_bad_status(
        self,
        mock: responses.RequestsMock,
        transport: Transport,
        status: int,
        error: type[Exception] | None,
    ) -> None:
        """Bad statuses raise on first iteration, like fetch_ruleset."""
        mock.get(STREAM_URL, status=status, headers={"Retry-After": "9"})
        err = error_of(lambda: next(transport.open_stream()))
        assert type(err) is (error or TransportError)
        assert isinstance(err, TransportError)
        assert err.status == status
        if status == 503:
            assert err.retry_after == 9.0

    def test_wrong_content_type(self, mock: responses.RequestsMock, transport: Transport) -> None:
        """A 200 that is not an event stream raises TransportError."""
        mock.get(STREAM_URL, body=b"{}", content_type="application/json")
        assert type(error_of(lambda: next(transport.open_stream()))) is TransportError

    def test_oversize_event(self, mock: responses.RequestsMock) -> None:
        """An event above max_body_bytes raises RulesetTooLargeError."""
        mock.get(
            STREAM_URL, body=b"data: " + b"x" * 5000 + b"\n\n", content_type="text/event-stream"
        )
        with pytest.raises(RulesetTooLargeError):
            list(Transport(BASE, KEY, max_body_bytes=1000).open_stream())

    def test_gzip_stream_decoded(self, mock: responses.RequestsMock, transport: Transport) -> None:
        """A server that gzips the stream anyway is decoded."""
        mock.get(
            STREAM_URL,
            body=gzip.compress(self.SSE),
            content_type="text/event-stream",
            headers={"Content-Encoding": "gzip"},
        )
        assert len(list(transport.open_stream())) == 2


class _StreamHandler(BaseHTTPRequestHandler):
    """Sends an SSE preamble, then holds the connection open until the test releases it."""

    protocol_version = "HTTP/1.1"
    server: _StreamServer

    def do_GET(self) -> None:
        self.server.requests.append(dict(self.headers))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(self.server.preamble)
        self.wfile.flush()
        if self.server.drip:
            # Keep sending single bytes (a live but slow body) until released.
            while not self.server.release.wait(0.02):
                try:
                    self.wfile.write(b":")
                    self.wfile.flush()
                except OSError:
                    return
        self.server.release.wait(10)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _StreamServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, preamble: bytes, drip: bool = False) -> None:
        super().__init__(("127.0.0.1", 0), _StreamHandler)
        self.preamble = preamble
        self.drip = drip
        self.release = threading.Event()
        self.requests: list[dict[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api/v1"


@pytest.fixture
def stream_server(request: pytest.FixtureRequest) -> Iterator[_StreamServer]:
    preamble, drip = getattr(request, "param", (b"event: ruleset\ndata: {}\n\n", False))
    server = _StreamServer(preamble, drip)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


class TestOpenStreamLoopback:
    def test_event_arrives_while_connection_stays_open(self, stream_server: _StreamServer) -> None:
        """An event is delivered as soon as it arrives, before the server closes the stream."""
        t = Transport(stream_server.url, KEY, stream_read_timeout=5.0)
        stream = t.open_stream()
        assert next(stream) == SSEEvent("ruleset", "{}", None)
        assert stream_server.requests[0]["Authorization"] == f"Bearer {KEY}"
        stream.close()
        t.close()

    def test_read_timeout_on_silent_stream(self, stream_server: _StreamServer) -> None:
        """A stream silent for stream_read_timeout raises TransportError quickly."""
        t = Transport(stream_server.url, KEY, stream_read_timeout=0.3)
        stream = t.open_stream()
        next(stream)
        started = time.monotonic()
        with pytest.raises(TransportError, match="timed out"):
            next(stream)
        assert time.monotonic() - started < 3.0
        t.close()

    def test_close_from_another_thread_interrupts_read(self, stream_server: _StreamServer) -> None:
        """close() wakes a reader blocked on a silent stream; its iteration ends quietly."""
        t = Transport(stream_server.url, KEY, stream_read_timeout=30.0)
        got_first = threading.Event()
        outcome: list[object] = []

        def consume() -> None:
            try:
                for _event in t.open_stream():
                    got_first.set()
                outcome.append("ended")
            except Exception as exc:
                outcome.append(exc)

        reader = threading.Thread(target=consume, name="test-sse-reader", daemon=True)
        reader.start()
        assert got_first.wait(5)
        started = time.monotonic()
        t.close()
        reader.join(5)
        assert not reader.is_alive()
        assert time.monotonic() - started < 3.0
        assert outcome == ["ended"]

    def test_close_streams_interrupts_but_keeps_transport(
        self, stream_server: _StreamServer
    ) -> None:
        """close_streams() ends a blocked stream quietly and the transport still works."""
        t = Transport(stream_server.url, KEY, stream_read_timeout=30.0)
        got_first = threading.Event()
        outcome: list[object] = []

        def consume() -> None:
            try:
                for _event in t.open_stream():
                    got_first.set()
                outcome.append("ended")
            except Exception as exc:
                outcome.append(exc)

        reader = threading.Thread(target=consume, name="test-sse-reader", daemon=True)
        reader.start()
        assert got_first.wait(5)
        t.close_streams()
        reader.join(5)
        assert not reader.is_alive()
        assert outcome == ["ended"]
        stream = t.open_stream()
        assert next(stream).event == "ruleset"
        stream.close()
        t.close()

    def test_closing_generator_closes_response(self, stream_server: _StreamServer) -> None:
        """Closing the generator releases the response: the transport holds no open stream."""
        t = Transport(stream_server.url, KEY, stream_read_timeout=5.0)
        stream = t.open_stream()
        next(stream)
        assert len(t._streams) == 1
        frame = stream.gi_frame
        assert frame is not None
        resp = frame.f_locals["resp"]
        stream.close()
        assert t._streams == set()
        assert resp.raw.closed
        t.close()

    @pytest.mark.parametrize("stream_server", [(b"", True)], indirect=True)
    def test_slow_drip_body_deadline(
        self, stream_server: _StreamServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A body trickling in forever is abandoned at the request's deadline."""
        t = Transport(stream_server.url, KEY, timeout=0.3)
        started = time.monotonic()
        with pytest.raises(TransportError, match=r"no complete answer within 0\.3 s"):
            t.fetch_url(stream_server.url + "/bootstrap.json")
        assert time.monotonic() - started < 3.0
        t.close()


def test_connection_refused_on_loopback() -> None:
    """A real refused connection is a TransportError with status None."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = Transport(f"http://127.0.0.1:{port}/api/v1", KEY, timeout=2.0)
    err = error_of(lambda: t.fetch_ruleset(None))
    assert type(err) is TransportError
    assert err.status is None
    assert KEY not in str(err)


class _ProxyHandler(BaseHTTPRequestHandler):
    """A forward proxy that answers every request itself, remembering its target."""

    seen: list[str]

    def do_GET(self) -> None:
        self.server.seen.append(self.path)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(RULESET)))
        self.end_headers()
        self.wfile.write(RULESET)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.e2e
class TestEnvironment:
    """The SDK's own session reads the proxy and CA-bundle variables once per origin (not
    on every request, which costs requests about 0.45 ms each), with requests' rules."""

    @pytest.fixture
    def proxy(self) -> Iterator[ThreadingHTTPServer]:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _ProxyHandler)
        server.seen = []  # type: ignore[attr-defined]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield server
        server.shutdown()
        server.server_close()

    def test_http_proxy_variable_is_used(
        self, proxy: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        t = Transport("http://flags.example.invalid/api/v1", KEY, timeout=5)
        try:
            assert t.fetch_ruleset(None).body == RULESET  # the host itself never resolves
            assert t.fetch_ruleset(None).body == RULESET
        finally:
            t.close()
        assert proxy.seen == ["http://flags.example.invalid/api/v1/sdk/ruleset"] * 2  # type: ignore[attr-defined]

    def test_no_proxy_and_explicit_proxies_win(
        self, proxy: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # a closed port
        monkeypatch.setenv("NO_PROXY", "flags.example.invalid")
        t = Transport("http://flags.example.invalid/api/v1", KEY, timeout=5)
        try:
            with pytest.raises(TransportError):  # direct: the name does not resolve
                t.fetch_ruleset(None)
        finally:
            t.close()
        monkeypatch.delenv("NO_PROXY")
        explicit = {"http": f"http://127.0.0.1:{proxy.server_port}"}
        t = Transport("http://flags.example.invalid/api/v1", KEY, timeout=5, proxies=explicit)
        try:
            assert t.fetch_ruleset(None).body == RULESET  # not the environment's closed port
        finally:
            t.close()

    def test_read_once_per_transport(self, monkeypatch: pytest.MonkeyPatch) -> None:
        calls: list[str] = []
        real = requests.sessions.get_environ_proxies

        def counting(url: str, no_proxy: str | None = None) -> dict[str, str]:
            calls.append(url)
            return real(url, no_proxy)

        monkeypatch.setattr(requests.sessions, "get_environ_proxies", counting)
        with responses.RequestsMock() as rsps:
            rsps.get(RULESET_URL, body=RULESET)
            t = Transport(BASE, KEY)
            try:
                for _ in range(3):
                    t.fetch_ruleset(None)
            finally:
                t.close()
        assert calls == [RULESET_URL]
