"""Provider API translation: one module per (client API, provider API) pair, one registry."""

from extproc.translate.base import (
    Registry,
    ResponseContext,
    StreamTranslator,
    Target,
    Translator,
    UpstreamRequest,
    Usage,
    client_status_for,
    provider_error,
)
from extproc.translate.registry import default_registry

__all__ = [
    "Registry", "ResponseContext", "StreamTranslator", "Target", "Translator", "UpstreamRequest",
    "Usage", "client_status_for", "default_registry", "provider_error",
]
