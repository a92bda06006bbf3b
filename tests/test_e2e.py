"""End to end: the phaseflag client against ``phaseflag serve`` over real loopback HTTP.

Server and client run in this process on 127.0.0.1 (port 0); the ruleset file is edited the
way an operator would (write a temp file, ``os.replace`` it) and the server's file watcher
picks it up. Nothing is mocked: what is asserted is what crossed the socket.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from conftest import Document, boolean_flag, rule, ruleset, string_flag, wait_for

from phaseflag import EvaluationContext, EvaluationEvent, PhaseFlagClient
from phaseflag._stream import Streamer
from phaseflag._sync import Poller
from phaseflag.server import PhaseFlagServer
from phaseflag.types import ChangeEvent, Reason

pytestmark = pytest.mark.e2e

KEY = "e2e-key-7c41d2aa90"
WRONG_KEY = "e2e-wrong-5d1e9b0c44"
SAMPLE = Path(__file__).resolve().parent.parent / "bootstrap_samples" / "ruleset.json"

#: Seconds between the server's looks at the ruleset file.
SERVER_POLL = 0.05
#: Scheduling slack allowed on top of the intervals a propagation bound adds up.
SLACK = 3.0
#: Changes pushed through the stream to measure its latency.
STREAM_CHANGES = 50

ClientFactory = Callable[..., PhaseFlagClient]


# -- helpers -------------------------------------------------------------------------------------


def colors(version: int, color: str = "blue") -> Document:
    """The served ruleset: a static string flag ``color`` and a targeted boolean ``checkout``."""
    return ruleset(
        string_flag("color", color),
        boolean_flag("checkout", False, rules=[rule("plan", "in", ["pro"], "on", id="paid")]),
        version=version,
    )


def write_atomic(path: Path, document: Document) -> None:
    """Replace ``path`` with ``document`` in one step (temp file + ``os.replace``)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(document), "utf-8")
    os.replace(temp, path)


def poller(client: PhaseFlagClient) -> Poller:
    """The polling client's synchroniser (internal: for its ETag)."""
    sync = client._sync
    assert isinstance(sync, Poller)
    return sync


def streamer(client: PhaseFlagClient) -> Streamer:
    """The streaming client's synchroniser (internal: is it polling as a fallback?)."""
    sync = client._sync
    assert isinstance(sync, Streamer)
    return sync


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every event the server appended to its events file."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line]


def health(server: PhaseFlagServer) -> dict[str, Any]:
    """The server's ``/healthz`` document."""
    root = server.url.removesuffix("/api/v1")
    with requests.get(f"{root}/healthz", timeout=5) as resp:
        resp.raise_for_status()
        result: dict[str, Any] = resp.json()
        return result


class Recorder:
    """A ``requests.Session`` for a client that records ``(method, path, status)`` per response.

    A response hook sees every HTTP exchange the client makes, streams included (at their
    headers). ``list.append`` is atomic, so the client's threads may record concurrently.
    """

    def __init__(self) -> None:
        self.session = requests.Session()
        self.session.hooks["response"].append(self._hook)
        self.seen: list[tuple[str, str, int]] = []

    def _hook(self, resp: requests.Response, *args: Any, **kwargs: Any) -> None:
        request = resp.request
        self.seen.append((str(request.method), urlsplit(str(request.url)).path, resp.status_code))

    def statuses(self, method: str, endpoint: str) -> list[int]:
        """Status codes of the recorded ``method`` requests to ``/api/v1<endpoint>``."""
        path = "/api/v1" + endpoint
        return [status for m, p, status in list(self.seen) if m == method and p == path]


