"""Analytics events: a bounded queue of custom events, lock-free evaluation counters, and
the ``phaseflag-events`` thread that posts both to ``/sdk/events`` in batches.
"""

from __future__ import annotations

import enum
import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from ._backoff import Backoff
from ._errors import ConfigError, TransportError
from ._loop import Loop
from ._version import __version__
from .types import EvaluationEvent

__all__ = ["EventProcessor", "EventStats"]

_log = logging.getLogger("phaseflag")

_SDK_NAME: Final = "phaseflag-python"
_BACKOFF_BASE: Final = 1.0
_BACKOFF_CAP: Final = 300.0

_Send = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class EventStats:
    """Custom-event counters of an EventProcessor at one moment.

    ``sent``: delivered (the API answered 2xx). ``dropped``: discarded because the queue
    was full (the oldest go first). ``failed``: rejected by the API (400, still 413 on
    its own, or not serialisable) and not retried. ``queued``: waiting, including a batch
    held for retry. Once nothing is queued, ``sent + dropped + failed`` equals the number
    of ``track()`` calls. Summary events are not counted here.
    """

    sent: int
    dropped: int
    failed: int
    queued: int


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class _Outcome(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"  # 429, 5xx, 408, network: keep the batch, back off
    SPLIT = "split"  # 413 or an unexpected error: halve the batch to isolate the culprit
    REJECTED = "rejected"  # any other 4xx: retrying cannot help


class EventProcessor:
    """Queue custom events and evaluation counts; post them in batches from one thread.

    ``send(payload)`` POSTs one ``{"sdk": ..., "events": [...]}`` payload and raises
    TransportError on failure. A 429, 408, 5xx or network error keeps the batch for a
    retry after a backoff (honouring ``retry_after``); a 400 (or any other 4xx) drops it
    with a warning; a 413 halves the batch until a single event that is still too large
    is dropped. Events are sent exactly once and in order once the endpoint recovers.

    Memory is bounded: at most ``max_queue_size`` events wait in the queue (when it is
    full the oldest is dropped and counted), plus the one batch held for retry. During
    an outage that batch stays at the head of the line and new events queue behind it.

    ``track()`` and ``count()`` are lock-free and never raise; ``flush()``, ``stop()``
    and the flusher thread serialise on a lock held only while sending, so no event is
    sent twice. All methods are thread-safe. Raises ConfigError for a bad option.
    """

    def __init__(
        self,
        send: _Send,
        *,
        flush_interval: float = 30.0,
        batch_size: int = 100,
        max_queue_size: int = 10_000,
    ) -> None:
        if not (math.isfinite(flush_interval) and flush_interval > 0):
            raise ConfigError(
                "event_flush_interval", f"must be > 0 seconds, got {flush_interval!r}"
            )
        if batch_size < 1:
            raise ConfigError("event_batch_size", f"must be >= 1, got {batch_size!r}")
        if max_queue_size < 1:
            raise ConfigError("max_queue_size", f"must be >= 1, got {max_queue_size!r}")
        self._send = send
        self._flush_interval = float(flush_interval)
        self._batch_size = batch_size
        self._max_queue_size = max_queue_size
        # A full queue wakes the flusher too, even when batch_size is larger.
        self._wake_at = min(batch_size, max_queue_size)
        self._state = _State.NEW
        self._loop = Loop("events", self._step)
        # Touched by track()/count() without a lock (single deque/dict/count operations
        # are atomic under the GIL).
        self._queue: deque[EvaluationEvent] = deque()
        self._wake_pending = False
        self._drops = itertools.count()
        self._counts: dict[str, dict[str | None, itertools.count[int]]] = {}
        # Owned by whoever holds _send_lock.
        self._send_lock = threading.Lock()
        self._outbox: deque[dict[str, Any]] = deque()
        self._outbox_events = 0
        self._summary_pending = False
        self._seen: dict[tuple[str, str | None], int] = {}
        self._window_start_ms = _now_ms()
        self._sent = 0
        self._failed = 0
        self._rejections = 0
        self._drops_warned = 0
        self._backoff = Backoff(min(_BACKOFF_BASE, self._flush_interval), _BACKOFF_CAP)
        self._retry_at = 0.0
        self._next_flush = 0.0
        # Serialises readers of the drop counter (see _dropped()).
        self._read_lock = threading.Lock()
        self._drop_reads = 0

    # -- hot paths: no lock, O(1), never raise ------------------------------------------

    def track(self, event: EvaluationEvent) -> None:
        """Queue one custom event; O(1), lock-free, never blocks or raises.

        When the queue is full the oldest event is dropped (and counted in ``dropped``).
        Once ``batch_size`` events wait (or the queue is full), the flusher is woken.
        """
        queue = self._queue
        queue.append(event)
        size = len(queue)
        if size >= self._wake_at:
            if size > self._max_queue_size:
                try:
                    queue.popleft()
                except IndexError:  # the flusher emptied it meanwhile: nothing dropped
                    return
                next(self._drops)
            if not self._wake_pending:
                self._wake_pending = True
                self._loop.wake()

    def count(self, flag_key: str, variation_key: str | None) -> None:
        """Count one evaluation of ``flag_key`` serving ``variation_key`` for the summary.

        Lock-free (about 70 ns): ``next()`` on an ``itertools.count`` is atomic under
        the GIL, and the flusher reads a counter by calling ``next()`` itself and
        subtracting its own calls, so no count is lost or counted twice. The counters
        live as long as the processor (one per flag and variation served).
        """
        try:
            next(self._counts[flag_key][variation_key])
        except KeyError:
            # setdefault is atomic: racing first calls share whichever counter wins.
            by_variation = self._counts.setdefault(flag_key, {})
            next(by_variation.setdefault(variation_key, itertools.count()))

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the ``phaseflag-events`` thread; a no-op while it runs."""
        if self._state is _State.RUNNING:
            return
        self._next_flush = time.monotonic() + self._flush_interval
        self._state = _State.RUNNING
        self._loop.start()

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop the thread, then send what is left; True when all of it was delivered.

        Bounded by about ``timeout`` seconds: no batch is started after the deadline
        (the first always is), though one ``send`` in flight runs to its own timeout.
        Events still undelivered are logged and stay queued for a later ``flush()``.
        """
        deadline = time.monotonic() + timeout
        joined = self._loop.stop(timeout)
        self._state = _State.STOPPED
        if not self._send_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            _log.warning("phaseflag: a send was still running at stop(); events not flushed")
            return False
        try:
            delivered = self._flush_locked(deadline)
        finally:
            self._send_lock.release()
        if not delivered:
            left = self.stats().queued
            if left:
                _log.warning("phaseflag: %d analytics events were not delivered at stop()", left)
        return delivered and joined

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued now (and the evaluation summary), in batches, at once.

        Returns True when all of it was delivered; False when a batch failed (a retryable
        batch stays queued) or ``timeout`` ran out. Ignores the retry backoff, since the
        caller asked. Waits for a send in progress on another thread. Never raises.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._send_lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            return False
        try:
            return self._flush_locked(deadline)
        finally:
            self._send_lock.release()

    def stats(self) -> EventStats:
        """The current counters (see EventStats); thread-safe."""
        return EventStats(
            sent=self._sent,
            dropped=self._dropped(),
            failed=self._failed,
            queued=len(self._queue) + self._outbox_events,
        )

    def reset_after_fork(self) -> None:
        """Make a forked child's processor usable; call it in the child only.

        The child's copies of queued events, the retry batch and evaluation counts belong
        to the parent, which sends them: the child forgets them (so nothing is sent twice)
        and starts from zero counters. Locks are re-created (the parent's may have been
        held at the fork) and the flusher thread is restarted if it was running.
        """
        self._send_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._queue.clear()
        self._outbox.clear()
        self._outbox_events = 0
        self._summary_pending = False
        for flag_key, by_variation in self._counts.copy().items():
            for variation_key, counter in by_variation.copy().items():
                self._seen[flag_key, variation_key] = next(counter) + 1
        self._window_start_ms = _now_ms()
        self._drops = itertools.count()
        self._drop_reads = 0
        self._drops_warned = 0
        self._sent = 0
        self._failed = 0
        self._wake_pending = False
        self._backoff.reset()
        self._retry_at = 0.0
        self._loop.reset_after_fork()
        if self._state is _State.RUNNING:
            self._state = _State.NEW
            self.start()

    # -- the flusher ----------------------------------------------------------------------

    def _step(self) -> float:
        """One run of the flusher thread; returns the seconds until the next one."""
        now = time.monotonic()
        if now < self._retry_at:
            return self._retry_at - now
        if (
            now >= self._next_flush
            or self._wake_pending
            or self._outbox
            or len(self._queue) >= self._wake_at
        ):
            self._next_flush = now + self._flush_interval
            with self._send_lock:
                self._flush_locked(None, interruptible=True)
            now = time.monotonic()
        if self._retry_at > now:
            return self._retry_at - now
        return max(0.0, self._next_flush - now)

    def _flush_locked(self, deadline: float | None, *, interruptible: bool = False) -> bool:
        """Send the retry batch, the window's summary and what is queued now (not later).

        The caller holds ``_send_lock``. Returns True when everything was delivered.
        """
        self._warn_drops()
        self._wake_pending = False
        self._rejections = 0
        failed_before = self._failed
        if not self._summary_pending:
            summary = self._take_summary()
            if summary is not None:
                self._outbox.append(summary)
                self._summary_pending = True
        budget = len(self._queue)  # events tracked during the flush wait for the next one
        limit = self._batch_size
        first = True
        while True:
            budget -= self._fill(limit, budget)
            if not self._outbox:
                return self._failed == failed_before
            if not first and (
                (deadline is not None and time.monotonic() >= deadline)
                or (interruptible and self._loop.stopping)
            ):
                return False
            first = False
            size = min(limit, len(self._outbox))
            outcome = self._post(list(itertools.islice(self._outbox, size)))
            if outcome is _Outcome.RETRY:
                return False
            if outcome is _Outcome.SPLIT and size > 1:
                limit = (size + 1) // 2  # and stays smaller for the rest of this flush
                continue
            self._settle(size, delivered=outcome is _Outcome.DELIVERED)

    def _fill(self, limit: int, budget: int) -> int:
        """Move queued events into the outbox until it holds ``limit``; returns how many."""
        taken = 0
        outbox, queue = self._outbox, self._queue
        while len(outbox) < limit and taken < budget:
            try:
                event = queue.popleft()
            except IndexError:  # track() dropped some since the budget was set
                return budget
            taken += 1
            try:
                outbox.append(event.to_dict())
            except Exception as exc:
                self._failed += 1
                self._warn_rejected("an analytics event is not valid (%r); dropped", exc)
                continue
            self._outbox_events += 1
        return taken

    def _settle(self, size: int, *, delivered: bool) -> None:
        """Remove the first ``size`` outbox items, counting them as sent or failed."""
        events = 0
        for _ in range(size):
            if self._outbox.popleft()["kind"] == "summary":
                self._summary_pending = False
            else:
                events += 1
        self._outbox_events -= events
        if delivered:
            self._sent += events
        else:
            self._failed += events

    def _post(self, batch: list[dict[str, Any]]) -> _Outcome:
        """Send one batch and classify the result; never raises."""
        payload = {"sdk": {"name": _SDK_NAME, "version": __version__}, "events": batch}
        try:
            self._send(payload)
        except TransportError as exc:
            status = exc.status
            if status is None or status in (408, 429) or status >= 500:
                self._schedule_retry(exc, len(batch))
                return _Outcome.RETRY
            if status == 413:
                if len(batch) == 1:
                    self._warn_rejected("an analytics event is too large (HTTP 413); dropped")
                return _Outcome.SPLIT
            self._warn_rejected(
                "the API rejected %d analytics events (HTTP %s); dropped: %s",
                len(batch),
                status,
                exc,
            )
            return _Outcome.REJECTED
        except Exception as exc:
            # Most likely an event that does not serialise: halving isolates it.
            if len(batch) == 1:
                self._warn_rejected("could not send an analytics event (%r); dropped", exc)
            return _Outcome.SPLIT
        if self._backoff.attempts:
            _log.info(
                "phaseflag: analytics events delivered again after %d failed attempts",
                self._backoff.attempts,
            )
            self._backoff.reset()
        self._retry_at = 0.0
        return _Outcome.DELIVERED

    def _warn_rejected(self, message: str, *args: object) -> None:
        """Log a dropped batch: a WARNING for the first of a flush, DEBUG for the rest."""
        self._rejections += 1
        level = logging.WARNING if self._rejections == 1 else logging.DEBUG
        _log.log(level, "phaseflag: " + message, *args)

    def _schedule_retry(self, exc: TransportError, size: int) -> None:
        retry_after = getattr(exc, "retry_after", None)
        if not isinstance(retry_after, (int, float)):
            retry_after = None
        delay = self._backoff.next_delay(retry_after)
        self._retry_at = time.monotonic() + delay
        # One warning per outage; the rest at DEBUG so a long outage does not flood logs.
        level = logging.WARNING if self._backoff.attempts == 1 else logging.DEBUG
        _log.log(
            level,
            "phaseflag: could not send %d analytics events (%s); retrying in %.1f s",
            size,
            exc,
            delay,
        )

    def _take_summary(self) -> dict[str, Any] | None:
        """Read every counter and return the window's summary event (None if no counts)."""
        end = _now_ms()
        start, self._window_start_ms = self._window_start_ms, end
        counters: list[dict[str, Any]] = []
        seen = self._seen
        # copy() is one atomic step, so count() may add keys while we iterate.
        for flag_key, by_variation in self._counts.copy().items():
            for variation_key, counter in by_variation.copy().items():
                key = (flag_key, variation_key)
                reading = next(counter)  # = counts so far + our own earlier readings
                previous = seen.get(key, 0)
                seen[key] = reading + 1
                if reading > previous:
                    counters.append(
                        {
                            "flag_key": flag_key,
                            "variation_key": variation_key,
                            "count": reading - previous,
                        }
                    )
        if not counters:
            return None
        return {"kind": "summary", "start": start, "end": max(start, end), "counters": counters}

    def _dropped(self) -> int:
        # next() advances the counter, so subtract our own readings (under a lock, since
        # two readers would otherwise race on _drop_reads).
        with self._read_lock:
            value = next(self._drops) - self._drop_reads
            self._drop_reads += 1
        return value

    def _warn_drops(self) -> None:
        """Log once per flush window that events were dropped, never once per event."""
        dropped = self._dropped()
        if dropped > self._drops_warned:
            _log.warning(
                "phaseflag: the analytics event queue was full (max_queue_size=%d); "
                "dropped %d events since the last flush",
                self._max_queue_size,
                dropped - self._drops_warned,
            )
            self._drops_warned = dropped


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
