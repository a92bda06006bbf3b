"""RedisCache and the fleet sync against real redis-server processes on loopback ports.

In-process fleets here (several Fleet objects sharing one Redis, each with its own Poller
against a loopback API); tests/test_redis_fleet.py runs fleets of real processes.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from conftest import LoopbackAPI, boolean_flag, ruleset, to_bytes, wait_for
from redis_support import (
    RedisServer,
    free_port,
    redis_cluster,
    redis_sentinel,
    redis_server,
    redis_servers,
    tls_redis_server,
)

from phaseflag._compile import load_ruleset
from phaseflag._errors import SharedCacheError
from phaseflag._fleet import Fleet, Inner
from phaseflag._model import Ruleset
from phaseflag._sync import Poller, SyncSink
from phaseflag._transport import Transport
from phaseflag.redis import RedisCache, environment_key

pytestmark = pytest.mark.redis

__all__ = ["redis_server"]  # the fixture, imported for this module's tests

ENV = environment_key("sdk-test-key")


def doc(version: int, value: bool = True) -> bytes:
    return to_bytes(ruleset(boolean_flag("flag", value), version=version))


class Sink:
    """A client stand-in: holds the newest applied ruleset, counts outcomes (thread-safe)."""

    def __init__(self) -> None:
        self.ruleset: Ruleset | None = None
        self.sources: list[tuple[str, int]] = []
        self.failures: list[Exception] = []
        self.successes = 0
        self.lock = threading.Lock()

    def apply_document(self, raw: bytes, source: str) -> None:
        new = load_ruleset(raw)
        with self.lock:
            old = self.ruleset
            if source != "live" and old is not None and new.version <= old.version:
                return
            self.ruleset = new
            self.sources.append((source, new.version))

    def sync_succeeded(self) -> None:
        with self.lock:
            self.successes += 1

    def sync_failed(self, error: Exception) -> None:
        with self.lock:
            self.failures.append(error)

    def held(self) -> int | None:
        ruleset = self.ruleset
        return None if ruleset is None else ruleset.version


@pytest.fixture
def caches() -> Iterator[list[RedisCache]]:
    made: list[RedisCache] = []
    yield made
    for cache in made:
        cache.close()


@pytest.fixture
def fleets() -> Iterator[list[Fleet]]:
    made: list[Fleet] = []
    yield made
    for fleet in made:
        assert fleet.stop(5.0)


@pytest.fixture
def transports() -> Iterator[list[Transport]]:
    made: list[Transport] = []
    yield made
    for transport in made:
        transport.close()


@pytest.fixture
def make_member(
    caches: list[RedisCache], fleets: list[Fleet], transports: list[Transport]
) -> Callable[..., tuple[Fleet, Sink]]:
    """``make_member(url, api=None, interval=0.2, lease=1.0)``: a started Fleet and its Sink.

    With ``api`` it runs in shared mode (its leader polls ``api``); without, in cache mode.
    """

    def make(
        url: str, api: LoopbackAPI | None = None, *, interval: float = 0.2, lease: float = 1.0
    ) -> tuple[Fleet, Sink]:
        cache = RedisCache(url, lease_time=lease, read_timeout=0.2, connect_timeout=0.2)
        caches.append(cache)
        sink = Sink()
        make_inner: Callable[[SyncSink], Inner] | None = None
        if api is not None:
            transport = Transport(api.base_url, "sdk-test-key", timeout=2.0)
            transports.append(transport)

            def make_inner(inner_sink: SyncSink) -> Inner:
                return Poller(transport.fetch_ruleset, inner_sink, interval)

        fleet = Fleet(cache, ENV, sink, interval=interval, held=sink.held, make_inner=make_inner)
        fleets.append(fleet)
        fleet.start()
        return fleet, sink

    return make


# -- RedisCache primitives ------------------------------------------------------------------


def test_compare_and_set_never_replaces_a_newer_version(
    redis_server: RedisServer, caches: list[RedisCache]
) -> None:
    cache = RedisCache(redis_server.url)
    caches.append(cache)
    assert cache.write(ENV, doc(5), 5, '"v5"')
    assert not cache.write(ENV, doc(4), 4, '"v4"')
    assert not cache.write(ENV, doc(5, False), 5, '"v5b"')
    snap = cache.read(ENV, None)
    assert (snap.version, snap.etag, snap.data) == (5, '"v5"', doc(5))
    assert snap.age is not None and 0 <= snap.age < 60
    assert cache.read(ENV, 5).data is None  # not newer than what the reader holds
    assert cache.write(ENV, doc(6), 6, None)
    assert cache.read(ENV, 5).data == doc(6)


def test_racing_writers_with_different_versions_leave_the_newest(
    redis_server: RedisServer, caches: list[RedisCache]
) -> None:
    versions = list(range(1, 201))
    random.Random(7).shuffle(versions)
    halves = [versions[::2], versions[1::2]]
    writers = [RedisCache(redis_server.url) for _ in halves]
    caches.extend(writers)
    start = threading.Barrier(2)

    def write_all(cache: RedisCache, mine: list[int]) -> None:
        start.wait()
        for version in mine:
            cache.write(ENV, doc(version), version, f'"v{version}"')

    threads = [
        threading.Thread(target=write_all, args=pair) for pair in zip(writers, halves, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    snap = writers[0].read(ENV, None)
    assert snap.version == 200
    assert snap.data == doc(200) and snap.etag == '"v200"'


def test_keys_share_one_hash_tag_and_hold_no_api_key(
    redis_server: RedisServer, caches: list[RedisCache]
) -> None:
    api_key = "sdk-super-secret-key-123"
    cache = RedisCache(redis_server.url, prefix="myapp")
    caches.append(cache)
    env = environment_key(api_key)
    cache.write(env, doc(1), 1, None)
    assert cache.acquire(env, "token")
    keys = sorted(redis_server.cli("KEYS", "*").split())
    assert keys == [f"{{myapp}}:{env}:lease", f"{{myapp}}:{env}:ruleset"]
    everything = redis_server.cli("HGETALL", keys[1]) + redis_server.cli("GET", keys[0])
    assert api_key not in everything and api_key not in " ".join(keys)
    assert api_key not in repr(cache)


def test_the_lease_is_exclusive_renewed_only_by_its_holder_and_released(
    redis_server: RedisServer, caches: list[RedisCache]
) -> None:
    a, b = (
        RedisCache(redis_server.url, lease_time=5.0),
        RedisCache(redis_server.url, lease_time=5.0),
    )
    caches.extend([a, b])
    assert a.acquire(ENV, "token-a")
    assert not b.acquire(ENV, "token-b")
    assert a.renew(ENV, "token-a") and not b.renew(ENV, "token-b")
    ttl = int(redis_server.cli("PTTL", f"{{phaseflag}}:{ENV}:lease"))
    assert 0 < ttl <= 5000
    b.release(ENV, "token-b")  # not its lease: nothing happens
    assert not b.acquire(ENV, "token-b")
    a.release(ENV, "token-a")
    assert b.acquire(ENV, "token-b")


def test_cache_interface_stores_by_version(
    redis_server: RedisServer, caches: list[RedisCache]
) -> None:
    cache = RedisCache(redis_server.url, shared=False)
    caches.append(cache)
    assert cache.get("ruleset-abc") is None
    cache.set("ruleset-abc", doc(3))
    cache.set("ruleset-abc", doc(2))  # older: refused
    assert cache.get("ruleset-abc") == doc(3)
    cache.delete("ruleset-abc")
    assert cache.get("ruleset-abc") is None
    with pytest.raises(TypeError):
        cache.set("ruleset-abc", "text")  # type: ignore[arg-type]


def test_an_oversize_value_in_redis_is_not_downloaded(
    redis_server: RedisServer, caches: list[RedisCache]
) -> None:
    cache = RedisCache(redis_server.url)
    caches.append(cache)
    cache.write(ENV, b"x" * 5000, 9, None)
    snap = cache.read(ENV, None, max_bytes=1000)
    assert snap.version == 9 and snap.data is None and snap.size == 5000


def test_unreachable_redis_is_a_shared_cache_error_within_the_timeout(
    caches: list[RedisCache],
) -> None:
    cache = RedisCache(f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.5)
    caches.append(cache)
    with pytest.raises(SharedCacheError) as caught:
        cache.read(ENV, None)
    assert caught.value.option is None and "unreachable" in str(caught.value)
    assert cache.get("ruleset-x") is None  # the Cache seam reads a failure as a miss


def test_wrong_password_names_the_option_once(
    caplog: pytest.LogCaptureFixture, caches: list[RedisCache]
) -> None:
    with redis_servers(1, args=["--requirepass", "right-password"]) as (server,):
        cache = RedisCache(f"redis://:wrong-password@127.0.0.1:{server.port}/0")
        caches.append(cache)
        with pytest.raises(SharedCacheError) as caught:
            cache.read(ENV, None)
        assert caught.value.option == "url"
        assert "RedisCache url" in str(caught.value) and "password" in str(caught.value)
        assert "wrong-password" not in str(caught.value) and "wrong-password" not in repr(cache)
        with caplog.at_level(logging.DEBUG, logger="phaseflag"):
            for _ in range(3):
                cache.get("ruleset-x")
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "RedisCache url" in errors[0].getMessage()
        good = RedisCache(f"redis://:right-password@127.0.0.1:{server.port}/0")
        caches.append(good)
        assert good.read(ENV, None).version is None


def test_untrusted_tls_certificate_names_the_option(caches: list[RedisCache]) -> None:
    with tls_redis_server() as server:
        cache = RedisCache(f"rediss://127.0.0.1:{server.port}/0")
        caches.append(cache)
        with pytest.raises(SharedCacheError) as caught:
            cache.read(ENV, None)
        assert caught.value.option == "url" and "TLS" in str(caught.value)
        trusted = RedisCache(f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={server.tls[0]}")  # type: ignore[index]
        caches.append(trusted)
        assert trusted.write(ENV, doc(1), 1, None)


def test_bad_options_are_config_errors() -> None:
    from phaseflag import ConfigError

    with pytest.raises(ConfigError, match="prefix"):
        RedisCache(prefix="a{b}")
    with pytest.raises(ConfigError, match="url"):
        RedisCache("http://localhost")
    with pytest.raises(ConfigError, match="lease_time"):
        RedisCache(lease_time=0)
    with pytest.raises(ConfigError, match="lease_time"):
        RedisCache(lease_time=1.0, read_timeout=0.5)
    with pytest.raises(ConfigError, match="client"):
        RedisCache(client=object())  # type: ignore[arg-type]


def test_a_client_passed_in_is_used_and_not_closed(
    redis_server: RedisServer, caches: list[RedisCache]
) -> None:
    client = redis.Redis(
        host="127.0.0.1", port=redis_server.port, socket_timeout=1, decode_responses=True
    )
    cache = RedisCache(client=client)
    caches.append(cache)
    assert cache.write(ENV, doc(2), 2, '"e"')
    assert cache.read(ENV, None).data == doc(2)  # bytes even with decode_responses=True
    cache.close()
    assert client.ping()
    client.close()


def test_redis_cluster_client(caches: list[RedisCache]) -> None:
    from redis.cluster import RedisCluster

    with redis_cluster() as servers:
        cluster = RedisCluster(host="127.0.0.1", port=servers[0].port, socket_timeout=2)
        try:
            cache = RedisCache(client=cluster, lease_time=2.0)
            caches.append(cache)
            assert cache.write(ENV, doc(3), 3, '"v3"')
            assert not cache.write(ENV, doc(2), 2, None)
            assert cache.read(ENV, None).version == 3
            assert cache.acquire(ENV, "t") and cache.renew(ENV, "t")
            sub = cache.pubsub()
            sub.subscribe(cache.channel(ENV))
            other = RedisCache(client=cluster)
            other.write(ENV, doc(4), 4, None)
            message = wait_for(lambda: sub.get_message(timeout=0.1), timeout=10)
            assert message["data"] in (b"4", "4")
            sub.close()
        finally:
            cluster.close()


def test_sentinel_master_client(redis_server: RedisServer, caches: list[RedisCache]) -> None:
    from redis.sentinel import Sentinel

    with redis_sentinel(redis_server) as port:
        sentinel = Sentinel([("127.0.0.1", port)], socket_timeout=1)
        master = sentinel.master_for("mymaster", socket_timeout=1)
        cache = RedisCache(client=master, lease_time=2.0)
        caches.append(cache)
        assert cache.write(ENV, doc(8), 8, None)
        assert cache.acquire(ENV, "t")
        assert redis_server.cli("HGET", f"{{phaseflag}}:{ENV}:ruleset", "version") == "8"
        master.close()


# -- the fleet sync, in process ------------------------------------------------------------


def test_one_leader_fetches_and_followers_follow_by_notice(
    redis_server: RedisServer,
    loopback_api: LoopbackAPI,
    make_member: Callable[..., tuple[Fleet, Sink]],
) -> None:
    loopback_api.publish(ruleset(boolean_flag("flag"), version=1))
    members = [make_member(redis_server.url, loopback_api, interval=30.0) for _ in range(4)]
    wait_for(lambda: all(sink.held() == 1 for _, sink in members), timeout=15)
    assert sum(fleet.leader for fleet, _ in members) == 1
    assert len(loopback_api.calls("/sdk/ruleset")) == 1  # one fetch for the whole fleet
    followers = [sink for fleet, sink in members if not fleet.leader]
    assert all(sink.sources == [("redis", 1)] for sink in followers)
    # A change: the leader's next poll fetches it (woken here); the notice reaches everyone
    # long before the 30 s version check.
    loopback_api.publish(ruleset(boolean_flag("flag", False), version=2))
    leader = next(fleet for fleet, _ in members if fleet.leader)
    leader._inner.loop.wake()  # type: ignore[union-attr]
    wait_for(lambda: all(sink.held() == 2 for _, sink in members), timeout=15)


def test_leader_stop_hands_the_lease_over(
    redis_server: RedisServer,
    loopback_api: LoopbackAPI,
    make_member: Callable[..., tuple[Fleet, Sink]],
) -> None:
    members = [make_member(redis_server.url, loopback_api, lease=3.0) for _ in range(3)]
    wait_for(lambda: all(s.held() == 1 for _, s in members), timeout=15)
    wait_for(lambda: sum(f.leader for f, _ in members) == 1, timeout=15)
    leader = next(f for f, _ in members if f.leader)
    assert leader.stop(1.0)
    rest = [f for f, _ in members if f is not leader]
    before = len(loopback_api.calls("/sdk/ruleset"))
    wait_for(lambda: sum(f.leader for f in rest) == 1, timeout=15)
    wait_for(lambda: len(loopback_api.calls("/sdk/ruleset")) > before, timeout=15)
    # After the handover every request (the new leader's first included, with the ETag it
    # read from Redis) is conditional: a failover costs a 304, not a download.
    calls = loopback_api.calls("/sdk/ruleset")[before:]
    assert calls and all(c.headers.get("If-None-Match") == '"v1"' for c in calls), [
        c.headers.get("If-None-Match") for c in calls
    ]


def test_cache_mode_follows_and_never_fetches(
    redis_server: RedisServer,
    caches: list[RedisCache],
    make_member: Callable[..., tuple[Fleet, Sink]],
) -> None:
    fleet, sink = make_member(redis_server.url)  # cache mode
    wait_for(lambda: sink.failures, timeout=10)  # Redis empty: reported, nothing held
    assert "no ruleset" in str(sink.failures[0])
    writer = RedisCache(redis_server.url)
    caches.append(writer)
    writer.write(ENV, doc(7), 7, None)
    wait_for(lambda: sink.held() == 7, timeout=10)
    assert not fleet.leader and sink.sources == [("redis", 7)]


def test_redis_emptied_is_repopulated_by_the_leader(
    redis_server: RedisServer,
    loopback_api: LoopbackAPI,
    make_member: Callable[..., tuple[Fleet, Sink]],
) -> None:
    loopback_api.publish(ruleset(boolean_flag("flag"), version=3))
    members = [make_member(redis_server.url, loopback_api) for _ in range(2)]
    wait_for(lambda: all(s.held() == 3 for _, s in members), timeout=15)
    redis_server.cli("FLUSHALL")
    wait_for(
        lambda: redis_server.cli("HGET", f"{{phaseflag}}:{ENV}:ruleset", "version") == "3",
        timeout=15,
    )
    wait_for(lambda: sum(f.leader for f, _ in members) == 1, timeout=15)


def test_redis_down_each_polls_alone_then_one_leader_again(
    loopback_api: LoopbackAPI, make_member: Callable[..., tuple[Fleet, Sink]]
) -> None:
    with redis_servers(1) as (server,):
        loopback_api.publish(ruleset(boolean_flag("flag"), version=1))
        members = [make_member(server.url, loopback_api) for _ in range(3)]
        wait_for(lambda: all(s.held() == 1 for _, s in members), timeout=15)
        server.kill()
        # Solo: nobody leads, each runs its own poller.
        wait_for(lambda: all(f._inner is not None and not f.leader for f, _ in members), timeout=15)
        loopback_api.publish(ruleset(boolean_flag("flag", False), version=2))
        wait_for(lambda: all(s.held() == 2 for _, s in members), timeout=15)  # on their own
        server.start()  # back, empty
        wait_for(lambda: sum(f.leader for f, _ in members) == 1, timeout=15)
        wait_for(lambda: sum(f._inner is not None for f, _ in members) == 1, timeout=15)
        wait_for(
            lambda: server.cli("HGET", f"{{phaseflag}}:{ENV}:ruleset", "version") == "2", timeout=15
        )
        assert all(s.held() == 2 for _, s in members)  # never an older version
        assert all(("redis", 1) not in s.sources[1:] for _, s in members)


def test_paused_redis_is_bounded(
    loopback_api: LoopbackAPI, make_member: Callable[..., tuple[Fleet, Sink]]
) -> None:
    with redis_servers(1) as (server,):
        fleet, sink = make_member(server.url, loopback_api)
        wait_for(lambda: sink.held() == 1 and fleet.leader, timeout=15)
        server.pause()
        try:
            wait_for(lambda: not fleet.leader, timeout=15)  # the renewal timed out: solo
            assert fleet._inner is not None
            started = time.monotonic()
            assert fleet.stop(1.0)
            assert time.monotonic() - started < 1.5
        finally:
            server.resume()


def test_invalid_document_in_redis_keeps_the_last_good(
    redis_server: RedisServer,
    caches: list[RedisCache],
    make_member: Callable[..., tuple[Fleet, Sink]],
) -> None:
    writer = RedisCache(redis_server.url)
    caches.append(writer)
    writer.write(ENV, doc(1), 1, None)
    _, sink = make_member(redis_server.url)
    wait_for(lambda: sink.held() == 1, timeout=10)
    writer.write(ENV, json.dumps({"version": 2, "flags": "nope"}).encode(), 2, None)
    wait_for(lambda: any("ruleset" in str(e).lower() for e in sink.failures), timeout=10)
    assert sink.held() == 1


# -- the client with a RedisCache ------------------------------------------------------------


def test_fetch_mode_cache_needs_a_redis_cache(make_client: Callable[..., Any]) -> None:
    from phaseflag import ConfigError, PhaseFlagClient

    with pytest.raises(ConfigError, match="fetch_mode"):
        PhaseFlagClient(base_url="", fetch_mode="cache")
    assert make_client(base_url="").status().leader is None


def test_cache_mode_client_reads_never_wait_for_redis(
    redis_server: RedisServer, caches: list[RedisCache], make_client: Callable[..., Any]
) -> None:
    writer = RedisCache(redis_server.url)
    caches.append(writer)
    writer.write(environment_key("k"), doc(4, False), 4, None)
    client = make_client(
        base_url="",
        api_key="k",
        fetch_mode="cache",
        polling_interval=0.2,
        cache=RedisCache(redis_server.url, lease_time=1.0, read_timeout=0.2),
    )
    client.start()
    assert client.wait_until_ready(10)
    status = client.status()
    assert (status.ruleset_version, status.ruleset_source, status.leader) == (4, "redis", False)
    redis_server.pause()
    try:
        started = time.perf_counter()
        for _ in range(10_000):
            assert client.get_boolean_value("flag", True) is False
        assert time.perf_counter() - started < 2.0  # 10,000 reads: no Redis round trip in them
        wait_for(lambda: client.status().consecutive_failures > 0, timeout=10)
        started = time.monotonic()
        client.stop()
        assert time.monotonic() - started < 1.5
    finally:
        redis_server.resume()


def test_forked_child_restarts_the_fleet_threads(
    redis_server: RedisServer, loopback_api: LoopbackAPI, make_client: Callable[..., Any]
) -> None:
    client = make_client(
        base_url=loopback_api.base_url,
        api_key="sdk-test-key",
        polling_interval=0.2,
        cache=RedisCache(redis_server.url, lease_time=1.0, read_timeout=0.2),
    )
    client.start()
    wait_for(lambda: client.status().leader, timeout=10)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a follower that restarted its own threads
        code = 1
        try:
            os.close(read)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                names = {t.name for t in threading.enumerate()}
                if client.status().ruleset_version == 2 and "phaseflag-fleet" in names:
                    code = 0
                    break
                time.sleep(0.01)
            os.write(write, f"{code} {client.status().leader}".encode())
        finally:
            os._exit(code)
    os.close(write)
    loopback_api.publish(ruleset(boolean_flag("flag", False), version=2))
    with os.fdopen(read) as pipe:
        answer = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, answer
    assert answer == "0 False"  # the parent keeps the lease; the child follows
    assert client.status().leader is True


def test_streaming_leader_pushes_through_redis(
    redis_server: RedisServer, tmp_path: Any, make_client: Callable[..., Any]
) -> None:
    from phaseflag.server import PhaseFlagServer

    path = tmp_path / "ruleset.json"
    path.write_bytes(doc(1))
    server = PhaseFlagServer(path, api_keys=["sdk-stream-key"], poll_interval=0.05)
    server.start()
    try:
        clients = [
            make_client(
                base_url=server.url,
                api_key="sdk-stream-key",
                fetch_mode="streaming",
                polling_interval=30.0,  # changes must come by the stream and the notice
                cache=RedisCache(redis_server.url, lease_time=1.0, read_timeout=0.2),
            )
            for _ in range(3)
        ]
        for client in clients:
            client.start()
        wait_for(lambda: all(c.status().ruleset_version == 1 for c in clients), timeout=15)
        wait_for(lambda: sum(bool(c.status().leader) for c in clients) == 1, timeout=15)
        leader = next(c for c in clients if c.status().leader)
        names = {t.name for t in threading.enumerate()}
        assert "phaseflag-stream" in names and "phaseflag-fleet-notices" in names
        path.write_bytes(doc(2, False))
        wait_for(lambda: all(c.status().ruleset_version == 2 for c in clients), timeout=15)
        assert leader.status().ruleset_source == "live"
        assert all(c.get_boolean_value("flag", True) is False for c in clients)
        for client in clients:
            client.stop()
    finally:
        server.stop()


def test_redis_unreachable_at_start_does_not_hold_up_readiness(
    loopback_api: LoopbackAPI, make_client: Callable[..., Any]
) -> None:
    client = make_client(
        base_url=loopback_api.base_url,
        api_key="sdk-test-key",
        polling_interval=0.2,
        cache=RedisCache(f"redis://127.0.0.1:{free_port()}/0", lease_time=1.0, read_timeout=0.2),
    )
    started = time.monotonic()
    client.start()
    assert time.monotonic() - started < 2.0  # start() itself never touches Redis
    assert client.wait_until_ready(10)
    status = client.status()
    assert (status.ruleset_version, status.ruleset_source, status.leader) == (1, "live", False)
    assert status.consecutive_failures == 0  # a missing Redis is not a failed sync


def test_cache_mode_without_redis_ages_and_reports_stale(
    redis_server: RedisServer, caches: list[RedisCache], make_client: Callable[..., Any]
) -> None:
    writer = RedisCache(redis_server.url)
    caches.append(writer)
    writer.write(environment_key("k"), doc(3), 3, None)
    stale: list[float] = []
    client = make_client(
        base_url="",
        api_key="k",
        fetch_mode="cache",
        polling_interval=0.2,
        max_staleness=0.5,
        cache=RedisCache(redis_server.url, lease_time=1.0, read_timeout=0.2),
    )
    client.on("stale", stale.append)
    client.start()
    assert client.wait_until_ready(10)
    redis_server.kill()
    wait_for(lambda: client.status().stale, timeout=15)
    assert stale and client.status().ruleset_version == 3  # the data is kept, and aged
    assert client.get_boolean_value("flag", False) is True


def test_followers_report_data_no_leader_confirms(
    redis_server: RedisServer,
    loopback_api: LoopbackAPI,
    make_member: Callable[..., tuple[Fleet, Sink]],
) -> None:
    members = [make_member(redis_server.url, loopback_api, interval=0.2) for _ in range(2)]
    wait_for(lambda: all(s.held() == 1 for _, s in members), timeout=15)
    follower = next(s for f, s in members if not f.leader)
    loopback_api.status = 500  # the leader cannot fetch: it stops confirming the data
    wait_for(lambda: any("last confirmed" in str(e) for e in follower.failures), timeout=15)
    assert follower.held() == 1


def test_relay_needs_a_key_from_the_environment_or_a_file(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from phaseflag._cli import main

    assert main(["relay", "--upstream", "http://127.0.0.1:9/api/v1"]) == 2
    assert "PHASEFLAG_API_KEY" in capsys.readouterr().err
    empty = tmp_path / "key"
    empty.write_text("\n")
    assert main(["relay", "--upstream", "http://x/api/v1", "--api-key-file", str(empty)]) == 2
    assert "empty" in capsys.readouterr().err
    missing = str(tmp_path / "nope")
    assert main(["relay", "--upstream", "http://x/api/v1", "--api-key-file", missing]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["relay", "--upstream", "http://x", "--api-key", "sdk-1"]) == 2  # no such option
