"""Setting telemetry up in a process (`install_worker`) and tearing it down (`shutdown`).

A worker gets a `MeterProvider` with two readers: a Prometheus reader (its text, served on the
worker's Unix socket for the pod's scrape, see `exposition`) and, with an OTLP metrics endpoint,
a periodic OTLP/HTTP push (a background thread; a slow collector delays only that thread). With
an OTLP traces endpoint it gets a span recorder (`tracing`). Nothing here is global to the
OpenTelemetry API: the providers are the recorder's own, so tests can install and uninstall.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from extproc.telemetry import meters as meters_mod
from extproc.telemetry import record, tracing
from extproc.telemetry.settings import TelemetrySettings, settings_or_default  # noqa: F401 (re-exported)

log = logging.getLogger("interlock.telemetry")


@dataclass
class Installed:
    """A process's telemetry: `text()` is its Prometheus text ("" when metrics are off)."""

    settings: TelemetrySettings
    meter_provider: MeterProvider | None = None
    spans: tracing.SpanRecorder | None = None
    meters: meters_mod.Meters | None = None
    registry: Any = None
    readers: list[MetricReader] = field(default_factory=list)

    def text(self) -> str:
        if self.registry is None:
            return ""
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()

    def shutdown(self) -> None:
        """Flush what is queued (bounded by the exporters' timeouts) and stop exporting."""
        record.set_recorder(None)
        for provider in (self.spans, self.meter_provider):
            if provider is not None:
                try:
                    provider.shutdown()
                except Exception:  # noqa: BLE001
                    log.warning("telemetry shutdown failed", exc_info=True)


def _otlp_metric_exporter() -> Any:
    """The OTLP/HTTP metric exporter class, or None (logged) when it cannot be imported.

    `xds-protos` (Envoy's API, a dependency) ships its own, older copy of the `opentelemetry.proto`
    modules in the same place as `opentelemetry-proto`; whichever pip installed last wins, and
    the older one lacks what the exporter imports. Metrics must never stop a worker: without the
    exporter the Prometheus endpoint still serves everything. `make test` and the Dockerfile
    reinstall `opentelemetry-proto` last."""
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    except ImportError as e:
        log.error("OTLP metric export is off: %s (reinstall opentelemetry-proto after xds-protos: "
                  "pip install --force-reinstall --no-deps opentelemetry-proto)", e)
        return None
    return OTLPMetricExporter


def install_worker(settings: TelemetrySettings, attributes: Mapping[str, str] | None = None, *,
                   span_sink: Callable[[list[tracing.Span]], None] | None = None,
                   extra_readers: list[MetricReader] | None = None) -> Installed:
    """Set up this process's recorder (`record.set_recorder`) from `settings`. `attributes` join
    the resource (e.g. the worker's index); `span_sink` receives finished spans instead of the OTLP
    POST, `extra_readers` read the metrics too (tests)."""
    resource = Resource.create({"service.name": settings.service_name, **(attributes or {})})
    out = Installed(settings)
    if settings.metrics:
        from prometheus_client import CollectorRegistry

        out.registry = CollectorRegistry(auto_describe=False)
        meters: list[meters_mod.Meters] = []
        extra = _histograms(meters)
        readers: list[MetricReader] = [_prometheus_reader(out.registry, extra)]
        otlp_exporter = _otlp_metric_exporter() if settings.metrics_endpoint else None
        if otlp_exporter is not None:
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            otlp = otlp_exporter(endpoint=settings.metrics_endpoint, timeout=5)
            readers.append(PeriodicExportingMetricReader(_WithHistograms(otlp, extra),
                                                         export_interval_millis=settings.export_interval_ms,
                                                         export_timeout_millis=5000))
        readers += [_with_histograms_reader(r, extra) for r in extra_readers or []]
        out.readers = readers
        out.meter_provider = MeterProvider(metric_readers=readers, resource=resource)
        out.meters = meters_mod.Meters(out.meter_provider.get_meter("interlock"))
        meters.append(out.meters)
    if settings.stage_spans and (settings.tracing or span_sink is not None):
        out.spans = tracing.SpanRecorder(settings.traces_endpoint, settings.sample_ratio,
                                         {"service.name": settings.service_name, **(attributes or {})}, span_sink)
    record.set_recorder(record.Recorder(out.meters, out.spans, settings.access_log))
    return out


Extra = Callable[["MetricsData"], "MetricsData"]


def _histograms(meters: list[meters_mod.Meters]) -> Extra:
    """`MetricsData` plus the gateway's own histograms (`meters.Histogram`), as the SDK's data
    model: one more scope of the first resource. `meters` is filled in once the instruments exist."""
    start_ns = time.time_ns()

    def add(data: MetricsData) -> MetricsData:
        if not meters or not data.resource_metrics:
            return data
        extra = meters[0].histogram_metrics(start_ns, time.time_ns())
        if not extra:
            return data
        first = data.resource_metrics[0]
        # Into the SDK's own "interlock" scope: exporters key scopes by name (OTLP's encoder kept
        # only the last of two scopes with one name).
        scopes = list(first.scope_metrics)
        i = next((i for i, sm in enumerate(scopes) if sm.scope.name == "interlock"), None)
        if i is None:
            scopes.append(ScopeMetrics(scope=InstrumentationScope("interlock"), metrics=extra, schema_url=""))
        else:
            scopes[i] = ScopeMetrics(scope=scopes[i].scope, metrics=[*scopes[i].metrics, *extra],
                                     schema_url=scopes[i].schema_url)
        first = ResourceMetrics(resource=first.resource, scope_metrics=scopes, schema_url=first.schema_url)
        return MetricsData(resource_metrics=[first, *data.resource_metrics[1:]])

    return add


def _prometheus_reader(registry: Any, extra: Extra) -> MetricReader:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader

    class Reader(PrometheusMetricReader):
        def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
            if metrics_data is not None:
                super()._receive_metrics(extra(metrics_data), timeout_millis, **kwargs)

    return Reader(disable_target_info=True, registry=registry)


def _with_histograms_reader(reader: MetricReader, extra: Extra) -> MetricReader:
    """A test's reader (e.g. `InMemoryMetricReader`) that also sees the gateway's histograms."""
    receive = reader._receive_metrics

    def receive_all(metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        receive(extra(metrics_data) if metrics_data is not None else metrics_data, timeout_millis, **kwargs)

    reader._receive_metrics = receive_all  # type: ignore[method-assign]
    return reader


class _WithHistograms(MetricExporter):
    """An exporter that also exports the gateway's histograms."""

    def __init__(self, inner: MetricExporter, extra: Extra) -> None:
        super().__init__(preferred_temporality=inner._preferred_temporality,
                         preferred_aggregation=inner._preferred_aggregation)
        self.inner, self.extra = inner, extra

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        return self.inner.export(self.extra(metrics_data), timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)
