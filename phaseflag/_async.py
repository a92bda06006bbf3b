"""AsyncPhaseFlagClient: the asyncio face of PhaseFlagClient, delegating to one inside it.

Reads stay synchronous (local, never blocking); lifecycle and network calls are awaited.
Hooks and request scopes are the inner client's (one mechanism for both faces).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ._cache import Cache
from ._client import Fallback, PhaseFlagClient
from ._hooks import Hook
from ._model import Ruleset
from ._scope import RequestScope
from .types import ClientStatus, EvaluationContext, EvaluationEvent, EvaluationResult, JSONValue

if TYPE_CHECKING:
    import requests

__all__ = ["AsyncPhaseFlagClient"]

J = TypeVar("J", dict[str, Any], list[Any])


class AsyncPhaseFlagClient:
    """PhaseFlagClient for asyncio applications: the same options, reads and listeners.

    Reads (``get_*``, ``all_flags``, overrides) are plain synchronous calls: they
    evaluate locally in microseconds and never block the event loop, so call them
    without ``await``; hooks (``add_hook``, ``hooks=``) run inside them, and
    ``async with client.request_context(ctx):`` scopes one request per task.
    ``start()``, ``evaluate()``, ``flush_events()`` and ``aclose()`` run the blocking
    work in a worker thread (``asyncio.to_thread``); ``wait_until_ready()`` awaits the
    client's ``ready`` event without holding a thread, so cancelling it is clean. Use
    ``async with`` to start and close it. Safe to share between tasks and threads; the
    background sync thread is the inner client's. Constructor arguments are those of
    PhaseFlagClient (and raise the same ConfigError).
    """

    def __init__(  # noqa: PLR0917 - positional order mirrors PhaseFlagClient
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        polling_interval: float | None = None,
        event_flush_interval: float | None = None,
        event_batch_size: int | None = None,
        bootstrap_file: str | os.PathLike[str] | None = None,
        bootstrap_url: str | None = None,
        offline_mode: bool | None = None,
        *,
        bootstrap: Mapping[str, Any] | None = None,
        cache: Cache | None = None,
        default_context: EvaluationContext | None = None,
        max_event_queue_size: int | None = None,
        request_timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        headers_factory: Callable[[], Mapping[str, str]] | None = None,
        verify: bool | str | None = None,
        proxies: Mapping[str, str] | None = None,
        logger: logging.Logger | None = None,
        debug: bool | None = None,
        fetch_mode: str | None = None,
        max_staleness: float | None = None,
        fallback: Fallback | None = None,
        send_events: bool | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None  # where async listeners run
        self._client = PhaseFlagClient(
            base_url, api_key, polling_interval, event_flush_interval, event_batch_size,
            bootstrap_file, bootstrap_url, offline_mode, bootstrap=bootstrap, cache=cache,
            default_context=default_context, max_event_queue_size=max_event_queue_size,
            request_timeout=request_timeout, headers=headers, headers_factory=headers_factory,
            verify=verify, proxies=proxies, logger=logger, debug=debug, fetch_mode=fetch_mode,
            max_staleness=max_staleness, fallback=fallback, send_events=send_events,
            session=session,
        )  # fmt: skip

    @classmethod
    def from_client(cls, client: PhaseFlagClient) -> AsyncPhaseFlagClient:
        """Wrap an existing PhaseFlagClient (shared with synchronous code)."""
        wrapper = cls.__new__(cls)
        wrapper._loop = None
        wrapper._client = client
        return wrapper

    @property
    def sync_client(self) -> PhaseFlagClient:
        """The PhaseFlagClient doing the work."""
        return self._client

    def __repr__(self) -> str:
        return f"Async{self._client!r}"

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the cache and start the background threads (in a worker thread); idempotent.
        ``async def`` listeners are awaited on this event loop."""
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._client.start)

    async def wait_until_ready(self, timeout: float = 5.0) -> bool:
        """Wait until the first ruleset is in; True when ready, False after ``timeout`` seconds.

        Never raises (except CancelledError) and never blocks the event loop.
        """
        client = self._client
        if client.is_ready:
            return True
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()

        def on_ready() -> None:  # runs on the client's sync thread
            # The loop may have closed while we were unsubscribing.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(ready.set)

        unsubscribe = client.on("ready", on_ready)
        try:
            if client.is_ready:  # it got ready before we subscribed
                return True
            await asyncio.wait_for(ready.wait(), max(0.0, float(timeout)))
            return True
        except asyncio.TimeoutError:
            return client.is_ready
        finally:
            unsubscribe()

    @property
    def is_ready(self) -> bool:
        """True once the client has data it was told to wait for."""
        return self._client.is_ready

    async def aclose(self) -> None:
        """Stop syncing, flush queued events and join the threads (in a worker thread)."""
        await asyncio.to_thread(self._client.stop)

    async def __aenter__(self) -> AsyncPhaseFlagClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- network ------------------------------------------------------------------------------

    async def evaluate(
        self, flag_key: str, ctx: EvaluationContext | None = None
    ) -> EvaluationResult:
        """Evaluate on the server (``POST /sdk/evaluate``); see PhaseFlagClient.evaluate."""
        return await asyncio.to_thread(self._client.evaluate, flag_key, ctx)

    async def flush_events(self) -> bool:
        """Send every queued event now; True when all were delivered. Never raises."""
        return await asyncio.to_thread(self._client.flush_events)

    def track_event(self, event: EvaluationEvent) -> None:
        """Queue an analytics event; O(1), never blocks or raises."""
        self._client.track_event(event)

    # -- reads (synchronous: local, never blocking) ---------------------------------------------

    def get_boolean_value(
        self,
        flag_key: str,
        default: bool,
        context: EvaluationContext | None = None,
        hooks: Iterable[Hook] | None = None,
    ) -> bool:
        """The flag's boolean value, or ``default``; see PhaseFlagClient."""
        return self._client.get_boolean_value(flag_key, default, context, hooks)

    def get_string_value(
        self,
        flag_key: str,
        default: str,
        context: EvaluationContext | None = None,
        hooks: Iterable[Hook] | None = None,
    ) -> str:
        """The flag's string value, or ``default``."""
        return self._client.get_string_value(flag_key, default, context, hooks)

    def get_integer_value(
        self,
        flag_key: str,
        default: int,
        context: EvaluationContext | None = None,
        hooks: Iterable[Hook] | None = None,
    ) -> int:
        """The flag's value as an int (a whole float counts), or ``default``."""
        return self._client.get_integer_value(flag_key, default, context, hooks)

    def get_float_value(
        self,
        flag_key: str,
        default: float,
        context: EvaluationContext | None = None,
        hooks: Iterable[Hook] | None = None,
    ) -> float:
        """The flag's numeric value as a float (an int counts), or ``default``."""
        return self._client.get_float_value(flag_key, default, context, hooks)

    @overload
    def get_json_value(
        self,
        flag_key: str,
        default: J,
        context: EvaluationContext | None = None,
        hooks: Iterable[Hook] | None = None,
    ) -> J: ...
    @overload
    def get_json_value(
        self,
        flag_key: str,
        default: JSONValue,
        context: EvaluationContext | None = None,
        hooks: Iterable[Hook] | None = None,
    ) -> JSONValue: ...

    def get_json_value(
        self,
        flag_key: str,
        default: Any,
        context: EvaluationContext | None = None,
        hooks: Iterable[Hook] | None = None,
    ) -> Any:
        """The flag's JSON object/array value (a private copy), or ``default``."""
        return self._client.get_json_value(flag_key, default, context, hooks)

    def get_variation(
        self,
        flag_key: str,
        context: EvaluationContext | None = None,
        hooks: Iterable[Hook] | None = None,
    ) -> EvaluationResult | None:
        """The full result, or None if the flag is unknown."""
        return self._client.get_variation(flag_key, context, hooks)

    def get_details(
        self,
        flag_key: str,
        default: Any,
        context: EvaluationContext | None = None,
        hooks: Iterable[Hook] | None = None,
    ) -> EvaluationResult:
        """Like ``get_variation`` but never None: on a miss the value is ``default``."""
        return self._client.get_details(flag_key, default, context, hooks)

    def get_boolean_details(
        self,
        flag_key: str,
        default: bool,
        context: EvaluationContext | None = None,
        hooks: Iterable[Hook] | None = None,
    ) -> EvaluationResult:
        """The boolean result with reason and variation."""
        return self._client.get_boolean_details(flag_key, default, context, hooks)

    def get_string_details(
        self,
        flag_key: str,
        default: str,
        context: EvaluationContext | None = None,
        hooks: Iterable[Hook] | None = None,
    ) -> EvaluationResult:
        """The string result with reason and variation."""
        return self._client.get_string_details(flag_key, default, context, hooks)

    def get_integer_details(
        self,
        flag_key: str,
        default: int,
        context: EvaluationContext | None = None,
        hooks: Iterable[Hook] | None = None,
    ) -> EvaluationResult:
        """The integer result with reason and variation."""
        return self._client.get_integer_details(flag_key, default, context, hooks)

    def get_float_details(
        self,
        flag_key: str,
        default: float,
        context: EvaluationContext | None = None,
        hooks: Iterable[Hook] | None = None,
    ) -> EvaluationResult:
        """The numeric result with reason and variation (value made a float)."""
        return self._client.get_float_details(flag_key, default, context, hooks)

    def get_json_details(
        self,
        flag_key: str,
        default: Any,
        context: EvaluationContext | None = None,
        hooks: Iterable[Hook] | None = None,
    ) -> EvaluationResult:
        """The JSON result with reason and variation."""
        return self._client.get_json_details(flag_key, default, context, hooks)

    def all_flags(
        self,
        context: EvaluationContext | None = None,
        *,
        details: bool = False,
        client_side_only: bool = False,
    ) -> dict[str, Any]:
        """Every flag evaluated for one context (JSON-serialisable); see PhaseFlagClient."""
        return self._client.all_flags(context, details=details, client_side_only=client_side_only)

    # -- hooks, request scopes ------------------------------------------------------------------

    def add_hook(self, hook: Hook) -> Callable[[], None]:
        """Run ``hook`` around every read (of this client and of ``sync_client``: they are
        one client); returns a function that removes it. Stages are called synchronously
        inside the read, on the task's thread; ``ctx.client`` is ``sync_client``."""
        return self._client.add_hook(hook)

    def request_context(self, context: EvaluationContext | None = None) -> RequestScope:
        """An ``async with`` scope for one request: reads that pass no context use
        ``context`` (over ``default_context``), and every read inside sees the ruleset
        held when the scope was entered. Per asyncio task (a task created inside inherits
        the scope); see PhaseFlagClient.request_context. Plain ``with`` works too."""
        return self._client.request_context(context)

    def on_flag_value_change(
        self,
        flag_key: str,
        context: EvaluationContext | None,
        callback: Callable[[Any, Any], Any],
    ) -> Callable[[], None]:
        """Call ``callback(old, new)`` when ``flag_key``'s value for ``context`` changes after
        a ruleset update (an ``async def`` callback is awaited on the loop, as for ``on()``);
        returns the unsubscribe function. See PhaseFlagClient.on_flag_value_change."""
        return self._client.on_flag_value_change(flag_key, context, self._awaiting(callback))

    # -- overrides, listeners, health -----------------------------------------------------------

    def set_override(self, flag_key: str, value: Any) -> None:
        """Serve ``value`` for ``flag_key`` to every context until cleared."""
        self._client.set_override(flag_key, value)

    def clear_override(self, flag_key: str) -> None:
        """Remove one override."""
        self._client.clear_override(flag_key)

    def clear_all_overrides(self) -> None:
        """Remove every override."""
        self._client.clear_all_overrides()

    def on(self, event: str, callback: Callable[..., Any]) -> Callable[[], None]:
        """Subscribe to ``ready``, ``change``, ``error`` or ``stale``; returns an unsubscribe
        function. A plain callback runs on the sync thread; an ``async def`` callback is
        awaited on the event loop running when ``on()`` or ``start()`` was called (its
        exceptions are logged like a plain listener's)."""
        return self._client.on(event, self._awaiting(callback))

    def on_flags_changed(
        self, callback: Callable[[Mapping[str, dict[str, Any]]], Any]
    ) -> Callable[[], None]:
        """Call ``callback(flags)`` after each applied change (on the sync thread; an
        ``async def`` callback is awaited on the loop, as for ``on()``)."""
        return self._client.on_flags_changed(self._awaiting(callback))

    def _awaiting(self, callback: Callable[..., Any]) -> Callable[..., Any]:
        """``callback``, or for a coroutine function a wrapper scheduling it on the loop."""
        if not callable(callback) or not inspect.iscoroutinefunction(callback):
            return callback
        with contextlib.suppress(RuntimeError):  # on() called outside a running loop
            self._loop = asyncio.get_running_loop()

        def schedule(*args: Any) -> None:  # runs on the sync thread
            loop = self._loop
            if loop is None or loop.is_closed():
                raise RuntimeError("no running event loop to await an async listener on")
            future = asyncio.run_coroutine_threadsafe(callback(*args), loop)
            future.add_done_callback(log_failure)

        name = getattr(callback, "__qualname__", "listener")
        warn = self._client._warn_once

        def log_failure(future: Any) -> None:
            """Log an async listener's exception once per listener and exception type."""
            if future.cancelled() or future.exception() is None:
                return
            exc = future.exception()
            self._client._listeners.failures += 1  # on the loop: the sync call succeeded
            warn(
                f"async-listener:{name}:{type(exc).__name__}",
                "phaseflag: async listener %s raised %s: %s; continuing (logged once)",
                name,
                type(exc).__name__,
                exc,
            )

        schedule.__qualname__ = name
        return schedule

    def status(self) -> ClientStatus:
        """An immutable health snapshot."""
        return self._client.status()

    @property
    def ruleset(self) -> Ruleset:
        """The compiled ruleset currently served (immutable)."""
        return self._client.ruleset
