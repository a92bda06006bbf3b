"""Fleets of real processes sharing a real redis-server: one fetch per fleet, failover, outages.

Each worker is a Python process running one PhaseFlagClient with a RedisCache; it reports
applied versions and leadership on stdout (tests/redis_support.py). Intervals and leases are
short so that the scenarios take seconds; waits are on conditions with generous timeouts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence

import pytest
from conftest import LoopbackAPI, boolean_flag, ruleset, wait_for
from redis_support import RedisServer, Worker, fleet_workers, redis_cluster, redis_server

from phaseflag.redis import RedisCache, environment_key

__all__ = ["redis_server"]  # the fixture, imported for this module's tests

pytestmark = [pytest.mark.redis, pytest.mark.e2e]

KEY = "sdk-fleet-key"
INTERVAL = 0.5
LEASE = 3.0
STORED = f"{{phaseflag}}:{environment_key(KEY)}:ruleset"


def options(api: LoopbackAPI, redis_url: str, **more: object) -> dict[str, object]:
    return {
        "base_url": api.base_url,
        "api_key": KEY,
        "redis": redis_url,
        "interval": INTERVAL,
        "lease": LEASE,
        **more,
    }


def all_at(workers: Sequence[Worker], version: int) -> Callable[[], bool]:
    def check() -> bool:
        return all(w.version == version for w in workers)

    check.__qualname__ = f"all {len(workers)} workers at v{version}"
    return check


def leaders(workers: Sequence[Worker]) -> list[Worker]:
    return [w for w in workers if w.leader]


def one_leader(workers: Sequence[Worker]) -> Callable[[], bool]:
    def check() -> bool:
        return len(leaders(workers)) == 1

    return check


def stored_version(server: RedisServer) -> str:
    return server.cli("HGET", STORED, "version")


@pytest.fixture
def api(loopback_api: LoopbackAPI) -> Iterator[LoopbackAPI]:
    loopback_api.publish(ruleset(boolean_flag("flag"), version=1))
    yield loopback_api


def test_twenty_processes_make_one_fetch_per_interval_and_survive_a_kill_9(
    api: LoopbackAPI, redis_server: RedisServer
) -> None:
    with fleet_workers(20, options(api, redis_server.url)) as workers:
        wait_for(all_at(workers, 1), timeout=120)
        wait_for(one_leader(workers), timeout=30)
        # Over a window, the whole fleet polls about once per interval (20 alone: 20x that).
        before = len(api.calls("/sdk/ruleset"))
        window = 4.0
        time.sleep(window)  # measuring a rate over a fixed window, not synchronising
        made = len(api.calls("/sdk/ruleset")) - before
        # Under a loaded machine a starved process may time out on Redis and poll alone for
        # a moment (by design): allow three per interval, against 20 per interval alone.
        assert made <= 3 * window / INTERVAL, made
        # A change reaches all 20, through the leader's fetch and the pub/sub notice.
        api.publish(ruleset(boolean_flag("flag", False), version=2))
        wait_for(all_at(workers, 2), timeout=30)
        assert all(w.ask("status", "status")["value"] is False for w in workers)
        # kill -9 of the leader: one new leader within about the lease time.
        (leader,) = leaders(workers)
        killed_at = time.monotonic()
        os.kill(leader.process.pid, signal.SIGKILL)
        rest = [w for w in workers if w is not leader]
        wait_for(one_leader(rest), timeout=LEASE * 10)
        took = time.monotonic() - killed_at
        print(f"new leader {took:.2f} s after kill -9 (lease {LEASE} s)")
        api.publish(ruleset(boolean_flag("flag"), version=3))
        wait_for(all_at(rest, 3), timeout=30)
        assert len(leaders(rest)) == 1


def test_redis_killed_then_back_empty_and_paused(
    api: LoopbackAPI, redis_server: RedisServer
) -> None:
    with fleet_workers(5, options(api, redis_server.url)) as workers:
        wait_for(all_at(workers, 1), timeout=60)
        wait_for(one_leader(workers), timeout=30)
        redis_server.kill()
        # Reads unaffected; each process keeps its data and polls the API itself.
        for worker in workers:
            status = worker.ask("status", "status")
            assert status["version"] == 1 and status["value"] is True
            assert float(status["read_us"]) < 1000 * 100  # 1000 reads: far from any I/O wait
        wait_for(lambda: not leaders(workers), timeout=30)
        before = len(api.calls("/sdk/ruleset"))
        api.publish(ruleset(boolean_flag("flag", False), version=2))
        wait_for(all_at(workers, 2), timeout=30)
        wait_for(lambda: len(api.calls("/sdk/ruleset")) - before >= 10, timeout=30)  # all alone
        # Back empty: one leader again, which repopulates Redis; nobody goes back a version.
        redis_server.start()
        wait_for(lambda: stored_version(redis_server) == "2", timeout=30)
        wait_for(one_leader(workers), timeout=30)
        time.sleep(INTERVAL * 2)  # let any stray old-version apply show up, if there were one
        assert all(w.ask("status", "status")["version"] == 2 for w in workers)
        assert all(w.version == 2 for w in workers)
        # SIGSTOP: reads unaffected, stop() bounded.
        redis_server.pause()
        try:
            for worker in workers:
                status = worker.ask("status", "status")
                assert status["value"] is False and float(status["read_us"]) < 1000 * 100
            for worker in workers:
                stopped = worker.ask("stop", "stopped")
                assert float(stopped["seconds"]) < 1.5, stopped  # type: ignore[arg-type]
        finally:
            redis_server.resume()


def test_cache_mode_makes_no_ruleset_requests_and_still_sends_events(
    api: LoopbackAPI, redis_server: RedisServer
) -> None:
    writer = RedisCache(redis_server.url)
    try:
        body = (
            b'{"schema_version": 1, "version": 5, "segments": [], "flags": [{"key": "flag", '
            b'"type": "boolean", "enabled": true, "variations": [{"key": "on", "value": true}, '
            b'{"key": "off", "value": false}], "off_variation": "off", '
            b'"default": {"variation": "on"}}]}'
        )
        with fleet_workers(2, options(api, redis_server.url, fetch_mode="cache")) as workers:
            time.sleep(INTERVAL * 3)  # idle: nothing in Redis yet; a window to catch any fetch
            assert writer.write(environment_key(KEY), body, 5, None)
            wait_for(all_at(workers, 5), timeout=30)
            for worker in workers:
                status = worker.ask("status", "status")
                assert status["source"] == "redis" and status["leader"] is False
                assert worker.ask("event", "flushed")["ok"] is True
            assert api.calls("/sdk/ruleset") == [] and api.calls("/sdk/stream") == []
            assert any(e.get("event_name") == "clicked" or e for e in api.events())
    finally:
        writer.close()


def test_relay_leads_cache_mode_workers_and_exits_on_sigterm(
    api: LoopbackAPI, redis_server: RedisServer, tmp_path: object
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHASEFLAG_")}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env["PHASEFLAG_API_KEY"] = KEY
    relay = subprocess.Popen(
        [sys.executable, "-m", "phaseflag", "relay", "--upstream", api.base_url,
         "--redis", redis_server.url, "--polling-interval", str(INTERVAL),
         "--lease-time", str(LEASE)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        assert KEY not in " ".join(relay.args)  # type: ignore[arg-type]
        with fleet_workers(3, options(api, redis_server.url, fetch_mode="cache")) as workers:
            wait_for(lambda: stored_version(redis_server) == "1", timeout=30)
            wait_for(all_at(workers, 1), timeout=30)
            api.publish(ruleset(boolean_flag("flag", False), version=2))
            wait_for(all_at(workers, 2), timeout=30)
        requests = len(api.calls("/sdk/ruleset"))
        assert all(
            r.headers.get("Authorization") == f"Bearer {KEY}" for r in api.calls("/sdk/ruleset")
        )
        relay.send_signal(signal.SIGTERM)
        _, err = relay.communicate(timeout=10)
        assert relay.returncode == 0, err
        log = err.decode()
        assert "applied ruleset v1" in log and "applied ruleset v2" in log
        assert KEY not in log
        assert requests >= 2
        assert redis_server.cli("EXISTS", STORED.replace(":ruleset", ":lease")) == "0"  # released
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.communicate(timeout=10)


def test_cluster_and_a_client_passed_in_work_the_same(
    api: LoopbackAPI, make_client: Callable[..., object]
) -> None:
    from redis.cluster import RedisCluster

    from phaseflag import PhaseFlagClient

    with redis_cluster() as servers:
        connections = [
            RedisCluster(host="127.0.0.1", port=servers[0].port, socket_timeout=1) for _ in range(3)
        ]
        try:
            clients: list[PhaseFlagClient] = [
                make_client(  # type: ignore[misc]
                    base_url=api.base_url,
                    api_key=KEY,
                    polling_interval=INTERVAL,
                    cache=RedisCache(client=connection, lease_time=LEASE),
                )
                for connection in connections
            ]
            for client in clients:
                client.start()
            wait_for(lambda: all(c.status().ruleset_version == 1 for c in clients), timeout=30)
            wait_for(lambda: sum(bool(c.status().leader) for c in clients) == 1, timeout=30)
            sources = sorted(str(c.status().ruleset_source) for c in clients)
            assert sources == ["live", "redis", "redis"]
            api.publish(ruleset(boolean_flag("flag", False), version=2))
            wait_for(lambda: all(c.status().ruleset_version == 2 for c in clients), timeout=30)
            for client in clients:
                client.stop()
        finally:
            for connection in connections:
                connection.close()
