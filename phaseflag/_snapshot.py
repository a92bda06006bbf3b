"""``all_flags``: every flag evaluated for one context as a JSON-serialisable snapshot (the
payload a page embeds for browser code); overrides apply, no exposure counted, no hook run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._evaluation import evaluate_flag
from ._model import EMPTY_RULESET
from ._reads import copy_json

if TYPE_CHECKING:
    from ._client import PhaseFlagClient
    from .types import EvaluationContext


def all_flags(
    client: PhaseFlagClient,
    context: EvaluationContext | None,
    *,
    details: bool,
    client_side_only: bool,
) -> dict[str, Any]:
    """``{key: value}`` (or ``{key: {value, variation_key, reason, ruleset_version}}``) for
    ``client``'s flags under ``context``; flags that error are skipped; never raises."""
    out: dict[str, Any] = {}
    try:
        scope = client._scopes.get() if client._scopes is not None else None
        ruleset = scope.ruleset if scope is not None else client._store.ruleset
        if context is None:
            values = scope.values if scope is not None else client._default_values
        else:
            values = client._context_values(context)
        overrides = client._overrides
        flags = ruleset.flags
        if client_side_only:
            keys = {key for key, flag in flags.items() if flag.client_side}
        else:
            keys = set(flags) | set(overrides)
        version = None if ruleset is EMPTY_RULESET else ruleset.version
        for key in sorted(keys):
            result = overrides.get(key)
            if result is None:
                flag = flags[key]
                result = flag.static or evaluate_flag(flag, values, ruleset)
            if result.error_code is not None or result.value is None:
                continue
            value = (
                copy_json(result.value) if isinstance(result.value, (dict, list)) else result.value
            )
            if details:
                out[key] = {
                    "value": value,
                    "variation_key": result.variation_key,
                    "reason": result.reason,
                    "ruleset_version": version,
                }
            else:
                out[key] = value
    except Exception as exc:
        client._warn_once("all_flags", "phaseflag: all_flags failed: %s", exc)
    return out
