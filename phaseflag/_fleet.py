"""The fleet sync: one leader per fleet fetches from the API, the others follow Redis.

A ``Fleet`` replaces the client's Poller/Streamer when the cache is a shared ``RedisCache``.
Its ``phaseflag-fleet`` thread holds or seeks the lease and checks the version in Redis once
per polling interval; its ``phaseflag-fleet-notices`` thread listens for change notices and
wakes it. While leading (or while Redis is unreachable, in shared mode) it runs the normal
Poller/Streamer, whose fetched documents it also writes to Redis. In cache mode
(``fetch_mode="cache"``) it never fetches from the API.
"""

from __future__ import annotations

import contextlib
import logging
import random
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from ._backoff import Backoff, jittered
from ._cache import Cache
from ._errors import ConfigError, RulesetError, RulesetTooLargeError, SharedCacheError
from ._loop import Loop
from ._sync import SyncSink

if TYPE_CHECKING:
    from redis.client import PubSub

    from .redis import RedisCache

__all__ = ["Fleet", "FleetCache", "Inner", "shared_cache"]

_log = logging.getLogger("phaseflag")

# How long the notice listener waits for a message before checking whether it must stop.
_NOTICE_WAIT: Final = 0.2


class Inner(Protocol):
    """The Poller or Streamer a leader runs."""

    interval: float

    def start(self) -> None: ...

    def stop(self, timeout: float = 1.0) -> bool: ...


def shared_cache(cache: Cache | None, fetch_mode: str) -> RedisCache | None:
    """The RedisCache the fleet sync should follow, or None for the normal sync.

    A shared RedisCache, or any RedisCache with ``fetch_mode="cache"``; ``"cache"`` with
    another cache is a ConfigError. phaseflag.redis is looked up, never imported, here.
    """
    module = sys.modules.get("phaseflag.redis")
    redis_cache = module is not None and isinstance(cache, module.RedisCache)
    if fetch_mode == "cache" and not redis_cache:
        raise ConfigError(
            "fetch_mode",
            "'cache' follows a shared Redis, but cache= is not a RedisCache",
            "pass cache=RedisCache(url) from phaseflag.redis, or use 'polling'",
        )
    if redis_cache and (fetch_mode == "cache" or cache.shared):  # type: ignore[union-attr]
        return cache  # type: ignore[return-value]
    return None


class FleetCache(Cache):
    """The store's view of a cache the fleet sync owns: it reads and writes Redis itself.

    ``get`` is a miss (the fleet thread loads from Redis, never ``start()``), ``set`` does
    nothing (the leader writes with the version and ETag), ``close`` closes the RedisCache.
    """

    def __init__(self, cache: RedisCache) -> None:
        self.cache = cache

    def get(self, key: str) -> bytes | None:
        return None

    def set(self, key: str, value: bytes) -> None:
        pass

    def delete(self, key: str) -> None:
        pass

    def close(self) -> None:
        self.cache.close()


@dataclass(frozen=True, slots=True)
class _Held:
    """The raw document this process last applied, kept to repopulate an emptied Redis."""

    version: int
    data: bytes
    etag: str | None


