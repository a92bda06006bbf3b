"""A strict, small HTTP/1.1 layer on ``http.server.ThreadingHTTPServer``.

One thread per connection with keep-alive; requests are parsed with hard limits (request
line, header bytes and count, body size) and every response goes out in one write.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import json
import logging
import selectors
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Protocol

from .._version import __version__

__all__ = [
    "HTTPServer",
    "Limits",
    "ProtocolError",
    "Request",
    "Response",
    "Stream",
    "json_response",
    "parse_json",
]

_log = logging.getLogger("phaseflag")

_STATUS_LINES: Final[dict[int, bytes]] = {
    int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\n".encode("ascii") for s in HTTPStatus
}
_SERVER_HEADER: Final = f"Server: phaseflag/{__version__}\r\n".encode("ascii")
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_NO_BODY_STATUSES: Final = frozenset({204, 304})
_SMALL_BODY: Final = 64 * 1024  # joined with the head into one write below this size
_MAX_DRAIN: Final = 16 * 1024 * 1024  # larger refused bodies are cut off with a reset
_HEX_DIGITS: Final = b"0123456789abcdefABCDEF"


@dataclass(frozen=True, slots=True)
class Limits:
    """Hard limits on what one request may send; anything beyond is refused, never buffered."""

    max_body_bytes: int = 1024 * 1024
    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    max_request_line: int = 8 * 1024
    #: Seconds a connection may sit idle (or a write may block) before it is closed.
    idle_timeout: float = 60.0
    #: Connections served at once; more are answered 503 and closed.
    max_connections: int = 1024


@dataclass(slots=True)
class Request:
    """One parsed request. ``headers`` has lower-case names (repeats joined with ``", "``)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Response:
    """A complete response; ``headers`` are extra ``(name, value)`` pairs."""

    status: int
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Stream:
    """A streamed response (Server-Sent Events): headers, then ``pump(write)`` until it returns.

    ``pump`` gets a function that sends bytes at once and raises OSError when the client
    has gone. The connection is closed when ``pump`` returns.
    """

    pump: Callable[[Callable[[bytes], None]], None]
    content_type: str = "text/event-stream; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = field(default=())


