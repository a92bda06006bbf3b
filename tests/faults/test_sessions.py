"""A user's own requests session under request_timeout: a custom HTTPAdapter (retries, a
``send`` override) keeps working as configured, yet the SDK's requests through it are bounded
as a whole against a server trickling headers one byte at a time; the user's own requests
through it are untouched; an adapter that cannot be bounded is reported once and still has
its body bounded as a whole."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
import requests
from conftest import ruleset
from requests.adapters import BaseAdapter, HTTPAdapter
from urllib3.util.retry import Retry

from phaseflag import PhaseFlagClient, TransportError
from phaseflag._transport import Transport

from .conftest import KEY, REQUEST_TIMEOUT, FaultServer, failed, serves_during_fault

pytestmark = pytest.mark.fault

#: A request with REQUEST_TIMEOUT (0.5 s) in all must end within this on a loaded machine.
BOUND = REQUEST_TIMEOUT + 1.0


class CountingAdapter(HTTPAdapter):
    """A user's adapter: connect retries, and a ``send`` override that counts requests."""

    def __init__(self) -> None:
        super().__init__(max_retries=Retry(total=2, connect=2, read=False))
        self.sent = 0

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        self.sent += 1
        return super().send(request, *args, **kwargs)


class ForeignAdapter(BaseAdapter):
    """An adapter that is not an HTTPAdapter (it delegates to a private one): the SDK
    cannot reach its connections."""

    def __init__(self) -> None:
        super().__init__()
        self._inner = HTTPAdapter()

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return self._inner.send(request, *args, **kwargs)

    def close(self) -> None:
        self._inner.close()


def timed_fetch(transport: Transport) -> float:
    """Seconds until fetch_ruleset fails at its deadline; run in a helper thread so that a
    regression fails (after 10 s) instead of hanging."""
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            transport.fetch_ruleset(None)
        except TransportError as exc:
            errors.append(exc)

    thread = threading.Thread(target=fetch, daemon=True)
    began = time.monotonic()
    thread.start()
    thread.join(10)
    took = time.monotonic() - began
    assert not thread.is_alive(), "still blocked after 10 s"
    assert errors and "request_timeout" in str(errors[0]), errors
    return took


@pytest.mark.parametrize("mount", ["origin", "scheme"])
def test_custom_adapter_bounded_as_a_whole(server: FaultServer, mount: str) -> None:
    """Headers trickled a byte per 50 ms (every read in time) are cut at request_timeout
    through the user's adapter, mounted for the origin or for all of http://; it stays the
    session's adapter and keeps its send override."""
    session = requests.Session()
    adapter = CountingAdapter()
    prefix = f"http://127.0.0.1:{server.port}/" if mount == "origin" else "http://"
    session.mount(prefix, adapter)
    transport = Transport(server.base_url, KEY, timeout=REQUEST_TIMEOUT, session=session)
    try:
        assert transport.fetch_ruleset(None).body  # ok mode: works through the adapter
        server.set(ruleset="trickle_head")
        took = timed_fetch(transport)
        assert took < BOUND, took
        per_request = server.sent["trickle_head"] / server.count("ruleset", "trickle_head")
        assert per_request < 100  # about 10 header bytes arrive in 0.5 s
        assert session.get_adapter(server.base_url) is adapter
        assert adapter.sent == 2
    finally:
        transport.close()
        server.set(ruleset="ok")
        session.close()


def test_users_own_requests_through_an_adopted_adapter_are_untouched(
    server: FaultServer,
) -> None:
    """The user's requests through the adapter are not SDK requests: no deadline applies to
    them (a 0.5 s SDK timeout does not cut the 1 s trickle of a small body the user waits for)."""
    session = requests.Session()
    session.mount("http://", CountingAdapter())
    transport = Transport(server.base_url, KEY, timeout=REQUEST_TIMEOUT, session=session)
    server.publish(ruleset(version=5))
    server.trickle_every = 0.02
    server.set(ruleset="trickle")
    try:
        began = time.monotonic()
        answer = session.get(f"{server.base_url}/sdk/ruleset", timeout=5)
        took = time.monotonic() - began
        assert answer.status_code == 200 and answer.json()["version"] == 5
        assert took > 2 * REQUEST_TIMEOUT
    finally:
        transport.close()
        server.set(ruleset="ok")
        session.close()


def test_adapter_that_cannot_be_bounded_is_reported_once(
    server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A foreign adapter is warned about once (naming its origin and class); its requests
    work, and a trickled body is still cut at request_timeout."""
    session = requests.Session()
    session.mount("http://", ForeignAdapter())
    with caplog.at_level(logging.WARNING, logger="phaseflag"):
        transport = Transport(server.base_url, KEY, timeout=REQUEST_TIMEOUT, session=session)
        again = Transport(server.base_url, KEY, timeout=REQUEST_TIMEOUT, session=session)
    warnings = [r.getMessage() for r in caplog.records if "cannot bound" in r.getMessage()]
    assert len(warnings) == 1
    assert "ForeignAdapter" in warnings[0] and f"127.0.0.1:{server.port}" in warnings[0]
    try:
        assert transport.fetch_ruleset(None).body
        server.set(ruleset="trickle")
        assert timed_fetch(transport) < BOUND
    finally:
        transport.close()
        again.close()
        server.set(ruleset="ok")
        session.close()


def test_client_with_a_custom_adapter_session_counts_trickles_as_failures(
    server: FaultServer, make_client: Any
) -> None:
    """The client polling through a session with a custom adapter: trickled headers are
    failures at request_timeout, reads carry on."""
    session = requests.Session()
    session.mount("http://", CountingAdapter())
    try:
        client: PhaseFlagClient = make_client(server.base_url, session=session)
        assert client.wait_until_ready(5)
        server.set(ruleset="trickle_head")
        serves_during_fault(client, failed(client, 2))
        assert "no complete answer within 0.5 s" in (client.status().last_error or "")
    finally:
        server.set(ruleset="ok")
        session.close()
