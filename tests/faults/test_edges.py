"""Issue 10's network rows, each against raw loopback sockets: headers and bodies trickled
byte by byte, a silent API with offline_mode, a heartbeat-only stream, a redirect to another
origin, credentials in base_url, invalid UTF-8 on the stream, Authorization from
headers_factory, and a sync thread stuck where it cannot report.

Each of these failed on the code before the whole-request deadlines (or hung: calls that
could block forever run in a helper thread with a bound, so a regression fails, not hangs).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import phaseflag_thread_names, wait_for

from phaseflag import ConfigError, EvaluationEvent, EvaluationResult, PhaseFlagClient

from .conftest import (
    CONTEXT,
    KEY,
    REQUEST_TIMEOUT,
    FaultServer,
    document,
    failed,
    hit,
    recovers,
    serves_during_fault,
)

pytestmark = pytest.mark.fault

#: A call bounded by REQUEST_TIMEOUT (0.5 s) must return within this: 10x for a loaded box.
BOUND = 10 * REQUEST_TIMEOUT


def within(seconds: float, call: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``call`` in a helper thread; fail (instead of hanging) if it takes longer."""
    outcome: list[Any] = []
    thread = threading.Thread(target=lambda: outcome.append(call()), daemon=True)
    began = time.monotonic()
    thread.start()
    thread.join(seconds)
    took = time.monotonic() - began
    assert not thread.is_alive(), f"still blocked after {seconds} s"
    return outcome[0], took


# -- a deadline on every network call -----------------------------------------------------------


def test_trickling_headers_cut_at_the_deadline(
    live_client: PhaseFlagClient, server: FaultServer
) -> None:
    """Headers sent one byte per 50 ms never trip a read timeout; request_timeout ends the poll,
    which counts as a failure, and the next poll recovers."""
    server.set(ruleset="trickle_head")
    serves_during_fault(live_client, failed(live_client, 2))
    assert "no complete answer within 0.5 s" in (live_client.status().last_error or "")
    per_request = server.sent["trickle_head"] / server.count("ruleset", "trickle_head")
    assert per_request < 100  # about 10 header bytes arrive in 0.5 s
    assert recovers(live_client, server) < 2


@pytest.mark.parametrize("mode", ["trickle_head", "trickle"])
def test_evaluate_bounded_by_request_timeout(
    live_client: PhaseFlagClient, server: FaultServer, mode: str
) -> None:
    """evaluate() against trickled headers or a trickled body returns the local result once
    request_timeout has passed (it waited 20 s and 60 s before)."""
    server.set(evaluate=mode)
    result, took = within(BOUND, lambda: live_client.evaluate("flag", CONTEXT))
    assert isinstance(result, EvaluationResult)
    assert result.value is True  # the local evaluation stands in
    assert "remote evaluation failed" in (result.error_message or "")
    assert "request_timeout" in (result.error_message or "")
    assert took >= REQUEST_TIMEOUT * 0.9
    server.set(evaluate="ok")
    assert live_client.evaluate("flag", CONTEXT).value == "remote"


def test_flush_events_bounded(live_client: PhaseFlagClient, server: FaultServer) -> None:
    """flush_events(timeout=...) returns False in time against an events endpoint that
    trickles its headers; the events stay queued and go out once the API answers."""
    server.set(events="trickle_head")
    live_client.track_event(EvaluationEvent("flag", "on", "user-1", metadata={"id": 1}))
    delivered, took = within(BOUND, lambda: live_client.flush_events(timeout=1.0))
    assert delivered is False
    assert took < BOUND
    server.set(events="ok")
    assert live_client.flush_events(timeout=5.0) is True
    assert server.event_ids() == [1]


def test_events_cut_inside_the_headers_stay_queued(
    live_client: PhaseFlagClient, server: FaultServer
) -> None:
    """A connection closed cleanly after ``200 OK`` and half a header (read by http.client as
    a whole, empty answer) is no proof of delivery: the batch stays queued and goes out,
    once, when the API answers. (It counted as sent before, and the event was lost.)"""
    server.set(events="cut_head")
    live_client.track_event(EvaluationEvent("flag", "on", "user-1", metadata={"id": 7}))
    delivered, _ = within(BOUND, lambda: live_client.flush_events(timeout=2.0))
    assert delivered is False
    assert server.count("events", "cut_head") >= 1
    status = live_client.status()
    assert (status.events_sent, status.events_queued) == (0, 1)
    server.set(events="ok")
    assert live_client.flush_events(timeout=5.0) is True
    assert server.event_ids() == [7]


