"""A custom cache in a forked child: its calls are bounded, because it may wait forever there.

phaseflag's own caches replace their locks after a fork; a user's cache cannot be reached
that way, and a lock one of the parent's threads held at the fork stays held in the child
for good (the thread that would release it does not exist there). So after a fork each call
to such a cache runs on a daemon ``phaseflag-cache`` thread and is waited for a bounded
time: one that does not return is skipped (a ``get`` reads as a miss), counted and logged
once, and while it is still stuck later calls are skipped at once. In the process that
made the client, calls go straight through.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ._cache import Cache

__all__ = ["ChildSafeCache", "child_safe"]

_log = logging.getLogger("phaseflag")

#: Seconds a forked child waits for one call to a custom cache (``close`` gets less: stop()).
CHILD_WAIT = 1.0
CLOSE_WAIT = 0.2

_T = TypeVar("_T")


def child_safe(cache: Any) -> Any:
    """``cache`` itself when it is one of phaseflag's (they reset after a fork themselves),
    else a ChildSafeCache around it."""
    if type(cache).__module__.split(".")[0] == "phaseflag" or isinstance(cache, ChildSafeCache):
        return cache
    return ChildSafeCache(cache)


class ChildSafeCache(Cache):
    """Passes every call to ``cache``; after ``_after_fork_in_child`` (in a forked child)
    each call is bounded as the module says. ``skipped`` counts the calls skipped."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache
        self.skipped = 0
        self._forked = False
        self._stuck: threading.Event | None = None  # set when the stuck call returns
        self._warned = False

    def get(self, key: str) -> bytes | None:
        if not self._forked:
            value: bytes | None = self.cache.get(key)
            return value
        value = self._bounded("get", self.cache.get, (key,), None, CHILD_WAIT)
        return value

    def set(self, key: str, value: bytes) -> None:
        if not self._forked:
            self.cache.set(key, value)
            return
        self._bounded("set", self.cache.set, (key, value), None, CHILD_WAIT)

    def delete(self, key: str) -> None:
        if not self._forked:
            self.cache.delete(key)
            return
        self._bounded("delete", self.cache.delete, (key,), None, CHILD_WAIT)

    def close(self) -> None:
        close = getattr(self.cache, "close", None)
        if not callable(close):
            return
        if not self._forked:
            close()
            return
        self._bounded("close", close, (), None, CLOSE_WAIT)

    def _after_fork_in_child(self) -> None:
        """From now on calls are bounded (a call stuck in the parent is not stuck here)."""
        self._forked = True
        self._stuck = None
        reset = getattr(self.cache, "_after_fork_in_child", None)
        if callable(reset):
            reset()

    def _bounded(
        self,
        name: str,
        call: Callable[..., _T],
        args: tuple[Any, ...],
        missing: _T,
        wait: float,
    ) -> _T:
        stuck = self._stuck
        if stuck is not None and not stuck.is_set():
            self.skipped += 1
            return missing
        done = threading.Event()
        outcome: list[Any] = []

        def run() -> None:
            try:
                outcome.append((True, call(*args)))
            except BaseException as exc:  # raised again on the waiting thread
                outcome.append((False, exc))
            finally:
                done.set()

        threading.Thread(target=run, name="phaseflag-cache", daemon=True).start()
        if not done.wait(wait):
            self._stuck = done
            self.skipped += 1
            if not self._warned:
                self._warned = True
                _log.warning(
                    "phaseflag: the cache %s did not answer %s() within %g s in this forked "
                    "child (a lock held by a parent thread at fork?); its calls are skipped "
                    "in this process while it stays stuck (counted, not logged again)",
                    type(self.cache).__name__,
                    name,
                    wait,
                )
            return missing
        ok, value = outcome[0]
        if not ok:
            raise value
        result: _T = value
        return result
