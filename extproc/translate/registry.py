"""The translators this gateway ships, by (client API, provider type)."""

from __future__ import annotations

from extproc.translate.base import Registry
from extproc.translate.openai_anthropic import OpenAIToAnthropic
from extproc.translate.openai_openai import OpenAIToOpenAI


def default_registry() -> Registry:
    """A fresh registry with every shipped translator pair."""
    registry = Registry()
    registry.register("openai", "openai", OpenAIToOpenAI())
    registry.register("openai", "anthropic", OpenAIToAnthropic())
    return registry