class AccessLog(logging.Handler):
    """Collects the server's own access log: ``(request line, status)`` per response sent.

    ``phaseflag serve`` logs each response at DEBUG as ``"phaseflag serve: %r %d %s"``
    (request line, status, size); this is the count kept at the server.
    """

    _FORMAT = "phaseflag serve: %r %d %s"

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[str, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == self._FORMAT and isinstance(record.args, tuple):
            self.lines.append((str(record.args[0]), int(str(record.args[1]))))

    def statuses(self, request_line: str) -> list[int]:
        """Status codes the server sent for ``request_line`` (e.g. ``GET /api/v1/... HTTP/1.1``)."""
        return [status for line, status in list(self.lines) if line == request_line]


class Arrivals:
    """When each ruleset version reached a client, from its ``change`` events."""

    def __init__(self, client: PhaseFlagClient) -> None:
        self._cond = threading.Condition()
        self.at: dict[int, float] = {}
        self.wall: dict[int, float] = {}
        self.events: list[ChangeEvent] = []
        client.on("change", self._on_change)

    def _on_change(self, event: ChangeEvent) -> None:
        now, wall = time.perf_counter(), time.time()
        with self._cond:
            self.events.append(event)
            self.at.setdefault(event.current_version, now)
            self.wall.setdefault(event.current_version, wall)
            self._cond.notify_all()

    def wait(self, version: int, timeout: float = 5.0) -> float:
        """The ``perf_counter()`` time version ``version`` was applied; fails after ``timeout``."""
        with self._cond:
            if not self._cond.wait_for(lambda: version in self.at, timeout):
                pytest.fail(f"version {version} did not reach the client within {timeout} s")
            return self.at[version]


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def ruleset_path(tmp_path: Path) -> Path:
    """The ruleset file the server watches, holding ``colors(1)``."""
    path = tmp_path / "ruleset.json"
    write_atomic(path, colors(1))
    return path


@pytest.fixture
def events_path(tmp_path: Path) -> Path:
    """Where the server appends the events it receives."""
    return tmp_path / "events.jsonl"


@pytest.fixture
def server(ruleset_path: Path, events_path: Path) -> Iterator[PhaseFlagServer]:
    """A started server (one API key, fast file polling) over ``ruleset_path``."""
    with PhaseFlagServer(
        ruleset_path,
        api_keys=[KEY],
        events_out=str(events_path),
        poll_interval=SERVER_POLL,
        ping_interval=1.0,
    ) as srv:
        yield srv


@pytest.fixture
def sample_server(tmp_path: Path, events_path: Path) -> Iterator[PhaseFlagServer]:
    """A started server over a copy of ``bootstrap_samples/ruleset.json``."""
    path = tmp_path / "sample.json"
    shutil.copyfile(SAMPLE, path)
    with PhaseFlagServer(
        path, api_keys=[KEY], events_out=str(events_path), poll_interval=SERVER_POLL
    ) as srv:
        yield srv


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    """A Recorder whose session is closed after the test (clients do not close a given one)."""
    rec = Recorder()
    yield rec
    rec.session.close()


@pytest.fixture
def access_log() -> Iterator[AccessLog]:
    """The server's access log, captured with the ``phaseflag`` logger at DEBUG."""
    logger = logging.getLogger("phaseflag")
    handler = AccessLog()
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# -- 1. readiness ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["polling", "streaming"])
def test_client_becomes_ready_with_the_file_values(
    server: PhaseFlagServer, make_client: ClientFactory, mode: str
) -> None:
    """A started client is ready within 5 s and serves exactly what the ruleset file says."""
    client = make_client(base_url=server.url, api_key=KEY, fetch_mode=mode, polling_interval=0.1)
    client.start()
    assert client.wait_until_ready(5) is True
    status = client.status()
    assert (status.ready, status.ruleset_version, status.ruleset_source) == (True, 1, "live")
    assert (status.flag_count, status.last_error) == (2, None)
    assert client.get_string_value("color", "missing") == "blue"
    pro = EvaluationContext(user_id="u1", attributes={"plan": "pro"})
    free = EvaluationContext(user_id="u2", attributes={"plan": "free"})
    assert client.get_boolean_value("checkout", False, pro) is True
    assert client.get_boolean_value("checkout", True, free) is False
    result = client.get_variation("checkout", pro)
    assert result is not None
    assert result.variation_key == "on"
    assert (result.reason, result.rule_id) == (Reason.TARGETING_MATCH, "paid")


# -- 2. change propagation -----------------------------------------------------------------------


def test_polling_client_sees_a_file_change_within_one_interval(
    server: PhaseFlagServer, ruleset_path: Path, make_client: ClientFactory
) -> None:
    """Each edit of the file reaches a polling client within one polling interval plus slack."""
    interval = 0.2
    client = make_client(base_url=server.url, api_key=KEY, polling_interval=interval)
    arrivals = Arrivals(client)
    client.start()
    assert client.wait_until_ready(5)
    bound = interval * 1.1 + SERVER_POLL + SLACK  # jittered interval + the server's file poll
    latencies = []
    for version in range(2, 6):
        written = time.perf_counter()
        write_atomic(ruleset_path, colors(version, f"color-{version}"))
        latencies.append(arrivals.wait(version, timeout=5) - written)
        assert client.get_string_value("color", "missing") == f"color-{version}"
    shown = ", ".join(f"{x:.3f}s" for x in latencies)
    print(f"\npolling propagation (interval {interval}s): {shown}")
    assert max(latencies) < bound, f"latencies {latencies} over {bound:.2f}s"


def test_streaming_client_gets_file_changes_in_under_a_second(
    server: PhaseFlagServer, ruleset_path: Path, make_client: ClientFactory, recorder: Recorder
) -> None:
    """Over 50 edits a streaming client applies them with p50 under 1 s, p99 under 2 s."""
    client = make_client(
        base_url=server.url,
        api_key=KEY,
        fetch_mode="streaming",
        polling_interval=0.2,
        session=recorder.session,
    )
    arrivals = Arrivals(client)
    client.start()
    assert client.wait_until_ready(5)
    latencies, pushes = [], []
    for version in range(2, 2 + STREAM_CHANGES):
        written = time.perf_counter()
        write_atomic(ruleset_path, colors(version, f"color-{version}"))
        latencies.append(arrivals.wait(version, timeout=5) - written)
        # The server's load time of this version (ms): what is left is the push itself.
        pushes.append(arrivals.wall[version] - health(server)["loaded_at"] / 1000)
    assert client.get_string_value("color", "missing") == f"color-{1 + STREAM_CHANGES}"
    p50 = statistics.median(latencies)
    p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98]
    print(
        f"\nstreaming propagation over {len(latencies)} file edits "
        f"(server file poll {SERVER_POLL}s): p50 {p50 * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms; server load -> "
        f"client applied: p50 {statistics.median(pushes) * 1000:.1f} ms, "
        f"max {max(pushes) * 1000:.1f} ms"
    )
    assert p50 < 1.0  # typically ~0.06 s: the server's file poll plus the push
    assert p99 < 2.0
    # Every version came down the one stream: the client never fell back to polling.
    assert recorder.statuses("GET", "/sdk/stream") == [200]
    assert recorder.statuses("GET", "/sdk/ruleset") == []
    assert health(server)["stream_clients"] == 1


