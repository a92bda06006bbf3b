"""Flask: ``init_app(app, client, context)`` opens a request scope around each request.

``context(request)`` builds the EvaluationContext from ``flask.request`` (or returns
None for the client's ``default_context`` only); views then read flags with no context::

    init_app(app, client, lambda req: EvaluationContext(user_id=req.headers.get("X-User-Id")))

    @app.get("/checkout")
    def checkout():
        return {"new": client.get_boolean_value("new-checkout-flow", False)}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import flask

if TYPE_CHECKING:
    from .._async import AsyncPhaseFlagClient
    from .._client import PhaseFlagClient
    from .._scope import RequestScope
    from ..types import EvaluationContext

__all__ = ["init_app"]

_KEY = "_phaseflag_scopes"


def init_app(
    app: flask.Flask,
    client: PhaseFlagClient | AsyncPhaseFlagClient,
    context: Callable[[flask.Request], EvaluationContext | None] | None = None,
) -> None:
    """Open ``client.request_context(context(request))`` before each request of ``app``
    and close it at teardown (several clients may be registered on one app)."""

    def open_scope() -> None:
        ctx = context(flask.request) if context is not None else None
        scope = client.request_context(ctx)
        scope.__enter__()
        scopes: list[RequestScope] = flask.g.setdefault(_KEY, [])
        scopes.append(scope)

    def close_scope(exc: BaseException | None = None) -> Any:
        scopes: list[RequestScope] = flask.g.get(_KEY) or []
        if scopes:
            scopes.pop().__exit__(None, None, None)

    app.before_request(open_scope)
    app.teardown_request(close_scope)
