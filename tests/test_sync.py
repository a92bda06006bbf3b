"""The poller: conditional GETs, status-code policies, backoff and ruleset rejection.

Status-code paths call ``Poller.step()`` directly (deterministic, seeded jitter); a few
tests run the real ``phaseflag-sync`` thread against a ``responses`` mock.
"""

from __future__ import annotations

import gzip
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import responses
from conftest import (
    READY_WAIT,
    boolean_flag,
    phaseflag_thread_names,
    ruleset,
    string_flag,
    to_bytes,
    wait_for,
)

from phaseflag import AuthenticationError, PhaseFlagClient, RulesetError, TransportError
from phaseflag._sync import MAX_BACKOFF, MAX_RETRY_AFTER, Poller
from phaseflag._transport import Transport
from phaseflag._version import __version__

BASE = "https://api.phaseflag.test/api/v1"
RULESET_URL = BASE + "/sdk/ruleset"
KEY = "sdk-test-sync-0123456789abcdef"
INTERVAL = 30.0


def within_jitter(delay: float, interval: float = INTERVAL) -> bool:
    """True when ``delay`` is ``interval`` ±10%."""
    return interval * 0.9 <= delay <= interval * 1.1


def serve(api: responses.RequestsMock, document: dict[str, Any], etag: str | None = None) -> None:
    """Queue one 200 answer carrying ``document`` (and an ETag)."""
    headers = {"ETag": etag or f'"v{document["version"]}"'}
    api.get(RULESET_URL, body=to_bytes(document), headers=headers, content_type="application/json")


def sent_headers(api: responses.RequestsMock, index: int = -1) -> Any:
    """The headers of a recorded request (the last by default)."""
    return api.calls[index].request.headers


@pytest.fixture
def api() -> Iterator[responses.RequestsMock]:
    """A responses mock; registered answers are served in order, the last one repeating."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def client(api: responses.RequestsMock, make_client: Any) -> PhaseFlagClient:
    """A client that is never started: the poller under test reports to it."""
    client: PhaseFlagClient = make_client(base_url=BASE, api_key=KEY, send_events=False)
    return client


@pytest.fixture
def transport() -> Iterator[Transport]:
    """The HTTP seam the poller fetches through."""
    transport = Transport(BASE, KEY)
    yield transport
    transport.close()


@pytest.fixture
def poller(client: PhaseFlagClient, transport: Transport) -> Poller:
    """A poller with seeded jitter, stepped by hand (no thread)."""
    return Poller(transport.fetch_ruleset, client._store, INTERVAL, rng=random.Random(7))


class Recorder:
    """Collects what a listener was called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, *args: Any) -> None:
        self.calls.append(args)


class TestRequests:
    def test_first_fetch_sends_auth_user_agent_and_gzip(
        self, api: responses.RequestsMock, poller: Poller
    ) -> None:
        """GET /sdk/ruleset carries the Bearer key, the SDK User-Agent and Accept-Encoding gzip."""
        serve(api, ruleset(boolean_flag("f")))
        poller.step()
        headers = sent_headers(api)
        assert api.calls[0].request.method == "GET"
        assert headers["Authorization"] == f"Bearer {KEY}"
        assert headers["User-Agent"] == f"phaseflag-python/{__version__}"
        assert "gzip" in headers["Accept-Encoding"]
        assert "If-None-Match" not in headers

    def test_if_none_match_sent_after_first_200(
        self, api: responses.RequestsMock, poller: Poller
    ) -> None:
        """After a 200 with an ETag, the next request is conditional on that ETag."""
        serve(api, ruleset(boolean_flag("f")), etag='"abc"')
        api.get(RULESET_URL, status=304)
        poller.step()
        poller.step()
        assert sent_headers(api)["If-None-Match"] == '"abc"'

    def test_200_applies_the_ruleset(
        self, api: responses.RequestsMock, poller: Poller, client: PhaseFlagClient
    ) -> None:
        """A 200 swaps in the ruleset, marks the client ready and returns the interval ±10%."""
        serve(api, ruleset(string_flag("color", "green"), version=3))
        delay = poller.step()
        assert within_jitter(delay)
        assert client.get_string_value("color", "none") == "green"
        assert client.is_ready
        status = client.status()
        assert (status.ruleset_version, status.ruleset_source) == (3, "live")
        assert status.consecutive_failures == 0

    def test_gzip_body_is_decoded(
        self, api: responses.RequestsMock, poller: Poller, client: PhaseFlagClient
    ) -> None:
        """A gzip-encoded ruleset is decompressed and applied."""
        body = gzip.compress(to_bytes(ruleset(boolean_flag("zipped"))))
        api.get(RULESET_URL, body=body, headers={"Content-Encoding": "gzip", "ETag": '"z"'})
        poller.step()
        assert client.get_boolean_value("zipped", False) is True

    def test_304_keeps_state(
        self, api: responses.RequestsMock, poller: Poller, client: PhaseFlagClient
    ) -> None:
        """A 304 keeps the held ruleset, fires no change and counts as a good sync."""
        serve(api, ruleset(string_flag("color", "green")))
        api.get(RULESET_URL, status=304)
        poller.step()
        changes = Recorder()
        client.on("change", changes)
        first_sync = client.status().last_sync
        delay = poller.step()
        assert within_jitter(delay)
        assert client.get_string_value("color", "none") == "green"
        assert changes.calls == []
        status = client.status()
        assert status.consecutive_failures == 0
        assert status.last_sync is not None and first_sync is not None
        assert status.last_sync >= first_sync