# -- 3. ETag / 304 ---------------------------------------------------------------------------------


def test_unchanged_polls_get_304_and_keep_the_same_ruleset_object(
    server: PhaseFlagServer,
    ruleset_path: Path,
    make_client: ClientFactory,
    recorder: Recorder,
    access_log: AccessLog,
) -> None:
    """Polls of an unchanged ruleset send If-None-Match, get 304 and re-parse nothing."""
    client = make_client(
        base_url=server.url, api_key=KEY, polling_interval=0.05, session=recorder.session
    )
    arrivals = Arrivals(client)
    client.start()
    assert client.wait_until_ready(5)
    held = client.ruleset
    wait_for(lambda: len(recorder.statuses("GET", "/sdk/ruleset")) >= 10, timeout=5)
    assert client.ruleset is held  # no poll replaced (or re-parsed into) a new object
    seen = recorder.statuses("GET", "/sdk/ruleset")
    assert seen[0] == 200
    assert set(seen[1:]) == {304}
    assert poller(client).etag == server.etag  # the poller keeps the server's ETag
    line = "GET /api/v1/sdk/ruleset HTTP/1.1"
    at_server = wait_for(lambda: access_log.statuses(line)[: len(seen)] or None)
    assert at_server == seen  # the server sent exactly these: one 200, then only 304s

    before = len(recorder.statuses("GET", "/sdk/ruleset"))
    write_atomic(ruleset_path, colors(2, "green"))
    arrivals.wait(2)
    wait_for(lambda: len(recorder.statuses("GET", "/sdk/ruleset")) >= before + 10, timeout=5)
    after = recorder.statuses("GET", "/sdk/ruleset")[before:]
    assert after.count(200) == 1  # the new version was downloaded once, then 304 again
    assert after[after.index(200) + 1 :] == [304] * (len(after) - after.index(200) - 1)
    assert [event.current_version for event in arrivals.events] == [1, 2]
    assert poller(client).etag == server.etag


