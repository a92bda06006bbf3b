"""Client options: validation (ConfigError naming the option), PHASEFLAG_* variables, defaults."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import requests

from phaseflag import ConfigError, FileCache, MemoryCache, PhaseFlagClient
from phaseflag._config import resolve

BASE = "https://api.phaseflag.test/api/v1"
KEY = "sdk-test-config-0123456789"


def make(**options: Any) -> PhaseFlagClient:
    """A client (never started) with a valid base_url and api_key unless overridden."""
    options.setdefault("base_url", BASE)
    options.setdefault("api_key", KEY)
    return PhaseFlagClient(**options)


BAD_OPTIONS = [
    ("base_url", "ftp://api.phaseflag.test"),
    ("base_url", "api.phaseflag.test/api/v1"),
    ("base_url", 123),
    ("api_key", 123),
    ("api_key", ""),
    ("api_key", "sdk key with spaces"),
    ("api_key", "sdk-key\n"),
    ("polling_interval", 0),
    ("polling_interval", -1.0),
    ("polling_interval", "often"),
    ("polling_interval", float("nan")),
    ("polling_interval", float("inf")),
    ("polling_interval", True),
    ("event_flush_interval", 0),
    ("event_flush_interval", "x"),
    ("event_batch_size", 0),
    ("event_batch_size", 1.5),
    ("event_batch_size", "ten"),
    ("event_batch_size", True),
    ("bootstrap_file", 123),
    ("bootstrap_url", "file:///etc/flags.json"),
    ("bootstrap_url", "not a url"),
    ("bootstrap_url", 5),
    ("offline_mode", "maybe"),
    ("bootstrap", "not a ruleset"),
    ("bootstrap", {"schema_version": 2, "flags": []}),
    ("cache", "/tmp/cache-dir"),
    ("default_context", {"user_id": "u"}),
    ("max_event_queue_size", 0),
    ("request_timeout", 0),
    ("request_timeout", -5),
    ("headers", 123),
    ("headers", {"X-Team": 1}),
    ("headers", {"Authorization": "Bearer other"}),
    ("headers_factory", "not callable"),
    ("verify", "/nonexistent/ca-bundle.pem"),
    ("verify", 123),
    ("proxies", 123),
    ("logger", "phaseflag"),
    ("debug", "loud"),
    ("fetch_mode", "push"),
    ("max_staleness", 0),
    ("fallback", 42),
    ("send_events", "sometimes"),
    ("session", "a session"),
]


@pytest.mark.parametrize(
    ("option", "value"), BAD_OPTIONS, ids=[f"{o}={v!r}" for o, v in BAD_OPTIONS]
)
def test_bad_option_raises_config_error_naming_it(option: str, value: Any) -> None:
    """Every malformed constructor option raises ConfigError whose message names the option."""
    with pytest.raises(ConfigError) as info:
        make(**{option: value})
    assert info.value.option == option
    assert str(info.value).startswith(option)
    assert isinstance(info.value, ValueError)


def test_missing_base_url_is_reported() -> None:
    """Without base_url (argument or variable) the error names base_url and PHASEFLAG_BASE_URL."""
    with pytest.raises(ConfigError, match="PHASEFLAG_BASE_URL") as info:
        PhaseFlagClient(api_key=KEY)
    assert info.value.option == "base_url"


def test_missing_api_key_is_reported() -> None:
    """With a base_url but no api_key the error names api_key and PHASEFLAG_API_KEY."""
    with pytest.raises(ConfigError, match="PHASEFLAG_API_KEY") as info:
        PhaseFlagClient(base_url=BASE)
    assert info.value.option == "api_key"


def test_empty_base_url_needs_no_api_key() -> None:
    """base_url='' disables HTTP, so no api_key is needed (the seed page passes api_key='')."""
    assert repr(PhaseFlagClient(base_url="")).startswith("PhaseFlagClient(base_url=''")
    PhaseFlagClient(base_url="", api_key="")


def test_missing_bootstrap_file_names_the_option(tmp_path: Path) -> None:
    """A bootstrap_file that does not exist raises ConfigError naming bootstrap_file."""
    with pytest.raises(ConfigError) as info:
        make(bootstrap_file=tmp_path / "missing.json")
    assert info.value.option == "bootstrap_file"


def test_defaults() -> None:
    """Options not given take the documented defaults."""
    settings = resolve({"base_url": BASE, "api_key": KEY})
    assert settings.polling_interval == 30.0
    assert settings.event_flush_interval == 30.0
    assert settings.event_batch_size == 100
    assert settings.bootstrap_file is None
    assert settings.bootstrap_url is None
    assert settings.offline_mode is False
    assert settings.request_timeout == 10.0
    assert settings.max_event_queue_size == 10_000
    assert settings.fetch_mode == "polling"
    assert settings.max_staleness is None
    assert settings.send_events is True
    assert settings.verify is True


def test_base_url_trailing_slash_is_dropped() -> None:
    """A trailing slash on base_url is removed so paths join cleanly."""
    assert resolve({"base_url": BASE + "/", "api_key": KEY}).base_url == BASE


def test_whole_float_batch_size_is_accepted() -> None:
    """event_batch_size=10.0 is the whole number 10."""
    assert (
        resolve({"base_url": BASE, "api_key": KEY, "event_batch_size": 10.0}).event_batch_size == 10
    )


ENV_CASES = [
    ("PHASEFLAG_POLLING_INTERVAL", "5", "polling_interval", 5.0),
    ("PHASEFLAG_EVENT_FLUSH_INTERVAL", "2.5", "event_flush_interval", 2.5),
    ("PHASEFLAG_EVENT_BATCH_SIZE", " 7 ", "event_batch_size", 7),
    ("PHASEFLAG_OFFLINE_MODE", "yes", "offline_mode", True),
    ("PHASEFLAG_REQUEST_TIMEOUT", "3", "request_timeout", 3.0),
    ("PHASEFLAG_MAX_EVENT_QUEUE_SIZE", "50", "max_event_queue_size", 50),
    ("PHASEFLAG_FETCH_MODE", "Streaming", "fetch_mode", "streaming"),
    ("PHASEFLAG_MAX_STALENESS", "60", "max_staleness", 60.0),
    ("PHASEFLAG_SEND_EVENTS", "0", "send_events", False),
    ("PHASEFLAG_DEBUG", "off", "debug", False),
    ("PHASEFLAG_VERIFY", "false", "verify", False),
    (
        "PHASEFLAG_BOOTSTRAP_FILE",
        "/etc/phaseflag/b.json",
        "bootstrap_file",
        "/etc/phaseflag/b.json",
    ),
    (
        "PHASEFLAG_BOOTSTRAP_URL",
        "https://cdn.test/b.json",
        "bootstrap_url",
        "https://cdn.test/b.json",
    ),
    ("PHASEFLAG_CACHE_DIR", "/var/cache/pf", "cache_dir", "/var/cache/pf"),
]


@pytest.mark.parametrize(("variable", "text", "option", "expected"), ENV_CASES)
def test_environment_variable_fills_option(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str, option: str, expected: Any
) -> None:
    """Each PHASEFLAG_<OPTION> variable sets its option when the argument is not given."""
    monkeypatch.setenv(variable, text)
    settings = resolve({"base_url": BASE, "api_key": KEY})
    assert getattr(settings, option) == expected


def test_explicit_argument_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit constructor argument beats the PHASEFLAG_* variable for the same option."""
    monkeypatch.setenv("PHASEFLAG_POLLING_INTERVAL", "5")
    monkeypatch.setenv("PHASEFLAG_BASE_URL", "https://env.phaseflag.test/api/v1")
    client = make(polling_interval=12.0)
    assert client.polling_interval == 12.0
    assert "api.phaseflag.test" in repr(client)


