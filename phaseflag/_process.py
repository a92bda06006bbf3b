"""Process-wide plumbing for clients: exit and fork hooks, the debug log handler.

Live clients are held weakly: ``atexit`` stops them (flushing events) and, after
``os.fork()``, each is restarted in the child (``os.register_at_fork``, the one fork
strategy). ``multiprocessing`` (and billiard, Celery's fork of it) ends its forked
workers with ``os._exit``, which skips ``atexit``; their exit path runs
``multiprocessing.util``'s finalizers instead, so a worker registers one that stops
the clients there; Celery's prefork children exit before those run, so its
``worker_process_shutdown`` signal stops them there. Before a fork, ``gc.freeze()`` puts
what is alive out of the collector's reach, so preforked workers share the ruleset's pages.
The hooks are installed once, when the first client starts, never at import.
"""

from __future__ import annotations

import atexit
import functools
import gc
import importlib
import logging
import os
import sys
import threading
import weakref
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import requests

__all__ = ["enable_debug_logging", "fresh_pools", "register", "unregister"]

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
                os.register_at_fork(before=_before_fork, after_in_child=_restart_all_in_child)
        _watch_worker_exits()


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


class _Token:
    """What multiprocessing's after-fork registry holds (weakly) for this module."""


_token = _Token()
_watched: set[str] = set()  # the multiprocessing-like modules whose workers are hooked
#: (a module loaded when the package can start processes, its module of fork hooks)
_WORKER_MODULES = (
    ("multiprocessing.process", "multiprocessing.util"),
    ("billiard.process", "billiard.util"),
)


def _watch_worker_exits() -> None:
    """Ask each loaded multiprocessing-like package to call ``_in_worker`` in its forked
    workers. Runs in the parent (at start and before each fork), never in a child."""
    for process, name in _WORKER_MODULES:
        if process in sys.modules and name not in _watched:
            _watched.add(name)
            try:  # its worker would import it after the fork anyway
                util = importlib.import_module(name)
                util.register_after_fork(_token, functools.partial(_in_worker, name))
            except Exception:
                _log.debug("phaseflag: cannot hook %s worker exits", name, exc_info=True)
    if "celery" in sys.modules and "celery" not in _watched:
        _watched.add("celery")
        try:
            # Celery's prefork children end with os._exit inside the task loop, before
            # billiard's finalizers run; Celery sends this signal in the child just before.
            signals = importlib.import_module("celery.signals")
            signals.worker_process_shutdown.connect(_on_celery_child_exit, weak=False)
        except Exception:
            _log.debug("phaseflag: cannot hook Celery worker exits", exc_info=True)


def _on_celery_child_exit(*_args: object, **_kwargs: object) -> None:
    """In a Celery prefork child about to ``os._exit``: stop the clients (flushing events)."""
    _stop_all()


def _in_worker(name: str, _token: object) -> None:
    """In a forked worker (after the package cleared the parent's finalizers): stop the
    clients, flushing their events, on the worker's exit path, which skips atexit."""
    util = sys.modules.get(name)
    if util is not None:
        util.Finalize(None, _stop_all, exitpriority=_EXIT_PRIORITY)


#: Above multiprocessing's own finalizers (queues use 10, managers 0): events flush first.
_EXIT_PRIORITY = 100


def _before_fork() -> None:
    _watch_worker_exits()
    _share_before_fork()


#: Benchmarks turn this off to measure what sharing saves.
share_with_children = True


def _share_before_fork() -> None:
    """Let forked children (gunicorn --preload, Celery prefork) share the ruleset pages.

    ``gc.freeze()`` moves every object into the permanent generation: the children's
    collections never visit them, so never write to (and copy) the pages they live
    on. The parent stays frozen too: a collection in a master that goes on forking
    would otherwise write to every page and copy them away from the children already
    running (what was frozen is what was alive at the fork, so this keeps at most
    that much garbage uncollected). Flags are not compiled here: each child compiles
    those it reads (``ruleset.flags.compile_all()`` in the master shares them all).
    """
    if share_with_children:
        gc.freeze()


def _restart_all_in_child() -> None:
    global _hooks_lock  # noqa: PLW0603 - the parent's lock may be held: replace it in the child
    _hooks_lock = threading.Lock()
    for client in list(_live):
        try:
            client._after_fork_in_child()
        except Exception:
            _log.exception("phaseflag: could not restart a client after fork")


def fresh_pools(session: requests.Session) -> None:
    """Give a user's session new, empty connection pools in a forked child: its pooled
    sockets are the parent's. The old pools are dropped, not closed (closing takes locks a
    parent's thread may hold)."""
    for adapter in session.adapters.values():
        init = getattr(adapter, "init_poolmanager", None)
        if init is None:
            continue
        try:
            init(
                getattr(adapter, "_pool_connections", 10),
                getattr(adapter, "_pool_maxsize", 10),
                block=getattr(adapter, "_pool_block", False),
            )
            if isinstance(getattr(adapter, "proxy_manager", None), dict):
                adapter.proxy_manager = {}  # type: ignore[attr-defined]
        except Exception:
            _log.debug("phaseflag: could not renew a session adapter after fork", exc_info=True)
