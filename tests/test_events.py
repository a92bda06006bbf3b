"""Tests for the analytics event pipeline (phaseflag._events) with a fake ``send``."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from phaseflag._errors import ConfigError, TransportError
from phaseflag._events import EventProcessor, EventStats
from phaseflag._version import __version__
from phaseflag.types import EvaluationEvent

Payload = dict[str, Any]
Policy = Callable[[Payload, int], None]


class FakeSend:
    """Records every payload it accepts; ``policy(payload, call_no)`` may raise instead."""

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy
        self.calls = 0
        self.payloads: list[Payload] = []
        self.attempts: list[tuple[float, int]] = []  # (monotonic time, number of items)
        self.threads: set[str] = set()
        self.delivered = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, payload: Payload) -> None:
        with self._lock:
            self.calls += 1
            call_no = self.calls
            self.attempts.append((time.monotonic(), len(payload["events"])))
        self.threads.add(threading.current_thread().name)
        if self.policy is not None:
            self.policy(payload, call_no)
        with self._lock:
            self.payloads.append(payload)
        self.delivered.set()

    def events(self, kind: str = "custom") -> list[Payload]:
        with self._lock:
            return [e for p in self.payloads for e in p["events"] if e["kind"] == kind]

    def ids(self) -> list[int]:
        return [e["metadata"]["i"] for e in self.events()]


def event(i: int, **kwargs: Any) -> EvaluationEvent:
    return EvaluationEvent(
        flag_key="new-checkout-flow",
        variation_key="enabled",
        user_id=f"user-{i}",
        metadata={"i": i},
        **kwargs,
    )


def fail_first(n: int, status: int | None, retry_after: float | None = None) -> Policy:
    def policy(payload: Payload, call_no: int) -> None:
        if call_no <= n:
            exc = TransportError(f"HTTP {status}", status)
            exc.retry_after = retry_after
            raise exc

    return policy


def wait_until(predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.002)  # polling a condition with a deadline, not synchronising on time
    return predicate()


def events_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "phaseflag-events"]


@pytest.fixture
def make() -> Iterator[Callable[..., EventProcessor]]:
    """Build processors and stop every one of them at teardown."""
    made: list[EventProcessor] = []

    def build(send: FakeSend, **kwargs: Any) -> EventProcessor:
        processor = EventProcessor(send, **kwargs)
        made.append(processor)
        return processor

    yield build
    for processor in made:
        processor.stop(timeout=1.0)


class TestEvaluationEvent:
    """EvaluationEvent is a plain slotted class (cheap to build) that keeps the behaviour of
    the frozen dataclass it replaced: immutable, compared and shown field by field."""

    FIELDS = ("flag_key", "variation_key", "user_id", "metadata", "timestamp", "value")

    def test_fields_cannot_be_set_added_or_deleted(self) -> None:
        """Every field is read-only and the event takes no new attributes."""
        built = EvaluationEvent("f", "on", "u", {"a": 1}, 5, 2.5)
        for name in self.FIELDS:
            with pytest.raises(AttributeError):
                setattr(built, name, "changed")
            with pytest.raises(AttributeError):
                delattr(built, name)
        with pytest.raises(AttributeError):
            built.extra = 1  # type: ignore[attr-defined]
        assert [getattr(built, name) for name in self.FIELDS] == ["f", "on", "u", {"a": 1}, 5, 2.5]

    def test_defaults_are_fresh_and_timestamp_is_now(self) -> None:
        """Positional and keyword arguments as before; each event gets its own metadata dict
        and a construction-time timestamp in integer milliseconds."""
        before = time.time_ns() // 1_000_000
        first, second = EvaluationEvent("f"), EvaluationEvent(flag_key="f")
        after = time.time_ns() // 1_000_000
        assert first.metadata == {} and first.metadata is not second.metadata
        assert (first.variation_key, first.user_id, first.value) == (None, None, None)
        assert isinstance(first.timestamp, int) and before <= first.timestamp <= after
        assert EvaluationEvent("f", timestamp=0).timestamp == 0

    def test_equality_repr_and_pickle_follow_the_fields(self) -> None:
        """Equal when every field is; the repr names each field; a pickled copy is equal."""
        one = EvaluationEvent("f", "on", "u", {"a": 1}, timestamp=7, value=1.5)
        assert one == EvaluationEvent("f", "on", "u", {"a": 1}, timestamp=7, value=1.5)
        assert one != EvaluationEvent("f", "on", "u", {"a": 1}, timestamp=8, value=1.5)
        assert one != ("f", "on", "u", {"a": 1}, 7, 1.5)
        assert repr(one) == (
            "EvaluationEvent(flag_key='f', variation_key='on', user_id='u', metadata={'a': 1}, "
            "timestamp=7, value=1.5)"
        )
        copy = pickle.loads(pickle.dumps(one))
        assert copy == one and copy is not one
        match one:
            case EvaluationEvent(flag_key, variation_key):
                assert (flag_key, variation_key) == ("f", "on")
            case _:
                pytest.fail("positional match_args")

    def test_to_dict_copies_metadata_and_sends_only_finite_values(self) -> None:
        """The wire shape: metadata copied (later changes to the event's dict stay out of
        an already-built payload), ``value`` only when finite."""
        metadata = {"a": 1}
        wire = EvaluationEvent("f", metadata=metadata, timestamp=3, value=2.0).to_dict()
        metadata["a"] = 2
        assert wire == {
            "kind": "custom",
            "flag_key": "f",
            "variation_key": None,
            "user_id": None,
            "metadata": {"a": 1},
            "timestamp": 3,
            "value": 2.0,
        }
        assert "value" not in EvaluationEvent("f", value=float("nan")).to_dict()


class TestPayload:
    def test_payload_carries_sdk_block_and_custom_event_fields(self, make: Any) -> None:
        """A flushed payload has the sdk block and each event's wire fields."""
        send = FakeSend()
        processor = make(send)
        processor.track(event(1, timestamp=1_700_000_000_000))
        assert processor.flush() is True
        (payload,) = send.payloads
        assert payload["sdk"] == {"name": "phaseflag-python", "version": __version__}
        assert payload["events"] == [
            {
                "kind": "custom",
                "flag_key": "new-checkout-flow",
                "variation_key": "enabled",
                "user_id": "user-1",
                "metadata": {"i": 1},
                "timestamp": 1_700_000_000_000,
            }
        ]

    def test_summary_counts_ride_with_custom_events(self, make: Any) -> None:
        """Counts become one summary event, with its window, in the same batch as events."""
        send = FakeSend()
        processor = make(send)
        before = int(time.time() * 1000)
        for _ in range(3):
            processor.count("flag-a", "on")
        processor.count("flag-a", "off")
        processor.count("flag-b", None)
        processor.track(event(1))
        assert processor.flush() is True
        after = int(time.time() * 1000)
        (payload,) = send.payloads
        kinds = [e["kind"] for e in payload["events"]]
        assert sorted(kinds) == ["custom", "summary"]
        (summary,) = send.events("summary")
        assert before - 1000 <= summary["start"] <= summary["end"] <= after
        assert isinstance(summary["start"], int)
        assert isinstance(summary["end"], int)
        assert sorted(summary["counters"], key=repr) == sorted(
            [
                {"flag_key": "flag-a", "variation_key": "on", "count": 3},
                {"flag_key": "flag-a", "variation_key": "off", "count": 1},
                {"flag_key": "flag-b", "variation_key": None, "count": 1},
            ],
            key=repr,
        )

    def test_summary_windows_report_only_new_counts(self, make: Any) -> None:
        """Each window's summary holds the counts since the previous one, windows adjoining."""
        send = FakeSend()
        processor = make(send)
        processor.count("flag-a", "on")
        processor.count("flag-a", "on")
        assert processor.flush() is True
        assert processor.flush() is True  # nothing counted: nothing sent
        processor.count("flag-a", "on")
        assert processor.flush() is True
        first, second = send.events("summary")
        assert [c["count"] for c in first["counters"]] == [2]
        assert [c["count"] for c in second["counters"]] == [1]
        assert first["end"] <= second["start"] <= second["end"]
        assert len(send.payloads) == 2

    def test_nothing_to_send_posts_nothing(self, make: Any) -> None:
        """A flush with no events and no counts makes no request and reports success."""
        send = FakeSend()
        processor = make(send)
        assert processor.flush() is True
        assert send.calls == 0

    def test_flush_sends_synchronously_in_batches(self, make: Any) -> None:
        """flush() posts every queued event from the caller's thread, batch_size at a time."""
        send = FakeSend()
        processor = make(send, batch_size=3)
        for i in range(7):
            processor.track(event(i))
        assert processor.flush() is True
        assert [len(p["events"]) for p in send.payloads] == [3, 3, 1]
        assert send.ids() == list(range(7))
        assert send.threads == {threading.current_thread().name}
        assert processor.stats() == EventStats(sent=7, dropped=0, failed=0, queued=0)

    def test_stats_are_a_frozen_value(self, make: Any) -> None:
        """stats() returns an immutable snapshot with the queued count."""
        processor = make(FakeSend())
        processor.track(event(1))
        stats = processor.stats()
        assert stats == EventStats(sent=0, dropped=0, failed=0, queued=1)
        with pytest.raises(AttributeError):
            stats.sent = 5  # type: ignore[misc, unused-ignore]

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"flush_interval": 0},
            {"flush_interval": float("inf")},
            {"batch_size": 0},
            {"max_queue_size": 0},
        ],
    )
    def test_bad_options_raise_config_error(self, kwargs: dict[str, Any]) -> None:
        """Non-positive options are rejected with ConfigError."""
        with pytest.raises(ConfigError):
            EventProcessor(FakeSend(), **kwargs)


