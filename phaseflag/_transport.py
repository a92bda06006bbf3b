"""The HTTP seam: one requests.Session wrapper speaking the PhaseFlag wire protocol (DESIGN §3).

Auth and User-Agent headers, timeouts, status mapping to the error tree, size limits.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import socket
import threading
import time
import zlib
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3.exceptions
from requests.structures import CaseInsensitiveDict

from phaseflag._backoff import parse_retry_after
from phaseflag._errors import (
    AuthenticationError,
    ConfigError,
    RulesetTooLargeError,
    TransportError,
)
from phaseflag._sse import SSEEvent, parse_sse
from phaseflag._version import __version__

__all__ = ["DEFAULT_MAX_BODY_BYTES", "FetchResult", "Transport"]

_log = logging.getLogger("phaseflag")

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
USER_AGENT = f"phaseflag-python/{__version__}"

_CHUNK = 64 * 1024
_OK_EVENTS = frozenset({200, 202, 204})
# A slow-drip server must not hold a fetch forever: the body has this long in all,
# or 6 x timeout when that is longer (each single read is bounded by `timeout`).
_MIN_BODY_DEADLINE = 60.0
# Errors urllib3 and http.client raise from raw reads (requests only wraps its own calls).
_READ_ERRORS: tuple[type[BaseException], ...] = (
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
    requests.RequestException,
)


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


class Transport:
    """The SDK's only door to the network: the PhaseFlag API plus an optional bootstrap URL.

    Every API request carries ``Authorization: Bearer <api_key>`` (which neither ``headers``
    nor ``headers_factory`` can replace), ``User-Agent: phaseflag-python/<version>``, the
    static ``headers`` and the result of ``headers_factory()``, called once per request.
    ``timeout`` bounds connecting and each read; a whole body must arrive within
    ``max(60 s, 6 x timeout)``. Bodies are read as a stream and refused with
    RulesetTooLargeError past ``max_body_bytes`` (raw or decompressed, so a gzip bomb is
    stopped within one 64 KiB piece of the limit). ``base_url=""`` disables HTTP:
    every method then raises TransportError.

    Methods raise TransportError (status set for HTTP answers, ``retry_after`` from a
    Retry-After header on 429/5xx), AuthenticationError on 401/403 from the API and
    RulesetTooLargeError for oversize bodies; messages never contain the API key. Methods
    may be called from several threads at once (requests' connection pool is thread-safe
    and no per-request state is shared). ``close_streams()`` interrupts a blocked
    ``open_stream()`` read from any thread; ``close()`` does that too and is final. A
    ``session`` passed in is used but not closed: its owner closes it.

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
        self._base_url = _check_base_url(base_url)
        self._api_key = _check_api_key(api_key, required=bool(self._base_url))
        self._timeout = _check_seconds("timeout", timeout)
        self._stream_read_timeout = _check_seconds("stream_read_timeout", stream_read_timeout)
        if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int):
            raise ConfigError("max_body_bytes", "must be an int", "e.g. 10 * 1024 * 1024")
        if max_body_bytes <= 0:
            raise ConfigError("max_body_bytes", f"must be positive, got {max_body_bytes}")
        self._max_body_bytes = max_body_bytes
        self._headers = _check_headers(headers)
        self._headers_factory = headers_factory
        self._verify = _check_verify(verify)
        self._proxies = dict(proxies) if proxies else None
        self._owns_session = session is None
        self._session = session if session is not None else requests.Session()
        self._lock = threading.Lock()
        self._streams: set[requests.Response] = set()
        self._aborted: set[requests.Response] = set()  # streams closed on purpose
        self._closed = False
        if self._verify is False and self._base_url:
            _log.warning(
                "TLS verification disabled (verify=False): the SDK key and flag data can be "
                "read or altered by anyone on the network path"
            )

    def __repr__(self) -> str:
        return (
            f"Transport(base_url={_display_url(self._base_url)!r}, "
            f"api_key={_redact(self._api_key)!r})"
        )

    @property
    def enabled(self) -> bool:
        """False when ``base_url`` is ``""`` (HTTP disabled)."""
        return bool(self._base_url)

    def fetch_ruleset(self, etag: str | None) -> FetchResult:
        """GET ``/sdk/ruleset``, conditional on ``etag``; gzip is decoded within the size limit."""
        headers = {"Accept": "application/json", "Accept-Encoding": "gzip"}
        if etag:
            headers["If-None-Match"] = etag
        what = "GET /sdk/ruleset"
        with self._send("GET", self._url("/sdk/ruleset"), what, headers=headers) as resp:
            if resp.status_code == 304:
                return FetchResult(True, None, resp.headers.get("ETag") or etag)
            self._check_status(resp, what, ok=frozenset({200}))
            body = self._read_body(resp, what)
            return FetchResult(False, body, resp.headers.get("ETag"))

    def post_events(self, payload: Mapping[str, Any]) -> None:
        """POST an events batch to ``/sdk/events``; returns on 200/202/204.

        Any other status raises TransportError with ``.status`` (the caller drops on 400,
        splits on 413, retries on 429/5xx honouring ``.retry_after``). Raises TypeError or
        ValueError, sending nothing, when ``payload`` is not JSON-serialisable.
        """
        body = _json_bytes(payload)
        what = "POST /sdk/events"
        with self._send(
            "POST", self._url("/sdk/events"), what, headers=_JSON_HEADERS, body=body
        ) as resp:
            self._check_status(resp, what, ok=_OK_EVENTS)
            _drain(resp)

    def evaluate(self, flag_key: str, context: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``/sdk/evaluate`` and return the server's result object.

        The answer must be a JSON object with at least ``value`` and ``reason``; anything
        else raises TransportError. 404 (unknown flag) raises TransportError(status=404).
        """
        body = _json_bytes({"flag_key": flag_key, "context": dict(context)})
        what = "POST /sdk/evaluate"
        with self._send(
            "POST", self._url("/sdk/evaluate"), what, headers=_JSON_HEADERS, body=body
        ) as resp:
            if resp.status_code == 404:
                raise TransportError(f"{what}: unknown flag {flag_key!r} (HTTP 404)", 404)
            self._check_status(resp, what, ok=frozenset({200}))
            raw = self._read_body(resp, what)
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
        """GET an absolute http(s) URL (``bootstrap_url``) within the timeout and size limit.

        Sends no Authorization and no custom headers: the URL is usually a third-party CDN.
        Redirects are followed. Raises ConfigError naming ``bootstrap_url`` for another
        scheme, TransportError for any status but 200 (a 401/403 here says nothing about
        the SDK key, so it is not an AuthenticationError).
        """
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                "bootstrap_url",
                f"must be an absolute http:// or https:// URL, got {_display_url(str(url))!r}",
                "e.g. 'https://cdn.example.com/flags/bootstrap.json'",
            )
        what = f"GET {_display_url(url)}"
        headers = {"Accept": "application/json", "Accept-Encoding": "gzip"}
        with self._send("GET", url, what, headers=headers, authorized=False) as resp:
            self._check_status(resp, what, ok=frozenset({200}), api=False)
            return self._read_body(resp, what)

    def open_stream(self) -> Generator[SSEEvent, None, None]:
        """GET ``/sdk/stream`` and yield its server-sent events as they arrive.

        The request is made on the first ``next()``. Reads time out after
        ``stream_read_timeout`` seconds without a byte (pings keep a live stream busy).
        The iterator ends when the server closes the stream or ``close()`` is called; it
        raises like ``fetch_ruleset`` for a bad status, TransportError on a read error or
        timeout and RulesetTooLargeError for an event above ``max_body_bytes``. Closing
        the generator closes the response; ``close_streams()`` does so from another thread.
        """
        what = "GET /sdk/stream"
        headers = {
            "Accept": "text/event-stream",
            "Accept-Encoding": "identity",
            "Cache-Control": "no-cache",
        }
        resp = self._send(
            "GET",
            self._url("/sdk/stream"),
            what,
            headers=headers,
            read_timeout=self._stream_read_timeout,
        )
        with self._lock:
            if self._closed:
                resp.close()
                return
            self._streams.add(resp)
        try:
            self._check_status(resp, what, ok=frozenset({200}))
            content_type = resp.headers.get("Content-Type", "")
            if not content_type.lower().startswith("text/event-stream"):
                raise TransportError(
                    f"{what}: expected text/event-stream, got {content_type[:60]!r}", 200
                )
            yield from parse_sse(
                self._iter_stream(resp, what), max_event_bytes=self._max_body_bytes
            )
        finally:
            with self._lock:
                self._streams.discard(resp)
                self._aborted.discard(resp)
            resp.close()

    def close_streams(self) -> None:
        """Close every open ``open_stream()`` response, waking a read blocked in another thread.

        Those iterators end quietly; the transport stays usable (new streams may be opened).
        """
        with self._lock:
            streams = list(self._streams)
            self._aborted.update(streams)
        for resp in streams:
            _abort(resp)

    def close(self) -> None:
        """Close open streams (as ``close_streams()``) and the owned session, whose pooled
        keep-alive sockets are closed at once rather than when the pools are collected.

        Final and idempotent: afterwards every method raises TransportError.
        """
        with self._lock:
            self._closed = True
        self.close_streams()
        if self._owns_session:
            _close_pools(self._session)
            self._session.close()

    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's connections without touching its sockets."""
        # The parent's lock may have been copied while held: replace it, never acquire it.
        self._lock = threading.Lock()
        self._streams = set()
        self._aborted = set()
        if self._owns_session:
            self._session = requests.Session()

    # -- internals ---------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self._base_url + path

    def _send(
        self,
        method: str,
        url: str,
        what: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None = None,
        authorized: bool = True,
        read_timeout: float | None = None,
    ) -> requests.Response:
        """Send one request with stream=True (bodies are read under the size limit)."""
        timeout = (self._timeout, self._timeout if read_timeout is None else read_timeout)
        if not self._base_url:
            raise TransportError("HTTP disabled (base_url='')")
        if self._closed:
            raise TransportError(f"{what}: the transport is closed")
        merged = self._build_headers(headers, authorized)
        try:
            return self._session.request(
                method,
                url,
                headers=merged,
                data=body,
                timeout=timeout,
                verify=self._verify,
                proxies=self._proxies,
                stream=True,
                # POSTs must not be replayed as GETs elsewhere; bootstrap CDNs do redirect.
                allow_redirects=method == "GET",
            )
        except requests.Timeout as exc:
            raise TransportError(f"{what}: timed out ({self._scrub(exc)})") from exc
        except (requests.RequestException, OSError, ValueError) as exc:
            raise TransportError(f"{what}: {type(exc).__name__}: {self._scrub(exc)}") from exc

    def _build_headers(
        self, headers: Mapping[str, str], authorized: bool
    ) -> CaseInsensitiveDict[str]:
        merged: CaseInsensitiveDict[str] = CaseInsensitiveDict({"User-Agent": USER_AGENT})
        if authorized:
            merged.update(self._headers)
            merged.update(self._call_headers_factory())
            merged["Authorization"] = f"Bearer {self._api_key}"
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

    def _read_body(self, resp: requests.Response, what: str) -> bytes:
        limit = self._max_body_bytes
        declared = resp.headers.get("Content-Length", "").strip()
        if declared.isdigit() and int(declared) > limit:
            raise RulesetTooLargeError(
                f"{what}: the body ({declared} bytes) exceeds max_body_bytes={limit}"
            )
        decoder = _Decoder(resp.headers.get("Content-Encoding", ""), what)
        deadline = time.monotonic() + max(_MIN_BODY_DEADLINE, 6 * self._timeout)
        parts: list[bytes] = []
        raw_total = total = 0
        for chunk in self._iter_raw(resp, what):
            raw_total += len(chunk)
            for piece in decoder.feed(chunk):
                total += len(piece)
                if total > limit or raw_total > limit:
                    raise RulesetTooLargeError(
                        f"{what}: the body exceeds max_body_bytes={limit}; reading stopped"
                    )
                parts.append(piece)
            if time.monotonic() > deadline:
                raise TransportError(f"{what}: the body did not arrive in time")
        decoder.finish()
        return b"".join(parts)

    def _iter_stream(self, resp: requests.Response, what: str) -> Iterator[bytes]:
        decoder = _Decoder(resp.headers.get("Content-Encoding", ""), what)
        try:
            for chunk in self._iter_raw(resp, what):
                yield from decoder.feed(chunk)
        except TransportError:
            if self._closed or resp in self._aborted:
                return  # close() or close_streams() interrupted the read on purpose
            raise

    def _iter_raw(self, resp: requests.Response, what: str) -> Iterator[bytes]:
        while True:
            try:
                chunk = _read_some(resp.raw)
            except urllib3.exceptions.ReadTimeoutError as exc:
                raise TransportError(f"{what}: read timed out") from exc
            except _READ_ERRORS as exc:
                raise TransportError(
                    f"{what}: the connection failed while reading "
                    f"({type(exc).__name__}: {self._scrub(exc)})"
                ) from exc
            except (ValueError, AttributeError) as exc:
                # urllib3 raises these when close() pulls the socket away mid-read.
                if not (self._closed or resp in self._aborted):
                    raise
                raise TransportError(f"{what}: the transport is closed") from exc
            if not chunk:
                return
            yield chunk

    def _scrub(self, exc: BaseException) -> str:
        text = str(exc)
        if self._api_key:
            text = text.replace(self._api_key, _redact(self._api_key))
        return text[:300]


_JSON_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json",
    "Accept-Encoding": "gzip",
}