class TestAuthenticationFailures:
    def test_401_records_error_and_backs_off_long(
        self, api: responses.RequestsMock, poller: Poller, client: PhaseFlagClient
    ) -> None:
        """A 401 is reported (status and error listener) and the next try is a minute away."""
        errors = Recorder()
        client.on("error", errors)
        api.get(RULESET_URL, status=401)
        delay = poller.step()
        assert 30.0 <= delay <= 60.0  # the auth backoff polling and streaming share
        assert "AuthenticationError" in (client.status().last_error or "")
        assert client.status().consecutive_failures == 1
        assert len(errors.calls) == 1
        assert isinstance(errors.calls[0][0], AuthenticationError)
        assert not client.is_ready

    def test_auth_backoff_grows_to_an_hour(
        self, api: responses.RequestsMock, poller: Poller
    ) -> None:
        """Repeated 403s follow the shared auth backoff: at least 30 s, the ceiling doubling
        from a minute to an hour."""
        api.get(RULESET_URL, status=403)
        delays = [poller.step() for _ in range(12)]
        for n, delay in enumerate(delays):
            assert 30.0 <= delay <= min(3600.0, 60.0 * 2**n)
        assert max(delays[7:]) > 600.0  # the ceiling has grown far past the first minute

    def test_poll_and_stream_share_one_auth_policy(self) -> None:
        """The poller's and the streamer's auth backoff draw the same delays (one policy)."""
        from phaseflag._backoff import RetryPolicy

        error = AuthenticationError("rejected", 401)
        a, b = RetryPolicy(rng=random.Random(5)), RetryPolicy(base=0.05, rng=random.Random(5))
        assert [a.delay(error) for _ in range(8)] == [b.delay(error) for _ in range(8)]

    def test_held_ruleset_still_served_after_401(
        self, api: responses.RequestsMock, poller: Poller, client: PhaseFlagClient
    ) -> None:
        """A rejected key keeps serving the ruleset already held."""
        serve(api, ruleset(string_flag("color", "green")))
        api.get(RULESET_URL, status=401)
        poller.step()
        poller.step()
        assert client.get_string_value("color", "none") == "green"

    def test_recovers_when_key_is_fixed(
        self, api: responses.RequestsMock, poller: Poller, client: PhaseFlagClient
    ) -> None:
        """After 403s, the next step that gets a 200 applies it and returns to the interval."""
        api.get(RULESET_URL, status=403)
        api.get(RULESET_URL, status=403)
        serve(api, ruleset(string_flag("color", "blue"), version=2))
        poller.step()
        poller.step()
        delay = poller.step()
        assert within_jitter(delay)
        assert client.get_string_value("color", "none") == "blue"
        assert client.is_ready
        assert client.status().consecutive_failures == 0


class TestRetryAfter:
    def test_429_retry_after_is_honoured(self, api: responses.RequestsMock, poller: Poller) -> None:
        """A 429 with Retry-After: 120 waits at least 120 s."""
        api.get(RULESET_URL, status=429, headers={"Retry-After": "120"})
        delay = poller.step()
        assert 120.0 <= delay <= MAX_RETRY_AFTER

    def test_huge_retry_after_is_capped(self, api: responses.RequestsMock, poller: Poller) -> None:
        """A Retry-After beyond MAX_RETRY_AFTER is cut to MAX_RETRY_AFTER."""
        api.get(RULESET_URL, status=429, headers={"Retry-After": "999999"})
        assert poller.step() == MAX_RETRY_AFTER

    def test_503_retry_after_is_honoured(self, api: responses.RequestsMock, poller: Poller) -> None:
        """A 503 with Retry-After waits at least that long too."""
        api.get(RULESET_URL, status=503, headers={"Retry-After": "45"})
        assert poller.step() >= 45.0


