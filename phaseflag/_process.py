"""Process-wide plumbing for clients: atexit and fork hooks, the debug log handler.

Live clients are held weakly: ``atexit`` stops them (flushing events) and, after
``os.fork()``, each is restarted in the child. The hooks are installed once, when
the first client starts, never at import.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import weakref
from typing import Protocol

__all__ = ["enable_debug_logging", "register", "unregister"]

_log = logging.getLogger("phaseflag")


class _Client(Protocol):
    def stop(self) -> None: ...

    def _after_fork_in_child(self) -> None: ...


_debug_handler: logging.Handler | None = None


def enable_debug_logging() -> None:
    """Send the ``phaseflag`` logger's records, DEBUG and up, to stderr (once per process)."""
    global _debug_handler  # noqa: PLW0603 - one process-wide stderr handler
    if _debug_handler is None:
        _debug_handler = logging.StreamHandler(sys.stderr)
        _debug_handler.setFormatter(
            logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
        )
        _log.addHandler(_debug_handler)
    _log.setLevel(logging.DEBUG)


# Live clients, held weakly: atexit stops them, fork restarts them in the child.
_live: weakref.WeakSet[_Client] = weakref.WeakSet()
_hooks_installed = False
_hooks_lock = threading.Lock()


def register(client: _Client) -> None:
    """Track a started client for the atexit and fork hooks (installed on first use)."""
    global _hooks_installed  # noqa: PLW0603 - atexit/fork hooks are process-wide, installed once
    with _hooks_lock:
        _live.add(client)
        if not _hooks_installed:
            _hooks_installed = True
            atexit.register(_stop_all)
            if hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=_restart_all_in_child)


def unregister(client: _Client) -> None:
    """Forget a stopped client."""
    with _hooks_lock:
        _live.discard(client)


def _stop_all() -> None:
    for client in list(_live):
        try:
            client.stop()
        except Exception:  # interpreter exit: never raise
            _log.debug("phaseflag: stop at exit failed", exc_info=True)


def _restart_all_in_child() -> None:
    global _hooks_lock  # noqa: PLW0603 - the parent's lock may be held: replace it in the child
    _hooks_lock = threading.Lock()
    for client in list(_live):
        try:
            client._after_fork_in_child()
        except Exception:
            _log.exception("phaseflag: could not restart a client after fork")
