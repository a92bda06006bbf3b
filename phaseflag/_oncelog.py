"""Warn once per cause: a read that fails on every request must not log on every request."""

from __future__ import annotations

import logging
from typing import Final

from ._evaluation import short

__all__ = ["OnceLog"]

#: Distinct causes remembered; past it repeats are logged at DEBUG instead of WARNING.
_LIMIT: Final = 1024


class OnceLog:
    """A logger wrapper that emits each keyed message once (bounded memory)."""

    __slots__ = ("_seen", "logger")

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._seen: set[str] = set()

    def __call__(self, key: str, message: str, *args: object, level: int = logging.WARNING) -> None:
        """Log ``message % args`` at ``level`` the first time ``key`` is seen."""
        if key in self._seen:
            return
        if len(self._seen) < _LIMIT:
            self._seen.add(key)
        else:  # past the cap a warning would repeat on every read: keep it at DEBUG
            level = min(level, logging.DEBUG)
        # Keys and values come from callers: a megabyte key must not make a megabyte line.
        self.logger.log(level, message, *(short(a, 200) if isinstance(a, str) else a for a in args))
