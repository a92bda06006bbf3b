"""Event subscriptions (ready, change, error, stale, flags_changed) with unsubscribe handles."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Final

__all__ = ["EVENTS", "Listeners"]

#: The event names a client emits.
EVENTS: Final = frozenset({"ready", "change", "error", "stale", "flags_changed"})

_log = logging.getLogger("phaseflag")


class Listeners:
    """Callbacks per event name; copy-on-write so emitting takes no lock.

    A raising callback never stops the others (or the sync thread). Its first failure is
    logged at WARNING with the traceback; later ones of the same callback are counted
    (``failures``) and logged at DEBUG, so a listener that always raises cannot flood logs.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: dict[str, tuple[Callable[..., Any], ...]] = {}
        self._failed: dict[int, int] = {}  # id(callback) -> failures (callbacks are held)
        self.failures = 0  # every listener failure so far

    def add(self, event: str, callback: Callable[..., Any]) -> Callable[[], None]:
        """Subscribe; returns a function that unsubscribes (safe to call twice)."""
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; use one of {sorted(EVENTS)}")
        if not callable(callback):
            raise TypeError("callback must be callable")
        with self._lock:
            self._callbacks[event] = (*self._callbacks.get(event, ()), callback)

        def unsubscribe() -> None:
            with self._lock:
                current = self._callbacks.get(event, ())
                if callback in current:
                    index = current.index(callback)
                    self._callbacks[event] = current[:index] + current[index + 1 :]

        return unsubscribe

    def has(self, event: str) -> bool:
        """True when someone listens to ``event``."""
        return bool(self._callbacks.get(event))

    def emit(self, event: str, *args: Any) -> None:
        """Call every callback of ``event``; exceptions are logged, not raised."""
        for callback in self._callbacks.get(event, ()):
            try:
                callback(*args)
            except Exception:
                self.failures += 1
                count = self._failed.get(id(callback), 0) + 1
                self._failed[id(callback)] = count
                if count == 1:
                    _log.warning(
                        "phaseflag: a %r listener raised (%s); continuing (later failures of "
                        "this listener are counted and logged at DEBUG)",
                        event,
                        _name(callback),
                        exc_info=True,
                    )
                else:
                    _log.debug(
                        "phaseflag: a %r listener raised again (%s, %d times)",
                        event,
                        _name(callback),
                        count,
                        exc_info=True,
                    )

    def reset_after_fork(self) -> None:
        """Re-create the lock in a forked child (the parent's may be held)."""
        self._lock = threading.Lock()


def _name(callback: Callable[..., Any]) -> str:
    return str(getattr(callback, "__qualname__", None) or type(callback).__qualname__)
