"""Tests for PhaseFlagProvider through the real OpenFeature SDK: values, reasons, errors, events."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

pytest.importorskip("openfeature")

import requests
import responses
from conftest import wait_for
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext as OFContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode, ProviderFatalError, ProviderNotReadyError
from openfeature.flag_evaluation import FlagEvaluationDetails, Reason
from openfeature.hook import Hook, HookContext, HookHints
from openfeature.provider import ProviderStatus
from openfeature.track import TrackingEventDetails

import phaseflag._backoff
from phaseflag import ConfigError, EvaluationContext, PhaseFlagClient
from phaseflag.openfeature import PhaseFlagProvider, to_phaseflag_context
from phaseflag.testing import condition, create_mock_client, flag, rule, ruleset

API = "https://api.test/api/v1"
KEY = "sdk-test-key-0123456789"
UNREACHABLE = "http://127.0.0.1:1/api/v1"

CHECKOUT = flag(
    "checkout",
    variations={"on": True, "off": False},
    default="off",
    off="off",
    targets={"on": ["vip-1"]},
    rules=[rule(condition("plan", "in", "pro", "enterprise"), serve="on", id="paid")],
)
RULESET = ruleset(
    CHECKOUT,
    flag("static-on", True, metadata={"team": "growth", "tickets": 2, "nested": {"x": 1}}),
    flag("theme", "dark"),
    flag("limit", 3),
    flag("whole-float", 4.0),
    flag("ratio", 2.5),
    flag("config", {"provider": "stripe", "retries": 2}),
    flag("regions", ["eu", "us"]),
    flag("split", variations={"a": "A", "b": "B"}, default={"a": 50, "b": 50}),
    flag("parent", True, enabled=False),
    flag("child", True, prerequisites=[{"flag": "parent", "variation": "on"}]),
    flag("killed", variations={"on": True, "off": False}, default="on", off="off", enabled=False),
    flag(
        "broken",
        variations={"on": True, "off": False},
        default="off",
        rules=[rule(condition("plan", "no_such_operator", "x"), serve="on")],
    ),
)


@pytest.fixture(autouse=True)
def _reset_openfeature() -> Iterator[None]:
    yield
    api.shutdown()


@pytest.fixture(autouse=True)
def _quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients made here retry a failed fetch within 0.1 s, so a recovery shows at once."""
    monkeypatch.setattr(phaseflag._backoff, "RETRY_CAP", 0.1)


@pytest.fixture
def http() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_passthru("http://127.0.0.1")
        yield mock


def install(client: PhaseFlagClient | None = None, **kw: Any) -> OpenFeatureClient:
    """Set a provider over ``client`` (default: a mock serving RULESET) and wait for it."""
    provider = PhaseFlagProvider(
        client or create_mock_client(bootstrap=RULESET, strict=False), **kw
    )
    api.set_provider_and_wait(provider)
    return api.get_client()


#: Seconds a test waits for an event or a fetch before it fails.
WAIT = 5.0


class Recorder:
    """Collects phaseflag's events delivered to api.add_handler handlers (on SDK threads).

    Events of other providers (the SDK's no-op default answers at once) are ignored. Each
    delivery notifies a condition, so ``wait_for`` wakes on the event itself.
    """

    def __init__(self, *events: ProviderEvent) -> None:
        self.seen: list[tuple[ProviderEvent, EventDetails]] = []
        self._arrived = threading.Condition()
        for event in events:
            api.add_handler(event, self._handler(event))

    def _handler(self, event: ProviderEvent) -> Callable[[EventDetails], None]:
        def handle(details: EventDetails) -> None:
            if details.provider_name != "phaseflag":
                return
            with self._arrived:
                self.seen.append((event, details))
                self._arrived.notify_all()

        return handle

    def of(self, event: ProviderEvent) -> list[EventDetails]:
        with self._arrived:
            return [d for e, d in self.seen if e is event]

    def wait_for(self, event: ProviderEvent, count: int = 1) -> list[EventDetails]:
        """The ``event`` deliveries once there are ``count``; fails after WAIT seconds."""
        with self._arrived:
            arrived = self._arrived.wait_for(lambda: len(self.of(event)) >= count, WAIT)
        assert arrived, f"{count} x {event} not delivered within {WAIT} s"
        return self.of(event)


