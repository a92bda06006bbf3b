"""The routes of ``phaseflag serve`` as a Starlette app: the SDK API (DESIGN.md §3), OFREP,
``/healthz``, ``/metrics`` and the dashboard.

Authentication is a constant-time check of a bearer or ``X-API-Key`` key; a request
without a valid one is answered 401 and its connection closed. Streams are one task
each, woken together by one shared future when the served ruleset changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from .._errors import InvalidContextError
from .._evaluation import evaluate_flag, not_found
from .._version import __version__
from ..types import EvaluationContext
from . import _ofrep
from ._eventlog import EventLog
from ._json import dumps, json_response, parse_json
from ._metrics import Metrics
from ._watch import Snapshot

__all__ = ["App", "Source"]

_log = logging.getLogger("phaseflag")

_API: Final = "/api/v1"
_OFREP_FLAGS: Final = "/ofrep/v1/evaluate/flags"
_UNAUTHORIZED: Final = {"WWW-Authenticate": 'Bearer realm="phaseflag"', "Connection": "close"}
_SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    (b"connection", b"close"),
]

_RULESET: Final = f"{_API}/sdk/ruleset"
_RULESET_405: Final = b'{"error":"method_not_allowed","message":"use GET, HEAD"}'
_RULESET_HEADERS: Final = ((b"cache-control", b"no-cache"), (b"vary", b"Accept-Encoding"))
_JSON: Final = (b"content-type", b"application/json")
_GZIP: Final = (b"content-encoding", b"gzip")
_WWW_AUTHENTICATE: Final = (b"www-authenticate", b'Bearer realm="phaseflag"')
_ALL_METHODS: Final = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

Handler = Callable[[Request], Awaitable[Response]]


class Source(Protocol):
    """Where the served ruleset comes from: a watched file or an upstream API (relay)."""

    @property
    def snapshot(self) -> Snapshot: ...

    @property
    def last_error(self) -> str | None: ...

    @property
    def description(self) -> str: ...

    @property
    def reloads(self) -> int: ...

    @property
    def reload_errors(self) -> int: ...

    on_change: Callable[[Snapshot], None] | None

    def load(self) -> Snapshot: ...

    def start(self) -> None: ...

    def stop(self, timeout: float = 1.0) -> None: ...

    def check(self, *, force: bool = False) -> bool: ...


def _error(status: int, code: str, message: str, **extra: Any) -> Response:
    return json_response(status, {"error": code, "message": message, **extra})


def _accepts_gzip(accept_encoding: str) -> bool:
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip"):
            quality = params.strip().lower()
            if not quality.startswith("q="):
                return True
            try:
                return float(quality[2:]) != 0.0
            except ValueError:
                return True
    return False


class App:
    """Routes requests to handlers; every route but ``/healthz`` needs a key (when keys are set).

    Keys are compared with ``hmac.compare_digest`` against every configured key (no early
    exit). Runs on one event loop: ``notify_change`` and ``stop`` may be called from any
    thread once ``bind`` has given it that loop.
    """

    def __init__(
        self,
        source: Source,
        events: EventLog,
        metrics: Metrics,
        *,
        api_keys: Sequence[str] = (),
        ping_interval: float = 15.0,
        ui: bool = False,
        forward: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self._source = source
        self._events = events
        self._metrics = metrics
        self._keys = tuple(key.encode("utf-8") for key in api_keys)
        self._ping_interval = ping_interval
        self._forward = forward
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Future[str] | None = None
        self._stopping = False
        self.stream_clients = 0
        #: (flag key, variation key) -> evaluations reported in received SDK summaries.
        self.evaluations: dict[tuple[str, str], int] = {}
        #: Events handed to the upstream pipeline, and dropped by it (relay mode).
        self.forwarded: Callable[[], tuple[int, int]] = lambda: (0, 0)
        methods: dict[str, dict[str, Handler]] = {
            "/healthz": {"GET": self._health},
            "/metrics": {"GET": self._metrics_page},
            f"{_API}/sdk/events": {"POST": self._post_events},
            f"{_API}/sdk/evaluate": {"POST": self._evaluate},
            _OFREP_FLAGS: {"POST": self._ofrep_bulk},
            _OFREP_FLAGS + "/{key:path}": {"POST": self._ofrep_one},
        }
        routes: list[BaseRoute] = [
            Route(path, self._dispatcher(path, table), methods=_ALL_METHODS)
            for path, table in methods.items()
        ]
        routes.insert(0, Route(f"{_API}/sdk/stream", _StreamEndpoint(self)))
        if ui:
            from ._dashboard import dashboard_routes

            routes.extend(dashboard_routes(self))
        self._starlette = Starlette(routes=routes, exception_handlers={404: self._not_found})
        self._count_ruleset = {
            status: metrics.counter_for(_RULESET, status) for status in (200, 304, 401, 405)
        }
        metrics.read_state_from(self._state)

    @property
    def source(self) -> Source:
        """Where the served ruleset comes from."""
        return self._source

    def forward_to(
        self,
        forward: Callable[[list[dict[str, Any]]], None],
        stats: Callable[[], tuple[int, int]],
    ) -> None:
        """Relay mode: hand every accepted batch to ``forward``; ``stats`` for /metrics."""
        self._forward = forward
        self.forwarded = stats

    def _state(self) -> dict[str, Any]:
        snapshot = self._source.snapshot
        events = self._events
        forwarded, dropped = self.forwarded()
        return {
            "streams": self.stream_clients,
            "version": snapshot.version,
            "loaded_at": snapshot.loaded_at,
            "flags": len(snapshot.ruleset.flags),
            "invalid_flags": len(snapshot.ruleset.problems),
            "reloads": self._source.reloads,
            "reload_errors": self._source.reload_errors,
            "events_received": events.received,
            "events_written": events.written,
            "events_forwarded": forwarded,
            "events_dropped": dropped,
        }

    # -- lifecycle (any thread) ----------------------------------------------------------------

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run on ``loop`` (called in the loop's thread before serving)."""
        self._loop = loop
        self._changed = loop.create_future()
        loop.call_later(self._ping_interval, self._ping)

    def _ping(self) -> None:
        """Every ``ping_interval``: wake every stream to send a ping."""
        if self._stopping or self._loop is None or self._loop.is_closed():
            return
        self._wake("ping")
        self._loop.call_later(self._ping_interval, self._ping)

    def notify_change(self, snapshot: Snapshot | None = None) -> None:
        """Wake every stream to send the current snapshot (thread-safe)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._wake)

    def stop(self) -> None:
        """End every stream (thread-safe)."""
        self._stopping = True
        self.notify_change()

    def _wake(self, reason: str = "change") -> None:
        assert self._loop is not None
        old, self._changed = self._changed, self._loop.create_future()
        if old is not None and not old.done():
            old.set_result(reason)

    # -- auth ----------------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        """True when no keys are configured (every request is allowed)."""
        return not self._keys

    def check_key(self, headers: Any) -> str | None:
        """None when a configured key was presented (or none are configured), else why not."""
        if not self._keys:
            return None
        authorization = headers.get("authorization")
        api_key = headers.get("x-api-key")
        return self._key_problem(
            None if authorization is None else authorization.encode("latin-1", "replace"),
            None if api_key is None else api_key.encode("latin-1", "replace"),
        )

    def _key_problem(self, authorization: bytes | None, api_key: bytes | None) -> str | None:
        """check_key over raw header bytes: every configured key compared, no early exit."""
        presented = []
        if authorization is not None:
            scheme, _, token = authorization.strip().partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                presented.append(token.strip())
        if api_key:
            presented.append(api_key)
        if not presented:
            return "missing API key: send 'Authorization: Bearer <key>'"
        matched = False
        for candidate in presented:
            for key in self._keys:
                matched |= hmac.compare_digest(candidate, key)
        return None if matched else "invalid API key"

    def unauthorized(self, problem: str) -> Response:
        """The 401 answer (its connection is closed after it)."""
        return json_response(401, {"error": "unauthorized", "message": problem}, _UNAUTHORIZED)

    # -- routing -------------------------------------------------------------------------------

    def _dispatcher(self, path: str, table: dict[str, Handler]) -> Handler:
        allow = ", ".join(sorted({*table, *(("HEAD",) if "GET" in table else ())}))
        public = path == "/healthz"
        route = path.replace("{key:path}", "{key}")
        count = self._metrics.count_request
        debug = functools.partial(_log.isEnabledFor, logging.DEBUG)

        async def dispatch(request: Request) -> Response:
            method = request.method
            handler = table.get("GET" if method == "HEAD" else method)
            if handler is None:
                response = json_response(
                    405,
                    {"error": "method_not_allowed", "message": f"use {allow}"},
                    {"Allow": allow},
                )
            elif not public and self._keys and (problem := self.check_key(request.headers)):
                response = self.unauthorized(problem)
            else:
                if not public:
                    trusted(request.scope)
                response = await handler(request)
            count(route, response.status_code)
            if debug():
                access(request.scope, response.status_code, len(response.body))
            return response

        return dispatch

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        self._metrics.count_request("(unknown)", 404)
        return _error(404, "not_found", f"no such endpoint: {request.url.path[:200]}")

    # -- the SDK API ---------------------------------------------------------------------------

    async def _health(self, request: Request) -> Response:
        snapshot = self._source.snapshot
        error = self._source.last_error
        authorized = self._keys and self.check_key(request.headers) is None
        body: dict[str, Any] = {
            "status": "ok",
            "version": __version__,
            "ruleset_version": snapshot.version,
            "flag_count": len(snapshot.ruleset.flags),
            "invalid_flag_count": len(snapshot.ruleset.problems),
            "ruleset_error": None,
            "stream_clients": self.stream_clients,
            "events_received": self._events.received,
            "loaded_at": int(snapshot.loaded_at * 1000),
            "pid": os.getpid(),
        }
        if error is not None:
            # Without a key only the fact: the text can quote the refused file.
            body["ruleset_error"] = (
                error if authorized or not self._keys else "refused (details need the API key)"
            )
        if authorized or not self._keys:
            body["etag"] = snapshot.etag
            body["source"] = self._source.description
            body["invalid_flags"] = [f"{where}: {msg}" for where, msg in snapshot.ruleset.problems]
        return json_response(200, body, {"Cache-Control": "no-cache"})

    async def _metrics_page(self, request: Request) -> Response:
        if self._keys and (problem := self.check_key(request.headers)):
            return self.unauthorized(problem)
        return Response(self._metrics.render(), 200, media_type=self._metrics.content_type)

    async def asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry: ``GET /sdk/ruleset`` (the route every polling SDK hits) is
        answered here without Starlette's routing and request objects; the rest goes to
        Starlette."""
        if scope["type"] == "http" and scope["path"] == _RULESET:
            await self._ruleset(scope, send)
        else:
            await self._starlette(scope, receive, send)

    def ruleset_answer(
        self, method: str, headers: list[tuple[bytes, bytes]], trust: Callable[[], None]
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """``GET|HEAD /sdk/ruleset`` -> (status, headers, body): 200 (gzip when accepted),
        304 on a held ETag, 401, 405. Counted here; ``trust`` runs for an authorized request.

        The one decision for this route, used by the ASGI path and by the protocol's
        direct answer (``_protocol``), which skips the ASGI machinery for it.
        """
        authorization = api_key = if_none_match = accept_encoding = None
        for name, value in headers:
            if name == b"authorization":
                authorization = value
            elif name == b"if-none-match":
                if_none_match = value
            elif name == b"accept-encoding":
                accept_encoding = value
            elif name == b"x-api-key":
                api_key = value
        body = b""
        if method not in ("GET", "HEAD"):
            status, body = 405, _RULESET_405
            out = [(b"allow", b"GET, HEAD"), _JSON]
        elif self._keys and (problem := self._key_problem(authorization, api_key)):
            status = 401
            body = dumps({"error": "unauthorized", "message": problem})
            out = [_WWW_AUTHENTICATE, (b"connection", b"close"), _JSON]
        else:
            trust()
            snapshot = self._source.snapshot
            etag = snapshot.etag_header
            if if_none_match is not None and _ofrep.etag_matches(
                if_none_match.decode("latin-1"), snapshot.etag
            ):
                status, out = 304, [etag, *_RULESET_HEADERS]
            elif accept_encoding is not None and _accepts_gzip(accept_encoding.decode("latin-1")):
                status, body = 200, snapshot.gzipped
                out = [etag, *_RULESET_HEADERS, _GZIP, _JSON]
            else:
                status, body = 200, snapshot.body
                out = [etag, *_RULESET_HEADERS, _JSON]
        if status != 304:
            out.append((b"content-length", b"%d" % len(body)))
        self._count_ruleset[status]()
        return status, out, body

    def direct_routes(self) -> dict[bytes, Any]:
        """Routes the protocol answers without an ASGI task (``_protocol.Guard.direct``)."""

        def ruleset(
            method: str,
            headers: list[tuple[bytes, bytes]],
            trust: Callable[[], None],
            version: str,
        ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
            answer = self.ruleset_answer(method, headers, trust)
            if _log.isEnabledFor(logging.DEBUG):
                line = f"{method} {_RULESET} HTTP/{version}"
                _log.debug("phaseflag serve: %r %d %s", line, answer[0], len(answer[2]))
            return answer

        return {_RULESET.encode("ascii"): ruleset}

    async def _ruleset(self, scope: Scope, send: Send) -> None:
        method = scope["method"]
        status, headers, body = self.ruleset_answer(
            method, scope["headers"], lambda: trusted(scope)
        )
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
        if _log.isEnabledFor(logging.DEBUG):
            access(scope, status, len(body))

    async def _post_events(self, request: Request) -> Response:
        body = await request.body()
        try:
            document = parse_json(body)
        except ValueError as exc:
            return _error(400, "bad_request", str(exc))
        problem = _events_problem(document)
        if problem is not None:
            return _error(400, "bad_request", problem)
        events = document["events"]
        try:
            self._events.append(events)
        except (ValueError, RecursionError) as exc:
            return _error(400, "bad_request", f"an event cannot be stored: {exc}")
        except OSError as exc:
            _log.error("phaseflag serve: cannot write events: %s", exc.strerror or exc)
            return _error(503, "unavailable", "the events file cannot be written; retry later")
        self._count_summaries(events)
        if self._forward is not None:
            self._forward(events)
        return json_response(202, {"accepted": len(events)})

    def _count_summaries(self, events: list[dict[str, Any]]) -> None:
        evaluations = self.evaluations
        for event in events:
            if event["kind"] != "summary" or not isinstance(event.get("counters"), list):
                continue
            for counter in event["counters"]:
                if not isinstance(counter, dict):
                    continue
                flag, variation, count = (
                    counter.get("flag_key"),
                    counter.get("variation_key"),
                    counter.get("count"),
                )
                if isinstance(flag, str) and isinstance(count, int) and count > 0:
                    key = (flag[:200], str(variation)[:200])
                    if key in evaluations or len(evaluations) < 10_000:
                        evaluations[key] = evaluations.get(key, 0) + count

    async def _evaluate(self, request: Request) -> Response:
        try:
            document = parse_json(await request.body())
        except ValueError as exc:
            return _error(400, "bad_request", str(exc))
        if not isinstance(document, dict):
            return _error(400, "bad_request", "the body must be a JSON object")
        flag_key = document.get("flag_key")
        if not isinstance(flag_key, str) or not flag_key:
            return _error(400, "bad_request", "'flag_key' must be a non-empty string")
        try:
            context = sdk_context(document.get("context"))
        except (InvalidContextError, ValueError) as exc:
            return _error(400, "invalid_context", str(exc))
        ruleset = self._source.snapshot.ruleset
        flag = ruleset.flags.get(flag_key)
        if flag is None:
            result = not_found(flag_key)
            return json_response(
                404,
                {"error": "flag_not_found", "message": result.error_message, **result.to_dict()},
            )
        return json_response(200, evaluate_flag(flag, context._values, ruleset).to_dict())

    # -- OFREP ---------------------------------------------------------------------------------

    async def _ofrep_one(self, request: Request) -> Response:
        key = request.path_params["key"]
        body = await request.body()
        return _ofrep.evaluate_one(self._source.snapshot.ruleset, key, body)

    async def _ofrep_bulk(self, request: Request) -> Response:
        body = await request.body()
        ruleset = self._source.snapshot.ruleset
        return _ofrep.evaluate_all(ruleset, body, request.headers.get("if-none-match"))

    # -- streams -------------------------------------------------------------------------------

    async def stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``GET /sdk/stream``: the ruleset now and on every change, pings in between.

        The task parks on the one future every stream shares (resolved with "change" or
        "ping"), so a change wakes 10,000 streams for the cost of one callback each; a
        disconnect cancels the task (a second, parked task watches ``receive``).
        """
        assert self._loop is not None
        task = asyncio.current_task()
        assert task is not None
        self.stream_clients += 1
        self._metrics.count_request("/api/v1/sdk/stream", 200)
        if _log.isEnabledFor(logging.DEBUG):
            access(scope, 200, "-")
        closed = False

        def on_gone(_: object) -> None:
            nonlocal closed
            closed = True
            task.cancel()

        gone = self._loop.create_task(_until_disconnect(receive))
        gone.add_done_callback(on_gone)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            sent: Snapshot | None = None
            woken_by = "change"
            while not self._stopping:
                changed = self._changed
                assert changed is not None
                snapshot = self._source.snapshot
                if snapshot is not sent:
                    sent = snapshot
                    await send(
                        {
                            "type": "http.response.body",
                            "body": snapshot.sse_frame,
                            "more_body": True,
                        }
                    )
                elif woken_by == "ping":
                    frame = b'event: ping\ndata: {"time":%d}\n\n' % int(time.time() * 1000)
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
                # shield: cancelling this task (a disconnect) must not cancel the shared future.
                woken_by = await asyncio.shield(changed)
        except asyncio.CancelledError:
            if not closed:
                raise
            return  # the client went away
        finally:
            self.stream_clients -= 1
            gone.remove_done_callback(on_gone)
            gone.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class _StreamEndpoint:
    """The ASGI app of ``/sdk/stream`` (method and key checks, then ``App.stream``)."""

    def __init__(self, app: App) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app
        request = Request(scope)
        if scope["method"] != "GET":
            response = json_response(
                405, {"error": "method_not_allowed", "message": "use GET"}, {"Allow": "GET"}
            )
        elif problem := app.check_key(request.headers):
            response = app.unauthorized(problem)
        else:
            trusted(scope)
            await app.stream(scope, receive, send)
            return
        app._metrics.count_request("/api/v1/sdk/stream", response.status_code)
        if _log.isEnabledFor(logging.DEBUG):
            access(scope, response.status_code, len(response.body))
        await response(scope, receive, send)


def trusted(scope: Scope) -> None:
    """Tell the connection (``_protocol``) that it sent an authenticated request."""
    extension = scope.get("extensions", {}).get("phaseflag.trust")
    if extension is not None:
        extension["trust"]()


def access(scope: Scope, status: int, size: int | str) -> None:
    """The DEBUG access log line: request line (no query, no headers), status, size."""
    line = f"{scope['method']} {scope['path'][:200]} HTTP/{scope['http_version']}"
    _log.debug("phaseflag serve: %r %d %s", line, status, size)


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _events_problem(document: Any) -> str | None:
    """Why an events payload is malformed, or None."""
    if not isinstance(document, dict):
        return 'the body must be a JSON object: {"sdk": {...}, "events": [...]}'
    if "sdk" in document and not isinstance(document["sdk"], dict):
        return "'sdk' must be an object"
    events = document.get("events")
    if not isinstance(events, list):
        return "'events' must be an array of event objects"
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            return f"events[{index}] must be an object"
        if not isinstance(event.get("kind"), str):
            return f"events[{index}].kind must be a string"
    return None


def sdk_context(raw: Any) -> EvaluationContext:
    """``{"user_id", "session_id", "attributes"}`` -> EvaluationContext (absent: empty)."""
    if raw is None:
        return EvaluationContext()
    if not isinstance(raw, dict):
        raise ValueError("'context' must be an object")
    attributes = raw.get("attributes")
    if attributes is not None and not isinstance(attributes, dict):
        raise ValueError("'context.attributes' must be an object")
    return EvaluationContext.from_dict(
        {
            "user_id": raw.get("user_id"),
            "session_id": raw.get("session_id"),
            "attributes": attributes,
        }
    )
