"""Analytics events: a bounded queue of custom events and the ``phaseflag-events`` thread
that posts them, with the evaluation counters' summaries (``_counters``), to
``/sdk/events`` in batches.
"""

from __future__ import annotations

import enum
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from ._backoff import Backoff
from ._config import positive_int, positive_seconds
from ._counters import EvaluationCounters, LockFreeCount
from ._errors import TransportError
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
    was full (the oldest go first), still undelivered when ``stop()`` returned, or tracked
    after it. ``failed``: rejected by the API (400, still 413 on its own, or not
    serialisable) and not retried. ``queued``: waiting, including a batch held for retry.
    Once nothing is queued, ``sent + dropped + failed`` equals the number of ``track()``
    calls. Summary events are not counted here.
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
    with a warning; a 413 halves the batch until a single event that is still too large is
    dropped. When that happens before any batch got through, the API may refuse everything:
    the flush stops and backs off, so an API answering 413 to everything costs about
    log2(batch_size) + 1 requests per backoff step, never one per event.
    Events are sent exactly once and in order once the endpoint recovers.

    Memory is bounded: at most ``max_queue_size`` events wait in the queue (when it is
    full the oldest is dropped and counted), plus the one batch held for retry. During
    an outage that batch stays at the head of the line and new events queue behind it.

    ``track()`` and ``count()`` are lock-free and never raise; ``flush()``, ``stop()``
    and the flusher thread serialise on a lock held only while sending, so no event is
    sent twice. All methods are thread-safe. Raises ConfigError for a bad option (named
    as the client's option, checked by ``_config``'s validators).
    """

    def __init__(
        self,
        send: _Send,
        *,
        flush_interval: float = 30.0,
        batch_size: int = 100,
        max_queue_size: int = 10_000,
    ) -> None:
        flush_interval = positive_seconds("event_flush_interval", flush_interval)
        batch_size = positive_int("event_batch_size", batch_size)
        max_queue_size = positive_int("max_event_queue_size", max_queue_size)
        self._send = send
        self._flush_interval = flush_interval
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
        self._drops = LockFreeCount()
        self.counters: Final = EvaluationCounters()
        # The read path's handle is counters.by_flag; _counts is its older alias.
        self._counts = self.counters.by_flag
        # Owned by whoever holds _send_lock.
        self._send_lock = threading.Lock()
        self._outbox: deque[dict[str, Any]] = deque()
        self._outbox_events = 0
        self._summary_pending = False
        self._window_start_ms = _now_ms()
        self._sent = 0
        self._failed = 0
        self._discarded = 0  # undelivered at stop(): counted as dropped
        self._rejections = 0
        self._drops_warned = 0
        self._backoff = Backoff(min(_BACKOFF_BASE, self._flush_interval), _BACKOFF_CAP)
        self._retry_at = 0.0
        self._next_flush = 0.0
        self._too_large = False  # the last SPLIT was a 413 (back off) rather than a bad event
        self._abandoned = False  # stop() returned while a send was in flight

    # -- hot paths: no lock, O(1), never raise ------------------------------------------

    def track(self, event: EvaluationEvent) -> None:
        """Queue one custom event; O(1), lock-free, never blocks or raises.

        When the queue is full the oldest event is dropped (and counted in ``dropped``).
        Once ``batch_size`` events wait (or the queue is full), the flusher is woken.
        """
        if self._state is _State.STOPPED:  # nothing would ever send it
            self._drops.add()
            return
        queue = self._queue
        queue.append(event)
        size = len(queue)
        if size >= self._wake_at:
            if size > self._max_queue_size:
                try:
                    queue.popleft()
                except IndexError:  # the flusher emptied it meanwhile: nothing dropped
                    return
                self._drops.add()
            if not self._wake_pending:
                self._wake_pending = True
                self._loop.wake()

    def count(self, flag_key: str, variation_key: str | None) -> None:
        """Count one evaluation of ``flag_key`` serving ``variation_key`` for the summary
        (lock-free; see EvaluationCounters)."""
        self.counters.count(flag_key, variation_key)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the ``phaseflag-events`` thread; a no-op while it runs."""
        if self._state is _State.RUNNING:
            return
        self._abandoned = False
        self._next_flush = time.monotonic() + self._flush_interval
        self._state = _State.RUNNING
        self._loop.start()

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop the thread, then send what is left; True when all of it was delivered.

        Bounded by about ``timeout`` seconds: no batch is started after the deadline
        (the first always is), though one ``send`` in flight runs to its own timeout.
        Events still undelivered then are counted as dropped (and logged), never left
        queued; events tracked after ``stop()`` are dropped too, until ``start()``.
        """
        deadline = time.monotonic() + timeout
        self._state = _State.STOPPED
        joined = self._loop.stop(timeout)
        if not self._send_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            # The flusher is still sending: it discards what is left when its send returns.
            self._abandoned = True
            left = self._discard_queue()
            _log.warning(
                "phaseflag: a send was still running at stop(); %d queued analytics events "
                "counted as dropped",
                left,
            )
            return False
        try:
            delivered = self._flush_locked(deadline)
            self._discard_leftovers()
        finally:
            self._send_lock.release()
        return delivered and joined

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued now (and the evaluation summary), in batches, at once.

        Returns True only when every event queued at the call (in a batch held for retry
        or being sent by the flusher included) was accepted; False when one was rejected,
        dropped or is still waiting (a retryable batch stays queued), or ``timeout`` ran
        out. Ignores the retry backoff, since the caller asked. Never raises.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        lost_before = self._failed + self._dropped()
        target = self._sent + lost_before + len(self._queue) + self._outbox_events
        if not self._send_lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            return False
        try:
            delivered = self._flush_locked(deadline)
        finally:
            self._send_lock.release()
        lost = self._failed + self._dropped()
        return delivered and lost == lost_before and self._sent + lost >= target

    def stats(self) -> EventStats:
        """The current counters (see EventStats); thread-safe."""
        return EventStats(
            sent=self._sent,
            dropped=self._dropped(),
            failed=self._failed,
            queued=len(self._queue) + self._outbox_events,
        )

    def reset_after_fork(self) -> None:
        """Make a forked child's processor usable; call it in the child only (no lock taken).

        The child's copies of queued events, the retry batch and evaluation counts belong
        to the parent, which sends them: the child forgets them (so nothing is sent twice)
        and starts from zero counters. Locks are re-created (the parent's may have been
        held at the fork); ``start()`` then starts a new flusher thread.
        """
        self._send_lock = threading.Lock()
        self._queue.clear()
        self._outbox.clear()
        self._outbox_events = 0
        self._summary_pending = False
        self.counters.forget()
        self._window_start_ms = _now_ms()
        self._drops.reset()
        self._drops_warned = 0
        self._sent = 0
        self._failed = 0
        self._discarded = 0
        self._wake_pending = False
        self._backoff.reset()
        self._retry_at = 0.0
        self._loop.reset_after_fork()
        if self._state is _State.RUNNING:
            self._state = _State.NEW

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
                if self._abandoned:  # stop() gave up waiting for this send
                    self._discard_leftovers()
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
        accepted = False  # has the API taken a batch in this flush?
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
            accepted = accepted or outcome is _Outcome.DELIVERED
            if outcome is _Outcome.SPLIT and self._too_large and not accepted:
                # One event alone is still too large and nothing got through: the API may
                # refuse everything, so back off instead of spending a request per event.
                self._schedule_retry(TransportError("every batch was too large", 413), size)
                return False

    def _discard_queue(self) -> int:
        """Count every event still in the queue as dropped (lock-free); returns how many."""
        left = 0
        while True:
            try:
                self._queue.popleft()
            except IndexError:
                break
            left += 1
        self._discarded += left
        return left

    def _discard_leftovers(self) -> None:
        """After the last flush of stop(): what was not delivered is counted as dropped."""
        in_outbox = self._outbox_events
        self._outbox.clear()
        self._outbox_events = 0
        self._summary_pending = False
        self._discarded += in_outbox
        left = in_outbox + self._discard_queue()
        if left:
            _log.warning(
                "phaseflag: %d analytics events were not delivered by stop(); counted as dropped",
                left,
            )

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
                self._too_large = True
                return _Outcome.SPLIT
            self._warn_rejected(
                "the API rejected %d analytics events (HTTP %s); dropped: %s",
                len(batch),
                status,
                exc,
            )
            return _Outcome.REJECTED
        except Exception as exc:
            # Most likely an event that does not serialise: halving (at once) isolates it.
            if len(batch) == 1:
                self._warn_rejected("could not send an analytics event (%r); dropped", exc)
            self._too_large = False
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
        """The window's summary event from the evaluation counters (None if no counts)."""
        end = _now_ms()
        start, self._window_start_ms = self._window_start_ms, end
        counters = self.counters.take()
        if not counters:
            return None
        return {"kind": "summary", "start": start, "end": max(start, end), "counters": counters}

    def _dropped(self) -> int:
        return self._drops.value() + self._discarded

    def _warn_drops(self) -> None:
        """Log once per flush window that events were dropped, never once per event."""
        dropped = self._drops.value()
        if dropped > self._drops_warned:
            _log.warning(
                "phaseflag: the analytics event queue was full (max_event_queue_size=%d); "
                "dropped %d events since the last flush",
                self._max_queue_size,
                dropped - self._drops_warned,
            )
            self._drops_warned = dropped


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