class FakeAPI:
    """Answers GET /sdk/ruleset from a switchable script: a document or an HTTP status."""

    def __init__(self, http: responses.RequestsMock, answer: dict[str, Any] | int) -> None:
        self.answer = answer
        self.calls = 0
        self.failures = 0
        self._answered = threading.Condition()
        http.add_callback(responses.GET, f"{API}/sdk/ruleset", callback=self._respond)

    def wait_for_failures(self, count: int) -> None:
        """Return once ``count`` requests got an error status; fail after WAIT seconds."""
        with self._answered:
            failed = self._answered.wait_for(lambda: self.failures >= count, WAIT)
        assert failed, f"{count} failed fetches not seen within {WAIT} s"

    def _respond(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        answer = self.answer
        with self._answered:
            self.calls += 1
            if isinstance(answer, int):
                self.failures += 1
            self._answered.notify_all()
        if isinstance(answer, int):
            return answer, {}, ""
        return 200, {"Content-Type": "application/json"}, json.dumps(answer)


def live_client(**options: Any) -> PhaseFlagClient:
    options.setdefault("polling_interval", 0.05)
    return PhaseFlagClient(base_url=API, api_key=KEY, send_events=False, **options)


class TestSetup:
    def test_metadata_name_is_phaseflag(self) -> None:
        """The provider reports its name as "phaseflag"."""
        install()
        assert api.get_provider_metadata().name == "phaseflag"
        assert PhaseFlagProvider(create_mock_client()).get_metadata().name == "phaseflag"

    def test_builds_its_client_from_options(self) -> None:
        """Keyword options build a PhaseFlagClient, started by initialize."""
        provider = PhaseFlagProvider(base_url="", api_key="", bootstrap={"flags": {"a": True}})
        assert provider.client.status().state == "new"
        api.set_provider_and_wait(provider)
        assert api.get_client().get_boolean_value("a", False) is True
        assert provider.client.status().state == "running"

    def test_bad_arguments_are_rejected(self) -> None:
        """A client plus options, a non-client or a bad init_timeout raise ConfigError."""
        with pytest.raises(ConfigError):
            PhaseFlagProvider(create_mock_client(), api_key="x")
        with pytest.raises(ConfigError):
            PhaseFlagProvider("not a client")  # type: ignore[arg-type]
        for bad in (-1, float("nan"), "5"):
            with pytest.raises(ConfigError, match="init_timeout"):
                PhaseFlagProvider(create_mock_client(), init_timeout=bad)

    def test_initialize_starts_and_shutdown_stops_the_client(self) -> None:
        """The provider lifecycle drives the client's start() and stop()."""
        client = PhaseFlagClient(base_url="", api_key="", bootstrap=RULESET)
        install(client)
        assert client.status().state == "running"
        assert api.get_client().get_provider_status() is ProviderStatus.READY
        api.shutdown()
        assert client.status().state == "stopped"


class TestValues:
    def test_typed_details(self) -> None:
        """Each typed method resolves its flag with value and variant."""
        of = install()
        assert of.get_boolean_details("static-on", False).value is True
        string = of.get_string_details("theme", "light")
        assert (string.value, string.variant) == ("dark", "value")
        assert of.get_integer_details("limit", 0).value == 3
        assert of.get_object_details("config", {}).value == {"provider": "stripe", "retries": 2}
        assert of.get_object_details("regions", []).value == ["eu", "us"]

    def test_int_flag_satisfies_float_and_whole_float_satisfies_integer(self) -> None:
        """Numbers convert where exact: 3 -> 3.0 for floats, 4.0 -> 4 for integers."""
        of = install()
        as_float = of.get_float_details("limit", 0.0)
        assert as_float.value == 3.0 and type(as_float.value) is float
        as_int = of.get_integer_details("whole-float", 0)
        assert as_int.value == 4 and type(as_int.value) is int
        fraction = of.get_integer_details("ratio", 7)
        assert (fraction.value, fraction.error_code) == (7, ErrorCode.TYPE_MISMATCH)

    def test_object_values_are_private_copies(self) -> None:
        """Mutating a resolved object does not change what the next evaluation returns."""
        of = install()
        of.get_object_value("config", {})["provider"] = "changed"  # type: ignore[index]
        assert of.get_object_value("config", {}) == {"provider": "stripe", "retries": 2}

    def test_async_evaluation(self) -> None:
        """The SDK's async methods resolve through the provider too."""
        of = install()
        details = asyncio.run(of.get_string_details_async("theme", "light"))
        assert details.value == "dark"


class TestReasons:
    @pytest.mark.parametrize(
        ("key", "context", "value", "reason", "variant"),
        [
            ("checkout", OFContext(attributes={"plan": "pro"}), True, Reason.TARGETING_MATCH, "on"),
            ("checkout", OFContext("vip-1"), True, Reason.TARGETING_MATCH, "on"),
            ("checkout", OFContext(attributes={"plan": "free"}), False, Reason.DEFAULT, "off"),
            ("static-on", None, True, Reason.STATIC, "on"),
            ("killed", None, False, Reason.DISABLED, "off"),
            ("child", None, False, Reason.DEFAULT, "off"),
        ],
        ids=["rule", "target", "fallthrough", "static", "disabled", "prerequisite-failed"],
    )
    def test_reason_mapping(
        self, key: str, context: OFContext | None, value: bool, reason: str, variant: str
    ) -> None:
        """phaseflag reasons map to OpenFeature reasons as documented."""
        details = install().get_boolean_details(key, not value, context)
        assert (details.value, details.reason, details.variant) == (value, reason, variant)
        assert details.error_code is None

    def test_percentage_rollout_is_split(self) -> None:
        """A rollout result reports SPLIT and is stable for one targeting key."""
        of = install()
        first = of.get_string_details("split", "?", OFContext("user-42"))
        assert first.reason == Reason.SPLIT and first.value in ("A", "B")
        assert of.get_string_details("split", "?", OFContext("user-42")).value == first.value

    def test_override_is_static(self) -> None:
        """An override reports STATIC with variant "override"."""
        client = create_mock_client(bootstrap=RULESET, strict=False)
        of = install(client)
        client.set_override("checkout", True)
        details = of.get_boolean_details("checkout", False)
        assert (details.value, details.reason, details.variant) == (True, Reason.STATIC, "override")
        assert details.flag_metadata == {}

    def test_flag_metadata_comes_from_the_definition(self) -> None:
        """The definition's scalar metadata is reported; nested values are left out."""
        details = install().get_boolean_details("static-on", False)
        assert dict(details.flag_metadata) == {"team": "growth", "tickets": 2}
        assert install().get_boolean_details("checkout", False).flag_metadata == {}


class TestErrors:
    @pytest.mark.parametrize(
        ("method", "key", "default", "code"),
        [
            ("get_boolean_details", "missing", True, ErrorCode.FLAG_NOT_FOUND),
            ("get_boolean_details", "theme", True, ErrorCode.TYPE_MISMATCH),
            ("get_string_details", "limit", "x", ErrorCode.TYPE_MISMATCH),
            ("get_integer_details", "static-on", 1, ErrorCode.TYPE_MISMATCH),
            ("get_float_details", "static-on", 1.5, ErrorCode.TYPE_MISMATCH),
            ("get_object_details", "theme", {"a": 1}, ErrorCode.TYPE_MISMATCH),
            ("get_boolean_details", "broken", True, ErrorCode.PARSE_ERROR),
        ],
    )
    def test_error_codes(self, method: str, key: str, default: Any, code: ErrorCode) -> None:
        """Errors return the caller's default with the mapped error code and reason ERROR."""
        details = getattr(install(), method)(key, default)
        assert (details.value, details.reason, details.error_code) == (default, Reason.ERROR, code)
        assert details.error_message

    def test_no_data_is_provider_not_ready(self) -> None:
        """A client holding no ruleset yet reports PROVIDER_NOT_READY from the provider."""
        of = install(PhaseFlagClient(base_url="", api_key=""))
        details = of.get_boolean_details("anything", True)
        assert (details.value, details.error_code) == (True, ErrorCode.PROVIDER_NOT_READY)

    def test_unsupported_attribute_is_invalid_context(self) -> None:
        """A nested list, a dict or a naive datetime attribute gives INVALID_CONTEXT and the
        default (a list of scalars is a list attribute: tests/test_list_attributes.py)."""
        of = install()
        for bad in ([["a"], "b"], {"k": "v"}, datetime(2024, 1, 1)):
            details = of.get_boolean_details("checkout", True, OFContext("u", {"attr": bad}))
            assert (details.value, details.error_code) == (True, ErrorCode.INVALID_CONTEXT)
            assert "attr" in (details.error_message or "")


class TestContext:
    def test_targeting_key_and_attributes(self) -> None:
        """targeting_key becomes user_id; attributes pass through; aware datetimes are kept."""
        when = datetime(2024, 1, 1, tzinfo=timezone.utc)
        ctx = to_phaseflag_context(OFContext("user-1", {"plan": "pro", "since": when}))
        assert ctx == EvaluationContext("user-1", attributes={"plan": "pro", "since": when})

    def test_id_attributes_fill_the_ids(self) -> None:
        """user_id/session_id attributes fill the ids when there is no targeting key."""
        ctx = to_phaseflag_context(OFContext(attributes={"user_id": "u", "session_id": "s"}))
        assert ctx is not None and (ctx.user_id, ctx.session_id) == ("u", "s")
        assert dict(ctx.attributes) == {}

    def test_empty_context_is_none(self) -> None:
        """An empty OpenFeature context means no context (the client's default applies)."""
        assert to_phaseflag_context(OFContext()) is None
        assert to_phaseflag_context(None) is None

    def test_null_attributes_are_absent(self) -> None:
        """A None attribute is dropped, so conditions on it are false."""
        details = install().get_boolean_details(
            "checkout", True, OFContext(attributes={"plan": None})
        )
        assert (details.value, details.reason) == (False, Reason.DEFAULT)


class Recording(Hook):
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def before(self, hook_context: HookContext, hints: HookHints) -> None:
        self.calls.append(("before", hook_context.flag_key))

    def after(
        self, hook_context: HookContext, details: FlagEvaluationDetails[Any], hints: HookHints
    ) -> None:
        self.calls.append(("after", (details.value, details.reason)))


class TestHooks:
    def test_hooks_run_around_provider_evaluation(self) -> None:
        """API-level hooks see the flag key before and the provider's details after."""
        hook = Recording()
        api.add_hooks([hook])
        install().get_boolean_value("checkout", False, OFContext(attributes={"plan": "pro"}))
        assert hook.calls == [("before", "checkout"), ("after", (True, Reason.TARGETING_MATCH))]


class TestEvents:
    def test_ready_on_initialize(self) -> None:
        """Setting the provider delivers PROVIDER_READY named "phaseflag"."""
        events = Recorder(ProviderEvent.PROVIDER_READY)
        install()
        (ready,) = events.wait_for(ProviderEvent.PROVIDER_READY)
        assert ready.provider_name == "phaseflag"

    def test_configuration_changed_lists_changed_flags(self, http: responses.RequestsMock) -> None:
        """A fetched ruleset that changes flags emits CONFIGURATION_CHANGED with their keys."""
        fake = FakeAPI(http, ruleset(flag("a", True), flag("b", "x"), version=1))
        events = Recorder(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
        of = install(live_client())
        assert of.get_boolean_value("a", False) is True
        fake.answer = ruleset(flag("a", False), flag("b", "x"), flag("c", 1), version=2)
        (changed,) = events.wait_for(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
        assert sorted(changed.flags_changed or []) == ["a", "c"]
        assert of.get_boolean_value("a", True) is False

    def test_error_once_per_outage_then_ready(self, http: responses.RequestsMock) -> None:
        """Failing fetches emit one PROVIDER_ERROR; the next live ruleset emits READY again."""
        fake = FakeAPI(http, ruleset(flag("a", True), version=1))
        events = Recorder(ProviderEvent.PROVIDER_ERROR, ProviderEvent.PROVIDER_READY)
        of = install(live_client())
        events.wait_for(ProviderEvent.PROVIDER_READY)
        fake.answer = 500
        events.wait_for(ProviderEvent.PROVIDER_ERROR)
        fake.wait_for_failures(2)  # an outage of several failed fetches still says ERROR once
        assert of.get_provider_status() is ProviderStatus.ERROR
        assert of.get_boolean_value("a", False) is True  # the last good flags keep serving
        fake.answer = ruleset(flag("a", False), version=2)
        events.wait_for(ProviderEvent.PROVIDER_READY, count=2)
        assert len(events.of(ProviderEvent.PROVIDER_ERROR)) == 1
        assert of.get_provider_status() is ProviderStatus.READY

    def test_stale_when_data_outlives_max_staleness(self) -> None:
        """Data older than max_staleness while the API is down emits PROVIDER_STALE."""
        events = Recorder(ProviderEvent.PROVIDER_STALE)
        client = PhaseFlagClient(
            base_url=UNREACHABLE, api_key=KEY, bootstrap=RULESET, offline_mode=True,
            polling_interval=0.05, max_staleness=0.3, send_events=False,
        )  # fmt: skip
        of = install(client)
        # ready on the bootstrap data; the first failed fetch may already have said ERROR
        assert of.get_provider_status() in (ProviderStatus.READY, ProviderStatus.ERROR)

        def stale() -> bool:
            client.status()  # checks the data's age
            return bool(events.of(ProviderEvent.PROVIDER_STALE))

        wait_for(stale)  # each status() call checks the age: there is no event to wait on
        # the SDK updates the status on its own event thread: wait for it, don't race it
        wait_for(lambda: of.get_provider_status() is ProviderStatus.STALE)
        assert of.get_boolean_value("static-on", False) is True


class TestInitialization:
    def test_rejected_key_without_data_is_fatal(self, http: responses.RequestsMock) -> None:
        """A 401 with no data held fails initialize with PROVIDER_FATAL at once."""
        FakeAPI(http, 401)
        started = time.monotonic()
        with pytest.raises(ProviderFatalError):
            install(live_client(), init_timeout=10.0)
        assert time.monotonic() - started < 5.0
        of = api.get_client()
        assert of.get_provider_status() is ProviderStatus.FATAL
        details = of.get_boolean_details("a", True)
        assert (details.value, details.error_code) == (True, ErrorCode.PROVIDER_FATAL)

    def test_rejected_key_with_bootstrap_is_an_error_not_fatal(
        self, http: responses.RequestsMock
    ) -> None:
        """With bootstrap data held a 401 is a (recoverable) ERROR and the data keeps serving."""
        FakeAPI(http, 401)
        with pytest.raises(ProviderNotReadyError):
            install(live_client(bootstrap=RULESET), init_timeout=0.2)
        of = api.get_client()
        assert of.get_provider_status() is ProviderStatus.ERROR
        assert of.get_boolean_value("static-on", False) is True

    def test_not_ready_in_time_then_recovers(self, http: responses.RequestsMock) -> None:
        """No data within init_timeout is an ERROR; READY follows once the API answers."""
        fake = FakeAPI(http, 503)
        events = Recorder(ProviderEvent.PROVIDER_READY)
        with pytest.raises(ProviderNotReadyError, match=r"within 0\.1s"):
            install(live_client(), init_timeout=0.1)
        of = api.get_client()
        assert of.get_provider_status() is ProviderStatus.ERROR
        fake.answer = ruleset(flag("a", True))
        events.wait_for(ProviderEvent.PROVIDER_READY)
        assert of.get_provider_status() is ProviderStatus.READY
        assert of.get_boolean_value("a", False) is True

    def test_shutdown_wakes_a_waiting_initialize(self) -> None:
        """Shutting down while initialize waits ends the wait promptly."""
        provider = PhaseFlagProvider(
            base_url=UNREACHABLE, api_key=KEY, send_events=False, init_timeout=30.0
        )
        api.set_provider(provider)  # initializes in the SDK's background thread
        assert api.get_client().get_provider_status() is ProviderStatus.NOT_READY
        details = api.get_client().get_boolean_details("a", True)
        assert details.error_code == ErrorCode.PROVIDER_NOT_READY
        started = time.monotonic()
        api.shutdown()
        assert time.monotonic() - started < 5.0
        assert provider.client.status().state == "stopped"


class TestTrack:
    def test_track_is_forwarded_as_an_event(self, http: responses.RequestsMock) -> None:
        """client.track() queues an EvaluationEvent that flush_events delivers."""
        FakeAPI(http, ruleset(flag("a", True)))
        posted: list[dict[str, Any]] = []

        def accept(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
            assert request.body is not None
            posted.append(json.loads(request.body))
            return 202, {}, ""

        http.add_callback(responses.POST, f"{API}/sdk/events", callback=accept)
        client = PhaseFlagClient(base_url=API, api_key=KEY)
        of = install(client)
        details = TrackingEventDetails(value=9.5, attributes={"plan": "pro"})
        of.track("purchase", OFContext("user-7"), details)
        assert client.flush_events() is True
        events = [e for batch in posted for e in batch["events"] if e["kind"] == "custom"]
        assert len(events) == 1
        event = events[0]
        assert (event["flag_key"], event["user_id"], event["metadata"], event["value"]) == (
            "purchase", "user-7", {"plan": "pro"}, 9.5,
        )  # fmt: skip


class TestReadmeAndPackaging:
    """What a newcomer copies from the README works, and a missing extra says how to fix it."""

    def test_readme_snippet_reads_flags_once_it_returns(self, http: responses.RequestsMock) -> None:
        """The README's OpenFeature block, run as written against a mocked API, serves the
        flag (not PROVIDER_NOT_READY) on the first read after set_provider_and_wait."""
        import re
        from pathlib import Path

        readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
        section = readme.split("### OpenFeature", 1)[1]
        match = re.search(r"```python\n(.*?)```", section, re.S)
        assert match is not None
        code = match.group(1)
        assert "set_provider_and_wait(" in code
        readme_api = "https://api.phaseflag.com/api/v1"
        doc = ruleset(
            flag(
                "new-checkout-flow",
                variations={"on": True, "off": False},
                default="off",
                rules=[rule(condition("plan", "in", "pro"), serve="on", id="pro")],
            )
        )
        http.add(responses.GET, f"{readme_api}/sdk/ruleset", json=doc)
        http.add(responses.POST, f"{readme_api}/sdk/events", json={})
        namespace: dict[str, Any] = {}
        exec(compile(code, "README.md", "exec"), namespace)
        details = namespace["details"]
        assert details.error_code is None
        assert details.value is True
        assert details.reason == Reason.TARGETING_MATCH

    @pytest.mark.e2e
    def test_import_without_the_extra_names_the_install_command(self) -> None:
        """With openfeature-sdk absent the ImportError tells the user what to install."""
        import os
        import subprocess
        import sys
        from pathlib import Path

        root = str(Path(__file__).resolve().parents[1])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
        }
        code = (
            "import sys; sys.modules['openfeature'] = None\n"
            "try:\n    import phaseflag.openfeature\n"
            "except ImportError as exc:\n    print(exc)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env=env,
        ).stdout
        assert "pip install 'phaseflag-sdk[openfeature]'" in out
