"""Listeners at the edges (issue 10): a listener that calls stop() during start(), a raising
listener (visible by default, then counted), and ``async def`` listeners on the async client."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from conftest import boolean_flag, phaseflag_thread_names, ruleset

from phaseflag import MemoryCache, PhaseFlagClient
from phaseflag._async import AsyncPhaseFlagClient
from phaseflag._cache import cache_key
from phaseflag._listeners import Listeners

BASE_URL = "http://127.0.0.1:9/api/v1"  # never contacted by these tests
KEY = "sdk-test-listeners-0123456789ab"


def test_stop_from_a_listener_during_start_stops_every_thread() -> None:
    """start() loads the cache, which fires ``change``; a listener calling stop() there leaves
    the client stopped with no phaseflag thread running (none is started after it)."""
    cache = MemoryCache()
    cache.set(cache_key(BASE_URL, KEY), json.dumps(ruleset(boolean_flag("f"), version=3)).encode())
    client = PhaseFlagClient(BASE_URL, KEY, cache=cache, polling_interval=3600)
    client.on("change", lambda change: client.stop())
    client.start()
    try:
        assert client.status().state == "stopped"
        assert phaseflag_thread_names() == []
        assert client.get_boolean_value("f", False) is True  # the cached data is still served
    finally:
        client.stop()


def test_a_raising_listener_is_a_warning_with_traceback_once_then_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without debug=True, the first failure of a listener is a WARNING with its traceback;
    later failures of the same listener are counted and logged at DEBUG only. Another
    listener's first failure is a WARNING of its own, and the rest still run."""
    listeners = Listeners()
    heard: list[int] = []

    def broken(n: int) -> None:
        raise ValueError(f"boom {n}")

    def also_broken(n: int) -> None:
        raise KeyError(n)

    listeners.add("change", broken)
    listeners.add("change", also_broken)
    listeners.add("change", heard.append)
    with caplog.at_level(logging.DEBUG, logger="phaseflag"):
        for n in range(5):
            listeners.emit("change", n)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all(r.exc_info is not None for r in warnings)
    assert "broken" in warnings[0].getMessage()
    assert "also_broken" in warnings[1].getMessage()
    assert listeners.failures == 10
    assert heard == [0, 1, 2, 3, 4]


def test_listener_failures_are_counted_in_status() -> None:
    """status().listener_failures counts every raising listener call (0 for a new client)."""
    cache = MemoryCache()
    cache.set(cache_key(BASE_URL, KEY), json.dumps(ruleset(boolean_flag("f"), version=3)).encode())
    client = PhaseFlagClient(BASE_URL, KEY, cache=cache, polling_interval=3600, offline_mode=True)
    assert client.status().listener_failures == 0

    def broken(*_: Any) -> None:
        raise RuntimeError("listener bug")

    client.on("change", broken)
    client.on("ready", broken)
    client.start()  # the cache load fires change, then ready
    try:
        assert client.wait_until_ready(0)
        assert client.status().listener_failures == 2
    finally:
        client.stop()


def test_the_async_client_awaits_coroutine_listeners_on_its_loop() -> None:
    """An ``async def`` listener is awaited on the event loop the client was started on."""

    async def main() -> tuple[bool, Any]:
        loop = asyncio.get_running_loop()
        ran_on: list[Any] = []
        done = asyncio.Event()

        async def on_ready() -> None:
            ran_on.append(asyncio.get_running_loop())
            done.set()

        client = AsyncPhaseFlagClient("", bootstrap=ruleset(boolean_flag("f")))
        client.on("ready", on_ready)
        try:
            await client.start()
            await asyncio.wait_for(done.wait(), 5.0)
        finally:
            await client.aclose()
        return ran_on == [loop], ran_on

    ok, ran_on = asyncio.run(main())
    assert ok, ran_on
