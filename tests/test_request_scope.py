"""Request scopes (one context and one ruleset per request) and value-change subscriptions."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from phaseflag import EvaluationContext, FlagChange, PhaseFlagClient
from phaseflag.testing import condition, create_mock_client, flag, rule, ruleset


def doc(version: int, new_flow: bool, plan_rule: str = "pro") -> dict[str, Any]:
    return ruleset(
        flag("flow", "new" if new_flow else "legacy"),
        flag(
            "checkout",
            variations={"on": True, "off": False},
            default="off",
            rules=[rule(condition("plan", "in", plan_rule), serve="on", id="paid")],
        ),
        flag(
            "who",
            variations={"u1": "u1", "u2": "u2", "x": "x"},
            default="x",
            targets={"u1": ["u1"], "u2": ["u2"]},
        ),
        version=version,
    )


def swap(client: PhaseFlagClient, document: dict[str, Any]) -> None:
    """Apply ``document`` as the sync thread would (a live update)."""
    import json

    client._store.apply_document(json.dumps(document).encode(), "live")


@pytest.fixture
def client() -> Iterator[PhaseFlagClient]:
    c = create_mock_client(bootstrap=doc(1, new_flow=False))
    yield c
    c.stop()


PRO = EvaluationContext(user_id="u1", attributes={"plan": "pro"})


class TestRequestContext:
    def test_reads_without_context_use_the_scope_context(self, client: PhaseFlagClient) -> None:
        assert client.get_boolean_value("checkout", False) is False
        with client.request_context(PRO) as ctx:
            assert ctx == PRO
            assert client.get_boolean_value("checkout", False) is True
            assert client.get_string_value("who", "") == "u1"
            # an explicit context still wins for that read
            free = EvaluationContext(user_id="u2", attributes={"plan": "free"})
            assert client.get_boolean_value("checkout", True, free) is False
        assert client.get_boolean_value("checkout", False) is False

    def test_two_reads_agree_across_a_swap(self, client: PhaseFlagClient) -> None:
        """A ruleset landing mid-request is invisible until the request ends."""
        with client.request_context(PRO):
            first = client.get_string_value("flow", "?")
            swap(client, doc(2, new_flow=True))
            assert client.ruleset.version == 2
            second = client.get_string_value("flow", "?")
            details = client.get_string_details("flow", "?")
            assert (first, second, details.value) == ("legacy", "legacy", "legacy")
            assert client.all_flags()["flow"] == "legacy"
        assert client.get_string_value("flow", "?") == "new"

    def test_nested_scopes_pin_their_own_snapshot(self, client: PhaseFlagClient) -> None:
        with client.request_context(PRO):
            swap(client, doc(2, new_flow=True))
            with client.request_context(EvaluationContext(user_id="u2")):
                assert client.get_string_value("flow", "?") == "new"
                assert client.get_string_value("who", "?") == "u2"
            assert client.get_string_value("flow", "?") == "legacy"
            assert client.get_string_value("who", "?") == "u1"

    def test_scope_context_merges_over_default_context(self) -> None:
        base = EvaluationContext(attributes={"plan": "pro"})
        c = create_mock_client(bootstrap=doc(1, False), default_context=base)
        try:
            with c.request_context(EvaluationContext(user_id="u2")) as ctx:
                assert ctx is not None and ctx.attributes["plan"] == "pro"
                assert c.get_boolean_value("checkout", False) is True
                assert c.get_string_value("who", "") == "u2"
        finally:
            c.stop()

    def test_scopes_are_per_client(self, client: PhaseFlagClient) -> None:
        other = create_mock_client(bootstrap=doc(1, False))
        try:
            with client.request_context(PRO):
                assert other.get_boolean_value("checkout", False) is False
        finally:
            other.stop()

    def test_threads_do_not_see_each_others_context(self, client: PhaseFlagClient) -> None:
        """Eight threads, each in its own scope, interleaved by barriers, read only theirs."""
        barrier = threading.Barrier(8, timeout=30)

        def request(i: int) -> list[str]:
            user = "u1" if i % 2 else "u2"
            seen = []
            with client.request_context(EvaluationContext(user_id=user)):
                for _ in range(3):
                    barrier.wait()
                    seen.append(client.get_string_value("who", "?"))
            return [user, *seen]

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(request, range(8)))
        for user, *seen in results:
            assert seen == [user] * 3
        assert client.get_string_value("who", "?") == "x"  # no scope leaked out

    def test_asyncio_tasks_do_not_see_each_others_context(self, client: PhaseFlagClient) -> None:
        async def request(user: str, started: asyncio.Event, go: asyncio.Event) -> list[str]:
            seen = []
            async with client.request_context(EvaluationContext(user_id=user)):
                seen.append(client.get_string_value("who", "?"))
                started.set()
                await go.wait()  # the other task enters its scope meanwhile
                seen.append(client.get_string_value("who", "?"))
            return seen

        async def main() -> tuple[list[str], list[str]]:
            s1, s2, go = asyncio.Event(), asyncio.Event(), asyncio.Event()
            t1 = asyncio.create_task(request("u1", s1, go))
            await s1.wait()
            t2 = asyncio.create_task(request("u2", s2, go))
            await s2.wait()
            go.set()
            return await t1, await t2

        assert asyncio.run(main()) == (["u1", "u1"], ["u2", "u2"])

    def test_hooks_see_the_scope_context(self, client: PhaseFlagClient) -> None:
        from phaseflag import Hook, HookContext

        seen: list[Any] = []

        class Grab(Hook):
            def before(self, ctx: HookContext) -> None:
                seen.append((ctx.context, ctx.ruleset_version))

        with client.request_context(PRO):
            swap(client, doc(2, True))
            client.get_boolean_value("checkout", False, hooks=[Grab()])
        assert seen == [(PRO, 1)]

    def test_overrides_are_not_pinned(self, client: PhaseFlagClient) -> None:
        """The documented decision (docs/hooks.md, "Overrides inside a scope"): the scope
        pins context and ruleset, not overrides. An override set or cleared mid-scope,
        here from another thread, applies from the next read inside the scope; clearing
        it reveals the scope's pinned ruleset, not the one that landed meanwhile."""
        with client.request_context(PRO):
            assert client.get_string_value("flow", "?") == "legacy"
            swap(client, doc(2, new_flow=True))
            setter = threading.Thread(target=client.set_override, args=("flow", "forced"))
            setter.start()
            setter.join()
            assert client.get_string_value("flow", "?") == "forced"
            assert client.get_string_details("flow", "?").reason == "override"
            assert client.all_flags()["flow"] == "forced"
            client.clear_override("flow")
            assert client.get_string_value("flow", "?") == "legacy"  # still version 1
            assert client.all_flags()["flow"] == "legacy"
        assert client.get_string_value("flow", "?") == "new"

    def test_one_scope_object_entered_by_many_threads_and_tasks(
        self, client: PhaseFlagClient
    ) -> None:
        """A RequestScope kept and entered concurrently (a module-level scope object, say)
        restores each thread's and task's own outer scope on exit, whatever the exit order."""
        shared = client.request_context(EvaluationContext(user_id="u1"))
        barrier = threading.Barrier(4, timeout=30)

        def thread_request(i: int) -> list[str]:
            seen = []
            with client.request_context(EvaluationContext(user_id="u2")):
                with shared:
                    barrier.wait()  # all four threads inside ``shared`` at once
                    seen.append(client.get_string_value("who", "?"))
                    if i % 2:
                        barrier.wait()  # odd threads exit after even ones
                seen.append(client.get_string_value("who", "?"))  # back in the outer scope
                if not i % 2:
                    barrier.wait()
            seen.append(client.get_string_value("who", "?"))
            return seen

        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(thread_request, range(4))) == [["u1", "u2", "x"]] * 4

        async def task_request(entered: asyncio.Event, leave: asyncio.Event) -> list[str]:
            async with shared:
                entered.set()
                await leave.wait()
                inside = client.get_string_value("who", "?")
            return [inside, client.get_string_value("who", "?")]

        async def main() -> list[list[str]]:
            a_in, b_in, a_out, b_out = (asyncio.Event() for _ in range(4))
            a = asyncio.create_task(task_request(a_in, a_out))
            await a_in.wait()
            b = asyncio.create_task(task_request(b_in, b_out))
            await b_in.wait()
            a_out.set()  # the first in leaves first
            first = await a
            b_out.set()
            return [first, await b]

        assert asyncio.run(main()) == [["u1", "x"], ["u1", "x"]]


