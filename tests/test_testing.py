"""Tests for phaseflag.testing (mock client, builders), the pytest plugin, fallback,
all_flags and typed-number reads, all through real clients that never touch the network."""

from __future__ import annotations

import json
import logging
import statistics
import threading
import time
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Any

import pytest
import requests

from phaseflag import ChangeEvent, ConfigError, EvaluationContext, PhaseFlagClient, compile_ruleset
from phaseflag.testing import condition, create_mock_client, flag, rule, ruleset

pytest_plugins = ["pytester"]

CHECKOUT = flag(
    "checkout",
    variations={"on": True, "off": False},
    default="off",
    off="off",
    targets={"on": ["vip-1"]},
    rules=[rule(condition("plan", "in", "pro", "enterprise"), serve="on", id="paid")],
)
BROKEN = flag(
    "broken",
    variations={"on": True, "off": False},
    default="off",
    rules=[rule(condition("plan", "no_such_operator", "x"), serve="on")],
)


@pytest.fixture
def no_http(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record (and refuse) every HTTP request any requests.Session tries to send."""
    sent: list[str] = []

    def refuse(self: requests.Session, request: requests.PreparedRequest, **kw: Any) -> Any:
        sent.append(str(request.url))
        raise requests.ConnectionError("network disabled in this test")

    monkeypatch.setattr(requests.Session, "send", refuse)
    return sent


@pytest.fixture
def mock() -> Iterator[PhaseFlagClient]:
    client = create_mock_client(
        {"dark-mode": True, "theme": "dark", "limit": 3, "ratio": 2.5, "whole": 4.0},
        {"checkout-config": {"provider": "stripe", "max_items": 10}},
    )
    yield client
    client.stop()


class TestMockClient:
    def test_serves_flags_and_configs(self, mock: PhaseFlagClient) -> None:
        """Static flags and configs come back through the typed getters."""
        assert mock.get_boolean_value("dark-mode", False) is True
        assert mock.get_string_value("theme", "light") == "dark"
        assert mock.get_integer_value("limit", 0) == 3
        config: dict[str, Any] = mock.get_json_value("checkout-config", {})
        assert config == {"provider": "stripe", "max_items": 10}
        assert mock.get_boolean_value("missing", False) is False

    def test_is_started_and_ready(self, mock: PhaseFlagClient) -> None:
        """The mock is running and ready at once, on bootstrap data."""
        status = mock.status()
        assert (status.state, status.ready, status.ruleset_source) == ("running", True, "bootstrap")
        assert status.flag_count == 6

    def test_details_overrides_and_variation(self, mock: PhaseFlagClient) -> None:
        """Details, get_variation and overrides behave as on a production client."""
        details = mock.get_boolean_details("dark-mode", False)
        assert (details.value, details.reason) == (True, "default")
        mock.set_override("dark-mode", False)
        overridden = mock.get_variation("dark-mode")
        assert overridden is not None and (overridden.value, overridden.reason) == (
            False,
            "override",
        )
        mock.clear_override("dark-mode")
        assert mock.get_boolean_value("dark-mode", False) is True
        assert mock.get_variation("missing") is None

    def test_listeners_are_real(self, mock: PhaseFlagClient) -> None:
        """A change listener fires when a new ruleset is applied to the mock."""
        seen: list[ChangeEvent] = []
        unsubscribe = mock.on("change", seen.append)
        raw = json.dumps(ruleset(flag("dark-mode", False), version=5)).encode()
        mock._store.apply_document(raw, "live")
        unsubscribe()
        assert len(seen) == 1 and "dark-mode" in seen[0].keys
        assert mock.get_boolean_value("dark-mode", True) is False

    def test_never_touches_the_network(self, no_http: list[str]) -> None:
        """Reads, events, flushes, remote evaluate and stop send no HTTP request."""
        client = create_mock_client({"a": True})
        assert client.get_boolean_value("a", False) is True
        client.track_event(__import__("phaseflag").EvaluationEvent("a", user_id="u"))
        assert client.flush_events() is True
        remote = client.evaluate("a", EvaluationContext("u"))
        assert remote.value is True and "HTTP disabled" in (remote.error_message or "")
        client.stop()
        assert no_http == []

    def test_ignores_network_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """PHASEFLAG_BASE_URL/API_KEY in the environment cannot turn HTTP back on."""
        monkeypatch.setenv("PHASEFLAG_BASE_URL", "http://127.0.0.1:1/api/v1")
        monkeypatch.setenv("PHASEFLAG_API_KEY", "sdk-env-key-0123456789")
        client = create_mock_client({"a": True})
        assert "base_url=''" in repr(client)
        client.stop()

    @pytest.mark.parametrize("option", ["base_url", "bootstrap_url"])
    def test_rejects_network_options(self, option: str) -> None:
        """Network options are refused with a ConfigError naming them."""
        with pytest.raises(ConfigError, match=option):
            create_mock_client({"a": True}, **{option: "http://127.0.0.1:1"})

    def test_rejects_bootstrap_with_flags(self) -> None:
        """bootstrap= and flags= together are ambiguous and refused."""
        with pytest.raises(ConfigError, match="bootstrap"):
            create_mock_client({"a": True}, bootstrap=ruleset(flag("b", True)))

    def test_rejects_unservable_values(self) -> None:
        """A flag that would be INVALID_FLAG raises ConfigError naming it, unless not strict."""
        with pytest.raises(ConfigError, match="flag 'a' has the value None"):
            create_mock_client({"a": None})
        with pytest.raises(ConfigError, match="no_such_operator"):
            create_mock_client(bootstrap=ruleset(BROKEN))
        lenient = create_mock_client(bootstrap=ruleset(BROKEN), strict=False)
        assert lenient.get_boolean_details("broken", True).error_code == "INVALID_FLAG"
        lenient.stop()

    def test_errors_name_the_flag_key_not_a_document_path(self) -> None:
        """Shorthand flags were never a document to the caller: errors name the key."""
        with pytest.raises(ConfigError) as caught:
            create_mock_client({"ok": True, "theme": object()})
        assert "flag 'theme'" in str(caught.value)
        assert "flags[" not in str(caught.value)
        with pytest.raises(ConfigError) as caught:
            create_mock_client({"ok": True}, configs={"limits": None})
        assert "flag 'limits'" in str(caught.value)
        assert "flags[" not in str(caught.value)

    def test_full_ruleset_enables_targeting(self) -> None:
        """A ruleset from the builders makes rules, targets and rollouts testable."""
        client = create_mock_client(bootstrap=ruleset(CHECKOUT))
        pro = client.get_boolean_details(
            "checkout", False, EvaluationContext("u", attributes={"plan": "pro"})
        )
        assert (pro.value, pro.reason, pro.rule_id) == (True, "targeting_match", "paid")
        assert client.get_boolean_value("checkout", True, EvaluationContext("vip-1")) is True
        assert client.get_boolean_value("checkout", True, EvaluationContext("u")) is False
        client.stop()


class TestBuilders:
    def test_boolean_shorthand(self) -> None:
        """flag(key, True) is a boolean flag with on/off variations serving on."""
        assert flag("dark-mode", True) == {
            "key": "dark-mode",
            "type": "boolean",
            "enabled": True,
            "variations": [{"key": "on", "value": True}, {"key": "off", "value": False}],
            "off_variation": "off",
            "default": {"variation": "on"},
        }

    @pytest.mark.parametrize(
        ("value", "kind"),
        [("dark", "string"), (3, "number"), (2.5, "number"), ({"a": 1}, "json"), ([1], "json")],
    )
    def test_type_is_inferred(self, value: Any, kind: str) -> None:
        """The flag type follows the variation values."""
        built = flag("k", value)
        assert built["type"] == kind and built["default"] == {"variation": "value"}

    def test_needs_exactly_one_of_value_and_variations(self) -> None:
        """flag() refuses both or neither of value= and variations=."""
        with pytest.raises(TypeError):
            flag("k")
        with pytest.raises(TypeError):
            flag("k", True, variations={"on": True})

    def test_rollout_and_extra_fields(self) -> None:
        """A weight mapping becomes a rollout; extra fields are copied verbatim."""
        built = flag("split", variations={"a": 1, "b": 2}, default={"a": 25, "b": 75}, salt="s")
        assert built["default"] == {
            "rollout": {
                "variations": [{"variation": "a", "weight": 25}, {"variation": "b", "weight": 75}]
            }
        }
        assert built["salt"] == "s"
        assert condition("email", "ends_with", "@x.io", negate=True, case_insensitive=True) == {
            "attribute": "email", "operator": "ends_with", "values": ["@x.io"],
            "negate": True, "case_insensitive": True,
        }  # fmt: skip

    def test_built_rulesets_compile(self) -> None:
        """Everything the builders make passes the schema and compiles without problems."""
        split = flag("split", variations={"a": 1, "b": 2}, default={"a": 50, "b": 50})
        doc = ruleset(CHECKOUT, split, flag("theme", "dark"), version=7)
        compiled = compile_ruleset(doc)
        assert (compiled.version, len(compiled), compiled.problems) == (7, 3, ())


class TestFallback:
    @staticmethod
    def _client(fallback: Any, **options: Any) -> PhaseFlagClient:
        doc = ruleset(CHECKOUT, BROKEN, flag("theme", "dark"))
        return create_mock_client(bootstrap=doc, strict=False, fallback=fallback, **options)

    def test_used_for_a_missing_flag_with_the_context(self) -> None:
        """A missing flag's value comes from fallback(flag_key, context)."""
        calls: list[tuple[str, EvaluationContext | None]] = []

        def fallback(key: str, ctx: EvaluationContext | None) -> Any:
            calls.append((key, ctx))
            return "from-fallback"

        client = self._client(fallback)
        ctx = EvaluationContext("u1")
        assert client.get_string_value("missing", "default", ctx) == "from-fallback"
        assert calls == [("missing", ctx)]

    def test_used_for_an_erroring_flag(self) -> None:
        """An INVALID_FLAG flag's value comes from the fallback too."""
        client = self._client(lambda key, ctx: True)
        assert client.get_boolean_details("broken", False).error_code == "INVALID_FLAG"
        assert client.get_boolean_value("broken", False) is True

    def test_used_before_any_data_arrives(self) -> None:
        """With no ruleset yet (NOT_READY) the fallback answers."""
        client = PhaseFlagClient(base_url="", api_key="", fallback=lambda key, ctx: 42)
        assert client.get_integer_value("limit", 0) == 42

    def test_not_used_for_a_served_value_of_another_type(self) -> None:
        """A type mismatch returns the caller's default: the flag did evaluate."""
        client = self._client(lambda key, ctx: True)
        assert client.get_boolean_value("theme", False) is False

    def test_wrong_typed_fallback_value_is_ignored(self) -> None:
        """A fallback value of the wrong type is replaced by the caller's default."""
        client = self._client(lambda key, ctx: "not a bool")
        assert client.get_boolean_value("missing", False) is False

    def test_raising_fallback_is_logged_and_default_returned(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An exception in the fallback is logged with its traceback; the default is returned."""

        def fallback(key: str, ctx: EvaluationContext | None) -> Any:
            raise RuntimeError("fallback exploded")

        client = self._client(fallback)
        with caplog.at_level(logging.ERROR, logger="phaseflag"):
            assert client.get_string_value("missing", "default") == "default"
        (record,) = [r for r in caplog.records if "fallback" in r.getMessage()]
        assert record.exc_info is not None and "fallback exploded" in str(record.exc_info[1])

    def test_details_carry_the_fallback_value(self) -> None:
        """get_*_details of a missing flag report the fallback's value with the error code."""
        client = self._client(lambda key, ctx: "from-fallback")
        details = client.get_string_details("missing", "default")
        assert (details.value, details.error_code) == ("from-fallback", "FLAG_NOT_FOUND")

    def test_fallback_numbers_are_coerced_to_the_getter_type(self) -> None:
        """A whole float from the fallback is an int for get_integer_value, an int a float."""
        client = self._client(lambda key, ctx: {"i": 2.0, "f": 3}.get(key))
        as_int = client.get_integer_value("i", 0)
        as_float = client.get_float_value("f", 0.0)
        assert (type(as_int), type(as_float)) == (int, float)


class TestAllFlags:
    @pytest.fixture
    def client(self) -> Iterator[PhaseFlagClient]:
        dark = flag("off-no-variation", variations={"on": True}, default="on", enabled=False)
        doc = ruleset(CHECKOUT, BROKEN, flag("theme", "dark"), flag("config", {"a": [1, 2]}), dark)
        client = create_mock_client(bootstrap=doc, strict=False)
        yield client
        client.stop()

    def test_values_are_json_serialisable_and_skip_errors(self, client: PhaseFlagClient) -> None:
        """all_flags holds every servable flag (overrides included) and skips erroring ones."""
        client.set_override("extra", 5)
        ctx = EvaluationContext("u1", attributes={"plan": "pro"})
        flags = client.all_flags(ctx)
        assert json.loads(json.dumps(flags)) == flags
        assert flags == {"checkout": True, "config": {"a": [1, 2]}, "extra": 5, "theme": "dark"}

    def test_details_shape(self, client: PhaseFlagClient) -> None:
        """details=True gives value, variation_key, reason and the ruleset version per flag."""
        flags = client.all_flags(EvaluationContext("vip-1"), details=True)
        assert flags["checkout"] == {
            "value": True,
            "variation_key": "on",
            "reason": "targeting_match",
            "ruleset_version": 1,
        }
        assert flags["theme"] == {
            "value": "dark",
            "variation_key": "value",
            "reason": "default",
            "ruleset_version": 1,
        }
        assert json.loads(json.dumps(flags)) == flags

    def test_results_are_private_copies(self, client: PhaseFlagClient) -> None:
        """Mutating a returned JSON value does not leak into later reads."""
        client.all_flags()["config"]["a"].append(3)
        assert client.all_flags()["config"] == {"a": [1, 2]}

    def test_two_hundred_flags_within_a_few_milliseconds(self) -> None:
        """all_flags over 200 flags (half with a rule) takes <= 5 ms at best of 50 runs (~0.06 ms
        measured: the margin is a loaded 2-core machine's; per-flag I/O or copies would not fit)."""
        flags = [
            flag(f"f{i}", variations={"on": True, "off": False}, default="off",
                 rules=[rule(condition("plan", "in", "pro"), serve="on")])
            if i % 2 else flag(f"f{i}", f"value-{i}")
            for i in range(200)
        ]  # fmt: skip
        client = create_mock_client(bootstrap=ruleset(*flags))
        ctx = EvaluationContext("u1", attributes={"plan": "pro"})
        assert len(client.all_flags(ctx)) == 200
        timings = []
        for _ in range(50):
            start = time.perf_counter()
            client.all_flags(ctx)
            timings.append(time.perf_counter() - start)
        client.stop()
        assert min(timings) <= 0.005, f"median {statistics.median(timings) * 1000:.3f} ms"


class TestTypedNumbers:
    def test_int_flag_satisfies_get_float_value(self, mock: PhaseFlagClient) -> None:
        """An int value is a valid float: 3 -> 3.0 (a float)."""
        value = mock.get_float_value("limit", 0.0)
        assert value == 3.0 and type(value) is float

    def test_whole_float_satisfies_get_integer_value(self, mock: PhaseFlagClient) -> None:
        """A whole float is a valid int (4.0 -> 4); a fraction is not."""
        value = mock.get_integer_value("whole", 0)
        assert value == 4 and type(value) is int
        assert mock.get_integer_value("ratio", 7) == 7

    def test_bool_never_satisfies_a_number(self, mock: PhaseFlagClient) -> None:
        """True is not 1: numeric getters return the default for a boolean flag."""
        assert mock.get_integer_value("dark-mode", 7) == 7
        assert mock.get_float_value("dark-mode", 7.5) == 7.5
        assert mock.get_integer_details("dark-mode", 7).error_code == "TYPE_MISMATCH"
        assert mock.get_float_details("dark-mode", 7.5).error_code == "TYPE_MISMATCH"

    def test_number_never_satisfies_a_bool(self, mock: PhaseFlagClient) -> None:
        """1-like numbers are not booleans."""
        assert mock.get_boolean_value("limit", False) is False

    def test_details_types(self, mock: PhaseFlagClient) -> None:
        """Details carry the converted value type and the default on mismatch."""
        as_float = mock.get_float_details("limit", 0.0)
        assert (as_float.value, type(as_float.value), as_float.error_code) == (3.0, float, None)
        as_int = mock.get_integer_details("whole", 0)
        assert (as_int.value, type(as_int.value)) == (4, int)
        fraction = mock.get_integer_details("ratio", 7)
        assert (fraction.value, fraction.reason, fraction.error_code) == (
            7,
            "error",
            "TYPE_MISMATCH",
        )
        string = mock.get_string_details("limit", "x")
        assert (string.value, string.error_code) == ("x", "TYPE_MISMATCH")


# -- the pytest plugin, run in a nested pytest session -------------------------------------


def _plugin_args() -> list[str]:
    """Load the plugin explicitly unless its pytest11 entry point is installed.

    Hypothesis's plugin is blocked in the nested sessions: its terminal summary costs ~0.6 s each.
    """
    installed = any(ep.value == "phaseflag.pytest_plugin" for ep in entry_points(group="pytest11"))
    args = ["-p", "no:cacheprovider", "-p", "no:hypothesispytest"]
    return args + ([] if installed else ["-p", "phaseflag.pytest_plugin"])


class TestPytestPlugin:
    def test_fixture_and_marker(self, pytester: pytest.Pytester) -> None:
        """The marker overrides flags for one test only; the fixture is stopped afterwards."""
        pytester.makepyfile(
            """
            import pytest

            seen = []

            @pytest.mark.phaseflag({"new-checkout": True}, theme="dark")
            def test_marked(phaseflag_client):
                seen.append(phaseflag_client)
                assert phaseflag_client.get_boolean_value("new-checkout", False) is True
                assert phaseflag_client.get_string_value("theme", "light") == "dark"
                assert phaseflag_client.get_variation("theme").reason == "override"

            def test_unmarked(phaseflag_client):
                assert phaseflag_client.get_boolean_value("new-checkout", False) is False
                assert seen[0].status().state == "stopped"
                assert phaseflag_client.status().ready
            """
        )
        result = pytester.runpytest("--strict-markers", *_plugin_args())
        result.assert_outcomes(passed=2)

    def test_marker_is_registered(self, pytester: pytest.Pytester) -> None:
        """``pytest --markers`` documents the phaseflag marker."""
        result = pytester.runpytest("--markers", *_plugin_args())
        result.stdout.fnmatch_lines(["@pytest.mark.phaseflag(*"])

    def test_closest_marker_wins(self, pytester: pytest.Pytester) -> None:
        """Class and function markers merge, the function's values winning."""
        pytester.makepyfile(
            """
            import pytest

            @pytest.mark.phaseflag(a=1, b=1)
            class TestIt:
                @pytest.mark.phaseflag(b=2)
                def test_merge(self, phaseflag_client):
                    assert phaseflag_client.get_integer_value("a", 0) == 1
                    assert phaseflag_client.get_integer_value("b", 0) == 2
            """
        )
        pytester.runpytest(*_plugin_args()).assert_outcomes(passed=1)

    def test_bad_marker_arguments_error(self, pytester: pytest.Pytester) -> None:
        """A non-dict positional argument errors with a message saying what is accepted."""
        pytester.makepyfile(
            """
            import pytest

            @pytest.mark.phaseflag("new-checkout")
            def test_bad(phaseflag_client):
                pass
            """
        )
        result = pytester.runpytest(*_plugin_args())
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(["*takes one dict of flag values*"])

    def test_unmarked_tests_create_no_client(self, pytester: pytest.Pytester) -> None:
        """Without the marker the plugin does nothing, even when the fixture is broken."""
        pytester.makeconftest(
            """
            import pytest

            @pytest.fixture
            def phaseflag_client():
                raise AssertionError("should not be created")
            """
        )
        pytester.makepyfile("def test_plain():\n    assert True\n")
        pytester.runpytest(*_plugin_args()).assert_outcomes(passed=1)

    def test_marker_targets_an_overridden_fixture(self, pytester: pytest.Pytester) -> None:
        """Overriding phaseflag_client points the marker at the app's own client, cleaned after."""
        pytester.makeconftest(
            """
            import pytest
            from phaseflag import PhaseFlagClient

            APP_CLIENT = PhaseFlagClient(
                base_url="", api_key="", bootstrap={"flags": {"beta": False}}
            )

            @pytest.fixture
            def phaseflag_client():
                return APP_CLIENT
            """
        )
        pytester.makepyfile(
            """
            import pytest
            from conftest import APP_CLIENT

            @pytest.mark.phaseflag(beta=True)
            def test_marked():
                assert APP_CLIENT.get_boolean_value("beta", False) is True

            def test_after():
                assert APP_CLIENT.get_boolean_value("beta", True) is False
            """
        )
        pytester.runpytest("-p", "no:randomly", *_plugin_args()).assert_outcomes(passed=2)

    def test_flask_app(self, pytester: pytest.Pytester) -> None:
        """A Flask app test overrides a flag with the marker (the README example)."""
        pytest.importorskip("flask")
        pytester.makepyfile(
            app="""
            from flask import Flask, request
            from phaseflag import EvaluationContext, PhaseFlagClient

            def create_app(flags: PhaseFlagClient) -> Flask:
                app = Flask(__name__)

                @app.get("/checkout")
                def checkout():
                    ctx = EvaluationContext(user_id=request.args["user_id"])
                    new = flags.get_boolean_value("new-checkout-flow", False, ctx)
                    return {"flow": "new" if new else "legacy"}

                return app
            """,
            test_app="""
            import pytest
            from app import create_app

            @pytest.fixture
            def http(phaseflag_client):
                return create_app(phaseflag_client).test_client()

            def test_legacy_by_default(http):
                assert http.get("/checkout?user_id=u1").json == {"flow": "legacy"}

            @pytest.mark.phaseflag({"new-checkout-flow": True})
            def test_new_checkout(http):
                assert http.get("/checkout?user_id=u1").json == {"flow": "new"}
            """,
        )
        pytester.runpytest("--strict-markers", *_plugin_args()).assert_outcomes(passed=2)


def test_mock_clients_start_no_threads() -> None:
    """A mock client runs no background thread at all."""
    before = {t.name for t in threading.enumerate()}
    client = create_mock_client({"a": True})
    after = {t.name for t in threading.enumerate()}
    client.stop()
    assert not {name for name in after - before if name.startswith("phaseflag")}
