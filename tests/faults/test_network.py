"""Network faults: refused, unresolvable, connect and read timeouts, silence, trickles, resets.

Every scenario: the client holds version 1, meets the fault, keeps serving version 1 at
normal read latency, then picks up version 2 by itself once the fault ends.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import phaseflag_thread_names, wait_for

from phaseflag import EvaluationEvent, PhaseFlagClient, TransportError
from phaseflag._transport import Transport

from .conftest import (
    CONTEXT,
    KEY,
    REQUEST_TIMEOUT,
    FaultServer,
    failed,
    hit,
    recovers,
    serves_during_fault,
)

pytestmark = pytest.mark.fault

HOST = "phaseflag-test.invalid"


@dataclass
class Resolver:
    """The resolver's state: HOST resolves while ``up``; with ``hang`` a lookup of HOST blocks
    (``entered`` is set) until ``release`` is set, as a resolver that never answers does."""

    up: bool = True
    hang: bool = False
    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Resolver]:
    """Controls whether HOST resolves (to 127.0.0.1); when it does not, the real resolver is
    asked, and ``.invalid`` never resolves (RFC 6761). Hung lookups end at teardown."""
    real = socket.getaddrinfo
    state = Resolver()

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == HOST and state.hang:
            state.entered.set()
            state.release.wait(60)
        if host == HOST and state.up:
            return real("127.0.0.1", port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    try:
        yield state
    finally:
        state.release.set()


def test_connection_refused(live_client: PhaseFlagClient, server: FaultServer) -> None:
    """With the port closed the client serves version 1, then reconnects when it reopens."""
    server.down()
    serves_during_fault(live_client, failed(live_client))
    assert "ConnectionError" in (live_client.status().last_error or "")
    server.up()
    assert recovers(live_client, server) < 2


def test_name_resolution_failure(
    server: FaultServer,
    make_client: Callable[..., PhaseFlagClient],
    resolver: Resolver,
) -> None:
    """An unresolvable host name is a retried network error; the client recovers once it
    resolves again."""
    server.keep_alive = False  # every poll connects, so every poll resolves the name
    client = make_client(server.url_for(HOST))
    assert client.wait_until_ready(5)
    resolver.up = False
    serves_during_fault(client, failed(client))
    assert "resolve" in (client.status().last_error or "").lower()
    resolver.up = True
    assert recovers(client, server) < 2


def test_hung_resolver_costs_one_deadline(
    server: FaultServer,
    make_client: Callable[..., PhaseFlagClient],
    resolver: Resolver,
) -> None:
    """A resolver that never answers holds each poll for request_timeout, no longer: polls
    fail as timeouts, reads carry on, and the client recovers once names resolve again."""
    server.keep_alive = False
    client = make_client(server.url_for(HOST))
    assert client.wait_until_ready(5)
    resolver.hang = True
    serves_during_fault(client, failed(client, 2))
    assert resolver.entered.is_set()
    assert "no complete answer within 0.5 s" in (client.status().last_error or "")
    transport = Transport(server.url_for(HOST), KEY, timeout=REQUEST_TIMEOUT)
    began = time.monotonic()
    with pytest.raises(TransportError, match="request_timeout"):
        transport.fetch_ruleset(None)
    took = time.monotonic() - began
    transport.close()
    assert REQUEST_TIMEOUT * 0.9 <= took < REQUEST_TIMEOUT + 1.0, took
    resolver.hang = False
    resolver.release.set()
    assert recovers(client, server) < 2


def test_stop_within_a_second_while_the_resolver_hangs(
    server: FaultServer,
    make_client: Callable[..., PhaseFlagClient],
    resolver: Resolver,
) -> None:
    """With a 30 s request_timeout and the first poll, an evaluate() and a flush all waiting
    on a hung resolver, stop() returns within a second and every call returns at once; only
    the lookup thread stays, until the resolver answers."""
    resolver.hang = True
    client = make_client(server.url_for(HOST), request_timeout=30.0)
    client.track_event(EvaluationEvent("flag", "on", "user-1"))
    results: list[Any] = []
    calls = [
        threading.Thread(target=lambda: results.append(client.evaluate("flag", CONTEXT))),
        threading.Thread(target=lambda: results.append(client.flush_events())),
    ]
    for thread in calls:
        thread.start()
    assert resolver.entered.wait(5)
    began = time.monotonic()
    client.stop()
    took = time.monotonic() - began
    assert took < 1.0, f"stop() took {took:.2f} s"
    for thread in calls:
        thread.join(5)
        assert not thread.is_alive()
    assert len(results) == 2 and False in results  # the flush delivered nothing
    assert wait_for(lambda: set(phaseflag_thread_names()) <= {"phaseflag-dns"}, timeout=1.0)
    assert phaseflag_thread_names().count("phaseflag-dns") == 1  # one lookup of one name
    assert server.count("ruleset", "ok") == 0
    resolver.release.set()
    assert wait_for(lambda: phaseflag_thread_names() == [], timeout=5)


def test_connect_timeout(live_client: PhaseFlagClient, server: FaultServer) -> None:
    """A server whose accept queue is full times connects out; reads carry on meanwhile."""
    server.blackhole()
    serves_during_fault(live_client, failed(live_client))
    assert "request_timeout" in (live_client.status().last_error or "")
    server.up()
    assert recovers(live_client, server) < 3


def test_read_timeout_mid_body(live_client: PhaseFlagClient, server: FaultServer) -> None:
    """A body that stops after 100 bytes is cut at the request's deadline, and retried."""
    server.set(ruleset="stall")
    serves_during_fault(live_client, failed(live_client))
    assert "no complete answer within 0.5 s" in (live_client.status().last_error or "")
    assert recovers(live_client, server) < 2


