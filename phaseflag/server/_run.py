"""``run``: ``phaseflag serve`` in the foreground, in one process or ``workers`` forked ones."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

from ._server import PhaseFlagServer, bind

__all__ = ["run"]

_log = logging.getLogger("phaseflag")


def _quiet_uvicorn() -> None:
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


def run(
    ruleset_path: str | None,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    **options: Any,
) -> None:
    """Serve until KeyboardInterrupt or SIGTERM (``phaseflag serve``).

    ``options`` are PhaseFlagServer's. With ``workers > 1`` the socket is bound here and
    that many processes are forked, each serving it with its own watcher (or relay
    client) and, when ``events_out`` is set, its own events file ``FILE.{n}``; a worker
    that dies is restarted. Logs the URL at INFO (configuring basic logging to stderr
    when nothing else has). Raises like ``PhaseFlagServer.start()`` when it cannot start.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    _quiet_uvicorn()
    factory: Any = options.pop("source_factory") if "source_factory" in options else None
    if workers <= 1:
        if factory is not None:
            options["source"] = factory()
        _serve_here(PhaseFlagServer(ruleset_path, host=host, port=port, **options))
        return
    sock = bind(host, port)
    # Checked once here, so a bad file or option fails the command, not N workers.
    if factory is None:
        PhaseFlagServer(ruleset_path, host=host, port=port, sock=sock, **options)
    children: dict[int, int] = {}
    stopping = threading.Event()

    def spawn(number: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                worker_options = dict(options)
                if factory is not None:
                    worker_options["source"] = factory()
                if worker_options.get("events_out"):
                    worker_options["events_out"] = f"{worker_options['events_out']}.{number}"
                _serve_here(
                    PhaseFlagServer(ruleset_path, host=host, port=port, sock=sock, **worker_options)
                )
            except BaseException as exc:
                print(f"error: worker {number}: {exc}", file=sys.stderr)
                code = 2
            finally:
                os._exit(code)
        children[pid] = number

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        for number in range(workers):
            spawn(number)
        _log.info(
            "phaseflag serve: %d workers on http://%s:%d/api/v1",
            workers,
            host,
            sock.getsockname()[1],
        )
        while not stopping.is_set():
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                stopping.wait(0.2)
                continue
            number = children.pop(pid, -1)
            if number >= 0 and not stopping.is_set():
                _log.error("phaseflag serve: worker %d exited (%d); restarting it", number, status)
                stopping.wait(0.5)  # a worker failing at start must not spin
                spawn(number)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in list(children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        sock.close()


def _serve_here(server: PhaseFlagServer) -> None:
    done = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            done.set()

        previous = signal.signal(signal.SIGTERM, on_sigterm)
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