class TestFlusherThread:
    def test_batch_size_wakes_the_flusher(self, make: Any) -> None:
        """Reaching batch_size sends at once, long before the flush interval."""
        send = FakeSend()
        processor = make(send, flush_interval=60.0, batch_size=5)
        processor.start()
        for i in range(4):
            processor.track(event(i))
        assert not send.delivered.wait(0.05)
        processor.track(event(4))
        assert send.delivered.wait(2.0)
        assert send.ids() == [0, 1, 2, 3, 4]
        assert send.threads == {"phaseflag-events"}

    def test_interval_flushes_a_partial_batch(self, make: Any) -> None:
        """A single event goes out after flush_interval without reaching batch_size."""
        send = FakeSend()
        processor = make(send, flush_interval=0.05, batch_size=100)
        processor.start()
        started = time.monotonic()
        processor.track(event(1))
        assert send.delivered.wait(2.0)
        assert time.monotonic() - started < 1.0
        assert send.ids() == [1]

    def test_stop_flushes_the_rest_and_ends_the_thread(self, make: Any) -> None:
        """stop() sends what is queued and the phaseflag-events thread is gone."""
        send = FakeSend()
        processor = make(send, flush_interval=60.0)
        processor.start()
        assert len(events_threads()) == 1
        for i in range(3):
            processor.track(event(i))
        processor.count("flag-a", "on")
        assert processor.stop(timeout=1.0) is True
        assert send.ids() == [0, 1, 2]
        assert len(send.events("summary")) == 1
        assert events_threads() == []

    def test_retry_honours_retry_after_then_delivers_once(self, make: Any) -> None:
        """After a 429 with retry_after the thread retries on its own, no sooner, once."""
        send = FakeSend(fail_first(1, 429, retry_after=0.1))
        processor = make(send, flush_interval=60.0, batch_size=4)
        processor.start()
        for i in range(4):
            processor.track(event(i))
        assert send.delivered.wait(3.0)
        (failed_at, _), (retried_at, _) = send.attempts
        assert retried_at - failed_at >= 0.09
        assert send.ids() == [0, 1, 2, 3]
        assert processor.stats() == EventStats(sent=4, dropped=0, failed=0, queued=0)


