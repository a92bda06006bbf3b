"""A custom cache whose lock a parent thread holds at fork: the lock stays held in the child for
good, yet the child's reads, syncs and stop() never wait on it (its cache calls are skipped,
counted and logged once). Real fork against the real loopback API; a child that does not
report in time is killed, so a regression fails instead of hanging.
"""

from __future__ import annotations

import json
import os
import select
import signal
import threading
import time
from typing import Any

import pytest
from conftest import LoopbackAPI, ruleset, string_flag

from phaseflag import Cache, PhaseFlagClient

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    # Forking a process that runs the SDK's threads is what these tests are about (3.12+
    # warns about it in general; the at-fork hooks are what make it safe here).
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

KEY = "sdk-test-forkcache-0123456789ab"
CHILD_TIMEOUT = 15.0  # a healthy child reports within about 2 s (one bounded cache call)


class LockedCache(Cache):
    """A custom cache that waits for its lock without any timeout, in every method."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        with self.lock:
            return self.data.get(key)

    def set(self, key: str, value: bytes) -> None:
        with self.lock:
            self.data[key] = value

    def delete(self, key: str) -> None:
        with self.lock:
            self.data.pop(key, None)

    def close(self) -> None:
        with self.lock:
            self.data.clear()


def child(client: PhaseFlagClient, forked_wall: float) -> dict[str, Any]:  # pragma: no cover
    """In the child: read at once, wait for v3 to be applied (which writes the stuck cache)
    and for a later poll to complete (the sync thread is not stuck), then stop()."""
    began = time.monotonic()
    first = client.get_string_value("color", "default")
    read_took = time.monotonic() - began
    applied_at = None
    polled_after = False
    deadline = time.monotonic() + CHILD_TIMEOUT / 2
    while time.monotonic() < deadline:
        status = client.status()
        if applied_at is None and status.ruleset_version == 3:
            applied_at = time.time()
        elif applied_at is not None and (status.last_sync or 0) > applied_at:
            polled_after = True
            break
        threading.Event().wait(0.005)
    stop_began = time.monotonic()
    client.stop()
    guard = client._store._cache
    return {
        "first": first,
        "read_took": read_took,
        "applied": applied_at is not None and applied_at >= forked_wall,
        "value": client.get_string_value("color", "default"),
        "polled_after": polled_after,
        "stop_took": time.monotonic() - stop_began,
        "skipped": getattr(guard, "skipped", None),
        "lock_held": client._store._cache.cache.lock.locked(),
    }


def test_child_never_blocks_on_a_custom_cache_lock_held_at_fork(
    loopback_api: LoopbackAPI, make_client: Any
) -> None:
    """The parent's thread holds the custom cache's lock across the fork; the child reads at
    once (v1, or v3 if its sync was quicker), applies v3 and keeps polling, skips its cache
    writes (counted), and stops within a second."""
    loopback_api.publish(ruleset(string_flag("color", "v1"), version=1))
    cache = LockedCache()
    client: PhaseFlagClient = make_client(
        base_url=loopback_api.base_url,
        api_key=KEY,
        polling_interval=0.02,
        send_events=False,
        cache=cache,
    )
    client.start()
    assert client.wait_until_ready(5.0)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with cache.lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert held.wait(5)
    read_fd, write_fd = os.pipe()
    forked_wall = time.time()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.write(write_fd, json.dumps(child(client, forked_wall)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        loopback_api.publish(ruleset(string_flag("color", "v3"), version=3))
        ready, _, _ = select.select([read_fd], [], [], CHILD_TIMEOUT)
        if not ready:
            os.kill(pid, signal.SIGKILL)
        data = b""
        while ready and (chunk := os.read(read_fd, 65536)):
            data += chunk
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)
        release.set()  # the parent's own sync thread, waiting on the lock too, goes on
        holder.join(5)
    assert data, "the child hung"
    report = json.loads(data)
    assert report["first"] in ("v1", "v3")  # v3 when the child's sync thread was quicker
    assert report["read_took"] < 0.1
    assert report["applied"] and report["value"] == "v3"
    assert report["polled_after"], "the child's sync thread is stuck in the cache"
    assert report["stop_took"] < 1.0
    assert report["skipped"] >= 1
    assert report["lock_held"]  # the lock really stayed held in the child
    assert client.wait_until_ready(0)