class TestBackoff:
    @pytest.mark.parametrize(
        "answer",
        [{"status": 500}, {"status": 503}, {"body": requests.ConnectionError("refused")}],
        ids=["500", "503", "network"],
    )
    def test_failures_back_off_exponentially_within_max(
        self, api: responses.RequestsMock, poller: Poller, client: PhaseFlagClient, answer: Any
    ) -> None:
        """5xx and network errors wait uniform(0, min(MAX_BACKOFF, 2**n s)): full jitter."""
        api.get(RULESET_URL, **answer)
        delays = [poller.step() for _ in range(14)]
        for n, delay in enumerate(delays):
            assert 0.0 <= delay <= min(MAX_BACKOFF, 1.0 * 2**n)
        assert max(delays[8:]) > 30.0  # the ceiling really grows
        assert client.status().consecutive_failures == 14
        assert "TransportError" in (client.status().last_error or "")

    def test_success_returns_to_interval_and_resets_backoff(
        self, api: responses.RequestsMock, poller: Poller
    ) -> None:
        """After a success the interval ±10% applies, and a new failure starts from 1 s again."""
        for _ in range(8):
            api.get(RULESET_URL, status=502)
        serve(api, ruleset(boolean_flag("f")))
        api.get(RULESET_URL, status=502)
        for _ in range(8):
            poller.step()
        assert within_jitter(poller.step())
        assert poller.step() <= 1.0


class TestUnexpectedErrors:
    def test_unexpected_fetch_error_is_reported_and_backs_off(
        self, client: PhaseFlagClient
    ) -> None:
        """A fetch raising something unexpected is reported and retried with growing backoff."""

        def fetch(etag: str | None) -> Any:
            raise RuntimeError("bug in a fetch")

        poller = Poller(fetch, client._store, INTERVAL, rng=random.Random(2))
        delays = [poller.step() for _ in range(10)]
        assert all(0 <= d <= min(MAX_BACKOFF, 2**n) for n, d in enumerate(delays))
        assert max(delays) > 1.0  # not the loop's fixed one-second retry
        assert "RuntimeError: bug in a fetch" in (client.status().last_error or "")

    def test_unexpected_apply_error_keeps_the_last_good_ruleset(
        self, api: responses.RequestsMock, transport: Transport, client: PhaseFlagClient
    ) -> None:
        """A sink that fails oddly while applying is reported and polling keeps its interval."""
        failures: list[Exception] = []

        class Sink:
            def apply_document(self, raw: bytes, source: str) -> None:
                raise TypeError("compiler bug")

            def sync_succeeded(self) -> None:
                raise AssertionError("not a success")

            def sync_failed(self, error: Exception) -> None:
                failures.append(error)

        serve(api, ruleset(boolean_flag("f")))
        poller = Poller(transport.fetch_ruleset, Sink(), INTERVAL, rng=random.Random(2))
        assert within_jitter(poller.step())
        assert [type(e) for e in failures] == [TypeError]
        assert poller.etag is None


BAD_BODIES = {
    "not-json": b"{this is not json",
    "not-an-object": b"[1, 2, 3]",
    "schema": to_bytes({"schema_version": 1, "flags": "nope"}),
    "wrong-schema-version": to_bytes({"schema_version": 9, "flags": []}),
    "flag-key-type": to_bytes(
        {"schema_version": 1, "flags": [{"key": 3, "type": "boolean", "variations": []}]}
    ),
}


