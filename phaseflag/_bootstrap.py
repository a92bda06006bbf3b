"""Bootstrap data: a ruleset given in the constructor (dict or file) loaded at once, and
``bootstrap_url`` fetched once after a first live fetch that brought no data."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ._compile import load_ruleset
from ._errors import ConfigError, PhaseFlagError, RulesetError
from ._model import Ruleset

if TYPE_CHECKING:
    from ._client import PhaseFlagClient
    from ._store import RulesetStore


def load_bootstrap(store: RulesetStore, option: str, build: Callable[[], Ruleset]) -> None:
    """Serve ``build()``'s ruleset as bootstrap data; a ConfigError naming ``option`` if bad."""
    try:
        ruleset = build()
    except RulesetError as exc:
        raise ConfigError(
            option, f"is not a valid ruleset: {exc}", "run `phaseflag validate`"
        ) from None
    except OSError as exc:
        raise ConfigError(
            option, f"cannot be read: {exc.strerror or exc}", "check the path"
        ) from None
    store.swap(ruleset, "bootstrap", None)


def fetch_bootstrap_url(client: PhaseFlagClient) -> None:
    """Load ``bootstrap_url`` unless live data is held; a failure is logged and emitted."""
    url = client._settings.bootstrap_url
    if not url or client._transport is None or client._store.source == "live":
        return
    try:
        ruleset = load_ruleset(client._transport.fetch_url(url))
    except PhaseFlagError as exc:
        client._log.warning("phaseflag: bootstrap_url could not be loaded: %s", exc)
        client._listeners.emit("error", exc)
        return
    client._store.swap(ruleset, "bootstrap", None)