# -- 4. authentication -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["polling", "streaming"])
def test_wrong_key_is_reported_as_authentication_and_never_logged(
    server: PhaseFlagServer,
    make_client: ClientFactory,
    access_log: AccessLog,
    caplog: pytest.LogCaptureFixture,
    mode: str,
) -> None:
    """A rejected key leaves the client not ready with an auth error, and no log shows a key."""
    caplog.set_level(logging.DEBUG)  # everything, urllib3 included
    client = make_client(base_url=server.url, api_key=WRONG_KEY, fetch_mode=mode)
    client.start()
    status = wait_for(lambda: (s := client.status()).consecutive_failures >= 1 and s)
    assert status.last_error is not None
    assert status.last_error.startswith("AuthenticationError")
    assert "rejected the SDK key (HTTP 401)" in status.last_error
    assert (status.ready, client.is_ready) == (False, False)
    assert client.wait_until_ready(0.2) is False  # not offline_mode: no data, not ready
    assert client.get_string_value("color", "fallback") == "fallback"
    endpoint = "/sdk/stream" if mode == "streaming" else "/sdk/ruleset"
    assert 401 in access_log.statuses(f"GET /api/v1{endpoint} HTTP/1.1")
    client.stop()
    texts = [record.getMessage() for record in caplog.records]
    texts += [caplog.text, repr(client), repr(status), str(status)]
    assert texts
    for text in texts:
        assert WRONG_KEY not in text
        assert KEY not in text


# -- 5. server restart -----------------------------------------------------------------------------


def test_streaming_client_reconnects_to_a_restarted_server_on_the_same_port(
    ruleset_path: Path, events_path: Path, make_client: ClientFactory
) -> None:
    """After the server restarts on its port with a new version, the stream reconnects to it."""

    def serve(port: int) -> PhaseFlagServer:
        srv = PhaseFlagServer(
            ruleset_path, port=port, api_keys=[KEY], poll_interval=SERVER_POLL, ping_interval=1.0
        )
        srv.start()  # PhaseFlagServer binds with SO_REUSEADDR (allow_reuse_address)
        return srv

    first = serve(0)
    second: PhaseFlagServer | None = None
    try:
        client = make_client(
            base_url=first.url, api_key=KEY, fetch_mode="streaming", polling_interval=0.1
        )
        arrivals = Arrivals(client)
        client.start()
        assert client.wait_until_ready(5)
        wait_for(lambda: health(first)["stream_clients"] == 1)
        port = first.port
        first.stop()
        stopped = time.perf_counter()
        write_atomic(ruleset_path, colors(2, "after-restart"))
        second = serve(port)
        assert second.port == port
        reconnected = arrivals.wait(2, timeout=10) - stopped
        assert client.get_string_value("color", "missing") == "after-restart"
        wait_for(lambda: health(second)["stream_clients"] == 1, timeout=10)
        # The stream is back: once it delivers, the thread stops polling.
        wait_for(lambda: not streamer(client).polling, timeout=10)
        written = time.perf_counter()
        write_atomic(ruleset_path, colors(3, "streamed-again"))
        pushed = arrivals.wait(3, timeout=2) - written
        assert pushed < 2.0
        assert client.get_string_value("color", "missing") == "streamed-again"
        print(f"\nrestart: v2 served {reconnected:.3f}s after stop; next push {pushed:.3f}s")
    finally:
        first.stop()
        if second is not None:
            second.stop()