def test_client_reads_url_and_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """PHASEFLAG_BASE_URL and PHASEFLAG_API_KEY are enough to build a client."""
    monkeypatch.setenv("PHASEFLAG_BASE_URL", "https://env.phaseflag.test/api/v1/")
    monkeypatch.setenv("PHASEFLAG_API_KEY", KEY)
    monkeypatch.setenv("PHASEFLAG_POLLING_INTERVAL", "9")
    client = PhaseFlagClient()
    assert client.polling_interval == 9.0
    assert "https://env.phaseflag.test/api/v1'" in repr(client)


def test_blank_environment_variable_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """A variable set to whitespace counts as unset (the default applies)."""
    monkeypatch.setenv("PHASEFLAG_POLLING_INTERVAL", "  ")
    assert resolve({"base_url": BASE, "api_key": KEY}).polling_interval == 30.0


def test_bad_environment_variable_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A malformed PHASEFLAG_* value raises ConfigError naming the variable to fix."""
    monkeypatch.setenv("PHASEFLAG_POLLING_INTERVAL", "soon")
    with pytest.raises(ConfigError) as info:
        make()
    assert info.value.option == "PHASEFLAG_POLLING_INTERVAL"


def test_cache_dir_variable_selects_a_file_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """PHASEFLAG_CACHE_DIR makes the default cache a FileCache in that directory."""
    monkeypatch.setenv("PHASEFLAG_CACHE_DIR", str(tmp_path))
    assert isinstance(make()._cache, FileCache)
    monkeypatch.delenv("PHASEFLAG_CACHE_DIR")
    assert isinstance(make()._cache, MemoryCache)


def test_polling_interval_setter_validates() -> None:
    """Assigning a bad polling_interval raises ConfigError and keeps the old value."""
    client = make(polling_interval=10)
    with pytest.raises(ConfigError):
        client.polling_interval = -1
    client.polling_interval = 2
    assert client.polling_interval == 2.0


def test_valid_extras_are_accepted(tmp_path: Path) -> None:
    """Well-formed optional arguments construct a client without error."""
    make(
        headers={"X-Team": "checkout"},
        headers_factory=lambda: {"X-Trace": "1"},
        proxies={"https": "http://proxy.test:3128"},
        logger=logging.getLogger("app.flags"),
        cache=MemoryCache(),
        session=requests.Session(),
        verify=False,
        max_staleness=60,
        fetch_mode="streaming",
        fallback=lambda key, ctx: None,
    )


class TestStructuredOptionsFromEnvironment:
    """headers and default_context come from JSON in PHASEFLAG_* variables too."""

    def test_headers_from_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """PHASEFLAG_HEADERS (a JSON object) becomes the client's extra headers."""
        monkeypatch.setenv("PHASEFLAG_HEADERS", '{"X-Team": "checkout"}')
        client = PhaseFlagClient(base_url="", api_key="")
        assert client._headers == {"X-Team": "checkout"}

    def test_explicit_headers_win(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An explicit headers argument wins over the environment."""
        monkeypatch.setenv("PHASEFLAG_HEADERS", '{"X-Team": "checkout"}')
        client = PhaseFlagClient(base_url="", api_key="", headers={"X-Team": "search"})
        assert client._headers == {"X-Team": "search"}

    def test_default_context_from_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """PHASEFLAG_DEFAULT_CONTEXT supplies attributes merged under every read's context."""
        monkeypatch.setenv("PHASEFLAG_DEFAULT_CONTEXT", '{"attributes": {"plan": "pro"}}')
        document = {
            "schema_version": 1,
            "flags": [
                {
                    "key": "f",
                    "type": "boolean",
                    "variations": [{"key": "on", "value": True}, {"key": "off", "value": False}],
                    "rules": [
                        {
                            "conditions": [
                                {"attribute": "plan", "operator": "in", "values": ["pro"]}
                            ],
                            "serve": {"variation": "on"},
                        }
                    ],
                    "default": {"variation": "off"},
                }
            ],
        }
        client = PhaseFlagClient(base_url="", api_key="", bootstrap=document)
        assert client.get_boolean_value("f", False) is True

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("PHASEFLAG_HEADERS", "not json"),
            ("PHASEFLAG_HEADERS", "[1, 2]"),
            ("PHASEFLAG_HEADERS", '{"X-Count": 3}'),
            ("PHASEFLAG_DEFAULT_CONTEXT", '{"plan": "pro"}'),
            ("PHASEFLAG_DEFAULT_CONTEXT", '{"attributes": {"tags": [["a"]]}}'),
        ],
    )
    def test_malformed_structured_env_names_the_variable(
        self, monkeypatch: pytest.MonkeyPatch, name: str, value: str
    ) -> None:
        """A malformed structured variable raises ConfigError naming it."""
        monkeypatch.setenv(name, value)
        with pytest.raises(ConfigError, match=name):
            PhaseFlagClient(base_url="", api_key="")


