"""The HTTP protocol of the PhaseFlag API (DESIGN §3): one requests.Session speaking it.

Endpoints, auth and User-Agent headers, the same-origin redirect rule and the mapping of
statuses to the error tree. Reading bodies within their limits is ``_body``'s job; bounding
each request as a whole is ``_deadline``'s.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import threading
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.auth import AuthBase
from requests.structures import CaseInsensitiveDict

from ._backoff import parse_retry_after
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
from ._errors import AuthenticationError, ConfigError, TransportError
from ._pools import DeadlineAdapter, adopt_session
from ._sse import SSEEvent, parse_sse
from ._version import __version__

__all__ = ["DEFAULT_MAX_BODY_BYTES", "FetchResult", "StreamIdleError", "Transport"]

_log = logging.getLogger("phaseflag")

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
USER_AGENT = f"phaseflag-python/{__version__}"

_OK_EVENTS = frozenset({200, 202, 204})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5


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
    ``session`` passed in is used but not closed (its owner closes it); the SDK mounts its
    deadline adapter on it for the API's origin where it has requests' default adapter.

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
        self._headers = check_headers("headers", headers)
        self._headers_factory = headers_factory
        self._verify = check_verify("verify", verify)
        self._proxies = dict(proxies) if proxies else None
        self._owns_session = session is None
        if session is None:
            session = requests.Session()
            session.mount("http://", DeadlineAdapter())
            session.mount("https://", DeadlineAdapter())
        elif self._base_url:
            adopt_session(session, [_prefix(self._base_url)])
        self._session = session
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
            f"api_key={_redact(self._api_key)!r})"
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
            self._check_status(resp, what, ok=frozenset({200}))
            body = self._read_body(resp, what, deadline)
            return FetchResult(False, body, resp.headers.get("ETag"))

    def post_events(self, payload: Mapping[str, Any], timeout: float | None = None) -> None:
        """POST an events batch to ``/sdk/events``; returns on 200/202/204.

        ``timeout`` (seconds, at most the transport's) shortens this request's deadline, for
        a flush that must end in time. Any other status raises TransportError with
        ``.status`` (the caller drops on 400, splits on 413, retries on 429/5xx honouring
        ``.retry_after``). Raises TypeError or ValueError, sending nothing, when ``payload``
        is not JSON-serialisable.
        """
        body = _json_bytes(payload)
        what = "POST /sdk/events"
        url = self._url("/sdk/events")
        exchange = self._exchange("POST", url, what, _JSON_HEADERS, body=body, timeout=timeout)
        with exchange as (resp, deadline):
            self._check_status(resp, what, ok=_OK_EVENTS)
            drain(resp)
            if deadline.over:
                raise late(what, deadline)

    def evaluate(self, flag_key: str, context: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``/sdk/evaluate`` and return the server's result object.

        The answer must be a JSON object with at least ``value`` and ``reason``; anything
        else raises TransportError. 404 (unknown flag) raises TransportError(status=404).
        """
        body = _json_bytes({"flag_key": flag_key, "context": dict(context)})
        what = "POST /sdk/evaluate"
        url = self._url("/sdk/evaluate")
        with self._exchange("POST", url, what, _JSON_HEADERS, body=body) as (resp, deadline):
            if resp.status_code == 404:
                raise TransportError(f"{what}: unknown flag {flag_key!r} (HTTP 404)", 404)
            self._check_status(resp, what, ok=frozenset({200}))
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
            adopt_session(self._session, [_prefix(url)])
        what = f"GET {display_url(url)}"
        headers = {"Accept": "application/json", "Accept-Encoding": "gzip"}
        with self._exchange("GET", url, what, headers, authorized=False) as (resp, deadline):
            self._check_status(resp, what, ok=frozenset({200}), api=False)
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
                self._check_status(resp, what, ok=frozenset({200}))
                content_type = resp.headers.get("Content-Type", "")
                if not content_type.lower().startswith("text/event-stream"):
                    raise TransportError(
                        f"{what}: expected text/event-stream, got {content_type[:60]!r}", 200
                    )
                deadline.extend(first_within)
                chunks = iter_body(resp, what, deadline=deadline, scrub=self._scrub)
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
            resp = self._send(method, url, what, headers, body, authorized, deadline, read_timeout)
            with resp:
                yield resp, deadline
        finally:
            deadline.close()

    def _send(  # noqa: PLR0917 - private; the arguments of one request
        self,
        method: str,
        url: str,
        what: str,
        headers: Mapping[str, str],
        body: bytes | None,
        authorized: bool,
        deadline: Deadline,
        read_timeout: float | None,
    ) -> requests.Response:
        """Send the request (stream=True), following redirects within its origin only."""
        if not self._base_url:
            raise TransportError("HTTP disabled (base_url='')")
        if self._closed or deadline.over:
            raise TransportError(f"{what}: the transport is closed")
        merged = self._build_headers(headers, authorized)
        origin = _origin(url)
        for _ in range(_MAX_REDIRECTS + 1):
            remaining = deadline.remaining()
            try:
                with deadline.sending():
                    resp = self._session.request(
                        method,
                        url,
                        headers=merged,
                        data=body,
                        timeout=(remaining, remaining if read_timeout is None else read_timeout),
                        verify=self._verify,
                        proxies=self._proxies,
                        stream=True,
                        allow_redirects=False,
                        # Explicit (no-op) auth: requests then never swaps in .netrc or URL
                        # credentials for the API key.
                        auth=_KEEP_HEADERS if authorized else None,
                    )
            except (requests.RequestException, OSError, ValueError) as exc:
                if deadline.over or isinstance(exc, requests.Timeout):
                    # A connect timeout is the deadline too: it was given what was left.
                    raise late(what, deadline) from exc
                raise TransportError(f"{what}: {type(exc).__name__}: {self._scrub(exc)}") from exc
            if deadline.over:
                # Cut short mid-headers: http.client takes the EOF for their end, so what
                # looks like an answer is a fragment.
                resp.close()
                raise late(what, deadline)
            # The connection the answer came on, for adapters whose pools are not ours: the
            # watchdog can then cut the body short (and stop() abort it) all the same.
            connection = getattr(resp.raw, "connection", None)
            if connection is not None:
                deadline.attach(connection)
            location = resp.headers.get("Location")
            if resp.status_code not in _REDIRECTS or not location:
                return resp
            status = resp.status_code
            resp.close()
            target = urljoin(url, location)
            if _origin(target) != origin:
                _log.warning(
                    "phaseflag: %s was redirected to another origin (%s); not followed",
                    what,
                    display_url(target),
                )
                raise TransportError(
                    f"{what}: HTTP {status} redirect to another origin "
                    f"({display_url(target)}) refused; point the URL at its final origin",
                    status,
                )
            if method != "GET" and status not in (307, 308):
                raise TransportError(
                    f"{what}: HTTP {status} would turn the {method} into a GET; not followed",
                    status,
                )
            url = target
        raise TransportError(f"{what}: more than {_MAX_REDIRECTS} redirects")

    def _build_headers(
        self, headers: Mapping[str, str], authorized: bool
    ) -> CaseInsensitiveDict[str]:
        merged: CaseInsensitiveDict[str] = CaseInsensitiveDict({"User-Agent": USER_AGENT})
        if authorized:
            merged.update(self._headers)
            if self._api_key:
                merged["Authorization"] = f"Bearer {self._api_key}"
            merged.update(self._call_headers_factory())
        merged.update(headers)
        return merged

    def _call_headers_factory(self) -> Mapping[str, str]:
        if self._headers_factory is None:
            return {}
        try:
            extra = self._headers_factory()
        except Exception as exc:
            _log.warning("headers_factory raised; the request was not sent", exc_info=True)
            raise TransportError(
                f"headers_factory raised {type(exc).__name__}; the request was not sent"
            ) from exc
        if not isinstance(extra, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in extra.items()
        ):
            _log.warning("headers_factory must return a mapping of str to str; request not sent")
            raise TransportError("headers_factory must return a mapping of str to str")
        return extra

    def _check_status(
        self, resp: requests.Response, what: str, *, ok: frozenset[int], api: bool = True
    ) -> None:
        status = resp.status_code
        if status in ok:
            return
        if api and status in (401, 403):
            raise AuthenticationError(
                f"{what}: the API rejected the SDK key (HTTP {status}); "
                "check api_key for this environment",
                status,
            )
        retry_after = None
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        reason = http.client.responses.get(status, "")
        raise TransportError(
            f"{what}: unexpected HTTP {status} {reason}".rstrip(), status, retry_after=retry_after
        )

    def _read_body(self, resp: requests.Response, what: str, deadline: Deadline) -> bytes:
        return read_body(
            resp, what, limit=self._max_body_bytes, deadline=deadline, scrub=self._scrub
        )

    def _scrub(self, exc: BaseException) -> str:
        text = str(exc)
        if self._api_key:
            text = text.replace(self._api_key, _redact(self._api_key))
        return text[:300]


class _KeepHeaders(AuthBase):
    """An auth that changes nothing: the request's own Authorization header stands."""

    def __call__(self, request: Any) -> Any:
        return request


_KEEP_HEADERS = _KeepHeaders()

_JSON_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json",
    "Accept-Encoding": "gzip",
}


def _json_bytes(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode(
        "utf-8"
    )


def _redact(api_key: str) -> str:
    return f"...{api_key[-4:]}" if len(api_key) >= 12 else "***"


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


def _prefix(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _number(option: str, value: object) -> object:
    """Seconds must be given as numbers here (strings are for the environment)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(option, f"must be a positive number of seconds, got {value!r}")
    return value
