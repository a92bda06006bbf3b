"""The served ruleset: an immutable snapshot with pre-built bodies, kept fresh from a file.

A new snapshot is built (compact JSON, gzip, ETag, SSE frame) once per valid change, so
requests only pick bytes off it; an invalid edit is refused and the last good one stays.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from .._compile import load_ruleset
from .._errors import ConfigError, RulesetError
from .._loop import Loop
from .._model import Ruleset
from .._schema import MAX_DOCUMENT_BYTES

__all__ = ["RulesetWatcher", "Snapshot", "build_snapshot", "report_invalid_flags"]

_log = logging.getLogger("phaseflag")

#: A file whose mtime is this recent may change again within the same mtime tick
#: (coarse-timestamp filesystems), so it is re-read and hashed until it is older.
_RACY_NS: Final = 2_000_000_000


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One served ruleset version, with every response body it needs already built.

    ``body`` is the validated document as compact UTF-8 JSON, ``gzipped`` the same
    compressed, ``etag`` a strong ETag (quoted) of ``body``'s SHA-256, ``sse_frame``
    the complete ``event: ruleset`` Server-Sent Event. Shared read-only between threads.
    """

    ruleset: Ruleset
    body: bytes
    gzipped: bytes
    etag: str
    sse_frame: bytes
    loaded_at: float
    #: ``(b"etag", etag)``, the ETag as an ASGI response header.
    etag_header: tuple[bytes, bytes] = (b"etag", b"")

    @property
    def version(self) -> int:
        """The ruleset's ``version``."""
        return self.ruleset.version


def build_snapshot(ruleset: Ruleset) -> Snapshot:
    """Serialise ``ruleset.source`` once into every shape the server sends."""
    try:
        text = json.dumps(ruleset.source, ensure_ascii=False, separators=(",", ":"))
        body = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate escape in a string: keep it escaped
        body = json.dumps(ruleset.source, separators=(",", ":")).encode("ascii")
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    frame = b"id: %d\nevent: ruleset\ndata: %s\n\n" % (ruleset.version, body)
    return Snapshot(
        ruleset=ruleset,
        body=body,
        gzipped=gzip.compress(body, compresslevel=6, mtime=0),
        etag=etag,
        sse_frame=frame,
        loaded_at=time.time(),
        etag_header=(b"etag", etag.encode("ascii")),
    )


def report_invalid_flags(snapshot: Snapshot) -> None:
    """Log the flags a served ruleset isolates as INVALID_FLAG (one line, then each)."""
    problems = snapshot.ruleset.problems
    if not problems:
        return
    _log.warning(
        "phaseflag serve: ruleset version %d has %d invalid flag(s), served as INVALID_FLAG "
        "(phaseflag validate shows them): %s",
        snapshot.version,
        len(problems),
        "; ".join(f"{where}: {message}" for where, message in problems[:20]),
    )


