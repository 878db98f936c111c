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
