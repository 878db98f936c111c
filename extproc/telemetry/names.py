"""Metric, attribute and value names: the OpenTelemetry GenAI semantic conventions (Development
status, as of semantic-conventions 1.41 / the semantic-conventions-genai repository) and Interlock's
own. The one place that spells them; the dashboard and alert rules in `observability/` use the
Prometheus forms (dots → underscores, unit suffix, `_total` on counters).

Changed from older GenAI conventions: `gen_ai.system` is now `gen_ai.provider.name` (with values
such as `aws.bedrock`, `gcp.gemini`, `gcp.vertex_ai`, `azure.ai.openai`); the streaming metrics are
`…time_to_first_chunk` / `…time_per_output_chunk` (client side), not `…time_to_first_token`.
"""

from __future__ import annotations

# GenAI metrics (client side: the gateway is the providers' client).
OPERATION_DURATION = "gen_ai.client.operation.duration"  # histogram, s
TOKEN_USAGE = "gen_ai.client.token.usage"  # histogram, {token}, with gen_ai.token.type
TIME_TO_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"  # histogram, s (streams only)
TIME_PER_OUTPUT_CHUNK = "gen_ai.client.operation.time_per_output_chunk"  # histogram, s (each chunk after the first)

# GenAI attributes.
OPERATION = "gen_ai.operation.name"  # chat | embeddings
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
TOKEN_TYPE = "gen_ai.token.type"  # input | output
ERROR_TYPE = "error.type"
USAGE_INPUT = "gen_ai.usage.input_tokens"
USAGE_OUTPUT = "gen_ai.usage.output_tokens"
USAGE_CACHE_READ = "gen_ai.usage.cache_read.input_tokens"
USAGE_CACHE_CREATION = "gen_ai.usage.cache_creation.input_tokens"
USAGE_REASONING = "gen_ai.usage.reasoning.output_tokens"
REQUEST_STREAM = "gen_ai.request.stream"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
HTTP_STATUS = "http.response.status_code"

# Interlock's metrics.
REQUESTS = "interlock.requests"  # counter: answered requests
TOKENS = "interlock.tokens"  # counter, exact: interlock.token.type input|output|cached_input|cache_creation_input|reasoning
COST = "interlock.cost.micro_usd"  # counter, exact integer micro-dollars (routing.pricing.micro_usd)
DECISIONS = "interlock.routing.decisions"  # counter: routed requests by route and first choice
FALLBACKS = "interlock.routing.fallbacks"  # counter: answers from another provider than the first choice
REFUSED = "interlock.refused"  # counter: requests the gateway shed or limited, by reason and priority
OVERHEAD = "interlock.gateway.overhead"  # histogram, s: the router stage's own time before the request goes upstream
# Self-hosted pools: Prometheus text the pod's pool scraper serves itself (`extproc.pools.scraper`),
# in their Prometheus forms, labelled `pool` (and `endpoint`, `state` where noted).
POOL_UTILIZATION = "interlock_pool_utilization"  # gauge 0..1
POOL_ENDPOINTS = "interlock_pool_endpoints"  # gauge, by state: ready | stale | down
POOL_SATURATED = "interlock_pool_saturated_endpoints"  # gauge
POOL_QUEUE_DEPTH = "interlock_pool_queue_depth"  # gauge: requests waiting in the servers' queues
POOL_RUNNING = "interlock_pool_running"  # gauge
POOL_SCRAPE_FAILURES = "interlock_pool_scrape_failures_total"  # counter, by endpoint
POOL_PICKS = "interlock_pool_picks_total"  # counter, by endpoint: first choices, every worker
POOL_FALLBACK_PICKS = "interlock_pool_fallback_picks_total"  # counter: least-request picks (no fresh metrics)
POOL_SCRAPE_FALLBACK = "interlock_pool_scrape_fallback"  # gauge: 1 while in least-request fallback

# Interlock's attributes (every value comes from the config or a fixed set).
TENANT = "interlock.tenant"
ROUTE = "interlock.route"
PROVIDER_NAME = "interlock.provider"  # the config's provider name (gen_ai.provider.name is its type)
DEPLOYMENT = "interlock.deployment"
FROM_PROVIDER = "interlock.fallback.from"
PRIORITY = "interlock.priority"
REASON = "interlock.reason"
ITOKEN_TYPE = "interlock.token.type"
CHOSEN_BY = "interlock.routing.chosen_by"

# Values for anything that is not in the config.
OTHER = "other"  # a model name the config does not know
UNAUTHENTICATED = "unauthenticated"
GATEWAY = "interlock"  # provider of answers the gateway (or Envoy) made itself
CHAT = "chat"
EMBEDDINGS = "embeddings"

# gen_ai.provider.name per provider type of the config.
PROVIDER_NAMES = {"openai": "openai", "azure-openai": "azure.ai.openai", "anthropic": "anthropic",
                  "gemini": "gcp.gemini", "vertex": "gcp.vertex_ai", "vertex-gemini": "gcp.vertex_ai",
                  "vertex-anthropic": "gcp.vertex_ai", "bedrock": "aws.bedrock"}

# Bucket boundaries. Duration and token usage: the GenAI conventions' advice; first chunk, per
# chunk and overhead: chosen for a gateway (sub-millisecond resolution where it matters).
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
FIRST_CHUNK_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
PER_CHUNK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
