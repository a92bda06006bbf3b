"""Ruleset caches: the ``Cache`` base class, ``MemoryCache``, and ``FileCache`` on fcache's layout.

fcache places and creates FileCache's directory and fixes its file layout; the reads (owner and
mode vetted) and writes (temp file + ``os.replace``) are our own, as fcache's are neither."""

from __future__ import annotations

import abc
import contextlib
import errno
import hashlib
import logging
import os
import re
import stat
import tempfile
import threading
import time

from phaseflag._errors import ConfigError

__all__ = ["Cache", "FileCache", "MemoryCache", "cache_key"]

_log = logging.getLogger("phaseflag")

_DEFAULT_MAX_BYTES = 50 * 1024 * 1024
_TMP_PREFIX = ".tmp-"  # never a valid entry name: fcache names entries by hex digits only
_STALE_TMP_SECONDS = 3600.0
_MAX_KEY_BYTES = 120  # hex doubles it; stays under the common 255-byte file-name limit
_APP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_READ_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)  # a planted symlink must not redirect the read
    | getattr(os, "O_NONBLOCK", 0)  # a planted FIFO must not block the open
    | getattr(os, "O_BINARY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


def cache_key(base_url: str, api_key: str) -> str:
    """Return the cache key for one environment: ``ruleset-`` and 32 hex digits.

    Different base URLs or API keys give different keys; the API key cannot be read back from
    the result, which is safe as a file name. A trailing ``/`` on ``base_url`` is ignored.
    """
    material = f"{base_url.rstrip('/')}\0{api_key}".encode("utf-8", "surrogatepass")
    return "ruleset-" + hashlib.sha256(material).hexdigest()[:32]


class Cache(abc.ABC):
    """Where the client keeps the last good ruleset document (JSON bytes) across restarts.

    Subclass it to plug in another store (Redis, a database...). Implementations must be
    thread-safe. ``get`` returns ``None`` on a miss and should not raise: a cache is an
    optimisation, so a failing store reads as a miss (the client also guards every call).
    Keys are short, file-name-safe strings made by :func:`cache_key`.
    """

    @abc.abstractmethod
    def get(self, key: str) -> bytes | None:
        """Return the bytes stored under ``key``, or ``None`` when there are none."""

    @abc.abstractmethod
    def set(self, key: str, value: bytes) -> None:
        """Store ``value`` under ``key``, replacing what was there."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key does nothing."""

    def close(self) -> None:  # noqa: B027 - an optional hook, not an abstract method
        """Release resources; the client calls it on ``stop()``. Does nothing by default."""


class MemoryCache(Cache):
    """A process-local cache in a dict; thread-safe, lost on restart.

    ``set`` raises ``TypeError`` when ``value`` is not ``bytes``; nothing else raises.
    """

    def __init__(self) -> None:
        self._entries: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        """Return the bytes stored under ``key``, or ``None``."""
        with self._lock:
            return self._entries.get(key)

    def set(self, key: str, value: bytes) -> None:
        """Store ``value`` under ``key``; raises ``TypeError`` if ``value`` is not bytes."""
        _check_value(value)
        with self._lock:
            self._entries[key] = bytes(value)

    def delete(self, key: str) -> None:
        """Remove ``key`` if present."""
        with self._lock:
            self._entries.pop(key, None)

    def _after_fork_in_child(self) -> None:
        """Replace the lock in a forked child (a parent's thread may have held it)."""
        self._lock = threading.Lock()


class FileCache(Cache):
    """A cache of files in a per-user directory, one file per key, holding the raw bytes.

    The directory is fcache's: ``<directory>/cache/`` (fcache's per-user cache directory for
    ``app_name`` when ``directory`` is None), each entry named by the hex of its key and holding
    exactly the stored bytes, as ``fcache.cache.FileCache(serialize=False)`` reads them. Never
    pickle: a cache directory is not trusted code. Files are created 0o600 and the directory
    0o700. Each write goes to a temp file in the same directory, is fsynced, then
    ``os.replace``-d over the entry, so a crash never leaves a half-written entry and several
    processes may share the directory.

    A file not owned by this process's effective user, writable by group or others, not a
    regular file, or over ``max_bytes`` is refused (a miss, one warning per file). On Windows,
    where modes do not reflect ACLs, only the type and size checks apply. Faults degrade one
    operation, never the process: a write that fails (a full disk, a read-only directory) is
    logged once per cause and kept in memory for this process, and the next write tries the
    disk again; an entry that can be read is read even when the directory is not writable.

    Thread-safe. The directory is touched on first use, not by the constructor. ``get`` never
    raises; ``set`` and ``delete`` raise only for bad arguments (``TypeError`` for a value
    that is not bytes, ``ValueError`` for an empty key or one over 120 UTF-8 bytes), never
    for I/O problems, which are logged. The constructor raises ``ConfigError`` for a bad
    ``app_name`` or ``max_bytes``.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        app_name: str = "phaseflag",
        max_bytes: int = _DEFAULT_MAX_BYTES,
    ) -> None:
        if not isinstance(app_name, str) or not _APP_NAME.fullmatch(app_name):
            raise ConfigError(
                "app_name",
                f"{app_name!r} is not a plain directory name",
                "use letters, digits, '_' and '-'",
            )
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ConfigError("max_bytes", f"must be a positive int, got {max_bytes!r}")
        self._directory = (
            None if directory is None else os.path.abspath(os.path.expanduser(directory))
        )
        self._app_name = app_name
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._path: str | None = None  # the entries directory, once opened
        self._unwritten = MemoryCache()  # values whose last disk write failed (this process)
        self._warned: set[str] = set()  # files refused and write failures already reported

    def get(self, key: str) -> bytes | None:
        """Return the bytes stored under ``key``, or ``None``; never raises."""
        try:
            name = _file_name(key)
            with self._lock:
                unwritten = self._unwritten.get(key)
                if unwritten is not None:  # newer than the disk: its write failed
                    return unwritten
                path = self._open()
                return None if path is None else self._read(os.path.join(path, name))
        except Exception as exc:
            self._warn_once(
                f"get:{type(exc).__name__}",
                "phaseflag cache: reading %r failed (%s); treating it as a miss",
                key,
                exc,
            )
            return None

    def set(self, key: str, value: bytes) -> None:
        """Store ``value`` under ``key`` atomically; values over ``max_bytes`` are dropped."""
        name = _file_name(key)
        _check_value(value)
        if len(value) > self._max_bytes:
            _log.warning(
                "phaseflag cache: not storing %r: %d bytes is over max_bytes=%d",
                key,
                len(value),
                self._max_bytes,
            )
            return
        with self._lock:
            path = self._open()
            if path is None:  # _open() has said why; the next write tries again
                self._unwritten.set(key, value)
                return
            target = os.path.join(path, name)
            try:
                _write_atomically(path, target, value)
            except OSError as exc:
                self._unwritten.set(key, value)
                self._warn_once(
                    f"set:{exc.errno}",
                    "phaseflag cache: could not write %s (%s); kept in memory, the next "
                    "version is written again",
                    target,
                    exc,
                )
            else:
                self._unwritten.delete(key)
                self._warned.discard(target)

    def delete(self, key: str) -> None:
        """Remove ``key`` if present; I/O errors are logged, not raised."""
        name = _file_name(key)
        with self._lock:
            self._unwritten.delete(key)
            path = self._open()
            if path is None:
                return
            try:
                os.remove(os.path.join(path, name))
            except FileNotFoundError:
                pass
            except OSError as exc:
                self._warn_once("delete", "phaseflag cache: could not delete %r: %s", key, exc)

    def _after_fork_in_child(self) -> None:
        """Replace the locks in a forked child (a parent's thread may have held them)."""
        self._lock = threading.Lock()
        self._unwritten._after_fork_in_child()

    def _open(self) -> str | None:
        """Return the entries directory, preparing it on first use; None when it cannot be
        created (tried again on the next call)."""
        if self._path is None:
            try:
                self._path = self._prepare()
            except Exception as exc:
                where = self._directory or f"the user cache directory for {self._app_name}"
                self._warn_once(
                    "open",
                    "phaseflag cache: %s is not usable (%s); caching in memory, tried again "
                    "on the next write",
                    where,
                    exc,
                )
        return self._path

    def _prepare(self) -> str:
        import fcache.cache  # type: ignore[import-untyped]

        store = fcache.cache.FileCache(
            self._app_name,
            flag="cs",
            mode=0o600,
            serialize=False,
            app_cache_dir=self._directory,
        )
        path: str = store.cache_dir
        if hasattr(os, "geteuid") and os.stat(path).st_uid == os.geteuid():
            with contextlib.suppress(OSError):  # a read-only directory is still read
                os.chmod(path, 0o700)  # fcache creates it with the umask's mode
        with contextlib.suppress(OSError):
            _remove_stale_temps(path)
        return path

    def _warn_once(self, cause: str, message: str, *args: object) -> None:
        if cause not in self._warned:
            self._warned.add(cause)
            _log.warning(message, *args)

    def _read(self, file: str) -> bytes | None:
        try:
            fd = os.open(file, _READ_FLAGS)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno != errno.ELOOP:  # O_NOFOLLOW met a symlink: refused below
                raise
            self._refuse(file, "it is a symbolic link")
            return None
        try:
            # fstat of the open file, so the checked file is the one read; a directory in
            # place of the entry opens on POSIX and is refused here.
            problem = self._problem(os.fstat(fd))
            if problem is None:
                data = _read_at_most(fd, self._max_bytes + 1)
                if len(data) <= self._max_bytes:
                    return data
                problem = f"it is over max_bytes={self._max_bytes}"
        finally:
            os.close(fd)
        self._refuse(file, problem)
        return None

    def _refuse(self, file: str, problem: str) -> None:
        """Warn (once per file) that ``file`` is not trusted; reads as a miss."""
        if file not in self._warned:
            self._warned.add(file)
            _log.warning("phaseflag cache: refusing to read %s: %s", file, problem)

    def _problem(self, st: os.stat_result) -> str | None:
        if not stat.S_ISREG(st.st_mode):
            return "it is not a regular file"
        if st.st_size > self._max_bytes:
            return f"it is over max_bytes={self._max_bytes} ({st.st_size} bytes)"
        if hasattr(os, "geteuid"):
            if st.st_uid != os.geteuid():
                return f"it is owned by uid {st.st_uid}, not this process's user"
            if st.st_mode & 0o022:
                return (
                    f"it is writable by group or others (mode {oct(st.st_mode & 0o777)}); "
                    "delete it or chmod it 600"
                )
        return None


def _file_name(key: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"cache key must be str, not {type(key).__name__}")
    raw = key.encode("utf-8")
    if not raw or len(raw) > _MAX_KEY_BYTES:
        raise ValueError(f"cache key must be 1 to {_MAX_KEY_BYTES} UTF-8 bytes, got {len(raw)}")
    return raw.hex()  # fcache's key encoding (hex_codec), safe as a file name on any system


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, min(1 << 20, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _check_value(value: bytes) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"cache value must be bytes, not {type(value).__name__}")


def _write_atomically(directory: str, target: str, value: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=_TMP_PREFIX)  # created 0o600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(value)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _remove_stale_temps(directory: str) -> None:
    """Remove temp files a crashed writer left behind; young ones may be another process's."""
    cutoff = time.time() - _STALE_TMP_SECONDS
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith(_TMP_PREFIX):
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.remove(entry.path)
