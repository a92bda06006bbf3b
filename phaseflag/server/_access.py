"""Who may use ``phaseflag serve``: the API-key check, the connection's trust mark, and
the DEBUG access log line of an answered request.

A key is presented as ``Authorization: Bearer <key>`` or ``X-API-Key``; each presented
key is compared with ``hmac.compare_digest`` against every configured key (no early
exit, so the time taken does not say which key came close).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence
from typing import Any, Final

from starlette.responses import Response
from starlette.types import Scope

from ._json import json_response

__all__ = ["ApiKeys", "access", "trusted"]

_log = logging.getLogger("phaseflag")

_UNAUTHORIZED: Final = {"WWW-Authenticate": 'Bearer realm="phaseflag"', "Connection": "close"}


class ApiKeys:
    """The configured keys; with none configured every request is allowed."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = tuple(key.encode("utf-8") for key in keys)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def check(self, headers: Any) -> str | None:
        """None when a configured key was presented (or none are configured), else why not."""
        if not self._keys:
            return None
        authorization = headers.get("authorization")
        api_key = headers.get("x-api-key")
        return self.problem(
            None if authorization is None else authorization.encode("latin-1", "replace"),
            None if api_key is None else api_key.encode("latin-1", "replace"),
        )

    def problem(self, authorization: bytes | None, api_key: bytes | None) -> str | None:
        """``check`` over raw header bytes: every configured key compared, no early exit."""
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

    @staticmethod
    def unauthorized(problem: str) -> Response:
        """The 401 answer (its connection is closed after it)."""
        return json_response(401, {"error": "unauthorized", "message": problem}, _UNAUTHORIZED)


def trusted(scope: Scope) -> None:
    """Tell the connection (``_protocol``) that it sent an authenticated request."""
    extension = scope.get("extensions", {}).get("phaseflag.trust")
    if extension is not None:
        extension["trust"]()


def access(scope: Scope, status: int, size: int | str) -> None:
    """The DEBUG access log line: request line (no query, no headers), status, size."""
    line = f"{scope['method']} {scope['path'][:200]} HTTP/{scope['http_version']}"
    _log.debug("phaseflag serve: %r %d %s", line, status, size)
