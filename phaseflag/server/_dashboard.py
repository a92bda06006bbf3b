"""The flag dashboard at ``/ui`` (``phaseflag serve --ui``): static files plus a JSON API.

The page itself holds no data: its script asks for the API key and reads everything
through ``/ui/api/*``, which needs the key like every other route. Plain HTML, CSS and
JavaScript shipped in the package (``server/ui/``), no build step, no CDN; a strict
Content-Security-Policy allows only this origin.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .._errors import InvalidContextError
from .._evaluation import explain
from ._json import json_response, parse_json

if TYPE_CHECKING:
    from ._app import App

__all__ = ["dashboard_routes"]

_FILES: Final = {
    "index.html": "text/html; charset=utf-8",
    "ui.css": "text/css; charset=utf-8",
    "ui.js": "text/javascript; charset=utf-8",
}
_SECURITY: Final = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_MAX_COUNTS: Final = 5000


def _load(name: str) -> bytes:
    return resources.files("phaseflag.server").joinpath("ui").joinpath(name).read_bytes()


def dashboard_routes(app: App) -> list[BaseRoute]:
    """The routes of ``/ui``: the page, its two files and the JSON API."""
    files = {name: _load(name) for name in _FILES}

    def static(name: str) -> Any:
        async def serve(request: Request) -> Response:
            return Response(files[name], 200, _SECURITY, _FILES[name])

        return serve

    def keyed(handler: Any) -> Any:
        async def guarded(request: Request) -> Response:
            problem = app.check_key(request.headers)
            if problem is not None:
                response = app.unauthorized(problem)
            else:
                response = await handler(request)
            response.headers.update(_SECURITY)
            return response

        return guarded

    async def flags(request: Request) -> Response:
        snapshot = app.source.snapshot
        if request.headers.get("if-none-match") == snapshot.etag:
            return Response(None, 304, {"ETag": snapshot.etag})
        ruleset = snapshot.ruleset
        document = ruleset.source
        invalid = {path for path, _ in ruleset.problems}
        return json_response(
            200,
            {
                "version": ruleset.version,
                "loaded_at": int(snapshot.loaded_at * 1000),
                "source": app.source.description,
                "flags": document.get("flags", []),
                "segments": document.get("segments", []),
                "invalid": sorted(invalid),
                "problems": [f"{where}: {message}" for where, message in ruleset.problems],
            },
            {"ETag": snapshot.etag},
        )

    async def evaluate(request: Request) -> Response:
        from ._app import sdk_context

        try:
            body = parse_json(await request.body())
        except ValueError as exc:
            return json_response(400, {"error": "bad_request", "message": str(exc)})
        if not isinstance(body, dict) or not isinstance(body.get("flag_key"), str):
            return json_response(400, {"error": "bad_request", "message": "send flag_key"})
        user_id = body.get("user_id") or None
        try:
            context = sdk_context({"user_id": user_id, "attributes": body.get("attributes")})
        except (InvalidContextError, ValueError) as exc:
            return json_response(400, {"error": "invalid_context", "message": str(exc)})
        explanation = explain(app.source.snapshot.ruleset, body["flag_key"], context)
        steps = [dict(step) for step in explanation.steps]
        bucket = next((s.get("bucket") for s in steps if s.get("step") == "rollout"), None)
        return json_response(
            200,
            {
                "result": explanation.result.to_dict(),
                "trace": explanation.lines(),
                "steps": steps,
                "bucket": bucket,
            },
        )

    async def counts(request: Request) -> Response:
        items = sorted(app.evaluations.items(), key=lambda item: -item[1])[:_MAX_COUNTS]
        return json_response(
            200,
            {
                "counts": [
                    {"flag_key": flag, "variation_key": variation, "count": count}
                    for (flag, variation), count in items
                ]
            },
        )

    return [
        Route("/ui", static("index.html")),
        Route("/ui/", static("index.html")),
        Route("/ui/ui.css", static("ui.css")),
        Route("/ui/ui.js", static("ui.js")),
        Route("/ui/api/flags", keyed(flags)),
        Route("/ui/api/evaluate", keyed(evaluate), methods=["POST"]),
        Route("/ui/api/counts", keyed(counts)),
    ]
