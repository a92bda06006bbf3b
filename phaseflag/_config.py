"""Client options: defaults, ``PHASEFLAG_*`` environment variables, and validation.

Explicit constructor arguments win over the environment, which wins over defaults.
A malformed value raises ConfigError naming the option and how to fix it.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import SplitResult, urlsplit, urlunsplit

from ._cache import Cache, FileCache, MemoryCache
from ._errors import ConfigError, InvalidContextError
from .types import EvaluationContext

__all__ = [
    "ENV_PREFIX",
    "Settings",
    "check_api_key",
    "check_base_url",
    "check_headers",
    "check_types",
    "check_verify",
    "context_from_env",
    "default_cache",
    "env_json_object",
    "fspath",
    "positive_int",
    "positive_seconds",
    "resolve",
]

ENV_PREFIX: Final = "PHASEFLAG_"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def positive_seconds(name: str, value: object) -> float:
    """A finite positive number of seconds (numbers or numeric strings from the environment)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(name, f"{value!r} is not a number", "pass seconds, e.g. 30") from None
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
        raise ConfigError(name, f"{value!r} must be a positive number of seconds", "e.g. 30")
    return number


def positive_int(name: str, value: object) -> int:
    """A whole number of at least 1 (ints or digit strings from the environment)."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ConfigError(name, f"{value!r} is not a whole number", "pass e.g. 100")
    try:
        number = int(str(value).strip()) if isinstance(value, str) else int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise ConfigError(name, f"{value!r} is not a whole number", "pass e.g. 100") from None
    if number < 1:
        raise ConfigError(name, f"{value!r} must be at least 1", "pass e.g. 100")
    return number


def _bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(name, f"{value!r} is not a boolean", "use true/false, 1/0, yes/no")


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError(name, f"expected a string, got {type(value).__name__}")
    return value


def _absolute_http(url: str) -> SplitResult | None:
    """The parts of an absolute http(s) URL (a scheme and a host), else None."""
    try:
        parts = urlsplit(url)
        return parts if parts.scheme in ("http", "https") and parts.hostname else None
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        return None


def _http_url(name: str, value: object) -> str:
    text = _text(name, value).strip()
    if _absolute_http(text) is None:
        raise ConfigError(
            name,
            f"{display_url(text)!r} is not an absolute http(s) URL",
            "e.g. 'https://cdn.example.com/flags/bootstrap.json'",
        )
    return text


def check_base_url(name: str, value: object) -> str:
    """The API root without a trailing slash; ``""`` disables HTTP.

    Credentials (``user:pass@``) are refused: requests would replace the SDK key with Basic
    auth and the password would travel in every repr and log line that shows the URL.
    """
    fix = "use the API root including /api/v1, e.g. 'https://api.phaseflag.com/api/v1'"
    if not isinstance(value, str):
        raise ConfigError(name, f"must be a str, got {type(value).__name__}", fix)
    url = value.strip().rstrip("/")
    if not url:
        return ""
    parts = _absolute_http(url)
    if parts is None:
        raise ConfigError(
            name,
            f"must be an http:// or https:// URL, got {display_url(url)!r}",
            fix + " or '' to disable HTTP",
        )
    if "@" in parts.netloc:
        raise ConfigError(
            name,
            f"must not contain credentials (user:password@), got {display_url(url)!r}",
            "pass the SDK key as api_key, or other credentials through headers_factory",
        )
    if parts.query or parts.fragment:
        raise ConfigError(name, "must not contain a query string or fragment", fix)
    return url


def display_url(url: str) -> str:
    """The URL without credentials, query or fragment (signed CDN URLs carry tokens there)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def check_api_key(name: str, value: object, *, required: bool) -> str:
    """The SDK key: printable ASCII, non-empty when ``required``."""
    if not isinstance(value, str):
        raise ConfigError(name, f"must be a str, got {type(value).__name__}")
    if required and not value:
        raise ConfigError(
            name,
            "is empty while base_url is set",
            "pass the SDK key of this environment (or an Authorization from headers_factory)",
        )
    # Checked here so that requests never builds an error message around the header value.
    if any(not (0x21 <= ord(ch) <= 0x7E) for ch in value):
        raise ConfigError(
            name,
            "contains whitespace, control or non-ASCII characters",
            "copy the SDK key again without surrounding spaces or newlines",
        )
    return value


