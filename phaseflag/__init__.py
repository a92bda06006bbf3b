"""phaseflag: server-side feature flags evaluated locally in microseconds."""

import logging as _logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._async import AsyncPhaseFlagClient

from ._cache import Cache, FileCache, MemoryCache
from ._client import PhaseFlagClient
from ._compile import compile_ruleset, load_ruleset
from ._errors import (
    AuthenticationError,
    ConfigError,
    InvalidContextError,
    PhaseFlagError,
    RulesetError,
    RulesetTooLargeError,
    TransportError,
)
from ._evaluation import Explanation, evaluate, explain
from ._hooks import EvaluationError, Hook, HookContext
from ._model import Ruleset
from ._version import __version__
from .types import (
    ChangeEvent,
    ClientStatus,
    ErrorCode,
    EvaluationContext,
    EvaluationEvent,
    EvaluationResult,
    FlagChange,
    Reason,
)

__all__ = [
    "AsyncPhaseFlagClient",
    "AuthenticationError",
    "Cache",
    "ChangeEvent",
    "ClientStatus",
    "ConfigError",
    "ErrorCode",
    "EvaluationContext",
    "EvaluationError",
    "EvaluationEvent",
    "EvaluationResult",
    "Explanation",
    "FileCache",
    "FlagChange",
    "Hook",
    "HookContext",
    "InvalidContextError",
    "MemoryCache",
    "PhaseFlagClient",
    "PhaseFlagError",
    "Reason",
    "Ruleset",
    "RulesetError",
    "RulesetTooLargeError",
    "TransportError",
    "__version__",
    "compile_ruleset",
    "evaluate",
    "explain",
    "load_ruleset",
]

_logging.getLogger("phaseflag").addHandler(_logging.NullHandler())


def __getattr__(name: str) -> object:
    """Import AsyncPhaseFlagClient (and asyncio) only when someone asks for it."""
    if name == "AsyncPhaseFlagClient":
        from ._async import AsyncPhaseFlagClient

        return AsyncPhaseFlagClient
    raise AttributeError(f"module 'phaseflag' has no attribute {name!r}")
