"""Helpers for testing code that uses phaseflag: a network-free client and ruleset builders.

The pytest fixture and marker built on these live in ``phaseflag.pytest_plugin``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from ._client import PhaseFlagClient
from ._compile import compile_ruleset
from ._errors import ConfigError, RulesetError

__all__ = ["condition", "create_mock_client", "flag", "rule", "ruleset"]

#: A serve spec: a variation key, or ``{variation_key: weight_percent}`` for a rollout.
ServeSpec = str | Mapping[str, float]

_NETWORK_OPTIONS: Final = ("base_url", "bootstrap_url")


def create_mock_client(
    flags: Mapping[str, Any] | None = None,
    configs: Mapping[str, Any] | None = None,
    *,
    strict: bool = True,
    **options: Any,
) -> PhaseFlagClient:
    """A started, ready PhaseFlagClient serving static ``flags`` and ``configs``; never uses HTTP.

    It is a real client with ``base_url=""``: typed getters, ``*_details``,
    ``all_flags``, overrides, listeners and ``fallback`` behave exactly as in
    production; analytics events are dropped. To test targeting, pass a full
    ruleset (for example from :func:`ruleset`) as ``bootstrap=`` instead of
    ``flags``. With ``strict`` (the default) a flag the client would isolate as
    INVALID_FLAG is an error here; pass ``strict=False`` to test that handling.
    Other keyword ``options`` go to ``PhaseFlagClient``. Call ``stop()`` when
    done (the ``phaseflag_client`` pytest fixture does).

    Raises:
        ConfigError: a network option was passed, ``bootstrap`` was combined
            with ``flags``/``configs``, the data is not a valid ruleset, or (with
            ``strict``) a flag cannot be served, e.g. a None value.
    """
    for option in _NETWORK_OPTIONS:
        if option in options:
            raise ConfigError(option, "is not accepted: create_mock_client never uses the network")
    if "bootstrap" in options:
        if flags is not None or configs is not None:
            raise ConfigError("bootstrap", "pass either flags/configs or bootstrap, not both")
    else:
        options["bootstrap"] = {"flags": dict(flags or {}), "configs": dict(configs or {})}
    options.setdefault("api_key", "")
    served = None if flags is None and configs is None else {**(flags or {}), **(configs or {})}
    keys = None if served is None else list(served)  # the order expand_shorthand numbers them
    if served is not None and keys is not None:
        nones = [key for key, value in served.items() if value is None]
        if strict and nones:
            raise ConfigError(
                "flags",
                f"flag {nones[0]!r} has the value None, which a flag cannot serve",
                "give it a value, leave it out, or pass strict=False",
            )
        try:
            compile_ruleset(options["bootstrap"])
        except RulesetError as exc:
            details = "; ".join(_by_key(f"{path}: {message}", keys) for path, message in exc.errors)
            raise ConfigError("flags", f"cannot be served: {details or exc}") from None
    client = PhaseFlagClient(base_url="", **options)
    problems = client.ruleset.problems
    if strict and problems:
        details = "; ".join(
            message if keys is None else _by_key(f"{path}: {message}", keys)
            for path, message in problems
        )
        raise ConfigError("flags", f"cannot all be served: {details}", "or pass strict=False")
    client.start()
    return client


_FLAG_PATH: Final = re.compile(r"\bflags\[(\d+)\][\w.\[\]]*")


def _by_key(text: str, keys: list[str]) -> str:
    """``flags[3].variations[0].value: ...`` -> ``flag 'theme': ...`` for shorthand flags, whose
    document the caller never saw."""

    def name(match: re.Match[str]) -> str:
        index = int(match.group(1))
        return f"flag {keys[index]!r}" if index < len(keys) else match.group(0)

    return _FLAG_PATH.sub(name, text)


def ruleset(
    *flags: Mapping[str, Any], segments: Iterable[Mapping[str, Any]] = (), version: int = 1
) -> dict[str, Any]:
    """A schema-1 ruleset document holding ``flags`` (from :func:`flag`) and ``segments``."""
    return {
        "schema_version": 1,
        "version": version,
        "flags": [dict(f) for f in flags],
        "segments": [dict(s) for s in segments],
    }


def flag(
    key: str,
    value: Any = None,
    *,
    variations: Mapping[str, Any] | None = None,
    default: ServeSpec | None = None,
    off: str | None = None,
    rules: Iterable[Mapping[str, Any]] = (),
    targets: Mapping[str, Iterable[str]] | None = None,
    enabled: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """A flag definition (a dict in the ruleset format).

    ``flag("dark-mode", True)`` is a boolean flag with variations ``on``/``off``
    serving ``on``; ``flag("theme", "dark")`` serves one variation named ``value``.
    Otherwise name ``variations`` (key -> value) and the ``default`` serve (a
    variation key, or ``{key: weight}`` for a rollout), the ``off`` variation,
    ``rules`` (from :func:`rule`) and ``targets`` (variation key -> user ids).
    The type is inferred from the values; ``extra`` fields (``prerequisites``,
    ``salt``, ``type``, ...) are copied in as given. Nothing is validated here:
    the client validates when it loads the ruleset.

    Raises:
        TypeError: both or neither of ``value`` and ``variations`` were given.
    """
    if (value is None) == (variations is None):
        raise TypeError("flag() needs exactly one of value= or variations=")
    if variations is None:
        if type(value) is bool:
            variations = {"on": True, "off": False}
            default = default or ("on" if value else "off")
            off = off or "off"
        else:
            variations = {"value": value}
            default = default or "value"
    out: dict[str, Any] = {
        "key": key,
        "type": _infer_type(variations.values()),
        "enabled": enabled,
        "variations": [{"key": k, "value": v} for k, v in variations.items()],
    }
    if off is not None:
        out["off_variation"] = off
    if targets:
        out["targets"] = [{"variation": k, "user_ids": list(ids)} for k, ids in targets.items()]
    rule_list = [dict(r) for r in rules]
    if rule_list:
        out["rules"] = rule_list
    if default is not None:
        out["default"] = _serve(default)
    out.update(extra)
    return out


def rule(*conditions: Mapping[str, Any], serve: ServeSpec, id: str | None = None) -> dict[str, Any]:
    """A targeting rule: when every condition (from :func:`condition`) holds, ``serve``."""
    out: dict[str, Any] = {"conditions": [dict(c) for c in conditions], "serve": _serve(serve)}
    if id is not None:
        out["id"] = id
    return out


def condition(
    attribute: str,
    operator: str,
    *values: Any,
    negate: bool = False,
    case_insensitive: bool = False,
) -> dict[str, Any]:
    """A condition: ``condition("plan", "in", "pro", "enterprise")``."""
    out: dict[str, Any] = {"attribute": attribute, "operator": operator, "values": list(values)}
    if negate:
        out["negate"] = True
    if case_insensitive:
        out["case_insensitive"] = True
    return out


def _serve(spec: ServeSpec) -> dict[str, Any]:
    if isinstance(spec, str):
        return {"variation": spec}
    weights = [{"variation": k, "weight": w} for k, w in spec.items()]
    return {"rollout": {"variations": weights}}


def _infer_type(values: Iterable[Any]) -> str:
    kinds = {type(v) for v in values}
    if kinds == {bool}:
        return "boolean"
    if kinds == {str}:
        return "string"
    if kinds and kinds <= {int, float}:
        return "number"
    return "json"
