"""The client's options: ``_config.resolve`` for the environment-backed settings, then the
checks on the options only a constructor takes (callables, objects, the default context)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ._config import Settings, check_types, context_from_env, env_json_object, fspath, resolve
from ._errors import ConfigError
from .types import EvaluationContext

if TYPE_CHECKING:
    import requests

    from ._cache import Cache


def resolve_options(
    given: dict[str, Any],
    *,
    bootstrap_file: Any,
    default_context: EvaluationContext | None,
    fallback: Any,
    headers: Mapping[str, str] | None,
    headers_factory: Callable[[], Mapping[str, str]] | None,
    proxies: Mapping[str, str] | None,
    logger: logging.Logger | None,
    cache: Cache | None,
    session: requests.Session | None,
) -> tuple[Settings, Mapping[str, str] | None, EvaluationContext | None]:
    """The resolved settings, headers and default context; ConfigError naming the option."""
    given = {**given, "bootstrap_file": fspath("bootstrap_file", bootstrap_file)}
    settings = resolve(given, key_optional=headers_factory is not None)
    if default_context is not None and not isinstance(default_context, EvaluationContext):
        raise ConfigError("default_context", "must be an EvaluationContext")
    if fallback is not None and not callable(fallback):
        raise ConfigError("fallback", "must be callable as fallback(flag_key, context)")
    if headers_factory is not None and not callable(headers_factory):
        raise ConfigError("headers_factory", "must be a callable returning a dict of headers")
    if headers is None:
        headers = env_json_object("headers")
        if headers is not None and not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ConfigError("PHASEFLAG_HEADERS", "names and values must be strings")
    if default_context is None:
        default_context = context_from_env()
    check_types(headers=headers, proxies=proxies, logger=logger, cache=cache, session=session)
    if settings.bootstrap_url and not settings.base_url:
        raise ConfigError(
            "bootstrap_url",
            "needs HTTP, which base_url='' disables",
            "use bootstrap_file or bootstrap= instead, or set base_url",
        )
    return settings, headers, default_context
