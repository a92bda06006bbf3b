"""Evaluation hooks: stages, order, per-evaluation data, isolation from failures, equality."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from phaseflag import EvaluationContext, EvaluationResult, Hook, HookContext, PhaseFlagClient
from phaseflag._hooks import EvaluationError
from phaseflag.testing import condition, create_mock_client, flag, rule, ruleset

DOC = ruleset(
    flag(
        "checkout",
        variations={"on": True, "off": False},
        default="off",
        rules=[rule(condition("plan", "in", "pro"), serve="on", id="pro")],
    ),
    flag("theme", "dark"),
    flag("limit", 3),
    flag("whole", 4.0),
    flag("ratio", 2.5),
    flag("config", {"retries": 2, "nested": {"a": [1]}}),
    flag("regions", ["eu", "us"]),
    flag("split", variations={"a": "A", "b": "B"}, default={"a": 50, "b": 50}),
    flag("killed", variations={"on": True, "off": False}, default="on", off="off", enabled=False),
    version=7,
)
PRO = EvaluationContext(user_id="u1", attributes={"plan": "pro"})


class Recorder(Hook):
    """Records every stage it sees, with the hook data it carried."""

    def __init__(self, name: str, log: list[tuple[Any, ...]]) -> None:
        self.name = name
        self.log = log

    def before(self, ctx: HookContext) -> None:
        ctx.hook_data["started"] = self.name
        self.log.append((self.name, "before", ctx.flag_key, ctx.kind))

    def after(self, ctx: HookContext, result: EvaluationResult) -> None:
        self.log.append((self.name, "after", ctx.hook_data["started"], result.value))

    def error(self, ctx: HookContext, exc: Exception) -> None:
        assert isinstance(exc, EvaluationError)
        self.log.append((self.name, "error", ctx.hook_data["started"], exc.error_code))

    def finally_after(self, ctx: HookContext, result: EvaluationResult) -> None:
        self.log.append((self.name, "finally_after", ctx.hook_data["started"], result.value))


class Raising(Hook):
    """Raises in the chosen stages."""

    def __init__(self, *stages: str) -> None:
        self.stages = stages

    def _maybe(self, stage: str) -> None:
        if stage in self.stages:
            raise RuntimeError(f"boom in {stage}")

    def before(self, ctx: HookContext) -> None:
        self._maybe("before")

    def after(self, ctx: HookContext, result: EvaluationResult) -> None:
        self._maybe("after")

    def error(self, ctx: HookContext, exc: Exception) -> None:
        self._maybe("error")

    def finally_after(self, ctx: HookContext, result: EvaluationResult) -> None:
        self._maybe("finally_after")


@pytest.fixture
def client() -> Iterator[PhaseFlagClient]:
    c = create_mock_client(bootstrap=DOC)
    yield c
    c.stop()


def _getters(c: PhaseFlagClient) -> dict[str, Callable[..., Any]]:
    return {
        "boolean": c.get_boolean_value,
        "string": c.get_string_value,
        "integer": c.get_integer_value,
        "float": c.get_float_value,
        "json": c.get_json_value,
    }


class TestStages:
    def test_success_runs_before_after_finally_with_hook_data(
        self, client: PhaseFlagClient
    ) -> None:
        """A served flag: before, after (with the value), finally_after; data flows between."""
        log: list[tuple[Any, ...]] = []
        client.add_hook(Recorder("h", log))
        assert client.get_boolean_value("checkout", False, PRO) is True
        assert log == [
            ("h", "before", "checkout", "boolean"),
            ("h", "after", "h", True),
            ("h", "finally_after", "h", True),
        ]

    def test_fallback_runs_error_not_after(self, client: PhaseFlagClient) -> None:
        """A missing flag and a mistyped read call error (with the code), never after."""
        log: list[tuple[Any, ...]] = []
        client.add_hook(Recorder("h", log))
        assert client.get_boolean_value("nope", True) is True
        assert client.get_integer_value("theme", 5) == 5
        assert log == [
            ("h", "before", "nope", "boolean"),
            ("h", "error", "h", "FLAG_NOT_FOUND"),
            ("h", "finally_after", "h", True),
            ("h", "before", "theme", "integer"),
            ("h", "error", "h", "TYPE_MISMATCH"),
            ("h", "finally_after", "h", 5),
        ]

    def test_order_client_hooks_then_call_hooks_and_reverse_after(
        self, client: PhaseFlagClient
    ) -> None:
        """before: client hooks in order, then the call's; later stages in reverse."""
        log: list[tuple[Any, ...]] = []
        client.add_hook(Recorder("a", log))
        client.add_hook(Recorder("b", log))
        client.get_string_value("theme", "x", hooks=[Recorder("c", log)])
        assert [(n, s) for n, s, *_ in log] == [
            ("a", "before"),
            ("b", "before"),
            ("c", "before"),
            ("c", "after"),
            ("b", "after"),
            ("a", "after"),
            ("c", "finally_after"),
            ("b", "finally_after"),
            ("a", "finally_after"),
        ]
        # each hook saw its own hook_data
        assert [d for _, s, d, _ in log if s == "after"] == ["c", "b", "a"]

    def test_hook_data_is_fresh_per_evaluation(self, client: PhaseFlagClient) -> None:
        """hook_data never leaks from one read into the next."""
        seen: list[dict[str, Any]] = []

        class Counter(Hook):
            def before(self, ctx: HookContext) -> None:
                seen.append(dict(ctx.hook_data))
                ctx.hook_data["n"] = len(seen)

        client.add_hook(Counter())
        for _ in range(3):
            client.get_boolean_value("checkout", False)
        assert seen == [{}, {}, {}]

    def test_context_and_version_seen_by_hooks(self, client: PhaseFlagClient) -> None:
        """HookContext carries the default, the context read and the ruleset version."""
        got: list[HookContext] = []

        class Grab(Hook):
            def before(self, ctx: HookContext) -> None:
                got.append(ctx)

        client.get_json_value("config", {}, PRO, hooks=[Grab()])
        ctx = got[0]
        assert (ctx.flag_key, ctx.kind, ctx.default, ctx.context) == ("config", "json", {}, PRO)
        assert ctx.ruleset_version == 7
        assert ctx.client is client

    def test_every_getter_accepts_call_hooks(self, client: PhaseFlagClient) -> None:
        """Typed getters, *_details, get_details and get_variation all run call hooks."""
        log: list[tuple[Any, ...]] = []
        hook = Recorder("h", log)
        client.get_boolean_value("checkout", False, hooks=[hook])
        client.get_string_value("theme", "", hooks=[hook])
        client.get_integer_value("limit", 0, hooks=[hook])
        client.get_float_value("ratio", 0.0, hooks=[hook])
        client.get_json_value("config", {}, hooks=[hook])
        client.get_boolean_details("checkout", False, hooks=[hook])
        client.get_string_details("theme", "", hooks=[hook])
        client.get_integer_details("limit", 0, hooks=[hook])
        client.get_float_details("ratio", 0.0, hooks=[hook])
        client.get_json_details("config", {}, hooks=[hook])
        client.get_details("theme", "", hooks=[hook])
        client.get_variation("theme", hooks=[hook])
        kinds = [k for _, s, _, k in log if s == "before"]
        assert kinds == [
            "boolean",
            "string",
            "integer",
            "number",
            "json",
            "boolean",
            "string",
            "integer",
            "number",
            "json",
            "any",
            "any",
        ]

    def test_unsubscribe_removes_the_hook(self, client: PhaseFlagClient) -> None:
        log: list[tuple[Any, ...]] = []
        remove = client.add_hook(Recorder("h", log))
        client.get_boolean_value("checkout", False)
        remove()
        remove()  # twice is harmless
        client.get_boolean_value("checkout", False)
        assert len(log) == 3

    def test_without_client_hooks_the_class_getters_serve(self, client: PhaseFlagClient) -> None:
        """The no-cost claim's mechanism: getters are shadowed per client only while it has
        hooks, and removing the last one restores the class's (one ``hooks`` test) getters."""
        from phaseflag._hooks import _GETTERS

        names = [name for name, _, _ in _GETTERS]
        assert not any(name in vars(client) for name in names)
        first, second = client.add_hook(Hook()), client.add_hook(Hook())
        assert all(name in vars(client) for name in names)
        first()
        assert all(name in vars(client) for name in names)
        second()
        assert not any(name in vars(client) for name in names)
        assert client.get_boolean_value("checkout", False, PRO) is True

    def test_not_a_hook_is_refused(self, client: PhaseFlagClient) -> None:
        """Anything without the four stages is a TypeError naming what it lacks."""
        with pytest.raises(TypeError, match="finally_after"):
            client.add_hook(object())  # type: ignore[arg-type]

    def test_duck_typed_hooks_and_partial_subclasses(self, client: PhaseFlagClient) -> None:
        """An object with the four stages (no Hook base) runs every stage, as a client
        hook and on the call; a subclass overriding only ``error`` hears only misses."""
        from types import SimpleNamespace

        log: list[tuple[Any, ...]] = []

        def duck(name: str) -> Any:
            return SimpleNamespace(
                before=lambda ctx: log.append((name, "before", ctx.flag_key)),
                after=lambda ctx, result: log.append((name, "after", result.value)),
                error=lambda ctx, exc: log.append((name, "error", exc.error_code)),
                finally_after=lambda ctx, result: log.append((name, "finally", result.value)),
            )

        class Misses(Hook):
            def error(self, ctx: HookContext, exc: Exception) -> None:
                log.append(("misses", "error", ctx.flag_key))

        client.add_hook(duck("client"))
        client.add_hook(Misses())
        assert client.get_string_value("theme", "x", hooks=[duck("call")]) == "dark"
        assert client.get_integer_value("nope", 5) == 5
        assert log == [
            ("client", "before", "theme"),
            ("call", "before", "theme"),
            ("call", "after", "dark"),
            ("client", "after", "dark"),
            ("call", "finally", "dark"),
            ("client", "finally", "dark"),
            ("client", "before", "nope"),
            ("misses", "error", "nope"),
            ("client", "error", "FLAG_NOT_FOUND"),
            ("client", "finally", 5),
        ]

    def test_all_flags_runs_no_hooks(self, client: PhaseFlagClient) -> None:
        """all_flags is a snapshot, not one evaluation per flag: hooks stay quiet."""
        log: list[tuple[Any, ...]] = []
        client.add_hook(Recorder("h", log))
        assert client.all_flags(PRO)["checkout"] is True
        assert log == []