class Fleet:
    """Keep the ruleset fresh through a shared ``RedisCache``.

    ``make_inner(sink)`` builds the Poller/Streamer to run while leading; None means cache
    mode (follow Redis only). ``held()`` returns the version the client serves (None for
    none). Documents followed from Redis go to ``sink.apply_document(raw, "redis")``.
    ``leader`` is True while this process holds the lease. Never raises from its threads;
    ``stop()`` returns within ``timeout``.
    """

    def __init__(
        self,
        cache: RedisCache,
        env: str,
        sink: SyncSink,
        *,
        interval: float,
        held: Callable[[], int | None],
        make_inner: Callable[[SyncSink], Inner] | None,
        before_first: Callable[[], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._cache = cache
        self._env = env
        self._sink = sink
        self._interval = interval
        self._held_version = held
        self._make_inner = make_inner
        self._before_first = before_first
        self._rng = rng or random.Random()
        self._lease = cache.lease_time
        self._token = secrets.token_hex(16)
        self._leading = False
        self._redis_ok: bool | None = None  # None until the first attempt
        self._noticed = False
        self._next_lease = 0.0
        self._next_check = 0.0
        # Retries of an unreachable Redis: soon, and never slower than a lease renewal.
        base = min(0.25, self._lease / 4)
        self._retry = Backoff(base, max(base, min(self._lease / 3, interval)), rng=self._rng)
        self._inner: Inner | None = None
        self._retired: list[Inner] = []
        self._inner_lock = threading.Lock()
        self._inner_ok = False
        self._held: _Held | None = None
        self._seed_etag: str | None = None
        self.loop = Loop("fleet", self.step)
        self._notices = _Notices(cache, cache.channel(env), self._notice)

    # -- the sync interface the client uses -----------------------------------------------------

    @property
    def leader(self) -> bool:
        """True while this process holds the fleet's lease and fetches for everyone."""
        return self._leading

    @property
    def interval(self) -> float:
        """Seconds between version checks (and the leader's fetches); applies at once."""
        return self._interval

    @interval.setter
    def interval(self, seconds: float) -> None:
        self._interval = seconds
        with self._inner_lock:
            if self._inner is not None:
                self._inner.interval = seconds
        self._next_check = 0.0
        self.loop.wake()

    def start(self) -> None:
        """Start the threads (idempotent)."""
        self.loop.start()
        self._notices.loop.start()

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop every thread, give the lease up; True when all threads have ended."""
        deadline = time.monotonic() + timeout
        self.loop.stop(0.0)
        self._notices.loop.stop(0.0)
        inners = self._drop_inner()
        if self._leading and self._redis_ok:
            self._leading = False
            with contextlib.suppress(SharedCacheError):  # a follower takes over at once
                self._cache.release(self._env, self._token)
        ended = True
        for inner in inners:
            ended = inner.stop(max(0.0, deadline - time.monotonic())) and ended
        ended = self.loop.stop(max(0.0, deadline - time.monotonic())) and ended
        return self._notices.stop(max(0.0, deadline - time.monotonic())) and ended

    def reset_after_fork(self) -> None:
        """Forget the parent's threads and lease in a forked child (start() makes new ones)."""
        self.loop.reset_after_fork()
        self._notices.reset_after_fork()
        self._inner_lock = threading.Lock()
        self._inner, self._retired = None, []
        self._leading = False
        self._token = secrets.token_hex(16)

    # -- the fleet thread -----------------------------------------------------------------------

    def step(self) -> float:
        """One round: the lease, then a version check when due; returns the wait before the next."""
        if self._before_first is not None:
            before, self._before_first = self._before_first, None
            before()
        if self.loop.stopping:
            return 0.0
        try:
            self._with_redis(time.monotonic())
        except SharedCacheError as exc:
            self._without_redis(exc)
            return self._retry.next_delay()
        if self._redis_ok is False:
            _log.info("phaseflag redis: Redis answers again")
            self._cache.recovered()
        self._redis_ok = True
        self._retry.reset()
        return max(0.0, min(self._next_lease, self._next_check) - time.monotonic())

    def _with_redis(self, now: float) -> None:
        cache, shared = self._cache, self._make_inner is not None
        if self._leading and now >= self._next_lease:
            if cache.renew(self._env, self._token):
                self._next_lease = now + self._lease / 3
            else:
                self._step_down("the lease was lost")
        elif not self._leading and shared and now >= self._next_lease:
            if cache.acquire(self._env, self._token):
                self._leading = True
                self._next_lease = now + self._lease / 3
                self._next_check = 0.0  # read Redis before fetching: newer data, the ETag
                _log.info("phaseflag redis: this process now leads the fleet (fetches for all)")
            else:
                self._next_lease = now + jittered(self._lease / 5, rng=self._rng)
        if self._noticed or now >= self._next_check:
            self._noticed = False
            self._next_check = now + jittered(self._interval, rng=self._rng)
            self._check()
        if shared and not self._leading:
            for inner in self._drop_inner():  # Redis is back and another process leads
                inner.stop(0.0)
        elif self._leading:
            self._ensure_inner()

    def _check(self) -> None:
        """Compare Redis's version with the held one; apply a newer one, repopulate an older."""
        held = self._held_version()
        snap = self._cache.read(self._env, held)
        if snap.data is not None and snap.version is not None:
            try:
                self._sink.apply_document(snap.data, "redis")
            except RulesetError as exc:
                self._sink.sync_failed(exc)
                return
            self._held = _Held(snap.version, snap.data, snap.etag)
            held = self._held_version()
        elif snap.version is not None and held is not None and snap.version > held:
            self._sink.sync_failed(
                RulesetTooLargeError(f"the ruleset in Redis is {snap.size} bytes, over the limit")
            )
            return
        if self._leading:
            self._lead(snap.version, snap.etag, held)
            return
        if snap.version is None:
            if self._make_inner is None:
                self._sink.sync_failed(
                    SharedCacheError(
                        "Redis holds no ruleset for this SDK key yet: run `phaseflag relay` "
                        "or a process in shared mode to fill it"
                    )
                )
            return
        limit = 2 * self._interval + self._lease
        if snap.age is not None and snap.age <= limit:
            self._sink.sync_succeeded()
        else:
            age = "never" if snap.age is None else f"{snap.age:.0f} s ago"
            self._sink.sync_failed(
                SharedCacheError(
                    f"the ruleset in Redis was last confirmed by a leader {age}: no process "
                    "is fetching from the API; serving it anyway"
                )
            )

    def _lead(self, stored: int | None, etag: str | None, held: int | None) -> None:
        """As leader: repopulate Redis if it holds less than we do, else confirm what it holds."""
        mine = self._held
        if mine is not None and (stored is None or stored < mine.version):
            if self._cache.write(self._env, mine.data, mine.version, mine.etag):
                _log.info("phaseflag redis: wrote ruleset v%d to Redis", mine.version)
        elif stored is not None and stored == held:
            with self._inner_lock:
                inner = self._inner
            if inner is None:
                self._seed_etag = etag  # the new leader's first fetch is conditional
            elif self._inner_ok:
                self._cache.confirm(self._env, stored, getattr(inner, "etag", None) or etag)

    def _without_redis(self, exc: SharedCacheError) -> None:
        self._cache.report(exc)
        self._redis_ok = False
        self._leading = False  # the lease cannot be renewed; it lapses in Redis
        self._next_lease = self._next_check = 0.0
        if self._make_inner is not None:
            self._ensure_inner()  # shared mode: fetch from the API until Redis answers
        else:
            self._sink.sync_failed(exc)  # cache mode: the data ages

    def _step_down(self, why: str) -> None:
        _log.info("phaseflag redis: no longer leading the fleet (%s)", why)
        self._leading = False
        self._next_lease = 0.0

    def _notice(self) -> None:
        self._noticed = True
        self.loop.wake()

    # -- the leader's Poller/Streamer -----------------------------------------------------------

    def _ensure_inner(self) -> None:
        if self._make_inner is None:
            return
        # Checked and started under the lock that stop() drops the inner sync under, so a
        # step racing stop() never starts a thread stop() has already passed.
        with self._inner_lock:
            if self._inner is not None or self.loop.stopping:
                return
            sink = _LeaderSink(self)
            inner = sink.inner = self._make_inner(sink)
            seed, held = self._seed_etag, self._held
            if seed is None and held is not None and held.version == self._held_version():
                seed = held.etag
            if seed and getattr(inner, "etag", "") is None:
                inner.etag = seed  # type: ignore[attr-defined]  # the first fetch: a 304
            self._seed_etag = None
            self._inner = inner
            inner.start()

    def _drop_inner(self) -> list[Inner]:
        with self._inner_lock:
            inner, self._inner = self._inner, None
            self._inner_ok = False
            if inner is not None:
                self._retired.append(inner)
            self._retired = [i for i in self._retired if i is inner or not i.stop(0.0)]
            return list(self._retired)

    def _fetched(self, raw: bytes, etag: str | None) -> None:
        """The leader's Poller/Streamer applied ``raw``: store it in Redis for the fleet."""
        version = self._held_version()
        if version is None:
            return
        self._held = _Held(version, raw, etag)
        if not self._leading:
            return
        try:
            if self._cache.write(self._env, raw, version, etag):
                _log.info("phaseflag redis: wrote ruleset v%d to Redis", version)
        except SharedCacheError:
            self.loop.wake()  # the fleet thread finds out and reports it


class _LeaderSink:
    """The sink of the leader's Poller/Streamer: the client's, plus writes to Redis."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet
        self._pending: bytes | None = None
        self.inner: Inner | None = None  # the Poller/Streamer this sink serves

    def apply_document(self, raw: bytes, source: str) -> None:
        self._fleet._sink.apply_document(raw, source)
        self._pending = raw

    def sync_succeeded(self) -> None:
        fleet = self._fleet
        fleet._inner_ok = True
        pending, self._pending = self._pending, None
        if pending is not None:  # the Poller has set the ETag of ``pending`` by now
            fleet._fetched(pending, getattr(self.inner, "etag", None))
        fleet._sink.sync_succeeded()

    def sync_failed(self, error: Exception) -> None:
        self._fleet._inner_ok = False
        self._pending = None
        self._fleet._sink.sync_failed(error)


class _Notices:
    """The ``phaseflag-fleet-notices`` thread: SUBSCRIBE to change notices, wake the fleet."""

    def __init__(self, cache: RedisCache, channel: str, notice: Callable[[], None]) -> None:
        self._cache = cache
        self._channel = channel
        self._notice = notice
        self._pubsub: PubSub | None = None
        self._retry = Backoff(0.25, max(0.25, cache.lease_time / 2))
        self.loop = Loop("fleet-notices", self.step)

    def step(self) -> float:
        pubsub = self._pubsub
        try:
            if pubsub is None:
                pubsub = self._cache.pubsub()
                self._pubsub = pubsub
                pubsub.subscribe(self._channel)
                self._notice()  # notices may have been missed while unsubscribed: check now
            message = pubsub.get_message(timeout=_NOTICE_WAIT)
        except Exception:  # SharedCacheError or redis-py's own: resubscribe after a while
            self._close()
            return self._retry.next_delay()
        self._retry.reset()
        if message is not None and message.get("type") == "message":
            self._notice()
        return 0.0

    def stop(self, timeout: float) -> bool:
        ended = self.loop.stop(timeout)
        if ended:
            self._close()
        return ended

    def reset_after_fork(self) -> None:
        self.loop.reset_after_fork()
        self._pubsub = None  # the parent's connection: never used or closed here

    def _close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:
                _log.debug("phaseflag redis: closing the subscription failed", exc_info=True)
