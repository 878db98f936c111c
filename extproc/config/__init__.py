"""Gateway configuration: YAML → validated, immutable `GatewayConfig`."""

from extproc.config.load import ConfigError, load_file, load_text, sha256_hex, validate
from extproc.config.model import (
    ClusterSettings,
    Endpoint,
    ExtProcSettings,
    GatewayConfig,
    Model,
    Provider,
    Tenant,
)
from extproc.config.reader import parse_duration

__all__ = [
    "ClusterSettings", "ConfigError", "Endpoint", "ExtProcSettings", "GatewayConfig", "Model", "Provider",
    "Tenant", "load_file", "load_text", "parse_duration", "sha256_hex", "validate",
]
