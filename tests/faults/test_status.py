"""Status faults: an hour-long Retry-After (capped at ten minutes, then honoured) and a server
flapping between 200 and 503 on every request."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from conftest import wait_for

import phaseflag._backoff
import phaseflag._sync
from phaseflag import EvaluationEvent, PhaseFlagClient
from phaseflag._sync import Poller
from phaseflag._transport import Transport

from .conftest import KEY, POLL, FaultServer, failed, hit, recovers, serves_during_fault

pytestmark = pytest.mark.fault


def test_retry_after_3600_is_capped_to_ten_minutes(server: FaultServer) -> None:
    """``Retry-After: 3600`` makes the next poll wait exactly MAX_RETRY_AFTER (600 s)."""
    server.set(ruleset="retry_after")
    transport = Transport(server.base_url, KEY, timeout=1.0)
    sink = _Sink()
    try:
        delay = Poller(transport.fetch_ruleset, sink, POLL).step()
    finally:
        transport.close()
    assert delay == phaseflag._sync.MAX_RETRY_AFTER == 600.0
    assert sink.failures == 1


def test_retry_after_cap_is_the_same_for_stream_and_events() -> None:
    """The stream's reconnect and the events' retry cap Retry-After like the poller does."""
    backoff = phaseflag._backoff.Backoff(1.0, 60.0)
    assert backoff.next_delay(retry_after=3600.0) == phaseflag._sync.MAX_RETRY_AFTER


def test_retry_after_honoured_then_recovers(
    live_client: PhaseFlagClient, server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No poll is made before the (capped) Retry-After is over; then the client catches up."""
    monkeypatch.setattr(phaseflag._backoff, "MAX_RETRY_AFTER", 1.0)  # 600 s in production
    server.set(ruleset="retry_after")
    serves_during_fault(live_client, failed(live_client, 1))
    assert server.count("ruleset", "retry_after") == 1
    took = recovers(live_client, server)
    first = server.times("ruleset", "retry_after")[0]
    next_poll = min(server.times("ruleset", "ok"), key=lambda t: t if t > first else float("inf"))
    assert next_poll - first >= 1.0  # without Retry-After the retry would come within 0.2 s
    assert took < 2


def test_events_retry_after_holds_the_batch(
    server: FaultServer, make_client: Callable[..., PhaseFlagClient]
) -> None:
    """Events refused with Retry-After wait (no re-POST within a second), yet an explicit
    flush delivers them exactly once."""
    client = make_client(server.base_url, event_batch_size=10)
    server.set(events="retry_after")
    for i in range(10):
        client.track_event(EvaluationEvent("flag", "on", "user-1", metadata={"id": i}))
    wait_for(hit(server, "retry_after", 1, endpoint="events"))
    # Proving an absence takes a window: a plain backoff (<= 0.2 s) would have retried in it.
    threading.Event().wait(1.0)
    assert server.count("events", "retry_after") == 1
    server.set(events="ok")
    assert client.flush_events() is True
    assert sorted(server.event_ids()) == list(range(10))


def test_flapping_200_503(live_client: PhaseFlagClient, server: FaultServer) -> None:
    """Alternating 503 and 200 never disturbs reads, and every published version lands."""
    server.set(ruleset="flap")
    serves_during_fault(live_client, hit(server, "flap", 6))
    assert recovers(live_client, server, version=2, ruleset="flap") < 2
    assert recovers(live_client, server, version=3, ruleset="flap") < 2
    # A success resets the backoff, so each 503 is retried within 50 ms and each 200 is
    # followed by a 45-55 ms interval: about 37 ms a request on average, never a storm.
    times = server.times("ruleset", "flap")
    assert len(times) <= 4 + (times[-1] - times[0]) / 0.02


class _Sink:
    """Counts what a Poller reports."""

    def __init__(self) -> None:
        self.failures = 0

    def apply_document(self, raw: bytes, source: str) -> None:
        """Accept any document."""

    def sync_succeeded(self) -> None:
        """Ignore success."""

    def sync_failed(self, error: Exception) -> None:
        """Count a failure."""
        self.failures += 1
