"""Header and cluster names shared by the ext_proc, the rendered Envoy config and the chart."""

CLUSTER_HEADER = "x-interlock-cluster"  # set by the router stage; the route's cluster_header
PROVIDER_HEADER = "x-interlock-provider"
MODEL_HEADER = "x-interlock-model"
DROPPED_PARAMS_HEADER = "x-interlock-dropped-params"
REQUEST_ID_HEADER = "x-request-id"
EXTPROC_CLUSTER = "interlock_extproc"
LISTENER_NAME = "interlock"
# Details string on ext_proc immediate responses, so local-reply mappers leave them alone.
IMMEDIATE_DETAILS = "interlock"
ATTEMPTS_HEADER = "x-interlock-attempts"
# The provider whose API the request body is in; the upstream stage runs when the host Envoy
# picked for an attempt belongs to another provider.
TRANSLATED_FOR_HEADER = "x-interlock-translated-for"
NAMESPACE = "interlock"  # dynamic-metadata namespace and host-metadata key
STAGE_METADATA = "x-interlock-stage"  # gRPC initial metadata naming the ext_proc stage
ENVOY_ATTEMPT_COUNT = "x-envoy-attempt-count"
ROUTE_HEADER = "x-interlock-route"  # the route name, when the model was chosen per request
# `x-interlock-provider` on answers the gateway (or Envoy) made itself, before any provider.
GATEWAY_PROVIDER = "interlock"
RATELIMIT_CLUSTER = "interlock_ratelimit"
RATELIMIT_DOMAIN = "interlock"
PRIORITY_HEADER = "x-interlock-priority"  # interactive | default | batch
DEADLINE_HEADER = "x-interlock-deadline-ms"  # the client's deadline, milliseconds from now
# Envoy's route timeout for this request: the router stage sets it from the deadline.
ENVOY_TIMEOUT_HEADER = "x-envoy-upstream-rq-timeout-ms"
CLIENT_API_HEADER = "x-interlock-client-api"  # set on the request by the router stage: openai | anthropic
AGGREGATE_PREFIX = "fallback~"  # the Envoy aggregate cluster serving an ordered list of providers


def aggregate_name(providers: tuple[str, ...]) -> str:
    """The aggregate cluster for trying `providers` in this order (rendered by `extproc.envoyconf`)."""
    return AGGREGATE_PREFIX + "~".join(providers)


def fallback_order(providers: tuple[str, ...], first: str, max_attempts: int) -> tuple[str, ...]:
    """The providers a request whose first attempt goes to `first` tries, in order: `first`, then
    the others in `providers` order (a routed name's canonical order, `routing.fallback_providers`),
    `max_attempts` long at most. The renderer writes one aggregate cluster
    per such order and per prefix of it (`extproc.envoyconf.orders`); the router stage names one
    (`extproc.stages.selection`), so both derive the same names from the config alone."""
    return (first, *(p for p in providers if p != first))[:max(1, max_attempts)]
