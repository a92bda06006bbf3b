"""Tests for AsyncPhaseFlagClient: delegation, awaitable lifecycle, a loop that never blocks."""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import requests
import responses

from phaseflag import EvaluationContext, PhaseFlagClient
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
