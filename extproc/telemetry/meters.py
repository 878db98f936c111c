"""The worker's instruments, aggregated by the gateway and exported by the OpenTelemetry SDK.

Counters (requests, tokens, micro-dollars, decisions, fallbacks, refusals) are plain integers in a
dict keyed by their attribute values: adding is one dict update on the request path, sums are exact
and never floats. The SDK reads them through asynchronous (observable) counters when a reader
collects (a Prometheus scrape, an OTLP push), never on the request path.

Histograms (`Histogram`) are explicit-bucket counts per attribute tuple (one `bisect` and three
additions per value), handed to the SDK's exporters as its own data model (`HistogramDataPoint`,
cumulative) at collect time (`histogram_metrics`, joined by `install`'s readers). Measured here:
the SDK's synchronous `Histogram.record` costs 6-30 µs per value with seven attributes (it cleans
and hashes the attribute dict each time), this one about 1 µs; a request records four.

Concurrency: one event loop records; a reader may collect from another thread. A collect copies
each dict first (`dict(d)`, atomic under the GIL), so it sees each counter whole (a histogram
point may be one value behind its sum: never torn).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics.export import AggregationTemporality, HistogramDataPoint, Metric
from opentelemetry.sdk.metrics.export import Histogram as HistogramData

from extproc.telemetry import names as n


class Counter:
    """An exact, monotonic integer counter over a fixed tuple of attribute names."""

    __slots__ = ("labels", "values")

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = tuple(labels)
        self.values: dict[tuple[Any, ...], int] = {}

    def add(self, key: tuple[Any, ...], amount: int = 1) -> None:
        values = self.values
        values[key] = values.get(key, 0) + amount

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        labels = self.labels
        return [Observation(v, dict(zip(labels, k, strict=True))) for k, v in dict(self.values).items()]

    def total(self, **match: Any) -> int:
        """The sum over every key whose attributes equal `match` (tests, the bench)."""
        idx = [(self.labels.index(k), v) for k, v in match.items()]
        return sum(v for k, v in self.values.items() if all(k[i] == want for i, want in idx))


class Histogram:
    """Explicit-bucket histogram over a fixed tuple of attribute names (a None value: absent)."""

    __slots__ = ("bounds", "description", "labels", "name", "points", "unit")

    def __init__(self, name: str, unit: str, description: str, labels: Sequence[str], bounds: Sequence[float]) -> None:
        self.name, self.unit, self.description = name, unit, description
        self.labels = tuple(labels)
        self.bounds = tuple(bounds)
        self.points: dict[tuple[Any, ...], list[Any]] = {}  # key → [bucket counts, sum, count, min, max]

    def record(self, key: tuple[Any, ...], value: float) -> None:
        p = self.points.get(key)
        if p is None:
            p = self.points[key] = [[0] * (len(self.bounds) + 1), 0, 0, value, value]
        p[0][bisect_left(self.bounds, value)] += 1
        p[1] += value
        p[2] += 1
        if value < p[3]:
            p[3] = value
        elif value > p[4]:
            p[4] = value

    def metric(self, start_ns: int, now_ns: int) -> Metric | None:
        points = []
        labels = self.labels
        for key, (counts, total, count, lo, hi) in dict(self.points).items():
            attrs = {k: v for k, v in zip(labels, key, strict=True) if v is not None}
            points.append(HistogramDataPoint(attributes=attrs, start_time_unix_nano=start_ns, time_unix_nano=now_ns,
                                             count=count, sum=total, bucket_counts=list(counts),
                                             explicit_bounds=list(self.bounds), min=lo, max=hi))
        if not points:
            return None
        return Metric(name=self.name, description=self.description, unit=self.unit,
                      data=HistogramData(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE))


REQUEST_LABELS = (n.TENANT, n.ROUTE, n.REQUEST_MODEL, n.RESPONSE_MODEL, n.PROVIDER, n.PROVIDER_NAME, n.OPERATION)


class Meters:
    """Every request instrument of one process, created on `meter`."""

    def __init__(self, meter: Meter) -> None:
        self.requests = Counter((*REQUEST_LABELS, n.HTTP_STATUS, n.ERROR_TYPE))
        self.tokens = Counter((*REQUEST_LABELS, n.ITOKEN_TYPE))
        self.cost = Counter(REQUEST_LABELS)
        self.decisions = Counter((n.ROUTE, n.DEPLOYMENT, n.PROVIDER_NAME, n.CHOSEN_BY))
        self.fallbacks = Counter((n.ROUTE, n.FROM_PROVIDER, n.PROVIDER_NAME))
        self.refused = Counter((n.TENANT, n.PRIORITY, n.REASON, n.HTTP_STATUS))
        for name, counter, unit, text in (
                (n.REQUESTS, self.requests, "{request}", "Requests answered, by tenant, model, provider and status."),
                (n.TOKENS, self.tokens, "{token}", "Tokens (exact), by type: input, output, cached_input, "
                                                   "cache_creation_input (of input), reasoning (of output)."),
                (n.COST, self.cost, "", "Spend in micro-dollars (exact integer; USD = value / 1e6)."),
                (n.DECISIONS, self.decisions, "{request}", "Routing decisions by route, first choice and why."),
                (n.FALLBACKS, self.fallbacks, "{request}", "Answers from another provider than the first choice."),
                (n.REFUSED, self.refused, "{request}", "Requests the gateway shed or limited, by reason.")):
            meter.create_observable_counter(name, [counter.observe], unit=unit, description=text)
        model = (n.OPERATION, n.PROVIDER, n.REQUEST_MODEL, n.RESPONSE_MODEL)
        self.duration = Histogram(n.OPERATION_DURATION, "s", "GenAI operation duration.",
                                  (*model, n.TENANT, n.PROVIDER_NAME, n.ERROR_TYPE), n.DURATION_BUCKETS)
        self.token_usage = Histogram(n.TOKEN_USAGE, "{token}", "Number of input and output tokens used.",
                                     (*model, n.TOKEN_TYPE), n.TOKEN_BUCKETS)
        self.first_chunk = Histogram(n.TIME_TO_FIRST_CHUNK, "s", "Time to receive the first chunk of a streamed answer.",
                                     model, n.FIRST_CHUNK_BUCKETS)
        self.per_chunk = Histogram(n.TIME_PER_OUTPUT_CHUNK, "s", "Time between two chunks of a streamed answer.",
                                   (n.OPERATION,), n.PER_CHUNK_BUCKETS)
        self.overhead = Histogram(n.OVERHEAD, "s", "The router stage's own time before the request goes upstream "
                                                   "(parse, decide, translate, sign; admission queueing excluded).",
                                  (n.OPERATION,), n.OVERHEAD_BUCKETS)
        self.histograms = (self.duration, self.token_usage, self.first_chunk, self.per_chunk, self.overhead)

    def histogram_metrics(self, start_ns: int, now_ns: int) -> list[Metric]:
        return [m for h in self.histograms if (m := h.metric(start_ns, now_ns)) is not None]
