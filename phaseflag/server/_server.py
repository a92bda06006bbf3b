"""PhaseFlagServer: the lifecycle of ``phaseflag serve`` (threads, sockets, files) and ``run``."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Sequence
from types import FrameType, TracebackType

from .._errors import ConfigError
from .._model import Ruleset
from ._app import App, EventLog
from ._http import HTTPServer, Limits
from ._watch import RulesetWatcher

__all__ = ["PhaseFlagServer", "run"]

_log = logging.getLogger("phaseflag")


class PhaseFlagServer:
    """A PhaseFlag-compatible API (and OFREP) server over one ruleset file.

    Serves ``/api/v1/sdk/ruleset``, ``/sdk/stream``, ``/sdk/events``, ``/sdk/evaluate``,
    ``/ofrep/v1/evaluate/flags[/{key}]`` and ``/healthz``. The file is polled every
    ``poll_interval`` seconds; a valid change is served (and pushed to stream clients)
    within one poll, an invalid one is refused with an error log while the last good
    version stays. ``api_keys`` empty means an open server (a warning is logged).

    ``poll_interval`` is the file poll period, ``ping_interval`` the seconds between
    keep-alive pings on an idle stream, ``limits`` the request limits (1 MiB bodies,
    16 KiB headers, ...). The constructor only checks and assigns: ConfigError for a
    malformed API key (its text is never shown).

    ``start()`` loads the file (raising ConfigError when it or ``events_out`` cannot be
    opened, RulesetError when it is invalid), binds (OSError when the port is taken) and
    starts the ``phaseflag-server`` accept thread, the ``phaseflag-server-watch`` poller
    and one ``phaseflag-server-conn`` daemon thread per connection. ``stop()`` closes
    every connection and joins all of them; it is idempotent. Both are safe to call from
    any thread; use as a context manager.
    """

    def __init__(
        self,
        ruleset_path: str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int = 0,
        api_keys: Sequence[str] = (),
        events_out: str | None = None,
        *,
        poll_interval: float = 0.2,
        ping_interval: float = 15.0,
        limits: Limits | None = None,
    ) -> None:
        if isinstance(api_keys, str):
            raise ConfigError("api_keys", "must be a sequence of keys, not one string")
        for index, key in enumerate(api_keys):
            if not isinstance(key, str) or not key.strip() or key != key.strip():
                raise ConfigError(
                    "api_keys", f"key #{index + 1} is empty, not a str, or has spaces around it"
                )
        self.ruleset_path = os.fspath(ruleset_path)
        self.host = host
        self._requested_port = port
        self._api_keys = tuple(api_keys)
        self._events_out = events_out
        self._poll_interval = poll_interval
        self._ping_interval = ping_interval
        self._limits = limits or Limits()
        self._lock = threading.Lock()
        self._httpd: HTTPServer | None = None
        self._watcher: RulesetWatcher | None = None
        self._app: App | None = None
        self._events: EventLog | None = None
        self._thread: threading.Thread | None = None

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
        httpd = self._httpd
        return self._requested_port if httpd is None else int(httpd.server_address[1])

    @property
    def url(self) -> str:
        """The SDK ``base_url``, e.g. ``http://127.0.0.1:54321/api/v1``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/api/v1"

    @property
    def ruleset(self) -> Ruleset:
        """The ruleset being served; raises RuntimeError before ``start()``."""
        if self._watcher is None:
            raise RuntimeError("PhaseFlagServer is not started")
        return self._watcher.snapshot.ruleset

    @property
    def etag(self) -> str:
        """The ETag of the ruleset being served."""
        if self._watcher is None:
            raise RuntimeError("PhaseFlagServer is not started")
        return self._watcher.snapshot.etag

    def start(self) -> None:
        """Load the ruleset, bind, and serve in background threads; a no-op when running."""
        with self._lock:
            if self._thread is not None:
                return
            events = EventLog(self._events_out)
            watcher = RulesetWatcher(self.ruleset_path, interval=self._poll_interval)
            watcher.load()
            app = App(watcher, events, api_keys=self._api_keys, ping_interval=self._ping_interval)
            watcher.on_change = app.notify_change
            events.open()
            try:
                httpd = HTTPServer((self.host, self._requested_port), app, self._limits)
            except BaseException:
                events.close()
                raise
            self._events, self._watcher, self._app, self._httpd = events, watcher, app, httpd
            self._thread = threading.Thread(
                target=httpd.serve, name="phaseflag-server", daemon=True
            )
            self._thread.start()
            watcher.start()
        if not self._api_keys:
            _log.warning(
                "phaseflag serve: no API keys configured: anyone who can reach %s can read "
                "the flags and post events",
                self.url,
            )
        _log.info("phaseflag serve: listening on %s", self.url)

    def reload(self) -> bool:
        """Re-read the ruleset file now; True when a new version is being served.

        An invalid file is refused (logged), exactly as when the poller finds it.
        """
        if self._watcher is None:
            raise RuntimeError("PhaseFlagServer is not started")
        return self._watcher.check(force=True)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop accepting, end every stream and connection, join all threads; idempotent."""
        with self._lock:
            thread, httpd = self._thread, self._httpd
            self._thread = None
            if thread is None or httpd is None:
                return
            assert self._watcher is not None and self._app is not None
            assert self._events is not None
            self._watcher.stop(timeout)
            self._app.stop()
            httpd.stop_serving(timeout)
            thread.join(timeout)
            httpd.server_close()
            httpd.close_connections(timeout)
            self._events.close()
        _log.info("phaseflag serve: stopped")


def run(
    ruleset_path: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    api_keys: Sequence[str] = (),
    events_out: str | None = None,
) -> None:
    """Serve ``ruleset_path`` until KeyboardInterrupt or SIGTERM (``phaseflag serve``).

    Logs the URL at INFO (configuring basic logging to stderr when nothing else has).
    Raises like ``PhaseFlagServer.start()`` when it cannot start.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    done = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            done.set()

        previous = signal.signal(signal.SIGTERM, on_sigterm)
    server = PhaseFlagServer(
        ruleset_path, host=host, port=port, api_keys=api_keys, events_out=events_out
    )
    try:
        server.start()
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
