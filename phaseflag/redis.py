"""RedisCache: the ruleset cache a fleet of processes shares through Redis (redis-py).

With ``PhaseFlagClient(..., cache=RedisCache(url))`` one process of the fleet holds a lease
(``SET NX PX``, renewed every third of ``lease_time``) and alone fetches rulesets from the API;
it stores the raw ruleset with its version and ETag by a Lua compare-and-set that never
replaces a newer version, then PUBLISHes a notice. The others follow Redis. Every key shares
the hash tag ``{prefix}``, so a Redis Cluster keeps them in one slot. See docs/fleet.md.

Shared data is keyed by a hash of the SDK key (never the key itself): a relay and workers
that send their events to different ``base_url``\\ s still share one entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from ._cache import Cache
from ._errors import ConfigError, SharedCacheError
from ._schema import MAX_DOCUMENT_BYTES

try:
    import redis
    import redis.exceptions
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("phaseflag.redis needs redis-py: pip install 'phaseflag-sdk[redis]'") from exc

if TYPE_CHECKING:
    from redis.client import PubSub
    from redis.cluster import RedisCluster

__all__ = ["RedisCache", "SharedCacheError"]

_log = logging.getLogger("phaseflag")

DEFAULT_LEASE_TIME: Final = 10.0
DEFAULT_CONNECT_TIMEOUT: Final = 1.0
DEFAULT_READ_TIMEOUT: Final = 0.5
_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_SCHEMES: Final = ("redis", "rediss", "unix")

# KEYS[1] the ruleset hash. ARGV: version, data, etag. Writes only a strictly newer version.
_CAS = """
local current = tonumber(redis.call('HGET', KEYS[1], 'version'))
local new = tonumber(ARGV[1])
if new == nil or (current ~= nil and current >= new) then return 0 end
local t = redis.call('TIME')
local now = string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000))
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'data', ARGV[2], 'etag', ARGV[3],
           'confirmed', now)
return 1
"""

# KEYS[1] the ruleset hash. ARGV: the version held by the caller (-1 for none), max bytes.
# Returns {version, etag, age_ms, data, size}: data only when newer than the caller's and
# within the size limit; age_ms is how long ago a leader last confirmed it (Redis's clock).
_READ = """
local h = redis.call('HMGET', KEYS[1], 'version', 'etag', 'confirmed')
local age = -1
if h[3] then
  local t = redis.call('TIME')
  age = t[1] * 1000 + math.floor(t[2] / 1000) - tonumber(h[3])
end
local version = tonumber(h[1])
local data = false
local size = 0
if version ~= nil and version > tonumber(ARGV[1]) then
  size = redis.call('HSTRLEN', KEYS[1], 'data')
  if size <= tonumber(ARGV[2]) then data = redis.call('HGET', KEYS[1], 'data') end
end
return {h[1] or false, h[2] or false, string.format('%d', age), data, size}
"""

# KEYS[1] the ruleset hash. ARGV: version, etag. Marks the held version as freshly confirmed.
_CONFIRM = """
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[1] then return 0 end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'confirmed', string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000)),
           'etag', ARGV[2])
