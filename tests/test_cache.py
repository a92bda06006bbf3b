"""The cache contract over every cache, then FileCache's storage, safety and fallback rules."""

from __future__ import annotations

import logging
import os
import re
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import fcache.cache  # type: ignore[import-untyped]
import platformdirs
import pytest

from phaseflag._cache import Cache, FileCache, MemoryCache, cache_key
from phaseflag._errors import ConfigError

RULESET = b'{"schema_version": 1, "version": 42, "flags": [], "segments": []}'
KEY = cache_key("https://flags.example.com/api/v1", "sdk-secret-key-1234")
posix_only = pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX permissions")


class DictCache(Cache):
    """The smallest useful custom cache: what a user plugging in their own store writes."""

    def __init__(self) -> None:
        self.entries: dict[str, bytes] = {}
        self.lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self.lock:
            return self.entries.get(key)

    def set(self, key: str, value: bytes) -> None:
        with self.lock:
            self.entries[key] = value

    def delete(self, key: str) -> None:
        with self.lock:
            self.entries.pop(key, None)


def _entry(directory: Path, key: str) -> Path:
    """Where FileCache (and fcache) keep ``key`` under ``directory``."""
    return directory / "cache" / key.encode().hex()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "phaseflag" and r.levelno == logging.WARNING
    ]


@pytest.fixture(params=["memory", "file", "custom"])
def cache(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cache]:
    """Every cache the client may be given."""
    made: Cache = {
        "memory": MemoryCache,
        "file": lambda: FileCache(tmp_path),
        "custom": DictCache,
    }[request.param]()
    yield made
    made.close()


class TestContract:
    def test_get_misses_unknown_key(self, cache: Cache) -> None:
        """A key never stored reads as None."""
        assert cache.get(KEY) is None

    def test_roundtrip_returns_the_same_bytes(self, cache: Cache) -> None:
        """Stored bytes, binary ones included, come back unchanged."""
        cache.set(KEY, RULESET)
        cache.set("other", b"\x00\xff\r\n")
        assert cache.get(KEY) == RULESET
        assert cache.get("other") == b"\x00\xff\r\n"

    def test_set_overwrites(self, cache: Cache) -> None:
        """A second set replaces the first value."""
        cache.set(KEY, b'{"version": 1}')
        cache.set(KEY, b'{"version": 2}')
        assert cache.get(KEY) == b'{"version": 2}'

    def test_delete_removes_and_tolerates_missing(self, cache: Cache) -> None:
        """Delete removes one key, leaves the others, and a missing key is no error."""
        cache.set(KEY, RULESET)
        cache.set("kept", b"{}")
        cache.delete(KEY)
        cache.delete(KEY)
        assert cache.get(KEY) is None
        assert cache.get("kept") == b"{}"

    def test_threads_setting_distinct_keys_see_their_own_values(self, cache: Cache) -> None:
        """Concurrent writers and readers of distinct keys never see each other's values."""
        start = threading.Event()
        errors: list[str] = []

        def work(n: int) -> None:
            start.wait(5)
            for i in range(10):
                value = f'{{"thread": {n}, "i": {i}}}'.encode()
                cache.set(f"key-{n}", value)
                got = cache.get(f"key-{n}")
                if got != value:
                    errors.append(f"thread {n}: {got!r} != {value!r}")

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        start.set()
        for thread in threads:
            thread.join(10)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        assert [cache.get(f"key-{n}") for n in range(8)] == [
            f'{{"thread": {n}, "i": 9}}'.encode() for n in range(8)
        ]


class TestBuiltinCaches:
    @pytest.mark.parametrize("make", [MemoryCache, FileCache], ids=["memory", "file"])
    def test_set_rejects_non_bytes(self, make: Callable[[], Cache], tmp_path: Path) -> None:
        """A str value is a caller bug and raises TypeError."""
        cache = make() if make is MemoryCache else FileCache(tmp_path)
        with pytest.raises(TypeError, match="bytes"):
            cache.set(KEY, "{}")  # type: ignore[arg-type]

    def test_incomplete_subclass_cannot_be_built(self) -> None:
        """A custom cache missing a method fails at construction, not at first use."""

        class NoDelete(Cache):
            def get(self, key: str) -> bytes | None:
                return None

            def set(self, key: str, value: bytes) -> None:
                pass

        with pytest.raises(TypeError, match="delete"):
            NoDelete()  # type: ignore[abstract]


