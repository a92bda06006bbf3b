"""EventLog: received events appended to a JSON-lines file, rotated by size."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Sequence
from typing import IO, Any

from .._errors import ConfigError

__all__ = ["EventLog"]


class EventLog:
    """Appends events, one compact JSON object per line, to a file (or only counts them).

    A batch is serialised first, then written and flushed in one piece under one lock: a
    batch that cannot be serialised or written leaves nothing behind (a partial write is
    truncated away), so a batch answered with an error never reaches the file. When the
    file would grow past ``max_bytes`` it is rotated first: ``FILE`` becomes ``FILE.1``,
    ``FILE.1`` becomes ``FILE.2``, ... and ``FILE.{keep}`` is deleted (``keep=0``: the full
    file is simply truncated). ``max_bytes=None`` never rotates.
    """

    def __init__(self, path: str | None, *, max_bytes: int | None = None, keep: int = 5) -> None:
        if max_bytes is not None and max_bytes < 1:
            raise ConfigError("events_max_bytes", "must be a positive number of bytes")
        if keep < 0:
            raise ConfigError("events_keep", "must be 0 or more")
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self._size = 0
        self.received = 0
        self.written = 0
        self.rotations = 0

    @property
    def count(self) -> int:
        """Events received (and written when there is a file)."""
        return self.received

    def open(self) -> None:
        """Open the file for appending; raises ConfigError when it cannot be."""
        if self.path is None:
            return
        if os.path.isdir(self.path):
            raise ConfigError("events_out", f"{self.path!r} is a directory; give a file path")
        try:
            self._file = open(self.path, "ab")  # noqa: SIM115 - held open until close()
        except OSError as exc:
            raise ConfigError(
                "events_out", f"cannot open {self.path!r} for appending ({exc.strerror})"
            ) from None
        self._size = self._file.tell()

    def append(self, events: Sequence[Any]) -> None:
        """Write every event of one batch, or none of them.

        Raises ValueError when an event is not serialisable and OSError when the file
        cannot be written (disk full): in both cases nothing of the batch stays.
        """
        lines = b"".join(
            json.dumps(event, separators=(",", ":"), allow_nan=False).encode("utf-8") + b"\n"
            for event in events
        )
        with self._lock:
            handle = self._file
            if handle is not None:
                if (
                    self.max_bytes is not None
                    and self._size
                    and self._size + len(lines) > (self.max_bytes)
                ):
                    handle = self._rotate()
                start = self._size
                try:
                    handle.write(lines)
                    handle.flush()
                except OSError:
                    self._undo(handle, start)
                    raise
                self._size = start + len(lines)
                self.written += len(events)
            self.received += len(events)

    def close(self) -> None:
        """Flush and close the file."""
        with self._lock:
            if self._file is not None:
                with contextlib.suppress(OSError):
                    self._file.close()
                self._file = None

    def _undo(self, handle: IO[bytes], start: int) -> None:
        """Drop what a failed write left (buffered or on disk)."""
        assert self.path is not None
        with contextlib.suppress(OSError):  # the buffered rest is discarded with the handle
            handle.close()
        with contextlib.suppress(OSError):
            os.truncate(self.path, start)
        self._file = open(self.path, "ab")  # noqa: SIM115
        self._size = self._file.tell()

    def _rotate(self) -> IO[bytes]:
        assert self._file is not None and self.path is not None
        self._file.close()
        path = self.path
        if self.keep == 0:
            os.truncate(path, 0)
        else:
            for index in range(self.keep - 1, 0, -1):
                older = f"{path}.{index}"
                if os.path.exists(older):
                    os.replace(older, f"{path}.{index + 1}")
            os.replace(path, f"{path}.1")
        self._file = open(path, "ab")  # noqa: SIM115
        self._size = 0
        self.rotations += 1
        return self._file