# -- 6. events -------------------------------------------------------------------------------------


def test_tracked_events_are_posted_in_batches_and_stored_by_the_server(
    sample_server: PhaseFlagServer,
    events_path: Path,
    make_client: ClientFactory,
    recorder: Recorder,
) -> None:
    """23 events with batch size 5 arrive in several POSTs, field for field, in order."""
    client = make_client(
        base_url=sample_server.url,
        api_key=KEY,
        event_batch_size=5,
        event_flush_interval=60,
        session=recorder.session,
    )
    client.start()
    assert client.wait_until_ready(5)
    started_ms = time.time_ns() // 1_000_000
    tracked = [
        EvaluationEvent(
            flag_key="new-checkout-flow",
            variation_key="enabled" if i % 2 else "disabled",
            user_id=f"user-{i}",
            metadata={"i": i, "page": "/checkout"},
        )
        for i in range(23)
    ]
    for event in tracked:
        client.track_event(event)
    assert client.flush_events() is True
    ended_ms = time.time_ns() // 1_000_000
    posts = recorder.statuses("POST", "/sdk/events")
    assert len(posts) >= math.ceil(len(tracked) / 5)
    assert set(posts) == {202}
    custom = [e for e in read_events(events_path) if e["kind"] == "custom"]
    assert custom == [
        {
            "kind": "custom",
            "flag_key": "new-checkout-flow",
            "variation_key": "enabled" if i % 2 else "disabled",
            "user_id": f"user-{i}",
            "metadata": {"i": i, "page": "/checkout"},
            "timestamp": event.timestamp,
        }
        for i, event in enumerate(tracked)
    ]
    for stored in custom:
        assert type(stored["timestamp"]) is int
        assert started_ms - 1000 <= stored["timestamp"] <= ended_ms
    assert client.status().events_sent == len(tracked)


def test_evaluation_summaries_count_each_served_variation(
    sample_server: PhaseFlagServer, events_path: Path, make_client: ClientFactory
) -> None:
    """Reads of a track_events flag reach the server as summary counts per variation."""
    client = make_client(base_url=sample_server.url, api_key=KEY, event_flush_interval=60)
    client.start()
    assert client.wait_until_ready(5)
    rng = random.Random(4)
    served: Counter[tuple[str, str | None]] = Counter()
    for i in range(200):
        ctx = EvaluationContext(
            user_id=f"user-{i}",
            attributes={"plan": rng.choice(["free", "pro"]), "country": rng.choice(["US", "FR"])},
        )
        result = client.get_variation("new-checkout-flow", ctx)
        assert result is not None
        served["new-checkout-flow", result.variation_key] += 1
        client.get_string_value("ui-theme", "light", ctx)  # no track_events: never summarised
    assert len(served) == 2  # both variations were served
    assert client.flush_events() is True
    summaries = [e for e in read_events(events_path) if e["kind"] == "summary"]
    assert summaries
    counted: Counter[tuple[str, str | None]] = Counter()
    for summary in summaries:
        assert type(summary["start"]) is int and summary["start"] <= summary["end"]
        for counter in summary["counters"]:
            counted[counter["flag_key"], counter["variation_key"]] += counter["count"]
    assert counted == served


# -- 7. remote evaluation --------------------------------------------------------------------------


