"""The held ruleset: what the sync threads deliver, which version wins, the cache copy,
and the health derived from it (readiness, failures, staleness).

The store is the sync threads' sink (``apply_document``, ``sync_succeeded``,
``sync_failed``), kept off the public client. Readers take ``store.ruleset`` without a
lock: a new ruleset replaces the old by one reference assignment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ._cache import Cache
from ._childcache import child_safe
from ._compile import load_ruleset
from ._errors import RulesetError
from ._listeners import Listeners
from ._model import EMPTY_RULESET, FlagSources, Ruleset
from ._oncelog import OnceLog
from ._value_changes import value_in
from .types import ChangeEvent, FlagChange

__all__ = ["RulesetStore", "diff"]


class RulesetStore:
    """The current ruleset and its provenance, updated by the sync threads.

    Version policy: bootstrap and cached data replace what is held only with a higher
    version; live data always replaces it. Live documents are written through to the
    cache once their sync has succeeded (after readiness). Listeners hear ``ready``,
    ``change``, ``flags_changed``, ``error`` and ``stale``.
    """

    def __init__(
        self,
        *,
        cache: Cache,
        cache_key: str,
        listeners: Listeners,
        warn: OnceLog,
        offline_mode: bool,
        max_staleness: float | None,
        default_values: Mapping[str, Any] | None = None,
        on_swap: Callable[[], None] | None = None,
    ) -> None:
        self.ruleset: Ruleset = EMPTY_RULESET
        self._on_swap = on_swap  # told after each swap, under the swap lock
        self.source: str | None = None
        self.confirmed_at: float | None = None
        self.last_sync: float | None = None
        self.failures = 0
        self.last_error: str | None = None
        self.stale = False
        self.ready = threading.Event()
        self._cache = child_safe(cache)  # a custom cache is bounded in a forked child
        self._cache_key = cache_key
        self._listeners = listeners
        self._warn = warn
        self._log = warn.logger
        self._offline_mode = offline_mode
        self._max_staleness = max_staleness
        self._default_values = default_values  # FlagChange.previous/current are for these
        self._swap_lock = threading.Lock()
        self._open = True
        self._unsaved: bytes | None = None  # a live document applied, not yet in the cache

    def close(self) -> None:
        """From now on nothing is applied or announced (stop()): a sync thread still
        finishing finds the store closed. ``reopen()`` (start()) undoes it."""
        with self._swap_lock:
            self._open = False

    def reopen(self) -> None:
        with self._swap_lock:
            self._open = True

    # -- the sync threads' sink ----------------------------------------------------------------

    def apply_document(self, raw: bytes, source: str) -> None:
        """Validate, compile and swap in a fetched ruleset; raises RulesetError to reject it."""
        ruleset = load_ruleset(raw, previous=self.ruleset)
        self.swap(ruleset, source, raw)

    def sync_succeeded(self) -> None:
        """Record a good fetch; (re)announce readiness after an outage; then write what was
        applied to the cache, so that neither readiness nor a listener waits on a disk sync."""
        if not self._open:
            return
        now = time.time()
        self.last_sync = now
        self.confirmed_at = now
        recovered = self.failures > 0
        self.failures = 0
        if recovered:
            self._log.info("phaseflag: sync recovered")
        if (recovered or self.stale) and self.ready.is_set():
            # Back after an outage (or stale data): announce readiness again.
            self.stale = False
            self._listeners.emit("ready")
        self.mark_ready()
        self._write_cache()

    def sync_failed(self, error: Exception) -> None:
        """Record a failed fetch or a rejected ruleset; the last good ruleset stays in use."""
        if not self._open:
            return
        self.failures += 1
        self.last_error = f"{type(error).__name__}: {error}"
        level = logging.WARNING if self.failures == 1 else logging.DEBUG
        self._log.log(
            level,
            "phaseflag: ruleset sync failed (%d in a row), keeping the last good ruleset: %s",
            self.failures,
            self.last_error,
        )
        self._listeners.emit("error", error)
        if self._offline_mode and self.ruleset is not EMPTY_RULESET:
            self.mark_ready()
        self.check_staleness(time.time())

    # -- held data -----------------------------------------------------------------------------

    def swap(self, ruleset: Ruleset, source: str, raw: bytes | None) -> bool:
        """Make ``ruleset`` current (one reference assignment) and announce the change;
        False when the version policy keeps what is held."""
        with self._swap_lock:
            old = self.ruleset
            if not self._open:
                return False
            if source != "live" and old is not EMPTY_RULESET and ruleset.version <= old.version:
                return False
            self.ruleset = ruleset
            self.source = source
            if self._on_swap is not None:
                self._on_swap()
        if self.confirmed_at is None or source == "live":
            self.confirmed_at = time.time()
        if source == "live" and raw is not None:
            self._unsaved = raw  # written by sync_succeeded, after readiness and listeners
        # Listing (and evaluating) 10,000 added flags is work: only when someone sees it.
        listeners = self._listeners
        wanted = listeners.has("change") or listeners.has("flags_changed")
        changes: tuple[FlagChange, ...] = ()
        if wanted or self._log.isEnabledFor(logging.DEBUG):
            changes = diff(old, ruleset, self._default_values if wanted else None)
        if changes and self._open:
            self._log.debug(
                "phaseflag: ruleset v%s applied from %s (%d flags changed)",
                ruleset.version,
                source,
                len(changes),
            )
            previous = None if old is EMPTY_RULESET else old.version
            self._listeners.emit("change", ChangeEvent(changes, previous, ruleset.version, source))
            if self._listeners.has("flags_changed"):
                # Definitions are decoded only when a listener looks one up.
                self._listeners.emit("flags_changed", FlagSources(ruleset.flags))
        return True

    def _write_cache(self) -> None:
        """Write the last live document applied, if not yet written (never raises)."""
        raw, self._unsaved = self._unsaved, None
        if raw is None:
            return
        try:
            self._cache.set(self._cache_key, raw)
        except Exception as exc:
            self._warn("cache:set", "phaseflag: could not write the ruleset cache: %s", exc)

    def load_cache(self) -> None:
        """Serve the cached ruleset if it is newer than what is held (never raises)."""
        try:
            raw = self._cache.get(self._cache_key)
        except Exception as exc:
            self._warn("cache:get", "phaseflag: could not read the ruleset cache: %s", exc)
            return
        if not raw:
            return
        try:
            self.swap(load_ruleset(raw), "cache", None)
        except RulesetError as exc:
            self._log.warning("phaseflag: ignoring the cached ruleset: %s", exc)

    def close_cache(self) -> None:
        """Close the cache (stop()); failures are logged once."""
        try:
            self._cache.close()
        except Exception as exc:
            self._warn("cache:close", "phaseflag: closing the ruleset cache failed: %s", exc)

    # -- health --------------------------------------------------------------------------------

    def mark_ready(self) -> None:
        """Set readiness (once) and tell ``ready`` listeners."""
        if not self.ready.is_set():
            self.ready.set()
            self._listeners.emit("ready")

    def check_staleness(self, now: float) -> None:
        """Fire ``stale`` once when held data is older than ``max_staleness``, whatever the
        cause (failures, a stuck thread, a silent stream); status() and a timer call it."""
        limit = self._max_staleness
        if limit is None or self.stale or self.confirmed_at is None or not self._open:
            return
        age = now - self.confirmed_at
        if age > limit:
            self.stale = True
            self._log.warning("phaseflag: flag data is %.0fs old (max_staleness %.0fs)", age, limit)
            self._listeners.emit("stale", age)

    def reset_after_fork(self) -> None:
        """Replace the locks in a forked child (the parent's may be held), the cache's own
        when it is one of phaseflag's caches; a custom cache's calls are bounded from now on
        (``_childcache``)."""
        self._swap_lock = threading.Lock()
        self._unsaved = None  # the parent's to write
        reset = getattr(self._cache, "_after_fork_in_child", None)
        if callable(reset):
            reset()


def diff(
    old: Ruleset, new: Ruleset, values: Mapping[str, Any] | None = None
) -> tuple[FlagChange, ...]:
    """The flags added, removed or changed, from their JSON texts (nothing is compiled
    for this); with ``values`` (the default context's) each change also carries the
    value served before and after (None where absent or failing).

    A flag whose text is the same but whose compiled form changed (a segment it uses
    changed, or it joined or left a prerequisite cycle) counts as changed too.
    """
    if old is new:
        return ()

    def change(key: str, before: int | None, after: int | None, **kind: bool) -> FlagChange:
        if values is None:
            return FlagChange(key, before, after, **kind)
        previous, current = value_in(old, key, values), value_in(new, key, values)
        return FlagChange(key, before, after, previous=previous, current=current, **kind)

    changes = []
    old_texts, new_texts = old.flags.texts(), new.flags.texts()
    old_versions, new_versions = old.flag_versions, new.flag_versions
    old_table, new_table = old.table.copy(), new.table.copy()  # atomic copies
    segments_changed = old.segments_source != new.segments_source
    for key, text in new_texts.items():
        before = old_texts.get(key)
        if before is None:
            changes.append(change(key, None, new_versions.get(key), added=True))
        elif (
            before != text
            or (segments_changed and '"in_segment"' in text)
            or (key in new_table and old_table.get(key, new_table[key]) is not new_table[key])
        ):
            changes.append(change(key, old_versions.get(key), new_versions.get(key)))
    for key in old_texts:
        if key not in new_texts:
            changes.append(change(key, old_versions.get(key), None, removed=True))
    return tuple(changes)
