"""The client request check: every field of a client API's body type-checked before any use.

The router stage calls `check_request` once, right after parsing the body
(`extproc.stages.request.client_request`), for every provider type, passthrough included; a
problem is a 400 in the client's format naming the field (OpenAI `param`; Anthropic's message
starts with the field's path). Translators may then rely on the types of the fields they map
and keep only the checks that depend on the target (capabilities, values a provider refuses).

The check is data: per client API, the SDK's request type as a table generated from the official
SDK (`sdk_openai_chat`, `sdk_openai_embeddings`, `sdk_anthropic_messages`; the SDKs themselves
are test-only) and the gateway's own rules (`rules`: documented ranges, with their sources),
compiled once by `grammar` into `engine` nodes (how a value is judged: open literal sets, unknown
fields and tags passing as extensions, depth and 64-bit integer bounds). Pure; the compiled checkers are
immutable and shared.
"""

from __future__ import annotations

from typing import Any

from extproc.translate.schema import (
    rules,
    sdk_anthropic_count_tokens,
    sdk_anthropic_messages,
    sdk_openai_chat,
    sdk_openai_completions,
    sdk_openai_embeddings,
    sdk_openai_responses,
)
from extproc.translate.schema.engine import MAX_DEPTH, Invalid
from extproc.translate.schema.grammar import Checker, Rules, compile_table
from extproc.translate.schema.rules import MAX_MODEL_CHARS

__all__ = ["CHECKERS", "MAX_DEPTH", "MAX_MODEL_CHARS", "check_request"]

ANTHROPIC = "anthropic"

CHECKERS: dict[str, Checker] = {
    "openai-completions": compile_table(
        sdk_openai_completions.TYPES, sdk_openai_completions.ROOT,
        Rules(rules.COMPLETIONS_BOUNDS, checks=(rules.completions_prompt,))),
    "anthropic-count-tokens": compile_table(
        sdk_anthropic_count_tokens.TYPES, sdk_anthropic_count_tokens.ROOT, Rules(rules.COUNT_TOKENS_BOUNDS)),
    "openai": compile_table(sdk_openai_chat.TYPES, sdk_openai_chat.ROOT, Rules(rules.OPENAI_CHAT_BOUNDS)),
    "openai-embeddings": compile_table(
        sdk_openai_embeddings.TYPES, sdk_openai_embeddings.ROOT,
        Rules(rules.EMBEDDINGS_BOUNDS, rules.EMBEDDINGS_CLOSED, checks=(rules.embedding_input,))),
    "openai-responses": compile_table(
        sdk_openai_responses.TYPES, sdk_openai_responses.ROOT,
        Rules(rules.RESPONSES_BOUNDS, extra=rules.RESPONSES_OPTIONAL, checks=(rules.responses_model,))),
    ANTHROPIC: compile_table(
        sdk_anthropic_messages.TYPES, sdk_anthropic_messages.ROOT,
        Rules(rules.ANTHROPIC_BOUNDS, extra=rules.ANTHROPIC_LEGACY, checks=(rules.thinking_budget,))),
}


def check_request(api: str, body: dict[str, Any]) -> None:
    """400 (BadRequest naming the first bad field) unless `body` is a valid request of client
    API `api` ("openai", "openai-embeddings" or "anthropic"). Never mutates `body`."""
    try:
        CHECKERS[api].check(body)
    except Invalid as e:
        raise rules.bad_request(e, api.startswith(ANTHROPIC)) from None
