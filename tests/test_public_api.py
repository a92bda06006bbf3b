"""The public surface: ``phaseflag.__all__``, the public ``phaseflag.types`` module, and every
import and call the product page (the PhaseFlag Python SDK page) shows.
"""

from __future__ import annotations

import inspect
import textwrap
from typing import Any

import pytest

import phaseflag
import phaseflag.types

EXPORTED = [
    "AsyncPhaseFlagClient",
    "AuthenticationError",
    "Cache",
    "ChangeEvent",
    "ClientStatus",
    "ConfigError",
    "ErrorCode",
    "EvaluationContext",
    "EvaluationError",
    "EvaluationEvent",
    "EvaluationResult",
    "Explanation",
    "FileCache",
    "FlagChange",
    "Hook",
    "HookContext",
    "InvalidContextError",
    "MemoryCache",
    "PhaseFlagClient",
    "PhaseFlagError",
    "Reason",
    "Ruleset",
    "RulesetError",
    "RulesetTooLargeError",
    "TransportError",
    "__version__",
    "compile_ruleset",
    "evaluate",
    "explain",
    "load_ruleset",
]

# Every import line on the product page, verbatim.
PAGE_IMPORTS = [
    "from phaseflag import PhaseFlagClient",
    "from phaseflag import EvaluationContext",
    "from phaseflag import PhaseFlagClient, EvaluationContext",
    "from phaseflag.types import EvaluationEvent",
]


def test_all_is_pinned_and_sorted() -> None:
    """phaseflag.__all__ is exactly the reviewed list, kept sorted."""
    assert phaseflag.__all__ == EXPORTED
    assert phaseflag.__all__ == sorted(phaseflag.__all__)


@pytest.mark.parametrize("name", EXPORTED)
def test_every_exported_name_is_importable(name: str) -> None:
    """Each name in __all__ exists on the package (``from phaseflag import *`` works)."""
    namespace: dict[str, Any] = {}
    exec(f"from phaseflag import {name}", namespace)
    assert namespace[name] is getattr(phaseflag, name)


def test_star_import_gives_exactly_all() -> None:
    """``from phaseflag import *`` binds exactly the names of __all__."""
    namespace: dict[str, Any] = {}
    exec("from phaseflag import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(EXPORTED)


@pytest.mark.parametrize("line", PAGE_IMPORTS)
def test_product_page_imports_work(line: str) -> None:
    """Every import line on the product page runs as written."""
    exec(line, {})


def test_value_types_are_the_same_objects_in_both_places() -> None:
    """phaseflag.types holds the value types that phaseflag re-exports (one class each)."""
    from phaseflag.types import EvaluationEvent

    assert EvaluationEvent is phaseflag.EvaluationEvent
    for name in phaseflag.types.__all__:
        if name in EXPORTED:
            assert getattr(phaseflag, name) is getattr(phaseflag.types, name)


def test_types_module_lists_every_value_type_it_defines() -> None:
    """Every value type phaseflag re-exports from phaseflag.types is in types.__all__."""
    from_types = {
        name
        for name in EXPORTED
        if getattr(getattr(phaseflag, name), "__module__", None) == "phaseflag.types"
    }
    assert from_types <= set(phaseflag.types.__all__)


def test_page_constructor_options_exist() -> None:
    """PhaseFlagClient accepts every option of the page's configuration reference."""
    parameters = inspect.signature(phaseflag.PhaseFlagClient).parameters
    for option in (
        "base_url",
        "api_key",
        "polling_interval",
        "event_flush_interval",
        "event_batch_size",
        "bootstrap_file",
        "bootstrap_url",
        "offline_mode",
    ):
        assert option in parameters


def test_page_methods_exist() -> None:
    """Every client method the page calls exists."""
    for method in (
        "start",
        "wait_until_ready",
        "stop",
        "get_boolean_value",
        "get_string_value",
        "get_json_value",
        "get_variation",
        "on_flags_changed",
        "set_override",
        "clear_override",
        "clear_all_overrides",
        "evaluate",
        "track_event",
        "flush_events",
        "__enter__",
        "__exit__",
    ):
        assert callable(getattr(phaseflag.PhaseFlagClient, method))
    assert list(inspect.signature(phaseflag.PhaseFlagClient.evaluate).parameters)[1:3] == [
        "flag_key",
        "ctx",
    ]


def test_page_flag_mocking_snippet_runs() -> None:
    """The page's "Flag Mocking (Testing)" snippet runs verbatim with no network."""
    snippet = textwrap.dedent(
        """
        from phaseflag import PhaseFlagClient

        # Empty base_url disables HTTP — safe for unit tests
        client = PhaseFlagClient(base_url="", api_key="")

        client.set_override("new-checkout-flow", True)
        assert client.get_boolean_value("new-checkout-flow", False) is True

        client.clear_override("new-checkout-flow")
        client.clear_all_overrides()
        """
    )
    exec(snippet, {})


def test_page_context_and_event_snippets_run() -> None:
    """The page's EvaluationContext, result and EvaluationEvent examples construct as shown."""
    snippet = textwrap.dedent(
        """
        from phaseflag import EvaluationContext
        from phaseflag.types import EvaluationEvent

        context = EvaluationContext(
            user_id="user-123",
            session_id="sess-abc",
            attributes={
                "email": "alice@example.com",
                "plan": "pro",
                "country": "US",
                "app_version": "2.4.1",
                "account_age": 365,
            },
        )
        event = EvaluationEvent(
            flag_key="new-checkout-flow",
            variation_key="enabled",
            user_id="user-123",
            metadata={"page": "checkout"},
        )
        assert context.user_id == "user-123" and event.metadata == {"page": "checkout"}
        """
    )
    exec(snippet, {})
    result = phaseflag.EvaluationResult("f", True, "targeting_match", "enabled")
    assert (result.value, result.reason, result.variation_key) == (
        True,
        "targeting_match",
        "enabled",
    )
