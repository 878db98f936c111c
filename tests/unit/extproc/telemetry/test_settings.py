"""TelemetrySettings from the OTEL_* environment: defaults, overrides, and bad values named."""

from __future__ import annotations

import pytest

from extproc.telemetry.settings import TelemetrySettings, collector_address, settings_or_default


def test_defaults_metrics_on_no_export() -> None:
    s = TelemetrySettings.from_env({})
    assert (s.metrics, s.tracing, s.metrics_endpoint, s.access_log, s.sample_ratio) == (True, False, None, True, 1.0)


@pytest.mark.parametrize(("env", "traces", "metrics"), [
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}, "http://c:4318/v1/traces", "http://c:4318/v1/metrics"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://t/x"},
     "https://t/x", "http://c:4318/v1/metrics"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, None, "http://c:4318/v1/metrics"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_METRICS_EXPORTER": "prometheus"}, "http://c:4318/v1/traces",
     None),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "INTERLOCK_METRICS": "off"}, "http://c:4318/v1/traces", None),
])
def test_endpoints(env: dict[str, str], traces: str | None, metrics: str | None) -> None:
    s = TelemetrySettings.from_env(env)
    assert (s.traces_endpoint, s.metrics_endpoint) == (traces, metrics)


def test_the_stage_spans_can_be_turned_off_while_envoy_traces() -> None:
    on = TelemetrySettings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    off = TelemetrySettings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "INTERLOCK_SPANS": "off"})
    assert (on.tracing, on.stage_spans, off.tracing, off.stage_spans) == (True, True, True, False)


def test_sdk_disabled_turns_everything_off_but_the_access_log() -> None:
    s = TelemetrySettings.from_env({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert (s.metrics, s.tracing, s.metrics_endpoint, s.access_log) == (False, False, None, True)
    assert not TelemetrySettings.from_env({"OTEL_SDK_DISABLED": "true", "INTERLOCK_ACCESS_LOG": "off"}).access_log


@pytest.mark.parametrize(("env", "message"), [
    ({"OTEL_TRACES_SAMPLER_ARG": "2"}, "OTEL_TRACES_SAMPLER_ARG: must be between 0 and 1, got 2"),
    ({"OTEL_TRACES_SAMPLER_ARG": "half"}, "OTEL_TRACES_SAMPLER_ARG: expected a number, got 'half'"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: expected an http(s) URL"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:99999/v1/traces"}, "invalid port"),
    ({"OTEL_METRIC_EXPORT_INTERVAL": "5"}, "OTEL_METRIC_EXPORT_INTERVAL: must be at least 100"),
])
def test_bad_values_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TelemetrySettings.from_env(env)


def test_a_bad_value_keeps_the_defaults_and_says_why() -> None:
    said: list[str] = []
    s = settings_or_default({"OTEL_TRACES_SAMPLER_ARG": "2", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, said.append)
    assert s == TelemetrySettings()
    assert said == ["telemetry: OTEL_TRACES_SAMPLER_ARG: must be between 0 and 1, got 2; using the defaults "
                    "(metrics on, no OTLP export)"]


def test_collector_address() -> None:
    assert collector_address("http://otel:4318/v1/traces") == ("otel", 4318, "/v1/traces", False)
    assert collector_address("https://otel.example/v1/traces") == ("otel.example", 443, "/v1/traces", True)