class RulesetWatcher:
    """Serve the newest valid ruleset of one file, polling it in ``phaseflag-server-watch``.

    ``load()`` reads the file once and raises ConfigError (unreadable) or RulesetError
    (invalid); after that, ``check()`` (called every ``interval`` seconds by the thread, or
    directly) re-reads the file when its size, mtime or inode changed, or while its mtime is
    too recent to trust, and applies it when its bytes differ. Contents that do not load
    are refused only once the file has settled (its mtime 2 s old), since a write in place
    can be read half-done; a refused version is logged once and the last good snapshot
    keeps being served. ``on_change`` (settable) runs in
    the thread that applied a new snapshot. ``snapshot`` is a plain reference read: lock-free.
    """

    def __init__(
        self,
        path: str,
        *,
        interval: float = 0.2,
        on_change: Callable[[Snapshot], None] | None = None,
    ) -> None:
        self.path = path
        self._interval = interval
        self.on_change = on_change
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._stat: tuple[int, int, int] | None = None
        self._racy = False
        self._good_digest = b""  # SHA-256 of the raw bytes being served
        self._bad_digest = b""  # ... and of the last refused ones (logged once)
        self._last_error: str | None = None
        self.reloads = 0
        self.reload_errors = 0
        self._loop = Loop("server-watch", self._step)

    @property
    def description(self) -> str:
        """Where the ruleset comes from, for ``/healthz``."""
        return f"file {self.path}"

    @property
    def snapshot(self) -> Snapshot:
        """The snapshot being served; ``load()`` must have succeeded."""
        snapshot = self._snapshot
        if snapshot is None:
            raise RuntimeError("RulesetWatcher.load() has not succeeded yet")
        return snapshot

    @property
    def last_error(self) -> str | None:
        """Why the file's current contents are not served (None when they are)."""
        return self._last_error

    def load(self) -> Snapshot:
        """Read and apply the file now; raises ConfigError or RulesetError."""
        if os.path.isdir(self.path):
            raise ConfigError(
                "ruleset_path", f"{self.path!r} is a directory", "give the ruleset's JSON file"
            )
        with self._lock:
            try:
                with open(self.path, "rb") as handle:
                    stat = self._stat_of(os.fstat(handle.fileno()))
                    raw = handle.read(MAX_DOCUMENT_BYTES + 1)
            except OSError as exc:
                raise ConfigError(
                    "ruleset_path",
                    f"cannot read {self.path!r}: {exc.strerror or exc}",
                    "give an existing, readable JSON file",
                ) from None
            snapshot = build_snapshot(load_ruleset(raw))
            self._snapshot = snapshot
            self._remember(stat)
            self._good_digest = hashlib.sha256(raw).digest()
        _log.info(
            "phaseflag serve: loaded ruleset version %d (%d flags) from %s",
            snapshot.version,
            len(snapshot.ruleset.flags),
            self.path,
        )
        report_invalid_flags(snapshot)
        return snapshot

    def start(self) -> None:
        """Start polling in the ``phaseflag-server-watch`` thread."""
        self._loop.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop polling and join the thread."""
        self._loop.stop(timeout)

    def check(self, *, force: bool = False) -> bool:
        """Re-read the file if it may have changed (always when ``force``).

        Returns True when a new snapshot was applied. Never raises for a bad file.
        """
        with self._lock:
            stat = self._stat_file()
            if stat is not None and not force and stat == self._stat and not self._racy:
                return False
            raw = None if stat is None else self._read()
            if stat is None or raw is None:
                self._stat = None
                self._bad_digest = b""
                self._refuse(f"cannot read {self.path!r} (missing or unreadable)")
                return False
            self._remember(stat)
            digest = hashlib.sha256(raw).digest()
            if digest == self._good_digest:
                self._last_error = None
                return False
            if digest == self._bad_digest:
                return False
            current = self.snapshot
            try:
                ruleset = load_ruleset(raw, previous=current.ruleset)
            except RulesetError as exc:
                if self._racy:
                    # Perhaps written in place and read half-done: judged once it settles.
                    return False
                self._bad_digest = digest
                self._refuse(str(exc))
                return False
            snapshot = build_snapshot(ruleset)
            self._snapshot = snapshot
            self._good_digest = digest
            self._last_error = None
        self._announce(current, snapshot)
        return True

    # -- internals -----------------------------------------------------------------------------

    def _step(self) -> float:
        self.check()
        return self._interval

    def _stat_file(self) -> tuple[int, int, int] | None:
        try:
            return self._stat_of(os.stat(self.path))
        except OSError:
            return None

    @staticmethod
    def _stat_of(st: os.stat_result) -> tuple[int, int, int]:
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _read(self) -> bytes | None:
        try:
            with open(self.path, "rb") as handle:
                return handle.read(MAX_DOCUMENT_BYTES + 1)
        except OSError:
            return None

    def _remember(self, stat: tuple[int, int, int]) -> None:
        self._stat = stat
        self._racy = time.time_ns() - stat[0] < _RACY_NS

    def _refuse(self, reason: str) -> None:
        if reason == self._last_error:
            return  # logged when first seen
        self._last_error = reason
        self.reload_errors += 1
        current = self._snapshot
        _log.error(
            "phaseflag serve: refused the new contents of %s: %s; still serving version %s",
            self.path,
            reason,
            None if current is None else current.version,
        )

    def _announce(self, previous: Snapshot, snapshot: Snapshot) -> None:
        self.reloads += 1
        if snapshot.version <= previous.version:
            _log.warning(
                "phaseflag serve: %s changed but its version did not grow (%d -> %d); "
                "serving it anyway",
                self.path,
                previous.version,
                snapshot.version,
            )
        _log.info(
            "phaseflag serve: now serving ruleset version %d (%d flags)",
            snapshot.version,
            len(snapshot.ruleset.flags),
        )
        report_invalid_flags(snapshot)
        if self.on_change is not None:
            self.on_change(snapshot)
