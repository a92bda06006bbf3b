"""Name resolution within the request deadline (phaseflag._resolve): lookups of one name share
one thread, an IP literal never reaches the resolver, a forked child forgets the parent's
lookups, and TLS still verifies the host name (and sends it as SNI) after resolving it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import phaseflag_thread_names, ruleset, string_flag, wait_for

from phaseflag import TransportError
from phaseflag._resolve import ResolveTimeout, resolve
from phaseflag._transport import Transport

HOST = "phaseflag-tls.invalid"
KEY = "sdk-resolve-0123456789abcdef"


@pytest.fixture
def hung(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """getaddrinfo for HOST blocks until ``release`` is set; ``calls`` counts lookups."""
    real = socket.getaddrinfo
    state: dict[str, Any] = {"calls": 0, "release": threading.Event()}

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == HOST:
            state["calls"] += 1
            state["release"].wait(30)
            return real("127.0.0.1", port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    try:
        yield state
    finally:
        state["release"].set()
        wait_for(lambda: phaseflag_thread_names() == [], timeout=5)


def test_lookups_of_one_name_share_one_thread(hung: dict[str, Any]) -> None:
    """Three requests waiting on one hung name cost one lookup thread; each times out on its
    own bound, and a request woken (aborted) returns at once."""
    for _ in range(3):
        with pytest.raises(ResolveTimeout):
            resolve(HOST, 443, socket.AF_UNSPEC, timeout=0.05, wake=threading.Event())
    assert hung["calls"] == 1
    assert phaseflag_thread_names() == ["phaseflag-dns"]
    woken = threading.Event()
    woken.set()
    with pytest.raises(ResolveTimeout):
        resolve(HOST, 443, socket.AF_UNSPEC, timeout=30, wake=woken)
    hung["release"].set()
    assert resolve(HOST, 443, socket.AF_UNSPEC, timeout=5, wake=threading.Event())


def test_ip_literals_never_reach_the_resolver(hung: dict[str, Any]) -> None:
    """An IP address is converted on the calling thread, with AI_NUMERICHOST."""
    for host in ("127.0.0.1", "::1"):
        found = resolve(host, 80, socket.AF_UNSPEC, timeout=0.5, wake=threading.Event())
        assert found and found[0][4][0] == host
    assert phaseflag_thread_names() == []


@pytest.mark.e2e
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_does_not_join_a_parent_lookup(hung: dict[str, Any]) -> None:
    """A child forked while a lookup is in flight resolves on its own thread: the parent's
    lookup has no thread in the child, so joining it would time out forever."""
    with pytest.raises(ResolveTimeout):
        resolve(HOST, 80, socket.AF_UNSPEC, timeout=0.05, wake=threading.Event())
    code = f"""
import os, socket, threading
from phaseflag._resolve import resolve
real, parent = socket.getaddrinfo, os.getpid()
def getaddrinfo(host, port, *args, **kwargs):
    if host == {HOST!r} and os.getpid() == parent:
        threading.Event().wait(30)  # hangs in the parent only
    return real("127.0.0.1" if host == {HOST!r} else host, port, *args, **kwargs)
socket.getaddrinfo = getaddrinfo
try:
    resolve({HOST!r}, 80, 0, timeout=0.05, wake=threading.Event())
except OSError:
    pass
pid = os.fork()
if pid == 0:
    os._exit(0 if resolve({HOST!r}, 80, 0, timeout=5, wake=threading.Event()) else 3)
print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
os._exit(0)
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.stdout.strip() == "0", done.stderr


# -- TLS after a bounded lookup ------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for HOST (a DNS name) and its key, made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    where = tmp_path_factory.mktemp("tls-dns")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", f"/CN={HOST}", "-addext", f"subjectAltName=DNS:{HOST}"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


class _TLSServer:
    """One-request-per-connection HTTPS on 127.0.0.1 that records the SNI names it is sent."""

    def __init__(self, certificate: tuple[Path, Path]) -> None:
        self.names: list[str | None] = []
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(*certificate)
        self.context.sni_callback = lambda _sock, name, _ctx: self.names.append(name)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.body = json.dumps(ruleset(string_flag("greeting", "hello"), version=7)).encode()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(raw, server_side=True) as conn:
                    conn.settimeout(5)
                    request = b""
                    while b"\r\n\r\n" not in request:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        request += chunk
                    head = (
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(self.body)}\r\nConnection: close\r\n\r\n"
                    )
                    conn.sendall(head.encode() + self.body)
            except (OSError, ssl.SSLError):
                raw.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def tls_server(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> Iterator[_TLSServer]:
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == HOST else host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    server = _TLSServer(certificate)
    try:
        yield server
    finally:
        server.close()


def test_tls_verifies_the_name_and_sends_it_as_sni(
    tls_server: _TLSServer, certificate: tuple[Path, Path]
) -> None:
    """The name resolved on the lookup thread is still the one TLS verifies and sends."""
    transport = Transport(
        f"https://{HOST}:{tls_server.port}/api/v1", KEY, timeout=5, verify=str(certificate[0])
    )
    try:
        result = transport.fetch_ruleset(None)
    finally:
        transport.close()
    assert result.body is not None and json.loads(result.body)["version"] == 7
    assert tls_server.names == [HOST]


def test_tls_refuses_a_certificate_for_another_name(
    tls_server: _TLSServer, certificate: tuple[Path, Path]
) -> None:
    """Reached as 127.0.0.1, the certificate for HOST does not match: verification stands."""
    transport = Transport(
        f"https://127.0.0.1:{tls_server.port}/api/v1", KEY, timeout=5, verify=str(certificate[0])
    )
    try:
        with pytest.raises(TransportError, match=r"(?i)certificate|ssl"):
            transport.fetch_ruleset(None)
    finally:
        transport.close()
