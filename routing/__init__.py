"""Routing decisions: pure and deterministic (no I/O). Filled in by the routing issue."""