class TestFileCacheStorage:
    def test_file_holds_exactly_the_stored_bytes(self, tmp_path: Path) -> None:
        """The entry file contains the JSON bytes as given: no pickle, no framing."""
        FileCache(tmp_path).set(KEY, RULESET)
        assert _entry(tmp_path, KEY).read_bytes() == RULESET

    def test_fcache_reads_the_entries(self, tmp_path: Path) -> None:
        """The on-disk layout is fcache's own, so fcache with serialize=False reads it."""
        FileCache(tmp_path).set(KEY, RULESET)
        store = fcache.cache.FileCache("phaseflag", serialize=False, app_cache_dir=str(tmp_path))
        assert store[KEY] == RULESET

    @posix_only
    def test_modes_are_private(self, tmp_path: Path) -> None:
        """Entry files are 0o600 and the entries directory 0o700."""
        FileCache(tmp_path).set(KEY, RULESET)
        assert stat.S_IMODE(_entry(tmp_path, KEY).stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "cache").stat().st_mode) == 0o700

    def test_survives_restart(self, tmp_path: Path) -> None:
        """A new instance on the same directory reads what an earlier one stored."""
        FileCache(tmp_path).set(KEY, RULESET)
        assert FileCache(tmp_path).get(KEY) == RULESET

    def test_constructor_touches_no_files(self, tmp_path: Path) -> None:
        """The directory is created on first use, not when the cache is built."""
        FileCache(tmp_path / "lazy")
        assert not (tmp_path / "lazy").exists()

    @pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG layout")
    def test_default_directory_is_fcaches_user_cache_dir(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With no directory, entries go to fcache's per-user cache dir for app_name."""
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        FileCache(app_name="myapp").set(KEY, RULESET)
        expected = Path(platformdirs.user_cache_dir("myapp", "myapp"))
        assert expected.parent == tmp_path
        assert _entry(expected, KEY).read_bytes() == RULESET

    def test_failed_write_keeps_the_old_entry_and_no_temp_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A write that dies before the rename leaves the previous entry whole."""
        cache = FileCache(tmp_path)
        cache.set(KEY, b'{"version": 1}')

        def crash(src: str, dst: str) -> None:
            raise OSError("simulated crash before rename")

        monkeypatch.setattr(os, "replace", crash)
        cache.set(KEY, b'{"version": 2}')
        monkeypatch.undo()
        assert FileCache(tmp_path).get(KEY) == b'{"version": 1}'
        assert os.listdir(tmp_path / "cache") == [KEY.encode().hex()]

    def test_removes_stale_temp_files_only(self, tmp_path: Path) -> None:
        """Temp files a crashed writer left long ago are removed; recent ones are kept."""
        (tmp_path / "cache").mkdir()
        stale = tmp_path / "cache" / ".tmp-stale"
        fresh = tmp_path / "cache" / ".tmp-fresh"
        stale.write_bytes(b"{")
        fresh.write_bytes(b"{")
        os.utime(stale, (1_000_000_000, 1_000_000_000))
        FileCache(tmp_path).get(KEY)
        assert not stale.exists()
        assert fresh.exists()


class TestFileCacheFallback:
    def test_uncreatable_directory_degrades_to_memory_with_one_warning(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A directory that cannot be created gives one warning; the cache keeps working."""
        blocker = tmp_path / "a-file"
        blocker.write_bytes(b"")
        cache = FileCache(blocker / "sub")
        with caplog.at_level(logging.WARNING, logger="phaseflag"):
            assert cache.get(KEY) is None
            cache.set(KEY, RULESET)
            assert cache.get(KEY) == RULESET
            cache.delete(KEY)
            assert cache.get(KEY) is None
            cache.set(KEY, RULESET)
        assert len(_warnings(caplog)) == 1
        assert "caching in memory" in _warnings(caplog)[0]

    @posix_only
    @pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores modes")
    def test_read_only_directory_degrades_to_memory_with_one_warning(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A 0o500 directory gives one warning; the cache keeps working in memory."""
        (tmp_path / "cache").mkdir(mode=0o500)
        cache = FileCache(tmp_path)
        with caplog.at_level(logging.WARNING, logger="phaseflag"):
            cache.set(KEY, RULESET)
            assert cache.get(KEY) == RULESET
        assert len(_warnings(caplog)) == 1

    def test_one_failed_write_degrades_that_write_only(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """One ENOSPC keeps that version in memory (one warning); the next version is written
        to disk again, so a restart during an outage serves the last good version, not v1."""
        cache = FileCache(tmp_path)
        cache.set(KEY, b"v1")
        real_fsync = os.fsync
        failures = [OSError(28, "No space left on device")]

        def full_once(fd: int) -> None:
            if failures:
                raise failures.pop()
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", full_once)
        with caplog.at_level(logging.WARNING, logger="phaseflag"):
            cache.set(KEY, b"v2")
            assert cache.get(KEY) == b"v2"  # this process still sees what it was given
            assert FileCache(tmp_path).get(KEY) == b"v1"  # the disk kept the last written
            cache.set(KEY, b"v3")
        assert FileCache(tmp_path).get(KEY) == b"v3"  # a restart now serves v3
        assert cache.get(KEY) == b"v3"
        assert len(_warnings(caplog)) == 1
        assert "No space left" in _warnings(caplog)[0]

    @posix_only
    def test_directory_in_place_of_the_entry_one_warning_no_fd_leak(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A directory where the entry should be reads as a miss: one warning for any number
        of reads, no traceback, and no file descriptor left open."""
        cache = FileCache(tmp_path)
        cache.get(KEY)  # prepares the directory
        (tmp_path / "cache" / KEY.encode().hex()).mkdir()
        fds_before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
        with caplog.at_level(logging.WARNING, logger="phaseflag"):
            for _ in range(50):
                assert cache.get(KEY) is None
        if fds_before is not None:
            assert len(os.listdir("/proc/self/fd")) == fds_before
        assert len(_warnings(caplog)) == 1
        assert "not a regular file" in _warnings(caplog)[0]
        assert all(r.exc_info is None for r in caplog.records)

    def test_readable_entry_in_a_read_only_directory_is_read(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A directory that refuses writes (EROFS for every temp file) still serves the good
        entry it holds; the failed write is one warning."""
        FileCache(tmp_path).set(KEY, RULESET)

        def read_only(*args: object, **kwargs: object) -> tuple[int, str]:
            raise OSError(30, "Read-only file system")

        monkeypatch.setattr("tempfile.mkstemp", read_only)
        cache = FileCache(tmp_path)
        with caplog.at_level(logging.WARNING, logger="phaseflag"):
            assert cache.get(KEY) == RULESET
            cache.set(KEY, RULESET + b" ")
            assert cache.get(KEY) == RULESET + b" "
        assert len(_warnings(caplog)) == 1

    def test_get_never_raises(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Any error while reading is logged and read as a miss."""
        cache = FileCache(tmp_path)
        cache.set(KEY, RULESET)

        real_fstat = os.fstat

        def broken(fd: int) -> os.stat_result:
            # Only the cache's own calls fail: logging and pytest may fstat too.
            if sys._getframe(1).f_globals.get("__name__") == "phaseflag._cache":
                raise RuntimeError("disk on fire")
            return real_fstat(fd)

        monkeypatch.setattr(os, "fstat", broken)
        with caplog.at_level(logging.WARNING, logger="phaseflag"):
            assert cache.get(KEY) is None
            assert cache.get("") is None
        assert len(_warnings(caplog)) == 2


class TestFileCacheRefusals:
    @posix_only
    @pytest.mark.parametrize("mode", [0o666, 0o620, 0o602])
    def test_refuses_group_or_world_writable_file(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int
    ) -> None:
        """A file others could have written is a miss, reported once."""
        cache = FileCache(tmp_path)
        cache.set(KEY, RULESET)
        _entry(tmp_path, KEY).chmod(mode)
        with caplog.at_level(logging.WARNING, logger="phaseflag"):
            assert cache.get(KEY) is None
            assert cache.get(KEY) is None
        assert len(_warnings(caplog)) == 1
        assert "writable by group or others" in _warnings(caplog)[0]

    @posix_only
    def test_refuses_file_of_another_user(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A file owned by another user is a miss, reported once."""
        cache = FileCache(tmp_path)
        cache.set(KEY, RULESET)
        real_uid = os.geteuid()
        monkeypatch.setattr(os, "geteuid", lambda: real_uid + 4242)
        with caplog.at_level(logging.WARNING, logger="phaseflag"):
            assert cache.get(KEY) is None
        assert len(_warnings(caplog)) == 1
        assert "owned by uid" in _warnings(caplog)[0]

    @posix_only
    def test_set_replaces_a_refused_file(self, tmp_path: Path) -> None:
        """Storing again writes a fresh private file that reads back."""
        cache = FileCache(tmp_path)
        cache.set(KEY, b"{}")
        _entry(tmp_path, KEY).chmod(0o666)
        assert cache.get(KEY) is None
        cache.set(KEY, RULESET)
        assert cache.get(KEY) == RULESET
        assert stat.S_IMODE(_entry(tmp_path, KEY).stat().st_mode) == 0o600

    @posix_only
    def test_refuses_symlink(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        """An entry that is a symlink is not followed."""
        cache = FileCache(tmp_path)
        cache.get(KEY)
        target = tmp_path / "elsewhere"
        target.write_bytes(RULESET)
        target.chmod(0o600)
        _entry(tmp_path, KEY).symlink_to(target)
        with caplog.at_level(logging.WARNING, logger="phaseflag"):
            assert cache.get(KEY) is None
        assert len(_warnings(caplog)) == 1

    def test_refuses_to_store_oversize_value(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A value over max_bytes is not stored, with a warning."""
        cache = FileCache(tmp_path, max_bytes=10)
        with caplog.at_level(logging.WARNING, logger="phaseflag"):
            cache.set(KEY, b"x" * 11)
        assert cache.get(KEY) is None
        assert not _entry(tmp_path, KEY).exists()
        assert len(_warnings(caplog)) == 1
        assert "max_bytes=10" in _warnings(caplog)[0]

    def test_refuses_to_return_oversize_file(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A file over max_bytes is a miss, with a warning."""
        FileCache(tmp_path).set(KEY, b"x" * 11)
        assert FileCache(tmp_path, max_bytes=11).get(KEY) == b"x" * 11
        with caplog.at_level(logging.WARNING, logger="phaseflag"):
            assert FileCache(tmp_path, max_bytes=10).get(KEY) is None
        assert len(_warnings(caplog)) == 1

    @pytest.mark.parametrize("key", ["", "k" * 121])
    def test_rejects_unusable_keys(self, tmp_path: Path, key: str) -> None:
        """An empty or over-long key is a caller bug for set and delete."""
        cache = FileCache(tmp_path)
        with pytest.raises(ValueError, match="cache key"):
            cache.set(key, b"{}")
        with pytest.raises(ValueError, match="cache key"):
            cache.delete(key)

    @pytest.mark.parametrize(
        ("kwargs", "option"),
        [
            ({"app_name": ""}, "app_name"),
            ({"app_name": "../etc"}, "app_name"),
            ({"app_name": "my.app"}, "app_name"),
            ({"max_bytes": 0}, "max_bytes"),
            ({"max_bytes": True}, "max_bytes"),
        ],
    )
    def test_bad_options_raise_config_error(
        self, tmp_path: Path, kwargs: dict[str, object], option: str
    ) -> None:
        """A bad app_name or max_bytes fails at construction, naming the option."""
        with pytest.raises(ConfigError) as info:
            FileCache(tmp_path, **kwargs)  # type: ignore[arg-type]
        assert info.value.option == option


class TestCacheKey:
    def test_differs_by_api_key(self) -> None:
        """Two API keys for the same URL never share an entry."""
        url = "https://flags.example.com/api/v1"
        assert cache_key(url, "key-a") != cache_key(url, "key-b")

    def test_differs_by_base_url(self) -> None:
        """Two environments with the same key never share an entry."""
        assert cache_key("https://a.example.com/api/v1", "k") != cache_key(
            "https://b.example.com/api/v1", "k"
        )

    def test_separator_prevents_ambiguity(self) -> None:
        """Moving characters between URL and key changes the result."""
        assert cache_key("https://x/ab", "c") != cache_key("https://x/a", "bc")

    def test_is_stable_and_ignores_trailing_slash(self) -> None:
        """The same inputs always give the same key, with or without a trailing slash."""
        assert cache_key("https://x/api/v1/", "k") == cache_key("https://x/api/v1", "k")

    def test_hides_the_api_key_and_is_file_name_safe(self) -> None:
        """The key is 'ruleset-' plus 32 hex digits and never contains the API key."""
        api_key = "abcdef0123456789"
        key = cache_key("https://x/api/v1", api_key)
        assert re.fullmatch(r"ruleset-[0-9a-f]{32}", key)
        assert api_key not in key
