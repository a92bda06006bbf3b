"""JSON in and out of ``phaseflag serve``: strict request parsing, compact response bodies."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

__all__ = ["dumps", "json_response", "parse_json"]


def dumps(payload: Any) -> bytes:
    """Compact UTF-8 JSON (a lone surrogate from a request stays escaped)."""
    try:
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(payload, separators=(",", ":")).encode("ascii")


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    """A JSON response."""
    return Response(dumps(payload), status, headers, "application/json")


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
