"""Tests for AsyncPhaseFlagClient: delegation, awaitable lifecycle, a loop that never blocks."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import requests
import responses

from phaseflag import EvaluationContext, EvaluationResult, Hook, HookContext, PhaseFlagClient
from phaseflag._async import AsyncPhaseFlagClient
from phaseflag.testing import condition, flag, rule, ruleset
from phaseflag.types import EvaluationEvent

API = "https://api.test/api/v1"
KEY = "sdk-test-key-0123456789"
UNREACHABLE = "http://127.0.0.1:1/api/v1"
RULESET = ruleset(
    flag(
        "checkout",
        variations={"on": True, "off": False},
        default="off",
        rules=[rule(condition("plan", "in", "pro"), serve="on")],
    ),
    flag("theme", "dark"),
    flag("limit", 3),
    flag("config", {"provider": "stripe"}),
)


def offline(**options: Any) -> AsyncPhaseFlagClient:
    return AsyncPhaseFlagClient(base_url="", api_key="", bootstrap=RULESET, **options)


@pytest.fixture
def http() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_passthru("http://127.0.0.1")
        yield mock


class Ticker:
    """A task counting event-loop turns every 5 ms: it stalls if anything blocks the loop."""

    def __init__(self) -> None:
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.005)
            self.ticks += 1

    def __enter__(self) -> Ticker:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()


def test_constructor_mirrors_phaseflag_client() -> None:
    """AsyncPhaseFlagClient accepts exactly PhaseFlagClient's options, in the same order."""
    mine = inspect.signature(AsyncPhaseFlagClient.__init__).parameters
    theirs = inspect.signature(PhaseFlagClient.__init__).parameters
    assert [(p.name, p.kind, p.default) for p in mine.values()] == [
        (p.name, p.kind, p.default) for p in theirs.values()
    ]


def test_reads_are_synchronous_and_delegated() -> None:
    """Typed getters, details, all_flags and overrides work without await."""

    async def main() -> None:
        async with offline() as client:
            ctx = EvaluationContext("u1", attributes={"plan": "pro"})
            assert client.get_boolean_value("checkout", False, ctx) is True
            assert client.get_string_value("theme", "light") == "dark"
            assert client.get_integer_value("limit", 0) == 3
            assert client.get_float_value("limit", 0.0) == 3.0
            config: dict[str, Any] = client.get_json_value("config", {})
            assert config == {"provider": "stripe"}
            assert client.get_boolean_details("checkout", False, ctx).reason == "targeting_match"
            variation = client.get_variation("theme")
            assert variation is not None and variation.value == "dark"
            assert client.all_flags(ctx)["checkout"] is True
            client.set_override("theme", "light")
            assert client.get_string_value("theme", "x") == "light"
            client.clear_all_overrides()
            assert client.get_string_value("theme", "x") == "dark"
            assert client.status().flag_count == 4

    asyncio.run(main())


def test_async_with_starts_and_closes() -> None:
    """``async with`` starts the client and aclose() stops it."""

    async def main() -> AsyncPhaseFlagClient:
        async with offline() as client:
            assert client.status().state == "running"
            assert await client.wait_until_ready(1.0) is True
        return client

    client = asyncio.run(main())
    assert client.status().state == "stopped"


def test_from_client_shares_the_sync_client() -> None:
    """from_client wraps an existing client: overrides set on either side are shared."""
    sync = PhaseFlagClient(base_url="", api_key="", bootstrap=RULESET)
    wrapped = AsyncPhaseFlagClient.from_client(sync)
    assert wrapped.sync_client is sync
    sync.set_override("theme", "light")
    assert wrapped.get_string_value("theme", "x") == "light"


def test_wait_until_ready_after_first_fetch(http: responses.RequestsMock) -> None:
    """wait_until_ready resolves once the background fetch lands the ruleset."""
    http.add(responses.GET, f"{API}/sdk/ruleset", json=RULESET)

    async def main() -> None:
        async with AsyncPhaseFlagClient(base_url=API, api_key=KEY, send_events=False) as client:
            assert await client.wait_until_ready(5.0) is True
            assert client.is_ready
            assert client.get_string_value("theme", "light") == "dark"

    asyncio.run(main())


def test_waiting_on_an_unreachable_api_never_blocks_the_loop() -> None:
    """A ticker keeps ticking while wait_until_ready waits on an API that never answers."""

    async def main() -> tuple[bool, int]:
        client = AsyncPhaseFlagClient(base_url=UNREACHABLE, api_key=KEY, bootstrap=RULESET)
        await client.start()
        with Ticker() as ticker:
            ready = await client.wait_until_ready(0.3)
            ticks = ticker.ticks
        client.track_event(EvaluationEvent("checkout", user_id="u1"))
        await client.aclose()  # flushing to the dead API happens in a worker thread
        assert client.get_string_value("theme", "light") == "dark"  # bootstrap still serves
        return ready, ticks

    ready, ticks = asyncio.run(main())
    assert ready is False
    assert ticks >= 20  # 0.3 s at 5 ms per tick is 60 when nothing blocks; 0 if blocked