class TestFailures:
    @pytest.mark.parametrize("status", [429, 503, None], ids=["429", "503", "network"])
    def test_retryable_failure_keeps_then_delivers_exactly_once(
        self, make: Any, status: int | None
    ) -> None:
        """429/5xx/network keep the batch; after recovery each event arrives once, in order."""
        send = FakeSend(fail_first(2, status))
        processor = make(send, batch_size=4)
        for i in range(10):
            processor.track(event(i))
        assert processor.flush() is False
        assert processor.stats() == EventStats(sent=0, dropped=0, failed=0, queued=10)
        for i in range(10, 12):
            processor.track(event(i))
        assert processor.flush() is False
        assert processor.flush() is True
        assert send.ids() == list(range(12))
        assert processor.stats() == EventStats(sent=12, dropped=0, failed=0, queued=0)

    def test_retried_summary_is_not_lost_or_doubled(self, make: Any) -> None:
        """Counts from a failed window are sent once, beside the later window's counts."""
        send = FakeSend(fail_first(1, 503))
        processor = make(send)
        processor.count("flag-a", "on")
        assert processor.flush() is False
        processor.count("flag-a", "on")
        processor.count("flag-a", "on")
        assert processor.flush() is True
        assert processor.flush() is True
        totals = [c["count"] for s in send.events("summary") for c in s["counters"]]
        assert sum(totals) == 3

    def test_400_drops_the_batch_and_counts_failed(
        self, make: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A 400 drops that batch with a warning; the other batches are still sent."""
        send = FakeSend(fail_first(1, 400))
        processor = make(send, batch_size=3)
        for i in range(5):
            processor.track(event(i))
        with caplog.at_level(logging.WARNING, logger="phaseflag"):
            assert processor.flush() is False
        assert send.ids() == [3, 4]
        assert processor.stats() == EventStats(sent=2, dropped=0, failed=3, queued=0)
        assert any("HTTP 400" in r.getMessage() for r in caplog.records)

    def test_413_splits_until_batches_fit(self, make: Any) -> None:
        """A 413 halves the batch until the server accepts it; every event arrives once."""

        def reject_large(payload: Payload, call_no: int) -> None:
            if len(payload["events"]) > 3:
                raise TransportError("too large", 413)

        send = FakeSend(reject_large)
        processor = make(send, batch_size=8)
        for i in range(11):
            processor.track(event(i))
        assert processor.flush() is True
        assert send.ids() == list(range(11))
        assert all(len(p["events"]) <= 3 for p in send.payloads)
        assert processor.stats() == EventStats(sent=11, dropped=0, failed=0, queued=0)

    def test_413_on_a_single_event_drops_only_that_event(self, make: Any) -> None:
        """An event that is too large on its own is dropped and counted as failed."""

        def reject_big(payload: Payload, call_no: int) -> None:
            if any(e["metadata"].get("big") for e in payload["events"]):
                raise TransportError("too large", 413)

        send = FakeSend(reject_big)
        processor = make(send, batch_size=4)
        for i in range(4):
            processor.track(event(i) if i != 2 else EvaluationEvent("f", metadata={"big": 1}))
        assert processor.flush() is False
        assert send.ids() == [0, 1, 3]
        assert processor.stats() == EventStats(sent=3, dropped=0, failed=1, queued=0)

    def test_unserialisable_event_is_isolated(self, make: Any) -> None:
        """An event whose send raises TypeError is dropped alone; its batch-mates go out."""

        def strict(payload: Payload, call_no: int) -> None:
            if any("bad" in e["metadata"] for e in payload["events"]):
                raise TypeError("Object of type set is not JSON serializable")

        send = FakeSend(strict)
        processor = make(send, batch_size=4)
        processor.track(event(0))
        processor.track(EvaluationEvent("f", metadata={"bad": {1}}))
        processor.track(event(2))
        assert processor.flush() is False
        assert send.ids() == [0, 2]
        assert processor.stats().failed == 1

    def test_track_never_raises_on_a_bad_argument(self, make: Any) -> None:
        """track() accepts anything; a non-event is dropped as failed at flush time."""
        send = FakeSend()
        processor = make(send)
        processor.track("not an event")
        processor.track(event(1))
        assert processor.flush() is False
        assert send.ids() == [1]
        assert processor.stats() == EventStats(sent=1, dropped=0, failed=1, queued=0)


class TestBounds:
    def test_full_queue_drops_oldest_and_counts(self, make: Any) -> None:
        """Past max_queue_size the oldest events are dropped and counted; the newest stay."""
        send = FakeSend()
        processor = make(send, batch_size=5, max_queue_size=5)
        for i in range(8):
            processor.track(event(i))
        assert processor.stats() == EventStats(sent=0, dropped=3, failed=0, queued=5)
        assert processor.flush() is True
        assert send.ids() == [3, 4, 5, 6, 7]

    def test_queue_is_bounded_when_batch_size_exceeds_it(self, make: Any) -> None:
        """A batch_size above max_queue_size still bounds the queue and drops the oldest."""
        send = FakeSend()
        processor = make(send, batch_size=100, max_queue_size=4)
        for i in range(10):
            processor.track(event(i))
        assert processor.stats() == EventStats(sent=0, dropped=6, failed=0, queued=4)
        assert processor.flush() is True
        assert send.ids() == [6, 7, 8, 9]

    def test_drops_warn_once_per_window(self, make: Any, caplog: pytest.LogCaptureFixture) -> None:
        """Dropping many events logs one warning per flush window, not one per event."""
        processor = make(FakeSend(), batch_size=2, max_queue_size=2)
        with caplog.at_level(logging.WARNING, logger="phaseflag"):
            for i in range(50):
                processor.track(event(i))
            processor.flush()
            processor.flush()  # no new drops: no new warning
            for i in range(10):
                processor.track(event(i))
            processor.flush()
        drops = [r.getMessage() for r in caplog.records if "queue was full" in r.getMessage()]
        assert len(drops) == 2
        assert "dropped 48 events" in drops[0]
        assert "dropped 8 events" in drops[1]

    def test_retry_buffer_is_bounded_during_an_outage(self, make: Any) -> None:
        """An outage holds at most the queue plus one batch; the held ones arrive once."""
        outage = True

        def policy(payload: Payload, call_no: int) -> None:
            if outage:
                raise TransportError("down", 503)

        send = FakeSend(policy)
        processor = make(send, batch_size=5, max_queue_size=10)
        for i in range(100):
            processor.track(event(i))
            if i % 7 == 0:
                assert processor.flush() is False
            assert processor.stats().queued <= 10 + 5
        outage = False
        assert processor.flush() is True
        ids = send.ids()
        stats = processor.stats()
        assert len(ids) == len(set(ids)) == stats.sent
        assert stats.sent + stats.dropped == 100
        assert ids == sorted(ids)
        assert ids[-10:] == list(range(90, 100))


class TestConcurrency:
    def test_concurrent_track_and_flush_lose_nothing(self, make: Any) -> None:
        """8 threads tracking while the flusher and flush() run: sent + dropped == tracked."""
        send = FakeSend()
        processor = make(send, flush_interval=0.005, batch_size=50, max_queue_size=500)
        processor.start()
        per_thread, threads = 2000, 8
        go = threading.Event()

        def produce(t: int) -> None:
            go.wait()
            for n in range(per_thread):
                processor.track(event(t * per_thread + n))

        workers = [threading.Thread(target=produce, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        go.set()
        while any(w.is_alive() for w in workers):
            processor.flush()
        for w in workers:
            w.join()
        assert processor.stop(timeout=2.0) is True
        ids = send.ids()
        stats = processor.stats()
        assert len(ids) == len(set(ids)) == stats.sent
        assert stats.sent + stats.dropped == per_thread * threads
        assert stats.queued == 0

    def test_summary_counts_are_exact_under_threads(self, make: Any) -> None:
        """8 threads x 10,000 counts, flushed while counting, add up exactly."""
        send = FakeSend()
        processor = make(send, flush_interval=0.002)
        processor.start()
        variations = ["a", "b", None]
        go = threading.Event()

        def counter(t: int) -> None:
            go.wait()
            for n in range(10_000):
                processor.count(f"flag-{n % 4}", variations[(n + t) % 3])

        workers = [threading.Thread(target=counter, args=(t,)) for t in range(8)]
        for w in workers:
            w.start()
        go.set()
        for w in workers:
            w.join()
        assert processor.stop(timeout=2.0) is True
        totals: dict[tuple[str, str | None], int] = {}
        summaries = send.events("summary")
        for summary in summaries:
            assert summary["start"] <= summary["end"]
            for c in summary["counters"]:
                key = (c["flag_key"], c["variation_key"])
                totals[key] = totals.get(key, 0) + c["count"]
        assert sum(totals.values()) == 80_000
        expected: dict[tuple[str, str | None], int] = {}
        for t in range(8):
            for n in range(10_000):
                key = (f"flag-{n % 4}", variations[(n + t) % 3])
                expected[key] = expected.get(key, 0) + 1
        assert totals == expected


@pytest.mark.e2e
class TestFork:
    @pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
    @pytest.mark.filterwarnings("ignore::DeprecationWarning")
    def test_child_forgets_the_parents_events_and_restarts(self, make: Any) -> None:
        """A forked child clears its copy of queued events and counts and restarts the thread."""
        send = FakeSend()
        processor = make(send, flush_interval=60.0)
        processor.start()
        processor.track(event(1))
        processor.count("flag-a", "on")
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report what it sees through the pipe, then leave at once
            code = 1
            try:
                processor.reset_after_fork()
                processor.start()
                report: dict[str, Any] = {"stats": list(dataclasses.astuple(processor.stats()))}
                report["thread"] = wait_until(lambda: len(events_threads()) == 1)
                processor.count("flag-a", "on")
                processor.track(event(2))
                report["flushed"] = processor.flush()
                report["ids"] = send.ids()
                report["summaries"] = send.events("summary")
                processor.stop(timeout=1.0)
                os.write(write_fd, json.dumps(report).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            report = json.loads(pipe.read() or b"{}")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert report["stats"] == [0, 0, 0, 0]
        assert report["thread"] is True
        assert report["flushed"] is True
        assert report["ids"] == [2]
        (summary,) = report["summaries"]
        assert summary["counters"] == [{"flag_key": "flag-a", "variation_key": "on", "count": 1}]
        # The parent still holds, and sends, its own events and counts.
        assert processor.flush() is True
        assert send.ids() == [1]
        (summary,) = send.events("summary")
        assert summary["counters"] == [{"flag_key": "flag-a", "variation_key": "on", "count": 1}]


class TestNoSilentLoss:
    """Issue 10, "no silent event loss": every event is delivered or counted."""

    def test_bad_options_name_the_clients_option(self) -> None:
        """The queue-size error names ``max_event_queue_size`` (the option a user sets),
        checked by the same validator as the client's options."""
        with pytest.raises(ConfigError, match="max_event_queue_size"):
            EventProcessor(FakeSend(), max_queue_size=0)
        with pytest.raises(ConfigError, match="event_batch_size"):
            EventProcessor(FakeSend(), batch_size=True)  # type: ignore[arg-type]

    def test_flush_is_false_when_the_flushers_batch_is_rejected(self, make: Any) -> None:
        """flush() called while the flusher is sending a batch the API then rejects (400)
        returns False: not every event queued at the call was accepted."""
        sending, release = threading.Event(), threading.Event()

        def reject_after_release(payload: Payload, call_no: int) -> None:
            sending.set()
            assert release.wait(5.0)
            raise TransportError("HTTP 400", 400)

        send = FakeSend(reject_after_release)
        processor = make(send, batch_size=100, flush_interval=60.0)
        processor.start()
        for i in range(100):
            processor.track(event(i))
        assert sending.wait(5.0)  # the flusher holds the batch of 100
        result: list[bool] = []
        flusher = threading.Thread(target=lambda: result.append(processor.flush()))
        flusher.start()
        release.set()
        flusher.join(5.0)
        assert result == [False]
        assert processor.stats() == EventStats(sent=0, dropped=0, failed=100, queued=0)

    def test_flush_is_true_only_when_everything_was_accepted(self, make: Any) -> None:
        """The same backlog against an API that accepts it: True, all sent."""
        send = FakeSend()
        processor = make(send, batch_size=10)
        for i in range(35):
            processor.track(event(i))
        assert processor.flush() is True
        assert processor.stats() == EventStats(sent=35, dropped=0, failed=0, queued=0)

    def test_always_413_costs_a_bounded_number_of_requests(self, make: Any) -> None:
        """A 5,000-event backlog against an API answering 413 to everything: each flush
        costs at most log2(batch_size) + 1 requests (not one per event), and stop() counts
        the rest as dropped, so sent + failed + dropped = 5,000 and nothing stays queued."""

        def always_413(payload: Payload, call_no: int) -> None:
            raise TransportError("HTTP 413", 413)

        send = FakeSend(always_413)
        processor = make(send, batch_size=100, max_queue_size=10_000)
        for i in range(5000):
            processor.track(event(i))
        assert processor.flush() is False
        assert send.calls <= 8  # 100, 50, 25, 13, 7, 4, 2, 1
        assert processor.flush() is False
        assert send.calls <= 16
        processor.stop(timeout=1.0)
        stats = processor.stats()
        assert stats.queued == 0
        assert stats.sent + stats.failed + stats.dropped == 5000
        assert send.calls <= 24

    def test_events_still_queued_at_stop_are_counted_as_dropped(self, make: Any) -> None:
        """An API that is down during stop(): what is left is counted as dropped, not queued."""
        send = FakeSend(fail_first(10**9, 503))
        processor = make(send)
        processor.start()
        for i in range(40):
            processor.track(event(i))
        assert processor.stop(timeout=0.5) is False
        assert processor.stats() == EventStats(sent=0, dropped=40, failed=0, queued=0)

    def test_events_tracked_after_stop_are_counted_as_dropped(self, make: Any) -> None:
        """Nothing sends after stop(): an event tracked then is dropped and counted."""
        send = FakeSend()
        processor = make(send)
        processor.start()
        processor.stop(timeout=1.0)
        processor.track(event(1))
        assert processor.stats() == EventStats(sent=0, dropped=1, failed=0, queued=0)


class TestCounters:
    def test_the_read_paths_inlined_count_equals_count(self) -> None:
        """The client's read path inlines ``count()`` through ``counters.by_flag`` (or its
        older alias ``EventProcessor._counts``); the summaries it produces equal those of
        ``count()`` called as often."""
        from phaseflag import EvaluationContext, PhaseFlagClient

        flags = {
            "schema_version": 1,
            "version": 1,
            "flags": [
                {
                    "key": f"f{i}",
                    "type": "boolean",
                    "track_events": True,
                    "variations": [{"key": "on", "value": True}, {"key": "off", "value": False}],
                    "default": {"variation": "on" if i % 2 else "off"},
                }
                for i in range(3)
            ],
        }
        client = PhaseFlagClient("http://127.0.0.1:9/api/v1", "k", bootstrap=flags)
        reference = EventProcessor(FakeSend())
        events = client._events
        assert events is not None
        assert events._counts is events.counters.by_flag
        for n in range(25):
            key = f"f{n % 3}"
            client.get_boolean_value(key, False, EvaluationContext(user_id=str(n)))
            reference.count(key, "on" if (n % 3) % 2 else "off")

        def summary(processor: EventProcessor) -> list[Any]:
            return sorted(processor.counters.take(), key=lambda c: c["flag_key"])

        assert summary(events) == summary(reference) != []

    def test_the_hot_path_handle_outlives_take_forget_and_fork(self) -> None:
        """``counters.by_flag`` bound once keeps counting into the summaries: take(),
        forget() and reset_after_fork() never replace the dict or the counters object."""
        send = FakeSend()
        processor = EventProcessor(send)
        counters = processor.counters
        handle = counters.by_flag
        processor.count("flag-a", "on")  # creates the counter the handle then reaches
        for step in (counters.take, counters.forget, processor.reset_after_fork):
            step()
            assert processor.counters is counters and counters.by_flag is handle
            assert processor._counts is handle
            next(handle["flag-a"]["on"])
            next(handle["flag-a"]["on"])
            assert counters.take() == [{"flag_key": "flag-a", "variation_key": "on", "count": 2}]