class _Decoder:
    """Undo a Content-Encoding incrementally, never emitting more than _CHUNK bytes at once."""

    __slots__ = ("_fed", "_what", "_zlib")

    def __init__(self, content_encoding: str, what: str) -> None:
        self._what = what
        self._fed = False
        encoding = content_encoding.strip().lower()
        if encoding in ("", "identity"):
            self._zlib: Any = None
        elif encoding in ("gzip", "x-gzip", "deflate"):
            self._zlib = _new_inflater()
        else:
            raise TransportError(f"{what}: unsupported Content-Encoding {encoding[:40]!r}")

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._zlib is None:
            yield data
            return
        self._fed = self._fed or bool(data)
        try:
            while True:
                if self._zlib.eof:
                    if not data:
                        return
                    self._zlib = _new_inflater()  # a further gzip member
                out = self._zlib.decompress(data, _CHUNK)
                if out:
                    yield out
                if self._zlib.eof:
                    data = self._zlib.unused_data
                    continue
                data = self._zlib.unconsumed_tail
                if not data and len(out) < _CHUNK:
                    return
        except zlib.error as exc:
            raise TransportError(f"{self._what}: corrupt compressed body ({exc})") from None

    def finish(self) -> None:
        if self._zlib is not None and self._fed and not self._zlib.eof:
            raise TransportError(f"{self._what}: the compressed body is truncated")


