"""A named daemon thread that runs a step function on a schedule and stops promptly."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["Loop"]

_log = logging.getLogger("phaseflag")

# stop() repeats its abort this often while it waits, in case the thread began a new
# request just after the previous abort.
_ABORT_EVERY = 0.05


class Loop:
    """Run ``step()`` repeatedly in one daemon thread named ``phaseflag-<name>``.

    ``step`` returns the number of seconds to wait before the next run. The wait is
    an Event wait, so ``wake()`` runs the step at once and ``stop()`` ends the
    thread within one step's duration (never a whole interval). An exception in
    ``step`` is logged and the loop goes on after ``error_delay`` seconds.
    """

    def __init__(
        self,
        name: str,
        step: Callable[[], float],
        *,
        error_delay: float = 1.0,
    ) -> None:
        self.name = f"phaseflag-{name}"
        self._step = step
        self._error_delay = error_delay
        self._stopping = threading.Event()
        self._wakeup = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """True while the thread is alive and has not been asked to stop."""
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stopping.is_set()

    @property
    def stopping(self) -> bool:
        """True once ``stop()`` has been called; steps may check it to cut work short."""
        return self._stopping.is_set()

    def start(self) -> None:
        """Start the thread; a no-op while it runs."""
        if self.running:
            return
        self._stopping = threading.Event()
        self._wakeup = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Run the next step now instead of at the end of the current wait."""
        self._wakeup.set()

    def stop(
        self,
        timeout: float = 1.0,
        *,
        abort: Callable[[threading.Thread | None], None] | None = None,
    ) -> bool:
        """Ask the thread to end and join it; returns True when it has ended.

        ``abort(thread)`` is called (repeatedly, while waiting) to cut short whatever I/O
        the step is blocked in - the transport's abort of that thread's requests.
        """
        self._stopping.set()
        self._wakeup.set()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        if abort is None:
            thread.join(timeout)
            return not thread.is_alive()
        deadline = time.monotonic() + timeout
        while True:
            abort(thread)
            remaining = deadline - time.monotonic()
            thread.join(max(0.0, min(_ABORT_EVERY, remaining)))
            if not thread.is_alive() or remaining <= 0:
                return not thread.is_alive()

    def reset_after_fork(self) -> None:
        """Forget the parent's thread (it does not exist in a forked child)."""
        self._thread = None
        self._stopping = threading.Event()
        self._wakeup = threading.Event()

    def _run(self) -> None:
        stopping, wakeup = self._stopping, self._wakeup
        while not stopping.is_set():
            try:
                delay = self._step()
            except Exception:
                _log.exception("phaseflag: %s step failed; retrying", self.name)
                delay = self._error_delay
            if stopping.is_set():
                break
            wakeup.wait(max(0.0, delay))
            wakeup.clear()
