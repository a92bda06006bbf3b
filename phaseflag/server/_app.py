"""The routes of ``phaseflag serve`` as a Starlette app: the SDK API (DESIGN.md §3), OFREP,
``/healthz``, ``/metrics`` and the dashboard.

Every route but ``/healthz`` needs a key when keys are configured (``_access``); a request
without a valid one is answered 401 and its connection closed. The ruleset route
(``_ruleset_route``) and the streams (``_streams``) have modules of their own; the JSON
routes (events, remote evaluation, OFREP, health, metrics) are here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
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
from ._access import ApiKeys, access, trusted
from ._eventlog import EventLog
from ._json import json_response, parse_json
from ._metrics import Metrics
from ._ruleset_route import RULESET_PATH, RulesetRoute
from ._streams import STREAM_PATH, StreamEndpoint, Streams
from ._watch import Snapshot

__all__ = ["App", "Source"]

_log = logging.getLogger("phaseflag")

_API: Final = "/api/v1"
_OFREP_FLAGS: Final = "/ofrep/v1/evaluate/flags"
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


class App:
    """Routes requests to handlers; every route but ``/healthz`` needs a key (when keys are set).

    Runs on one event loop: ``notify_change`` and ``stop`` may be called from any thread
    once ``bind`` has given it that loop.
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
        self._keys = ApiKeys(api_keys)
        self._forward = forward
        self._streams = Streams(source, metrics, ping_interval)
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
        routes.insert(0, Route(STREAM_PATH, StreamEndpoint(self._streams, self._keys, metrics)))
        if ui:
            from ._dashboard import dashboard_routes

            routes.extend(dashboard_routes(self))
        self._starlette = Starlette(routes=routes, exception_handlers={404: self._not_found})
        self._ruleset = RulesetRoute(source, self._keys, metrics)
        metrics.read_state_from(self._state)

    @property
    def source(self) -> Source:
        """Where the served ruleset comes from."""
        return self._source

    @property
    def stream_clients(self) -> int:
        """Streams open now."""
        return self._streams.clients

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
        self._streams.bind(loop)

    def notify_change(self, snapshot: Snapshot | None = None) -> None:
        """Wake every stream to send the current snapshot (thread-safe)."""
        self._streams.notify_change()

    def stop(self) -> None:
        """End every stream (thread-safe)."""
        self._streams.stop()

    # -- auth ----------------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        """True when no keys are configured (every request is allowed)."""
        return not self._keys

    def check_key(self, headers: Any) -> str | None:
        """None when a configured key was presented (or none are configured), else why not."""
        return self._keys.check(headers)

    def unauthorized(self, problem: str) -> Response:
        """The 401 answer (its connection is closed after it)."""
        return self._keys.unauthorized(problem)

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
        authorized = bool(self._keys) and self.check_key(request.headers) is None
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
        if scope["type"] == "http" and scope["path"] == RULESET_PATH:
            await self._ruleset.asgi(scope, send)
        else:
            await self._starlette(scope, receive, send)

    def direct_routes(self) -> dict[bytes, Any]:
        """Routes the protocol answers without an ASGI task (``_protocol.Guard.direct``)."""
        return self._ruleset.direct_routes()

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