class ProtocolError(Exception):
    """The request cannot be parsed or breaks a limit; answered with ``status`` and closed.

    ``drain`` bytes of unread body are read and dropped first, so a client still sending
    gets to read the answer instead of a connection reset.
    """

    def __init__(self, status: int, message: str, *, drain: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.drain = drain


class App(Protocol):
    """What the HTTP layer calls: one method turning a request into a response."""

    def dispatch(self, request: Request) -> Response | Stream: ...


def json_response(status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    """A JSON response (compact, UTF-8; a lone surrogate from the request stays escaped)."""
    try:
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        body = json.dumps(payload, separators=(",", ":")).encode("ascii")
    return Response(status, body, "application/json", headers)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(body: bytes) -> Any:
    """Parse a request body as strict JSON; raises ValueError with a message for the client."""
    if not body.strip():
        raise ValueError("the request body is empty; send a JSON object")
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("the JSON body is nested too deeply") from None
    except UnicodeDecodeError:
        raise ValueError("the body is not UTF-8 JSON") from None
    except ValueError as exc:
        raise ValueError(f"invalid JSON: {exc}") from None


def _is_decimal(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also accepts "²", which ``int`` then refuses)."""
    return text.isascii() and text.isdigit()


def _error_body(status: int, message: str) -> bytes:
    code = HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    return json.dumps({"error": code, "message": message}).encode("utf-8")


class _Clock:
    """The ``Date`` header, formatted at most once per second."""

    def __init__(self) -> None:
        self._second = 0
        self._line = b""

    def date_line(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            text = email.utils.formatdate(now, usegmt=True)
            self._line = f"Date: {text}\r\n".encode("ascii")
            self._second = now
        return self._line


class HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with named, tracked daemon connection threads and a backlog for
    hundreds of clients. ``close_connections()`` ends every open connection (stop)."""

    daemon_threads = True
    request_queue_size = 512
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: App, limits: Limits) -> None:
        self.app = app
        self.limits = limits
        self.clock = _Clock()
        self.closing = False
        self._conn_lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._stop_requested = False
        self._stopped = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        try:
            super().__init__(address, _Handler)
        except BaseException:
            self._wake_r.close()
            self._wake_w.close()
            raise

    def serve(self) -> None:
        """Accept connections until ``stop_serving()``; unlike ``serve_forever`` it never polls."""
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self.socket, selectors.EVENT_READ)
                selector.register(self._wake_r, selectors.EVENT_READ)
                while not self._stop_requested:
                    ready = selector.select()
                    if self._stop_requested:
                        break
                    if any(key.fileobj is self.socket for key, _ in ready):
                        self._accept()
        finally:
            self._stopped.set()

    def stop_serving(self, timeout: float) -> None:
        """End ``serve()`` at once (waking its select) and wait for it."""
        self._stop_requested = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._stopped.wait(timeout)

    def server_close(self) -> None:
        """Close the listening socket and the wake-up pair."""
        super().server_close()
        self._wake_r.close()
        self._wake_w.close()

    def _accept(self) -> None:
        try:
            request, client_address = self.get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                _log.warning("phaseflag serve: cannot accept a connection: %s", exc.strerror)
                self._stopped.wait(0.1)  # the socket stays readable: do not spin
            return  # otherwise the client gave up before accept()
        try:
            self.process_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
            self.shutdown_request(request)

    def server_bind(self) -> None:
        """Bind without the reverse-DNS lookup ``HTTPServer.server_bind`` does (it can stall)."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection in a ``phaseflag-server-conn`` daemon thread."""
        with self._conn_lock:
            refuse = self.closing or len(self._connections) >= self.limits.max_connections
            if not refuse:
                thread = threading.Thread(
                    target=self.process_request_thread,
                    args=(request, client_address),
                    name="phaseflag-server-conn",
                    daemon=True,
                )
                self._connections[request] = thread
        if not refuse:
            try:
                thread.start()
                return
            except RuntimeError:  # the OS refused another thread
                with self._conn_lock:
                    self._connections.pop(request, None)
        self._refuse(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Run the handler, then forget the connection."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._conn_lock:
                self._connections.pop(request, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log (at debug) instead of printing a traceback: a client's fault never matters."""
        _log.debug("phaseflag serve: connection error", exc_info=True)

    def close_connections(self, timeout: float) -> None:
        """Shut down every open connection and join their threads (bounded by ``timeout``)."""
        with self._conn_lock:
            self.closing = True
            connections = list(self._connections.items())
        for sock, _ in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for _, thread in connections:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def _refuse(self, request: Any) -> None:
        body = _error_body(503, "too many connections")
        head = (
            b"%sContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(OSError):
            request.sendall(head % (_STATUS_LINES[503], len(body)) + body)
        self.shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    """Reads requests with strict limits and writes each response in one piece."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: HTTPServer

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.limits.idle_timeout)

    def handle_one_request(self) -> None:
        """Serve one request; any failure closes this connection only, never the server."""
        self.close_connection = True
        self.requestline = ""
        try:
            request = self._read_request()
        except ProtocolError as exc:
            self._send_error(exc)
            return
        except (OSError, ValueError):
            return  # reset, timeout or closed socket: nobody to answer
        if request is None:
            return
        try:
            result = self.server.app.dispatch(request)
        except Exception:
            _log.exception("phaseflag serve: internal error handling %s", self.requestline)
            self._send_error(ProtocolError(500, "internal server error"))
            return
        try:
            if isinstance(result, Stream):
                self._send_stream(result)
            else:
                self._send(result, head_only=request.method == "HEAD")
        except (OSError, ValueError):
            self.close_connection = True  # the client went away mid-response

    def log_message(self, format: str, *args: Any) -> None:
        """Never print to stderr; request lines are logged at debug (no headers, no keys)."""
        _log.debug("phaseflag serve: " + format, *args)

    # -- reading -----------------------------------------------------------------------------

    def _read_request(self) -> Request | None:
        limits = self.server.limits
        line = self.rfile.readline(limits.max_request_line + 1)
        if line in (b"\r\n", b"\n"):  # one stray CRLF before a request is allowed
            line = self.rfile.readline(limits.max_request_line + 1)
        if not line:
            return None
        if len(line) > limits.max_request_line:
            raise ProtocolError(414, "request line too long")
        parts = line.rstrip(b"\r\n").split(b" ")
        if len(parts) != 3 or not parts[0].isalpha() or not parts[1]:
            raise ProtocolError(400, "malformed request line")
        method, target, version = (p.decode("latin-1") for p in parts)
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            if version.startswith("HTTP/") and version[5:6].isdigit():
                raise ProtocolError(505, f"{version} is not supported; use HTTP/1.1")
            raise ProtocolError(400, "malformed request line")
        self.command, self.request_version = method, version
        self.requestline = f"{method} {target.split('?', 1)[0]} {version}"
        headers = self._read_headers(limits)
        keep_alive = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        body = self._read_body(headers, limits)
        path, _, query = target.partition("?")
        if path.startswith(("http://", "https://")):  # absolute-form target
            path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
        self.close_connection = not keep_alive
        return Request(method.upper(), path, query, headers, body)

    def _read_headers(self, limits: Limits) -> dict[str, str]:
        headers: dict[str, str] = {}
        total = count = 0
        while True:
            line = self.rfile.readline(limits.max_header_bytes - total + 1)
            total += len(line)
            if total > limits.max_header_bytes:
                raise ProtocolError(431, f"request headers exceed {limits.max_header_bytes} bytes")
            if line in (b"\r\n", b"\n"):
                return headers
            if not line.endswith(b"\n"):
                raise ConnectionError("connection closed inside the headers")
            count += 1
            if count > limits.max_headers:
                raise ProtocolError(431, f"more than {limits.max_headers} request headers")
            name, colon, value = line.partition(b":")
            if not colon or not name or name[:1] in b" \t" or name != name.rstrip():
                raise ProtocolError(400, "malformed header line")
            key = name.decode("latin-1").lower()
            text = value.strip().decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def _read_body(self, headers: Mapping[str, str], limits: Limits) -> bytes:
        if "transfer-encoding" in headers:
            if headers["transfer-encoding"].strip().lower() != "chunked":
                raise ProtocolError(501, "only the chunked transfer coding is supported")
            self._continue(headers)
            return self._read_chunked(limits)
        length_text = headers.get("content-length")
        if length_text is None:
            return b""
        values = {v.strip() for v in length_text.split(",")}
        if len(values) != 1 or not _is_decimal(next(iter(values))):
            raise ProtocolError(400, "malformed Content-Length")
        length = int(values.pop())
        if length > limits.max_body_bytes:
            expecting = headers.get("expect", "").lower() == "100-continue"
            raise ProtocolError(
                413,
                f"request body is {length} bytes, over the {limits.max_body_bytes}-byte limit",
                drain=0 if expecting or length > _MAX_DRAIN else length,
            )
        if length == 0:
            return b""
        self._continue(headers)
        body = self.rfile.read(length)
        if len(body) != length:
            raise ConnectionError("connection closed inside the body")
        return body

    def _read_chunked(self, limits: Limits) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            line = self.rfile.readline(1026)
            digits = line.split(b";", 1)[0].strip()
            if not digits or digits.strip(_HEX_DIGITS):  # int() would also take "-5", "0x5"
                raise ProtocolError(400, "malformed chunk size")
            chunk = int(digits, 16)
            if chunk == 0:
                break
            size += chunk
            if size > limits.max_body_bytes:
                raise ProtocolError(
                    413, f"request body is over the {limits.max_body_bytes}-byte limit"
                )
            data = self.rfile.read(chunk + 2)
            if len(data) != chunk + 2:
                raise ConnectionError("connection closed inside a chunk")
            parts.append(data[:chunk])
        trailers = 0
        while self.rfile.readline(limits.max_header_bytes + 1) not in (b"\r\n", b"\n", b""):
            trailers += 1
            if trailers > limits.max_headers:
                raise ProtocolError(431, "too many trailer fields")
        return b"".join(parts)

    def _continue(self, headers: Mapping[str, str]) -> None:
        if (
            headers.get("expect", "").lower() == "100-continue"
            and self.request_version == "HTTP/1.1"
        ):
            self.wfile.write(_CONTINUE)

    # -- writing -----------------------------------------------------------------------------

    def _head(self, status: int, extra: bytes) -> bytes:
        line = _STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n".encode("ascii")
        closing = b"Connection: close\r\n" if self.close_connection else b""
        return b"".join((line, self.server.clock.date_line(), _SERVER_HEADER, extra, closing))

    def _send(self, response: Response, *, head_only: bool = False) -> None:
        body = response.body
        extra = "".join(f"{name}: {value}\r\n" for name, value in response.headers)
        if response.status not in _NO_BODY_STATUSES:
            if response.content_type:
                extra += f"Content-Type: {response.content_type}\r\n"
            extra += f"Content-Length: {len(body)}\r\n"
        else:
            body = b""
        head = self._head(response.status, extra.encode("latin-1")) + b"\r\n"
        if head_only or not body:
            self.wfile.write(head)
        elif len(body) < _SMALL_BODY:
            self.wfile.write(head + body)
        else:
            self.wfile.write(head)
            self.wfile.write(body)
        self._access(response.status, len(body))

    def _send_stream(self, stream: Stream) -> None:
        self.close_connection = True
        extra = f"Content-Type: {stream.content_type}\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in stream.headers
        )
        self.wfile.write(self._head(200, extra.encode("latin-1")) + b"\r\n")
        self._access(200, "-")
        wfile = self.wfile

        def write(data: bytes) -> None:
            wfile.write(data)

        stream.pump(write)

    def _send_error(self, error: ProtocolError) -> None:
        self.close_connection = True
        try:
            left = error.drain
            while left > 0:
                got = self.rfile.read(min(left, 65536))
                if not got:
                    return
                left -= len(got)
            self._send(Response(error.status, _error_body(error.status, error.message)))
        except (OSError, ValueError):
            pass

    def _access(self, status: int, size: int | str) -> None:
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("phaseflag serve: %r %d %s", self.requestline, status, size)
