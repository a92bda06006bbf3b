"""PhaseFlagClient: lifecycle, cache, bootstrap, overrides, listeners, remote evaluation,
events, health and safety, over a ``responses`` mock of the PhaseFlag API.
"""

from __future__ import annotations

import json
import logging
import math
import random
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from conftest import (
    READY_WAIT,
    boolean_flag,
    json_flag,
    number_flag,
    phaseflag_thread_names,
    rule,
    ruleset,
    string_flag,
    to_bytes,
    wait_for,
)

from phaseflag import (
    Cache,
    ChangeEvent,
    ClientStatus,
    ConfigError,
    ErrorCode,
    EvaluationContext,
    EvaluationEvent,
    EvaluationResult,
    FileCache,
    MemoryCache,
    PhaseFlagClient,
    Reason,
    TransportError,
)
from phaseflag._cache import cache_key
from phaseflag._sync import Poller
from phaseflag._transport import Transport
from phaseflag._version import __version__

BASE = "https://api.phaseflag.test/api/v1"
RULESET_URL = BASE + "/sdk/ruleset"
EVENTS_URL = BASE + "/sdk/events"
EVALUATE_URL = BASE + "/sdk/evaluate"
CDN_URL = "https://cdn.phaseflag.test/flags/bootstrap.json"
KEY = "sdk-secret-client-0123456789abcdef"

Client = PhaseFlagClient
Make = Callable[..., PhaseFlagClient]


def serve(api: responses.RequestsMock, document: dict[str, Any]) -> None:
    """Queue one 200 answer on GET /sdk/ruleset carrying ``document``."""
    api.get(RULESET_URL, body=to_bytes(document), headers={"ETag": f'"v{document["version"]}"'})


def calls_to(api: responses.RequestsMock, url: str) -> list[Any]:
    """The recorded calls to ``url``."""
    return [c for c in api.calls if c.request.url == url]


@pytest.fixture
def api() -> Iterator[responses.RequestsMock]:
    """A responses mock; an unregistered URL fails with ConnectionError and is recorded."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def make(api: responses.RequestsMock, make_client: Make) -> Make:
    """``make(**options)``: a client for BASE/KEY (events off unless asked), stopped after."""

    def build(**options: Any) -> PhaseFlagClient:
        options.setdefault("base_url", BASE)
        options.setdefault("api_key", KEY)
        options.setdefault("send_events", False)
        return make_client(**options)

    return build


def stepper(client: PhaseFlagClient) -> Callable[[], float]:
    """A hand-stepped poller reporting to ``client``: each call fetches once."""
    transport = Transport(BASE, KEY)
    return Poller(transport.fetch_ruleset, client._store, 30.0, rng=random.Random(3)).step


class _HeldCache(MemoryCache):
    """A memory cache whose writes wait (up to 30 s) until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def set(self, key: str, value: bytes) -> None:
        self.release.wait(30)
        super().set(key, value)