def check_headers(name: str, value: object) -> dict[str, str]:
    """Static request headers: str to str, without Authorization (the SDK sets it)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigError(name, "must be a mapping of str to str")
    if any(k.lower() == "authorization" for k in value):
        raise ConfigError(
            name,
            "must not set Authorization",
            "the SDK sends 'Bearer <api_key>'; return Authorization from headers_factory instead",
        )
    return dict(value)


def check_verify(name: str, value: object) -> bool | str:
    """TLS verification: True, False, or the path of a CA bundle that exists."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and os.path.exists(value):
        return value
    raise ConfigError(
        name, f"must be True, False or the path of a CA bundle that exists, got {value!r}"
    )


def _fetch_mode(name: str, value: object) -> str:
    text = _text(name, value).strip().lower()
    if text not in ("polling", "streaming", "cache"):
        raise ConfigError(
            name, f"{value!r} is not a fetch mode", "use 'polling', 'streaming' or 'cache'"
        )
    return text


def _verify(name: str, value: object) -> bool | str:
    if isinstance(value, bool):
        return value
    text = _text(name, value).strip()
    if text.lower() in _TRUE | _FALSE:
        return _bool(name, text)
    return text  # a CA bundle path


_PARSERS: Final[Mapping[str, Callable[[str, object], Any]]] = {
    "base_url": check_base_url,
    "api_key": lambda n, v: check_api_key(n, v, required=False),
    "polling_interval": positive_seconds,
    "event_flush_interval": positive_seconds,
    "event_batch_size": positive_int,
    "bootstrap_file": _text,
    "bootstrap_url": _http_url,
    "offline_mode": _bool,
    "request_timeout": positive_seconds,
    "max_event_queue_size": positive_int,
    "debug": _bool,
    "fetch_mode": _fetch_mode,
    "max_staleness": positive_seconds,
    "cache_dir": _text,
    "send_events": _bool,
    "verify": _verify,
}

_DEFAULTS: Final[Mapping[str, Any]] = {
    "polling_interval": 30.0,
    "event_flush_interval": 30.0,
    "event_batch_size": 100,
    "bootstrap_file": None,
    "bootstrap_url": None,
    "offline_mode": False,
    "request_timeout": 10.0,
    "max_event_queue_size": 10_000,
    "debug": False,
    "fetch_mode": "polling",
    "max_staleness": None,
    "cache_dir": None,
    "send_events": True,
    "verify": True,
}


@dataclass(frozen=True, slots=True)
class Settings:
    """The resolved, validated scalar options of a client."""

    base_url: str
    api_key: str
    polling_interval: float
    event_flush_interval: float
    event_batch_size: int
    bootstrap_file: str | None
    bootstrap_url: str | None
    offline_mode: bool
    request_timeout: float
    max_event_queue_size: int
    debug: bool
    fetch_mode: str
    max_staleness: float | None
    cache_dir: str | None
    send_events: bool
    verify: bool | str

    def __repr__(self) -> str:
        return f"Settings(base_url={self.base_url!r}, api_key={redact(self.api_key)!r}, ...)"


def redact(api_key: str) -> str:
    """A printable stand-in for an API key: its last four characters at most."""
    if not api_key:
        return ""
    return "..." + api_key[-4:] if len(api_key) >= 12 else "***"


