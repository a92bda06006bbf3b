"""Relay mode (``phaseflag serve --upstream URL``): serve what an upstream PhaseFlag API serves.

The ruleset comes through the SDK's own sync: a PhaseFlagClient with ``base_url`` set to
the upstream (streaming or polling, ETag, backoff, the last good copy kept on errors).
Events posted by local SDKs go upstream through that client's event pipeline (bounded
queue, retries with backoff, drops counted). With ``redis_url`` the client's cache is a
RedisCache, so what the relay serves is also published for cache-mode processes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Final

from .._errors import ConfigError
from ..types import EvaluationEvent
from ._watch import Snapshot, build_snapshot, report_invalid_flags

__all__ = ["RelaySource", "relay_source"]

_log = logging.getLogger("phaseflag")

#: Evaluations of one flag variation taken from one received summary (more are dropped).
_MAX_SUMMARY_COUNT: Final = 100_000


class RelaySource:
    """A served-ruleset source that follows an upstream API through a PhaseFlagClient.

    ``load()`` starts the client and waits up to ``ready_timeout`` seconds for the first
    ruleset (ConfigError naming the upstream's last error when none arrives). After that
    every ruleset the client applies becomes the served snapshot (and wakes the streams
    via ``on_change``); while the upstream fails, the last good one keeps being served
    and ``last_error`` says why. ``forward(events)`` hands received events to the client's
    event pipeline; ``forward_stats()`` is (handed over, dropped or rejected upstream).
    """

    def __init__(
        self,
        upstream: str,
        api_key: str,
        *,
        fetch_mode: str = "streaming",
        redis_url: str | None = None,
        ready_timeout: float = 10.0,
        polling_interval: float = 30.0,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self.upstream = upstream
        self._api_key = api_key
        self._fetch_mode = fetch_mode
        self._redis_url = redis_url
        self._ready_timeout = ready_timeout
        self._polling_interval = polling_interval
        self._client_options = dict(client_options or {})
        self.on_change: Callable[[Snapshot], None] | None = None
        self._client: Any = None
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()
        self._handed = 0
        self._over_cap = 0
        self.reloads = 0
        self.reload_errors = 0

    def __repr__(self) -> str:
        return f"RelaySource({self.upstream!r})"

    @property
    def description(self) -> str:
        """Where the ruleset comes from, for ``/healthz``."""
        return f"upstream {self.upstream}" + (" (published to Redis)" if self._redis_url else "")

    @property
    def snapshot(self) -> Snapshot:
        """The snapshot being served; ``load()`` must have succeeded."""
        snapshot = self._snapshot
        if snapshot is None:
            raise RuntimeError("RelaySource.load() has not succeeded yet")
        return snapshot

    @property
    def last_error(self) -> str | None:
        """The upstream's last sync error while it keeps failing, else None."""
        if self._client is None:
            return None
        status = self._client.status()
        if status.consecutive_failures and status.last_error:
            return f"upstream sync failing: {status.last_error}"
        return None

    def load(self) -> Snapshot:
        """Start following the upstream; returns the first snapshot."""
        from .._client import PhaseFlagClient

        options = dict(self._client_options)
        if self._redis_url is not None:
            from ..redis import RedisCache

            options["cache"] = RedisCache(self._redis_url)
        client = PhaseFlagClient(
            api_key=self._api_key,
            base_url=self.upstream,
            fetch_mode=self._fetch_mode,
            polling_interval=self._polling_interval,
            **options,
        )
        client.on("change", self._changed)
        client.on("error", self._failed)
        self._client = client
        client.start()
        if not client.wait_until_ready(self._ready_timeout):
            error = client.status().last_error or "no answer"
            client.stop()
            self._client = None
            raise ConfigError(
                "upstream",
                f"no ruleset from {self.upstream} within {self._ready_timeout:g} s: {error}",
                "check the URL and PHASEFLAG_API_KEY",
            )
        self._refresh()
        snapshot = self.snapshot
        _log.info(
            "phaseflag serve: relaying %s: ruleset version %d (%d flags)",
            self.upstream,
            snapshot.version,
            len(snapshot.ruleset.flags),
        )
        return snapshot

    def start(self) -> None:
        """Nothing to start: the client runs from ``load()``."""

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the client (its last event batch is flushed by its own stop)."""
        client, self._client = self._client, None
        if client is not None:
            client.stop()

    def check(self, *, force: bool = False) -> bool:
        """Apply the client's current ruleset now; True when it was new."""
        return self._refresh()

    # -- events --------------------------------------------------------------------------------

    def forward(self, events: list[dict[str, Any]]) -> None:
        """Queue received events for the upstream (custom events and summary counts)."""
        client = self._client
        if client is None:
            return
        pipeline = client._events  # the client's own EventProcessor
        if pipeline is None:
            return
        for event in events:
            kind = event.get("kind")
            if kind == "summary":
                self._forward_summary(pipeline, event)
            elif kind == "custom" and isinstance(event.get("flag_key"), str):
                try:
                    custom = _custom_event(event)
                except (TypeError, ValueError):
                    with self._lock:
                        self._over_cap += 1
                    continue
                pipeline.track(custom)
                with self._lock:
                    self._handed += 1

    def _forward_summary(self, pipeline: Any, event: dict[str, Any]) -> None:
        for counter in event.get("counters") or ():
            if not isinstance(counter, dict) or not isinstance(counter.get("flag_key"), str):
                continue
            count = counter.get("count")
            if not isinstance(count, int) or count <= 0:
                continue
            variation = counter.get("variation_key")
            variation = variation if isinstance(variation, str) else None
            taken = min(count, _MAX_SUMMARY_COUNT)
            for _ in range(taken):
                pipeline.count(counter["flag_key"], variation)
            with self._lock:
                self._handed += taken
                self._over_cap += count - taken

    def forward_stats(self) -> tuple[int, int]:
        """(events handed to the upstream pipeline, events dropped or rejected)."""
        client = self._client
        dropped = self._over_cap
        if client is not None and client._events is not None:
            stats = client._events.stats()
            dropped += stats.dropped + stats.failed
        return self._handed, dropped

    # -- internals -----------------------------------------------------------------------------

    def _changed(self, event: Any) -> None:
        if self._refresh():
            self.reloads += 1

    def _failed(self, error: Any) -> None:
        self.reload_errors += 1

    def _refresh(self) -> bool:
        client = self._client
        if client is None:
            return False
        ruleset = client.ruleset
        with self._lock:
            current = self._snapshot
            if current is not None and current.ruleset is ruleset:
                return False
            snapshot = build_snapshot(ruleset)
            self._snapshot = snapshot
        if current is not None:
            _log.info(
                "phaseflag serve: upstream now serves ruleset version %d (%d flags)",
                snapshot.version,
                len(snapshot.ruleset.flags),
            )
        report_invalid_flags(snapshot)
        if current is not None and self.on_change is not None:
            self.on_change(snapshot)
        return current is not None


def _custom_event(event: dict[str, Any]) -> EvaluationEvent:
    metadata = event.get("metadata")
    timestamp = event.get("timestamp")
    value = event.get("value")
    user_id = event.get("user_id")
    variation = event.get("variation_key")
    extra: dict[str, Any] = {}
    if isinstance(timestamp, int):
        extra["timestamp"] = timestamp
    return EvaluationEvent(
        flag_key=event["flag_key"],
        variation_key=variation if isinstance(variation, str) else None,
        user_id=user_id if isinstance(user_id, str) else None,
        metadata=metadata if isinstance(metadata, dict) else {},
        value=value if isinstance(value, (int, float)) and not isinstance(value, bool) else None,
        **extra,
    )


def relay_source(
    upstream: str, api_key: str, *, fetch_mode: str = "streaming", redis_url: str | None = None
) -> Callable[[], RelaySource]:
    """A factory making one RelaySource per serving process (``--workers`` forks first)."""

    def make() -> RelaySource:
        return RelaySource(upstream, api_key, fetch_mode=fetch_mode, redis_url=redis_url)

    return make
