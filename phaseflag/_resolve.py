"""Name resolution within a request's deadline.

``getaddrinfo`` runs before any socket exists and cannot be interrupted, so a hung resolver
would hold a request (and ``stop()``) past every timeout. Each lookup therefore runs on a
daemon ``phaseflag-dns`` thread the request waits for, until its deadline or an abort: the
request fails in time, and the thread ends whenever the resolver returns. Concurrent lookups
of one name share one thread, so a hung resolver holds at most one thread per name.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
from typing import Any

__all__ = ["ResolveTimeout", "resolve"]

AddrInfo = tuple[Any, ...]  # getaddrinfo's (family, type, proto, canonname, sockaddr)


class ResolveTimeout(OSError):
    """The name did not resolve before the request's deadline (or the request was aborted)."""


class _Lookup:
    """One getaddrinfo call in flight; its waiters' events are set when it returns."""

    __slots__ = ("done", "error", "result", "waiters")

    def __init__(self) -> None:
        self.done = False
        self.result: list[AddrInfo] = []
        self.error: BaseException | None = None
        self.waiters: list[threading.Event] = []


class _Table:
    """The lookups in flight, by (host, port, family), and the lock guarding them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inflight: dict[tuple[str, int, int], _Lookup] = {}

    def reset(self) -> None:
        self.lock = threading.Lock()
        self.inflight = {}


_table = _Table()


def resolve(
    host: str, port: int, family: int, *, timeout: float | None, wake: threading.Event
) -> list[AddrInfo]:
    """getaddrinfo(host, port, family, SOCK_STREAM) within ``timeout`` seconds.

    Returns early with ResolveTimeout when ``wake`` is set (the watchdog sets it when the
    request is aborted); raises what getaddrinfo raises (``socket.gaierror``) otherwise.
    An IP literal is converted on the calling thread: it involves no resolver.
    """
    if _is_ip(host):
        return socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    key = (host, port, family)
    table = _table
    with table.lock:
        lookup = table.inflight.get(key)
        if lookup is None:
            lookup = table.inflight[key] = _Lookup()
            thread = threading.Thread(
                target=_run, args=(table, key, lookup), name="phaseflag-dns", daemon=True
            )
            thread.start()
        lookup.waiters.append(wake)
    wake.wait(timeout)
    with table.lock:
        done = lookup.done
        if not done:
            lookup.waiters.remove(wake)
    if not done:
        raise ResolveTimeout(f"resolving {host!r} took longer than the request's deadline")
    if lookup.error is not None:
        raise lookup.error
    return list(lookup.result)


def _run(table: _Table, key: tuple[str, int, int], lookup: _Lookup) -> None:
    host, port, family = key
    try:
        lookup.result = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except BaseException as exc:  # handed to the waiting request, which raises it
        lookup.error = exc
    with table.lock:
        lookup.done = True
        if table.inflight.get(key) is lookup:
            del table.inflight[key]
        for event in lookup.waiters:
            event.set()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    return True


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's lookup threads: forget their lookups, and
    replace the lock one of them may have held."""
    _table.reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