def random_context(rng: random.Random, i: int) -> EvaluationContext:
    """A context drawn from values the sample ruleset's rules and segments look at."""
    attributes: dict[str, Any] = {}
    choices: dict[str, list[Any]] = {
        "plan": ["free", "pro", "enterprise", "team"],
        "country": ["US", "FR", "DE", "us"],
        "app_version": ["1.9.9", "2.0.0", "2.3.9", "2.4.0", "3.1.2", "not-a-version"],
        "email": ["a@example.com", "b@phaseflag.com", "C@PhaseFlag.COM", "d@gmail.com"],
        "account_age": [0, 29, 30, 365, 366, 1000],
    }
    for name, values in choices.items():
        if rng.random() < 0.85:
            attributes[name] = rng.choice(values)
    user_id = rng.choice(["user-1", "user-2", "user-9", "user-13", f"user-{rng.randrange(10**6)}"])
    return EvaluationContext(user_id=None if i % 50 == 0 else user_id, attributes=attributes)


def test_remote_evaluation_agrees_with_local_evaluation(
    sample_server: PhaseFlagServer, make_client: ClientFactory
) -> None:
    """For 300 random contexts and every sample flag, the server's result equals the local one."""
    client = make_client(base_url=sample_server.url, api_key=KEY, send_events=False)
    client.start()
    assert client.wait_until_ready(5)
    flags = sorted(client.ruleset.flags)
    assert len(flags) == 8
    rng = random.Random(20240607)
    reasons: Counter[str] = Counter()
    for i in range(300):
        ctx = random_context(rng, i)
        for key in flags:
            local = client.get_variation(key, ctx)
            remote = client.evaluate(key, ctx)
            assert local is not None
            assert remote.error_message is None, remote.error_message
            got = (remote.value, remote.variation_key, remote.reason, remote.rule_id)
            want = (local.value, local.variation_key, local.reason, local.rule_id)
            assert got == want, f"{key} for {ctx!r}"
            reasons[remote.reason] += 1
    assert set(reasons) == {
        Reason.TARGETING_MATCH,
        Reason.PERCENTAGE_ROLLOUT,
        Reason.DEFAULT,
        Reason.DISABLED,
    }


# -- 8. stop() flushes -----------------------------------------------------------------------------


def test_stop_delivers_events_tracked_just_before_it(
    server: PhaseFlagServer, events_path: Path, make_client: ClientFactory
) -> None:
    """Events tracked right before stop() are in the server's file when stop() returns."""
    client = make_client(
        base_url=server.url, api_key=KEY, event_flush_interval=60, event_batch_size=100
    )
    client.start()
    assert client.wait_until_ready(5)
    for i in range(7):
        client.track_event(EvaluationEvent(flag_key="color", user_id=f"u{i}", metadata={"n": i}))
    assert read_events(events_path) == []
    client.stop()
    custom = [e for e in read_events(events_path) if e["kind"] == "custom"]
    expected = [(f"u{i}", {"n": i}) for i in range(7)]
    assert [(e["user_id"], e["metadata"]) for e in custom] == expected
    assert client.status().events_sent == 7


def test_remote_evaluation_merges_the_default_context_like_reads_do(
    sample_server: PhaseFlagServer, make_client: ClientFactory
) -> None:
    """With a default_context, evaluate(flag, ctx) sends the merged context that reads use."""
    client = make_client(
        base_url=sample_server.url,
        api_key=KEY,
        send_events=False,
        default_context=EvaluationContext(attributes={"plan": "pro"}),
    )
    client.start()
    assert client.wait_until_ready(5)
    ctx = EvaluationContext(user_id="user-555")
    local = client.get_variation("new-checkout-flow", ctx)
    assert local is not None
    assert (local.value, local.rule_id) == (True, "paid-plans")  # plan comes from the default
    remote = client.evaluate("new-checkout-flow", ctx)
    assert (remote.value, remote.variation_key, remote.reason, remote.rule_id) == (
        local.value,
        local.variation_key,
        local.reason,
        local.rule_id,
    )
