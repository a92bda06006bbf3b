"""ASGI (Starlette, FastAPI): ``PhaseFlagMiddleware`` opens a request scope per request.

::

    app.add_middleware(
        PhaseFlagMiddleware,
        client=client,
        context=lambda request: EvaluationContext(user_id=request.headers.get("x-user-id")),
    )

``context`` receives a ``starlette.requests.HTTPConnection`` (headers, query params,
cookies, path). Plain ASGI middleware, not ``BaseHTTPMiddleware``: the endpoint runs in
the same task, and sync endpoints in FastAPI's thread pool inherit the scope (the pool
copies contextvars).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection

if TYPE_CHECKING:
    from .._async import AsyncPhaseFlagClient
    from .._client import PhaseFlagClient
    from ..types import EvaluationContext

__all__ = ["PhaseFlagMiddleware"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class PhaseFlagMiddleware:
    """Run each HTTP/WebSocket request inside ``client.request_context(context(conn))``."""

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        client: PhaseFlagClient | AsyncPhaseFlagClient,
        context: Callable[[HTTPConnection], EvaluationContext | None] | None = None,
    ) -> None:
        self.app = app
        self.client = client
        self.context = context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        ctx = self.context(HTTPConnection(scope)) if self.context is not None else None
        with self.client.request_context(ctx):
            await self.app(scope, receive, send)
