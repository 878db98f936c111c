"""The gateway's health as Envoy answers it: `/health/live` (Envoy itself, while it runs) and
`/health/ready` + `/health` (a healthy ext_proc worker and the rate-limit process, not draining),
and the gRPC health checks Envoy runs against the pod's own processes. Neither path asks the
ext_proc."""

from __future__ import annotations

from typing import Any

from extproc import metadata

_EXT_PROC_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute"
_HEALTH_CHECK = "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck"
LIVE_PATH = "/health/live"
READY_PATHS = ("/health/ready", "/health")


def liveness_route() -> dict[str, Any]:
    """`GET /health/live`: 200 from Envoy itself while it runs, draining included (a drain must
    not get the process restarted); the ext_proc is not asked."""
    return {
        "match": {"path": LIVE_PATH},
        "direct_response": {"status": 200, "body": {"inline_string": "live\n"}},
        "typed_per_filter_config": {"envoy.filters.http.ext_proc": {"@type": _EXT_PROC_PER_ROUTE,
                                                                    "disabled": True}},
    }


def readiness_filter() -> dict[str, Any]:
    """`GET /health/ready` (and `/health`, for load balancers that probe one path), answered by
    Envoy before the ext_proc: 200 while at least one ext_proc worker and the rate-limit process
    pass Envoy's gRPC health checks, 503 otherwise and once `/healthcheck/fail` was posted to the
    admin port (the first step of a drain). Nothing else is answered here."""
    return {"name": "envoy.filters.http.health_check", "typed_config": {
        "@type": _HEALTH_CHECK,
        "pass_through_mode": False,
        "headers": [{"name": ":path", "string_match": {"safe_regex": {
            "regex": "|".join(READY_PATHS)}}}],  # RE2, matched whole
        # One healthy worker of up to 10,000 is enough; the rate-limit process is one host.
        "cluster_min_healthy_percentages": {metadata.EXTPROC_CLUSTER: {"value": 0.01},
                                            metadata.RATELIMIT_CLUSTER: {"value": 100.0}},
    }}


def grpc_health_checks() -> list[dict[str, Any]]:
    """gRPC health checks of the pod's own processes (both answer `grpc.health.v1`)."""
    return [{"timeout": "1s", "interval": "2s", "unhealthy_threshold": 1, "healthy_threshold": 1,
             "no_traffic_interval": "2s", "grpc_health_check": {}}]