def test_stop_within_a_second_with_requests_in_flight(
    server: FaultServer, make_client: Callable[..., PhaseFlagClient]
) -> None:
    """With a 30 s request_timeout and a poll, an evaluate() and a flush all blocked on the
    network, stop() returns within a second, every request is aborted, and no thread of
    the stopped client applies a ruleset or fires a listener afterwards."""
    client = make_client(server.base_url, request_timeout=30.0)
    assert client.wait_until_ready(5)
    changes: list[Any] = []
    client.on("change", changes.append)
    server.set(ruleset="hang", evaluate="trickle_head", events="hang")
    client.track_event(EvaluationEvent("flag", "on", "user-1", metadata={"id": 1}))
    evaluation: list[EvaluationResult] = []
    flushed: list[bool] = []
    blocked = [
        threading.Thread(target=lambda: evaluation.append(client.evaluate("flag", CONTEXT))),
        threading.Thread(target=lambda: flushed.append(client.flush_events())),
    ]
    for thread in blocked:
        thread.start()
    wait_for(
        lambda: (
            server.count("ruleset", "hang") >= 1 and server.count("evaluate", "trickle_head") >= 1
        )
    )
    wait_for(hit(server, "hang", 1, endpoint="events"))
    began = time.monotonic()
    client.stop()
    took = time.monotonic() - began
    assert took < 1.0, f"stop() took {took:.2f} s"
    for thread in blocked:
        thread.join(BOUND)
        assert not thread.is_alive()
    assert evaluation[0].value is True  # the local result, at once
    assert flushed == [False]
    assert wait_for(lambda: phaseflag_thread_names() == [], timeout=1.0)
    server.publish(document(2, False))
    server.set(ruleset="ok", evaluate="ok", events="ok")  # the hung handlers let go
    assert client.ruleset.version == 1
    assert changes == []


# -- a stuck sync is visible ---------------------------------------------------------------------


def test_max_staleness_fires_while_the_sync_thread_is_stuck(
    server: FaultServer, make_client: Callable[..., PhaseFlagClient]
) -> None:
    """A change listener that never returns holds the sync thread: no failure is ever
    reported, yet the data's age passes max_staleness and ``stale`` fires (from a timer)."""
    client = make_client(server.base_url, max_staleness=0.5)
    assert client.wait_until_ready(5)
    release = threading.Event()
    stale: list[float] = []
    client.on("stale", stale.append)
    client.on("change", lambda _event: release.wait(30))
    server.publish(document(2, False))  # applying it calls the listener, which blocks
    try:
        assert wait_for(lambda: bool(stale), timeout=BOUND)
        status = client.status()
        assert status.stale
        assert status.consecutive_failures == 0  # staleness from the age alone
    finally:
        release.set()


def test_heartbeat_only_stream_falls_back_to_polling(
    server: FaultServer, make_client: Callable[..., PhaseFlagClient]
) -> None:
    """A stream sending only ``: heartbeat`` comments never delivers a ruleset: after
    request_timeout it counts as a failure and the same thread polls, so the client gets
    ready from /sdk/ruleset (it was never ready before)."""
    server.set(stream="heartbeat")
    client = make_client(server.base_url, fetch_mode="streaming")
    errors: list[BaseException] = []
    client.on("error", errors.append)
    assert client.wait_until_ready(BOUND)
    assert client.ruleset.version == 1
    assert server.count("ruleset", "ok") >= 1
    wait_for(lambda: any("no ruleset event within 0.5 s" in str(e) for e in errors))


# -- offline_mode and bootstrap ------------------------------------------------------------------


def test_offline_mode_ready_at_once_with_a_silent_api(
    server: FaultServer, make_client: Callable[..., PhaseFlagClient]
) -> None:
    """With bootstrap data and offline_mode=True, start() makes the client ready at once
    against an API that never answers; live data replaces the bootstrap when it comes, and
    stop() stays prompt."""
    server.set(ruleset="hang")
    client = make_client(
        server.base_url, offline_mode=True, bootstrap=document(1, True), request_timeout=30.0
    )
    assert client.is_ready  # at once: no wait on the hung first fetch
    assert client.status().ruleset_source == "bootstrap"
    assert client.get_boolean_value("flag", False, CONTEXT) is True
    wait_for(hit(server, "hang", 1))  # the first live fetch is in, and unanswered
    server.publish(document(2, False))
    server.set(ruleset="ok")
    wait_for(lambda: client.ruleset.version == 2, timeout=BOUND)
    assert client.status().ruleset_source == "live"
    server.set(ruleset="hang")
    wait_for(hit(server, "hang", 2))
    began = time.monotonic()
    client.stop()
    assert time.monotonic() - began < 1.0


