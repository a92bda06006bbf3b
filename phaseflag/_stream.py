"""The streamer: one ``phaseflag-stream`` thread that holds a Server-Sent Events connection
and, while the stream is down, polls in its place (no second thread).

A stream must send a ruleset within ``request_timeout`` of connecting and then at least every
``idle_limit`` seconds (pings and comments keep the socket busy but do not count); otherwise
the thread polls, and reconnects on the one RetryPolicy that polling follows too.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Final

from ._backoff import RETRY_BASE, RetryPolicy
from ._errors import RulesetError, TransportError
from ._loop import Loop
from ._sse import SSEEvent
from ._sync import Poller, SyncSink
from ._transport import StreamIdleError, Transport

__all__ = ["IDLE_LIMIT", "Streamer"]

#: A stream that has sent rulesets but none for this long (or polling_interval if longer)
#: is closed after one poll and opened again: a push channel broken upstream of the
#: server's pings must not leave the data stale for good.
IDLE_LIMIT: Final = 300.0

# A connection that stayed up this long was healthy: the next drop starts the backoff afresh.
# Resetting on mere connection would let a server that accepts and drops at once be hammered.
_STABLE_AFTER: Final = 60.0

_log = logging.getLogger("phaseflag")


class Streamer:
    """Keep the ruleset fresh from ``GET /sdk/stream`` in a ``phaseflag-stream`` thread.

    Each ``event: ruleset`` goes to ``sink.apply_document(bytes, "live")`` then
    ``sink.sync_succeeded()``; a rejected one (RulesetError, invalid UTF-8 included) to
    ``sink.sync_failed`` while the last good ruleset stays. ``ping`` and unknown events only
    mark the stream alive. When the stream fails (``sink.sync_failed`` is told), goes idle
    or is closed by the server, the same thread polls every ``polling_interval`` seconds
    until the reconnect the RetryPolicy allows (``reconnect_base``/``reconnect_cap`` are its
    base and cap) delivers again; the data thus comes from one thread, in order.

    ``start()``/``stop()`` may be called from any thread; ``stop()`` aborts the stream or
    poll the thread is blocked in and joins it within ``timeout``. Never raises from the
    thread: every failure is reported to the sink.
    """

    def __init__(
        self,
        transport: Transport,
        sink: SyncSink,
        polling_interval: float,
        *,
        after_first: Callable[[], None] | None = None,
        rng: random.Random | None = None,
        reconnect_base: float | None = None,
        reconnect_cap: float | None = None,
        idle_limit: float | None = None,
    ) -> None:
        self._transport = transport
        self._sink = sink
        self._after_first = after_first
        self._rng = rng or random.Random()
        self._idle_limit = idle_limit
        self._retry = RetryPolicy(base=reconnect_base, cap=reconnect_cap, rng=self._rng)
        poll_base = min(RETRY_BASE if reconnect_base is None else reconnect_base, polling_interval)
        self._poller = Poller(
            transport.fetch_ruleset,
            sink,
            polling_interval,
            rng=self._rng,
            retry=RetryPolicy(base=poll_base, cap=reconnect_cap, rng=self._rng),
        )
        self._reconnect_at = 0.0
        self._connected_at: float | None = None
        self._delivered = False
        #: True while polls stand in for a stream that is down.
        self.polling = False
        #: ``time.monotonic()`` of the last event received (pings included), or None.
        self.last_event_at: float | None = None
        self.loop = Loop("stream", self.step)

    @property
    def interval(self) -> float:
        """Seconds between polls while the stream is down; setting it applies at once."""
        return self._poller.interval

    @interval.setter
    def interval(self, seconds: float) -> None:
        self._poller.interval = seconds
        self.loop.wake()

    def start(self) -> None:
        """Start the thread (idempotent)."""
        self.loop.start()

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop the thread, aborting its stream or poll; True when it has ended."""
        return self.loop.stop(timeout, abort=self._transport.abort)

    def step(self) -> float:
        """Stream when a (re)connect is due, else poll; returns how long to wait.

        ``after_first`` runs once, after the first poll (the stream's first failure).
        """
        if time.monotonic() >= self._reconnect_at:
            self._stream()
            if self.loop.stopping:
                return 0.0
        delay = self._poller.poll()  # the stream is down: poll meanwhile
        if self._after_first is not None and not self.loop.stopping:
            after, self._after_first = self._after_first, None
            after()
        return max(0.0, min(delay, self._reconnect_at - time.monotonic()))

    def _stream(self) -> None:
        """One connection, read until it ends; then schedule the reconnect."""
        self._connected_at = None
        self._delivered = False
        error = self._read_once()
        if self.loop.stopping:
            return
        connected_at = self._connected_at
        if connected_at is not None and time.monotonic() - connected_at >= _STABLE_AFTER:
            self._retry.reset()
        self.polling = True
        if isinstance(error, StreamIdleError) and self._delivered:
            _log.info("phaseflag: the stream went idle; polling once and reconnecting")
            delay = 0.0
        elif error is None and connected_at is not None:
            _log.info("phaseflag: the server closed the stream; polling until it reconnects")
            delay = self._retry.delay(TransportError("stream closed"))
        else:
            if error is None:
                error = TransportError(
                    "GET /sdk/stream: the server closed the stream before any event"
                )
            self._sink.sync_failed(error)
            delay = self._retry.delay(error)
        self._reconnect_at = time.monotonic() + delay

    def _read_once(self) -> Exception | None:
        """Read one connection; the error that ended it, if any.

        Caught here rather than in ``_stream`` so that no frame on the error's traceback
        holds the error: such a cycle would keep the stream's response, and so its pooled
        socket, open until the garbage collector runs.
        """
        try:
            self._read_stream()
        except Exception as exc:  # anything, so that no failure ends streaming for good
            return exc
        return None

    def _read_stream(self) -> None:
        idle = self._idle_limit
        if idle is None:
            idle = max(IDLE_LIMIT, self._poller.interval)
        events = self._transport.open_stream(first_within=self._transport.timeout, idle_within=idle)
        try:
            for event in events:
                self.last_event_at = time.monotonic()
                if self.loop.stopping:
                    return
                if self._connected_at is None:
                    self._connected_at = time.monotonic()
                    self._retry.reset_auth()
                self._handle(event)
        finally:
            events.close()  # releases the response at once, not at garbage collection

    def _handle(self, event: SSEEvent) -> None:
        if event.event == "ruleset":
            # The exact bytes (invalid UTF-8 included), so the stream's data is refused
            # or applied exactly as the same bytes polled would be.
            raw = event.data.encode("utf-8", "surrogateescape")
            try:
                self._sink.apply_document(raw, "live")
            except RulesetError as exc:
                self._sink.sync_failed(exc)
                return
            if not self._delivered:
                self._delivered = True
                if self.polling:
                    self.polling = False
                    _log.info("phaseflag: stream delivering again; fallback polling stopped")
            self._sink.sync_succeeded()
        elif event.event != "ping":
            _log.debug("phaseflag: ignoring a stream event of type %r", event.event[:40])
