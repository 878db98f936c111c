"""The translators this gateway ships, by (client API, provider API).

Client APIs: "openai" (Chat Completions), "openai-embeddings", "anthropic" (Messages),
"openai-responses" (Responses: passthrough to OpenAI-type providers, `ResponsesVia` elsewhere).
Provider APIs: the provider types, with Vertex split by publisher ("vertex-gemini",
"vertex-anthropic"; see `extproc.runtime.upstream_api`). Anthropic clients reach providers that
do not speak Messages through `AnthropicVia`, which composes the Anthropic ↔ OpenAI conversion
with that provider's OpenAI-client translator.
"""

from __future__ import annotations

from extproc.translate.anthropic_anthropic import AnthropicToAnthropic
from extproc.translate.anthropic_via import AnthropicToOpenAI, AnthropicVia
from extproc.translate.base import Registry, Translator
from extproc.translate.completions_mistral import CompletionsToMistral
from extproc.translate.completions_openai import CompletionsToAzure, CompletionsToOpenAI
from extproc.translate.count_tokens import (
    CountTokensToAnthropic,
    CountTokensToBedrock,
    CountTokensToGemini,
    CountTokensToOpenAI,
    CountTokensToVertexAnthropic,
)
from extproc.translate.openai_anthropic import OpenAIToAnthropic
from extproc.translate.openai_azure import OpenAIToAzure
from extproc.translate.openai_bedrock import OpenAIToBedrock
from extproc.translate.openai_embeddings import OpenAIEmbeddingsToAzure, OpenAIEmbeddingsToOpenAI
from extproc.translate.openai_gemini import OpenAIToGemini
from extproc.translate.openai_gemini_embeddings import OpenAIEmbeddingsToGemini
from extproc.translate.openai_openai import OpenAIToOpenAI
from extproc.translate.responses_openai import ResponsesToAzure, ResponsesToOpenAI
from extproc.translate.responses_via import ResponsesVia
from extproc.translate.vertex_anthropic import AnthropicToVertexAnthropic, OpenAIToVertexAnthropic


def default_registry() -> Registry:
    """A fresh registry with every shipped translator pair."""
    r = Registry()
    openai_client: dict[str, Translator] = {
        "openai": OpenAIToOpenAI(),
        "azure-openai": OpenAIToAzure(),
        "anthropic": OpenAIToAnthropic(),
        "vertex-anthropic": OpenAIToVertexAnthropic(),
        "gemini": OpenAIToGemini(),
        "vertex-gemini": OpenAIToGemini(),
        "bedrock": OpenAIToBedrock(),
    }
    for provider, translator in openai_client.items():
        r.register("openai", provider, translator)
    r.register("anthropic", "anthropic", AnthropicToAnthropic())
    r.register("anthropic", "vertex-anthropic", AnthropicToVertexAnthropic())
    r.register("anthropic", "openai", AnthropicToOpenAI())
    for provider in ("azure-openai", "gemini", "vertex-gemini", "bedrock"):
        r.register("anthropic", provider, AnthropicVia(openai_client[provider]))
    r.register("openai-responses", "openai", ResponsesToOpenAI())
    r.register("openai-responses", "azure-openai", ResponsesToAzure())
    for provider in ("anthropic", "vertex-anthropic", "gemini", "vertex-gemini", "bedrock"):
        r.register("openai-responses", provider, ResponsesVia(openai_client[provider]))
    # Completions (fill-in-the-middle): OpenAI-compatible servers and Mistral's native FIM API.
    r.register("openai-completions", "openai", CompletionsToOpenAI())
    r.register("openai-completions", "azure-openai", CompletionsToAzure())
    r.register("openai-completions", "mistral", CompletionsToMistral())
    # Token counting: every provider type with a counting API (`count_tokens` module docstring).
    r.register("anthropic-count-tokens", "anthropic", CountTokensToAnthropic())
    r.register("anthropic-count-tokens", "vertex-anthropic", CountTokensToVertexAnthropic())
    r.register("anthropic-count-tokens", "gemini", CountTokensToGemini())
    r.register("anthropic-count-tokens", "vertex-gemini", CountTokensToGemini())
    r.register("anthropic-count-tokens", "bedrock", CountTokensToBedrock())
    r.register("anthropic-count-tokens", "openai", CountTokensToOpenAI())
    r.register("openai-embeddings", "openai", OpenAIEmbeddingsToOpenAI())
    r.register("openai-embeddings", "azure-openai", OpenAIEmbeddingsToAzure())
    r.register("openai-embeddings", "gemini", OpenAIEmbeddingsToGemini())
    r.register("openai-embeddings", "vertex-gemini", OpenAIEmbeddingsToGemini())
    return r