class TestRejectedRulesets:
    @pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
    def test_bad_ruleset_is_rejected_and_last_good_kept(
        self, api: responses.RequestsMock, poller: Poller, client: PhaseFlagClient, body: bytes
    ) -> None:
        """A body failing JSON or the schema is rejected whole; the last good ruleset stays."""
        serve(api, ruleset(string_flag("color", "green"), version=1))
        api.get(RULESET_URL, body=body, headers={"ETag": '"bad"'})
        poller.step()
        errors, changes = Recorder(), Recorder()
        client.on("error", errors)
        client.on("change", changes)
        delay = poller.step()
        assert within_jitter(delay)
        assert client.get_string_value("color", "none") == "green"
        status = client.status()
        assert status.ruleset_version == 1
        assert "RulesetError" in (status.last_error or "")
        assert len(errors.calls) == 1 and isinstance(errors.calls[0][0], RulesetError)
        assert changes.calls == []

    def test_rejected_ruleset_does_not_advance_the_etag(
        self, api: responses.RequestsMock, poller: Poller, client: PhaseFlagClient
    ) -> None:
        """After a rejected body the client still asks with the last good ETag, then recovers."""
        serve(api, ruleset(string_flag("color", "green")), etag='"good"')
        api.get(RULESET_URL, body=b"garbage", headers={"ETag": '"bad"'})
        serve(api, ruleset(string_flag("color", "red"), version=2), etag='"fixed"')
        poller.step()
        poller.step()
        poller.step()
        assert sent_headers(api)["If-None-Match"] == '"good"'
        assert client.get_string_value("color", "none") == "red"

    def test_oversize_ruleset_is_rejected(
        self, api: responses.RequestsMock, client: PhaseFlagClient
    ) -> None:
        """A body over the size limit is refused unread; values stay and the error is recorded."""
        small = Transport(BASE, KEY, max_body_bytes=2000)
        poller = Poller(small.fetch_ruleset, client._store, INTERVAL, rng=random.Random(1))
        try:
            serve(api, ruleset(string_flag("color", "green")))
            big = ruleset(*(boolean_flag(f"flag-{i}") for i in range(40)), version=2)
            serve(api, big)
            poller.step()
            assert within_jitter(poller.step())
        finally:
            small.close()
        assert client.get_string_value("color", "none") == "green"
        assert client.status().ruleset_version == 1
        assert "RulesetTooLargeError" in (client.status().last_error or "")


class TestThread:
    @pytest.fixture
    def live(self, api: responses.RequestsMock, make_client: Any) -> PhaseFlagClient:
        """A client with a 1-hour interval, not yet started."""
        client: PhaseFlagClient = make_client(
            base_url=BASE, api_key=KEY, polling_interval=3600, send_events=False
        )
        return client

    def test_sync_thread_is_named(self, api: responses.RequestsMock, live: PhaseFlagClient) -> None:
        """start() runs one thread named phaseflag-sync that fetches the first ruleset."""
        serve(api, ruleset(boolean_flag("f")))
        live.start()
        assert live.wait_until_ready(READY_WAIT)
        assert phaseflag_thread_names() == ["phaseflag-sync"]

    def test_polling_interval_setter_takes_effect(
        self, api: responses.RequestsMock, live: PhaseFlagClient
    ) -> None:
        """Lowering polling_interval on a running client makes it poll at the new pace at once."""
        serve(api, ruleset(boolean_flag("f")))
        api.get(RULESET_URL, status=304)
        live.start()
        assert live.wait_until_ready(READY_WAIT)
        assert len(api.calls) == 1
        live.polling_interval = 0.02
        wait_for(lambda: len(api.calls) >= 4, timeout=3.0)
        assert live.polling_interval == 0.02

    def test_stop_interrupts_a_long_wait(
        self, api: responses.RequestsMock, live: PhaseFlagClient
    ) -> None:
        """stop() during an hour-long wait returns at once and the thread is gone."""
        serve(api, ruleset(boolean_flag("f")))
        live.start()
        assert live.wait_until_ready(READY_WAIT)
        started = time.monotonic()
        live.stop()
        assert time.monotonic() - started < 1.0
        assert phaseflag_thread_names() == []

    def test_thread_recovers_after_server_errors(
        self, api: responses.RequestsMock, make_client: Any
    ) -> None:
        """The thread retries 5xx answers with a short backoff and becomes ready on the 200."""
        client = make_client(base_url=BASE, api_key=KEY, polling_interval=0.05, send_events=False)
        api.get(RULESET_URL, status=503)
        api.get(RULESET_URL, body=requests.ConnectionError("reset"))
        serve(api, ruleset(string_flag("color", "green")))
        client.start()
        assert client.wait_until_ready(3.0)
        assert client.get_string_value("color", "none") == "green"
        assert len(api.calls) >= 3


def test_a_closed_store_applies_and_announces_nothing() -> None:
    """After stop() closes the store, a sync thread still finishing changes nothing: no
    ruleset applied, no listener fired, no failure counted; start() reopens it."""
    client = PhaseFlagClient(base_url="", api_key="")
    store = client._store
    heard: list[str] = []
    client.on("change", lambda _e: heard.append("change"))
    client.on("error", lambda _e: heard.append("error"))
    raw = to_bytes(ruleset(boolean_flag("f"), version=3))
    store.close()
    store.apply_document(raw, "live")
    store.sync_succeeded()
    store.sync_failed(TransportError("late"))
    assert client.ruleset.version != 3
    assert heard == []
    assert client.status().consecutive_failures == 0
    store.reopen()
    store.apply_document(raw, "live")
    assert client.ruleset.version == 3
    assert heard == ["change"]
