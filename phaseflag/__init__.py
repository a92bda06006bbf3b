"""phaseflag: server-side feature flags evaluated locally in microseconds."""

from ._errors import (
    AuthenticationError,
    ConfigError,
    InvalidContextError,
    PhaseFlagError,
    RulesetError,
    RulesetTooLargeError,
    TransportError,
)
from ._version import __version__
from .types import (
    ErrorCode,
    EvaluationContext,
    EvaluationEvent,
    EvaluationResult,
    Reason,
)

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "ErrorCode",
    "EvaluationContext",
    "EvaluationEvent",
    "EvaluationResult",
    "InvalidContextError",
    "PhaseFlagError",
    "Reason",
    "RulesetError",
    "RulesetTooLargeError",
    "TransportError",
    "__version__",
]
