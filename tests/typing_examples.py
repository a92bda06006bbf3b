"""Typed usage examples of the public API, read only by mypy (never imported by the tests).

Check with `mypy --strict tests/typing_examples.py`; no function here is ever called.
"""

from __future__ import annotations

import asyncio
from typing import Any

from openfeature import api
from openfeature.evaluation_context import EvaluationContext as OpenFeatureContext
from openfeature.flag_evaluation import FlagEvaluationDetails

from phaseflag import (
    ChangeEvent,
    ClientStatus,
    EvaluationContext,
    EvaluationResult,
    PhaseFlagClient,
)
from phaseflag._async import AsyncPhaseFlagClient
from phaseflag.openfeature import PhaseFlagProvider
from phaseflag.testing import condition, create_mock_client, flag, rule, ruleset
from phaseflag.types import EvaluationEvent


def sync_reads(client: PhaseFlagClient) -> None:
    ctx = EvaluationContext(user_id="user-123", attributes={"plan": "pro", "age": 30})
    enabled: bool = client.get_boolean_value("new-checkout-flow", False, ctx)
    theme: str = client.get_string_value("ui-theme", "light", ctx)
    limit: int = client.get_integer_value("upload-limit", 10, ctx)
    rate: float = client.get_float_value("sample-rate", 0.1, ctx)
    config: dict[str, Any] = client.get_json_value("checkout-config", {"provider": "stripe"}, ctx)
    regions: list[Any] = client.get_json_value("regions", ["eu"], ctx)
    result: EvaluationResult | None = client.get_variation("new-checkout-flow", ctx)
    if result:
        reason: str = result.reason
        variation: str | None = result.variation_key
        del reason, variation
    details: EvaluationResult = client.get_boolean_details("new-checkout-flow", False, ctx)
    code: str | None = details.error_code
    everything: dict[str, Any] = client.all_flags(ctx, details=True)
    status: ClientStatus = client.status()
    del enabled, theme, limit, rate, config, regions, code, everything, status


def listeners_and_overrides(client: PhaseFlagClient) -> None:
    def on_change(event: ChangeEvent) -> None:
        keys: tuple[str, ...] = event.keys
        del keys

    unsubscribe = client.on("change", on_change)
    unsubscribe()
    client.on_flags_changed(lambda flags: print(len(flags)))()
    client.set_override("new-checkout-flow", True)
    client.clear_override("new-checkout-flow")
    client.clear_all_overrides()
    client.track_event(EvaluationEvent("new-checkout-flow", "enabled", "user-123", {"page": "x"}))
    delivered: bool = client.flush_events()
    remote: EvaluationResult = client.evaluate(flag_key="new-checkout-flow", ctx=None)
    del delivered, remote


def fallback_option() -> PhaseFlagClient:
    def fallback(flag_key: str, context: EvaluationContext | None) -> Any:
        return {"new-checkout-flow": False}.get(flag_key)

    return PhaseFlagClient(base_url="", api_key="", fallback=fallback, bootstrap={"flags": {}})


async def async_client() -> None:
    async with AsyncPhaseFlagClient(base_url="https://api.example/api/v1", api_key="k") as client:
        ready: bool = await client.wait_until_ready(timeout=5.0)
        enabled: bool = client.get_boolean_value("new-checkout-flow", False)
        config: dict[str, Any] = client.get_json_value("checkout-config", {})
        remote: EvaluationResult = await client.evaluate("new-checkout-flow")
        sent: bool = await client.flush_events()
        del ready, enabled, config, remote, sent
    wrapped = AsyncPhaseFlagClient.from_client(create_mock_client())
    await wrapped.aclose()


def run_async() -> None:
    asyncio.run(async_client())


def openfeature_provider(client: PhaseFlagClient) -> None:
    api.set_provider(PhaseFlagProvider(client, init_timeout=10.0))
    api.set_provider(PhaseFlagProvider(base_url="https://api.example/api/v1", api_key="k"))
    of = api.get_client()
    ctx = OpenFeatureContext(targeting_key="user-42", attributes={"plan": "enterprise"})
    enabled: bool = of.get_boolean_value("new-checkout", False, ctx)
    details: FlagEvaluationDetails[int] = of.get_integer_details("upload-limit", 10, ctx)
    del enabled, details


def testing_helpers() -> PhaseFlagClient:
    mock: PhaseFlagClient = create_mock_client({"dark-mode": True}, {"limits": {"rpm": 10}})
    mock.stop()
    doc: dict[str, Any] = ruleset(
        flag(
            "checkout",
            variations={"on": True, "off": False},
            default={"on": 10, "off": 90},
            off="off",
            rules=[rule(condition("plan", "in", "pro", "enterprise"), serve="on")],
        ),
        flag("theme", "dark"),
    )
    return create_mock_client(bootstrap=doc, strict=False, default_context=EvaluationContext("u"))


def misuse_is_rejected(client: PhaseFlagClient, wrapped: AsyncPhaseFlagClient) -> None:
    # Each ignore must stay needed (strict mode warns on unused ignores): mypy catches these.
    client.get_boolean_value("k", "yes")  # type: ignore[arg-type]
    wrong: str = client.get_integer_value("k", 1)  # type: ignore[assignment]
    AsyncPhaseFlagClient(polling_interval="fast")  # type: ignore[arg-type]
    wrapped.get_string_value("k", 3)  # type: ignore[arg-type]
    del wrong
