"""The typed, immutable gateway configuration that every other module reads.

`extproc.config.load` builds these from YAML after validating every field; nothing else
constructs them except tests. All durations are seconds (float); sizes are bytes.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from extproc.limits.model import Limit
from routing.policy import Policy, WeightedPolicy

# Deployments of one model name (same quality) are chosen by cost and latency by default.
DEFAULT_POLICY: Policy = WeightedPolicy(cost=1.0, latency=1.0, quality=0.0)


@dataclass(frozen=True)
class ListenerTls:
    """HTTPS on the listener: PEM files Envoy reads (and reloads when they change)."""

    cert_file: str
    key_file: str
    # PEM CA bundle: when set, clients must present a certificate it signed (mTLS), and Envoy
    # passes the certificate's URI SAN (a SPIFFE ID) in `x-forwarded-client-cert` (SANITIZE_SET).
    client_ca_file: str | None = None
    # `required`: a client without a certificate is refused at the handshake. `optional`: one is
    # verified when presented, and callers without one (the kubelet's probes) still connect.
    client_certificate: str = "required"


@dataclass(frozen=True)
class Listen:
    address: str = "127.0.0.1"
    port: int = 10000
    tls: ListenerTls | None = None  # None: plain HTTP (extproc.config.listener_tls)


@dataclass(frozen=True)
class OutlierDetection:
    consecutive_5xx: int = 5
    consecutive_gateway_failure: int = 3
    interval: float = 5.0
    base_ejection_time: float = 30.0
    max_ejection_percent: int = 100


@dataclass(frozen=True)
class ClusterSettings:
    """Envoy knobs for one provider cluster (see docs/configuration.md for each default)."""

    connect_timeout: float = 5.0
    max_requests: int = 1024
    max_pending_requests: int = 1024
    max_connections: int = 1024
    max_retries: int = 3
    per_try_timeout: float = 0.0  # 0 = none: an attempt may take as long as a generation does
    idle_timeout: float = 300.0  # no bytes in either direction for this long ends the stream
    outlier_detection: OutlierDetection = field(default_factory=OutlierDetection)
    envoy: str = ""  # other Envoy Cluster fields, canonical JSON (extproc.config.cluster_override)


@dataclass(frozen=True)
class Endpoint:
    scheme: str  # http | https
    host: str
    port: int
    base_path: str  # "" or "/prefix" (no trailing slash)

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def authority(self) -> str:
        default = 443 if self.tls else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class PoolSettings:
    """A pool of OpenAI-compatible model servers (`type: pool`; `extproc.pools`): literal
    `ip:port` endpoints, or a DNS name every address of which is an endpoint (re-resolved every
    `dns_refresh` seconds, through `dns_server` when given, else the system resolver)."""

    endpoints: tuple[str, ...] = ()  # ip:port
    dns: str | None = None  # name:port
    dns_server: str | None = None  # ip:port of the resolver to ask (None: /etc/resolv.conf)
    dns_refresh: float = 5.0
    metrics: str = "vllm"  # vllm | sglang: which metric names the servers publish
    scrape_interval: float = 0.05
    picker: str = "load-aware"  # load-aware | round-robin | least-request
    epp: str | None = None  # host:port of an external Endpoint Picker (GAIE ext_proc protocol)
    gpu_hour_usd: float | None = None  # one server's price per hour (capacity planning, spillover)


@dataclass(frozen=True)
class Provider:
    """One upstream account. Which optional settings apply depends on `type` (see
    `extproc.config.providers.TYPE_SETTINGS`)."""

    name: str
    type: str
    endpoint: Endpoint
    api_key_env: str | None = None
    api_key_file: str | None = None
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    path_prefix: str = "/v1"  # openai: the API's path under the endpoint
    headers: tuple[tuple[str, str], ...] = ()  # openai, azure-openai: extra static headers
    api_version: str | None = None  # azure-openai, gemini
    project: str | None = None  # vertex
    location: str | None = None  # vertex
    credentials_file: str | None = None  # vertex: service-account JSON
    token_uri: str | None = None  # vertex: overrides the file's token_uri
    region: str | None = None  # bedrock
    aws_access_key_id_env: str | None = None  # bedrock
    aws_secret_access_key_env: str | None = None  # bedrock
    aws_session_token_env: str | None = None  # bedrock (optional)
    credentials: str | None = None  # vertex: application-default; azure-openai: workload-identity
    pool: PoolSettings | None = None  # type pool: its endpoints and how they are picked

    @property
    def cluster_name(self) -> str:
        return f"provider_{self.name}"


@dataclass(frozen=True)
class Price:
    input_per_mtok: float = 0.0  # USD per million input tokens
    output_per_mtok: float = 0.0  # USD per million output tokens


@dataclass(frozen=True)
class Model:
    name: str
    provider: str
    upstream_model: str
    price: Price = field(default_factory=Price)
    context_window: int = 128000
    max_output_tokens: int = 4096
    capabilities: frozenset[str] = frozenset()
    quality: float = 0.5  # 0..1, the operator's judgement; read by routing policies
    max_concurrency: int = 0  # requests in flight at once the provider account allows (0 = no budget)
    fim_template: str | None = None  # capability fim, prompt-only server: the literal FIM template


@dataclass(frozen=True)
class Route:
    """A public model name served by choosing among candidate models per request."""

    name: str
    candidates: tuple[str, ...]  # public model names (each may have several deployments)
    policy: Policy


@dataclass(frozen=True)
class Tenant:
    name: str
    api_key_sha256: tuple[str, ...]
    models: tuple[str, ...] = ("*",)
    priority: str = "default"  # the class of a request without `x-interlock-priority`
    deadline: float = 0.0  # seconds; a request without `x-interlock-deadline-ms` gets this (0 = none)
    limits: tuple[Limit, ...] = ()  # rate limits, each keyed on this tenant
    # Classes `x-interlock-priority` may claim; () = up to and including `priority`. Only the
    # highest matters: lower classes are always allowed (giving up share needs no entitlement).
    priorities: tuple[str, ...] = ()
    # May ask for each routing decision's explanation (`x-interlock-debug: explain` → the
    # `x-interlock-explain` response header): candidates, scores and estimates, which name the
    # gateway's deployments and prices — for the operators' own tenants, not for customers.
    explain: bool = False
    # Mesh identities (a client certificate's URI SAN, e.g. `spiffe://cluster.local/ns/app/sa/web`,
    # as Envoy forwards it in XFCC under `listen.tls.client_ca_file`) that authenticate as this tenant.
    spiffe_ids: tuple[str, ...] = ()

    def allows(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.models)

    @property
    def top_priority(self) -> str:
        """The highest class this tenant may use (`priorities`, else its own `priority`)."""
        return min(self.priorities or (self.priority,), key=PRIORITIES.index)

    def entitled_priority(self, claimed: str) -> str:
        """The class a request claiming `claimed` gets: `claimed` itself, or the tenant's
        `top_priority` when `claimed` is above it (lowered, never refused)."""
        top = self.top_priority
        return claimed if PRIORITIES.index(claimed) >= PRIORITIES.index(top) else top


@dataclass(frozen=True)
class ExtProcSettings:
    """Where the ext_proc workers listen: worker i serves on `port + i`."""

    address: str = "127.0.0.1"
    # Below Linux's ephemeral range (32768-60999): an outgoing connection of the pod (Envoy's to the
    # providers) never holds it when a restarted worker binds again. Worker i serves on port + i.
    port: int = 10051
    workers: int = 0  # 0 = one per CPU core
    message_timeout: float = 30.0  # Envoy's wait for one ext_proc reply
    max_streams: int = 100000  # concurrent gRPC streams Envoy may hold to the ext_proc cluster


@dataclass(frozen=True)
class Limits:
    max_request_bytes: int = 10 * 1024 * 1024
    max_response_bytes: int = 10 * 1024 * 1024


PRIORITIES = ("interactive", "default", "batch")  # highest first


@dataclass(frozen=True)
class RateLimit:
    """The rate-limit service (one per pod) that Envoy's rate-limit filter asks."""

    address: str = "127.0.0.1"
    port: int = 10050  # below the ext_proc workers' ports, so more workers never reach it
    store: str = "memory"  # memory: this process's counters; redis: shared by every replica
    redis_url: str = "redis://127.0.0.1:6379/0"
    failure_mode: str = "open"  # when the store or the service cannot answer: open = allow, closed = 429
    timeout: float = 0.1  # Envoy's wait for the service's answer
    metrics_port: int = 0  # Prometheus text of the service's counters on rate_limit.address (0 = none)


