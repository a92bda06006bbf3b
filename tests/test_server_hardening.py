"""``phaseflag serve`` under attack: each attack of issue 12 is a test here (raw sockets)."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import requests
from conftest import boolean_flag, ruleset, wait_for

from phaseflag._cli import main
from phaseflag.server import Limits, PhaseFlagServer
from phaseflag.server._eventlog import EventLog

pytestmark = pytest.mark.e2e

KEY = "hardening-key-7c1d2e"
AUTH = {"Authorization": f"Bearer {KEY}"}
ROOT = Path(__file__).resolve().parents[1]


def document(version: int = 1, **extra: Any) -> dict[str, Any]:
    return ruleset(boolean_flag("checkout", True), version=version, **extra)


@pytest.fixture
def ruleset_path(tmp_path: Path) -> Path:
    path = tmp_path / "ruleset.json"
    path.write_text(json.dumps(document()), "utf-8")
    return path


@pytest.fixture
def events_path(tmp_path: Path) -> Path:
    return tmp_path / "events.jsonl"


@pytest.fixture
def server(ruleset_path: Path, events_path: Path) -> Iterator[PhaseFlagServer]:
    with PhaseFlagServer(
        ruleset_path, api_keys=[KEY], events_out=str(events_path), poll_interval=0.05
    ) as srv:
        yield srv


def root(server: PhaseFlagServer) -> str:
    return server.url.removesuffix("/api/v1")


def exchange(server: PhaseFlagServer, data: bytes, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Send ``data`` on a new connection; (everything answered, closed by the server)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        closed = False
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
            closed = True
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            pass
    return b"".join(chunks), closed


def responses_in(answer: bytes) -> int:
    return answer.count(b"HTTP/1.1 ")


def post_events(server: PhaseFlagServer, events: list[dict[str, Any]]) -> requests.Response:
    return requests.post(
        server.url + "/sdk/events", json={"sdk": {}, "events": events}, headers=AUTH, timeout=5
    )


@contextlib.contextmanager
def fd_limit(needed: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < needed:
        pytest.fail(f"this test needs {needed} open files; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def slow_sockets(port: int, count: int, sources: list[str]) -> list[socket.socket]:
    """``count`` connections that start a request and never finish its headers."""
    socks = []
    for index in range(count):
        sock = socket.socket()
        sock.bind((sources[index % len(sources)], 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /api/v1/sdk/ruleset HTTP/1.1\r\nHost: x\r\nX-Slow: a")
        socks.append(sock)
    return socks


class TestSlowClients:
    """Slowloris: held-open, never-finished requests cannot starve a real client."""

    def test_2000_slowloris_sockets_leave_authenticated_requests_answered(
        self, server: PhaseFlagServer
    ):
        """2,000 sockets trickling headers from 8 addresses; a keyed client is answered < 1 s."""
        sources = [f"127.0.0.{n}" for n in range(2, 10)]
        with fd_limit(4500):
            socks = slow_sockets(server.port, 2000, sources)
            try:
                for sock in socks[:50]:  # one more byte now and then, as slowloris does
                    sock.sendall(b"a")
                wait_for(lambda: requests.get(root(server) + "/healthz", timeout=5).ok, timeout=10)
                with requests.Session() as session:
                    session.headers.update(AUTH)
                    for _ in range(20):
                        started = time.perf_counter()
                        resp = session.get(server.url + "/sdk/ruleset", timeout=5)
                        elapsed = time.perf_counter() - started
                        assert resp.status_code == 200
                        assert elapsed < 1.0, f"answered in {elapsed:.2f} s"
            finally:
                for sock in socks:
                    sock.close()

    def test_connections_over_the_per_client_cap_are_closed_at_once(self, ruleset_path: Path):
        """Past ``max_connections_per_client`` pending connections of one address are cut;
        another address is still served."""
        limits = Limits(max_connections_per_client=20)
        with PhaseFlagServer(ruleset_path, api_keys=[KEY], limits=limits) as srv:
            socks = slow_sockets(srv.port, 60, ["127.0.0.2"])
            try:
                closed: set[int] = set()

                def cut() -> bool:
                    for index, sock in enumerate(socks):
                        if index in closed:
                            continue
                        sock.setblocking(False)
                        try:
                            if sock.recv(1) == b"":
                                closed.add(index)
                        except BlockingIOError:
                            pass
                        except ConnectionResetError:
                            closed.add(index)
                    return len(closed) >= 40

                wait_for(cut, timeout=10)
                assert len(closed) == 40  # exactly the ones over the cap
                resp = requests.get(srv.url + "/sdk/ruleset", headers=AUTH, timeout=5)
                assert resp.status_code == 200
            finally:
                for sock in socks:
                    sock.close()

    def test_headers_not_finished_in_time_get_408_and_closed(self, ruleset_path: Path):
        """A request whose headers do not complete within ``header_timeout`` is closed."""
        limits = Limits(header_timeout=0.3)
        with PhaseFlagServer(ruleset_path, api_keys=[KEY], limits=limits) as srv:
            answer, closed = exchange(srv, b"GET /healthz HTTP/1.1\r\nX-Slow: a", timeout=10)
            assert closed
            assert answer.startswith(b"HTTP/1.1 408 ")

    def test_silent_connection_closed_at_the_header_deadline(self, ruleset_path: Path):
        """A connection that never sends a byte is closed at the deadline, without an answer."""
        with PhaseFlagServer(
            ruleset_path, api_keys=[KEY], limits=Limits(header_timeout=0.3)
        ) as srv:
            answer, closed = exchange(srv, b"", timeout=10)
            assert (answer, closed) == (b"", True)

    def test_unauthenticated_connection_is_closed_after_its_401(self, server: PhaseFlagServer):
        """A request without a valid key gets 401 and the server closes the connection,
        even though the client asked for keep-alive (the next request is never read)."""
        request = (
            b"GET /api/v1/sdk/ruleset HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer bad\r\n\r\n"
        )
        answer, closed = exchange(server, request + request)
        assert closed
        assert answer.startswith(b"HTTP/1.1 401 ")
        assert responses_in(answer) == 1
        assert b"connection: close" in answer.lower()


class TestFraming:
    """Ambiguous framing is answered 400 and the connection closed: nothing smuggled runs."""

    def test_content_length_with_chunked_is_refused(self, server: PhaseFlagServer, events_path):
        """CL + TE: one 400, the hidden second request never answered, nothing written."""
        hidden = b"POST /api/v1/sdk/events HTTP/1.1\r\nHost: x\r\nContent-Length: 33\r\n"
        hidden += b"Authorization: Bearer " + KEY.encode() + b"\r\n\r\n"
        hidden += b'{"events":[{"kind":"smuggled"}]}'
        body = b"0\r\n\r\n" + hidden
        request = (
            b"POST /api/v1/sdk/events HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
            b"Transfer-Encoding: chunked\r\nAuthorization: Bearer %s\r\n\r\n"
            % (len(body), KEY.encode())
        ) + body
        answer, closed = exchange(server, request)
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert responses_in(answer) == 1 and closed
        assert not events_path.exists() or events_path.read_bytes() == b""

    @pytest.mark.parametrize(
        "chunks",
        [
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\r\nhello0\r\n\r\n",
            b"5\nhello\n0\n\n",
            b"5\r\nhello\r\n0\r\nX\r\n\r\n",
        ],
        ids=["garbage-terminator", "missing-terminator", "bare-lf", "bad-trailer"],
    )
    def test_bad_chunk_terminators_are_refused(self, server: PhaseFlagServer, events_path, chunks):
        """A chunk not followed by CRLF is 400 and closed; the partial body is not stored."""
        request = (
            b"POST /api/v1/sdk/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Authorization: Bearer " + KEY.encode() + b"\r\n\r\n" + chunks
        )
        answer, closed = exchange(server, request, timeout=3)
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert closed
        assert not events_path.exists() or events_path.read_bytes() == b""

    @pytest.mark.parametrize(
        "headers",
        [
            b"Content-Length: 4\r\nContent-Length: 5\r\n",
            b"Content-Length: 4, 5\r\n",
            b"Transfer-Encoding: chunked, identity\r\n",
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            b"Content-Length : 4\r\n",
        ],
        ids=["two-lengths", "list-length", "chunked-not-last", "two-te", "space-before-colon"],
    )
    def test_other_ambiguous_lengths_are_refused(self, server: PhaseFlagServer, headers: bytes):
        """Every other way of giving two body lengths is 400 (or 501) and closed."""
        request = b"POST /api/v1/sdk/events HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\nabcde"
        answer, closed = exchange(server, request, timeout=3)
        assert answer[:12] in (b"HTTP/1.1 400", b"HTTP/1.1 501"), answer[:60]
        assert closed


class TestEventsFile:
    """The events file: bounded per request, rotated by size, never holds an error's batch."""

    def test_rotation_keeps_files_under_the_cap(self, ruleset_path: Path, events_path: Path):
        """A client posting forever fills at most (keep + 1) files of at most max_bytes."""
        with PhaseFlagServer(
            ruleset_path,
            api_keys=[KEY],
            events_out=str(events_path),
            events_max_bytes=4096,
            events_keep=2,
        ) as srv:
            for batch in range(60):
                events = [
                    {"kind": "custom", "flag_key": "f", "metadata": {"b": batch, "i": i}}
                    for i in range(5)
                ]
                assert post_events(srv, events).status_code == 202
        files = sorted(events_path.parent.glob("events.jsonl*"))
        assert [f.name for f in files] == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]
        batches = []
        for path in (
            events_path.with_name("events.jsonl.2"),
            events_path.with_name("events.jsonl.1"),
            events_path,
        ):
            assert path.stat().st_size <= 4096
            batches += [json.loads(line)["metadata"]["b"] for line in path.read_text().splitlines()]
        assert batches == sorted(batches) and batches[-1] == 59  # the newest kept, in order
        assert len(set(batches)) * 5 == len(batches)  # whole batches only

    def test_chunked_body_over_the_cap_is_413(self, ruleset_path: Path, events_path: Path):
        """A chunked body that grows past ``max_body_bytes`` is refused; nothing written."""
        limits = Limits(max_body_bytes=2048)
        with PhaseFlagServer(
            ruleset_path, api_keys=[KEY], events_out=str(events_path), limits=limits
        ) as srv:
            chunk = b'{"events":[' + b" " * 1500
            request = (
                b"POST /api/v1/sdk/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                b"Authorization: Bearer "
                + KEY.encode()
                + b"\r\n\r\n"
                + b"%x\r\n%s\r\n" % (len(chunk), chunk) * 3
                + b"0\r\n\r\n"
            )
            answer, closed = exchange(srv, request)
            assert answer.startswith(b"HTTP/1.1 413 ") and closed
        assert events_path.read_bytes() == b""

    def test_a_batch_answered_with_an_error_is_never_written(self, ruleset_path: Path, tmp_path):
        """Disk full mid-write: 503 to the SDK, and the file keeps only the earlier batch."""
        events_path = tmp_path / "events.jsonl"
        with PhaseFlagServer(ruleset_path, api_keys=[KEY], events_out=str(events_path)) as srv:
            assert post_events(srv, [{"kind": "custom", "flag_key": "first"}]).status_code == 202
            log = srv._events
            assert log is not None and log._file is not None
            real_write = log._file.write

            def full_disk(data: bytes) -> int:
                real_write(data[: len(data) // 2])
                log._file.flush()  # type: ignore[union-attr]
                raise OSError(errno.ENOSPC, "No space left on device")

            with mock.patch.object(log._file, "write", full_disk):
                resp = post_events(srv, [{"kind": "custom", "flag_key": "second" * 50}])
            assert resp.status_code == 503
            assert post_events(srv, [{"kind": "custom", "flag_key": "third"}]).status_code == 202
        lines = [json.loads(line)["flag_key"] for line in events_path.read_text().splitlines()]
        assert lines == ["first", "third"]

    def test_dev_full_is_an_error_not_a_lost_batch(self, ruleset_path: Path):
        """On a real full device the SDK gets 503 (it retries) and nothing is counted written."""
        with PhaseFlagServer(ruleset_path, api_keys=[KEY], events_out="/dev/full") as srv:
            assert post_events(srv, [{"kind": "custom", "flag_key": "f"}]).status_code == 503
            metrics = requests.get(root(srv) + "/metrics", headers=AUTH, timeout=5).text
        assert 'phaseflag_server_events_total{outcome="written"} 0.0' in metrics

    def test_rotation_unit(self, tmp_path: Path):
        """EventLog alone: rotation shifts FILE.n up and deletes the oldest."""
        path = tmp_path / "e.jsonl"
        log = EventLog(str(path), max_bytes=100, keep=1)
        log.open()
        for index in range(10):
            log.append([{"kind": "custom", "n": index, "pad": "x" * 30}])
        log.close()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["e.jsonl", "e.jsonl.1"]
        assert log.written == 10 and log.rotations >= 4


class TestHealthAndReports:
    """What /healthz shows without a key, and invalid flags reported at start and reload."""

    def test_health_without_a_key_shows_only_liveness_and_counts(
        self, server: PhaseFlagServer, ruleset_path: Path
    ):
        """No ETag and no text of a refused file without a key; everything with it."""
        bad = {"schema_version": 1, "version": 9, "flags": "SECRET-FRAGMENT-42"}
        # Replaced in one step: a write in place can be read half-done (an empty file is a
        # refusal of its own, without the fragment this test looks for).
        temp = ruleset_path.with_name("ruleset.json.tmp")
        temp.write_text(json.dumps(bad), "utf-8")
        os.replace(temp, ruleset_path)
        wait_for(lambda: server._source.reload_errors >= 1, timeout=10)  # once settled (2 s)
        public = requests.get(root(server) + "/healthz", timeout=5)
        assert public.status_code == 200
        assert "etag" not in public.json() and server.etag not in public.text
        assert "SECRET-FRAGMENT" not in public.text
        assert public.json()["ruleset_error"]  # the fact, not the text
        keyed = requests.get(root(server) + "/healthz", headers=AUTH, timeout=5).json()
        assert keyed["etag"] == server.etag
        assert "SECRET-FRAGMENT" in keyed["ruleset_error"]

    def test_invalid_flags_are_reported_at_start_and_reload(self, tmp_path: Path, caplog):
        """Isolated INVALID_FLAG flags: a warning at start and at each reload, and a count."""
        caplog.set_level(logging.WARNING, logger="phaseflag")
        bad_flag = boolean_flag("broken", True)
        bad_flag["default"] = {"variation": "nope"}
        doc = document()
        doc["flags"].append(bad_flag)
        path = tmp_path / "r.json"
        path.write_text(json.dumps(doc), "utf-8")
        with PhaseFlagServer(path, api_keys=[KEY], poll_interval=0.05) as srv:
            assert any("1 invalid flag" in r.getMessage() for r in caplog.records)
            health = requests.get(root(srv) + "/healthz", timeout=5).json()
            assert health["invalid_flag_count"] == 1
            caplog.clear()
            doc["version"] = 2
            doc["flags"].append({**bad_flag, "key": "broken2"})
            path.write_text(json.dumps(doc), "utf-8")
            wait_for(lambda: srv.ruleset.version == 2, timeout=5)
            assert any("2 invalid flag" in r.getMessage() for r in caplog.records)
            assert requests.get(root(srv) + "/healthz", timeout=5).json()["invalid_flag_count"] == 2


class TestCommandLine:
    """``phaseflag serve``'s keys and one-line errors."""

    def run_cli(
        self, argv: list[str], capsys, env: dict[str, str] | None = None
    ) -> tuple[int, str]:
        with mock.patch.dict(os.environ, env or {}, clear=False):
            for name in ("PHASEFLAG_SERVER_API_KEY", "PHASEFLAG_API_KEY"):
                if env is None or name not in env:
                    os.environ.pop(name, None)
            code = main(argv)
        err = capsys.readouterr().err.strip()
        return code, err

    def test_no_key_refuses_to_start(self, ruleset_path: Path, capsys):
        """Without any key the server does not start; PHASEFLAG_API_KEY alone is named."""
        code, err = self.run_cli(["serve", str(ruleset_path), "--port", "0"], capsys)
        assert code == 2 and "no API key" in err and "--no-auth" in err and "\n" not in err
        code, err = self.run_cli(
            ["serve", str(ruleset_path)], capsys, env={"PHASEFLAG_API_KEY": "sdk-key-123456"}
        )
        assert code == 2 and "PHASEFLAG_API_KEY is the SDK's key" in err

    def test_directory(self, tmp_path: Path, capsys):
        code, err = self.run_cli(["serve", str(tmp_path), "--no-auth"], capsys)
        assert code == 2 and "is a directory" in err and "\n" not in err

    def test_busy_port(self, ruleset_path: Path, capsys):
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            code, err = self.run_cli(
                ["serve", str(ruleset_path), "--no-auth", "--port", str(port)], capsys
            )
        assert code == 2 and f"127.0.0.1:{port} is already in use" in err
        assert "Errno" not in err and "\n" not in err

    def test_unreadable_file(self, ruleset_path: Path, capsys):
        with mock.patch(
            "pathlib.Path.read_bytes", side_effect=PermissionError(13, "Permission denied")
        ):
            code, err = self.run_cli(["serve", str(ruleset_path), "--no-auth"], capsys)
        assert code == 2 and "cannot read: Permission denied" in err and "\n" not in err

    def test_keys_from_the_environment_and_a_file_not_argv(self, ruleset_path: Path, tmp_path):
        """PHASEFLAG_SERVER_API_KEY and --api-key-file keys work and never appear in argv."""
        key_file = tmp_path / "keys"
        key_file.write_text("file-key-0a1b2c3d\n\n", "utf-8")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PHASEFLAG_SERVER_API_KEY": "env-key-99887766",
        }
        env.pop("PHASEFLAG_API_KEY", None)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "phaseflag",
                "serve",
                str(ruleset_path),
                "--port",
                str(port),
                "--api-key-file",
                str(key_file),
            ],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                if "listening on" in line:
                    break
            url = f"http://127.0.0.1:{port}/api/v1/sdk/ruleset"
            assert requests.get(url, timeout=5).status_code == 401
            for key in ("env-key-99887766", "file-key-0a1b2c3d"):
                assert requests.get(url, headers={"X-API-Key": key}, timeout=5).status_code == 200
            cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
            assert b"env-key" not in cmdline and b"file-key" not in cmdline
        finally:
            proc.terminate()
            assert proc.wait(timeout=10) == 0
