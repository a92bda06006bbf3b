"""The poller: keep the ruleset fresh with ETag polling, in its own ``phaseflag-sync`` thread
or, for the streamer, as the fallback while the stream is down (same thread as the stream).

Timing follows the one RetryPolicy (``_backoff``): 429/5xx/network errors and deadlines back
off exponentially with full jitter (honouring ``Retry-After`` up to MAX_RETRY_AFTER), 401/403
switch to the auth backoff (30-60 s doubling to an hour); when all is well the interval
resumes with ±10% jitter.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

from ._backoff import MAX_RETRY_AFTER, RETRY_BASE, RETRY_CAP, RetryPolicy, jittered
from ._errors import RulesetError, TransportError
from ._loop import Loop

if TYPE_CHECKING:
    from ._transport import FetchResult

__all__ = ["MAX_BACKOFF", "MAX_RETRY_AFTER", "Poller", "SyncSink"]

#: Longest wait between retries of a failing (429/5xx/network) fetch (RetryPolicy's cap).
MAX_BACKOFF: Final = RETRY_CAP

_log = logging.getLogger("phaseflag")


class SyncSink(Protocol):
    """What a synchroniser reports to (the client's store)."""

    def apply_document(self, raw: bytes, source: str) -> None:
        """Validate, compile and swap in a ruleset; raises RulesetError to reject it."""

    def sync_succeeded(self) -> None:
        """A fetch completed (200 applied, or 304)."""

    def sync_failed(self, error: Exception) -> None:
        """A fetch failed or its ruleset was rejected."""


class Poller:
    """Fetch the ruleset every ``interval`` seconds in a ``phaseflag-sync`` thread.

    ``after_first`` runs once, right after the first poll (the bootstrap URL's fetch, so
    that it never delays the first live fetch).

    ``abort(thread)`` (the transport's) cuts a request of that thread short, so that
    ``stop()`` returns at once with a poll in flight. ``retry`` defaults to a RetryPolicy
    starting at ``min(RETRY_BASE, interval)``.
    """

    def __init__(
        self,
        fetch: Callable[[str | None], FetchResult],
        sink: SyncSink,
        interval: float,
        *,
        after_first: Callable[[], None] | None = None,
        rng: random.Random | None = None,
        retry: RetryPolicy | None = None,
        abort: Callable[[threading.Thread | None], None] | None = None,
    ) -> None:
        self._fetch = fetch
        self._sink = sink
        self._interval = interval
        self._after_first = after_first
        self._rng = rng or random.Random()
        self._retry = retry or RetryPolicy(base=min(RETRY_BASE, interval), rng=self._rng)
        self._abort = abort
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
        """Stop the thread, interrupting any wait and any poll in flight; True when it ended."""
        return self.loop.stop(timeout, abort=self._abort)

    def step(self) -> float:
        """Poll, then run ``after_first`` once; returns how long to wait before the next."""
        delay = self.poll()
        if self._after_first is not None and not self.loop.stopping:
            after, self._after_first = self._after_first, None
            after()
        return delay

    def poll(self) -> float:
        """One fetch (applied when new); returns how long to wait before the next."""
        try:
            result = self._fetch(self.etag)
        except RulesetError as exc:  # over the size limit: refused unread
            self._sink.sync_failed(exc)
            # Back off as for a server error, at least an interval: each retry could cost
            # a 10 MiB download.
            return max(self._retry.delay(exc), jittered(self._interval, rng=self._rng))
        except Exception as exc:  # TransportError; anything else is a bug, never a spin
            if not isinstance(exc, TransportError):
                _log.error("phaseflag: unexpected error fetching the ruleset", exc_info=True)
            self._sink.sync_failed(exc)
            return self._retry.delay(exc)
        self._retry.reset()
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