# -- one validator for the transport options (issue 10 items 10 and 15, issue 14) ------------


@pytest.mark.parametrize(
    "url",
    ["https://user:hunter2@api.test/api/v1", "http://:hunter2@api.test/api/v1", "http://u@h/x"],
)
def test_credentials_in_base_url_refused_without_showing_them(url: str) -> None:
    """user:password@ in base_url is a ConfigError naming base_url; the password never shows."""
    with pytest.raises(ConfigError) as info:
        PhaseFlagClient(base_url=url, api_key="sdk-0123456789abcdef")
    assert info.value.option == "base_url"
    assert "credentials" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_credentials_in_base_url_refused_from_the_environment() -> None:
    """The same check applies to PHASEFLAG_BASE_URL (one validator)."""
    with pytest.raises(ConfigError) as info:
        resolve(
            {}, {"PHASEFLAG_BASE_URL": "https://u:pw@api.test/api/v1", "PHASEFLAG_API_KEY": "k"}
        )
    assert info.value.option == "PHASEFLAG_BASE_URL"
    assert "pw@" not in str(info.value)


def test_api_key_optional_only_with_a_headers_factory() -> None:
    """An empty api_key is accepted with a headers_factory (it may supply Authorization)."""
    base = "https://api.test/api/v1"
    with pytest.raises(ConfigError) as info:
        PhaseFlagClient(base_url=base, api_key="")
    assert info.value.option == "api_key"
    client = PhaseFlagClient(
        base_url=base, api_key="", headers_factory=lambda: {"Authorization": "Bearer jwt"}
    )
    assert client.status().state == "new"
    assert resolve({"base_url": base}, {}, key_optional=True).api_key == ""


def test_static_authorization_header_points_at_headers_factory() -> None:
    """headers= may not set Authorization; the error says headers_factory may."""
    with pytest.raises(ConfigError) as info:
        make(headers={"Authorization": "Bearer x"})
    assert info.value.option == "headers"
    assert "headers_factory" in str(info.value)


def test_transport_and_client_share_the_option_checks() -> None:
    """The transport's checks are _config's: the same error for the same bad value."""
    from phaseflag._transport import Transport

    errors = []
    for build in (
        lambda: Transport("https://api.test/api/v1", "key with space"),
        lambda: PhaseFlagClient(base_url="https://api.test/api/v1", api_key="key with space"),
    ):
        with pytest.raises(ConfigError) as info:
            build()
        errors.append(str(info.value))
    assert errors[0] == errors[1]
