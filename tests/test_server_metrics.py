"""``/metrics``: the Prometheus text page of ``phaseflag serve``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import boolean_flag, ruleset, wait_for
from prometheus_client.parser import text_string_to_metric_families

from phaseflag.server import PhaseFlagServer

pytestmark = pytest.mark.e2e

KEY = "metrics-key-3b4c5d6e"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def ruleset_path(tmp_path: Path) -> Path:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(ruleset(boolean_flag("a", True), version=3)), "utf-8")
    return path


@pytest.fixture
def server(ruleset_path: Path, tmp_path: Path) -> Iterator[PhaseFlagServer]:
    with PhaseFlagServer(
        ruleset_path, api_keys=[KEY], events_out=str(tmp_path / "e.jsonl"), poll_interval=0.05
    ) as srv:
        yield srv


def replace(path: Path, text: str) -> None:
    """Replace ``path`` in one step, as an operator's deploy would: a write in place can be
    read half-done, which is a refusal of its own and would count twice."""
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(text, "utf-8")
    os.replace(temp, path)


def scrape(server: PhaseFlagServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on the page, parsed by prometheus-client's own parser."""
    resp = requests.get(server.url.removesuffix("/api/v1") + "/metrics", headers=AUTH, timeout=5)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(resp.text)
        for sample in family.samples
    }


def test_metrics_need_the_key(server: PhaseFlagServer):
    resp = requests.get(server.url.removesuffix("/api/v1") + "/metrics", timeout=5)
    assert resp.status_code == 401 and "phaseflag_server" not in resp.text


def test_requests_streams_ruleset_reloads_and_events(server: PhaseFlagServer, ruleset_path: Path):
    """Each family counts what happened: requests by route and status, streams, reloads..."""
    url = server.url + "/sdk/ruleset"
    etag = requests.get(url, headers=AUTH, timeout=5).headers["ETag"]
    for _ in range(3):
        assert (
            requests.get(url, headers={**AUTH, "If-None-Match": etag}, timeout=5).status_code == 304
        )
    requests.get(url, timeout=5)  # 401
    stream = requests.get(server.url + "/sdk/stream", headers=AUTH, stream=True, timeout=5)
    try:
        wait_for(lambda: scrape(server)[("phaseflag_server_open_streams", ())] == 1)
        samples = scrape(server)
        route = "/api/v1/sdk/ruleset"
        assert (
            samples[("phaseflag_server_requests_total", (("route", route), ("status", "200")))] == 1
        )
        assert (
            samples[("phaseflag_server_requests_total", (("route", route), ("status", "304")))] == 3
        )
        assert (
            samples[("phaseflag_server_requests_total", (("route", route), ("status", "401")))] == 1
        )
        assert samples[("phaseflag_server_ruleset_version", ())] == 3
        assert samples[("phaseflag_server_ruleset_age_seconds", ())] >= 0
        assert samples[("phaseflag_server_reloads_total", ())] == 0
    finally:
        stream.close()
    replace(ruleset_path, "{broken")
    # Refused once the file has settled (2 s after the write).
    wait_for(lambda: scrape(server)[("phaseflag_server_reload_errors_total", ())] == 1, 10)
    replace(ruleset_path, json.dumps(ruleset(boolean_flag("a", False), version=4)))
    wait_for(lambda: scrape(server)[("phaseflag_server_reloads_total", ())] == 1)
    batch = {"events": [{"kind": "custom", "flag_key": "a"}] * 4}
    assert requests.post(server.url + "/sdk/events", json=batch, headers=AUTH, timeout=5).ok
    samples = scrape(server)
    assert samples[("phaseflag_server_ruleset_version", ())] == 4
    for outcome, value in (("received", 4), ("written", 4), ("forwarded", 0), ("dropped", 0)):
        assert samples[("phaseflag_server_events_total", (("outcome", outcome),))] == value
    wait_for(lambda: scrape(server)[("phaseflag_server_open_streams", ())] == 0)
