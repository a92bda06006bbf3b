"""Security: the API key stays secret (logs, reprs, errors, cache files, redirects), the file cache
trusts only private files, TLS verification cannot be switched off silently, and only http(s)
URLs are accepted. Server-side checks live in the server's own tests."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import ssl
import subprocess
import threading
import traceback
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    READY_WAIT,
    LoopbackAPI,
    _handler_for,
    boolean_flag,
    ruleset,
    to_bytes,
    wait_for,
)
from faults.conftest import FaultServer, document

import phaseflag._backoff
import phaseflag._transport
from phaseflag import (
    ConfigError,
    EvaluationContext,
    EvaluationEvent,
    FileCache,
    PhaseFlagClient,
)
from phaseflag._cache import cache_key

KEY = "sdk-SECRET-d41d8cd98f00b204e9800998ecf8427e"
#: Every slice of the key long enough to identify it (the redacted form shows the last 4).
SECRETS = [KEY, KEY[:-4], KEY[4:-4], "d41d8cd98f00b204"]
FAST = {"polling_interval": 0.05, "event_flush_interval": 0.05, "request_timeout": 0.3}
# request_timeout bounds the whole request, TLS handshake included, and the test server
# handshakes inside accept() on its one thread: 5 s so that a loaded machine fails (or
# succeeds) on the certificate, never on the deadline.
TLS = {"request_timeout": 5.0, "send_events": False}


def assert_secret(text: str, where: str) -> None:
    """Fail when any part of the API key appears in ``text``."""
    for secret in SECRETS:
        assert secret not in text, f"the API key leaked into {where}"


def exception_text(exc: BaseException) -> str:
    """An exception's message, repr and full traceback, causes included."""
    return str(exc) + repr(exc) + "".join(traceback.format_exception(exc))


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    """A FaultServer serving ``document(1, True)``."""
    server = FaultServer(document(1, True))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def clients() -> Iterator[Callable[..., PhaseFlagClient]]:
    """``make(**options)``: a started client with KEY; all are stopped after the test."""
    made: list[PhaseFlagClient] = []

    def make(**options: Any) -> PhaseFlagClient:
        client = PhaseFlagClient(api_key=KEY, **{**FAST, **options})
        made.append(client)
        client.start()
        return client

    yield make
    for client in made:
        client.stop()


# -- the key never leaks ------------------------------------------------------------------------


