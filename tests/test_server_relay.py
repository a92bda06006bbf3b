"""Relay mode: ``phaseflag serve --upstream URL`` follows another PhaseFlag API."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import ruleset, string_flag, wait_for
from redis_support import redis_servers

from phaseflag import EvaluationContext
from phaseflag._cache import MemoryCache
from phaseflag.server import PhaseFlagServer, RelaySource
from phaseflag.types import EvaluationEvent

pytestmark = pytest.mark.e2e

UPSTREAM_KEY = "upstream-key-5e6f7a8b"
RELAY_KEY = "relay-key-1a2b3c4d"


def colors(version: int, color: str) -> dict[str, Any]:
    return ruleset(string_flag("color", color, track_events=True), version=version)


def write_atomic(path: Path, document: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document), "utf-8")
    os.replace(tmp, path)


@pytest.fixture
def upstream_file(tmp_path: Path) -> Path:
    path = tmp_path / "upstream.json"
    write_atomic(path, colors(1, "blue"))
    return path


@pytest.fixture
def upstream(upstream_file: Path, tmp_path: Path) -> Iterator[PhaseFlagServer]:
    with PhaseFlagServer(
        upstream_file,
        api_keys=[UPSTREAM_KEY],
        events_out=str(tmp_path / "upstream-events.jsonl"),
        poll_interval=0.05,
        ping_interval=1.0,
    ) as srv:
        yield srv


def relay_of(url: str, tmp_path: Path, **options: Any) -> tuple[PhaseFlagServer, RelaySource]:
    source = RelaySource(
        url,
        UPSTREAM_KEY,
        fetch_mode=options.pop("fetch_mode", "streaming"),
        polling_interval=0.2,
        client_options={"cache": MemoryCache(), "event_flush_interval": 0.2, **options},
    )
    server = PhaseFlagServer(None, api_keys=[RELAY_KEY], source=source, ping_interval=1.0)
    return server, source


@pytest.mark.parametrize("mode", ["streaming", "polling"])
def test_relay_serves_and_follows_the_upstream(
    upstream: PhaseFlagServer, upstream_file: Path, tmp_path: Path, make_client, mode: str
):
    """An SDK on the relay gets the upstream's ruleset and its next version."""
    relay, _ = relay_of(upstream.url, tmp_path, fetch_mode=mode)
    with relay:
        assert relay.etag == upstream.etag  # the same document, byte for byte
        client = make_client(base_url=relay.url, api_key=RELAY_KEY, fetch_mode="streaming")
        client.start()
        assert client.wait_until_ready(5)
        assert client.get_string_value("color", "none") == "blue"
        write_atomic(upstream_file, colors(2, "green"))
        wait_for(lambda: client.get_string_value("color", "none") == "green", timeout=10)
        health = requests.get(relay.url.removesuffix("/api/v1") + "/healthz", timeout=5).json()
        assert health["ruleset_version"] == 2


def test_relay_keeps_the_last_good_ruleset_when_the_upstream_goes(
    upstream_file: Path, tmp_path: Path
):
    """Upstream stopped: the relay keeps serving what it had and reports the failure."""
    upstream = PhaseFlagServer(upstream_file, api_keys=[UPSTREAM_KEY], poll_interval=0.05)
    upstream.start()
    relay, source = relay_of(upstream.url, tmp_path, fetch_mode="polling")
    try:
        with relay:
            upstream.stop()
            wait_for(lambda: source.last_error is not None, timeout=10)
            resp = requests.get(
                relay.url + "/sdk/ruleset", headers={"X-API-Key": RELAY_KEY}, timeout=5
            )
            assert resp.status_code == 200 and resp.json()["flags"][0]["key"] == "color"
            health = requests.get(
                relay.url.removesuffix("/api/v1") + "/healthz",
                headers={"X-API-Key": RELAY_KEY},
                timeout=5,
            ).json()
            assert "upstream sync failing" in health["ruleset_error"]
    finally:
        upstream.stop()