class TestIsolation:
    @pytest.mark.parametrize("stage", ["before", "after", "error", "finally_after"])
    def test_raising_hook_never_changes_the_result_and_logs_once(
        self, client: PhaseFlagClient, stage: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Whatever stage raises, every getter returns what it returns without hooks,
        other hooks still run, and the failure is logged once."""
        log: list[tuple[Any, ...]] = []
        client.add_hook(Raising(stage))
        client.add_hook(Recorder("after-it", log))
        with caplog.at_level(logging.WARNING, logger="phaseflag"):
            for _ in range(5):
                assert client.get_boolean_value("checkout", False, PRO) is True
                assert client.get_boolean_value("nope", True) is True
                assert client.get_string_details("theme", "x").value == "dark"
        messages = [r.getMessage() for r in caplog.records if "hook" in r.getMessage()]
        assert len(messages) == 1, messages
        assert f"Raising.{stage}" in messages[0]
        assert "RuntimeError" in messages[0]
        assert sum(1 for _, s, *_ in log if s == "finally_after") == 15

    def test_base_exception_still_propagates(self, client: PhaseFlagClient) -> None:
        """KeyboardInterrupt/SystemExit are not swallowed (only Exception is)."""

        class Interrupt(Hook):
            def before(self, ctx: HookContext) -> None:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            client.get_boolean_value("checkout", False, hooks=[Interrupt()])


CONTEXTS = [None, PRO, EvaluationContext(user_id="u2", attributes={"plan": "free"})]
KEYS = ["checkout", "theme", "limit", "whole", "ratio", "config", "regions", "split", "killed"]
DEFAULTS: dict[str, Any] = {
    "boolean": False,
    "string": "d",
    "integer": -1,
    "float": -1.5,
    "json": {"d": 1},
}


@pytest.mark.parametrize("with_fallback", [False, True])
def test_hooked_reads_equal_plain_reads(with_fallback: bool) -> None:
    """The hook path is a second copy of the read: every getter, flag (missing and
    mistyped included) and context gives the same answer with and without a hook."""
    fallback = (lambda key, ctx: {"boolean": True}.get(key)) if with_fallback else None
    plain = create_mock_client(bootstrap=DOC, fallback=fallback)
    hooked = create_mock_client(bootstrap=DOC, fallback=fallback)
    hooked.add_hook(Hook())
    try:
        for key in [*KEYS, "missing"]:
            for ctx in CONTEXTS:
                for kind, default in DEFAULTS.items():
                    want = _getters(plain)[kind](key, default, ctx)
                    got = _getters(hooked)[kind](key, default, ctx)
                    assert got == want and type(got) is type(want), (key, kind, ctx)
                    name = f"get_{kind}_details"
                    assert getattr(hooked, name)(key, default, ctx) == getattr(plain, name)(
                        key, default, ctx
                    )
                assert hooked.get_details(key, "x", ctx) == plain.get_details(key, "x", ctx)
                assert hooked.get_variation(key, ctx) == plain.get_variation(key, ctx)
    finally:
        plain.stop()
        hooked.stop()


def test_json_values_are_private_copies_on_the_hook_path(client: PhaseFlagClient) -> None:
    """A caller mutating a JSON value (or a hook mutating the result's) changes nothing."""
    client.add_hook(Hook())
    first = client.get_json_value("config", {})
    first["nested"]["a"].append(2)
    assert client.get_json_value("config", {}) == {"retries": 2, "nested": {"a": [1]}}


def test_openfeature_hooks_and_phaseflag_hooks_both_run() -> None:
    """Behind the OpenFeature provider, OpenFeature's own hooks run around the provider's
    resolution and phaseflag hooks on the wrapped client run inside it."""
    of = pytest.importorskip("openfeature.api")
    from openfeature.evaluation_context import EvaluationContext as OFContext
    from openfeature.hook import Hook as OFHook
    from openfeature.hook import HookContext as OFHookContext
    from openfeature.hook import HookHints

    from phaseflag.openfeature import PhaseFlagProvider

    order: list[str] = []

    class Outer(OFHook):
        def before(self, hook_context: OFHookContext, hints: HookHints) -> None:
            order.append(f"openfeature before {hook_context.flag_key}")

        def finally_after(
            self, hook_context: OFHookContext, details: Any, hints: HookHints
        ) -> None:
            order.append(f"openfeature finally {hook_context.flag_key} {details.value}")

    class Inner(Hook):
        def before(self, ctx: HookContext) -> None:
            order.append(f"phaseflag before {ctx.flag_key} {ctx.kind}")

        def finally_after(self, ctx: HookContext, result: EvaluationResult) -> None:
            order.append(f"phaseflag finally {result.value}")

    client = create_mock_client(bootstrap=DOC)
    client.add_hook(Inner())
    of.set_provider_and_wait(PhaseFlagProvider(client=client))
    try:
        of.add_hooks([Outer()])
        flags = of.get_client()
        assert flags.get_boolean_value("checkout", False, OFContext("u1", {"plan": "pro"}))
    finally:
        of.clear_hooks()
        of.shutdown()
    assert order == [
        "openfeature before checkout",
        "phaseflag before checkout boolean",
        "phaseflag finally True",
        "openfeature finally checkout True",
    ]
