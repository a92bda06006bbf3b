"""The HTTP protocol of the PhaseFlag API (DESIGN §3): its endpoints on one requests.Session.

What each endpoint sends and accepts, streams, and the transport's lifecycle. Sending one
request (headers, auth, same-origin redirects, statuses) is ``_request``'s job; reading
bodies within their limits is ``_body``'s; bounding each request as a whole is
``_deadline``'s and ``_pools``'.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from ._body import close_pools, drain, iter_body, late, read_body
from ._config import (
    check_api_key,
    check_base_url,
    check_headers,
    check_verify,
    display_url,
    positive_int,
    positive_seconds,
)
from ._deadline import Deadline, Watchdog
from ._errors import ConfigError, TransportError
from ._pools import DeadlineAdapter, adopt_session
from ._request import (
    JSON_HEADERS,
    Requester,
    check_framed,
    check_status,
    json_bytes,
    prefix,
    redact,
)
from ._sse import SSEEvent, parse_sse

__all__ = ["DEFAULT_MAX_BODY_BYTES", "FetchResult", "StreamIdleError", "Transport"]

_log = logging.getLogger("phaseflag")

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
_OK_EVENTS = frozenset({200, 202, 204})


@dataclass(frozen=True, slots=True)
class FetchResult:
    """The outcome of ``Transport.fetch_ruleset``.

    ``not_modified`` is True on a 304 (``body`` is then None); otherwise ``body`` holds the
    decompressed ruleset bytes. ``etag`` is the server's ETag (on a 304, the one sent when
    the server did not repeat it), or None.
    """

    not_modified: bool
    body: bytes | None
    etag: str | None


class StreamIdleError(TransportError):
    """An open stream delivered no ruleset event within its limit (pings do not count)."""


class Transport:
    """The SDK's only door to the network: the PhaseFlag API plus an optional bootstrap URL.

    Every API request carries ``User-Agent: phaseflag-python/<version>``, the static
    ``headers``, ``Authorization: Bearer <api_key>`` (when ``api_key`` is set) and then the
    result of ``headers_factory()``, called once per request, which may supply its own
    ``Authorization`` (a JWT, say; ``api_key`` may then be empty). ``timeout`` bounds each
    request as a whole - connect, headers and body - and a stream until its headers: a
    watchdog shuts the socket when it passes. Bodies are refused with RulesetTooLargeError
    past ``max_body_bytes`` (raw or decompressed). Redirects are followed only within the
    request's origin (scheme, host, port): one to another origin is a TransportError, so
    neither headers nor a foreign ruleset ever cross. ``base_url=""`` disables HTTP: every
    method then raises TransportError.

    Methods raise TransportError (status set for HTTP answers, ``retry_after`` from a
    Retry-After header on 429/5xx), AuthenticationError on 401/403 from the API and
    RulesetTooLargeError for oversize bodies; messages never contain the API key. Methods
    may be called from several threads at once. ``close_streams()`` interrupts open
    streams from any thread; ``close()`` aborts every request in flight and is final. A
    ``session`` passed in is used but not closed (its owner closes it) and adopted as
    ``_pools.adopt_session`` says: its requests to the API are bounded as a whole unless its
    adapter there is not an HTTPAdapter on urllib3's pools (a warning says so).

    Raises ConfigError from the constructor for a malformed ``base_url``, ``api_key``,
    ``timeout``, ``stream_read_timeout``, ``max_body_bytes``, ``headers`` or ``verify``.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        headers_factory: Callable[[], Mapping[str, str]] | None = None,
        verify: bool | str = True,
        proxies: Mapping[str, str] | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        session: requests.Session | None = None,
        stream_read_timeout: float = 60.0,
    ) -> None:
        self._base_url = check_base_url("base_url", base_url)
        required = bool(self._base_url) and headers_factory is None
        self._api_key = check_api_key("api_key", api_key, required=required)
        self._timeout = positive_seconds("timeout", _number("timeout", timeout))
        self._stream_read_timeout = positive_seconds(
            "stream_read_timeout", _number("stream_read_timeout", stream_read_timeout)
        )
        self._max_body_bytes = positive_int("max_body_bytes", max_body_bytes)
        checked_headers = check_headers("headers", headers)
        self._verify = check_verify("verify", verify)
        self._owns_session = session is None
        if session is None:
            session = requests.Session()
            session.trust_env = False  # the Requester reads the environment once instead
            session.mount("http://", DeadlineAdapter())
            session.mount("https://", DeadlineAdapter())
        elif self._base_url:
            adopt_session(session, [prefix(self._base_url)])
        self._session = session
        self._requester = Requester(
            session,
            self._api_key,
            checked_headers,
            headers_factory,
            self._verify,
            proxies,
            environment_once=self._owns_session,
        )
        self._watchdog = Watchdog()
        self._lock = threading.Lock()
        self._streams: set[Deadline] = set()
        self._closed = False
        if self._verify is False and self._base_url:
            _log.warning(
                "TLS verification disabled (verify=False): the SDK key and flag data can be "
                "read or altered by anyone on the network path"
            )

    def __repr__(self) -> str:
        return (
            f"Transport(base_url={display_url(self._base_url)!r}, "
            f"api_key={redact(self._api_key)!r})"
        )

    @property
    def enabled(self) -> bool:
        """False when ``base_url`` is ``""`` (HTTP disabled)."""
        return bool(self._base_url)

    @property
    def timeout(self) -> float:
        """Seconds each request has in all (``request_timeout``)."""
        return self._timeout

    def fetch_ruleset(self, etag: str | None) -> FetchResult:
        """GET ``/sdk/ruleset``, conditional on ``etag``; gzip is decoded within the size limit."""
        headers = {"Accept": "application/json", "Accept-Encoding": "gzip"}
        if etag:
            headers["If-None-Match"] = etag
        what = "GET /sdk/ruleset"
        with self._exchange("GET", self._url("/sdk/ruleset"), what, headers) as (resp, deadline):
            if resp.status_code == 304:
                return FetchResult(True, None, resp.headers.get("ETag") or etag)
            check_status(resp, what, ok=frozenset({200}))
            body = self._read_body(resp, what, deadline)
            return FetchResult(False, body, resp.headers.get("ETag"))

    def post_events(self, payload: Mapping[str, Any], timeout: float | None = None) -> None:
        """POST an events batch to ``/sdk/events``; returns on a complete 200/202/204.

        ``timeout`` (seconds, at most the transport's) shortens this request's deadline, for
        a flush that must end in time. Any other status raises TransportError with
        ``.status`` (the caller drops on 400, splits on 413, retries on 429/5xx honouring
        ``.retry_after``). Raises TypeError or ValueError, sending nothing, when ``payload``
        is not JSON-serialisable.
        """
        body = json_bytes(payload)
        what = "POST /sdk/events"
        url = self._url("/sdk/events")
        exchange = self._exchange("POST", url, what, JSON_HEADERS, body=body, timeout=timeout)
        with exchange as (resp, deadline):
            check_status(resp, what, ok=_OK_EVENTS)
            check_framed(resp, what)
            drain(resp)
            if deadline.over:
                raise late(what, deadline)

    def evaluate(self, flag_key: str, context: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``/sdk/evaluate`` and return the server's result object.

        The answer must be a JSON object with at least ``value`` and ``reason``; anything
        else raises TransportError. 404 (unknown flag) raises TransportError(status=404).
        """
        body = json_bytes({"flag_key": flag_key, "context": dict(context)})
        what = "POST /sdk/evaluate"
        url = self._url("/sdk/evaluate")
        with self._exchange("POST", url, what, JSON_HEADERS, body=body) as (resp, deadline):
            if resp.status_code == 404:
                raise TransportError(f"{what}: unknown flag {flag_key!r} (HTTP 404)", 404)
            check_status(resp, what, ok=frozenset({200}))
            raw = self._read_body(resp, what, deadline)
        try:
            result = json.loads(raw)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise TransportError(f"{what}: the answer is not valid JSON ({exc})", 200) from None
        if not isinstance(result, dict) or "value" not in result or "reason" not in result:
            raise TransportError(
                f"{what}: the answer is not an object with 'value' and 'reason'", 200
            )
        return result

    def fetch_url(self, url: str) -> bytes:
        """GET an absolute http(s) URL (``bootstrap_url``) within the deadline and size limit.

        Sends no Authorization and no custom headers: the URL is usually a third-party CDN.
        Redirects are followed within its origin only. Raises ConfigError naming
        ``bootstrap_url`` for another scheme, TransportError for any status but 200 (a
        401/403 here says nothing about the SDK key, so it is not an AuthenticationError).
        """
        try:
            parts = urlsplit(url) if isinstance(url, str) else None
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                "bootstrap_url",
                f"must be an absolute http:// or https:// URL, got {display_url(str(url))!r}",
                "e.g. 'https://cdn.example.com/flags/bootstrap.json'",
            )
        if not self._owns_session:
            adopt_session(self._session, [prefix(url)])
        what = f"GET {display_url(url)}"
        headers = {"Accept": "application/json", "Accept-Encoding": "gzip"}
        with self._exchange("GET", url, what, headers, authorized=False) as (resp, deadline):
            check_status(resp, what, ok=frozenset({200}), api=False)
            return self._read_body(resp, what, deadline)

    def open_stream(
        self, *, first_within: float | None = None, idle_within: float | None = None
    ) -> Generator[SSEEvent, None, None]:
        """GET ``/sdk/stream`` and yield its server-sent events as they arrive.

        The request is made on the first ``next()`` and has ``timeout`` until its headers.
        Then the first ``ruleset`` event must arrive within ``first_within`` seconds and
        each further one within ``idle_within`` of the last (None: no limit; pings and
        comments do not count), else TransportError; each read also times out after
        ``stream_read_timeout`` seconds without a byte. The iterator ends when the server
        closes the stream or ``close_streams()``/``close()`` is called; it raises like
        ``fetch_ruleset`` for a bad status and RulesetTooLargeError for an event above
        ``max_body_bytes``. Closing the generator closes the response.
        """
        what = "GET /sdk/stream"
        headers = {
            "Accept": "text/event-stream",
            "Accept-Encoding": "identity",
            "Cache-Control": "no-cache",
        }
        with self._exchange(
            "GET", self._url("/sdk/stream"), what, headers, read_timeout=self._stream_read_timeout
        ) as (resp, deadline):
            with self._lock:
                self._streams.add(deadline)
            try:
                check_status(resp, what, ok=frozenset({200}))
                content_type = resp.headers.get("Content-Type", "")
                if not content_type.lower().startswith("text/event-stream"):
                    raise TransportError(
                        f"{what}: expected text/event-stream, got {content_type[:60]!r}", 200
                    )
                deadline.extend(first_within)
                chunks = iter_body(resp, what, deadline=deadline, scrub=self._requester.scrub)
                for event in parse_sse(chunks, max_event_bytes=self._max_body_bytes):
                    if event.event == "ruleset":
                        deadline.extend(idle_within)
                    yield event
            except TransportError as exc:
                if deadline.expired and not deadline.aborted:
                    limit = deadline.seconds
                    raise StreamIdleError(
                        f"{what}: no ruleset event within {limit or 0:g} s "
                        "(pings and comments do not count)"
                    ) from exc
                raise
            finally:
                with self._lock:
                    self._streams.discard(deadline)

    def close_streams(self) -> None:
        """End every open ``open_stream()`` quietly, waking a read blocked in another thread.

        The transport stays usable (new streams may be opened).
        """
        with self._lock:
            streams = list(self._streams)
        self._watchdog.abort(streams)

    def abort(self, thread: threading.Thread | None = None) -> None:
        """Cut short every request in flight (or those made by ``thread``) from any thread:
        each raises TransportError (a stream ends quietly). The transport stays usable."""
        self._watchdog.abort(thread=thread)

    def close(self) -> None:
        """Abort every request in flight (streams included) and close the owned session,
        whose pooled keep-alive sockets are closed at once rather than when collected.

        Final and idempotent: afterwards every method raises TransportError.
        """
        with self._lock:
            self._closed = True
        self._watchdog.close()
        if self._owns_session:
            close_pools(self._session)
            self._session.close()

    # -- internals ---------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self._base_url + path

    @contextlib.contextmanager
    def _exchange(
        self,
        method: str,
        url: str,
        what: str,
        headers: Mapping[str, str],
        *,
        body: bytes | None = None,
        authorized: bool = True,
        read_timeout: float | None = None,
        timeout: float | None = None,
    ) -> Iterator[tuple[requests.Response, Deadline]]:
        """One request under its Deadline; the response is closed when the block ends."""
        seconds = self._timeout if timeout is None else max(0.001, min(timeout, self._timeout))
        deadline = self._watchdog.open(seconds)
        try:
            if not self._base_url:
                raise TransportError("HTTP disabled (base_url='')")
            if self._closed or deadline.over:
                raise TransportError(f"{what}: the transport is closed")
            resp = self._requester.send(
                method, url, what, headers, body, authorized, deadline, read_timeout
            )
            with resp:
                yield resp, deadline
        finally:
            deadline.close()

    def _read_body(self, resp: requests.Response, what: str, deadline: Deadline) -> bytes:
        return read_body(
            resp, what, limit=self._max_body_bytes, deadline=deadline, scrub=self._requester.scrub
        )


def _number(option: str, value: object) -> object:
    """Seconds must be given as numbers here (strings are for the environment)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(option, f"must be a positive number of seconds, got {value!r}")
    return value
