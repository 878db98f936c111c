"""Envoy configuration rendered from a gateway config: the bootstrap, clusters and routes
(`render`), the per-attempt fallback pieces (`fallback`) and which provider orders exist
(`orders`). Writes files only; never imported by the request path."""