def _new_inflater() -> Any:
    # 32 + MAX_WBITS accepts both gzip and zlib headers ("deflate" in practice means zlib).
    return zlib.decompressobj(32 + zlib.MAX_WBITS)


def _read_some(raw: Any) -> bytes:
    """Return what has arrived (up to _CHUNK) without waiting for a full chunk.

    SSE events must surface as they arrive, and a body's deadline is checked between reads.
    """
    read1 = getattr(raw, "read1", None)
    if read1 is not None:  # urllib3 >= 2.3
        data: bytes = read1(_CHUNK, decode_content=False)
        return data
    fp = getattr(raw, "_fp", None)
    if fp is not None and hasattr(fp, "read1"):
        data = fp.read1(_CHUNK)
        return data
    data = raw.read(1, decode_content=False)
    return data


def _drain(resp: requests.Response) -> None:
    """Read a small leftover body so the connection can go back to the pool."""
    try:
        for _ in range(4):
            if not resp.raw.read(_CHUNK, decode_content=False):
                return
    except _READ_ERRORS:
        return


def _abort(resp: requests.Response) -> None:
    """Close a response from another thread, waking a read blocked on its socket."""
    raw = resp.raw
    try:
        raw.shutdown()  # urllib3 >= 2.3
    except (AttributeError, ValueError, RuntimeError, OSError):
        sock = getattr(getattr(raw, "_connection", None), "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
    try:
        resp.close()
    except Exception:  # closing must not fail; the reader sees the socket gone
        _log.debug("closing a stream response failed", exc_info=True)


def _close_pools(session: requests.Session) -> None:
    """Close the idle keep-alive sockets of every connection pool of ``session`` now.

    ``Session.close()`` only forgets the pools (urllib3 2.x closes their sockets when a pool
    is garbage-collected), so a pool still referenced from anywhere, or caught in a reference
    cycle, would keep its connections open after ``close()``.
    """
    for adapter in session.adapters.values():
        managers = [getattr(adapter, "poolmanager", None)]
        managers += list(getattr(adapter, "proxy_manager", {}).values())
        for manager in managers:
            pools = getattr(manager, "pools", None)
            if pools is None:
                continue
            for key in list(pools.keys()):
                pool = pools.get(key)
                if pool is not None:
                    with contextlib.suppress(Exception):  # closing must not fail
                        pool.close()


def _json_bytes(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode(
        "utf-8"
    )


def _redact(api_key: str) -> str:
    return f"...{api_key[-4:]}" if len(api_key) >= 12 else "***"


def _display_url(url: str) -> str:
    """The URL without credentials, query or fragment (signed CDN URLs carry tokens there)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _check_base_url(base_url: str) -> str:
    fix = "use the API root including /api/v1, e.g. 'https://api.phaseflag.com/api/v1'"
    if not isinstance(base_url, str):
        raise ConfigError("base_url", f"must be a str, got {type(base_url).__name__}", fix)
    url = base_url.strip().rstrip("/")
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        valid = False
    if not valid:
        raise ConfigError(
            "base_url", f"must be an http:// or https:// URL, got {_display_url(url)!r}", fix
        )
    if parts.query or parts.fragment:
        raise ConfigError("base_url", "must not contain a query string or fragment", fix)
    return url


def _check_api_key(api_key: str, *, required: bool) -> str:
    if not isinstance(api_key, str):
        raise ConfigError("api_key", f"must be a str, got {type(api_key).__name__}")
    if required and not api_key:
        raise ConfigError("api_key", "is empty", "pass the SDK key of this environment")
    # Checked here so that requests never builds an error message around the header value.
    if any(not (0x21 <= ord(ch) <= 0x7E) for ch in api_key):
        raise ConfigError(
            "api_key",
            "contains whitespace, control or non-ASCII characters",
            "copy the SDK key again without surrounding spaces or newlines",
        )
    return api_key


def _check_seconds(option: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(option, f"must be a positive number of seconds, got {value!r}")
    if value == float("inf"):
        raise ConfigError(option, "must be finite")
    return float(value)


def _check_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    if headers is None:
        return {}
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ConfigError("headers", "must be a mapping of str to str")
    if any(k.lower() == "authorization" for k in headers):
        raise ConfigError(
            "headers", "must not set Authorization", "the SDK sends 'Bearer <api_key>' itself"
        )
    return dict(headers)


def _check_verify(verify: bool | str) -> bool | str:
    if isinstance(verify, bool):
        return verify
    if isinstance(verify, str) and os.path.exists(verify):
        return verify
    raise ConfigError(
        "verify",
        f"must be True, False or the path of a CA bundle that exists, got {verify!r}",
    )
