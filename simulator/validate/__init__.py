"""Strict request validation against the official provider SDK types (see `strict`)."""

from __future__ import annotations

from typing import Any

from simulator.validate.strict import check

__all__ = ["body_problems", "check", "openai_chat_request_problems", "anthropic_messages_request_problems",
           "openai_embedding_request_problems"]


def body_problems(body: Any, typ: Any, streaming: Any = None) -> list[str]:
    """Problems of a request `body` as the SDK params type `typ`, or as `streaming` when that is given
    and the body's `stream` is true; a body that is no JSON object has that one problem."""
    if not isinstance(body, dict):
        return ["(root): must be an object"]
    return check(streaming if streaming is not None and body.get("stream") is True else typ, body)


def openai_chat_request_problems(body: dict[str, Any]) -> list[str]:
    """Problems of an OpenAI `POST /v1/chat/completions` body (streaming params if `stream` is true)."""
    from openai.types.chat import completion_create_params as params

    return body_problems(body, params.CompletionCreateParamsNonStreaming, params.CompletionCreateParamsStreaming)


def anthropic_messages_request_problems(body: dict[str, Any]) -> list[str]:
    """Problems of an Anthropic `POST /v1/messages` body (streaming params if `stream` is true)."""
    from anthropic.types import message_create_params as params

    return body_problems(body, params.MessageCreateParamsNonStreaming, params.MessageCreateParamsStreaming)


def openai_embedding_request_problems(body: dict[str, Any]) -> list[str]:
    """Problems of an OpenAI `POST /v1/embeddings` body."""
    from openai.types import EmbeddingCreateParams

    return body_problems(body, EmbeddingCreateParams)
