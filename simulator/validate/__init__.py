"""Strict request validation against the official provider SDK types (see `strict`)."""

from __future__ import annotations

from typing import Any

from simulator.validate.strict import check

__all__ = ["check", "openai_chat_request_problems", "anthropic_messages_request_problems",
           "openai_embedding_request_problems"]


def openai_chat_request_problems(body: dict[str, Any]) -> list[str]:
    """Problems of an OpenAI `POST /v1/chat/completions` body (streaming params if `stream` is true)."""
    from openai.types.chat import completion_create_params as params

    if not isinstance(body, dict):
        return ["(root): must be an object"]
    typ = (params.CompletionCreateParamsStreaming if body.get("stream") is True
           else params.CompletionCreateParamsNonStreaming)
    return check(typ, body)


def anthropic_messages_request_problems(body: dict[str, Any]) -> list[str]:
    """Problems of an Anthropic `POST /v1/messages` body (streaming params if `stream` is true)."""
    from anthropic.types import message_create_params as params

    if not isinstance(body, dict):
        return ["(root): must be an object"]
    typ = (params.MessageCreateParamsStreaming if body.get("stream") is True
           else params.MessageCreateParamsNonStreaming)
    return check(typ, body)


def openai_embedding_request_problems(body: dict[str, Any]) -> list[str]:
    """Problems of an OpenAI `POST /v1/embeddings` body."""
    from openai.types import EmbeddingCreateParams

    if not isinstance(body, dict):
        return ["(root): must be an object"]
    return check(EmbeddingCreateParams, body)
