"""One mapping from phaseflag results to OpenFeature reasons and error codes.

Shared by the OpenFeature provider (``phaseflag.openfeature``) and the server's OFREP
endpoints, so both answer the same for the same evaluation. Plain strings: they are the
OpenFeature spec's names, and this module needs no OpenFeature import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from .types import ErrorCode, Reason

if TYPE_CHECKING:
    from ._model import Flag
    from .types import EvaluationResult

__all__ = ["ERROR_CODES", "REASONS", "openfeature_error_code", "openfeature_reason"]

#: phaseflag reason -> OpenFeature reason (``default`` is refined by openfeature_reason).
REASONS: Final[Mapping[str, str]] = {
    Reason.TARGETING_MATCH: "TARGETING_MATCH",
    Reason.PERCENTAGE_ROLLOUT: "SPLIT",
    Reason.DEFAULT: "DEFAULT",
    Reason.DISABLED: "DISABLED",
    # The off variation served because a prerequisite did not hold: OpenFeature has no
    # closer reason (the provider's metadata and OFREP's phaseflagReason keep it).
    Reason.PREREQUISITE_FAILED: "DEFAULT",
    Reason.OVERRIDE: "STATIC",
    Reason.ERROR: "ERROR",
}

#: phaseflag error code -> OpenFeature error code.
ERROR_CODES: Final[Mapping[str, str]] = {
    ErrorCode.FLAG_NOT_FOUND: "FLAG_NOT_FOUND",
    ErrorCode.TYPE_MISMATCH: "TYPE_MISMATCH",
    # A flag isolated as invalid: its configuration could not be used.
    ErrorCode.INVALID_FLAG: "PARSE_ERROR",
    ErrorCode.NOT_READY: "PROVIDER_NOT_READY",
    ErrorCode.INVALID_CONTEXT: "INVALID_CONTEXT",
    ErrorCode.GENERAL: "GENERAL",
}


def openfeature_reason(result: EvaluationResult, flag: Flag | None) -> str:
    """The OpenFeature reason of a result: ``default`` is STATIC for a flag with nothing to
    target on (its value cannot depend on the context), else as REASONS says."""
    if result.reason == Reason.DEFAULT and flag is not None and flag.static is not None:
        return "STATIC"
    return REASONS.get(result.reason, "UNKNOWN")


def openfeature_error_code(error_code: str) -> str:
    """The OpenFeature error code of a phaseflag one (GENERAL for anything unknown)."""
    return ERROR_CODES.get(error_code, "GENERAL")