def test_cancelled_wait_leaves_the_client_usable() -> None:
    """Cancelling wait_until_ready raises CancelledError and later waits still work."""

    async def main() -> None:
        client = AsyncPhaseFlagClient(base_url=UNREACHABLE, api_key=KEY, send_events=False)
        await client.start()
        task = asyncio.ensure_future(client.wait_until_ready(30.0))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await client.wait_until_ready(0.01) is False
        await client.aclose()

    asyncio.run(main())


def test_evaluate_runs_in_a_worker_thread(http: responses.RequestsMock) -> None:
    """Remote evaluation is awaited and its HTTP call runs off the event-loop thread."""
    http.add(responses.GET, f"{API}/sdk/ruleset", json=RULESET)
    threads: list[str] = []

    def answer(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        threads.append(threading.current_thread().name)
        body = {"flag_key": "checkout", "value": True, "reason": "targeting_match",
                "variation_key": "on", "rule_id": "r1"}  # fmt: skip
        return 200, {"Content-Type": "application/json"}, json.dumps(body)

    http.add_callback(responses.POST, f"{API}/sdk/evaluate", callback=answer)

    async def main() -> None:
        async with AsyncPhaseFlagClient(base_url=API, api_key=KEY, send_events=False) as client:
            result = await client.evaluate("checkout", EvaluationContext("u1"))
            assert (result.value, result.reason, result.rule_id) == (True, "targeting_match", "r1")

    asyncio.run(main())
    assert threads and threads[0] != "MainThread"


def test_flush_events_delivers_tracked_events(http: responses.RequestsMock) -> None:
    """track_event queues and ``await flush_events()`` posts the batch."""
    http.add(responses.GET, f"{API}/sdk/ruleset", json=RULESET)
    posted = http.add(responses.POST, f"{API}/sdk/events", status=202)

    async def main() -> bool:
        async with AsyncPhaseFlagClient(base_url=API, api_key=KEY) as client:
            client.track_event(EvaluationEvent("checkout", user_id="u1", metadata={"p": 1}))
            return await client.flush_events()

    assert asyncio.run(main()) is True
    assert posted.call_count >= 1
    body = posted.calls[0].request.body
    assert body is not None
    events = json.loads(body)["events"]
    assert [e["flag_key"] for e in events if e["kind"] == "custom"] == ["checkout"]


def test_fastapi_app_with_lifespan() -> None:
    """A FastAPI app starts the async client in its lifespan and reads flags per request."""
    fastapi = pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    with warnings.catch_warnings():  # starlette deprecates its httpx-based TestClient
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    flags = offline()

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with flags:
            await flags.wait_until_ready(5.0)
            yield

    app = fastapi.FastAPI(lifespan=lifespan)

    @app.get("/checkout")
    async def checkout(user_id: str, plan: str = "free") -> dict[str, str]:
        ctx = EvaluationContext(user_id=user_id, attributes={"plan": plan})
        return {"flow": "new" if flags.get_boolean_value("checkout", False, ctx) else "legacy"}

    with TestClient(app) as http_client:
        assert http_client.get("/checkout?user_id=u1&plan=pro").json() == {"flow": "new"}
        assert http_client.get("/checkout?user_id=u2").json() == {"flow": "legacy"}
    assert flags.status().state == "stopped"


# -- hooks, request scopes and value changes (the sync client's mechanisms) -----------------


def _swap(client: AsyncPhaseFlagClient, document: dict[str, Any]) -> None:
    """Apply ``document`` as the sync thread would (a live update)."""
    client.sync_client._store.apply_document(json.dumps(document).encode(), "live")


def _versioned(version: int, theme: str) -> dict[str, Any]:
    return ruleset(
        flag("theme", theme),
        flag("who", variations={"u1": "u1", "u2": "u2", "x": "x"}, default="x",
             targets={"u1": ["u1"], "u2": ["u2"]}),
        version=version,
    )  # fmt: skip


class _Recorder(Hook):
    def __init__(self, name: str, log: list[tuple[str, ...]]) -> None:
        self.name, self.log = name, log

    def before(self, ctx: HookContext) -> None:
        ctx.hook_data["me"] = self.name
        self.log.append((self.name, "before", ctx.flag_key, ctx.kind))

    def after(self, ctx: HookContext, result: EvaluationResult) -> None:
        self.log.append((ctx.hook_data["me"], "after", ctx.flag_key, str(result.value)))

    def error(self, ctx: HookContext, exc: Exception) -> None:
        self.log.append((ctx.hook_data["me"], "error", ctx.flag_key, type(exc).__name__))

    def finally_after(self, ctx: HookContext, result: EvaluationResult) -> None:
        self.log.append((ctx.hook_data["me"], "finally_after", ctx.flag_key, str(result.value)))


def test_getters_take_hooks_like_the_sync_client() -> None:
    """Every getter of the async client has the sync getter's parameters, ``hooks`` included,
    and add_hook, request_context and on_flag_value_change exist on both."""
    names = [n for n in dir(PhaseFlagClient) if n.startswith("get_")]
    assert len(names) == 12
    for name in names:
        mine = inspect.signature(getattr(AsyncPhaseFlagClient, name)).parameters
        theirs = inspect.signature(getattr(PhaseFlagClient, name)).parameters
        assert list(mine) == list(theirs), name
        assert "hooks" in mine, name
    for name in ("add_hook", "request_context", "on_flag_value_change"):
        assert callable(getattr(AsyncPhaseFlagClient, name)), name


def test_client_and_call_hooks_run_around_async_reads() -> None:
    """add_hook hooks run around every read, then the call's ``hooks=``; the later stages
    run in reverse; a fallback runs ``error``; removing the hook stops it."""
    log: list[tuple[str, ...]] = []

    async def main() -> None:
        async with offline() as client:
            remove = client.add_hook(_Recorder("client", log))
            ctx = EvaluationContext("u1", attributes={"plan": "pro"})
            assert client.get_boolean_value("checkout", False, ctx) is True
            assert (
                client.get_string_details("nope", "d", hooks=[_Recorder("call", log)]).value == "d"
            )
            remove()
            assert client.get_string_value("theme", "x") == "dark"

    asyncio.run(main())
    assert log == [
        ("client", "before", "checkout", "boolean"),
        ("client", "after", "checkout", "True"),
        ("client", "finally_after", "checkout", "True"),
        ("client", "before", "nope", "string"),
        ("call", "before", "nope", "string"),
        ("call", "error", "nope", "EvaluationError"),
        ("client", "error", "nope", "EvaluationError"),
        ("call", "finally_after", "nope", "d"),
        ("client", "finally_after", "nope", "d"),
    ]


def test_a_raising_hook_is_logged_once_and_never_changes_the_result(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Tasks reading through a hook that raises in every stage get the plain answers, and
    the failure is logged once per stage, not once per read."""

    class Broken(Hook):
        def before(self, ctx: HookContext) -> None:
            raise RuntimeError("before")

        def after(self, ctx: HookContext, result: EvaluationResult) -> None:
            raise RuntimeError("after")

        def finally_after(self, ctx: HookContext, result: EvaluationResult) -> None:
            raise ValueError("finally")

    async def reads(client: AsyncPhaseFlagClient, user: str) -> list[Any]:
        ctx = EvaluationContext(user, attributes={"plan": "pro"})
        out = []
        for _ in range(10):
            out.append(client.get_boolean_value("checkout", False, ctx))
            out.append(client.get_integer_value("limit", 0, hooks=[Broken()]))
            await asyncio.sleep(0)
        return out

    async def main() -> list[list[Any]]:
        async with offline() as client:
            client.add_hook(Broken())
            return list(await asyncio.gather(*(reads(client, f"u{i}") for i in range(4))))

    with caplog.at_level(logging.WARNING, logger="phaseflag"):
        answers = asyncio.run(main())
    assert answers == [[True, 3] * 10] * 4
    hook_lines = sorted(r.getMessage() for r in caplog.records if "Broken." in r.getMessage())
    assert len(hook_lines) == 3, hook_lines  # before, after, finally_after: once each
    assert all("the read's result is unchanged" in line for line in hook_lines)


def test_concurrent_tasks_do_not_see_each_others_context() -> None:
    """Twenty tasks, each in its own ``async with client.request_context``, interleaved at
    every read by a shared barrier, read only their own user; none leaks out."""

    async def main() -> tuple[list[list[str]], str]:
        async with AsyncPhaseFlagClient(
            base_url="", api_key="", bootstrap=_versioned(1, "dark")
        ) as client:
            arrived = 0
            turn = asyncio.Condition()
            rounds = 3

            async def step(n: int) -> None:  # wait until all tasks reached read ``n``
                nonlocal arrived
                async with turn:
                    arrived += 1
                    turn.notify_all()
                    await turn.wait_for(lambda: arrived >= 20 * n)

            async def request(i: int) -> list[str]:
                user = "u1" if i % 2 else "u2"
                seen = []
                async with client.request_context(EvaluationContext(user)) as ctx:
                    assert ctx is not None and ctx.user_id == user
                    for n in range(1, rounds + 1):
                        await step(n)
                        seen.append(client.get_string_value("who", "?"))
                return [user, *seen]

            results = await asyncio.gather(*(request(i) for i in range(20)))
            return results, client.get_string_value("who", "?")

    results, outside = asyncio.run(main())
    for user, *seen in results:
        assert seen == [user] * 3
    assert outside == "x"


def test_two_reads_in_one_scope_agree_across_a_ruleset_swap() -> None:
    """A ruleset landing while a task awaits inside its scope is invisible to that task
    until the scope ends; a task opening its scope after the swap sees the new one."""

    async def main() -> tuple[list[str], list[str], str]:
        client = AsyncPhaseFlagClient(base_url="", api_key="", bootstrap=_versioned(1, "dark"))
        swapped = asyncio.Event()
        read_once = asyncio.Event()

        async def old_request() -> list[str]:
            async with client.request_context(EvaluationContext("u1")):
                first = client.get_string_value("theme", "?")
                read_once.set()
                await swapped.wait()
                details = client.get_string_details("theme", "?")
                return [first, client.get_string_value("theme", "?"), str(details.value),
                        str(client.all_flags()["theme"])]  # fmt: skip

        async def new_request() -> list[str]:
            await swapped.wait()
            async with client.request_context():
                return [client.get_string_value("theme", "?")]

        old = asyncio.create_task(old_request())
        new = asyncio.create_task(new_request())
        await read_once.wait()
        _swap(client, _versioned(2, "light"))
        assert client.ruleset.version == 2
        swapped.set()
        result = (await old, await new, client.get_string_value("theme", "?"))
        await client.aclose()
        return result

    old, new, after = asyncio.run(main())
    assert old == ["dark"] * 4
    assert new == ["light"]
    assert after == "light"


def test_tasks_and_threads_started_in_a_scope_inherit_it() -> None:
    """A task or an ``asyncio.to_thread`` call started inside a scope copies the context,
    as contextvars do; the scope ends with the block."""

    async def main() -> tuple[str, str, str]:
        client = AsyncPhaseFlagClient(base_url="", api_key="", bootstrap=_versioned(1, "dark"))

        async def read() -> str:
            return client.get_string_value("who", "?")

        async with client.request_context(EvaluationContext("u2")):
            in_task = await asyncio.create_task(read())
            in_thread = await asyncio.to_thread(client.get_string_value, "who", "?")
        return in_task, in_thread, client.get_string_value("who", "?")

    assert asyncio.run(main()) == ("u2", "u2", "x")


def test_async_value_change_callback_is_awaited_on_the_loop() -> None:
    """on_flag_value_change takes an ``async def`` callback and awaits it on the loop."""

    async def main() -> tuple[list[tuple[Any, Any]], bool]:
        loop = asyncio.get_running_loop()
        client = AsyncPhaseFlagClient.from_client(
            PhaseFlagClient(base_url="", api_key="", bootstrap=_versioned(1, "dark"))
        )
        calls: list[tuple[Any, Any]] = []
        loops: list[Any] = []
        heard = asyncio.Event()

        async def changed(old: Any, new: Any) -> None:
            calls.append((old, new))
            loops.append(asyncio.get_running_loop())
            heard.set()

        stop = client.on_flag_value_change("theme", None, changed)
        await asyncio.to_thread(_swap, client, _versioned(2, "light"))
        await asyncio.wait_for(heard.wait(), 5.0)
        stop()
        await client.aclose()
        return calls, loops == [loop]

    calls, same_loop = asyncio.run(main())
    assert calls == [("dark", "light")]
    assert same_loop


def test_a_raising_async_listener_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """An ``async def`` listener that raises on every change is logged once."""

    client = AsyncPhaseFlagClient(base_url="", api_key="", bootstrap=_versioned(1, "dark"))

    async def main() -> int:
        ran = 0
        done = asyncio.Event()

        async def broken(old: Any, new: Any) -> None:
            nonlocal ran
            ran += 1
            if ran == 3:
                done.set()
            raise RuntimeError("listener bug")

        client.on_flag_value_change("theme", None, broken)
        for version, theme in ((2, "light"), (3, "dark"), (4, "light")):
            await asyncio.to_thread(_swap, client, _versioned(version, theme))
        await asyncio.wait_for(done.wait(), 5.0)
        await client.aclose()
        return ran

    # The third failure is logged one loop turn after done.set(): asyncio.run's shutdown
    # turns run it before returning.

    with caplog.at_level(logging.WARNING, logger="phaseflag"):
        assert asyncio.run(main()) == 3
    lines = [r.getMessage() for r in caplog.records if "async listener" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "broken" in lines[0] and "listener bug" in lines[0]
    assert client.status().listener_failures == 3  # every failure counted, one logged
