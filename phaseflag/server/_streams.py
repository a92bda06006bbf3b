"""``GET /api/v1/sdk/stream``: the served ruleset now and on every change, pings between.

Streams are one task each, parked on one future they all share; a change (or the ping
timer) resolves it, so a change wakes 10,000 streams for the cost of one callback each.
``notify_change`` and ``stop`` may be called from any thread once ``bind`` has given
the streams their event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Final

from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from ._access import ApiKeys, access, trusted
from ._json import json_response
from ._metrics import Metrics
from ._watch import Snapshot

if TYPE_CHECKING:
    from ._app import Source

__all__ = ["STREAM_PATH", "StreamEndpoint", "Streams"]

_log = logging.getLogger("phaseflag")

STREAM_PATH: Final = "/api/v1/sdk/stream"
_SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    (b"connection", b"close"),
]


class Streams:
    """The open streams of one server: their shared wake-up future and their count."""

    def __init__(self, source: Source, metrics: Metrics, ping_interval: float) -> None:
        self._source = source
        self._metrics = metrics
        self._ping_interval = ping_interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Future[str] | None = None
        self._stopping = False
        #: Streams open now.
        self.clients = 0

    # -- lifecycle (any thread) ----------------------------------------------------------------

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run on ``loop`` (called in the loop's thread before serving)."""
        self._loop = loop
        self._changed = loop.create_future()
        loop.call_later(self._ping_interval, self._ping)

    def _ping(self) -> None:
        """Every ``ping_interval``: wake every stream to send a ping."""
        if self._stopping or self._loop is None or self._loop.is_closed():
            return
        self._wake("ping")
        self._loop.call_later(self._ping_interval, self._ping)

    def notify_change(self) -> None:
        """Wake every stream to send the current snapshot (thread-safe)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._wake)

    def stop(self) -> None:
        """End every stream (thread-safe)."""
        self._stopping = True
        self.notify_change()

    def _wake(self, reason: str = "change") -> None:
        assert self._loop is not None
        old, self._changed = self._changed, self._loop.create_future()
        if old is not None and not old.done():
            old.set_result(reason)

    # -- one stream ----------------------------------------------------------------------------

    async def stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one authorized stream until the client leaves or the server stops.

        A disconnect cancels the task (a second, parked task watches ``receive``).
        """
        assert self._loop is not None
        task = asyncio.current_task()
        assert task is not None
        self.clients += 1
        self._metrics.count_request(STREAM_PATH, 200)
        if _log.isEnabledFor(logging.DEBUG):
            access(scope, 200, "-")
        closed = False

        def on_gone(_: object) -> None:
            nonlocal closed
            closed = True
            task.cancel()

        gone = self._loop.create_task(_until_disconnect(receive))
        gone.add_done_callback(on_gone)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            await self._frames(send)
        except asyncio.CancelledError:
            if not closed:
                raise
            return  # the client went away
        finally:
            self.clients -= 1
            gone.remove_done_callback(on_gone)
            gone.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _frames(self, send: Send) -> None:
        """Send the snapshot whenever it is new, and a ping when woken for one."""
        sent: Snapshot | None = None
        woken_by = "change"
        while not self._stopping:
            changed = self._changed
            assert changed is not None
            snapshot = self._source.snapshot
            if snapshot is not sent:
                sent = snapshot
                frame = snapshot.sse_frame
            elif woken_by == "ping":
                frame = b'event: ping\ndata: {"time":%d}\n\n' % int(time.time() * 1000)
            else:
                frame = b""
            if frame:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            # shield: cancelling this task (a disconnect) must not cancel the shared future.
            woken_by = await asyncio.shield(changed)


class StreamEndpoint:
    """The ASGI app of the stream route: method and key checks, then ``Streams.stream``."""

    def __init__(self, streams: Streams, keys: ApiKeys, metrics: Metrics) -> None:
        self._streams = streams
        self._keys = keys
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        if scope["method"] != "GET":
            response = json_response(
                405, {"error": "method_not_allowed", "message": "use GET"}, {"Allow": "GET"}
            )
        elif problem := self._keys.check(request.headers):
            response = self._keys.unauthorized(problem)
        else:
            trusted(scope)
            await self._streams.stream(scope, receive, send)
            return
        self._metrics.count_request(STREAM_PATH, response.status_code)
        if _log.isEnabledFor(logging.DEBUG):
            access(scope, response.status_code, len(response.body))
        await response(scope, receive, send)


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
