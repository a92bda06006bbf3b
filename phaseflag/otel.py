"""OpenTelemetry for phaseflag: ``feature_flag.evaluation`` events and SDK metrics.

Install with ``pip install 'phaseflag-sdk[otel]'`` (``opentelemetry-api`` only; bring
your own SDK and exporters). ``instrument(client)`` is the one call most apps need::

    from phaseflag.otel import instrument
    uninstrument = instrument(client)

Events follow the OpenTelemetry semantic conventions for feature flags (the
``feature_flag.evaluation`` event, emitted through the Logs API and added to the
current span when one is recording). Flag values can be sensitive, so
``feature_flag.result.value`` is recorded only with ``include_value=True``.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

try:
    from opentelemetry import trace
    from opentelemetry._logs import LogRecord, get_logger
    from opentelemetry.metrics import CallbackOptions, Observation, get_meter
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "phaseflag.otel needs the OpenTelemetry API: pip install 'phaseflag-sdk[otel]'"
    ) from exc

from ._hooks import Hook, HookContext
from ._version import __version__
from .types import ErrorCode, EvaluationResult, Reason

if TYPE_CHECKING:
    from opentelemetry._logs import LoggerProvider
    from opentelemetry.metrics import MeterProvider

    from ._async import AsyncPhaseFlagClient
    from ._client import PhaseFlagClient

    AnyClient = PhaseFlagClient | AsyncPhaseFlagClient

__all__ = ["EVENT_NAME", "OpenTelemetryHook", "instrument", "register_metrics"]

#: The semantic conventions' event name for one flag evaluation.
EVENT_NAME: Final = "feature_flag.evaluation"
PROVIDER_NAME: Final = "phaseflag"
_SCOPE: Final = "phaseflag"

#: phaseflag reason -> the conventions' ``feature_flag.result.reason`` values.
REASONS: Final[Mapping[str, str]] = {
    Reason.TARGETING_MATCH: "targeting_match",
    Reason.PERCENTAGE_ROLLOUT: "split",
    Reason.DEFAULT: "default",
    Reason.DISABLED: "disabled",
    Reason.PREREQUISITE_FAILED: "default",
    Reason.OVERRIDE: "static",
    Reason.ERROR: "error",
}

#: phaseflag error code -> the conventions' ``error.type`` values.
ERROR_TYPES: Final[Mapping[str, str]] = {
    ErrorCode.FLAG_NOT_FOUND: "flag_not_found",
    ErrorCode.TYPE_MISMATCH: "type_mismatch",
    ErrorCode.INVALID_FLAG: "parse_error",
    ErrorCode.NOT_READY: "provider_not_ready",
    ErrorCode.INVALID_CONTEXT: "invalid_context",
    ErrorCode.GENERAL: "general",
}


class OpenTelemetryHook(Hook):
    """A hook recording each evaluation as a ``feature_flag.evaluation`` event and metric.

    Per evaluation: one log record through the Logs API (``event_name`` set, attributes
    below), the same attributes as a span event on the current span when it is
    recording (a span event rather than span attributes, so several flags read in one
    span don't overwrite each other), and +1 on the ``phaseflag.evaluations`` counter
    with ``feature_flag.key``, ``feature_flag.result.variant`` and
    ``feature_flag.result.reason``.

    Event attributes: ``feature_flag.key``, ``feature_flag.provider.name``
    (``"phaseflag"``), ``feature_flag.result.variant`` (the variation key, when there is
    one), ``feature_flag.result.reason``, ``feature_flag.version`` (the ruleset
    version), ``feature_flag.context.id`` (the user id, else the session id; off with
    ``include_context_id=False``), ``error.type`` and ``error.message``
    on a fallback, and ``feature_flag.result.value`` only with ``include_value=True``
    (objects and arrays as JSON text).
    """

    def __init__(
        self,
        *,
        logger_provider: LoggerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        include_value: bool = False,
        include_context_id: bool = True,
        events: bool = True,
        span_events: bool = True,
    ) -> None:
        self._logger = get_logger(_SCOPE, __version__, logger_provider=logger_provider)
        meter = get_meter(_SCOPE, __version__, meter_provider=meter_provider)
        self._evaluations = meter.create_counter(
            "phaseflag.evaluations",
            unit="{evaluation}",
            description="Flag evaluations by flag, variant and reason",
        )
        self._include_value = include_value
        self._include_context_id = include_context_id
        self._events = events
        self._span_events = span_events

    def attributes(self, ctx: HookContext, result: EvaluationResult) -> dict[str, Any]:
        """The ``feature_flag.evaluation`` attributes for one read."""
        attrs: dict[str, Any] = {
            "feature_flag.key": ctx.flag_key,
            "feature_flag.provider.name": PROVIDER_NAME,
            "feature_flag.result.reason": REASONS.get(result.reason, "unknown"),
        }
        if result.variation_key is not None:
            attrs["feature_flag.result.variant"] = result.variation_key
        if ctx.ruleset_version is not None:
            attrs["feature_flag.version"] = str(ctx.ruleset_version)
        context = ctx.context
        if self._include_context_id and context is not None:
            context_id = context.user_id or context.session_id
            if context_id:
                attrs["feature_flag.context.id"] = context_id
        if result.error_code is not None:
            attrs["error.type"] = ERROR_TYPES.get(result.error_code, result.error_code.lower())
            if result.error_message:
                attrs["error.message"] = result.error_message
        if self._include_value:
            value = result.value
            attrs["feature_flag.result.value"] = (
                json.dumps(value, sort_keys=True, default=str)
                if isinstance(value, (dict, list))
                else value
            )
        return attrs

    def finally_after(self, ctx: HookContext, result: EvaluationResult) -> None:
        """Emit the event, the span event and the counter increment."""
        attrs = self.attributes(ctx, result)
        if self._events:
            self._logger.emit(LogRecord(event_name=EVENT_NAME, attributes=attrs))
        if self._span_events:
            span = trace.get_current_span()
            if span.is_recording():
                span.add_event(EVENT_NAME, attrs)
        counted = {
            "feature_flag.key": attrs["feature_flag.key"],
            "feature_flag.result.reason": attrs["feature_flag.result.reason"],
        }
        if "feature_flag.result.variant" in attrs:
            counted["feature_flag.result.variant"] = attrs["feature_flag.result.variant"]
        self._evaluations.add(1, counted)


def register_metrics(
    client: AnyClient, *, meter_provider: MeterProvider | None = None
) -> Callable[[], None]:
    """Report a client's health as metrics; returns a function that stops reporting.

    Instruments: ``phaseflag.sync.failures`` (counter: failed fetches and rejected
    rulesets), ``phaseflag.ruleset.age`` (gauge, seconds since the held ruleset was
    last confirmed fresh), ``phaseflag.events.queued`` (gauge) and
    ``phaseflag.events.dropped`` (cumulative counter). The observable ones read
    ``client.status()`` at collection time; the client is held weakly.
    """
    meter = get_meter(_SCOPE, __version__, meter_provider=meter_provider)
    ref = weakref.ref(client)
    active = threading.Event()
    active.set()
    failures = meter.create_counter(
        "phaseflag.sync.failures",
        unit="{failure}",
        description="Ruleset fetches that failed or were rejected",
    )

    def on_error(error: Exception) -> None:
        if active.is_set():
            failures.add(1, {"error.type": type(error).__name__})

    def status_reader(field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            held = ref()
            if held is None or not active.is_set():
                return []
            value = getattr(held.status(), field)
            return [] if value is None else [Observation(value)]

        return observe

    meter.create_observable_gauge(
        "phaseflag.ruleset.age",
        [status_reader("ruleset_age")],
        unit="s",
        description="Seconds since the held ruleset was last confirmed fresh",
    )
    meter.create_observable_gauge(
        "phaseflag.events.queued",
        [status_reader("events_queued")],
        unit="{event}",
        description="Analytics events waiting to be sent",
    )
    meter.create_observable_counter(
        "phaseflag.events.dropped",
        [status_reader("events_dropped")],
        unit="{event}",
        description="Analytics events dropped (queue full or delivery given up)",
    )
    unsubscribe = client.on("error", on_error)

    def stop() -> None:
        active.clear()
        unsubscribe()

    return stop


def instrument(
    client: AnyClient,
    *,
    logger_provider: LoggerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    include_value: bool = False,
    include_context_id: bool = True,
) -> Callable[[], None]:
    """Add an :class:`OpenTelemetryHook` to ``client`` (a PhaseFlagClient or an
    AsyncPhaseFlagClient) and :func:`register_metrics` for it.

    Providers default to the global ones (``opentelemetry.sdk`` sets them up). Returns a
    function that removes the hook and stops the metrics.
    """
    hook = OpenTelemetryHook(
        logger_provider=logger_provider,
        meter_provider=meter_provider,
        include_value=include_value,
        include_context_id=include_context_id,
    )
    remove_hook = client.add_hook(hook)
    stop_metrics = register_metrics(client, meter_provider=meter_provider)

    def uninstrument() -> None:
        remove_hook()
        stop_metrics()

    return uninstrument
