"""PhaseFlagClient: wiring and lifecycle, hooks and scopes, listeners, events and health.

Reads (``get_*``) take no lock, do no I/O and never raise: they look the flag up
in the current immutable Ruleset (swapped by one reference assignment) and run
the pure evaluator. Everything that touches the network runs in the client's
``phaseflag-sync`` and ``phaseflag-events`` daemon threads.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ._bootstrap import fetch_bootstrap_url, load_bootstrap
from ._cache import Cache, cache_key
from ._compile import compile_ruleset, load_ruleset
from ._config import (
    default_cache,
    redact,
)
from ._errors import TransportError
from ._getters import NO_TABLE, Getters
from ._health import client_status
from ._hooks import Hook, add_hook
from ._listeners import Listeners
from ._model import EMPTY_RULESET, Flag, Ruleset
from ._oncelog import OnceLog
from ._options import resolve_options
from ._parts import make_events, make_health, make_sync, make_transport
from ._process import enable_debug_logging, fresh_pools, register, unregister
from ._reads import Misses
from ._remote import evaluate_remote
from ._scope import RequestScope, Scope, open_scope
from ._store import RulesetStore
from ._sync import Poller
from ._value_changes import ValueTracker, subscribe
from .types import (
    ClientStatus,
    EvaluationContext,
    EvaluationEvent,
    EvaluationResult,
)

if TYPE_CHECKING:
    import requests

    from ._transport import Transport

__all__ = ["PhaseFlagClient"]

_log = logging.getLogger("phaseflag")
_NO_VALUES: Final[Mapping[str, Any]] = {}
_STOP_TIMEOUT: Final = 1.0

Fallback = Callable[[str, "EvaluationContext | None"], Any]


class _State(Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class PhaseFlagClient(Getters):
    """Evaluates PhaseFlag feature flags locally, kept fresh by a background thread.

    Create one per process (per environment) and share it between threads: all
    methods are thread-safe. Getters never raise, block or do I/O; on any problem
    they return the caller's ``default`` and log once. ``start()`` begins syncing,
    ``stop()`` (also at interpreter exit, and on ``with`` exit) stops it and
    flushes events. After ``os.fork()`` a started client restarts its threads in
    the child by itself.

    Options left as None come from ``PHASEFLAG_<OPTION>`` environment variables,
    then from the defaults shown in each option's description.

    Args:
        base_url: API root including ``/api/v1`` (env ``PHASEFLAG_BASE_URL``);
            ``""`` disables every HTTP call (unit tests, pure bootstrap use).
        api_key: The environment's SDK key (``PHASEFLAG_API_KEY``); never logged.
        polling_interval: Seconds between ruleset fetches (30; ±10% jitter).
        event_flush_interval: Seconds between event flushes (30).
        event_batch_size: Events per POST; a full batch is sent at once (100).
        bootstrap_file: A ruleset or ``{"flags": {key: value}}`` file loaded in
            the constructor so reads work before the first fetch.
        bootstrap_url: Like ``bootstrap_file``, fetched once after the first live fetch
            when that brought no data (it never delays live data).
        offline_mode: With bootstrap or cached data held, ``start()`` makes the client
            ready at once instead of waiting for the API; live data replaces it (False).
        bootstrap: Bootstrap data as a dict (same formats).
        cache: Where the last good ruleset is kept across restarts; default a
            ``MemoryCache``, or a ``FileCache`` in ``PHASEFLAG_CACHE_DIR`` if set.
            A shared ``phaseflag.redis.RedisCache`` makes the fleet fetch once: one
            process leads, the others follow Redis.
        default_context: Context used when a read passes none; merged under the
            context a read passes (the read's values win).
        max_event_queue_size: Events held before the oldest are dropped (10000).
        request_timeout: Seconds each HTTP request has in all - connect, headers and
            body - and a stream until its headers (10).
        headers: Extra headers for every API request.
        headers_factory: Called per request for extra headers (rotating credentials);
            an ``Authorization`` it returns replaces ``Bearer <api_key>`` (api_key may
            then be empty).
        verify: TLS verification: True, or a CA bundle path; False logs a warning.
        proxies: ``requests`` proxies mapping.
        logger: Logger for this client's own messages (reads, sync outcomes) instead
            of ``logging.getLogger("phaseflag")``; the shared transport, event and
            cache modules always log to ``phaseflag``.
        debug: Log SDK activity to stderr (False). It attaches one stderr handler to
            the process-wide ``phaseflag`` logger and sets it to DEBUG, for every
            client in the process; configure ``logging`` yourself for finer control.
        fetch_mode: ``"polling"`` (default), ``"streaming"`` (Server-Sent Events), or
            ``"cache"``: never fetch rulesets, only follow a ``RedisCache`` (docs/fleet.md).
        max_staleness: Seconds after which held data counts as stale: a ``stale``
            event fires once, and ``ready`` again on recovery (off).
        fallback: ``fallback(flag_key, context)`` supplies the value when a flag is
            missing or errors, instead of the caller's default.
        send_events: Send analytics events and evaluation summaries (True).
        session: A ``requests.Session`` to use (proxies, adapters, mTLS).
    """

    def __init__(  # noqa: PLR0917 - the documented options are positional on the product page
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
        self._settings, headers, default_context = resolve_options(
            {
                "base_url": base_url,
                "api_key": api_key,
                "polling_interval": polling_interval,
                "event_flush_interval": event_flush_interval,
                "event_batch_size": event_batch_size,
                "bootstrap_file": bootstrap_file,
                "bootstrap_url": bootstrap_url,
                "offline_mode": offline_mode,
                "max_event_queue_size": max_event_queue_size,
                "request_timeout": request_timeout,
                "debug": debug,
                "fetch_mode": fetch_mode,
                "max_staleness": max_staleness,
                "send_events": send_events,
                "verify": verify,
            },
            bootstrap_file=bootstrap_file,
            default_context=default_context,
            fallback=fallback,
            headers=headers,
            headers_factory=headers_factory,
            proxies=proxies,
            logger=logger,
            cache=cache,
            session=session,
        )
        self._log = logger or _log
        self._warn_once = OnceLog(self._log)
        if self._settings.debug:
            enable_debug_logging()
        self._headers = dict(headers or {})
        self._headers_factory = headers_factory
        self._proxies = dict(proxies) if proxies else None
        self._session = session
        self._default_context = default_context
        self._default_values = default_context._values if default_context else _NO_VALUES
        # Contexts of this type are read as they are (no default context to merge in).
        self._plain_type: type | None = EvaluationContext if default_context is None else None
        self._misses = Misses(self._warn_once, fallback)
        self._cache: Cache = cache if cache is not None else default_cache(self._settings)
        from ._fleet import FleetCache, shared_cache

        self._fleet_cache = shared_cache(cache, self._settings.fetch_mode)
        store_cache = self._cache if self._fleet_cache is None else FleetCache(self._fleet_cache)

        self._state = _State.NEW
        self._overrides: dict[str, EvaluationResult] = {}
        # The read path's lookup: the held ruleset's compiled flags (see _publish).
        self._table: dict[str, Flag] = NO_TABLE
        self._listeners = Listeners()
        self._store = RulesetStore(
            cache=store_cache,
            cache_key=cache_key(self._settings.base_url, self._settings.api_key),
            listeners=self._listeners,
            warn=self._warn_once,
            offline_mode=self._settings.offline_mode,
            max_staleness=self._settings.max_staleness,
            default_values=self._default_values if default_context is not None else None,
            on_swap=self._publish,
        )
        self._events_dropped_offline = 0
        self._hooks: tuple[Hook, ...] = ()
        # Created by the first request_context(): until then reads skip the scope lookup.
        self._scopes: ContextVar[Scope | None] | None = None
        self._value_changes = ValueTracker(self._warn_once)
        self._make_locks()
        self._transport: Transport | None = self._make_transport()
        self._events = make_events(self._settings, self._post_events)
        # The evaluation counters the read path increments (EventProcessor.count inlined).
        self._counts = self._events.counters.by_flag if self._events is not None else None
        self._sync: Poller | Any | None = None
        self._health = make_health(self._settings, self._store)
        self._post_deadline: float | None = None  # set by stop()/flush_events(timeout)

        if bootstrap is not None:
            self._load_bootstrap("bootstrap", lambda: compile_ruleset(bootstrap))
        if self._settings.bootstrap_file:
            path = Path(self._settings.bootstrap_file)
            self._load_bootstrap("bootstrap_file", lambda: load_ruleset(path.read_bytes()))

    # -- construction helpers ---------------------------------------------------------------

    def _make_locks(self) -> None:
        self._lifecycle_lock = threading.RLock()
        self._override_lock = threading.Lock()
        self._hook_lock = threading.Lock()
        self._table_lock = threading.Lock()

    def _make_transport(self) -> Transport | None:
        return make_transport(
            self._settings,
            headers=self._headers,
            headers_factory=self._headers_factory,
            proxies=self._proxies,
            session=self._session,
        )

    def _make_sync(self, *, forked: bool = False) -> Any:
        # The bootstrap URL is fetched after the first live fetch, and only when that brought
        # no data: it never delays live data (each fetch has request_timeout in all).
        after = self._fetch_bootstrap_url if self._settings.bootstrap_url else None
        if forked:
            after = self._after_first_in_child
        return make_sync(self._settings, self._transport, self._store, self._fleet_cache, after)

    def _post_events(self, payload: dict[str, Any]) -> None:
        transport = self._transport
        if transport is None:
            raise TransportError("HTTP disabled (base_url='')")
        until = self._post_deadline
        timeout = None if until is None else until - time.monotonic()
        transport.post_events(payload, timeout)

    def _load_bootstrap(self, option: str, build: Callable[[], Ruleset]) -> None:
        load_bootstrap(self._store, option, build)

    def _fetch_bootstrap_url(self) -> None:
        fetch_bootstrap_url(self)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Load the cache and start the background threads; idempotent, never blocks on I/O."""
        with self._lifecycle_lock:
            if self._state is _State.RUNNING:
                return
            if self._state is _State.STOPPED and self._transport is not None:
                # stop() closed the HTTP session: a restarted client gets a fresh one.
                self._transport = self._make_transport()
                self._sync = None
            self._state = _State.RUNNING
            register(self)
            self._store.reopen()
            self._store.load_cache()
            self._start_threads()

    def _start_threads(self, *, forked: bool = False) -> None:
        """Start the sync, event and health threads, unless a listener has just called
        ``stop()`` (the cache load and ``ready`` run listeners). The caller holds the
        lifecycle lock."""
        if self._state is not _State.RUNNING:
            return
        if self._transport is None and self._fleet_cache is None:
            self._store.mark_ready()
        elif self._settings.offline_mode and self._store.ruleset is not EMPTY_RULESET:
            self._store.mark_ready()  # bootstrap/cached data now; live data replaces it
        if self._state is not _State.RUNNING:
            return
        if self._transport is not None or self._fleet_cache is not None:
            self._sync = self._sync or self._make_sync(forked=forked)
            self._sync.start()
        if self._events is not None:
            self._events.start()
        if self._health is not None:
            self._health.start()

    def wait_until_ready(self, timeout: float = 5.0) -> bool:
        """Block until the first ruleset is in (or offline data is accepted); never raises.

        Returns True when ready, False when ``timeout`` seconds passed first.
        """
        try:
            # Event.wait overflows past TIMEOUT_MAX (e.g. math.inf): that long means "forever".
            return self._store.ready.wait(min(max(0.0, float(timeout)), threading.TIMEOUT_MAX))
        except Exception:
            return self._store.ready.is_set()

    @property
    def is_ready(self) -> bool:
        """True once the client has data it was told to wait for."""
        return self._store.ready.is_set()

    def stop(self) -> None:
        """Stop syncing, flush queued events, join threads (bounded), close the HTTP session and
        the cache; idempotent. Reads keep serving the data held; ``start()`` may be called again."""
        with self._lifecycle_lock:
            if self._state is not _State.RUNNING:
                return
            self._state = _State.STOPPED
            sync, events, transport = self._sync, self._events, self._transport
        # Within _STOP_TIMEOUT whatever is in flight: nothing is applied or announced from
        # here on, the sync thread's request is aborted, the last events get what is left.
        until = time.monotonic() + 0.8 * _STOP_TIMEOUT  # the rest: joins and closing
        self._store.close()
        if self._health is not None:
            self._health.stop(_STOP_TIMEOUT)
        if sync is not None:
            sync.stop(_STOP_TIMEOUT)
        if transport is not None:
            transport.abort()  # evaluate() calls and a background event post in flight
        if events is not None:
            self._post_deadline = until
            try:
                events.stop(max(0.0, until - time.monotonic()))
            finally:
                self._post_deadline = None
        if transport is not None:
            transport.close()  # aborts the rest; start() makes a new transport
        self._store.close_cache()
        unregister(self)

    close = stop

    def __enter__(self) -> PhaseFlagClient:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"PhaseFlagClient(base_url={self._settings.base_url!r}, "
            f"api_key={redact(self._settings.api_key)!r}, state={self._state.value!r})"
        )

    @property
    def polling_interval(self) -> float:
        """Seconds between ruleset fetches; assigning takes effect at once."""
        return self._settings.polling_interval

    @polling_interval.setter
    def polling_interval(self, seconds: float) -> None:
        from ._config import positive_seconds

        value = positive_seconds("polling_interval", seconds)
        self._settings = replace(self._settings, polling_interval=value)
        if self._sync is not None:
            self._sync.interval = value

    # -- hooks, request scopes, value changes -----------------------------------------------

    def add_hook(self, hook: Hook) -> Callable[[], None]:
        """Run ``hook`` around every read of this client (see :class:`phaseflag.Hook`);
        returns a function that removes it. With no hooks, reads skip the hook path."""
        return add_hook(self, hook)

    def request_context(self, context: EvaluationContext | None = None) -> RequestScope:
        """A ``with`` (or ``async with``) scope for one request: reads that pass no context
        use ``context`` (over ``default_context``), and every read inside sees the ruleset
        held when the scope was entered, even if a new one lands meanwhile. Per thread and
        per asyncio task (``contextvars``). Raises InvalidContextError for a non-context."""
        return open_scope(self, context)

    def on_flag_value_change(
        self,
        flag_key: str,
        context: EvaluationContext | None,
        callback: Callable[[Any, Any], Any],
    ) -> Callable[[], None]:
        """Call ``callback(old, new)`` when ``flag_key``'s value for ``context`` (merged over
        ``default_context``) changes after a ruleset update; a value is None while the flag
        is absent or failing. Runs on the sync thread; returns the unsubscribe function."""
        return subscribe(self, flag_key, context, callback)

    # -- listeners -------------------------------------------------------------------------------

    def on_flags_changed(
        self, callback: Callable[[Mapping[str, dict[str, Any]]], Any]
    ) -> Callable[[], None]:
        """Call ``callback(flags)`` after each applied change; ``flags`` is a read-only
        mapping of every flag key to its definition, each decoded only when looked up
        (``dict(flags)`` decodes them all). Returns a function that unsubscribes."""
        return self._listeners.add("flags_changed", callback)

    def on(self, event: str, callback: Callable[..., Any]) -> Callable[[], None]:
        """Subscribe to ``ready``, ``change`` (ChangeEvent), ``error`` (exception) or ``stale``
        (seconds since fresh data); returns an unsubscribe function. Callbacks run on
        the sync thread: keep them quick; exceptions are logged and ignored."""
        return self._listeners.add(event, callback)

    # -- remote evaluation and events ----------------------------------------------------------

    def evaluate(self, flag_key: str, ctx: EvaluationContext | None = None) -> EvaluationResult:
        """Evaluate on the server (POST /sdk/evaluate); never raises.

        On failure (network, auth, timeout, bad response) the local evaluation is
        returned with ``error_message`` saying the remote call failed; a 404 from
        the server is a FLAG_NOT_FOUND result.
        """
        return evaluate_remote(self, flag_key, ctx)

    def track_event(self, event: EvaluationEvent) -> None:
        """Queue an analytics event; O(1), never blocks or raises (see ``status()`` for drops)."""
        if not isinstance(event, EvaluationEvent):
            self._warn_once(
                "track_event:type",
                "phaseflag: track_event needs an EvaluationEvent, got %s",
                type(event).__name__,
            )
            return
        events = self._events
        if events is None:
            self._events_dropped_offline += 1
            return
        events.track(event)

    def flush_events(self, timeout: float | None = None) -> bool:
        """Send every queued event now; True when all were delivered. Never raises.

        Returns within about ``timeout`` seconds when given (each POST is cut at what is
        left of it); otherwise each POST still has ``request_timeout`` in all.
        """
        events = self._events
        if events is None:
            return True
        try:
            if timeout is None:
                return events.flush()
            seconds = max(0.0, float(timeout))
            self._post_deadline = time.monotonic() + seconds
            try:
                return events.flush(seconds)
            finally:
                self._post_deadline = None
        except Exception as exc:
            self._log.warning("phaseflag: flush_events failed: %s", exc)
            return False

    # -- health ----------------------------------------------------------------------------------

    def status(self) -> ClientStatus:
        """An immutable snapshot of readiness, data age, sync failures and event counters."""
        return client_status(self)

    @property
    def ruleset(self) -> Ruleset:
        """The compiled ruleset currently served (immutable)."""
        return self._store.ruleset

    # -- fork support ----------------------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        """The at-fork hook in a forked child: replace every lock the child can touch and
        start the threads, without I/O and without taking a lock the parent may hold.

        The child holds the parent's ruleset already; anything that could block (the
        cache, a user's session, ``bootstrap_url``) runs on the child's own sync thread.
        """
        self._make_locks()
        self._store.reset_after_fork()
        self._value_changes.reset_after_fork()
        self._listeners.reset_after_fork()
        if self._events is not None:
            self._events.reset_after_fork()
        self._sync = None
        self._health = make_health(self._settings, self._store)
        if self._session is not None:
            fresh_pools(self._session)
        if self._transport is not None:
            self._transport = self._make_transport()  # no I/O: the parent's pools are dropped
        if self._state is _State.RUNNING:
            with self._lifecycle_lock:
                self._start_threads(forked=True)

    def _after_first_in_child(self) -> None:
        """After a forked child's first fetch, on its sync thread: when the parent held no
        data and the fetch brought none, read the cache and the bootstrap URL."""
        if self._store.ruleset is EMPTY_RULESET:
            self._store.load_cache()
            self._fetch_bootstrap_url()