return 1
"""

# KEYS[1] the lease. ARGV: token, milliseconds. Extends the lease only for its holder.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS[1] the lease. ARGV: token. Deletes the lease only for its holder.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def environment_key(api_key: str) -> str:
    """The name of one environment's shared entry: ``env-`` and 32 hex digits of a hash."""
    material = f"phaseflag-env\0{api_key}".encode("utf-8", "surrogatepass")
    return "env-" + hashlib.sha256(material).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What Redis holds for one environment.

    ``version`` is None when Redis holds nothing; ``data`` is set only when it is newer than
    the version the reader holds; ``age`` is seconds since a leader last confirmed it.
    """

    version: int | None
    etag: str | None
    age: float | None
    data: bytes | None
    size: int


class RedisCache(Cache):
    """A ruleset cache in Redis that a fleet of processes shares (extra ``phaseflag-sdk[redis]``).

    Args:
        url: ``redis://[:password@]host:6379/0``, ``rediss://`` for TLS, or ``unix://path``.
        prefix: The hash tag of every key (``{prefix}:...``): letters, digits, ``_.:-``.
        client: An existing ``redis.Redis``, ``redis.cluster.RedisCluster`` or Sentinel
            master (``Sentinel(...).master_for(name)``) to use instead of ``url``. It keeps
            its own timeouts and retries: give it ``socket_timeout`` and
            ``socket_connect_timeout`` so a hung Redis cannot stall the sync thread.
        lease_time: Seconds a leader's lease lasts (10); renewed every third of it, so a
            dead leader is replaced within about ``lease_time``.
        connect_timeout: Seconds to connect to Redis (1.0).
        read_timeout: Seconds to wait for each Redis reply (0.5).
        shared: One leader fetches for the fleet (True, the default). False makes it a
            plain cache: every process fetches by itself and writes here.

    Reads of flags never touch Redis: only the client's sync thread does. The constructor
    does no I/O; it raises ConfigError for a malformed option.
    """

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        prefix: str = "phaseflag",
        *,
        client: redis.Redis | RedisCluster | None = None,
        lease_time: float = DEFAULT_LEASE_TIME,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        shared: bool = True,
    ) -> None:
        if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
            raise ConfigError(
                "prefix",
                f"{prefix!r} is not a usable key prefix",
                "use 1-64 of A-Z a-z 0-9 _ . : -",
            )
        self.lease_time = _seconds("lease_time", lease_time)
        self._connect_timeout = _seconds("connect_timeout", connect_timeout)
        self._read_timeout = _seconds("read_timeout", read_timeout)
        if self.lease_time < 3 * self._read_timeout:
            raise ConfigError(
                "lease_time",
                f"{lease_time} s leaves no room to renew with read_timeout={read_timeout} s",
                "make lease_time at least three times read_timeout",
            )
        if not isinstance(shared, bool):
            raise ConfigError("shared", "must be True or False")
        self.shared = shared
        self._prefix = prefix
        self._url: str | None = None
        if client is None:
            if not isinstance(url, str) or urlsplit(url).scheme not in _SCHEMES:
                raise ConfigError(
                    "url", "is not a Redis URL", "use redis://host:6379/0, rediss:// or unix://"
                )
            self._url = url
        elif not hasattr(client, "register_script") or not hasattr(client, "pubsub"):
            raise ConfigError(
                "client", f"{type(client).__name__} is not a redis-py client", "pass redis.Redis"
            )
        self._option = "url" if client is None else "client"
        self._client: Any = client
        self._lock = threading.Lock()
        self._scripts: dict[str, Any] = {}
        self._reported: set[str] = set()
        if client is None:
            _instances.add(self)

    def __repr__(self) -> str:
        where = _redact_url(self._url) if self._url else type(self._client).__name__
        return f"RedisCache({where!r}, prefix={self._prefix!r}, shared={self.shared})"

    # -- the Cache seam (used when shared=False, and by tools) --------------------------------

    def get(self, key: str) -> bytes | None:
        """Return the ruleset stored under ``key``, or None (also when Redis fails)."""
        try:
            return self.read(key, None).data
        except SharedCacheError as exc:
            self.report(exc)
            return None

    def set(self, key: str, value: bytes) -> None:
        """Store a ruleset document under ``key`` unless Redis holds a newer version.

        Raises TypeError for a value that is not bytes; Redis failures are logged, not raised.
        """
        if not isinstance(value, bytes):
            raise TypeError(f"cache value must be bytes, not {type(value).__name__}")
        try:
            version = json.loads(value).get("version")
        except (ValueError, AttributeError):
            version = None
        if not isinstance(version, int) or isinstance(version, bool):
            _log.warning("phaseflag redis: not storing %r: it has no integer version", key)
            return
        try:
            self.write(key, value, version, None)
        except SharedCacheError as exc:
            self.report(exc)

    def delete(self, key: str) -> None:
        """Remove ``key``'s ruleset and lease; Redis failures are logged, not raised."""
        try:
            self._call(lambda c: c.delete(self._key(key, "ruleset"), self._key(key, "lease")))
        except SharedCacheError as exc:
            self.report(exc)

    def close(self) -> None:
        """Close the connections this cache opened (not those of a ``client=`` passed in)."""
        with self._lock:
            client, self._scripts = self._client, {}
            if self._url is not None:
                self._client = None
        if self._url is not None and client is not None:
            client.close()

    # -- what the fleet sync uses (phaseflag._fleet) ------------------------------------------

    def read(self, env: str, held: int | None, max_bytes: int = MAX_DOCUMENT_BYTES) -> Snapshot:
        """What Redis holds for ``env``; the document only if newer than ``held``."""
        raw = self._script(
            "read", _READ, [self._key(env, "ruleset")], [-1 if held is None else held, max_bytes]
        )
        version, etag, age_ms, data, size = raw
        return Snapshot(
            version=None if version is None else int(version),
            etag=_text(etag) or None,
            age=None if int(age_ms) < 0 else int(age_ms) / 1000.0,
            data=_bytes(data),
            size=int(size),
        )

    def write(self, env: str, data: bytes, version: int, etag: str | None) -> bool:
        """Store ``data`` if ``version`` is newer than Redis's and publish a notice; True if so."""
        written = self._script(
            "cas", _CAS, [self._key(env, "ruleset")], [version, data, etag or ""]
        )
        if written:
            self._call(lambda c: c.publish(self.channel(env), str(version)))
        return bool(written)

    def confirm(self, env: str, version: int, etag: str | None) -> bool:
        """Mark ``version`` as just confirmed by the API (a 304 or a healthy stream)."""
        return bool(
            self._script("confirm", _CONFIRM, [self._key(env, "ruleset")], [version, etag or ""])
        )

    def acquire(self, env: str, token: str) -> bool:
        """Take the lease for ``env`` if nobody holds it (SET NX PX)."""
        ms = int(self.lease_time * 1000)
        return bool(self._call(lambda c: c.set(self._key(env, "lease"), token, nx=True, px=ms)))

    def renew(self, env: str, token: str) -> bool:
        """Extend the lease if ``token`` still holds it; False when it was lost."""
        ms = int(self.lease_time * 1000)
        return bool(self._script("renew", _RENEW, [self._key(env, "lease")], [token, ms]))

    def release(self, env: str, token: str) -> None:
        """Give the lease up if ``token`` holds it, so a follower takes over at once."""
        self._script("release", _RELEASE, [self._key(env, "lease")], [token])

    def pubsub(self) -> PubSub:
        """A new pub/sub connection (the caller subscribes and closes it)."""
        return self._call(lambda c: c.pubsub(ignore_subscribe_messages=True))  # type: ignore[no-any-return]

    def channel(self, env: str) -> str:
        """The channel on which ``env``'s change notices are published."""
        return self._key(env, "changes")

    def report(self, exc: SharedCacheError) -> None:
        """Log a Redis failure: a configuration problem once as an error, others as warnings."""
        kind = exc.option or "unreachable"
        if kind in self._reported:
            _log.debug("phaseflag redis: %s", exc)
            return
        self._reported.add(kind)
        _log.log(logging.ERROR if exc.option else logging.WARNING, "phaseflag redis: %s", exc)

    def recovered(self) -> None:
        """Redis answered again: the next failure is logged again."""
        self._reported.discard("unreachable")

    # -- internals ------------------------------------------------------------------------------

    def _key(self, env: str, part: str) -> str:
        return f"{{{self._prefix}}}:{env}:{part}"

    def _redis(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = redis.Redis.from_url(
                    self._url or "",
                    socket_connect_timeout=self._connect_timeout,
                    socket_timeout=self._read_timeout,
                    retry=Retry(NoBackoff(), 0),  # the fleet sync retries on its own schedule
                    health_check_interval=0,
                )
            return self._client

    def _script(self, name: str, source: str, keys: list[str], args: list[Any]) -> Any:
        client = self._redis()
        with self._lock:
            script = self._scripts.get(name)
            if script is None:
                script = self._scripts[name] = client.register_script(source)
        return self._call(lambda c: script(keys=keys, args=args, client=c))

    def _call(self, fn: Any) -> Any:
        """Run ``fn(client)``, turning every redis-py failure into a SharedCacheError."""
        client = self._redis()
        try:
            return fn(client)
        except redis.exceptions.AuthenticationError as exc:
            raise self._config_error("Redis refused the credentials", exc) from None
        except redis.exceptions.ResponseError as exc:
            text = str(exc)
            if text.startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
                raise self._config_error("Redis refused the credentials", exc) from None
            raise SharedCacheError(f"Redis answered an error: {_short(text)}") from None
        except (redis.exceptions.RedisError, OSError) as exc:
            text = str(exc)
            if "SSL" in text or "certificate" in text.lower() or "TLS" in text:
                raise self._config_error("the TLS handshake with Redis failed", exc) from None
            raise SharedCacheError(
                f"Redis is unreachable ({type(exc).__name__}: {_short(text)}); "
                "serving the ruleset held and syncing without it until it answers"
            ) from None

    def _config_error(self, problem: str, exc: Exception) -> SharedCacheError:
        if self._option == "url":
            fix = "check the password and the redis:// or rediss:// scheme in RedisCache(url=...)"
        else:
            fix = "check the password and ssl settings of the client= passed to RedisCache"
        return SharedCacheError(
            f"RedisCache {self._option}: {problem} "
            f"({type(exc).__name__}: {_short(str(exc))}); {fix}",
            option=self._option,
        )

    def _after_fork_in_child(self) -> None:
        """Drop the parent's connections in a forked child; the next call opens new ones."""
        self._lock = threading.Lock()
        self._scripts = {}
        if self._url is not None:
            self._client = None


_instances: weakref.WeakSet[RedisCache] = weakref.WeakSet()


def _after_fork() -> None:
    for cache in list(_instances):
        cache._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(name, f"{value!r} must be a positive number of seconds")
    return float(value)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _bytes(value: object) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):  # a client= made with decode_responses=True
        return value.encode("utf-8")
    return bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else None


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
