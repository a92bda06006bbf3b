"""PhaseFlagServer: the lifecycle of ``phaseflag serve`` (event loop thread, socket, files)."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import uvicorn

from .._errors import ConfigError
from .._model import Ruleset
from ._app import App, Source
from ._eventlog import EventLog
from ._limits import Limits
from ._metrics import Metrics
from ._protocol import Guard, guarded_protocol
from ._watch import RulesetWatcher

__all__ = ["PhaseFlagServer", "bind"]

_log = logging.getLogger("phaseflag")


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in the [server] extra
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def bind(host: str, port: int, backlog: int = 4096) -> socket.socket:
    """A listening TCP socket (SO_REUSEADDR); ConfigError naming the problem when it fails."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=backlog)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                "port",
                f"{host}:{port} is already in use",
                "stop what holds it or pick another with --port",
            ) from None
        if exc.errno == errno.EACCES:
            raise ConfigError(
                "port", f"not allowed to listen on {host}:{port}", "use a port above 1023"
            ) from None
        raise ConfigError(
            "host", f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None


class PhaseFlagServer:
    """A PhaseFlag-compatible API (and OFREP) server over one ruleset file, on uvicorn.

    Serves ``/api/v1/sdk/ruleset``, ``/sdk/stream``, ``/sdk/events``, ``/sdk/evaluate``,
    ``/ofrep/v1/evaluate/flags[/{key}]``, ``/healthz``, ``/metrics`` and, with ``ui=True``,
    the dashboard at ``/ui``. The file is polled every ``poll_interval`` seconds; a valid
    change is served (and pushed to every stream) within one poll, an invalid one is
    refused with an error log while the last good version stays. ``api_keys`` empty
    means an open server (a warning is logged; the ``phaseflag serve`` command refuses
    that unless ``--no-auth``).

    ``limits`` bounds clients and requests (Limits). ``events_out`` is a JSON-lines file
    rotated at ``events_max_bytes`` keeping ``events_keep`` old files. ``source`` replaces
    the file with another ruleset source (relay mode). ``sock`` is a listening socket to
    serve on instead of binding ``host``/``port`` (``--workers``). The constructor only
    checks and assigns: ConfigError for a malformed API key (its text is never shown).

    ``start()`` loads the ruleset (ConfigError when it or ``events_out`` cannot be opened or
    the port is taken, RulesetError when it is invalid) and serves in the
    ``phaseflag-server`` thread (one asyncio loop for every connection) while
    ``phaseflag-server-watch`` polls the file. ``stop()`` ends every stream and connection
    and joins both; it is idempotent. Both are safe from any thread; use as a context manager.
    """

    def __init__(
        self,
        ruleset_path: str | os.PathLike[str] | None,
        host: str = "127.0.0.1",
        port: int = 0,
        api_keys: Sequence[str] = (),
        events_out: str | None = None,
        *,
        poll_interval: float = 0.2,
        ping_interval: float = 15.0,
        limits: Limits | None = None,
        events_max_bytes: int | None = None,
        events_keep: int = 5,
        ui: bool = False,
        source: Any = None,
        sock: socket.socket | None = None,
    ) -> None:
        if isinstance(api_keys, str):
            raise ConfigError("api_keys", "must be a sequence of keys, not one string")
        for index, key in enumerate(api_keys):
            if not isinstance(key, str) or not key.strip() or key != key.strip():
                raise ConfigError(
                    "api_keys", f"key #{index + 1} is empty, not a str, or has spaces around it"
                )
        if ruleset_path is None and source is None:
            raise ConfigError("ruleset_path", "give a ruleset file (or an upstream source)")
        self.ruleset_path = None if ruleset_path is None else os.fspath(ruleset_path)
        self.host = host
        self._requested_port = port
        self._api_keys = tuple(api_keys)
        self._events_out = events_out
        self._events_max_bytes = events_max_bytes
        self._events_keep = events_keep
        self._poll_interval = poll_interval
        self._ping_interval = ping_interval
        self._limits = limits or Limits()
        self._ui = ui
        self._given_source = source
        self._given_sock = sock
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._bound_port = 0
        self._source: Any = None
        self._app: App | None = None
        self._events: EventLog | None = None
        self._thread: threading.Thread | None = None
        self._uvicorn: uvicorn.Server | None = None

    def __repr__(self) -> str:
        keys = f"{len(self._api_keys)} keys" if self._api_keys else "open"
        return f"PhaseFlagServer({self.ruleset_path!r}, url={self.url!r}, {keys})"

    def __enter__(self) -> PhaseFlagServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (the one picked by the OS when ``port=0``), or the requested one."""
        return self._bound_port or self._requested_port

    @property
    def url(self) -> str:
        """The SDK ``base_url``, e.g. ``http://127.0.0.1:54321/api/v1``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/api/v1"

    @property
    def ruleset(self) -> Ruleset:
        """The ruleset being served; raises RuntimeError before ``start()``."""
        if self._source is None:
            raise RuntimeError("PhaseFlagServer is not started")
        ruleset: Ruleset = self._source.snapshot.ruleset
        return ruleset

    @property
    def etag(self) -> str:
        """The ETag of the ruleset being served."""
        if self._source is None:
            raise RuntimeError("PhaseFlagServer is not started")
        etag: str = self._source.snapshot.etag
        return etag

    @property
    def app(self) -> App:
        """The routes (for the dashboard's counts and tests); RuntimeError before start()."""
        if self._app is None:
            raise RuntimeError("PhaseFlagServer is not started")
        return self._app

    def start(self) -> None:
        """Load the ruleset, bind, and serve in background threads; a no-op when running."""
        with self._lock:
            if self._thread is not None:
                return
            events = EventLog(
                self._events_out, max_bytes=self._events_max_bytes, keep=self._events_keep
            )
            source: Source
            if self._given_source is not None:
                source = self._given_source
                source.load()
            else:
                assert self.ruleset_path is not None
                source = watcher = RulesetWatcher(self.ruleset_path, interval=self._poll_interval)
                watcher.load()
            metrics = Metrics()
            app = App(
                source,
                events,
                metrics,
                api_keys=self._api_keys,
                ping_interval=self._ping_interval,
                ui=self._ui,
            )
            events.open()
            try:
                sock = self._given_sock or bind(self.host, self._requested_port)
            except BaseException:
                events.close()
                raise
            source.on_change = app.notify_change
            forward = getattr(source, "forward", None)
            if forward is not None:
                app.forward_to(forward, source.forward_stats)  # type: ignore[attr-defined]
            guard = Guard(self._limits, metrics.count_refused, app.direct_routes())
            config = uvicorn.Config(
                app.asgi,
                http=guarded_protocol(guard),
                lifespan="off",
                log_config=None,
                access_log=False,
                server_header=False,
                timeout_keep_alive=int(max(1, self._limits.idle_timeout)),
                timeout_graceful_shutdown=1,
                backlog=4096,
                ws="none",
                interface="asgi3",
                proxy_headers=False,
            )
            server = uvicorn.Server(config)
            ready = threading.Event()
            self._events, self._source, self._app = events, source, app
            self._sock, self._uvicorn = sock, server
            self._bound_port = int(sock.getsockname()[1])
            self._thread = threading.Thread(
                target=self._serve,
                args=(server, app, sock, ready),
                name="phaseflag-server",
                daemon=True,
            )
            self._thread.start()
            ready.wait(10)
            source.start()
        if not self._api_keys:
            _log.warning(
                "phaseflag serve: no API keys configured: anyone who can reach %s can read "
                "the flags and post events",
                self.url,
            )
        _log.info("phaseflag serve: listening on %s", self.url)

    @staticmethod
    def _serve(
        server: uvicorn.Server, app: App, sock: socket.socket, ready: threading.Event
    ) -> None:
        loop = _new_loop()
        asyncio.set_event_loop(loop)

        async def main() -> None:
            app.bind(asyncio.get_running_loop())
            task = asyncio.ensure_future(server.serve(sockets=[sock]))
            while not server.started and not task.done():
                await asyncio.sleep(0.002)
            ready.set()
            await task

        try:
            loop.run_until_complete(main())
        except Exception:
            _log.exception("phaseflag serve: the server loop failed")
        finally:
            ready.set()
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    def reload(self) -> bool:
        """Re-read the ruleset file now; True when a new version is being served.

        An invalid file is refused (logged), exactly as when the poller finds it.
        """
        if self._source is None:
            raise RuntimeError("PhaseFlagServer is not started")
        changed: bool = self._source.check(force=True)
        return changed

    def stop(self, timeout: float = 2.0) -> None:
        """Stop accepting, end every stream and connection, join all threads; idempotent."""
        with self._lock:
            thread, server = self._thread, self._uvicorn
            self._thread = None
            if thread is None or server is None:
                return
            assert self._app is not None and self._events is not None
            self._source.stop(timeout)
            self._app.stop()
            server.should_exit = True
            thread.join(timeout)
            if thread.is_alive():
                server.force_exit = True
                thread.join(timeout)
            if self._sock is not None:
                self._sock.close()
            self._events.close()
        _log.info("phaseflag serve: stopped")
