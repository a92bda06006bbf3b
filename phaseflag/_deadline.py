"""Request deadlines: a ``phaseflag-watchdog`` thread aborts the socket of a request whose time
is up, so that ``request_timeout`` bounds a whole request (connect, headers, body), not each read.

urllib3 and httpx bound each socket operation only: a server trickling one byte a second never
trips a read timeout. So each request runs under a Deadline; the connection pools of
``_pools`` attach the connection the request is sent on (and the name lookup it waits for),
and the watchdog shuts that socket down when the deadline passes (or when the transport
closes), which wakes the blocked connect, read or write at once.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["Deadline", "Watchdog", "active"]

_active = threading.local()  # the Deadline of the request the current thread is sending


class Deadline:
    """The time by which one request must be complete; ``extend()`` moves it (streams).

    ``expired`` turns True when the watchdog aborted the request for lateness, ``aborted``
    when the transport was closed under it; ``seconds`` is the budget last granted.
    """

    __slots__ = ("_conns", "_cut", "_watchdog", "aborted", "at", "expired", "seconds", "thread")

    def __init__(self, watchdog: Watchdog, seconds: float | None) -> None:
        self._watchdog = watchdog
        self.thread = threading.current_thread()  # the thread making the request
        self._conns: list[Any] = []
        self.seconds = seconds
        self.at = None if seconds is None else time.monotonic() + seconds
        self.expired = False
        self._cut = False  # the watchdog has shut its connections for lateness
        self.aborted = False

    @property
    def over(self) -> bool:
        """True when the request was cut short (closed, or late: the watchdog found it so,
        or its time is up, for a request whose connection the watchdog never saw)."""
        if not (self.expired or self.aborted):
            at = self.at
            if at is not None and time.monotonic() >= at:
                self.expired = True
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
            if any(known is conn for known in deadline._conns):
                return
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
                    if at is None or deadline._cut or deadline.aborted:
                        continue
                    if at <= now:
                        deadline.expired = deadline._cut = True
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


def active() -> Deadline | None:
    """The Deadline of the request the current thread is sending, if any (see ``sending``)."""
    deadline: Deadline | None = getattr(_active, "deadline", None)
    return deadline