@dataclass(frozen=True)
class Admission:
    """Concurrency budgets, priority classes and Envoy's last lines of defence."""

    queue_timeout: float = 0.5  # longest wait for a budget slot before a 429
    batch_share: float = 0.5  # the fraction of a deployment's budget batch requests may fill
    default_share: float = 0.8  # ... and default ones (interactive: all of it)
    success_rate_threshold: float = 0.5  # Envoy admission_control sheds below this upstream success rate
    max_heap_bytes: int = 2 * 1024**3  # overload manager: refuse new requests at 98 % of this heap
    # Not a setting: `rate_limit.redis_url` when `rate_limit.store: redis`. The replicas sharing that
    # Redis then divide each `max_concurrency` among the live pods (extproc.admission.Replicas).
    replicas_redis_url: str | None = None

    def share(self, priority: str) -> float:
        return {"batch": self.batch_share, "default": self.default_share}.get(priority, 1.0)


@dataclass(frozen=True)
class Metrics:
    """Where `interlock run` / `interlock extproc` serve Prometheus text at /metrics."""

    address: str = "127.0.0.1"
    port: int = 9464


@dataclass(frozen=True)
class Admin:
    address: str = "127.0.0.1"
    port: int = 9901


@dataclass(frozen=True)
class GatewayConfig:
    listen: Listen
    providers: tuple[Provider, ...]
    models: tuple[Model, ...]
    tenants: tuple[Tenant, ...]
    extproc: ExtProcSettings = field(default_factory=ExtProcSettings)
    limits: Limits = field(default_factory=Limits)
    admin: Admin = field(default_factory=Admin)
    metrics: Metrics = field(default_factory=Metrics)
    routes: tuple[Route, ...] = ()
    default_policy: Policy = DEFAULT_POLICY
    rate_limit: RateLimit = field(default_factory=RateLimit)
    admission: Admission = field(default_factory=Admission)

    @property
    def rate_limited(self) -> bool:
        """True when some tenant has a limit: Envoy then asks the rate-limit service."""
        return any(t.limits for t in self.tenants)

    def provider(self, name: str) -> Provider:
        return next(p for p in self.providers if p.name == name)

    def port_clashes(self, workers: int) -> list[tuple[str, str]]:
        """(config path, problem) for the ports the pod listens on when `workers` ext_proc workers
        serve on `extproc.port` + 0..workers−1: two listeners on one port (addresses aside: 0.0.0.0
        takes every address), or a worker past port 65535. Empty when every port is distinct."""
        named = [("listen.port", self.listen.port), ("admin.port", self.admin.port),
                 ("metrics.port", self.metrics.port), ("rate_limit.port", self.rate_limit.port)]
        if self.rate_limit.metrics_port:
            named.append(("rate_limit.metrics_port", self.rate_limit.metrics_port))
        first, last = self.extproc.port, self.extproc.port + workers - 1
        out = []
        if last > 65535:
            out.append(("extproc.port", f"{workers} workers need ports {first}-{last}, past 65535"))
        for i, (name, port) in enumerate(named):
            out.extend((name, f"{port} is also {other}") for other, p in named[:i] if p == port)
            if first <= port <= last:
                out.append((name, f"{port} is one of the ext_proc workers' ports ({first}-{last} for "
                                  f"{workers} worker{'s' if workers != 1 else ''})"))
        return out

    def summary(self) -> str:
        return (f"{len(self.providers)} providers, {len(self.models)} models, {len(self.routes)} routes, "
                f"{len(self.tenants)} tenants, listening on {self.listen.address}:{self.listen.port}")
