"""uvicorn's httptools protocol with the limits ``phaseflag serve`` promises (Limits).

uvicorn parses HTTP (llhttp: strict framing, so ``Content-Length`` with
``Transfer-Encoding`` and bad chunk terminators are errors); this subclass adds what
uvicorn leaves to a proxy: a deadline for the request head, caps on its size and on
the body, and connection caps per client address and in total. Every refusal is
answered (when the client can still read) with a JSON error and the connection closed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, ClassVar, Final

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from ._limits import Limits

__all__ = ["Guard", "guarded_protocol"]

#: llhttp's messages for the errors that are not a plain 400.
_PARSER_STATUS: Final = (
    ("Invalid HTTP version", 505),
    ("Request has invalid `Transfer-Encoding`", 501),
)
#: A refused body longer than this is not read to its end (the connection is cut).
_MAX_DRAIN: Final = 16 * 1024 * 1024


def error_bytes(status: int, message: str) -> bytes:
    """A complete ``Connection: close`` response with a JSON error body."""
    phrase = HTTPStatus(status).phrase
    code = phrase.lower().replace(" ", "_").replace("-", "_")
    body = json.dumps({"error": code, "message": message}).encode("utf-8")
    return (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode("ascii") + body


#: (method, headers, trust, http_version) -> (status, headers, body): a route answered
#: straight from the protocol (see ``Guard.direct``).
Direct = Callable[
    [str, list[tuple[bytes, bytes]], Callable[[], None], str],
    tuple[int, list[tuple[bytes, bytes]], bytes],
]


class Guard:
    """State shared by every connection of one server: the limits and per-address counts.

    ``direct`` maps a request path (exact, without a query) to a function answering it
    without an ASGI task: the route every polling SDK hits once per interval. Parsing,
    framing, limits and keep-alive stay uvicorn's; only the answer is written here, in one
    write. Pipelined requests and anything unusual take the ASGI path.
    """

    def __init__(
        self,
        limits: Limits,
        on_refused: Callable[[str], None] | None = None,
        direct: dict[bytes, Direct] | None = None,
    ) -> None:
        self.limits = limits
        self.per_client: dict[str, int] = {}
        self.on_refused = on_refused or (lambda reason: None)
        self.direct = direct or {}


class _GuardedProtocol(HttpToolsProtocol):
    guard: ClassVar[Guard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._address: str | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._in_head = True
        self._head_bytes = 0
        self._body_bytes = 0
        self._line_seen = False
        self._refusal: tuple[int, str] | None = None
        self._answer: tuple[bytes, bool] | None = None

    # -- connections ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limits = self.guard.limits
        if len(self.connections) > limits.max_connections:
            self.guard.on_refused("max_connections")
            self._close(503, "too many connections")
            return
        address = self.client[0] if self.client else ""
        count = self.guard.per_client.get(address, 0)
        if count >= limits.max_connections_per_client:
            self.guard.on_refused("per_client")
            transport.abort()  # closed at once: no answer is owed to a flood
            return
        self.guard.per_client[address] = count + 1
        self._address = address
        self._arm()

    def trust(self) -> None:
        """The app authenticated a request here: it no longer counts against the client cap."""
        self._release()

    def _release(self) -> None:
        address, self._address = self._address, None
        if address is not None:
            left = self.guard.per_client.get(address, 1) - 1
            if left > 0:
                self.guard.per_client[address] = left
            else:
                self.guard.per_client.pop(address, None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._release()
        super().connection_lost(exc)

    # -- reading -------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        limits = self.guard.limits
        if self._in_head:
            before = self._head_bytes
            end = data.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else end
            if not self._line_seen:
                line_end = data.find(b"\n")
                self._line_seen = line_end >= 0
                if (line_end < 0 and self._head_bytes > limits.max_request_line) or (
                    before + line_end > limits.max_request_line
                ):
                    self._close(414, "request line too long")
                    return
            if self._head_bytes > limits.max_header_bytes:
                self._close(431, f"request headers exceed {limits.max_header_bytes} bytes")
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._close(501, "protocol upgrades are not supported")
        except Exception as exc:  # llhttp's errors and the limits raised from callbacks
            if self._refusal is not None:
                self._close(*self._refusal)
                return
            message = str(exc) or "malformed request"
            status = next((s for text, s in _PARSER_STATUS if text in message), 400)
            self._close(status, f"malformed request: {message}")
            return
        if self._in_head and self._head_bytes and self._deadline is None:
            self._arm()  # a head arrived in part: the rest has until the deadline

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._line_seen = True  # llhttp has the request line (data_received checked its size)

    def on_headers_complete(self) -> None:
        self._disarm()
        self._in_head = False
        self._line_seen = False
        self._head_bytes = 0
        self._body_bytes = 0
        if len(self.headers) > self.guard.limits.max_headers:  # the head is capped in bytes too
            self._refusal = (431, f"more than {self.guard.limits.max_headers} request headers")
            raise ValueError("too many headers")
        limit = self.guard.limits.max_body_bytes
        length = _content_length(self.headers)
        if length is not None and length > limit:
            self._refusal = (413, f"request body is {length} bytes, over the {limit}-byte limit")
            if length > _MAX_DRAIN or any(n == b"expect" for n, _ in self.headers):
                raise ValueError("body too large")  # answered and cut at once
            return  # the body is read and dropped, then answered (the client can read it)
        direct = self.guard.direct.get(self.url)
        if (
            direct is not None
            and not self.pipeline
            and (self.cycle is None or self.cycle.response_complete)
        ):
            self._answer_directly(direct)
            return
        if self._address is not None:
            self.scope["extensions"] = {"phaseflag.trust": {"trust": self.trust}}
        super().on_headers_complete()

    def _answer_directly(self, direct: Direct) -> None:
        method = self.parser.get_method().decode("ascii")
        version = self.parser.get_http_version()
        status, headers, body = direct(method, self.headers, self.trust, version)
        keep = version == "1.1" and self.parser.should_keep_alive() and status != 401
        parts = [STATUS_LINE[status]]
        for name, value in (*self.server_state.default_headers, *headers):
            parts += (name, b": ", value, b"\r\n")
        if not keep and status != 401:  # a 401 carries its own "connection: close"
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        if method != "HEAD":
            parts.append(body)
        self._answer = (b"".join(parts), keep)

    def on_body(self, body: bytes) -> None:
        if self._refusal is not None or self._answer is not None:
            return
        self._body_bytes += len(body)
        if self._body_bytes > self.guard.limits.max_body_bytes:
            limit = self.guard.limits.max_body_bytes
            self._refusal = (413, f"request body is over the {limit}-byte limit")
            raise ValueError("body too large")
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refusal is not None:
            self._close(*self._refusal)
            raise ValueError("refused")  # nothing after this request is read
        self._in_head = True
        answer, self._answer = self._answer, None
        if answer is None:
            super().on_message_complete()
            return
        data, keep = answer
        self.transport.write(data)
        if keep:
            self.on_response_complete()
        else:
            self.transport.close()

    # -- timers and refusals -------------------------------------------------------------------

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.guard.limits.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.cycle is not None and not self.cycle.response_complete and not self._in_head:
            return  # a request is being served
        if self._head_bytes:
            self.guard.on_refused("header_timeout")
            self._close(408, "request headers not received in time")
        elif not self.transport.is_closing():
            self.transport.close()  # a connection that never sent a request

    def _close(self, status: int, message: str) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(error_bytes(status, message))
            self.transport.close()


def _content_length(headers: list[tuple[bytes, bytes]] | None) -> int | None:
    for name, value in headers or ():
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None


def guarded_protocol(guard: Guard) -> type[HttpToolsProtocol]:
    """A protocol class bound to ``guard`` (uvicorn's ``Config(http=...)`` takes a class)."""
    return type("PhaseFlagProtocol", (_GuardedProtocol,), {"guard": guard})