def test_relay_wrong_upstream_key_fails_to_start(upstream: PhaseFlagServer, tmp_path: Path):
    """start() raises ConfigError naming the upstream and its rejection."""
    from phaseflag._errors import ConfigError

    source = RelaySource(
        upstream.url,
        "wrong-key-00000000",
        ready_timeout=2.0,
        client_options={"cache": MemoryCache()},
    )
    server = PhaseFlagServer(None, api_keys=[RELAY_KEY], source=source)
    with pytest.raises(ConfigError, match="no ruleset from"):
        server.start()
    server.stop()


def test_events_are_forwarded_upstream_in_batches(
    upstream: PhaseFlagServer, tmp_path: Path, make_client
):
    """Custom events and evaluation summaries posted to the relay arrive upstream."""
    relay, source = relay_of(upstream.url, tmp_path)
    with relay:
        client = make_client(
            base_url=relay.url, api_key=RELAY_KEY, fetch_mode="polling", event_flush_interval=0.2
        )
        client.start()
        assert client.wait_until_ready(5)
        ctx = EvaluationContext(user_id="u1")
        for _ in range(7):
            client.get_string_value("color", "none", ctx)
        for index in range(5):
            client.track_event(
                EvaluationEvent(flag_key="color", user_id=f"u{index}", metadata={"n": index})
            )
        assert client.flush_events()
        upstream_events = tmp_path / "upstream-events.jsonl"

        def arrived() -> list[dict[str, Any]]:
            if not upstream_events.exists():
                return []
            lines = upstream_events.read_text("utf-8").splitlines()
            return [json.loads(line) for line in lines]

        def complete() -> bool:
            events = arrived()
            customs = [e for e in events if e["kind"] == "custom"]
            counted = sum(
                c["count"]
                for e in events
                if e["kind"] == "summary"
                for c in e["counters"]
                if c["flag_key"] == "color"
            )
            return len(customs) == 5 and counted == 7

        wait_for(complete, timeout=15)
        customs = sorted(
            (e for e in arrived() if e["kind"] == "custom"), key=lambda e: e["metadata"]["n"]
        )
        assert [e["user_id"] for e in customs] == [f"u{i}" for i in range(5)]
        handed, dropped = source.forward_stats()
        assert handed == 12 and dropped == 0
        metrics = requests.get(
            relay.url.removesuffix("/api/v1") + "/metrics",
            headers={"X-API-Key": RELAY_KEY},
            timeout=5,
        ).text
        assert 'phaseflag_server_events_total{outcome="forwarded"} 12.0' in metrics


@pytest.fixture
def redis_url() -> Iterator[str]:
    """One empty redis-server (real, on loopback) for this test."""
    with redis_servers(1) as servers:
        yield servers[0].url


@pytest.mark.redis
def test_relay_publishes_into_redis_for_cache_mode_processes(
    upstream: PhaseFlagServer,
    upstream_file: Path,
    tmp_path: Path,
    redis_url: str,
    make_client,
):
    """``--redis URL``: a cache-mode process (no HTTP at all) follows what the relay serves."""
    from phaseflag.redis import RedisCache

    source = RelaySource(upstream.url, UPSTREAM_KEY, fetch_mode="streaming", redis_url=redis_url)
    with PhaseFlagServer(None, api_keys=[RELAY_KEY], source=source) as relay:
        assert "Redis" in source.description
        follower = make_client(
            base_url="",
            api_key=UPSTREAM_KEY,
            fetch_mode="cache",
            polling_interval=0.2,
            cache=RedisCache(redis_url),
        )
        follower.start()
        assert follower.wait_until_ready(10)
        assert follower.get_string_value("color", "none") == "blue"
        assert follower.status().ruleset_source == "redis"
        write_atomic(upstream_file, colors(2, "green"))
        wait_for(lambda: relay.ruleset.version == 2, timeout=10)
        wait_for(lambda: follower.get_string_value("color", "none") == "green", timeout=10)
