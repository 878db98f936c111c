"""Global rate limiting: requests, tokens and USD per tenant, model and priority.

`model` (limits, matcher, fixed windows) → `store` (atomic counters: memory or Redis) →
`limiter` (admission and true-up of typed charges) → `scheme` (Envoy's descriptors ⇄ charges) →
`service` (the RateLimitService Envoy's rate-limit filter calls). The pod's rate-limit process that
serves it is `extproc.cmd.ratelimit`.

State must be seen by every process that decides: with `MemoryStore`, one RateLimitService
process serves the whole pod (Envoy's rate-limit cluster points at it alone); with `RedisStore`,
any number of processes and replicas share one Redis.
"""

from extproc.limits.limiter import Charge, Limiter, LimitStatus, Reservation, Settlement, Verdict, ticks
from extproc.limits.model import ANY, KEY_FIELDS, Limit, LimitTable, Per, Unit, Window, match, window_of
from extproc.limits.scheme import envoy_rate_limits, marker_field
from extproc.limits.service import RateLimitService
from extproc.limits.store import Decision, FailureMode, MemoryStore, RedisStore, Slot, Store

__all__ = [
    "ANY", "KEY_FIELDS", "Charge", "Decision", "FailureMode", "Limit", "LimitStatus", "LimitTable", "Limiter",
    "MemoryStore", "Per", "RateLimitService", "RedisStore", "Reservation", "Settlement", "Slot", "Store", "Unit",
    "Verdict", "Window", "envoy_rate_limits", "marker_field", "match", "ticks", "window_of",
]
