"""The client's parts, built from its settings: transport, event processor, sync, health.

Each is optional (no base URL: no transport and no events; no ``max_staleness``: no
health timer), and each is built again in a forked child or on a restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ._config import Settings
from ._events import EventProcessor
from ._loop import Loop
from ._model import EMPTY_RULESET
from ._schema import MAX_DOCUMENT_BYTES
from ._store import RulesetStore
from ._sync import Poller, SyncSink

if TYPE_CHECKING:
    import requests

    from ._fleet import Inner
    from ._transport import Transport
    from .redis import RedisCache

__all__ = ["make_events", "make_health", "make_sync", "make_transport"]


def make_transport(
    s: Settings,
    *,
    headers: Mapping[str, str],
    headers_factory: Callable[[], Mapping[str, str]] | None,
    proxies: Mapping[str, str] | None,
    session: requests.Session | None,
) -> Transport | None:
    """The HTTP transport, or None when ``base_url`` is empty (HTTP disabled)."""
    if not s.base_url:
        return None
    from ._transport import Transport  # requests is imported with the first HTTP client

    return Transport(
        s.base_url,
        s.api_key,
        timeout=s.request_timeout,
        headers=headers,
        headers_factory=headers_factory,
        verify=s.verify,
        proxies=proxies,
        max_body_bytes=MAX_DOCUMENT_BYTES,
        session=session,
    )


def make_events(s: Settings, post: Callable[[dict[str, Any]], None]) -> EventProcessor | None:
    """The event processor, or None when there is no server or ``send_events`` is off."""
    if not s.base_url or not s.send_events:
        return None
    return EventProcessor(
        post,
        flush_interval=s.event_flush_interval,
        batch_size=s.event_batch_size,
        max_queue_size=s.max_event_queue_size,
    )


def make_sync(
    s: Settings,
    transport: Transport | None,
    store: RulesetStore,
    fleet_cache: RedisCache | None,
    after_first: Callable[[], None] | None,
) -> Any:
    """The sync for ``fetch_mode``: a Poller, a Streamer, or a Fleet over a shared Redis."""
    if fleet_cache is not None:
        return _fleet(s, transport, store, fleet_cache, after_first)
    assert transport is not None
    if s.fetch_mode == "streaming":
        from ._stream import Streamer

        return Streamer(transport, store, s.polling_interval, after_first=after_first)
    return Poller(
        transport.fetch_ruleset,
        store,
        s.polling_interval,
        after_first=after_first,
        abort=transport.abort,
    )


def _fleet(
    s: Settings,
    transport: Transport | None,
    store: RulesetStore,
    cache: RedisCache,
    before: Callable[[], None] | None,
) -> Any:
    """The fleet sync: lead (this process fetches for all) or follow the shared Redis."""
    from ._fleet import Fleet
    from .redis import environment_key

    def held() -> int | None:
        ruleset = store.ruleset
        return None if ruleset is EMPTY_RULESET else ruleset.version

    def make_inner(sink: SyncSink) -> Inner:
        assert transport is not None
        if s.fetch_mode == "streaming":
            from ._stream import Streamer

            return Streamer(transport, sink, s.polling_interval)
        return Poller(transport.fetch_ruleset, sink, s.polling_interval, abort=transport.abort)

    follow_only = s.fetch_mode == "cache" or transport is None
    return Fleet(
        cache,
        environment_key(s.api_key),
        store,
        interval=s.polling_interval,
        held=held,
        make_inner=None if follow_only else make_inner,
        before_first=before,
    )


def make_health(s: Settings, store: RulesetStore) -> Loop | None:
    """A ``phaseflag-health`` timer checking the data's age when max_staleness is set, so
    that staleness shows even when no sync thread gets to report it."""
    limit = s.max_staleness
    if limit is None:
        return None
    period = min(limit / 4, 60.0)

    def check() -> float:
        store.check_staleness(time.time())
        return period

    return Loop("health", check)
