"""Events endpoint outages: everything that fit in the queue is delivered exactly once, in order,
once the endpoint is back; what did not fit is counted as dropped."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import pytest
from conftest import wait_for

from phaseflag import EvaluationEvent, PhaseFlagClient

from .conftest import READ_P99_LIMIT_US, FaultServer, hit, read_p99_us

pytestmark = pytest.mark.fault


def track(client: PhaseFlagClient, ids: range) -> float:
    """Track one event per id (``metadata["id"]``); returns the p99 of track_event in µs."""
    samples = []
    for i in ids:
        event = EvaluationEvent("flag", "on", "user-1", metadata={"id": i})
        start = time.perf_counter_ns()
        client.track_event(event)
        samples.append(time.perf_counter_ns() - start)
    samples.sort()
    return samples[int(len(samples) * 0.99)] / 1000


@pytest.mark.parametrize("mode", ["503", "hang"])
def test_outage_then_every_event_once_in_order(
    server: FaultServer, make_client: Callable[..., PhaseFlagClient], mode: str
) -> None:
    """300 events tracked while the endpoint fails arrive exactly once, in order, after it heals."""
    client = make_client(server.base_url, event_batch_size=50)
    assert client.wait_until_ready(5)
    server.set(events=mode)
    assert track(client, range(300)) < READ_P99_LIMIT_US
    wait_for(hit(server, mode, 2, endpoint="events"), timeout=10)
    assert read_p99_us(client, True) < READ_P99_LIMIT_US
    assert client.status().events_sent == 0
    server.set(events="ok")
    wait_for(lambda: len(server.event_ids()) >= 300, timeout=10)
    assert client.flush_events() is True
    assert server.event_ids() == list(range(300))
    status = client.status()
    assert (status.events_sent, status.events_dropped, status.events_failed) == (300, 0, 0)


def test_overflow_keeps_the_newest_and_counts_the_rest(
    server: FaultServer, make_client: Callable[..., PhaseFlagClient]
) -> None:
    """With a 100-event queue, 500 events during an outage: the newest 100 (plus the batch held
    for retry) arrive exactly once; every other event is counted as dropped."""
    client = make_client(server.base_url, event_batch_size=50, max_event_queue_size=100)
    server.set(events="503")
    track(client, range(500))
    wait_for(hit(server, "503", 2, endpoint="events"), timeout=10)
    server.set(events="ok")
    wait_for(lambda: len(server.event_ids()) >= 100, timeout=10)
    assert client.flush_events() is True
    delivered = server.event_ids()
    assert max(Counter(delivered).values()) == 1
    assert delivered == sorted(delivered)
    assert set(range(400, 500)) <= set(delivered)
    assert len(delivered) <= 100 + 50
    status = client.status()
    assert status.events_sent == len(delivered)
    assert status.events_sent + status.events_dropped == 500