def test_key_absent_from_logs_reprs_and_errors_through_every_fault(
    fault_server: FaultServer,
    clients: Callable[..., PhaseFlagClient],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DEBUG logs (SDK, urllib3), reprs, status and every reported exception stay free of the
    key while syncs and event posts fail in every way the fault server knows."""
    monkeypatch.setattr(phaseflag._backoff, "MAX_RETRY_AFTER", 0.2)
    monkeypatch.setattr(phaseflag._backoff, "RETRY_CAP", 0.2)
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    client = clients(base_url=fault_server.base_url)
    client.on("error", errors.append)
    assert client.wait_until_ready(READY_WAIT)
    faults = ["503", "retry_after", "hang", "reset", "html", "bad_schema", "huge_unframed"]
    for mode in faults:
        fault_server.set(ruleset=mode, events="503")
        client.track_event(EvaluationEvent("flag", "on", "user-1", metadata={"mode": mode}))
        wait_for(lambda mode=mode: fault_server.count("ruleset", mode) >= 1, timeout=5)
        wait_for(lambda: bool(errors), timeout=5)
    client.flush_events()
    fault_server.down()
    wait_for(lambda: "ConnectionError" in (client.status().last_error or ""), timeout=5)
    client.evaluate("flag", EvaluationContext(user_id="u"))
    streaming = clients(base_url=fault_server.base_url, fetch_mode="streaming")
    streaming.on("error", errors.append)
    wait_for(lambda: streaming.status().consecutive_failures >= 1, timeout=5)

    assert len(errors) >= len(faults)
    for exc in errors:
        assert_secret(exception_text(exc), f"a reported {type(exc).__name__}")
    for record in caplog.records:
        assert_secret(record.getMessage(), "a log message")
    assert_secret(caplog.text, "the formatted log (tracebacks included)")
    for shown in (client, client._transport, client._settings, client.status(), streaming):
        assert_secret(repr(shown) + str(shown), f"repr of {type(shown).__name__}")


def test_key_absent_from_auth_failures(
    loopback_api: LoopbackAPI, caplog: pytest.LogCaptureFixture
) -> None:
    """A 401 is reported as an AuthenticationError that does not quote the key."""
    caplog.set_level(logging.DEBUG)
    loopback_api.status = 401
    errors: list[BaseException] = []
    # The listener is registered before start(): the first 401 may arrive at once, and the
    # next attempt only after the auth backoff.
    client = PhaseFlagClient(api_key=KEY, base_url=loopback_api.base_url, **FAST)
    client.on("error", errors.append)
    try:
        client.start()
        wait_for(lambda: errors, timeout=5)
    finally:
        client.stop()
    assert type(errors[0]).__name__ == "AuthenticationError"
    assert_secret(exception_text(errors[0]), "the AuthenticationError")
    assert_secret(caplog.text, "the log")
    assert loopback_api.calls("/sdk/ruleset")[0].headers["Authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("bad", [KEY + " ", KEY + "\n", "é" + KEY, KEY.replace("-", "\x00")])
def test_malformed_key_errors_do_not_quote_it(bad: str) -> None:
    """A ConfigError for a key with spaces, newlines or odd characters never shows the key."""
    with pytest.raises(ConfigError) as info:
        PhaseFlagClient(base_url="http://127.0.0.1:9/api/v1", api_key=bad)
    assert_secret(exception_text(info.value), "the ConfigError")


def test_cache_directory_never_holds_the_key(
    loopback_api: LoopbackAPI, clients: Callable[..., PhaseFlagClient], tmp_path: Path
) -> None:
    """File names and bytes under a FileCache directory contain no part of the key."""
    cache_dir = tmp_path / "cache"
    client = clients(base_url=loopback_api.base_url, cache=FileCache(cache_dir))
    assert client.wait_until_ready(READY_WAIT)

    def cached_files() -> list[Path]:  # written after readiness, on the sync thread
        return [p for p in cache_dir.rglob("*") if p.is_file()]

    files = wait_for(cached_files, READY_WAIT)
    for path in files:
        assert_secret(str(path.relative_to(tmp_path)), "a cache file name")
        data = path.read_bytes()
        for secret in SECRETS:
            assert secret.encode() not in data, f"the API key leaked into {path}"


@pytest.mark.e2e
def test_key_not_forwarded_on_a_redirect_to_another_host(
    clients: Callable[..., PhaseFlagClient],
) -> None:
    """A ruleset request redirected to another host is refused: that host gets nothing (no
    key, no request at all) and the refusal is a reported, counted sync failure."""
    other = LoopbackAPI()
    with _serve(other, "127.0.0.2") as other_url, _redirector(other_url) as origin:
        client = clients(base_url=origin, send_events=False)
        assert wait_for(lambda: client.status().consecutive_failures >= 1)
        error = client.status().last_error or ""
        received = other.calls("/sdk/ruleset")
    assert received == []
    assert not client.is_ready
    assert "another origin" in error


def test_bootstrap_url_gets_no_key(
    loopback_api: LoopbackAPI, clients: Callable[..., PhaseFlagClient]
) -> None:
    """The bootstrap URL (usually a third-party CDN) is fetched without the key (it is
    fetched when the first live fetch brought nothing: here the API refuses connections)."""
    cdn = LoopbackAPI(document=ruleset(boolean_flag("cdn-flag"), version=1))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_api = f"http://127.0.0.1:{probe.getsockname()[1]}/api/v1"
    with _serve(cdn, "127.0.0.1") as cdn_url:
        client = clients(base_url=dead_api, bootstrap_url=cdn_url + "/sdk/ruleset")
        assert wait_for(lambda: client.status().ruleset_source == "bootstrap")
        fetched = cdn.calls("/sdk/ruleset")
    assert fetched
    for request in fetched:
        assert "Authorization" not in request.headers
        assert_secret(str(request.headers), "the bootstrap request")


# -- the file cache trusts only private files ---------------------------------------------------


def _plant(cache_dir: Path, base_url: str, value: bool, version: int) -> Path:
    """Store a ruleset for (base_url, KEY) through FileCache, as an earlier run would have."""
    FileCache(cache_dir).set(cache_key(base_url, KEY), to_bytes(document(version, value)))
    [path] = [p for p in (cache_dir / "cache").iterdir() if not p.name.startswith(".")]
    return path


@pytest.mark.parametrize("tamper", ["world_writable", "group_writable", "other_owner", "symlink"])
def test_untrusted_cache_file_is_not_loaded(
    tamper: str,
    tmp_path: Path,
    clients: Callable[..., PhaseFlagClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A cache file that others could have written (mode, owner, symlink) is refused with a
    warning: the client keeps its bootstrap values instead of the planted ones."""
    if tamper == "other_owner" and os.geteuid() != 0:
        pytest.skip("only root can give a file to another user")
    base_url = f"http://127.0.0.1:{_closed_port()}/api/v1"
    cache_dir = tmp_path / "cache"
    path = _plant(cache_dir, base_url, value=False, version=99)
    if tamper == "world_writable":
        path.chmod(0o646)
    elif tamper == "group_writable":
        path.chmod(0o660)
    elif tamper == "other_owner":
        os.chown(path, 4242, 4242)
    else:
        real = tmp_path / "elsewhere.json"
        path.rename(real)
        path.symlink_to(real)
    caplog.set_level(logging.WARNING, logger="phaseflag")
    client = clients(
        base_url=base_url,
        cache=FileCache(cache_dir),
        bootstrap=document(1, True),
        offline_mode=True,
    )
    assert client.get_boolean_value("flag", False, _PRO) is True
    assert client.status().ruleset_version == 1
    assert "refusing to read" in caplog.text


def test_private_cache_file_is_loaded(
    tmp_path: Path, clients: Callable[..., PhaseFlagClient]
) -> None:
    """The same planted file, private to this user, is used (so the refusals above are real)."""
    base_url = f"http://127.0.0.1:{_closed_port()}/api/v1"
    cache_dir = tmp_path / "cache"
    _plant(cache_dir, base_url, value=False, version=99)
    client = clients(
        base_url=base_url,
        cache=FileCache(cache_dir),
        bootstrap=document(1, True),
        offline_mode=True,
    )
    assert client.status().ruleset_version == 99
    assert client.get_boolean_value("flag", True, _PRO) is False


_PRO = EvaluationContext(user_id="u", attributes={"plan": "pro"})


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.fixture
def tls_api(certificate: tuple[Path, Path]) -> Iterator[tuple[LoopbackAPI, str]]:
    """A LoopbackAPI over HTTPS with the self-signed certificate; yields it and its base URL."""
    api = LoopbackAPI()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    with _serve(api, "127.0.0.1", tls=context) as url:
        yield api, url


def test_tls_verified_by_default(
    tls_api: tuple[LoopbackAPI, str], clients: Callable[..., PhaseFlagClient]
) -> None:
    """An untrusted certificate fails the sync; nothing is loaded from that server."""
    _, url = tls_api
    client = clients(base_url=url, **TLS)
    wait_for(lambda: client.status().consecutive_failures >= 1, timeout=READY_WAIT)
    assert "CERTIFICATE_VERIFY_FAILED" in (client.status().last_error or "")
    assert not client.is_ready


def test_session_with_verify_false_still_verifies(
    tls_api: tuple[LoopbackAPI, str], clients: Callable[..., PhaseFlagClient]
) -> None:
    """A user's requests.Session with ``verify = False`` does not switch verification off."""
    import requests

    session = requests.Session()
    session.verify = False
    _, url = tls_api
    client = clients(base_url=url, session=session, **TLS)
    wait_for(lambda: client.status().consecutive_failures >= 1, timeout=READY_WAIT)
    assert "CERTIFICATE_VERIFY_FAILED" in (client.status().last_error or "")
    session.close()


def test_ca_bundle_trusts_the_server(
    tls_api: tuple[LoopbackAPI, str],
    certificate: tuple[Path, Path],
    clients: Callable[..., PhaseFlagClient],
) -> None:
    """``verify=<CA bundle>`` trusts exactly that bundle's certificates."""
    _, url = tls_api
    client = clients(base_url=url, verify=str(certificate[0]), **TLS)
    assert client.wait_until_ready(READY_WAIT)


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
@pytest.mark.parametrize("how", ["argument", "environment"])
def test_verify_false_works_but_warns(
    how: str,
    tls_api: tuple[LoopbackAPI, str],
    clients: Callable[..., PhaseFlagClient],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``verify=False`` (or PHASEFLAG_VERIFY=false) connects, and says so in a warning."""
    caplog.set_level(logging.WARNING, logger="phaseflag")
    _, url = tls_api
    if how == "environment":
        monkeypatch.setenv("PHASEFLAG_VERIFY", "false")
        client = clients(base_url=url, **TLS)
    else:
        client = clients(base_url=url, verify=False, **TLS)
    assert client.wait_until_ready(READY_WAIT)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("TLS verification disabled" in r.getMessage() for r in warnings)


# -- URL schemes --------------------------------------------------------------------------------

BAD_URLS = [
    "file:///etc/passwd",
    "ftp://example.com/api/v1",
    "javascript:alert(1)",
    "data:application/json,{}",
    "gopher://127.0.0.1:70/",
    "ws://127.0.0.1/api/v1",
    "//example.com/api/v1",
    "example.com/api/v1",
    "http://",
    " file:///etc/passwd",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_base_url_rejects_other_schemes(url: str) -> None:
    """base_url must be http(s) with a host: anything else is a ConfigError naming base_url."""
    with pytest.raises(ConfigError, match="base_url"):
        PhaseFlagClient(base_url=url, api_key=KEY)


@pytest.mark.parametrize("url", BAD_URLS)
def test_bootstrap_url_rejects_other_schemes(url: str) -> None:
    """bootstrap_url must be http(s) with a host: anything else is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="bootstrap_url"):
        PhaseFlagClient(base_url="http://127.0.0.1:9/api/v1", api_key=KEY, bootstrap_url=url)


@pytest.mark.parametrize("url", BAD_URLS[:3])
def test_environment_urls_reject_other_schemes(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same holds for PHASEFLAG_BASE_URL and PHASEFLAG_BOOTSTRAP_URL."""
    monkeypatch.setenv("PHASEFLAG_BASE_URL", url)
    with pytest.raises(ConfigError, match="BASE_URL"):
        PhaseFlagClient(api_key=KEY)
    monkeypatch.setenv("PHASEFLAG_BASE_URL", "http://127.0.0.1:9/api/v1")
    monkeypatch.setenv("PHASEFLAG_BOOTSTRAP_URL", url)
    with pytest.raises(ConfigError, match="BOOTSTRAP_URL"):
        PhaseFlagClient(api_key=KEY)


# -- helpers ------------------------------------------------------------------------------------


class _Serving:
    """Runs ``server`` in a thread for a ``with`` block and yields its base URL."""

    def __init__(self, server: ThreadingHTTPServer, url: str) -> None:
        self.server, self.url = server, url
        self.thread = threading.Thread(target=server.serve_forever, name="sec-http", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return self.url

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def _serve(api: LoopbackAPI, host: str, tls: ssl.SSLContext | None = None) -> _Serving:
    server = ThreadingHTTPServer((host, 0), _handler_for(api))
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    api.server = server
    scheme = "https" if tls is not None else "http"
    return _Serving(server, f"{scheme}://{host}:{server.server_address[1]}/api/v1")


def _redirector(target: str) -> _Serving:
    """Answers every request with a 302 to the same path under ``target``'s origin."""
    origin = target.removesuffix("/api/v1")

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", origin + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    server.daemon_threads = True
    return _Serving(server, f"http://127.0.0.1:{server.server_address[1]}/api/v1")


def _closed_port() -> int:
    """A loopback port with nothing listening (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
