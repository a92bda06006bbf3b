"""Request deadlines: a ``phaseflag-watchdog`` thread aborts the socket of a request whose time
is up, so that ``request_timeout`` bounds a whole request (connect, headers, body), not each read.

urllib3 and httpx bound each socket operation only: a server trickling one byte a second never
trips a read timeout. So each request runs under a Deadline; the adapter below attaches the
pooled connection the request is sent on, and the watchdog shuts that socket down when the
deadline passes (or when the transport closes), which wakes the blocked read at once.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
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
from urllib3.poolmanager import PoolManager
from urllib3.util.connection import allowed_gai_family

from ._resolve import ResolveTimeout, resolve

__all__ = ["Deadline", "DeadlineAdapter", "Watchdog", "adopt_session"]

_active = threading.local()  # the Deadline of the request the current thread is sending


class Deadline:
    """The time by which one request must be complete; ``extend()`` moves it (streams).

    ``expired`` turns True when the watchdog aborted the request for lateness, ``aborted``
    when the transport was closed under it; ``seconds`` is the budget last granted.
    """

    __slots__ = ("_conns", "_watchdog", "aborted", "at", "expired", "seconds", "thread")

    def __init__(self, watchdog: Watchdog, seconds: float | None) -> None:
        self._watchdog = watchdog
        self.thread = threading.current_thread()  # the thread making the request
        self._conns: list[Any] = []
        self.seconds = seconds
        self.at = None if seconds is None else time.monotonic() + seconds
        self.expired = False
        self.aborted = False

    @property
    def over(self) -> bool:
        """True when the request was cut short (late or closed)."""
        return self.expired or self.aborted

    def remaining(self) -> float | None:
        """Seconds left (never below a millisecond, so a timeout stays valid), or None."""
        at = self.at
        return None if at is None else max(0.001, at - time.monotonic())

    def extend(self, seconds: float | None) -> None:
        """Grant ``seconds`` more from now (None: no limit) unless already cut short."""
        self._watchdog.reschedule(self, seconds)

    @contextlib.contextmanager
    def sending(self) -> Iterator[None]:
        """While the body of the ``with`` sends, the connection it uses is attached here."""
        previous = getattr(_active, "deadline", None)
        _active.deadline = self
        try:
            yield
        finally:
            _active.deadline = previous

    def attach(self, conn: Any) -> None:
        self._watchdog.attach(self, conn)

    def close(self) -> None:
        """The request is over: forget it (its connection may go back to the pool)."""
        self._watchdog.forget(self)


class Watchdog:
    """Cuts requests short: at their deadline, or all at once on ``close()``.

    Its thread starts when a connection is attached (tests that mock HTTP never start it)
    and ends once no request is open, or on ``close()``, which is final: later deadlines
    are born aborted.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._open: set[Deadline] = set()
        self._thread: threading.Thread | None = None
        self._closed = False

    def open(self, seconds: float | None) -> Deadline:
        deadline = Deadline(self, seconds)
        with self._cond:
            deadline.aborted = self._closed
            self._open.add(deadline)
            self._cond.notify()
        return deadline

    def attach(self, deadline: Deadline, conn: Any) -> None:
        with self._cond:
            deadline._conns.append(conn)
            if deadline.over:
                _shut(conn)
            elif self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name="phaseflag-watchdog", daemon=True
                )
                self._thread.start()

    def reschedule(self, deadline: Deadline, seconds: float | None) -> None:
        with self._cond:
            if deadline.over:
                return
            deadline.seconds = seconds
            deadline.at = None if seconds is None else time.monotonic() + seconds
            self._cond.notify()

    def forget(self, deadline: Deadline) -> None:
        with self._cond:
            self._open.discard(deadline)
            deadline._conns.clear()
            self._cond.notify()

    def abort(
        self,
        deadlines: list[Deadline] | None = None,
        *,
        thread: threading.Thread | None = None,
    ) -> None:
        """Cut these open requests (default: all, or all made by ``thread``) short now;
        the watchdog stays usable."""
        with self._cond:
            for deadline in list(self._open) if deadlines is None else deadlines:
                if thread is not None and deadline.thread is not thread:
                    continue
                deadline.aborted = True
                for conn in deadline._conns:
                    _shut(conn)

    def close(self, timeout: float = 1.0) -> None:
        """Abort every open request and end the thread; final and idempotent."""
        with self._cond:
            self._closed = True
            thread = self._thread
            self._cond.notify()
        self.abort()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        with self._cond:
            while not self._closed and self._open:
                now = time.monotonic()
                soonest: float | None = None
                for deadline in self._open:
                    at = deadline.at
                    if at is None or deadline.over:
                        continue
                    if at <= now:
                        deadline.expired = True
                        for conn in deadline._conns:
                            _shut(conn)
                    elif soonest is None or at < soonest:
                        soonest = at
                self._cond.wait(None if soonest is None else soonest - now)
            self._thread = None


def _shut(conn: Any) -> None:
    """Shut a connection's socket down, waking any thread blocked connecting, reading or
    writing it; an Event attached instead (a name lookup being waited for) is set."""
    if isinstance(conn, threading.Event):
        conn.set()
        return
    # http.client drops conn.sock once a "Connection: close" response is under way; the
    # socket connect() made stays open under the response until the response is closed.
    sock = getattr(conn, "sock", None) or getattr(conn, "connected_sock", None)
    if isinstance(sock, socket.socket):
        # socket.socket's own shutdown, also for an SSLSocket: the TLS layer's override
        # would drop its state under the reading thread; the peer sees a plain close.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _AttachingPool:
    """Mixin: attach each connection a request is sent on to that request's Deadline."""

    def _make_request(self, conn: Any, *args: Any, **kwargs: Any) -> Any:
        deadline = getattr(_active, "deadline", None)
        if deadline is not None:
            deadline.attach(conn)
        return super()._make_request(conn, *args, **kwargs)  # type: ignore[misc]


class _BoundedConnect(HTTPConnection):
    """Resolve and connect within the request's Deadline (see ``_resolve``), and keep the
    socket for the watchdog (see ``_shut``), which can then cut a connect short as well as
    a read. Outside an SDK request (a user's own, on a session the SDK adopted) urllib3's
    own connect runs unchanged."""

    connected_sock: Any = None

    def _new_conn(self) -> socket.socket:
        deadline: Deadline | None = getattr(_active, "deadline", None)
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
    """Mount a DeadlineAdapter for each origin (``scheme://host[:port]``) on which ``session``
    has requests' default adapter.

    A session passed by the user keeps its own custom adapters (their requests are then
    bounded per read, the body as a whole); its cookies, certificates and proxies stay.
    """
    for origin in origins:
        if type(session.get_adapter(origin + "/")) is HTTPAdapter:
            session.mount(origin + "/", DeadlineAdapter())