def test_hung_bootstrap_url_never_delays_the_first_live_fetch(
    server: FaultServer, make_client: Callable[..., PhaseFlagClient]
) -> None:
    """The first live fetch goes out first; with live data in, a hung bootstrap_url is never
    even asked (it used to be fetched first, holding the first live fetch a whole timeout)."""
    cdn = FaultServer(document(7, False))
    cdn.start()
    try:
        cdn.set(ruleset="hang")
        client = make_client(server.base_url, bootstrap_url=cdn.base_url + "/sdk/ruleset")
        assert client.wait_until_ready(BOUND)
        assert client.ruleset.version == 1
        assert client.status().ruleset_source == "live"
        assert cdn.count("ruleset", "hang") == 0
    finally:
        cdn.stop()


# -- origins and credentials -----------------------------------------------------------------------


def test_redirect_to_another_origin_refused_same_origin_followed(
    server: FaultServer, make_client: Callable[..., PhaseFlagClient]
) -> None:
    """A ruleset request redirected to another origin is a counted, reported failure: that
    origin gets no request (so neither headers nor headers_factory values) and its ruleset
    is never applied. A redirect within the origin is followed."""
    other = FaultServer(document(9, False))
    other.start()
    try:
        server.redirect_to = other.base_url
        client = make_client(
            server.base_url,
            headers={"X-Tenant": "tenant-secret"},
            headers_factory=lambda: {"X-Rotating": "rotating-secret"},
        )
        assert client.wait_until_ready(5)
        server.set(ruleset="redirect_other")
        serves_during_fault(client, failed(client, 2))
        assert "another origin" in (client.status().last_error or "")
        assert other.requests == []
        assert client.ruleset.version == 1
        assert recovers(client, server, ruleset="redirect_same") < 2
        moved = [r for r in server.requests if r.path.endswith("/sdk/ruleset-moved")]
        assert moved and moved[-1].headers["x-rotating"] == "rotating-secret"
    finally:
        other.stop()


def test_credentials_in_base_url_refused(server: FaultServer) -> None:
    """user:password@ in base_url is a ConfigError that does not show the password (it was
    shown by repr, and requests swapped the SDK key for Basic auth)."""
    url = server.base_url.replace("http://", "http://user:hunter2@")
    with pytest.raises(ConfigError) as info:
        PhaseFlagClient(base_url=url, api_key=KEY)
    assert info.value.option == "base_url"
    assert "hunter2" not in str(info.value)
    assert server.requests == []


def test_invalid_utf8_on_the_stream_rejected_whole(
    server: FaultServer, make_client: Callable[..., PhaseFlagClient]
) -> None:
    """A streamed ruleset with a byte that is not UTF-8 is refused whole, as polling refuses
    the same bytes; the last good ruleset stays (it was applied with U+FFFD before)."""
    client = make_client(server.base_url, fetch_mode="streaming")
    assert client.wait_until_ready(5)
    server.publish(document(2, False))
    server.set(stream="bad_utf8", ruleset="503")  # polls cannot bring v2 in by another way
    wait_for(hit(server, "bad_utf8", 1, endpoint="stream"))
    wait_for(lambda: "utf-8" in (client.status().last_error or "").lower(), timeout=BOUND)
    assert client.ruleset.version == 1
    assert client.get_boolean_value("flag", False, CONTEXT) is True


def test_headers_factory_supplies_authorization(server: FaultServer) -> None:
    """A headers_factory may return Authorization (a rotating JWT): it is sent as is, each
    request calls it afresh, and api_key may then be empty."""
    tokens = iter(f"Bearer jwt-{i}" for i in range(10_000))
    client = PhaseFlagClient(
        base_url=server.base_url,
        api_key="",
        headers_factory=lambda: {"Authorization": next(tokens)},
        polling_interval=0.05,
        send_events=False,
    )
    try:
        client.start()
        assert client.wait_until_ready(5)
        wait_for(lambda: server.count("ruleset", "ok") >= 2)
    finally:
        client.stop()
    sent = [r.headers.get("authorization") for r in server.requests]
    assert sent[:2] == ["Bearer jwt-0", "Bearer jwt-1"]
    assert all(value and value.startswith("Bearer jwt-") for value in sent)
