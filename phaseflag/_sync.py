"""The poller: one ``phaseflag-sync`` thread keeping the ruleset fresh with ETag polling.

Backoff policy: 429/5xx/network errors back off exponentially with full jitter
(honouring ``Retry-After`` up to MAX_RETRY_AFTER), then the normal interval resumes
with ±10% jitter; 401/403 switch to a long backoff (one minute doubling to an hour)
so a bad key never hammers the API, yet a fixed key recovers without a restart.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

from ._backoff import AUTH_BACKOFF_BASE, AUTH_BACKOFF_CAP, MAX_RETRY_AFTER, Backoff, jittered
from ._errors import AuthenticationError, RulesetError, TransportError
from ._loop import Loop

if TYPE_CHECKING:
    from ._transport import FetchResult

__all__ = ["MAX_BACKOFF", "MAX_RETRY_AFTER", "Poller", "SyncSink"]

#: Longest wait between retries of a failing (429/5xx/network) fetch.
MAX_BACKOFF: Final = 300.0

_log = logging.getLogger("phaseflag")


class SyncSink(Protocol):
    """What a synchroniser reports to (the client)."""

    def apply_document(self, raw: bytes, source: str) -> None:
        """Validate, compile and swap in a ruleset; raises RulesetError to reject it."""

    def sync_succeeded(self) -> None:
        """A fetch completed (200 applied, or 304)."""

    def sync_failed(self, error: Exception) -> None:
        """A fetch failed or its ruleset was rejected."""


class Poller:
    """Fetch the ruleset every ``interval`` seconds in a ``phaseflag-sync`` thread."""

    def __init__(
        self,
        fetch: Callable[[str | None], FetchResult],
        sink: SyncSink,
        interval: float,
        *,
        before_first: Callable[[], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._fetch = fetch
        self._sink = sink
        self._interval = interval
        self._before_first = before_first
        self._rng = rng or random.Random()
        self._backoff = Backoff(min(1.0, interval), MAX_BACKOFF, rng=self._rng)
        self._auth_failures = 0
        self.etag: str | None = None
        self.loop = Loop("sync", self.step)

    @property
    def interval(self) -> float:
        """Seconds between fetches when all is well; setting it takes effect at once."""
        return self._interval

    @interval.setter
    def interval(self, seconds: float) -> None:
        self._interval = seconds
        self.loop.wake()

    def start(self) -> None:
        """Start the thread (idempotent)."""
        self.loop.start()

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop the thread, interrupting any wait; True when it has ended."""
        return self.loop.stop(timeout)

    def reset_after_fork(self) -> None:
        """Drop the parent's thread in a forked child (start() makes a new one)."""
        self.loop.reset_after_fork()

    def step(self) -> float:
        """One fetch; returns how long to wait before the next."""
        if self._before_first is not None:
            before, self._before_first = self._before_first, None
            before()
        try:
            result = self._fetch(self.etag)
        except AuthenticationError as exc:
            self._auth_failures += 1
            self._sink.sync_failed(exc)
            step = min(AUTH_BACKOFF_CAP, AUTH_BACKOFF_BASE * 2 ** (self._auth_failures - 1))
            return jittered(step, rng=self._rng)
        except TransportError as exc:
            self._sink.sync_failed(exc)
            delay = self._backoff.next_delay()
            retry_after = getattr(exc, "retry_after", None)
            if retry_after:
                delay = max(delay, min(float(retry_after), MAX_RETRY_AFTER))
            return delay
        except RulesetError as exc:  # over the size limit: refused unread
            self._sink.sync_failed(exc)
            # Back off as for a server error: each retry could cost a 10 MiB download.
            return max(self._backoff.next_delay(), jittered(self._interval, rng=self._rng))
        except Exception as exc:  # a bug, not the network: report it and back off, never spin
            _log.error("phaseflag: unexpected error fetching the ruleset", exc_info=True)
            self._sink.sync_failed(exc)
            return self._backoff.next_delay()
        self._backoff.reset()
        self._auth_failures = 0
        if not result.not_modified and result.body is not None:
            try:
                self._sink.apply_document(result.body, "live")
            except Exception as exc:  # RulesetError, or a compiler bug: keep the last good one
                if not isinstance(exc, RulesetError):
                    _log.error("phaseflag: unexpected error applying a ruleset", exc_info=True)
                self._sink.sync_failed(exc)
                return jittered(self._interval, rng=self._rng)
            self.etag = result.etag
        self._sink.sync_succeeded()
        return jittered(self._interval, rng=self._rng)
