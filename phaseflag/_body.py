"""Bounded body I/O: read a response body within a size limit and its request's Deadline.

Bodies are read as they arrive (never more than 64 KiB at once), decompressed incrementally
so a gzip bomb is stopped within one piece of the limit, and every read error becomes a
TransportError that says whether the deadline passed, the transport closed or the peer failed.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import requests
import urllib3.exceptions

from ._deadline import Deadline
from ._errors import RulesetTooLargeError, TransportError

__all__ = ["Decoder", "close_pools", "drain", "iter_body", "late", "read_body"]

_log = logging.getLogger("phaseflag")

CHUNK = 64 * 1024
# Errors urllib3 and http.client raise from raw reads (requests only wraps its own calls);
# ValueError and AttributeError come from urllib3 when a socket is pulled away mid-read.
_READ_ERRORS: tuple[type[BaseException], ...] = (
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
    requests.RequestException,
    ValueError,
    AttributeError,
)


def late(what: str, deadline: Deadline) -> TransportError:
    """The error of a request cut short by its deadline or by ``close()``."""
    if deadline.aborted:
        return TransportError(f"{what}: aborted (the client is stopping)")
    seconds = deadline.seconds or 0.0
    return TransportError(
        f"{what}: timed out, no complete answer within {seconds:g} s (request_timeout)"
    )


def read_body(
    resp: requests.Response,
    what: str,
    *,
    limit: int,
    deadline: Deadline,
    scrub: Callable[[BaseException], str],
) -> bytes:
    """The whole (decoded) body; RulesetTooLargeError past ``limit`` bytes raw or decoded."""
    declared = resp.headers.get("Content-Length", "").strip()
    if declared.isdigit() and int(declared) > limit:
        raise RulesetTooLargeError(
            f"{what}: the body ({declared} bytes) exceeds max_body_bytes={limit}"
        )
    decoder = Decoder(resp.headers.get("Content-Encoding", ""), what)
    parts: list[bytes] = []
    raw_total = total = 0
    for chunk in _iter_raw(resp, what, deadline, scrub):
        raw_total += len(chunk)
        for piece in decoder.feed(chunk):
            total += len(piece)
            if total > limit or raw_total > limit:
                raise RulesetTooLargeError(
                    f"{what}: the body exceeds max_body_bytes={limit}; reading stopped"
                )
            parts.append(piece)
    decoder.finish()
    return b"".join(parts)


def iter_body(
    resp: requests.Response,
    what: str,
    *,
    deadline: Deadline,
    scrub: Callable[[BaseException], str],
) -> Iterator[bytes]:
    """The decoded body piece by piece as it arrives (event streams); ends quietly when the
    transport is closed under it, raises TransportError when the deadline passes."""
    decoder = Decoder(resp.headers.get("Content-Encoding", ""), what)
    try:
        for chunk in _iter_raw(resp, what, deadline, scrub):
            yield from decoder.feed(chunk)
    except TransportError:
        if deadline.aborted:
            return
        raise


def _iter_raw(
    resp: requests.Response,
    what: str,
    deadline: Deadline,
    scrub: Callable[[BaseException], str],
) -> Iterator[bytes]:
    while True:
        try:
            chunk = _read_some(resp.raw)
        except urllib3.exceptions.ReadTimeoutError as exc:
            if deadline.over:
                raise late(what, deadline) from exc
            raise TransportError(f"{what}: read timed out") from exc
        except _READ_ERRORS as exc:
            if deadline.over:
                raise late(what, deadline) from exc
            raise TransportError(
                f"{what}: the connection failed while reading ({type(exc).__name__}: {scrub(exc)})"
            ) from exc
        if deadline.over:  # the watchdog shut the socket: what arrived may be cut short
            raise late(what, deadline)
        if not chunk:
            return
        yield chunk


def _read_some(raw: Any) -> bytes:
    """Return what has arrived (up to CHUNK) without waiting for a full chunk."""
    read1 = getattr(raw, "read1", None)
    if read1 is not None:  # urllib3 >= 2.3
        data: bytes = read1(CHUNK, decode_content=False)
        return data
    fp = getattr(raw, "_fp", None)
    if fp is not None and hasattr(fp, "read1"):
        data = fp.read1(CHUNK)
        return data
    data = raw.read(1, decode_content=False)
    return data


class Decoder:
    """Undo a Content-Encoding incrementally, never emitting more than CHUNK bytes at once."""

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
                out = self._zlib.decompress(data, CHUNK)
                if out:
                    yield out
                if self._zlib.eof:
                    data = self._zlib.unused_data
                    continue
                data = self._zlib.unconsumed_tail
                if not data and len(out) < CHUNK:
                    return
        except zlib.error as exc:
            raise TransportError(f"{self._what}: corrupt compressed body ({exc})") from None

    def finish(self) -> None:
        if self._zlib is not None and self._fed and not self._zlib.eof:
            raise TransportError(f"{self._what}: the compressed body is truncated")


def _new_inflater() -> Any:
    # 32 + MAX_WBITS accepts both gzip and zlib headers ("deflate" in practice means zlib).
    return zlib.decompressobj(32 + zlib.MAX_WBITS)


def drain(resp: requests.Response) -> None:
    """Read a small leftover body so the connection can go back to the pool."""
    try:
        for _ in range(4):
            if not resp.raw.read(CHUNK, decode_content=False):
                return
    except _READ_ERRORS:
        return


def close_pools(session: requests.Session) -> None:
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
