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
from urllib.parse import urlsplit

from ._cache import Cache, FileCache, MemoryCache
from ._errors import ConfigError, InvalidContextError
from .types import EvaluationContext

__all__ = [
    "ENV_PREFIX",
    "Settings",
    "check_types",
    "context_from_env",
    "default_cache",
    "env_json_object",
    "fspath",
    "resolve",
]

ENV_PREFIX: Final = "PHASEFLAG_"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _positive_float(name: str, value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(name, f"{value!r} is not a number", "pass seconds, e.g. 30") from None
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
        raise ConfigError(name, f"{value!r} must be a positive number of seconds", "e.g. 30")
    return number


def _positive_int(name: str, value: object) -> int:
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


def _http_url(name: str, value: object, *, allow_empty: bool = False) -> str:
    text = _text(name, value).strip()
    if not text and allow_empty:
        return ""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            name,
            f"{text!r} is not an http(s) URL",
            "use e.g. https://api.phaseflag.com/api/v1"
            + (" or '' to disable HTTP" if allow_empty else ""),
        )
    return text.rstrip("/")


def _fetch_mode(name: str, value: object) -> str:
    text = _text(name, value).strip().lower()
    if text not in ("polling", "streaming"):
        raise ConfigError(name, f"{value!r} is not a fetch mode", "use 'polling' or 'streaming'")
    return text


def _verify(name: str, value: object) -> bool | str:
    if isinstance(value, bool):
        return value
    text = _text(name, value).strip()
    if text.lower() in _TRUE | _FALSE:
        return _bool(name, text)
    return text  # a CA bundle path


_PARSERS: Final[Mapping[str, Callable[[str, object], Any]]] = {
    "base_url": lambda n, v: _http_url(n, v, allow_empty=True),
    "api_key": _text,
    "polling_interval": _positive_float,
    "event_flush_interval": _positive_float,
    "event_batch_size": _positive_int,
    "bootstrap_file": _text,
    "bootstrap_url": _http_url,
    "offline_mode": _bool,
    "request_timeout": _positive_float,
    "max_event_queue_size": _positive_int,
    "debug": _bool,
    "fetch_mode": _fetch_mode,
    "max_staleness": _positive_float,
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


def resolve(explicit: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """Merge explicit arguments (None = not given), ``PHASEFLAG_*`` variables and defaults."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, parse in _PARSERS.items():
        given = explicit.get(name)
        env_name = ENV_PREFIX + name.upper()
        if given is not None:
            values[name] = parse(name, given)
        elif env.get(env_name, "").strip():
            values[name] = parse(env_name, env[env_name])
        elif name == "api_key" and values["base_url"] == "":
            values[name] = ""  # HTTP is disabled: there is nothing to authenticate
        elif name in ("base_url", "api_key"):
            raise ConfigError(
                name,
                "is required",
                f"pass {name}=... or set {env_name}"
                + (" (base_url='' disables HTTP)" if name == "base_url" else ""),
            )
        else:
            values[name] = _DEFAULTS[name]
    if values["base_url"] and not values["api_key"]:
        raise ConfigError("api_key", "is empty while base_url is set", "pass your SDK key")
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
        return EvaluationContext(
            data.get("user_id"), data.get("session_id"), data.get("attributes")
        )
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