def resolve(
    explicit: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    *,
    key_optional: bool = False,
) -> Settings:
    """Merge explicit arguments (None = not given), ``PHASEFLAG_*`` variables and defaults.

    ``key_optional`` (a ``headers_factory`` is set, and may supply Authorization itself)
    lets ``api_key`` be empty while ``base_url`` is set.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, parse in _PARSERS.items():
        given = explicit.get(name)
        env_name = ENV_PREFIX + name.upper()
        if given is not None:
            values[name] = parse(name, given)
        elif env.get(env_name, "").strip():
            values[name] = parse(env_name, env[env_name])
        elif name == "api_key" and (values["base_url"] == "" or key_optional):
            values[name] = ""  # HTTP disabled, or headers_factory authenticates
        elif name in ("base_url", "api_key"):
            raise ConfigError(
                name,
                "is required",
                f"pass {name}=... or set {env_name}"
                + (" (base_url='' disables HTTP)" if name == "base_url" else ""),
            )
        else:
            values[name] = _DEFAULTS[name]
    check_api_key(
        "api_key", values["api_key"], required=bool(values["base_url"]) and not key_optional
    )
    return Settings(**values)


def env_json_object(option: str, environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The JSON object in ``PHASEFLAG_<OPTION>``, or None when unset; ConfigError if malformed.

    For the structured options (``headers``, ``default_context``); callables and
    objects (``cache``, ``logger``, ``fallback``, ``session``...) have no
    environment form, and proxies come from the standard ``HTTPS_PROXY`` variables.
    """
    env = os.environ if environ is None else environ
    name = ENV_PREFIX + option.upper()
    text = env.get(name, "").strip()
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ConfigError(name, "is not a JSON object", f'e.g. {name}=\'{{"key": "value"}}\'')
    return value


def context_from_env() -> EvaluationContext | None:
    """``PHASEFLAG_DEFAULT_CONTEXT``: ``{"user_id", "session_id", "attributes": {...}}``."""
    data = env_json_object("default_context")
    if data is None:
        return None
    unknown = set(data) - {"user_id", "session_id", "attributes"}
    if unknown or not isinstance(data.get("attributes", {}), dict):
        raise ConfigError(
            "PHASEFLAG_DEFAULT_CONTEXT",
            f"unexpected fields {sorted(unknown)}" if unknown else "attributes must be an object",
            'use {"user_id": ..., "session_id": ..., "attributes": {...}}',
        )
    try:
        return EvaluationContext.from_dict(data)
    except InvalidContextError as exc:
        raise ConfigError("PHASEFLAG_DEFAULT_CONTEXT", str(exc)) from None


def fspath(option: str, value: object) -> str | None:
    if value is None:
        return None
    try:
        return os.fspath(value)  # type: ignore[call-overload, no-any-return]
    except TypeError:
        raise ConfigError(option, f"expected a path, got {type(value).__name__}") from None


_OPTION_TYPES: Final[Mapping[str, tuple[tuple[type, ...], str]]] = {
    "headers": ((Mapping,), "a mapping of header names to values"),
    "proxies": ((Mapping,), "a mapping like {'https': 'http://proxy:3128'}"),
    "logger": ((logging.Logger, logging.LoggerAdapter), "a logging.Logger"),
    "cache": ((Cache,), "a phaseflag.Cache (e.g. MemoryCache() or FileCache(dir))"),
}


def check_types(**options: object) -> None:
    """Reject objects of the wrong type at construction, not later inside a thread or a read."""
    session = options.pop("session", None)
    if session is not None:
        import requests  # only when a session is passed (requests is then loaded anyway)

        if not isinstance(session, requests.Session):
            raise ConfigError(
                "session", f"must be a requests.Session, got {type(session).__name__}"
            )
    for option, value in options.items():
        types, wanted = _OPTION_TYPES[option]
        if value is not None and not isinstance(value, types):
            raise ConfigError(option, f"must be {wanted}, got {type(value).__name__}")


def default_cache(settings: Settings) -> Cache:
    if settings.cache_dir:
        return FileCache(settings.cache_dir)
    return MemoryCache()
