"""The streamer: one ``phaseflag-stream`` thread holding a Server-Sent Events connection.

While the stream is down a fallback Poller keeps the ruleset fresh; the stream reconnects
with exponential backoff and full jitter (the long auth backoff after 401/403).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ._backoff import Backoff, auth_backoff
from ._errors import AuthenticationError, RulesetError, TransportError
from ._loop import Loop
from ._sse import SSEEvent
from ._sync import Poller, SyncSink
from ._transport import Transport

__all__ = ["RECONNECT_BASE", "RECONNECT_CAP", "Streamer"]

#: First ceiling (seconds) of the reconnect backoff after a stream drops.
RECONNECT_BASE: Final = 1.0
#: Largest wait (seconds) between reconnect attempts (401/403 use the longer auth backoff).
RECONNECT_CAP: Final = 60.0

# A connection that stayed up this long was healthy: the next drop starts the backoff afresh.
# Resetting on mere connection would let a server that accepts and drops at once be hammered.
_STABLE_AFTER: Final = 60.0
# stop() re-closes open streams this often while it waits, in case the thread opened one
# just after the previous close.
_ABORT_EVERY: Final = 0.05

_log = logging.getLogger("phaseflag")


class Streamer:
    """Keep the ruleset fresh from ``GET /sdk/stream`` in a ``phaseflag-stream`` thread.

    Each ``event: ruleset`` goes to ``sink.apply_document(data, "live")`` then
    ``sink.sync_succeeded()``; a rejected one (RulesetError) to ``sink.sync_failed`` while
    the last good ruleset stays. ``ping`` and unknown events only mark the stream alive.
    When the stream fails (``sink.sync_failed`` is told) or the server closes it, a fallback
    ``Poller`` (thread ``phaseflag-sync``, every ``polling_interval`` seconds) runs until the
    stream delivers its first event again; reconnects wait ``uniform(0, min(reconnect_cap,
    reconnect_base * 2**n))`` seconds, or the auth backoff (30 s to an hour) after 401/403.

    ``start()``/``stop()`` may be called from any thread; ``stop()`` closes a stream read
    blocked in the thread and joins every thread within ``timeout``. Never raises from the
    thread: every failure is reported to the sink. ``reconnect_base``/``reconnect_cap`` raise
    ValueError when not positive or when the cap is below the base.
    """

    def __init__(
        self,
        transport: Transport,
        sink: SyncSink,
        polling_interval: float,
        *,
        before_first: Callable[[], None] | None = None,
        rng: random.Random | None = None,
        reconnect_base: float = RECONNECT_BASE,
        reconnect_cap: float = RECONNECT_CAP,
    ) -> None:
        self._transport = transport
        self._sink = sink
        self._interval = polling_interval
        self._before_first = before_first
        self._rng = rng or random.Random()
        self._backoff = Backoff(reconnect_base, reconnect_cap, rng=self._rng)
        self._auth_backoff = auth_backoff(rng=self._rng)
        self._lock = threading.Lock()
        self._fallback: _Fallback | None = None
        self._retired: list[Poller] = []
        self._connected_at: float | None = None
        #: ``time.monotonic()`` of the last event received (pings included), or None.
        self.last_event_at: float | None = None
        self.loop = Loop("stream", self.step)

    @property
    def interval(self) -> float:
        """Seconds between fallback polls while the stream is down; setting it applies at once."""
        return self._interval

    @interval.setter
    def interval(self, seconds: float) -> None:
        self._interval = seconds
        with self._lock:
            if self._fallback is not None:
                self._fallback.poller.interval = seconds

    @property
    def polling(self) -> bool:
        """True while the fallback poller stands in for a stream that is down."""
        return self._fallback is not None

    def start(self) -> None:
        """Start the stream thread (idempotent)."""
        self.loop.start()

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop the stream thread and any fallback poller; True when every thread has ended.

        A read blocked on a silent stream is interrupted by closing its response, so this
        returns within ``timeout`` unless a poll or ``before_first`` is mid-request.
        """
        deadline = time.monotonic() + timeout
        ended = self.loop.stop(0.0)
        while not ended:
            self._transport.close_streams()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            ended = self.loop.stop(min(_ABORT_EVERY, remaining))
        with self._lock:
            pollers = self._retired
            self._retired = []
            if self._fallback is not None:
                self._fallback.gate.close()
                pollers.append(self._fallback.poller)
                self._fallback = None
        for poller in pollers:
            ended = poller.stop(max(0.0, deadline - time.monotonic())) and ended
        return ended

    def reset_after_fork(self) -> None:
        """Drop the parent's threads in a forked child (start() makes new ones)."""
        self.loop.reset_after_fork()
        self._lock = threading.Lock()
        self._fallback = None
        self._retired = []
        self._connected_at = None

    def step(self) -> float:
        """One connection, read until it ends; returns how long to wait before reconnecting."""
        if self._before_first is not None:
            before, self._before_first = self._before_first, None
            before()
        if self.loop.stopping:
            return 0.0
        self._connected_at = None
        error = self._read_once()
        if self.loop.stopping:
            return 0.0
        connected_at = self._connected_at
        if connected_at is not None and time.monotonic() - connected_at >= _STABLE_AFTER:
            self._backoff.reset()
        if error is None and connected_at is None:
            error = TransportError("GET /sdk/stream: the server closed the stream before any event")
        self._start_fallback()
        if error is None:
            _log.info("phaseflag: the server closed the stream; polling until it reconnects")
            return self._backoff.next_delay()
        self._sink.sync_failed(error)
        if isinstance(error, AuthenticationError):
            return self._auth_backoff.next_delay()
        return self._backoff.next_delay(getattr(error, "retry_after", None))

    def _read_once(self) -> Exception | None:
        """Read one connection; the error that ended it, if any.

        Caught here rather than in ``step`` so that no frame on the error's traceback holds
        the error: such a cycle would keep the stream's response, and so its pooled socket,
        open until the garbage collector runs.
        """
        try:
            self._read_stream()
        except Exception as exc:  # anything, so that no failure ends streaming for good
            return exc
        return None

    def _read_stream(self) -> None:
        events = self._transport.open_stream()
        try:
            for event in events:
                self.last_event_at = time.monotonic()
                if self.loop.stopping:
                    return
                if self._connected_at is None:
                    self._connected()
                self._handle(event)
        finally:
            events.close()  # releases the response at once, not at garbage collection

    def _handle(self, event: SSEEvent) -> None:
        if event.event == "ruleset":
            try:
                self._sink.apply_document(event.data.encode("utf-8"), "live")
            except RulesetError as exc:
                self._sink.sync_failed(exc)
            else:
                self._sink.sync_succeeded()
        elif event.event != "ping":
            _log.debug("phaseflag: ignoring a stream event of type %r", event.event[:40])

    def _connected(self) -> None:
        """The stream is back: retire the fallback poller before applying anything."""
        self._connected_at = time.monotonic()
        self._auth_backoff.reset()
        with self._lock:
            fallback, self._fallback = self._fallback, None
            if fallback is None:
                return
            # Closing the gate waits for a poll being applied, so the stream's data lands last.
            fallback.gate.close()
            fallback.poller.stop(0.0)  # a poll in flight ends on its own; do not wait for it
            # Keep only retired pollers whose thread is still finishing (stop(0.0) tells).
            self._retired = [p for p in self._retired if not p.stop(0.0)]
            self._retired.append(fallback.poller)
        _log.info("phaseflag: stream connected; fallback polling stopped")

    def _start_fallback(self) -> None:
        with self._lock:
            if self._fallback is not None or self.loop.stopping:
                return
            gate = _Gate(self._sink)
            # Its own Random: the poller draws in another thread.
            rng = random.Random(self._rng.getrandbits(64))
            poller = Poller(self._transport.fetch_ruleset, gate, self._interval, rng=rng)
            self._fallback = _Fallback(poller, gate)
            poller.start()


class _Gate:
    """The fallback poller's sink: forwards to the real sink until closed."""

    __slots__ = ("_lock", "_open", "_sink")

    def __init__(self, sink: SyncSink) -> None:
        self._sink = sink
        self._lock = threading.Lock()
        self._open = True

    def close(self) -> None:
        with self._lock:
            self._open = False

    def apply_document(self, raw: bytes, source: str) -> None:
        with self._lock:
            if self._open:
                self._sink.apply_document(raw, source)

    def sync_succeeded(self) -> None:
        if self._open:
            self._sink.sync_succeeded()

    def sync_failed(self, error: Exception) -> None:
        if self._open:
            self._sink.sync_failed(error)


@dataclass(frozen=True, slots=True)
class _Fallback:
    poller: Poller
    gate: _Gate
