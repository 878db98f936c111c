"""Interlock's gateway: the ext_proc service Envoy calls (router and upstream stages), translation,
credentials, config, rate limits, Envoy rendering, and the entry points in `cmd/`. The routing
core is the sibling package `routing`; the provider simulator is `simulator` (not imported here)."""

__version__ = "0.1.0"
