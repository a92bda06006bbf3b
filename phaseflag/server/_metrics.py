"""Metrics: the ``/metrics`` page in the Prometheus text format (prometheus-client).

Each server has its own registry (several servers in one process never mix counts).
The request path only increments one labelled counter; everything that mirrors state
(open streams, the ruleset's version and age, reloads, event totals) is read when the
page is scraped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

__all__ = ["Metrics", "State"]

#: What the scrape reads: a dict of the server's current numbers (see ``_State.collect``).
State = Callable[[], dict[str, Any]]


class _StateCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.state: State | None = None
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "phaseflag_server_requests",
            "HTTP requests answered, by route and status",
            labels=("route", "status"),
        )
        for route, status, count in self._metrics.requests():
            requests.add_metric((route, str(status)), count)
        yield requests
        if self.state is None:
            return
        s = self.state()
        yield GaugeMetricFamily(
            "phaseflag_server_open_streams", "Open /sdk/stream connections", s["streams"]
        )
        yield GaugeMetricFamily(
            "phaseflag_server_ruleset_version", "Version of the served ruleset", s["version"]
        )
        yield GaugeMetricFamily(
            "phaseflag_server_ruleset_age_seconds",
            "Seconds since the served ruleset was loaded",
            max(0.0, time.time() - s["loaded_at"]),
        )
        yield GaugeMetricFamily(
            "phaseflag_server_ruleset_flags", "Flags in the served ruleset", s["flags"]
        )
        yield GaugeMetricFamily(
            "phaseflag_server_ruleset_invalid_flags",
            "Flags isolated as INVALID_FLAG in the served ruleset",
            s["invalid_flags"],
        )
        yield CounterMetricFamily(
            "phaseflag_server_reloads", "Ruleset versions applied after the first", s["reloads"]
        )
        yield CounterMetricFamily(
            "phaseflag_server_reload_errors",
            "Ruleset versions refused (invalid or unreadable)",
            s["reload_errors"],
        )
        events = CounterMetricFamily(
            "phaseflag_server_events",
            "Events received, written to the events file, forwarded upstream, or dropped",
            labels=("outcome",),
        )
        for outcome in ("received", "written", "forwarded", "dropped"):
            events.add_metric((outcome,), s[f"events_{outcome}"])
        yield events


class Metrics:
    """The server's counters and the text page that exposes them."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=False)
        #: [count] per (route, status): a plain list cell, incremented on the event loop
        #: (cheaper than a prometheus Counter's lock per request) and read at scrape time.
        self._requests: dict[tuple[str, int], list[int]] = {}
        self._refused = Counter(
            "phaseflag_server_connections_refused",
            "Connections closed by a limit (per_client, max_connections, header_timeout)",
            ("reason",),
            registry=registry,
        )
        self._state = _StateCollector(self)
        registry.register(self._state)

    def read_state_from(self, state: State) -> None:
        """Use ``state()`` for the gauges and state counters at each scrape."""
        self._state.state = state

    def counter_for(self, route: str, status: int) -> Callable[[], None]:
        """The increment of one (route, status) count, looked up once (for a hot route)."""
        cell = self._requests.setdefault((route, status), [0])

        def increment() -> None:
            cell[0] += 1

        return increment

    def count_request(self, route: str, status: int) -> None:
        """Count one answered request."""
        cell = self._requests.get((route, status))
        if cell is None:
            cell = self._requests.setdefault((route, status), [0])
        cell[0] += 1

    def requests(self) -> list[tuple[str, int, int]]:
        """(route, status, count) for every request counted so far."""
        return [(route, status, cell[0]) for (route, status), cell in list(self._requests.items())]

    def count_refused(self, reason: str) -> None:
        """Count one connection closed by a limit."""
        self._refused.labels(reason).inc()

    def render(self) -> bytes:
        """The page."""
        return generate_latest(self.registry)
