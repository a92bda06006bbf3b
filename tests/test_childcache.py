"""ChildSafeCache: a custom cache's calls go straight through in the process that made the
client; after a fork, a call that does not return in time is skipped, counted and logged once,
and later calls are skipped at once while it stays stuck, then go through again."""

from __future__ import annotations

import logging
import threading

import pytest
from conftest import phaseflag_thread_names, wait_for

import phaseflag._childcache
from phaseflag import FileCache, MemoryCache
from phaseflag._childcache import ChildSafeCache, child_safe


class DictCache:
    """A duck-typed custom cache (no Cache base class, no close) guarded by one lock."""

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


def test_phaseflag_caches_are_not_wrapped(tmp_path: object) -> None:
    memory, files = MemoryCache(), FileCache(str(tmp_path))
    assert child_safe(memory) is memory and child_safe(files) is files
    guarded = child_safe(DictCache())
    assert isinstance(guarded, ChildSafeCache) and child_safe(guarded) is guarded


def test_calls_go_straight_through_before_a_fork() -> None:
    inner = DictCache()
    guarded = ChildSafeCache(inner)
    guarded.set("k", b"v")
    assert guarded.get("k") == b"v" and inner.data == {"k": b"v"}
    guarded.delete("k")
    guarded.close()  # no close() on the inner cache: nothing to do
    assert inner.data == {} and phaseflag_thread_names() == []


def test_a_stuck_call_in_a_child_is_skipped_counted_and_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(phaseflag._childcache, "CHILD_WAIT", 0.05)
    inner = DictCache()
    guarded = ChildSafeCache(inner)
    guarded._after_fork_in_child()
    guarded.set("k", b"v1")  # not stuck: goes through on a helper thread
    assert inner.data == {"k": b"v1"}
    inner.lock.acquire()  # as a parent thread held at fork
    with caplog.at_level(logging.WARNING, logger="phaseflag"):
        guarded.set("k", b"v2")  # waits CHILD_WAIT, then skipped
        assert guarded.get("k") is None  # skipped at once: a miss
        guarded.set("k", b"v3")
    assert guarded.skipped == 3
    warnings = [r for r in caplog.records if "did not answer set()" in r.getMessage()]
    assert len(warnings) == 1
    inner.lock.release()  # the stuck call finishes; the next call goes through
    wait_for(lambda: inner.data["k"] == b"v2")
    wait_for(lambda: phaseflag_thread_names() == [])
    assert guarded.get("k") == b"v2"
    guarded.set("k", b"v4")
    assert inner.data["k"] == b"v4" and guarded.skipped == 3


def test_errors_of_the_inner_cache_reach_the_caller_in_a_child() -> None:
    class Failing(DictCache):
        def get(self, key: str) -> bytes | None:
            raise OSError("backend down")

    guarded = ChildSafeCache(Failing())
    guarded._after_fork_in_child()
    with pytest.raises(OSError, match="backend down"):
        guarded.get("k")
