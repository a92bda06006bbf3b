"""phaseflag.otel against the real opentelemetry-sdk with in-memory exporters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from phaseflag import EvaluationContext, PhaseFlagClient
from phaseflag.otel import EVENT_NAME, OpenTelemetryHook, instrument, register_metrics
from phaseflag.testing import condition, create_mock_client, flag, rule, ruleset

DOC = ruleset(
    flag(
        "checkout",
        variations={"on": True, "off": False},
        default="off",
        rules=[rule(condition("plan", "in", "pro"), serve="on", id="pro")],
    ),
    flag("split", variations={"a": "A", "b": "B"}, default={"a": 50, "b": 50}),
    flag("config", {"retries": 2}),
    version=12,
)
PRO = EvaluationContext(user_id="user-7", attributes={"plan": "pro"})


class Telemetry:
    def __init__(self) -> None:
        self.logs = InMemoryLogRecordExporter()
        self.logger_provider = LoggerProvider()
        self.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(self.logs))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))

    def events(self) -> list[dict[str, Any]]:
        out = []
        for data in self.logs.get_finished_logs():
            record = data.log_record
            assert record.event_name == EVENT_NAME
            out.append(dict(record.attributes or {}))
        return out

    def metrics(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        data = self.reader.get_metrics_data()
        out: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                assert scope.scope.name == "phaseflag"
                for metric in scope.metrics:
                    out[metric.name] = [
                        (dict(p.attributes or {}), p.value) for p in metric.data.data_points
                    ]
        return out

    def shutdown(self) -> None:
        self.logger_provider.shutdown()
        self.meter_provider.shutdown()
        self.tracer_provider.shutdown()


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    t = Telemetry()
    yield t
    t.shutdown()


@pytest.fixture
def client() -> Iterator[PhaseFlagClient]:
    c = create_mock_client(bootstrap=DOC)
    yield c
    c.stop()


def _hook(otel: Telemetry, **kw: Any) -> OpenTelemetryHook:
    return OpenTelemetryHook(
        logger_provider=otel.logger_provider, meter_provider=otel.meter_provider, **kw
    )


class TestEvaluationEvent:
    def test_served_flag_attributes(self, client: PhaseFlagClient, otel: Telemetry) -> None:
        client.add_hook(_hook(otel))
        assert client.get_boolean_value("checkout", False, PRO) is True
        assert otel.events() == [
            {
                "feature_flag.key": "checkout",
                "feature_flag.provider.name": "phaseflag",
                "feature_flag.result.variant": "on",
                "feature_flag.result.reason": "targeting_match",
                "feature_flag.version": "12",
                "feature_flag.context.id": "user-7",
            }
        ]

    def test_reason_mapping_split_and_default(
        self, client: PhaseFlagClient, otel: Telemetry
    ) -> None:
        client.add_hook(_hook(otel))
        client.get_string_value("split", "", PRO)
        client.get_boolean_value("checkout", True, EvaluationContext(session_id="s-1"))
        first, second = otel.events()
        assert first["feature_flag.result.reason"] == "split"
        assert first["feature_flag.result.variant"] in ("a", "b")
        assert second["feature_flag.result.reason"] == "default"
        assert second["feature_flag.context.id"] == "s-1"

    def test_error_attributes(self, client: PhaseFlagClient, otel: Telemetry) -> None:
        client.add_hook(_hook(otel))
        client.get_boolean_value("missing", True)
        client.get_integer_value("checkout", 3, PRO)
        missing, mistyped = otel.events()
        assert missing["error.type"] == "flag_not_found"
        assert missing["feature_flag.result.reason"] == "error"
        assert "missing" in missing["error.message"]
        assert "feature_flag.error.message" not in missing  # the older, deprecated name
        assert "feature_flag.result.variant" not in missing
        assert mistyped["error.type"] == "type_mismatch"
        assert "feature_flag.context.id" in mistyped

    def test_values_are_opt_in(self, client: PhaseFlagClient, otel: Telemetry) -> None:
        client.add_hook(_hook(otel, include_value=True, include_context_id=False))
        client.get_boolean_value("checkout", False, PRO)
        client.get_json_value("config", {})
        flag_event, json_event = otel.events()
        assert flag_event["feature_flag.result.value"] is True
        assert "feature_flag.context.id" not in flag_event
        assert json.loads(json_event["feature_flag.result.value"]) == {"retries": 2}

    def test_no_value_by_default(self, client: PhaseFlagClient, otel: Telemetry) -> None:
        client.add_hook(_hook(otel))
        client.get_json_value("config", {})
        assert "feature_flag.result.value" not in otel.events()[0]

    def test_span_event_when_a_span_is_recording(
        self, client: PhaseFlagClient, otel: Telemetry
    ) -> None:
        client.add_hook(_hook(otel))
        tracer = otel.tracer_provider.get_tracer("test")
        client.get_boolean_value("checkout", False, PRO)  # no span: log event only
        with tracer.start_as_current_span("request"):
            client.get_boolean_value("checkout", False, PRO)
            client.get_string_value("split", "", PRO)
        (span,) = otel.spans.get_finished_spans()
        assert [e.name for e in span.events] == [EVENT_NAME, EVENT_NAME]
        assert dict(span.events[0].attributes or {})["feature_flag.key"] == "checkout"
        assert dict(span.events[1].attributes or {})["feature_flag.key"] == "split"
        assert len(otel.events()) == 3

    def test_evaluation_counter_by_flag_variant_reason(
        self, client: PhaseFlagClient, otel: Telemetry
    ) -> None:
        client.add_hook(_hook(otel))
        for _ in range(3):
            client.get_boolean_value("checkout", False, PRO)
        client.get_boolean_value("checkout", False)
        client.get_boolean_value("missing", False)
        points = {
            tuple(sorted(attrs.items())): value
            for attrs, value in otel.metrics()["phaseflag.evaluations"]
        }
        assert points == {
            (
                ("feature_flag.key", "checkout"),
                ("feature_flag.result.reason", "targeting_match"),
                ("feature_flag.result.variant", "on"),
            ): 3,
            (
                ("feature_flag.key", "checkout"),
                ("feature_flag.result.reason", "default"),
                ("feature_flag.result.variant", "off"),
            ): 1,
            (("feature_flag.key", "missing"), ("feature_flag.result.reason", "error")): 1,
        }


class TestClientMetrics:
    def test_ruleset_age_events_and_sync_failures(self, otel: Telemetry) -> None:
        from phaseflag import TransportError

        c = create_mock_client(bootstrap=DOC)
        try:
            stop = register_metrics(c, meter_provider=otel.meter_provider)
            c._store.sync_failed(TransportError("connection refused"))
            c._store.sync_failed(TransportError("connection refused"))
            metrics = otel.metrics()
            ((attrs, failures),) = metrics["phaseflag.sync.failures"]
            assert failures == 2 and attrs == {"error.type": "TransportError"}
            ((_, age),) = metrics["phaseflag.ruleset.age"]
            assert 0 <= age < 3600
            assert metrics["phaseflag.events.queued"] == [({}, 0)]
            assert metrics["phaseflag.events.dropped"] == [({}, 0)]
            stop()
            c._store.sync_failed(TransportError("again"))
            after = otel.metrics()
            assert after["phaseflag.sync.failures"][0][1] == 2
        finally:
            c.stop()

    def test_events_dropped_reported(self, otel: Telemetry) -> None:
        from phaseflag import EvaluationEvent

        c = create_mock_client(bootstrap=DOC)  # base_url="": tracked events are dropped
        try:
            register_metrics(c, meter_provider=otel.meter_provider)
            for _ in range(4):
                c.track_event(EvaluationEvent("signup"))
            assert otel.metrics()["phaseflag.events.dropped"] == [({}, 4)]
        finally:
            c.stop()

    def test_instrument_takes_the_async_client(self, otel: Telemetry) -> None:
        """instrument() on an AsyncPhaseFlagClient: its reads emit events, its status
        feeds the gauges, and undo removes both."""
        from phaseflag import AsyncPhaseFlagClient

        c = AsyncPhaseFlagClient.from_client(create_mock_client(bootstrap=DOC))
        try:
            undo = instrument(
                c, logger_provider=otel.logger_provider, meter_provider=otel.meter_provider
            )
            assert c.get_boolean_value("checkout", False, PRO) is True
            (event,) = otel.events()
            assert event["feature_flag.result.variant"] == "on"
            assert otel.metrics()["phaseflag.events.queued"] == [({}, 0)]
            undo()
            c.get_boolean_value("checkout", False, PRO)
            assert len(otel.events()) == 1
        finally:
            c.sync_client.stop()

    def test_instrument_adds_hook_and_metrics_and_undoes_them(self, otel: Telemetry) -> None:
        c = create_mock_client(bootstrap=DOC)
        try:
            undo = instrument(
                c, logger_provider=otel.logger_provider, meter_provider=otel.meter_provider
            )
            c.get_boolean_value("checkout", False, PRO)
            assert len(otel.events()) == 1
            assert "phaseflag.ruleset.age" in otel.metrics()
            undo()
            c.get_boolean_value("checkout", False, PRO)
            assert len(otel.events()) == 1
        finally:
            c.stop()


@pytest.mark.e2e
def test_import_without_the_extra_names_the_install_command() -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "try:\n    import phaseflag.otel\nexcept ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=env,
    ).stdout
    assert "pip install 'phaseflag-sdk[otel]'" in out
