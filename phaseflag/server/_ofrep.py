"""OpenFeature Remote Evaluation Protocol (OFREP 0.3.0) on top of the phaseflag evaluator.

``POST /ofrep/v1/evaluate/flags/{key}`` and the bulk ``POST /ofrep/v1/evaluate/flags``
(with an ETag over its response). Error and reason mapping are documented on each function.
"""

from __future__ import annotations

import hashlib
from typing import Any

from starlette.responses import Response

from .._errors import InvalidContextError
from .._evaluation import evaluate_flag
from .._model import Flag, Ruleset
from .._openfeature_mapping import openfeature_error_code, openfeature_reason
from ..types import EvaluationContext, EvaluationResult
from ._json import dumps, json_response, parse_json

__all__ = ["evaluate_all", "evaluate_one", "ofrep_reason"]


class _BadRequest(Exception):
    """The request cannot be evaluated: answered 400 with an OFREP ``errorCode``."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def ofrep_reason(flag: Flag, result: EvaluationResult) -> str:
    """The OpenFeature reason for a successful phaseflag result (the provider's mapping,
    ``phaseflag._openfeature_mapping``). Errors are never a reason here: they become
    OFREP failure objects."""
    return openfeature_reason(result, flag)


def evaluate_one(ruleset: Ruleset, key: str, body: bytes) -> Response:
    """Answer ``POST /ofrep/v1/evaluate/flags/{key}``.

    200 success object; 404 ``FLAG_NOT_FOUND``; 400 ``PARSE_ERROR`` (body not a JSON
    object), ``INVALID_CONTEXT`` (a context value phaseflag cannot target on) or
    ``PARSE_ERROR`` (the flag is invalid in the ruleset: it has no value to serve).
    """
    try:
        context = _context(body)
    except _BadRequest as exc:
        return json_response(400, {"key": key, "errorCode": exc.code, "errorDetails": exc.details})
    flag = ruleset.flags.get(key)
    if flag is None:
        details = f"flag {key!r} was not found"
        return json_response(
            404, {"key": key, "errorCode": "FLAG_NOT_FOUND", "errorDetails": details}
        )
    item = _item(ruleset, flag, context)
    return json_response(400 if "errorCode" in item else 200, item)


def evaluate_all(ruleset: Ruleset, body: bytes, if_none_match: str | None) -> Response:
    """Answer the bulk ``POST /ofrep/v1/evaluate/flags``: every flag, in ruleset order.

    The ETag hashes the response body, so it changes exactly when the flags or the
    context change what would be sent; a matching ``If-None-Match`` gets 304. A bad body
    or context is 400 with ``errorCode`` and no ``key``.
    """
    try:
        context = _context(body)
    except _BadRequest as exc:
        return json_response(400, {"errorCode": exc.code, "errorDetails": exc.details})
    payload = {
        "flags": [_item(ruleset, flag, context) for flag in ruleset.flags.values()],
        "metadata": {"rulesetVersion": ruleset.version},
    }
    body = dumps(payload)
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if if_none_match is not None and etag_matches(if_none_match, etag):
        return Response(None, 304, headers)
    return Response(body, 200, headers, "application/json")


def etag_matches(if_none_match: str, etag: str) -> bool:
    """``If-None-Match`` semantics: ``*``, or any listed tag equal by weak comparison."""
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def _context(body: bytes) -> EvaluationContext:
    """``{"context": {"targetingKey": ..., attribute: value, ...}}`` -> an EvaluationContext.

    A missing or empty context evaluates with no attributes; ``targetingKey`` becomes
    ``user_id`` (an empty one counts as absent) and every other key an attribute.
    """
    try:
        document = parse_json(body)
    except ValueError as exc:
        raise _BadRequest("PARSE_ERROR", str(exc)) from None
    if not isinstance(document, dict):
        raise _BadRequest("PARSE_ERROR", "the request body must be a JSON object")
    raw = document.get("context")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _BadRequest("INVALID_CONTEXT", "'context' must be a JSON object")
    targeting_key = raw.get("targetingKey")
    if targeting_key is not None and not isinstance(targeting_key, str):
        raise _BadRequest("INVALID_CONTEXT", "'targetingKey' must be a string")
    try:
        return EvaluationContext.from_dict(raw)
    except InvalidContextError as exc:
        raise _BadRequest("INVALID_CONTEXT", str(exc)) from None


def _item(ruleset: Ruleset, flag: Flag, context: EvaluationContext) -> dict[str, Any]:
    """One flag's OFREP evaluation: a success object or, for an invalid flag, a failure."""
    result = evaluate_flag(flag, context._values, ruleset)
    if result.error_code is not None:
        details = result.error_message or result.error_code
        code = openfeature_error_code(result.error_code)
        return {"key": flag.key, "errorCode": code, "errorDetails": details}
    metadata: dict[str, Any] = {"rulesetVersion": ruleset.version, "phaseflagReason": result.reason}
    if result.rule_id is not None:
        metadata["ruleId"] = result.rule_id
    if isinstance(flag.version, int):
        metadata["flagVersion"] = flag.version
    item: dict[str, Any] = {"key": flag.key, "reason": ofrep_reason(flag, result)}
    # Without a variation (disabled with no off_variation) this is OFREP's "code default"
    # shape: no value and no variant, so the caller's default is used.
    if result.variation_key is not None:
        item["value"] = result.value
        item["variant"] = result.variation_key
    item["metadata"] = metadata
    return item
