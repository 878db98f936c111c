"""tests/k8s uses the integration suite's provider simulator (one per session)."""

from tests.integration.conftest import simulator

__all__ = ["simulator"]
