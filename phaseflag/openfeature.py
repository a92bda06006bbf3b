"""OpenFeature provider: serve phaseflag flags through the OpenFeature SDK (``openfeature-sdk``).

Install with ``pip install "phaseflag-sdk[openfeature]"``; nothing else imports this module.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, TypeVar

try:
    from openfeature.evaluation_context import EvaluationContext as OpenFeatureContext
    from openfeature.event import ProviderEventDetails
    from openfeature.exception import ErrorCode as OFErrorCode
    from openfeature.exception import ProviderFatalError, ProviderNotReadyError
    from openfeature.flag_evaluation import FlagMetadata, FlagResolutionDetails, FlagValueType
    from openfeature.flag_evaluation import Reason as OFReason
    from openfeature.provider import AbstractProvider, Metadata
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "phaseflag.openfeature needs the OpenFeature SDK: pip install 'phaseflag-sdk[openfeature]'"
    ) from exc

from ._client import PhaseFlagClient
from ._errors import AuthenticationError, ConfigError, InvalidContextError
from ._openfeature_mapping import openfeature_error_code, openfeature_reason
from .types import (
    ChangeEvent,
    EvaluationContext,
    EvaluationEvent,
    EvaluationResult,
    Reason,
)

if TYPE_CHECKING:
    from openfeature.track import TrackingEventDetails

__all__ = ["PhaseFlagProvider", "to_phaseflag_context"]

T = TypeVar("T")


_NO_METADATA: Final[FlagMetadata] = MappingProxyType({})
_METADATA_TYPES: Final = (bool, int, float, str)

_Getter = Callable[[str, Any, "EvaluationContext | None"], EvaluationResult]


class PhaseFlagProvider(AbstractProvider):
    """An OpenFeature provider evaluating phaseflag flags locally.

    ``PhaseFlagProvider(client)`` wraps an existing PhaseFlagClient;
    ``PhaseFlagProvider(base_url=..., api_key=..., ...)`` builds one from the same
    options. Either way the provider owns the client's lifecycle: ``initialize``
    starts it and waits up to ``init_timeout`` seconds for flag data, ``shutdown``
    stops it.

    Initialization: ready -> READY; the API rejected the SDK key and no data is
    held -> ``ProviderFatalError`` (status FATAL); no data in time ->
    ``ProviderNotReadyError`` (status ERROR, and READY follows when data arrives).
    Evaluations never raise and map phaseflag results to OpenFeature ones:

    ======================  ==============================================
    phaseflag               OpenFeature
    ======================  ==============================================
    targeting_match         TARGETING_MATCH
    percentage_rollout      SPLIT
    default                 STATIC for a flag with no prerequisites,
                            targets or rules, else DEFAULT
    disabled                DISABLED
    prerequisite_failed     DEFAULT (the off variation, a configured value)
    override                STATIC
    FLAG_NOT_FOUND ...      FLAG_NOT_FOUND, TYPE_MISMATCH, PARSE_ERROR
                            (INVALID_FLAG), PROVIDER_NOT_READY (NOT_READY),
                            INVALID_CONTEXT, GENERAL
    ======================  ==============================================

    The context's ``targeting_key`` becomes ``user_id`` (an attribute
    ``user_id``/``session_id`` fills the id when not set); other attributes must
    be str, int, float, bool or aware datetime, else INVALID_CONTEXT. Flag
    metadata is the flag definition's optional ``metadata`` object (scalar values).

    Events after initialization: client ``ready`` -> PROVIDER_READY, ``change`` ->
    PROVIDER_CONFIGURATION_CHANGED (``flags_changed`` = the changed keys),
    ``error`` -> PROVIDER_ERROR once per run of failures (the last good flags keep
    being served; the next live change reports READY again), ``stale`` ->
    PROVIDER_STALE. ``track`` queues an EvaluationEvent named after the event.
    Thread-safe like the client.
    """

    def __init__(
        self, client: PhaseFlagClient | None = None, *, init_timeout: float = 5.0, **options: Any
    ) -> None:
        super().__init__()
        if client is not None and options:
            raise ConfigError("client", "pass either a PhaseFlagClient or its options, not both")
        if client is not None and not isinstance(client, PhaseFlagClient):
            raise ConfigError("client", f"must be a PhaseFlagClient, got {type(client).__name__}")
        if isinstance(init_timeout, bool) or not isinstance(init_timeout, (int, float)):
            raise ConfigError("init_timeout", f"{init_timeout!r} is not a number of seconds")
        if not init_timeout >= 0:
            raise ConfigError("init_timeout", f"{init_timeout!r} must be >= 0 seconds")
        self._client = client if client is not None else PhaseFlagClient(**options)
        self._init_timeout = float(init_timeout)
        self._settled = threading.Event()
        self._live = False
        self._in_error = False
        self._auth_error: AuthenticationError | None = None
        self._unsubscribes: list[Callable[[], None]] = []

    @property
    def client(self) -> PhaseFlagClient:
        """The PhaseFlagClient this provider evaluates with."""
        return self._client

    def get_metadata(self) -> Metadata:
        """Provider metadata; the name is ``"phaseflag"``."""
        return Metadata(name="phaseflag")

    # -- lifecycle ---------------------------------------------------------------------------

    def initialize(self, evaluation_context: OpenFeatureContext) -> None:
        """Start the client and wait until it is ready (see the class docstring for failures)."""
        self._settled.clear()
        self._auth_error = None
        if not self._unsubscribes:
            client = self._client
            self._unsubscribes = [
                client.on("ready", self._on_ready),
                client.on("change", self._on_change),
                client.on("error", self._on_error),
                client.on("stale", self._on_stale),
            ]
        try:
            self._client.start()
            if not self._client.is_ready:
                self._settled.wait(self._init_timeout)
        finally:
            self._live = True
        if self._client.is_ready:
            return
        if self._auth_error is not None and not self._holds_data():
            raise ProviderFatalError(f"the PhaseFlag API rejected the SDK key: {self._auth_error}")
        last_error = self._client.status().last_error
        raise ProviderNotReadyError(
            f"no flag data within {self._init_timeout:g}s"
            + (f" (last error: {last_error})" if last_error else "")
        )

    def shutdown(self) -> None:
        """Stop the client (flushing events) and stop emitting events; wakes ``initialize``."""
        self._live = False
        self._settled.set()
        unsubscribes, self._unsubscribes = self._unsubscribes, []
        for unsubscribe in unsubscribes:
            unsubscribe()
        self._client.stop()

    # Client listeners run on the client's sync thread, one at a time.

    def _on_ready(self) -> None:
        self._settled.set()
        if self._live:
            self._in_error = False
            self.emit_provider_ready(ProviderEventDetails())

    def _on_change(self, event: ChangeEvent) -> None:
        if not self._live:
            return
        if self._in_error and event.source == "live":
            self._in_error = False
            self.emit_provider_ready(ProviderEventDetails(message="flag data is live again"))
        self.emit_provider_configuration_changed(
            ProviderEventDetails(flags_changed=list(event.keys))
        )

    def _on_error(self, error: Exception) -> None:
        if isinstance(error, AuthenticationError):
            self._auth_error = error
            if not self._holds_data():  # with data, offline_mode may still make it ready
                self._settled.set()
        if not self._live or self._in_error:
            return
        self._in_error = True
        self.emit_provider_error(
            ProviderEventDetails(
                message=f"{type(error).__name__}: {error}", error_code=OFErrorCode.GENERAL
            )
        )

    def _holds_data(self) -> bool:
        return self._client.status().ruleset_source is not None

    def _on_stale(self, age: float) -> None:
        if self._live:
            self.emit_provider_stale(ProviderEventDetails(message=f"flag data is {age:.0f}s old"))

    # -- evaluation --------------------------------------------------------------------------

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: OpenFeatureContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        """Evaluate a boolean flag."""
        return self._resolve(
            flag_key, default_value, evaluation_context, self._client.get_boolean_details
        )

    def resolve_string_details(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: OpenFeatureContext | None = None,
    ) -> FlagResolutionDetails[str]:
        """Evaluate a string flag."""
        return self._resolve(
            flag_key, default_value, evaluation_context, self._client.get_string_details
        )

    def resolve_integer_details(
        self,
        flag_key: str,
        default_value: int,
        evaluation_context: OpenFeatureContext | None = None,
    ) -> FlagResolutionDetails[int]:
        """Evaluate a number flag holding a whole number (a whole float counts)."""
        return self._resolve(
            flag_key, default_value, evaluation_context, self._client.get_integer_details
        )

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: OpenFeatureContext | None = None,
    ) -> FlagResolutionDetails[float]:
        """Evaluate a number flag as a float (an int value counts)."""
        return self._resolve(
            flag_key, default_value, evaluation_context, self._client.get_float_details
        )

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: OpenFeatureContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        """Evaluate a JSON flag (an object or an array; a private copy)."""
        return self._resolve(
            flag_key, default_value, evaluation_context, self._client.get_json_details
        )

    def _resolve(
        self, flag_key: str, default: T, context: OpenFeatureContext | None, getter: _Getter
    ) -> FlagResolutionDetails[T]:
        try:
            phaseflag_context = to_phaseflag_context(context)
        except InvalidContextError as exc:
            return FlagResolutionDetails(
                default, OFErrorCode.INVALID_CONTEXT, str(exc), OFReason.ERROR
            )
        result = getter(flag_key, default, phaseflag_context)
        if result.error_code is not None:
            code = OFErrorCode(openfeature_error_code(result.error_code))
            return FlagResolutionDetails(default, code, result.error_message, OFReason.ERROR)
        flag = self._client.ruleset.flags.get(flag_key)
        reason = OFReason(openfeature_reason(result, flag))
        metadata = _NO_METADATA
        if flag is not None and result.reason != Reason.OVERRIDE:
            metadata = _metadata(flag.metadata)
        return FlagResolutionDetails(
            result.value, reason=reason, variant=result.variation_key, flag_metadata=metadata
        )

    # -- tracking ----------------------------------------------------------------------------

    def track(
        self,
        tracking_event_name: str,
        evaluation_context: OpenFeatureContext | None = None,
        tracking_event_details: TrackingEventDetails | None = None,
    ) -> None:
        """Queue an analytics event: ``flag_key`` is the event name, ``user_id`` the
        targeting key, ``metadata`` the details' attributes, ``value`` their value."""
        details = tracking_event_details
        value = getattr(details, "value", None)
        self._client.track_event(
            EvaluationEvent(
                flag_key=tracking_event_name,
                user_id=(evaluation_context.targeting_key or None) if evaluation_context else None,
                metadata=dict(getattr(details, "attributes", None) or {}),
                value=float(value) if isinstance(value, (int, float)) else None,
            )
        )


def to_phaseflag_context(context: OpenFeatureContext | None) -> EvaluationContext | None:
    """Convert an OpenFeature context (None when it is empty).

    Raises:
        InvalidContextError: an attribute has a type phaseflag cannot evaluate.
    """
    if context is None or (not context.targeting_key and not context.attributes):
        return None
    return EvaluationContext.from_dict(
        {**context.attributes, "targetingKey": context.targeting_key}
    )


def _metadata(raw: object) -> FlagMetadata:
    if not isinstance(raw, Mapping) or not raw:
        return _NO_METADATA
    return MappingProxyType({str(k): v for k, v in raw.items() if isinstance(v, _METADATA_TYPES)})