class Recorder:
    """A listener that records its calls and sets ``called`` on each."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.called = threading.Event()

    def __call__(self, *args: Any) -> None:
        self.calls.append(args)
        self.called.set()


# -- lifecycle -------------------------------------------------------------------------------------


class TestLifecycle:
    def test_constructor_does_no_io_and_starts_no_thread(
        self, api: responses.RequestsMock, make: Make
    ) -> None:
        """Building a client (even with bootstrap_url) makes no request and starts no thread."""
        client = make(bootstrap_url=CDN_URL, bootstrap={"flags": {"a": True}})
        assert len(api.calls) == 0
        assert phaseflag_thread_names() == []
        assert client.status().state == "new"
        assert not client.is_ready

    def test_start_is_idempotent(self, api: responses.RequestsMock, make: Make) -> None:
        """Calling start() repeatedly runs one sync and one events thread and fetches once."""
        serve(api, ruleset(boolean_flag("f")))
        client = make(send_events=True, polling_interval=3600)
        client.start()
        client.start()
        assert client.wait_until_ready(READY_WAIT)
        client.start()
        assert phaseflag_thread_names() == ["phaseflag-events", "phaseflag-sync"]
        assert len(calls_to(api, RULESET_URL)) == 1

    def test_is_ready_follows_first_sync(self, api: responses.RequestsMock, make: Make) -> None:
        """is_ready is False before start and True once the first ruleset is in."""
        serve(api, ruleset(boolean_flag("f")))
        client = make()
        assert client.is_ready is False
        client.start()
        assert client.wait_until_ready(READY_WAIT) is True
        assert client.is_ready is True

    @pytest.mark.parametrize(
        "down",
        [{"status": 503}, {"body": requests.ConnectionError("refused")}],
        ids=["503", "refused"],
    )
    def test_wait_until_ready_returns_false_within_timeout_when_api_down(
        self, api: responses.RequestsMock, make: Make, down: dict[str, Any]
    ) -> None:
        """With the API down, wait_until_ready(t) returns False after about t seconds."""
        api.get(RULESET_URL, **down)
        client = make()
        client.start()
        started = time.monotonic()
        assert client.wait_until_ready(timeout=0.3) is False
        assert 0.29 <= time.monotonic() - started < 3.0  # 10x margin for a loaded machine

    def test_wait_until_ready_before_start_times_out(self, make: Make) -> None:
        """Waiting on a client that was never started returns False after the timeout."""
        started = time.monotonic()
        assert make().wait_until_ready(0.1) is False
        assert time.monotonic() - started < 2.0

    @pytest.mark.parametrize("timeout", ["soon", None, -1, math.nan, 0])
    def test_wait_until_ready_never_raises(self, make: Make, timeout: Any) -> None:
        """Odd timeouts make wait_until_ready return a bool at once, never raise."""
        started = time.monotonic()
        assert make().wait_until_ready(timeout) is False
        ready = make(base_url="", bootstrap={"flags": {}})
        ready.start()
        assert ready.wait_until_ready(timeout) is True
        assert time.monotonic() - started < 5.0  # "at once": far below any real wait

    def test_stop_joins_threads_and_is_idempotent(
        self, api: responses.RequestsMock, make: Make
    ) -> None:
        """stop() ends every phaseflag thread before returning; a second stop() does nothing."""
        serve(api, ruleset(boolean_flag("f")))
        client = make(send_events=True, polling_interval=3600)
        client.start()
        assert client.wait_until_ready(READY_WAIT)
        client.stop()
        assert phaseflag_thread_names() == []
        assert client.status().state == "stopped"
        client.stop()
        assert client.status().state == "stopped"

    def test_wait_until_ready_with_infinite_timeout_waits(
        self, api: responses.RequestsMock, make: Make
    ) -> None:
        """wait_until_ready(math.inf) waits for readiness instead of failing at once."""
        serve(api, ruleset(boolean_flag("f")))
        client = make()
        starter = threading.Timer(0.05, client.start)
        starter.start()
        try:
            assert client.wait_until_ready(math.inf) is True
        finally:
            starter.join()

    def test_stop_closes_the_cache_and_reads_still_work(
        self, api: responses.RequestsMock, make: Make
    ) -> None:
        """stop() closes the cache; afterwards reads and evaluate() serve the data held."""

        class Tracked(MemoryCache):
            closed = 0

            def close(self) -> None:
                Tracked.closed += 1

        serve(api, ruleset(string_flag("color", "green")))
        client = make(cache=Tracked())
        client.start()
        assert client.wait_until_ready(READY_WAIT)
        client.stop()
        assert Tracked.closed == 1
        assert client.get_string_value("color", "none") == "green"
        result = client.evaluate("color", EvaluationContext(user_id="u"))
        assert result.value == "green" and result.error_message

    def test_stop_before_start_is_harmless(self, make: Make) -> None:
        """stop() on a client that never started returns quietly."""
        client = make()
        client.stop()
        client.close()
        assert phaseflag_thread_names() == []

    def test_restart_after_stop(self, api: responses.RequestsMock, make: Make) -> None:
        """A stopped client can be started again and stopped again."""
        serve(api, ruleset(boolean_flag("f")))
        client = make(polling_interval=3600)
        client.start()
        assert client.wait_until_ready(READY_WAIT)
        client.stop()
        client.start()
        assert phaseflag_thread_names() == ["phaseflag-sync"]
        wait_for(lambda: len(calls_to(api, RULESET_URL)) == 2, timeout=2.0)
        client.stop()
        assert phaseflag_thread_names() == []

    def test_context_manager_starts_and_stops(
        self, api: responses.RequestsMock, make: Make
    ) -> None:
        """``with client:`` starts it (threads running) and stops it on exit (threads gone)."""
        serve(api, ruleset(boolean_flag("f")))
        with make(send_events=True) as client:
            assert client.wait_until_ready(READY_WAIT)
            assert client.get_boolean_value("f", False) is True
            assert phaseflag_thread_names() == ["phaseflag-events", "phaseflag-sync"]
        assert phaseflag_thread_names() == []
        assert client.status().state == "stopped"

    @pytest.mark.e2e
    def test_import_starts_no_thread(self) -> None:
        """``import phaseflag`` (and its public modules) starts no thread."""
        code = (
            "import threading, phaseflag, phaseflag.types\n"
            "print(sorted(t.name for t in threading.enumerate()))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
        )
        assert out.stdout.strip() == "['MainThread']"


# -- cache -----------------------------------------------------------------------------------------


class TestCache:
    def test_live_changes_are_written_to_the_cache(
        self, api: responses.RequestsMock, make: Make
    ) -> None:
        """Every applied live ruleset is stored, as JSON, under the environment's cache key."""
        cache = MemoryCache()
        client = make(cache=cache)
        step = stepper(client)
        serve(api, ruleset(boolean_flag("a"), version=1))
        serve(api, ruleset(boolean_flag("a"), boolean_flag("b"), version=2))
        step()
        stored = cache.get(cache_key(BASE, KEY))
        assert stored is not None and json.loads(stored)["version"] == 1
        step()
        stored = cache.get(cache_key(BASE, KEY))
        assert stored is not None
        assert [f["key"] for f in json.loads(stored)["flags"]] == ["a", "b"]

    def test_readiness_and_listeners_do_not_wait_for_the_cache_write(
        self, api: responses.RequestsMock, make: Make
    ) -> None:
        """The first fetch makes the client ready and tells listeners before the cache is
        written, so a slow disk (an fsync) delays neither; the write follows on the sync
        thread."""
        cache = _HeldCache()
        serve(api, ruleset(boolean_flag("a"), version=1))
        client = make(cache=cache)
        changes = Recorder()
        client.on("change", changes)
        client.start()
        try:
            assert client.wait_until_ready(READY_WAIT)  # the write is still held back
            assert changes.called.is_set()
            assert cache.get(cache_key(BASE, KEY)) is None
        finally:
            cache.release.set()
        wait_for(lambda: cache.get(cache_key(BASE, KEY)) is not None, READY_WAIT)
        stored = cache.get(cache_key(BASE, KEY))
        assert stored is not None and json.loads(stored)["version"] == 1

    def test_restart_during_outage_serves_cached_flags(
        self, api: responses.RequestsMock, make: Make, tmp_path: Path
    ) -> None:
        """A new client sharing the file cache serves the cached flags while the API is down."""
        serve(api, ruleset(string_flag("color", "green"), version=4))
        first = make(cache=FileCache(tmp_path))
        first.start()
        assert first.wait_until_ready(READY_WAIT)
        # The write follows readiness on the sync thread; stop() waits for it within 1 s.
        wait_for(lambda: FileCache(tmp_path).get(cache_key(BASE, KEY)) is not None, READY_WAIT)
        first.stop()

        api.get(RULESET_URL, status=503)
        second = make(cache=FileCache(tmp_path))
        second.start()
        assert second.get_string_value("color", "none") == "green"
        status = second.status()
        assert (status.ruleset_source, status.ruleset_version) == ("cache", 4)

    @pytest.mark.parametrize(
        ("bootstrap_version", "cache_version", "winner"),
        [(5, 3, "bootstrap"), (2, 3, "cache"), (3, 3, "bootstrap")],
    )
    def test_higher_version_wins_between_bootstrap_and_cache(
        self,
        api: responses.RequestsMock,
        make: Make,
        bootstrap_version: int,
        cache_version: int,
        winner: str,
    ) -> None:
        """Of bootstrap and cached data the higher version is served (a tie keeps bootstrap)."""
        api.get(RULESET_URL, status=503)
        cache = MemoryCache()
        cached = ruleset(string_flag("color", "cache"), version=cache_version)
        cache.set(cache_key(BASE, KEY), to_bytes(cached))
        bootstrap = ruleset(string_flag("color", "bootstrap"), version=bootstrap_version)
        client = make(cache=cache, bootstrap=bootstrap)
        client.start()
        assert client.get_string_value("color", "none") == winner
        assert client.status().ruleset_source == winner

    def test_live_data_wins_even_with_a_lower_version(
        self, api: responses.RequestsMock, make: Make
    ) -> None:
        """A live ruleset replaces bootstrap data of a higher version."""
        serve(api, ruleset(string_flag("color", "live"), version=1))
        client = make(bootstrap=ruleset(string_flag("color", "bootstrap"), version=10))
        client.start()
        assert client.wait_until_ready(READY_WAIT)
        assert client.get_string_value("color", "none") == "live"
        assert client.status().ruleset_version == 1

    def test_corrupt_cache_entry_is_ignored(
        self, api: responses.RequestsMock, make: Make, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A cached entry that is not a valid ruleset is skipped with a warning."""
        api.get(RULESET_URL, status=503)
        cache = MemoryCache()
        cache.set(cache_key(BASE, KEY), b"{not json")
        client = make(cache=cache, bootstrap={"flags": {"a": "boot"}})
        client.start()
        assert client.get_string_value("a", "none") == "boot"
        assert "cached ruleset" in caplog.text

    def test_failing_cache_never_breaks_the_client(
        self, api: responses.RequestsMock, make: Make
    ) -> None:
        """A cache whose get/set raise only costs a warning; sync and reads work."""

        class Broken(Cache):
            def get(self, key: str) -> bytes | None:
                raise OSError("disk gone")

            def set(self, key: str, value: bytes) -> None:
                raise OSError("disk gone")

            def delete(self, key: str) -> None:
                raise OSError("disk gone")

        serve(api, ruleset(boolean_flag("f")))
        client = make(cache=Broken())
        client.start()
        assert client.wait_until_ready(READY_WAIT)
        assert client.get_boolean_value("f", False) is True


# -- bootstrap and offline -------------------------------------------------------------------------


class TestBootstrap:
    def test_bootstrap_dict_is_served_before_start(self, make: Make) -> None:
        """A bootstrap dict is compiled in the constructor: reads work before start()."""
        client = make(bootstrap=ruleset(string_flag("color", "teal"), version=7))
        assert client.get_string_value("color", "none") == "teal"
        assert (client.status().ruleset_source, client.status().ruleset_version) == ("bootstrap", 7)

    def test_bootstrap_file_full_ruleset(self, make: Make, tmp_path: Path) -> None:
        """bootstrap_file accepts a full ruleset document (str or Path)."""
        path = tmp_path / "bootstrap.json"
        path.write_text(json.dumps(ruleset(number_flag("limit", 25), json_flag("cfg", {"x": 1}))))
        for given in (path, str(path)):
            client = make(bootstrap_file=given)
            assert client.get_integer_value("limit", 0) == 25
            assert client.get_json_value("cfg", {}) == {"x": 1}

    def test_bootstrap_file_shorthand(self, make: Make, tmp_path: Path) -> None:
        """bootstrap_file accepts the shorthand {"flags": {key: value}} for static values."""
        path = tmp_path / "flags.json"
        values = {"on": True, "theme": "dark", "limit": 3, "ratio": 0.5, "cfg": {"a": [1]}}
        path.write_text(json.dumps({"flags": values}))
        client = make(bootstrap_file=path)
        assert client.get_boolean_value("on", False) is True
        assert client.get_string_value("theme", "light") == "dark"
        assert client.get_integer_value("limit", 0) == 3
        assert client.get_float_value("ratio", 0.0) == 0.5
        assert client.get_json_value("cfg", {}) == {"a": [1]}
        assert client.all_flags() == values

    @pytest.mark.parametrize(
        "content",
        [None, b"{broken", b'{"schema_version": 1, "flags": 5}', b"\xff\xfe"],
        ids=["missing", "not-json", "schema", "not-utf8"],
    )
    def test_bad_bootstrap_file_raises_config_error(
        self, make: Make, tmp_path: Path, content: bytes | None
    ) -> None:
        """A missing or invalid bootstrap_file raises ConfigError naming bootstrap_file."""
        path = tmp_path / "bootstrap.json"
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(ConfigError) as info:
            make(bootstrap_file=path)
        assert info.value.option == "bootstrap_file"

    def test_bootstrap_url_fetched_once_at_start(
        self, api: responses.RequestsMock, make: Make
    ) -> None:
        """bootstrap_url is fetched once, without the SDK key, however often the poller runs."""
        api.get(CDN_URL, json=ruleset(string_flag("color", "cdn")))
        api.get(RULESET_URL, status=503)
        client = make(bootstrap_url=CDN_URL, offline_mode=True, polling_interval=0.02)
        client.start()
        assert client.wait_until_ready(READY_WAIT)
        assert client.get_string_value("color", "none") == "cdn"
        wait_for(lambda: len(calls_to(api, RULESET_URL)) >= 3, timeout=3.0)
        cdn_calls = calls_to(api, CDN_URL)
        assert len(cdn_calls) == 1
        assert "Authorization" not in cdn_calls[0].request.headers

    def test_bootstrap_url_not_fetched_when_live_data_came_first(
        self, api: responses.RequestsMock, make: Make
    ) -> None:
        """The live fetch goes first; with live data in, the bootstrap_url is never fetched."""
        api.get(CDN_URL, status=404)
        serve(api, ruleset(string_flag("color", "live")))
        client = make(bootstrap_url=CDN_URL)
        errors = Recorder()
        client.on("error", errors)
        client.start()
        assert client.wait_until_ready(READY_WAIT)
        assert client.get_string_value("color", "none") == "live"
        client.stop()
        assert [c.request.url for c in api.calls if c.request.url == CDN_URL] == []
        assert errors.calls == []

    def test_offline_mode_ready_on_bootstrap_when_api_unreachable(
        self, api: responses.RequestsMock, make: Make, tmp_path: Path
    ) -> None:
        """offline_mode=True becomes ready at once on bootstrap data when the API is down."""
        path = tmp_path / "b.json"
        path.write_text(json.dumps({"flags": {"new-checkout-flow": True}}))
        api.get(RULESET_URL, body=requests.ConnectionError("unreachable"))
        client = make(offline_mode=True, bootstrap_file=path)
        client.start()
        started = time.monotonic()
        assert client.wait_until_ready(30.0)
        assert time.monotonic() - started < 5.0  # at once, not after the 30 s wait
        assert client.get_boolean_value("new-checkout-flow", False) is True

    def test_without_offline_mode_bootstrap_serves_but_is_not_ready(
        self, api: responses.RequestsMock, make: Make
    ) -> None:
        """Without offline_mode the client waits for the API, yet reads use the bootstrap data."""
        api.get(RULESET_URL, body=requests.ConnectionError("unreachable"))
        client = make(bootstrap={"flags": {"a": True}})
        client.start()
        assert client.wait_until_ready(0.2) is False
        assert client.get_boolean_value("a", False) is True

    def test_empty_base_url_makes_no_http_call(
        self, api: responses.RequestsMock, make: Make
    ) -> None:
        """base_url='' sends nothing, starts no thread and is ready at once."""
        client = make(base_url="", api_key="", bootstrap={"flags": {"a": "x"}}, send_events=True)
        client.start()
        assert client.is_ready and client.wait_until_ready(0)
        assert phaseflag_thread_names() == []
        assert client.get_string_value("a", "none") == "x"
        client.track_event(EvaluationEvent(flag_key="a"))
        assert client.flush_events() is True
        result = client.evaluate("a", EvaluationContext(user_id="u"))
        assert result.value == "x" and result.error_message
        client.stop()
        assert len(api.calls) == 0


# -- overrides -------------------------------------------------------------------------------------


class TestOverrides:
    @pytest.fixture
    def client(self, make: Make) -> PhaseFlagClient:
        """A client holding a string flag whose rule serves "pro" to plan=pro."""
        color = string_flag("color", "basic", rules=[rule("plan", "equals", ["pro"], "off")])
        color["variations"][1]["value"] = "pro"
        return make(bootstrap=ruleset(color, boolean_flag("on")))

    def test_override_beats_rules(self, client: PhaseFlagClient) -> None:
        """An override is served to every context, ahead of the rules, with reason override."""
        pro = EvaluationContext(user_id="u", attributes={"plan": "pro"})
        assert client.get_string_value("color", "", pro) == "pro"
        client.set_override("color", "forced")
        assert client.get_string_value("color", "", pro) == "forced"
        assert client.get_string_value("color", "") == "forced"
        result = client.get_variation("color", pro)
        assert result is not None and result.reason == Reason.OVERRIDE == "override"

    def test_override_works_without_the_flag_or_any_data(self, make: Make) -> None:
        """Overrides serve flags the ruleset lacks, even with HTTP disabled and no data."""
        client = PhaseFlagClient(base_url="", api_key="")
        client.set_override("new-checkout-flow", True)
        assert client.get_boolean_value("new-checkout-flow", False) is True

    def test_typed_getters_check_override_types(self, client: PhaseFlagClient) -> None:
        """An override of the wrong type gives the caller's default (TYPE_MISMATCH in details)."""
        client.set_override("on", "yes")
        assert client.get_boolean_value("on", False) is False
        assert client.get_string_value("on", "") == "yes"
        details = client.get_boolean_details("on", False)
        assert (details.value, details.error_code) == (False, ErrorCode.TYPE_MISMATCH)

    def test_clear_override_and_clear_all(self, client: PhaseFlagClient) -> None:
        """clear_override restores the rule value for one flag; clear_all_overrides for all."""
        client.set_override("color", "x")
        client.set_override("on", False)
        client.clear_override("color")
        client.clear_override("never-set")
        assert client.get_string_value("color", "") == "basic"
        assert client.get_boolean_value("on", True) is False
        client.clear_all_overrides()
        assert client.get_boolean_value("on", False) is True

    def test_overrides_are_thread_safe(self, client: PhaseFlagClient) -> None:
        """Setting and clearing overrides from threads while others read never breaks a read."""
        allowed = {"basic"} | {f"w{i}-{n}" for i in range(3) for n in range(300)}
        seen: set[str] = set()
        problems: list[BaseException] = []
        barrier = threading.Barrier(6)

        def writer(i: int) -> None:
            barrier.wait()
            for n in range(300):
                client.set_override("color", f"w{i}-{n}")
                client.set_override(f"other-{i}", n)
                if n % 3 == 0:
                    client.clear_override("color")
                if n % 50 == 0:
                    client.clear_all_overrides()

        def reader() -> None:
            barrier.wait()
            for _ in range(1500):
                seen.add(client.get_string_value("color", "default"))

        def guarded(target: Callable[..., None], *args: Any) -> threading.Thread:
            def run() -> None:
                try:
                    target(*args)
                except BaseException as exc:  # reported by the assertion below
                    problems.append(exc)

            return threading.Thread(target=run)

        threads = [guarded(writer, i) for i in range(3)] + [guarded(reader) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert problems == []
        assert seen <= allowed and "basic" in allowed


# -- listeners -------------------------------------------------------------------------------------


class TestListeners:
    def test_on_flags_changed_fires_after_each_applied_change(
        self, api: responses.RequestsMock, make: Make
    ) -> None:
        """on_flags_changed gets {key: definition} after each change, not after a 304."""
        client = make()
        step = stepper(client)
        seen = Recorder()
        client.on_flags_changed(seen)
        serve(api, ruleset(boolean_flag("a"), version=1))
        api.get(RULESET_URL, status=304)
        serve(api, ruleset(boolean_flag("a"), string_flag("b"), version=2))
        step()
        step()
        step()
        assert [sorted(args[0]) for args in seen.calls] == [["a"], ["a", "b"]]
        flags = seen.calls[1][0]
        assert flags["b"]["type"] == "string" and flags["a"]["key"] == "a"

    def test_ready_fires_once(self, api: responses.RequestsMock, make: Make) -> None:
        """The ready event fires on the first good sync only."""
        client = make()
        step = stepper(client)
        ready = Recorder()
        client.on("ready", ready)
        serve(api, ruleset(boolean_flag("a"), version=1))
        serve(api, ruleset(boolean_flag("a", False), version=2))
        step()
        step()
        assert ready.calls == [()]

    def test_change_event_lists_keys_and_versions(
        self, api: responses.RequestsMock, make: Make
    ) -> None:
        """change carries the changed/added/removed keys and the old and new versions."""
        client = make()
        step = stepper(client)
        changes = Recorder()
        client.on("change", changes)
        serve(api, ruleset(boolean_flag("a"), boolean_flag("b"), boolean_flag("c"), version=1))
        serve(
            api, ruleset(boolean_flag("a"), boolean_flag("b", False), boolean_flag("d"), version=2)
        )
        step()
        step()
        first, second = (args[0] for args in changes.calls)
        assert isinstance(first, ChangeEvent)
        assert (first.previous_version, first.current_version, first.source) == (None, 1, "live")
        assert sorted(first.keys) == ["a", "b", "c"]
        assert (second.previous_version, second.current_version) == (1, 2)
        assert sorted(second.keys) == ["b", "c", "d"]
        by_key = {change.key: change for change in second.flags}
        assert by_key["c"].removed and by_key["d"].added
        assert not by_key["b"].added and not by_key["b"].removed

    def test_error_event_gets_the_exception(self, api: responses.RequestsMock, make: Make) -> None:
        """error listeners get the exception of each failed sync."""
        client = make()
        step = stepper(client)
        errors = Recorder()
        client.on("error", errors)
        api.get(RULESET_URL, status=500)
        step()
        step()
        assert len(errors.calls) == 2
        assert all(isinstance(args[0], TransportError) for args in errors.calls)

    def test_unsubscribe_stops_calls(self, api: responses.RequestsMock, make: Make) -> None:
        """After unsubscribe() a listener is not called again; unsubscribing twice is harmless."""
        client = make()
        step = stepper(client)
        flags, changes = Recorder(), Recorder()
        stop_flags = client.on_flags_changed(flags)
        stop_changes = client.on("change", changes)
        serve(api, ruleset(boolean_flag("a"), version=1))
        serve(api, ruleset(boolean_flag("b"), version=2))
        step()
        stop_flags()
        stop_changes()
        stop_flags()
        step()
        assert len(flags.calls) == 1 and len(changes.calls) == 1

    def test_unknown_event_name_is_rejected(self, make: Make) -> None:
        """Subscribing to an event that does not exist raises ValueError at once."""
        with pytest.raises(ValueError, match="unknown event"):
            make().on("changed", print)

    def test_raising_listener_is_logged_and_sync_continues(
        self, api: responses.RequestsMock, make: Make, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A listener that raises is logged; other listeners still run and sync goes on."""
        client = make()
        step = stepper(client)

        def explode(*args: Any) -> None:
            raise RuntimeError("listener bug")

        after = Recorder()
        client.on_flags_changed(explode)
        client.on("change", explode)
        client.on_flags_changed(after)
        serve(api, ruleset(string_flag("color", "one"), version=1))
        serve(api, ruleset(string_flag("color", "two"), version=2))
        step()
        step()
        assert client.get_string_value("color", "") == "two"
        assert len(after.calls) == 2
        assert "listener raised" in caplog.text and "listener bug" in caplog.text

    def test_listener_runs_on_the_sync_thread(
        self, api: responses.RequestsMock, make: Make
    ) -> None:
        """With a running client, on_flags_changed fires from the phaseflag-sync thread."""
        serve(api, ruleset(boolean_flag("a")))
        client = make()
        names: list[str] = []
        done = threading.Event()

        def record(flags: dict[str, Any]) -> None:
            names.append(threading.current_thread().name)
            done.set()

        client.on_flags_changed(record)
        client.start()
        assert done.wait(2.0)
        assert names == ["phaseflag-sync"]


# -- remote evaluation -----------------------------------------------------------------------------


class TestRemoteEvaluate:
    @pytest.fixture
    def client(self, make: Make) -> PhaseFlagClient:
        """A client with local data, so fallbacks to the local result are visible."""
        return make(bootstrap=ruleset(string_flag("color", "local")))

    def test_payload_shape(self, api: responses.RequestsMock, client: PhaseFlagClient) -> None:
        """evaluate() POSTs {flag_key, context: {user_id, session_id, attributes}} with the key."""
        api.post(EVALUATE_URL, json={"flag_key": "color", "value": "x", "reason": "default"})
        ctx = EvaluationContext(user_id="u1", session_id="s1", attributes={"plan": "pro", "n": 3})
        client.evaluate(flag_key="color", ctx=ctx)
        request = calls_to(api, EVALUATE_URL)[0].request
        assert json.loads(request.body) == {
            "flag_key": "color",
            "context": {"user_id": "u1", "session_id": "s1", "attributes": {"plan": "pro", "n": 3}},
        }
        assert request.headers["Authorization"] == f"Bearer {KEY}"
        assert request.headers["Content-Type"] == "application/json"

    def test_default_context_is_merged_under_ctx(
        self, api: responses.RequestsMock, make: Make
    ) -> None:
        """With a default_context, evaluate() sends it merged under ctx, as reads use it."""
        api.post(EVALUATE_URL, json={"flag_key": "color", "value": "x", "reason": "default"})
        default = EvaluationContext(session_id="s0", attributes={"plan": "pro", "region": "eu"})
        client = make(default_context=default)
        client.evaluate("color", EvaluationContext(user_id="u1", attributes={"region": "us"}))
        client.evaluate("color")
        first, second = (json.loads(c.request.body)["context"] for c in api.calls)
        assert first == {
            "user_id": "u1",
            "session_id": "s0",
            "attributes": {"plan": "pro", "region": "us"},
        }
        assert second == default.to_dict()

    def test_200_is_parsed_into_a_result(
        self, api: responses.RequestsMock, client: PhaseFlagClient
    ) -> None:
        """A 200 answer becomes an EvaluationResult with the server's fields."""
        api.post(
            EVALUATE_URL,
            json={
                "flag_key": "color",
                "value": "remote",
                "reason": "targeting_match",
                "variation_key": "v2",
                "rule_id": "r1",
            },
        )
        result = client.evaluate("color", EvaluationContext(user_id="u1"))
        assert result == EvaluationResult("color", "remote", "targeting_match", "v2", "r1")

    def test_404_is_flag_not_found(
        self, api: responses.RequestsMock, client: PhaseFlagClient
    ) -> None:
        """A 404 from the server is a FLAG_NOT_FOUND error result."""
        api.post(EVALUATE_URL, status=404)
        result = client.evaluate("missing", EvaluationContext(user_id="u1"))
        assert (result.reason, result.error_code) == (Reason.ERROR, ErrorCode.FLAG_NOT_FOUND)

    @pytest.mark.parametrize(
        "answer",
        [
            {"status": 500},
            {"body": requests.exceptions.ReadTimeout("slow")},
            {"body": requests.ConnectionError("down")},
            {"body": b"not json"},
            {"json": {"unexpected": True}},
            {"status": 401},
        ],
        ids=["500", "timeout", "network", "not-json", "wrong-shape", "401"],
    )
    def test_failure_returns_local_result_with_message(
        self, api: responses.RequestsMock, client: PhaseFlagClient, answer: dict[str, Any]
    ) -> None:
        """When the remote call fails, the local evaluation comes back with error_message set."""
        api.post(EVALUATE_URL, **answer)
        result = client.evaluate("color", EvaluationContext(user_id="u1"))
        assert result.value == "local"
        assert result.error_message and "remote evaluation failed" in result.error_message
        assert KEY not in result.error_message

    @pytest.mark.parametrize(
        ("key", "ctx"),
        [("color", "not a context"), (123, None), (None, EvaluationContext()), ("color", None)],
    )
    def test_never_raises(
        self, api: responses.RequestsMock, client: PhaseFlagClient, key: Any, ctx: Any
    ) -> None:
        """Odd arguments give a result, never an exception."""
        api.post(EVALUATE_URL, status=503)
        assert isinstance(client.evaluate(key, ctx), EvaluationResult)


# -- events ----------------------------------------------------------------------------------------


class TestEvents:
    @pytest.fixture
    def client(self, api: responses.RequestsMock, make: Make) -> PhaseFlagClient:
        """A client with events on (an hour between automatic flushes) and two flags."""
        api.post(EVENTS_URL, status=202)
        flags = ruleset(boolean_flag("tracked", track_events=True), boolean_flag("plain"))
        return make(send_events=True, event_flush_interval=3600, bootstrap=flags)

    def posted(self, api: responses.RequestsMock) -> list[dict[str, Any]]:
        """The JSON payloads POSTed to /sdk/events."""
        return [json.loads(c.request.body) for c in calls_to(api, EVENTS_URL)]

    def test_track_and_flush_posts_the_documented_payload(
        self, api: responses.RequestsMock, client: PhaseFlagClient
    ) -> None:
        """flush_events POSTs {sdk: {name, version}, events: [custom event with ms timestamp]}."""
        before = int(time.time() * 1000)
        client.track_event(
            EvaluationEvent(
                flag_key="new-checkout-flow",
                variation_key="enabled",
                user_id="user-123",
                metadata={"page": "checkout"},
            )
        )
        assert client.flush_events() is True
        (payload,) = self.posted(api)
        assert payload["sdk"] == {"name": "phaseflag-python", "version": __version__}
        (event,) = payload["events"]
        timestamp = event.pop("timestamp")
        assert event == {
            "kind": "custom",
            "flag_key": "new-checkout-flow",
            "variation_key": "enabled",
            "user_id": "user-123",
            "metadata": {"page": "checkout"},
        }
        assert isinstance(timestamp, int) and before <= timestamp <= int(time.time() * 1000)
        request = calls_to(api, EVENTS_URL)[0].request
        assert request.headers["Authorization"] == f"Bearer {KEY}"
        status = client.status()
        assert (status.events_sent, status.events_queued) == (1, 0)

    def test_summary_counts_flags_with_track_events(
        self, api: responses.RequestsMock, client: PhaseFlagClient
    ) -> None:
        """Evaluations of track_events flags are summarised per variation; others are not."""
        for _ in range(3):
            client.get_boolean_value("tracked", False)
            client.get_boolean_value("plain", False)
        assert client.flush_events() is True
        (payload,) = self.posted(api)
        (summary,) = payload["events"]
        assert summary["kind"] == "summary"
        assert summary["counters"] == [{"flag_key": "tracked", "variation_key": "on", "count": 3}]
        assert isinstance(summary["start"], int) and summary["start"] <= summary["end"]

    def test_stop_flushes_what_is_left(
        self, api: responses.RequestsMock, client: PhaseFlagClient
    ) -> None:
        """stop() sends the events still queued."""
        api.get(RULESET_URL, status=503)
        client.start()
        client.track_event(EvaluationEvent(flag_key="a"))
        client.track_event(EvaluationEvent(flag_key="b"))
        assert self.posted(api) == []
        client.stop()
        events = [e["flag_key"] for p in self.posted(api) for e in p["events"]]
        assert events == ["a", "b"]

    def test_rejected_batch_is_counted_as_failed(
        self, api: responses.RequestsMock, make: Make
    ) -> None:
        """A 400 from /sdk/events drops the batch and counts it in status().events_failed."""
        api.post(EVENTS_URL, status=400)
        client = make(send_events=True)
        client.track_event(EvaluationEvent(flag_key="a"))
        assert client.flush_events() is False
        status = client.status()
        assert (status.events_sent, status.events_failed, status.events_queued) == (0, 1, 0)

    def test_events_without_http_are_counted_as_dropped(self, make: Make) -> None:
        """With base_url='' tracked events cannot be sent and are counted as dropped."""
        client = make(base_url="", api_key="", send_events=True)
        client.track_event(EvaluationEvent(flag_key="a"))
        assert client.status().events_dropped == 1

    def test_send_events_false_posts_nothing(self, api: responses.RequestsMock, make: Make) -> None:
        """send_events=False never POSTs events, not even at stop()."""
        client = make(send_events=False, bootstrap=ruleset(boolean_flag("t", track_events=True)))
        client.get_boolean_value("t", False)
        client.track_event(EvaluationEvent(flag_key="t"))
        assert client.flush_events() is True
        client.stop()
        assert calls_to(api, EVENTS_URL) == []

    def test_track_event_with_wrong_type_never_raises(self, client: PhaseFlagClient) -> None:
        """track_event ignores (and logs) something that is not an EvaluationEvent."""
        client.track_event({"flag_key": "a"})  # type: ignore[arg-type]
        assert client.status().events_queued == 0


# -- health ----------------------------------------------------------------------------------------


class FakeClock:
    """Stands in for the ``time`` module inside phaseflag._client."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


class TestHealth:
    def test_status_before_start(self, make: Make) -> None:
        """A new client reports state new, nothing held, no syncs and zero counters."""
        assert make().status() == ClientStatus(
            state="new",
            ready=False,
            ruleset_version=None,
            ruleset_source=None,
            ruleset_age=None,
            flag_count=0,
            last_sync=None,
            consecutive_failures=0,
            last_error=None,
            stale=False,
            events_sent=0,
            events_dropped=0,
            events_failed=0,
            events_queued=0,
        )

    def test_status_after_sync(self, api: responses.RequestsMock, make: Make) -> None:
        """After a good sync the status shows the live version, flag count and a fresh age."""
        serve(api, ruleset(boolean_flag("a"), boolean_flag("b"), version=9))
        client = make()
        client.start()
        assert client.wait_until_ready(READY_WAIT)
        status = client.status()
        assert (status.state, status.ready, status.ruleset_version) == ("running", True, 9)
        assert (status.ruleset_source, status.flag_count) == ("live", 2)
        assert status.ruleset_age is not None and 0 <= status.ruleset_age < 5
        assert status.last_sync is not None and abs(status.last_sync - time.time()) < 5
        with pytest.raises(AttributeError):
            status.ready = False  # type: ignore[misc]

    def test_failures_are_counted(self, api: responses.RequestsMock, make: Make) -> None:
        """consecutive_failures and last_error track failed syncs and reset on success."""
        client = make()
        step = stepper(client)
        api.get(RULESET_URL, status=500)
        api.get(RULESET_URL, status=502)
        serve(api, ruleset(boolean_flag("a")))
        step()
        step()
        status = client.status()
        assert status.consecutive_failures == 2 and "502" in (status.last_error or "")
        step()
        assert client.status().consecutive_failures == 0

    def test_max_staleness_fires_stale_once_then_ready_on_recovery(
        self, api: responses.RequestsMock, make: Make, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Down longer than max_staleness: one stale event; the next good sync fires ready."""
        clock = FakeClock()
        monkeypatch.setattr("phaseflag._health.time", types.SimpleNamespace(time=clock.time))
        monkeypatch.setattr("phaseflag._store.time", types.SimpleNamespace(time=clock.time))
        client = make(max_staleness=30)
        step = stepper(client)
        ready, stale = Recorder(), Recorder()
        client.on("ready", ready)
        client.on("stale", stale)
        serve(api, ruleset(boolean_flag("a"), version=1))
        for _ in range(4):
            api.get(RULESET_URL, status=503)
        serve(api, ruleset(boolean_flag("a"), version=2))
        step()
        clock.now += 10
        step()
        assert stale.calls == [] and not client.status().stale
        clock.now += 25
        step()
        assert len(stale.calls) == 1 and stale.calls[0][0] == pytest.approx(35)
        assert client.status().stale
        clock.now += 100
        step()
        step()
        assert len(stale.calls) == 1
        assert client.get_boolean_value("a", False) is True  # stale data is still served
        step()
        assert len(ready.calls) == 2
        assert not client.status().stale


# -- safety ----------------------------------------------------------------------------------------


class TestSafety:
    def test_repr_hides_the_key(self, make: Make) -> None:
        """repr(client) shows only a redacted suffix of the API key."""
        text = repr(make())
        assert KEY not in text and KEY[:-4] not in text
        assert "...cdef" in text

    def test_logs_never_contain_the_key(
        self, api: responses.RequestsMock, make: Make, caplog: pytest.LogCaptureFixture
    ) -> None:
        """At DEBUG, failing syncs, flushes and remote calls never log the API key."""
        caplog.set_level(logging.DEBUG, logger="phaseflag")
        api.get(CDN_URL, body=requests.ConnectionError(f"cdn failed with {KEY}"))
        api.get(RULESET_URL, status=500)
        api.get(RULESET_URL, body=requests.ConnectionError(f"refused Bearer {KEY}"))
        api.get(RULESET_URL, body=b"{garbage")
        api.get(RULESET_URL, status=401)  # last: it backs off for a minute
        api.post(EVENTS_URL, body=requests.ConnectionError(f"events down {KEY}"))
        api.post(EVALUATE_URL, body=requests.ConnectionError(f"evaluate down {KEY}"))
        client = make(send_events=True, bootstrap_url=CDN_URL, polling_interval=0.01)
        errors = Recorder()
        client.on("error", errors)
        client.start()
        wait_for(lambda: len(calls_to(api, RULESET_URL)) >= 4, timeout=5.0)
        client.track_event(EvaluationEvent(flag_key="a"))
        client.flush_events()
        client.evaluate("a", EvaluationContext(user_id="u"))
        client.stop()
        assert len(errors.calls) >= 4
        assert caplog.records
        assert KEY not in caplog.text
        for record in caplog.records:
            assert KEY not in record.getMessage()
        for (error,) in errors.calls:
            assert KEY not in str(error)
        assert KEY not in (client.status().last_error or "")

    def test_config_errors_never_contain_the_key(self) -> None:
        """A malformed key is reported without echoing it."""
        bad = KEY + " \n"
        with pytest.raises(ConfigError) as info:
            PhaseFlagClient(base_url=BASE, api_key=bad)
        assert KEY not in str(info.value)

    @pytest.mark.e2e
    def test_debug_logs_to_stderr(self) -> None:
        """debug=True sends SDK log lines, DEBUG level included, to stderr."""
        code = (
            "from phaseflag import PhaseFlagClient\n"
            "c = PhaseFlagClient(base_url='', debug=True, bootstrap={'flags': {'a': True}})\n"
            "c.start(); c.stop()\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
        )
        assert "phaseflag DEBUG" in out.stderr
        assert out.stdout == ""

    def test_details_carry_the_fallback_value(self, make: Make) -> None:
        """get_*_details of a missing flag report the fallback's value with the error code."""
        client = make(fallback=lambda key, ctx: "from-fallback")
        details = client.get_string_details("missing", "default")
        assert (details.value, details.error_code) == ("from-fallback", ErrorCode.NOT_READY)

    def test_fallback_numbers_take_the_getter_type(self, make: Make) -> None:
        """A whole float from the fallback is an int for get_integer_value, an int a float."""
        client = make(fallback=lambda key, ctx: {"i": 2.0, "f": 3}.get(key))
        as_int, as_float = client.get_integer_value("i", 0), client.get_float_value("f", 0.0)
        assert (as_int, type(as_int), as_float, type(as_float)) == (2, int, 3.0, float)

    def test_read_warnings_are_bounded(self, make: Make, caplog: pytest.LogCaptureFixture) -> None:
        """Reads of many distinct missing flags warn once each up to a cap, never on every read."""
        client = make(bootstrap={"flags": {}})
        keys = [f"missing-{n}" for n in range(1100)]
        for _ in range(2):
            for key in keys:
                client.get_boolean_value(key, False)
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert 1000 <= len(warnings) <= len(keys)

    def test_raising_fallback_gives_the_default(self, make: Make) -> None:
        """A fallback function that raises is logged and the caller's default is returned."""

        def fallback(key: str, ctx: Any) -> Any:
            raise RuntimeError("fallback bug")

        client = make(fallback=fallback)
        assert client.get_string_value("missing", "default") == "default"


# -- no getter raises, whatever the state ----------------------------------------------------------

GETTERS: dict[str, tuple[Callable[[Client, Any, Any], Any], Any]] = {
    "boolean": (lambda c, k, x: c.get_boolean_value(k, True, x), bool),
    "string": (lambda c, k, x: c.get_string_value(k, "dflt", x), str),
    "integer": (lambda c, k, x: c.get_integer_value(k, 7, x), int),
    "float": (lambda c, k, x: c.get_float_value(k, 1.5, x), float),
    "json": (lambda c, k, x: c.get_json_value(k, {"d": 1}, x), (dict, list)),
    "variation": (lambda c, k, x: c.get_variation(k, x), (EvaluationResult, type(None))),
    "details": (lambda c, k, x: c.get_details(k, "dflt", x), EvaluationResult),
    "boolean_details": (lambda c, k, x: c.get_boolean_details(k, True, x), EvaluationResult),
    "string_details": (lambda c, k, x: c.get_string_details(k, "d", x), EvaluationResult),
    "integer_details": (lambda c, k, x: c.get_integer_details(k, 7, x), EvaluationResult),
    "float_details": (lambda c, k, x: c.get_float_details(k, 1.5, x), EvaluationResult),
    "json_details": (lambda c, k, x: c.get_json_details(k, {}, x), EvaluationResult),
    "all_flags": (lambda c, k, x: c.all_flags(x), dict),
}

STATES = ["not-started", "ready", "stopped", "bad-key", "no-data", "http-disabled"]

ARGUMENTS = [
    ("f", EvaluationContext(user_id="u", attributes={"plan": "pro"})),
    ("f", None),
    ("f", "not a context"),
    ("f", object()),
    ("f", {"user_id": "u", "plan": object()}),
    ("missing", EvaluationContext()),
    (123, None),
    (None, None),
    (["unhashable"], None),
]


@pytest.fixture
def client_in(
    request: pytest.FixtureRequest, api: responses.RequestsMock, make: Make
) -> PhaseFlagClient:
    """A client in the state named by the test's ``state`` parameter."""
    state = request.node.callspec.params["state"]
    document = ruleset(
        boolean_flag("f", rules=[rule("plan", "equals", ["pro"], "off")]), json_flag("j")
    )
    if state == "http-disabled":
        client = make(base_url="", api_key="", bootstrap=document)
        client.start()
        return client
    if state == "bad-key":
        api.get(RULESET_URL, status=401)
    elif state == "no-data":
        api.get(RULESET_URL, status=503)
    else:
        serve(api, document)
    client = make(polling_interval=3600)
    if state == "not-started":
        return client
    errors = Recorder()
    client.on("error", errors)
    client.start()
    if state in ("bad-key", "no-data"):
        assert errors.called.wait(2.0)
    else:
        assert client.wait_until_ready(READY_WAIT)
    if state == "stopped":
        client.stop()
    return client


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("getter", GETTERS)
def test_no_getter_raises_in_any_state(client_in: PhaseFlagClient, getter: str, state: str) -> None:
    """Every getter returns a value of its type for any state, key and context; none raises."""
    read, kind = GETTERS[getter]
    for key, ctx in ARGUMENTS:
        value = read(client_in, key, ctx)
        assert isinstance(value, kind), (key, ctx, value)
