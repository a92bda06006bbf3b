"""Health: the client's status snapshot (readiness, data age, staleness, sync failures,
event counters, fleet leadership, listener failures) assembled from the store, the event
processor and the listeners."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ._events import EventStats
from ._model import EMPTY_RULESET
from .types import ClientStatus

if TYPE_CHECKING:
    from ._client import PhaseFlagClient


def client_status(client: PhaseFlagClient) -> ClientStatus:
    """An immutable snapshot of ``client``'s health; checks staleness as of now."""
    now = time.time()
    store = client._store
    ruleset = store.ruleset
    stats = client._events.stats() if client._events is not None else EventStats(0, 0, 0, 0)
    store.check_staleness(now)
    return ClientStatus(
        state=client._state.value,
        ready=client.is_ready,
        ruleset_version=None if ruleset is EMPTY_RULESET else ruleset.version,
        ruleset_source=store.source,
        ruleset_age=None if store.confirmed_at is None else now - store.confirmed_at,
        flag_count=len(ruleset.flags),
        last_sync=store.last_sync,
        consecutive_failures=store.failures,
        last_error=store.last_error,
        stale=store.stale,
        events_sent=stats.sent,
        events_dropped=stats.dropped + client._events_dropped_offline,
        events_failed=stats.failed,
        events_queued=stats.queued,
        leader=_leader(client),
        listener_failures=client._listeners.failures + client._value_changes.failures,
    )


def _leader(client: PhaseFlagClient) -> bool | None:
    if client._fleet_cache is None:
        return None
    return bool(getattr(client._sync, "leader", False))
