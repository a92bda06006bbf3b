"""Connection pools whose connections honour request deadlines, and the adapter using them.

Each connection a request is sent on is attached to its Deadline (``_deadline``), so the
watchdog can shut it; names are resolved and sockets connected within the deadline (the
lookup on a ``phaseflag-dns`` thread, see ``_resolve``). A user's session is adopted: its
adapters get these pools where that can be done without changing what they do.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    LocationParseError,
    NameResolutionError,
    NewConnectionError,
)
from urllib3.poolmanager import PoolManager, ProxyManager
from urllib3.util.connection import allowed_gai_family

from ._deadline import Deadline, active
from ._resolve import ResolveTimeout, resolve

__all__ = ["DeadlineAdapter", "adopt_session"]

_log = logging.getLogger("phaseflag")


class _AttachingPool:
    """Mixin: attach each connection a request is sent on to that request's Deadline."""

    def _make_request(self, conn: Any, *args: Any, **kwargs: Any) -> Any:
        deadline = active()
        if deadline is not None:
            deadline.attach(conn)
        return super()._make_request(conn, *args, **kwargs)  # type: ignore[misc]


class _BoundedConnect(HTTPConnection):
    """Resolve and connect within the request's Deadline (see ``_resolve``), and keep the
    socket for the watchdog, which can then cut a connect short as well as
    a read. Outside an SDK request (a user's own, on a session the SDK adopted) urllib3's
    own connect runs unchanged."""

    connected_sock: Any = None

    def _new_conn(self) -> socket.socket:
        deadline = active()
        if deadline is None:
            return super()._new_conn()
        try:
            return self._connect_within(deadline)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        except (ResolveTimeout, TimeoutError) as exc:
            raise ConnectTimeoutError(self, f"Connection to {self.host} timed out ({exc})") from exc
        except OSError as exc:
            raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc

    def _connect_within(self, deadline: Deadline) -> socket.socket:
        host = self._dns_host.strip("[]")
        try:
            host.encode("idna")
        except UnicodeError:
            raise LocationParseError(f"'{host}', label empty or too long") from None
        wake = threading.Event()
        deadline.attach(wake)
        addresses = resolve(
            host, self.port, allowed_gai_family(), timeout=deadline.remaining(), wake=wake
        )
        error: OSError = OSError("getaddrinfo returned no address")
        for family, kind, proto, _, address in addresses:
            sock = socket.socket(family, kind, proto)
            self.connected_sock = sock  # from here the watchdog can shut it
            try:
                if deadline.over:
                    raise ResolveTimeout("the request was cut short before it connected")
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
                sock.settimeout(deadline.remaining())
                if self.source_address:
                    sock.bind(self.source_address)
                sock.connect(address)
                if deadline.over:
                    raise ResolveTimeout("the request was cut short as it connected")
            except ResolveTimeout:
                sock.close()
                raise
            except OSError as exc:
                sock.close()
                error = exc
                if deadline.over:
                    break
                continue
            timeout = self.timeout  # urllib3's "default" sentinel leaves the socket's own
            if timeout is None or isinstance(timeout, (int, float)):
                sock.settimeout(timeout)
            return sock
        raise error

    def connect(self) -> None:
        super().connect()
        self.connected_sock = self.sock


class _HTTPConn(_BoundedConnect, HTTPConnection):
    pass


class _HTTPSConn(_BoundedConnect, HTTPSConnection):
    pass


class _HTTPPool(_AttachingPool, HTTPConnectionPool):
    ConnectionCls = _HTTPConn


class _HTTPSPool(_AttachingPool, HTTPSConnectionPool):
    ConnectionCls = _HTTPSConn


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """requests' adapter, with pools whose connections are attached to request deadlines."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if isinstance(manager, PoolManager) and not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = _POOLS
        return manager


def adopt_session(session: Any, origins: list[str]) -> None:
    """Bound the SDK's requests through a user's ``session`` to each origin
    (``scheme://host[:port]``) as a whole, keeping what the user configured.

    requests' default adapter there is replaced by a DeadlineAdapter. A custom adapter that
    is an HTTPAdapter on urllib3's standard pools (retries, pool sizes, TLS settings, a
    ``send`` override) is kept and given this module's pools, which act only inside an SDK
    request: the user's own requests through it run exactly as before. Any other adapter
    cannot be bounded from outside; a warning (once per adapter) says so, and its requests
    are bounded per socket read, and their bodies as a whole. Idempotent.
    """
    for origin in origins:
        adapter = session.get_adapter(origin + "/")
        if type(adapter) is HTTPAdapter:
            session.mount(origin + "/", DeadlineAdapter())
        elif not isinstance(adapter, DeadlineAdapter) and not _bound(adapter):
            _warn_unbounded(adapter, origin)


_STANDARD = {"http": HTTPConnectionPool, "https": HTTPSConnectionPool}
_warned: set[int] = set()  # id() of adapters already reported (held by their session)


def _bound(adapter: Any) -> bool:
    """Give an HTTPAdapter subclass's pool managers this module's pools; False when its
    pools are not urllib3's standard ones (they are then left alone)."""
    manager = getattr(adapter, "poolmanager", None)
    if not isinstance(adapter, HTTPAdapter) or not isinstance(manager, PoolManager):
        return False
    classes = dict(manager.pool_classes_by_scheme)
    if classes == _POOLS:
        return True
    if classes != _STANDARD:
        return False
    manager.pool_classes_by_scheme = _POOLS
    manager.clear()  # pools made before (idle sockets closed) are made again, as ours
    for proxy_manager in getattr(adapter, "proxy_manager", {}).values():
        if type(proxy_manager) is ProxyManager:
            proxy_manager.pool_classes_by_scheme = _POOLS
            proxy_manager.clear()
    if not isinstance(adapter.proxy_manager_for, _BoundProxies):
        adapter.proxy_manager_for = _BoundProxies(adapter.proxy_manager_for)  # type: ignore[method-assign]
    return True


class _BoundProxies:
    """Wraps an adapter's ``proxy_manager_for``: HTTP(S) proxy managers it makes get this
    module's pools (SOCKS managers have their own and are left alone)."""

    def __init__(self, make: Any) -> None:
        self._make = make

    def __call__(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = self._make(proxy, **proxy_kwargs)
        if type(manager) is ProxyManager and dict(manager.pool_classes_by_scheme) == _STANDARD:
            manager.pool_classes_by_scheme = _POOLS
        return manager


def _warn_unbounded(adapter: Any, origin: str) -> None:
    if id(adapter) in _warned:
        return
    _warned.add(id(adapter))
    _log.warning(
        "phaseflag: the session's adapter for %s (%s) does not use urllib3's standard "
        "connection pools, so request_timeout cannot bound its requests as a whole: each "
        "socket read is bounded, and a response body as a whole; mount requests' HTTPAdapter "
        "(or a subclass of it) there for whole-request deadlines",
        origin,
        type(adapter).__qualname__,
    )