class TestValueChange:
    def test_callback_gets_old_and_new_only_when_the_value_changes(
        self, client: PhaseFlagClient
    ) -> None:
        calls: list[tuple[Any, Any]] = []
        free = EvaluationContext(attributes={"plan": "free"})
        client.on_flag_value_change("checkout", free, lambda old, new: calls.append((old, new)))
        swap(client, doc(2, new_flow=True))  # checkout unchanged for free users
        assert calls == []
        swap(client, doc(3, new_flow=True, plan_rule="free"))
        assert calls == [(False, True)]
        swap(client, doc(4, new_flow=False, plan_rule="free"))  # other flag only
        assert calls == [(False, True)]
        swap(client, doc(5, new_flow=False, plan_rule="pro"))
        assert calls == [(False, True), (True, False)]

    def test_removed_flag_reports_none_and_unsubscribe_stops(self, client: PhaseFlagClient) -> None:
        calls: list[tuple[Any, Any]] = []
        stop = client.on_flag_value_change("flow", None, lambda o, n: calls.append((o, n)))
        swap(client, ruleset(flag("other", 1), version=2))
        assert calls == [("legacy", None)]
        stop()
        swap(client, doc(3, new_flow=True))
        assert calls == [("legacy", None)]

    def test_raising_callback_is_logged_and_others_still_run(
        self, client: PhaseFlagClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        calls: list[Any] = []

        def bad(old: Any, new: Any) -> None:
            raise RuntimeError("listener bug")

        client.on_flag_value_change("flow", None, bad)
        client.on_flag_value_change("flow", None, lambda o, n: calls.append(n))
        with caplog.at_level(logging.WARNING, logger="phaseflag"):
            for version in range(2, 6):
                swap(client, doc(version, new_flow=version % 2 == 0))
        assert calls == ["new", "legacy", "new", "legacy"]
        lines = [r.getMessage() for r in caplog.records if "value-change" in r.getMessage()]
        assert len(lines) == 1, lines  # once, not once per change
        assert "bad" in lines[0] and "listener bug" in lines[0] and "'flow'" in lines[0]
        assert client.status().listener_failures == 4  # every failure counted

    def test_no_exposure_counted(self) -> None:
        """Tracking evaluates purely: no evaluation summaries are counted for it."""
        c = create_mock_client(bootstrap=doc(1, False))
        try:
            c.on_flag_value_change("flow", None, lambda o, n: None)
            swap(c, doc(2, True))
            assert c.status().events_queued == 0
        finally:
            c.stop()


class TestFlagChangeValues:
    def test_previous_and_current_for_default_context(self) -> None:
        """With default_context set, FlagChange carries the values it saw before and after."""
        c = create_mock_client(
            bootstrap=doc(1, False), default_context=EvaluationContext(attributes={"plan": "pro"})
        )
        events: list[Any] = []
        c.on("change", events.append)
        try:
            swap(c, doc(2, new_flow=True, plan_rule="team"))
            changes = {ch.key: ch for ch in events[-1].flags}
            assert (changes["flow"].previous, changes["flow"].current) == ("legacy", "new")
            assert (changes["checkout"].previous, changes["checkout"].current) == (True, False)
        finally:
            c.stop()

    def test_none_without_default_context(self, client: PhaseFlagClient) -> None:
        events: list[Any] = []
        client.on("change", events.append)
        swap(client, doc(2, new_flow=True))
        change = next(ch for ch in events[-1].flags if ch.key == "flow")
        assert (change.previous, change.current) == (None, None)

    def test_defaults_keep_the_old_constructor(self) -> None:
        change = FlagChange("k", 1, 2)
        assert (change.previous, change.current) == (None, None)


EQUALITY_DOC = ruleset(
    flag(
        "checkout",
        variations={"on": True, "off": False},
        default="off",
        rules=[rule(condition("plan", "in", "pro"), serve="on", id="pro")],
    ),
    flag("split", variations={"a": "A", "b": "B"}, default={"a": 50, "b": 50}),
    flag("who", variations={"u1": "u1", "x": "x"}, default="x", targets={"u1": ["u1"]}),
    flag("killed", variations={"on": True, "off": False}, default="on", off="off", enabled=False),
    flag("limit", 3),
    flag("config", {"a": [1]}),
)
EQUALITY_CONTEXTS = [
    EvaluationContext(user_id=f"u{i}", attributes={"plan": "pro" if i % 2 else "free"})
    for i in range(12)
]


@pytest.mark.parametrize("with_default_context", [False, True])
def test_scoped_read_path_equals_the_plain_one(with_default_context: bool) -> None:
    """_resolve_full (what reads take once request_context was used) agrees with _resolve:
    outside a scope, inside one with no context passed, and inside one with a context
    passed, every getter answers what a never-scoped client answers."""
    options: dict[str, Any] = {}
    if with_default_context:
        options["default_context"] = EvaluationContext(attributes={"plan": "pro"})
    plain = create_mock_client(bootstrap=EQUALITY_DOC, **options)
    scoped = create_mock_client(bootstrap=EQUALITY_DOC, **options)
    for c in (plain, scoped):
        c.set_override("limit", 9)
    try:
        with scoped.request_context():
            pass  # installs the scoped read path for good
        keys = ["checkout", "split", "who", "killed", "limit", "config", "missing"]

        def answers(c: PhaseFlagClient, ctx: EvaluationContext | None) -> list[Any]:
            out: list[Any] = []
            for key in keys:
                out += [
                    c.get_boolean_value(key, False, ctx),
                    c.get_string_value(key, "d", ctx),
                    c.get_integer_value(key, -1, ctx),
                    c.get_json_value(key, {}, ctx),
                    c.get_details(key, None, ctx),
                    c.get_variation(key, ctx),
                    c.get_float_details(key, 0.5, ctx),
                ]
            return out

        for ctx in [None, *EQUALITY_CONTEXTS]:
            want = answers(plain, ctx)
            assert answers(scoped, ctx) == want  # outside any scope
            with scoped.request_context(ctx):
                assert answers(scoped, None) == want  # the scope supplies the context
                assert answers(scoped, ctx) == want  # an explicit one, inside a scope
    finally:
        plain.stop()
        scoped.stop()