def test_server_never_answers(live_client: PhaseFlagClient, server: FaultServer) -> None:
    """A server that accepts and never sends a byte costs one deadline per attempt."""
    server.set(ruleset="hang")
    serves_during_fault(live_client, failed(live_client))
    assert "no complete answer within 0.5 s" in (live_client.status().last_error or "")
    assert recovers(live_client, server) < 2


def test_server_closes_without_answer(live_client: PhaseFlagClient, server: FaultServer) -> None:
    """A connection closed before any answer is a retried network error."""
    server.set(ruleset="close")
    serves_during_fault(live_client, failed(live_client, 3))
    assert recovers(live_client, server) < 2


def test_trickling_body_cut_at_the_deadline(
    server: FaultServer, make_client: Callable[..., PhaseFlagClient]
) -> None:
    """A body trickling faster than any read timeout is cut at request_timeout, which
    bounds the whole request (on 0.5 s of a 50 ms trickle, about 10 bytes arrive)."""
    client = make_client(server.base_url)
    assert client.wait_until_ready(5)
    server.set(ruleset="trickle")
    wait_for(hit(server, "trickle", 1))
    serves_during_fault(client, failed(client, 1))
    assert "no complete answer within 0.5 s" in (client.status().last_error or "")
    assert server.sent["trickle"] < 100  # 10x what 0.5 s of trickle delivers
    assert recovers(client, server) < 2


def test_connection_reset_mid_body(live_client: PhaseFlagClient, server: FaultServer) -> None:
    """A TCP reset halfway through the body rejects that fetch only."""
    server.set(ruleset="reset")
    serves_during_fault(live_client, failed(live_client, 3))
    error = live_client.status().last_error or ""
    assert "reset" in error.lower() or "connection" in error.lower(), error
    assert recovers(live_client, server) < 2


def test_stop_during_a_hung_request_is_bounded(
    live_client: PhaseFlagClient, server: FaultServer
) -> None:
    """stop() returns within its one-second join even while a request hangs."""
    server.set(ruleset="hang")
    wait_for(hit(server, "hang", 1))
    began = time.monotonic()
    live_client.stop()
    assert time.monotonic() - began < 1.5
    assert live_client.get_boolean_value("flag", False, CONTEXT) is True
