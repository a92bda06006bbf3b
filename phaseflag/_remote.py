"""Remote evaluation: POST /sdk/evaluate, the server's answer parsed into a result, and the
local result standing in when the call fails (so ``client.evaluate`` never raises)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ._errors import TransportError
from ._evaluation import not_found
from .types import EvaluationContext, EvaluationResult, Reason

if TYPE_CHECKING:
    from ._client import PhaseFlagClient


def evaluate_remote(
    client: PhaseFlagClient, flag_key: str, ctx: EvaluationContext | None
) -> EvaluationResult:
    """The server's evaluation of ``flag_key``; a 404 is FLAG_NOT_FOUND, any other failure
    the local result marked as standing in."""
    transport = client._transport
    if transport is None:
        return local_instead(client, flag_key, ctx, "remote evaluation unavailable: HTTP disabled")
    try:
        wanted = EvaluationContext() if ctx is None else ctx
        if client._default_context is not None:  # merged under ctx, as reads do
            wanted = client._default_context.merge(wanted)
        data = transport.evaluate(flag_key, wanted.to_dict())
    except TransportError as exc:
        if exc.status == 404:
            return not_found(flag_key)
        return local_instead(client, flag_key, ctx, f"remote evaluation failed: {exc}")
    except Exception as exc:
        return local_instead(client, flag_key, ctx, f"remote evaluation failed: {exc}")
    return parse_result(flag_key, data)


def parse_result(flag_key: str, data: dict[str, Any]) -> EvaluationResult:
    """The server's JSON answer as an EvaluationResult (missing fields take their defaults)."""
    return EvaluationResult(
        flag_key=str(data.get("flag_key", flag_key)),
        value=data.get("value"),
        reason=str(data.get("reason", Reason.DEFAULT)),
        variation_key=data.get("variation_key"),
        rule_id=data.get("rule_id"),
        error_code=data.get("error_code"),
        error_message=data.get("error_message"),
    )


def local_instead(
    client: PhaseFlagClient, flag_key: str, ctx: EvaluationContext | None, why: str
) -> EvaluationResult:
    """The local result standing in for a failed remote one, marked with ``why``."""
    return replace(client._details(flag_key, None, ctx), error_message=f"{why}; local result")
