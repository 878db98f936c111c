"""Telemetry settings, read from the environment (the OpenTelemetry `OTEL_*` variables).

    OTEL_SDK_DISABLED=true                  no metrics, no traces (the pod's scrape still answers)
    INTERLOCK_METRICS=off                   no request metrics (config reloads and restarts stay)
    OTEL_EXPORTER_OTLP_ENDPOINT=http://h:4318
                                            OTLP/HTTP base URL: traces to /v1/traces, metrics to /v1/metrics
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT      the traces URL itself (wins over the base)
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT     the metrics URL itself (wins over the base)
    OTEL_TRACES_EXPORTER=none               no traces even with an endpoint
    OTEL_METRICS_EXPORTER=none|prometheus   no OTLP push of metrics (Prometheus scrape only)
    OTEL_TRACES_SAMPLER_ARG=0.25            share of new traces sampled (default 1.0); a client's or
                                            Envoy's sampled flag is followed (parent-based)
    OTEL_METRIC_EXPORT_INTERVAL=15000       OTLP metrics push interval, milliseconds
    OTEL_SERVICE_NAME=interlock             the resource's service.name
    INTERLOCK_ACCESS_LOG=off                no Envoy access log
    INTERLOCK_SPANS=off                     with tracing on, Envoy's spans only: the router stage
                                            records none of its own (the decision, admission,
                                            usage and cost are then in no span)

Defaults: metrics on (Prometheus scrape), traces and OTLP metrics only when an endpoint is set,
access log on. Only OTLP over HTTP (protobuf) is spoken: the product never imports grpcio.
Pure: `from_env` reads the mapping it is given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

log = logging.getLogger("interlock.telemetry")
_FALSE = ("0", "false", "no", "off", "none")


@dataclass(frozen=True)
class TelemetrySettings:
    metrics: bool = True
    traces_endpoint: str | None = None  # OTLP/HTTP URL of traces (…/v1/traces); None: no tracing
    metrics_endpoint: str | None = None  # OTLP/HTTP URL of metrics (…/v1/metrics); None: scrape only
    sample_ratio: float = 1.0
    export_interval_ms: int = 15000
    service_name: str = "interlock"
    access_log: bool = True
    stage_spans: bool = True  # the router stage's own spans, when tracing is on

    @property
    def tracing(self) -> bool:
        return self.traces_endpoint is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TelemetrySettings:
        """ValueError naming the variable when one holds a value that cannot be used."""
        if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return cls(metrics=False, access_log=_flag(env, "INTERLOCK_ACCESS_LOG"))
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip().rstrip("/")
        traces = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip() or (f"{base}/v1/traces" if base else "")
        mets = env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "").strip() or (f"{base}/v1/metrics" if base else "")
        if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() in _FALSE:
            traces = ""
        if "otlp" not in env.get("OTEL_METRICS_EXPORTER", "otlp").strip().lower():
            mets = ""
        for name, url in (("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces), ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", mets)):
            if url:
                collector_address(url, name)
        ratio = _number(env, "OTEL_TRACES_SAMPLER_ARG", 1.0)
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"OTEL_TRACES_SAMPLER_ARG: must be between 0 and 1, got {ratio:g}")
        interval = _number(env, "OTEL_METRIC_EXPORT_INTERVAL", 15000)
        if interval < 100:
            raise ValueError(f"OTEL_METRIC_EXPORT_INTERVAL: must be at least 100 (ms), got {interval:g}")
        return cls(metrics=_flag(env, "INTERLOCK_METRICS"), traces_endpoint=traces or None,
                   metrics_endpoint=(mets or None) if _flag(env, "INTERLOCK_METRICS") else None,
                   sample_ratio=ratio, export_interval_ms=int(interval),
                   service_name=env.get("OTEL_SERVICE_NAME", "").strip() or "interlock",
                   access_log=_flag(env, "INTERLOCK_ACCESS_LOG"), stage_spans=_flag(env, "INTERLOCK_SPANS"))


def collector_address(url: str, name: str = "endpoint") -> tuple[str, int, str, bool]:
    """(host, port, path, tls) of an OTLP/HTTP URL; ValueError naming `name` when it is not one."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name}: expected an http(s) URL such as http://collector:4318/v1/traces, got {url!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValueError(f"{name}: invalid port in {url!r}") from None
    return parts.hostname, port, parts.path or "/", parts.scheme == "https"


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "on").strip().lower() not in _FALSE


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}: expected a number, got {raw!r}") from None


def settings_or_default(env: Mapping[str, str], warn: Callable[[str], None] = log.error) -> TelemetrySettings:
    """`TelemetrySettings.from_env(env)`; a bad variable is reported and telemetry keeps its
    defaults (metrics on, no export), so a typo never stops the gateway."""
    try:
        return TelemetrySettings.from_env(env)
    except ValueError as e:
        warn(f"telemetry: {e}; using the defaults (metrics on, no OTLP export)")
        return TelemetrySettings()
