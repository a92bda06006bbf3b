"""``GET|HEAD /api/v1/sdk/ruleset``, the route every polling SDK hits, answered without
Starlette's routing and request objects: the served bytes as they are (gzip when
accepted), 304 on a held ETag, 401 without a key, 405 for other methods.

One decision (``answer``) serves both the ASGI path and the protocol's direct answer
(``_protocol``), which skips the ASGI machinery for this route altogether.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from starlette.types import Scope, Send

from . import _ofrep
from ._access import ApiKeys, access, trusted
from ._json import dumps
from ._metrics import Metrics

if TYPE_CHECKING:
    from ._app import Source

__all__ = ["RULESET_PATH", "RulesetRoute"]

_log = logging.getLogger("phaseflag")

RULESET_PATH: Final = "/api/v1/sdk/ruleset"
_RULESET_405: Final = b'{"error":"method_not_allowed","message":"use GET, HEAD"}'
_RULESET_HEADERS: Final = ((b"cache-control", b"no-cache"), (b"vary", b"Accept-Encoding"))
_JSON: Final = (b"content-type", b"application/json")
_GZIP: Final = (b"content-encoding", b"gzip")
_WWW_AUTHENTICATE: Final = (b"www-authenticate", b'Bearer realm="phaseflag"')

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


def accepts_gzip(accept_encoding: str) -> bool:
    """True when an ``Accept-Encoding`` value accepts gzip (a ``q=0`` refuses it)."""
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


class RulesetRoute:
    """Answers the ruleset route from ``source``'s current snapshot; counts each answer."""

    def __init__(self, source: Source, keys: ApiKeys, metrics: Metrics) -> None:
        self._source = source
        self._keys = keys
        self._count = {
            status: metrics.counter_for(RULESET_PATH, status) for status in (200, 304, 401, 405)
        }

    def answer(
        self, method: str, headers: list[tuple[bytes, bytes]], trust: Callable[[], None]
    ) -> Answer:
        """(status, headers, body) for a request; ``trust`` runs for an authorized one."""
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
        elif self._keys and (problem := self._keys.problem(authorization, api_key)):
            status = 401
            body = dumps({"error": "unauthorized", "message": problem})
            out = [_WWW_AUTHENTICATE, (b"connection", b"close"), _JSON]
        else:
            trust()
            status, out, body = self._served(if_none_match, accept_encoding)
        if status != 304:
            out.append((b"content-length", b"%d" % len(body)))
        self._count[status]()
        return status, out, body

    def _served(self, if_none_match: bytes | None, accept_encoding: bytes | None) -> Answer:
        snapshot = self._source.snapshot
        etag = snapshot.etag_header
        if if_none_match is not None and _ofrep.etag_matches(
            if_none_match.decode("latin-1"), snapshot.etag
        ):
            return 304, [etag, *_RULESET_HEADERS], b""
        if accept_encoding is not None and accepts_gzip(accept_encoding.decode("latin-1")):
            return 200, [etag, *_RULESET_HEADERS, _GZIP, _JSON], snapshot.gzipped
        return 200, [etag, *_RULESET_HEADERS, _JSON], snapshot.body

    def direct_routes(self) -> dict[bytes, Any]:
        """Routes the protocol answers without an ASGI task (``_protocol.Guard.direct``)."""

        def ruleset(
            method: str,
            headers: list[tuple[bytes, bytes]],
            trust: Callable[[], None],
            version: str,
        ) -> Answer:
            answer = self.answer(method, headers, trust)
            if _log.isEnabledFor(logging.DEBUG):
                line = f"{method} {RULESET_PATH} HTTP/{version}"
                _log.debug("phaseflag serve: %r %d %s", line, answer[0], len(answer[2]))
            return answer

        return {RULESET_PATH.encode("ascii"): ruleset}

    async def asgi(self, scope: Scope, send: Send) -> None:
        """Answer the route through ASGI (servers other than phaseflag's own protocol)."""
        method = scope["method"]
        status, headers, body = self.answer(method, scope["headers"], lambda: trusted(scope))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
        if _log.isEnabledFor(logging.DEBUG):
            access(scope, status, len(body))
