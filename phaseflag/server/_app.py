"""The routes of ``phaseflag serve``: the SDK API (DESIGN.md §3), OFREP and ``/healthz``.

Authentication (constant-time bearer/X-API-Key check), the event log and the
Server-Sent Events fan-out live here; HTTP parsing lives in ``_http``.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, Any, Final
from urllib.parse import unquote

from .._errors import ConfigError, InvalidContextError
from .._evaluation import evaluate_flag, not_found
from .._version import __version__
from ..types import EvaluationContext
from . import _ofrep
from ._http import Request, Response, Stream, json_response, parse_json
from ._watch import RulesetWatcher, Snapshot

__all__ = ["App", "EventLog"]

_log = logging.getLogger("phaseflag")

_API: Final = "/api/v1"
_OFREP_FLAGS: Final = "/ofrep/v1/evaluate/flags"
_UNAUTHORIZED: Final = (("WWW-Authenticate", 'Bearer realm="phaseflag"'),)
_NO_CACHE: Final = ("Cache-Control", "no-cache")
_SSE_HEADERS: Final = (("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no"))

Handler = Callable[[Request], "Response | Stream"]


def _error(status: int, code: str, message: str, **extra: Any) -> Response:
    return json_response(status, {"error": code, "message": message, **extra})


def _accepts_gzip(accept_encoding: str) -> bool:
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip"):
            quality = params.strip().lower().removeprefix("q=")
            return not (params.strip().lower().startswith("q=") and _is_zero(quality))
    return False


def _is_zero(quality: str) -> bool:
    try:
        return float(quality) == 0.0
    except ValueError:
        return False


class EventLog:
    """Appends events, one compact JSON object per line, to a file (or only counts them).

    Thread-safe: a batch is serialised outside the lock, then written and flushed under
    one lock, so concurrent batches never interleave and nothing is lost.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self.count = 0

    def open(self) -> None:
        """Open the file for appending; raises ConfigError when it cannot be."""
        if self.path is None:
            return
        try:
            self._file = open(self.path, "ab")  # noqa: SIM115 - held open until close()
        except OSError as exc:
            raise ConfigError(
                "events_out", f"cannot open {self.path!r} for appending ({exc.strerror})"
            ) from None

    def append(self, events: Sequence[Any]) -> None:
        """Write every event of one batch; raises ValueError if one is not serialisable."""
        lines = b"".join(
            json.dumps(event, separators=(",", ":"), allow_nan=False).encode("utf-8") + b"\n"
            for event in events
        )
        with self._lock:
            if self._file is not None:
                self._file.write(lines)
                self._file.flush()
            self.count += len(events)

    def close(self) -> None:
        """Flush and close the file."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class App:
    """Routes requests to handlers, after the API-key check every route but ``/healthz`` needs.

    Keys are compared with ``hmac.compare_digest`` against every configured key (no early
    exit); with no keys configured the server is open. Thread-safe: handlers only read the
    watcher's current snapshot, and the event log and stream fan-out lock for themselves.
    """

    def __init__(
        self,
        watcher: RulesetWatcher,
        events: EventLog,
        *,
        api_keys: Sequence[str] = (),
        ping_interval: float = 15.0,
    ) -> None:
        self._watcher = watcher
        self._events = events
        self._keys = tuple(key.encode("utf-8") for key in api_keys)
        self._ping_interval = ping_interval
        self._changed = threading.Condition()
        self._stopping = False
        self._stream_clients = 0
        self._routes: dict[str, dict[str, tuple[Handler, bool]]] = {
            "/healthz": {"GET": (self._health, False)},
            f"{_API}/sdk/ruleset": {"GET": (self._ruleset, True)},
            f"{_API}/sdk/stream": {"GET": (self._stream, True)},
            f"{_API}/sdk/events": {"POST": (self._post_events, True)},
            f"{_API}/sdk/evaluate": {"POST": (self._evaluate, True)},
            _OFREP_FLAGS: {"POST": (self._ofrep_bulk, True)},
        }

    @property
    def stream_clients(self) -> int:
        """Server-Sent Events connections open now."""
        return self._stream_clients

    def dispatch(self, request: Request) -> Response | Stream:
        """Answer one request (the ``_http.App`` protocol)."""
        path = request.path
        methods = self._routes.get(path)
        if methods is None and path.startswith(_OFREP_FLAGS + "/"):
            methods = {"POST": (self._ofrep_one, True)}
        if methods is None:
            return _error(404, "not_found", f"no such endpoint: {path[:200]}")
        method = "GET" if request.method == "HEAD" else request.method
        route = methods.get(method)
        if route is None or (request.method == "HEAD" and path == f"{_API}/sdk/stream"):
            allow = ", ".join(sorted({*methods, *(("HEAD",) if "GET" in methods else ())}))
            return Response(
                405,
                json.dumps({"error": "method_not_allowed", "message": f"use {allow}"}).encode(),
                headers=(("Allow", allow),),
            )
        handler, needs_key = route
        if needs_key and self._keys:
            problem = self._check_key(request)
            if problem is not None:
                return json_response(
                    401, {"error": "unauthorized", "message": problem}, _UNAUTHORIZED
                )
        return handler(request)

    def notify_change(self, snapshot: Snapshot) -> None:
        """Wake every stream so it sends ``snapshot`` (the watcher's ``on_change``)."""
        with self._changed:
            self._changed.notify_all()

    def stop(self) -> None:
        """End every stream pump."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()

    # -- auth ----------------------------------------------------------------------------------

    def _check_key(self, request: Request) -> str | None:
        """None when a configured key was presented, else why not (never echoing a key)."""
        presented = []
        authorization = request.headers.get("authorization")
        if authorization is not None:
            scheme, _, token = authorization.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                presented.append(token.strip().encode("latin-1"))
        api_key = request.headers.get("x-api-key")
        if api_key:
            presented.append(api_key.encode("latin-1"))
        if not presented:
            return "missing API key: send 'Authorization: Bearer <key>'"
        matched = False
        for candidate in presented:
            for key in self._keys:
                matched |= hmac.compare_digest(candidate, key)
        return None if matched else "invalid API key"

    # -- the SDK API ---------------------------------------------------------------------------

    def _health(self, request: Request) -> Response:
        snapshot = self._watcher.snapshot
        return json_response(
            200,
            {
                "status": "ok",
                "version": __version__,
                "ruleset_version": snapshot.version,
                "flag_count": len(snapshot.ruleset.flags),
                "etag": snapshot.etag,
                "loaded_at": int(snapshot.loaded_at * 1000),
                "ruleset_error": self._watcher.last_error,
                "stream_clients": self._stream_clients,
                "events_received": self._events.count,
            },
            (_NO_CACHE,),
        )

    def _ruleset(self, request: Request) -> Response:
        snapshot = self._watcher.snapshot
        headers = request.headers
        common = (("ETag", snapshot.etag), _NO_CACHE, ("Vary", "Accept-Encoding"))
        if_none_match = headers.get("if-none-match")
        if if_none_match is not None and _ofrep.etag_matches(if_none_match, snapshot.etag):
            return Response(304, headers=common)
        if _accepts_gzip(headers.get("accept-encoding", "")):
            return Response(
                200, snapshot.gzipped, "application/json", (*common, ("Content-Encoding", "gzip"))
            )
        return Response(200, snapshot.body, "application/json", common)

    def _post_events(self, request: Request) -> Response:
        try:
            document = parse_json(request.body)
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
        return json_response(202, {"accepted": len(events)})

    def _evaluate(self, request: Request) -> Response:
        try:
            document = parse_json(request.body)
        except ValueError as exc:
            return _error(400, "bad_request", str(exc))
        if not isinstance(document, dict):
            return _error(400, "bad_request", "the body must be a JSON object")
        flag_key = document.get("flag_key")
        if not isinstance(flag_key, str) or not flag_key:
            return _error(400, "bad_request", "'flag_key' must be a non-empty string")
        try:
            context = _sdk_context(document.get("context"))
        except (InvalidContextError, ValueError) as exc:
            return _error(400, "invalid_context", str(exc))
        ruleset = self._watcher.snapshot.ruleset
        flag = ruleset.flags.get(flag_key)
        if flag is None:
            result = not_found(flag_key)
            return json_response(
                404,
                {"error": "flag_not_found", "message": result.error_message, **result.to_dict()},
            )
        return json_response(200, evaluate_flag(flag, context._values, ruleset).to_dict())

    def _stream(self, request: Request) -> Stream:
        return Stream(self._pump, headers=_SSE_HEADERS)

    def _pump(self, write: Callable[[bytes], None]) -> None:
        """Send the ruleset now and on every change, and a ping when idle; until stop/close."""
        with self._changed:
            self._stream_clients += 1
        try:
            sent: Snapshot | None = None
            while True:
                deadline = time.monotonic() + self._ping_interval
                with self._changed:
                    while not self._stopping and self._watcher.snapshot is sent:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._changed.wait(remaining)
                    if self._stopping:
                        return
                snapshot = self._watcher.snapshot
                if snapshot is not sent:
                    write(snapshot.sse_frame)
                    sent = snapshot
                else:
                    write(b'event: ping\ndata: {"time":%d}\n\n' % int(time.time() * 1000))
        finally:
            with self._changed:
                self._stream_clients -= 1

    # -- OFREP ---------------------------------------------------------------------------------

    def _ofrep_one(self, request: Request) -> Response:
        key = unquote(request.path[len(_OFREP_FLAGS) + 1 :])
        return _ofrep.evaluate_one(self._watcher.snapshot.ruleset, key, request.body)

    def _ofrep_bulk(self, request: Request) -> Response:
        ruleset = self._watcher.snapshot.ruleset
        return _ofrep.evaluate_all(ruleset, request.body, request.headers.get("if-none-match"))


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


def _sdk_context(raw: Any) -> EvaluationContext:
    """``{"user_id", "session_id", "attributes"}`` -> EvaluationContext (absent: empty)."""
    if raw is None:
        return EvaluationContext()
    if not isinstance(raw, dict):
        raise ValueError("'context' must be an object")
    attributes = raw.get("attributes")
    if attributes is not None and not isinstance(attributes, dict):
        raise ValueError("'context.attributes' must be an object")
    return EvaluationContext(
        user_id=raw.get("user_id"), session_id=raw.get("session_id"), attributes=attributes
    )
