"""Lock-free counters for the read path: evaluation counts per flag and variation, and a
plain event count, each readable by another thread without losing an increment.

``next()`` on an ``itertools.count`` is atomic under the GIL, so incrementing takes no
lock. A reader calls ``next()`` too and subtracts its own calls, so no increment is
lost or counted twice.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any, Final

__all__ = ["EvaluationCounters", "LockFreeCount"]


class LockFreeCount:
    """A count that any thread increments without a lock; ``value()`` reads it."""

    def __init__(self) -> None:
        self._count = itertools.count()
        self._reads = 0
        self._read_lock = threading.Lock()  # two readers would race on _reads

    def add(self) -> None:
        """Count one; lock-free, never raises."""
        next(self._count)

    def value(self) -> int:
        """How many ``add()`` calls so far."""
        with self._read_lock:
            value = next(self._count) - self._reads
            self._reads += 1
        return value

    def reset(self) -> None:
        """Start again from zero, with a fresh lock (a forked child)."""
        self._count = itertools.count()
        self._reads = 0
        self._read_lock = threading.Lock()


class EvaluationCounters:
    """How often each flag served each variation since the last ``take()``.

    ``count()`` is lock-free (about 70 ns). ``by_flag`` is the hot-path handle: the
    client's read path binds it once and inlines ``count()`` as
    ``next(by_flag[flag_key][variation_key])`` (about 35 ns), calling ``count()`` on a
    KeyError (tests/test_events.py proves the two count alike). ``by_flag`` is the same
    dict for the life of the counters (``take()`` and ``forget()`` never replace it), so
    the bound handle stays valid. Counters live as long as their owner (one per flag and
    variation served). ``take()`` must not run on two threads at once (the event
    processor calls it under its send lock).
    """

    def __init__(self) -> None:
        self.by_flag: Final[dict[str, dict[str | None, itertools.count[int]]]] = {}
        self._seen: dict[tuple[str, str | None], int] = {}

    def count(self, flag_key: str, variation_key: str | None) -> None:
        """Count one evaluation of ``flag_key`` serving ``variation_key``."""
        try:
            next(self.by_flag[flag_key][variation_key])
        except KeyError:
            # setdefault is atomic: racing first calls share whichever counter wins.
            by_variation = self.by_flag.setdefault(flag_key, {})
            next(by_variation.setdefault(variation_key, itertools.count()))

    def take(self) -> list[dict[str, Any]]:
        """The counts since the last call, as ``{"flag_key", "variation_key", "count"}``."""
        out: list[dict[str, Any]] = []
        seen = self._seen
        # copy() is one atomic step, so count() may add keys while we iterate.
        for flag_key, by_variation in self.by_flag.copy().items():
            for variation_key, counter in by_variation.copy().items():
                key = (flag_key, variation_key)
                reading = next(counter)  # = counts so far + our own earlier readings
                previous = seen.get(key, 0)
                seen[key] = reading + 1
                if reading > previous:
                    out.append(
                        {
                            "flag_key": flag_key,
                            "variation_key": variation_key,
                            "count": reading - previous,
                        }
                    )
        return out

    def forget(self) -> None:
        """Treat every count so far as taken (a forked child: the parent reports them)."""
        self.take()
