"""Streaming faults: a stream that sends garbage, broken and half events, then hangs up."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import wait_for

from phaseflag import PhaseFlagClient
from phaseflag._stream import Streamer

from .conftest import FaultServer, hit, recovers, serves_during_fault

pytestmark = pytest.mark.fault


def test_garbage_stream_keeps_last_good_then_streams_again(
    server: FaultServer, make_client: Callable[..., PhaseFlagClient]
) -> None:
    """Noise, invalid rulesets and half events never replace the held ruleset; once the stream
    is sane again the client takes the next version from it (polling is failing meanwhile)."""
    client = make_client(server.base_url, fetch_mode="streaming")
    assert client.wait_until_ready(5)
    streamer = client._sync
    assert isinstance(streamer, Streamer)
    wait_for(lambda: not streamer.polling)
    server.set(stream="garbage", ruleset="503")
    serves_during_fault(client, hit(server, "garbage", 3, endpoint="stream"))
    assert client.status().consecutive_failures >= 1
    assert recovers(client, server, stream="ok", ruleset="503") < 2
    wait_for(lambda: not streamer.polling)


def test_stream_down_falls_back_to_polling(
    server: FaultServer, make_client: Callable[..., PhaseFlagClient]
) -> None:
    """While the stream answers 503 the fallback poller delivers new versions."""
    client = make_client(server.base_url, fetch_mode="streaming")
    assert client.wait_until_ready(5)
    server.set(stream="503")
    serves_during_fault(client, hit(server, "503", 2, endpoint="stream"))
    assert recovers(client, server, stream="503", ruleset="ok") < 2
    assert client._sync.polling
