"""Fork never blocks: children forked right after a ruleset change, while the parent's sync
thread is inside the cache (holding its lock), return from ``os.fork()`` at once and
sync. Real forks against the real loopback API; each child is killed if it hangs.
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

import phaseflag._cache
from phaseflag import Cache, FileCache, PhaseFlagClient

pytestmark = [
    pytest.mark.slow,
    pytest.mark.e2e,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    # Forking a process that runs the SDK's threads is what these tests are about (3.12+
    # warns about it in general; the at-fork hooks are what make it safe here).
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

KEY = "sdk-test-forkstorm-0123456789ab"
CHILD_TIMEOUT = 10.0  # generous: a healthy child reports in milliseconds
FORKS = int(os.environ.get("PHASEFLAG_TEST_FORKS", "200"))


class SlowLockedCache(Cache):
    """A custom cache whose ``set`` holds its lock while "writing" for a few ms, and whose
    ``get`` waits for that lock without a timeout: a child forked during a write would block
    in ``get`` forever. (``set`` gives up after 50 ms, as a networked cache would.)"""

    def __init__(self, writing: threading.Event) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, bytes] = {}
        self._writing = writing

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._data.get(key)

    def set(self, key: str, value: bytes) -> None:
        if not self._lock.acquire(timeout=0.05):
            raise OSError("cache busy")
        try:
            self._writing.set()
            threading.Event().wait(0.02)  # a slow backend, not synchronisation
            self._data[key] = value
        finally:
            self._lock.release()

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)


def fork_and_sync(client: PhaseFlagClient) -> dict[str, Any]:
    """Fork; the child reports how long fork() took to return and whether it then synced
    (a fetch after the fork). A child that does not report in time is killed: a hang."""
    read_fd, write_fd = os.pipe()
    forked_at, forked_wall = time.monotonic(), time.time()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            returned = time.monotonic() - forked_at
            deadline = time.monotonic() + CHILD_TIMEOUT / 2
            synced = False
            while time.monotonic() < deadline:
                last = client.status().last_sync
                if last is not None and last >= forked_wall:
                    synced = True
                    break
                threading.Event().wait(0.005)
            os.write(write_fd, json.dumps({"returned": returned, "synced": synced}).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        ready, _, _ = select.select([read_fd], [], [], CHILD_TIMEOUT)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            return {"hung": True}
        data = b""
        while chunk := os.read(read_fd, 65536):
            data += chunk
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)
    report: dict[str, Any] = json.loads(data or b'{"hung": true}')
    return report


def storm(
    api: LoopbackAPI, client: PhaseFlagClient, writing: threading.Event, forks: int
) -> list[dict[str, Any]]:
    """``forks`` forks, each while the parent's sync thread writes a new ruleset version to
    the cache (holding the cache's lock)."""
    reports = []
    for version in range(2, forks + 2):
        writing.clear()
        api.publish(ruleset(string_flag("color", f"v{version}"), version=version))
        assert writing.wait(5.0)
        reports.append(fork_and_sync(client))
    return reports


def check(reports: list[dict[str, Any]]) -> None:
    hung = [r for r in reports if r.get("hung")]
    assert hung == [], f"{len(hung)} of {len(reports)} children hung"
    slow = [r["returned"] for r in reports if r["returned"] > 1.0]
    assert slow == [], slow  # fork() returns in well under 1 s (ms when healthy)
    unsynced = [r for r in reports if not r["synced"]]
    assert unsynced == [], f"{len(unsynced)} of {len(reports)} children never synced"


@pytest.mark.parametrize("kind", ["file", "custom"])
def test_200_forks_right_after_ruleset_changes_never_block(
    loopback_api: LoopbackAPI,
    make_client: Any,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    """200 children forked right after ruleset changes, with a FileCache or a custom cache
    whose lock a write holds: every child returns from fork() at once and syncs."""
    writing = threading.Event()
    cache: Cache
    if kind == "file":
        cache = FileCache(tmp_path)
        real_write = phaseflag._cache._write_atomically

        def slow_write(directory: str, target: str, value: bytes) -> None:
            writing.set()  # inside FileCache's lock
            threading.Event().wait(0.02)  # a slow disk, not synchronisation
            real_write(directory, target, value)

        monkeypatch.setattr(phaseflag._cache, "_write_atomically", slow_write)
    else:
        cache = SlowLockedCache(writing)
    loopback_api.publish(ruleset(string_flag("color", "v1"), version=1))
    client: PhaseFlagClient = make_client(
        base_url=loopback_api.base_url,
        api_key=KEY,
        polling_interval=0.01,
        event_flush_interval=3600,
        cache=cache,
    )
    client.start()
    assert client.wait_until_ready(5.0)
    check(storm(loopback_api, client, writing, FORKS))
