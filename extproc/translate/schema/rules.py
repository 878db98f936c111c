"""What the gateway checks beyond the SDK types: the ranges each provider documents, the fields it
reads itself, fields older clients still send, and rules that span fields. Data for `grammar`.

Sources, quoted where a number comes from:
- OpenAI Chat Completions: https://platform.openai.com/docs/api-reference/chat/create and the
  `openai` SDK's docstrings of `CompletionCreateParams` (the same text; the SDK is this project's
  reference for the wire format).
- OpenAI Embeddings: https://platform.openai.com/docs/api-reference/embeddings/create and
  `EmbeddingCreateParams.input`'s docstring.
- Anthropic Messages: https://docs.anthropic.com/en/api/messages and the `anthropic` SDK's
  docstrings of `MessageCreateParams` and `ThinkingConfigEnabledParam`.
The gateway's own bounds (not a provider's): a model name of at most `MAX_MODEL_CHARS` (it is
echoed in `x-interlock-model` and error messages), integers within 64 bits and nesting within
`engine.MAX_DEPTH` (both in `engine`).
"""

from __future__ import annotations

from typing import Any

from extproc.errors import BadRequest
from extproc.translate.schema.engine import Bound, Invalid

MAX_MODEL_CHARS = 256
_MODEL = Bound(1, MAX_MODEL_CHARS)

OPENAI_CHAT_BOUNDS = {
    "CompletionCreateParams.model": _MODEL,
    # "messages … A list of messages comprising the conversation so far" — required; an empty
    # list is refused by the API ("should be non-empty").
    "CompletionCreateParams.messages": Bound(1, None),
    # "What sampling temperature to use, between 0 and 2."
    "CompletionCreateParams.temperature": Bound(0, 2),
    # "nucleus sampling, where the model considers the results of the tokens with top_p
    # probability mass" — a probability: the API reference's range is 0 to 1.
    "CompletionCreateParams.top_p": Bound(0, 1),
    # frequency_penalty, presence_penalty: "Number between -2.0 and 2.0."
    "CompletionCreateParams.frequency_penalty": Bound(-2, 2),
    "CompletionCreateParams.presence_penalty": Bound(-2, 2),
    # logit_bias: "an associated bias value from -100 to 100".
    "CompletionCreateParams.logit_bias.*": Bound(-100, 100),
    # top_logprobs: "An integer between 0 and 20".
    "CompletionCreateParams.top_logprobs": Bound(0, 20),
    # n: "How many chat completion choices to generate" — the API reference's OpenAPI schema
    # gives minimum 1, maximum 128.
    "CompletionCreateParams.n": Bound(1, 128),
    # Token limits are counts; 0 means "no limit of the client's" to the gateway (`max_output_tokens`).
    "CompletionCreateParams.max_completion_tokens": Bound(0, None),
    "CompletionCreateParams.max_tokens": Bound(0, None),
}

RESPONSES_BOUNDS = {
    "ResponseCreateParams.model": _MODEL,
    # temperature "between 0 and 2", top_p a probability, top_logprobs "between 0 and 20"
    # (https://platform.openai.com/docs/api-reference/responses/create, the SDK's docstrings).
    "ResponseCreateParams.temperature": Bound(0, 2),
    "ResponseCreateParams.top_p": Bound(0, 1),
    "ResponseCreateParams.top_logprobs": Bound(0, 20),
    # max_output_tokens: a count; 0 means "no limit of the client's" to the gateway.
    "ResponseCreateParams.max_output_tokens": Bound(0, None),
}

# `input_image.detail`: required in the SDK's `ResponseInputImageParam`, but its own docstring (and
# the API reference, https://platform.openai.com/docs/api-reference/responses/create) says "Defaults
# to `auto`", and the SDK's image type for tool outputs (`ResponseInputImageContentParam`) leaves it
# optional: the API takes an image part without it, so the gateway does too.
RESPONSES_OPTIONAL = {"ResponseInputImageParam": {"detail": "=low|=high|=auto|=original"}}

EMBEDDINGS_BOUNDS = {
    "EmbeddingCreateParams.model": _MODEL,
    # dimensions: "The number of dimensions the resulting output embeddings should have" — the
    # API reference's OpenAPI schema gives minimum 1.
    "EmbeddingCreateParams.dimensions": Bound(1, None),
    # input: "cannot be an empty string, and any array must be 2048 dimensions or less"; the
    # nested token arrays are checked by `embedding_input`.
    "EmbeddingCreateParams.input": Bound(1, None),
}
# `encoding_format` decides how the gateway reads the answer (float or base64): only these two.
EMBEDDINGS_CLOSED = frozenset({"EmbeddingCreateParams.encoding_format"})
MAX_EMBEDDING_INPUTS = 2048

ANTHROPIC_BOUNDS = {
    "MessageCreateParams.model": _MODEL,
    # messages: the API refuses an empty list ("at least one message is required").
    "MessageCreateParams.messages": Bound(1, None),
    # max_tokens: "Set to `0` to populate the prompt cache" — so from 0.
    "MessageCreateParams.max_tokens": Bound(0, None),
    # temperature: "Ranges from 0.0 to 1.0"; top_p, a probability, 0 to 1; top_k: "Only sample
    # from the top K options", at least 0 (the API reference of the versions that define them).
    "MessageCreateParams.temperature": Bound(0, 1),
    "MessageCreateParams.top_p": Bound(0, 1),
    "MessageCreateParams.top_k": Bound(0, None),
    # budget_tokens: "Must be ≥1024 and less than `max_tokens`" (the second half: `thinking_budget`).
    "ThinkingConfigEnabledParam.budget_tokens": Bound(1024, None),
}
# OpenAI legacy Completions (https://platform.openai.com/docs/api-reference/completions/create and
# the SDK's `CompletionCreateParams` docstrings).
COMPLETIONS_BOUNDS = {
    "CompletionCreateParams.model": _MODEL,
    "CompletionCreateParams.temperature": Bound(0, 2),  # "between 0 and 2"
    "CompletionCreateParams.top_p": Bound(0, 1),
    "CompletionCreateParams.frequency_penalty": Bound(-2, 2),  # "Number between -2.0 and 2.0."
    "CompletionCreateParams.presence_penalty": Bound(-2, 2),
    "CompletionCreateParams.logit_bias.*": Bound(-100, 100),  # "a bias value from -100 to 100"
    "CompletionCreateParams.logprobs": Bound(0, 5),  # "The maximum value for `logprobs` is 5."
    "CompletionCreateParams.n": Bound(1, 128),
    "CompletionCreateParams.best_of": Bound(0, 20),  # the API reference's schema: 0 to 20
    "CompletionCreateParams.max_tokens": Bound(0, None),
}

COUNT_TOKENS_BOUNDS = {
    "MessageCountTokensParams.model": _MODEL,
    "MessageCountTokensParams.messages": Bound(1, None),
}


def completions_prompt(body: dict[str, Any]) -> None:
    """prompt: present and not empty (the SDK's type allows null, an empty document; the gateway
    needs a prompt to route, template and count)."""
    prompt = body["prompt"]
    if prompt is None or prompt == []:
        raise Invalid("prompt", "must not be empty")
    stop = body.get("stop")
    # stop: "Up to 4 sequences where the API will stop generating further tokens."
    if isinstance(stop, list) and len(stop) > 4:
        raise Invalid("stop", "must have at most 4 items")


# Older SDKs send these, and the Messages API still takes them; the newest types no longer define them.
ANTHROPIC_LEGACY = {"MessageCreateParams": {"temperature": "num", "top_p": "num", "top_k": "int"}}


def embedding_input(body: dict[str, Any]) -> None:
    """input: at most 2048 entries, and no empty string or token array among them."""
    value = body["input"]
    if not isinstance(value, list):
        return
    if len(value) > MAX_EMBEDDING_INPUTS:
        raise Invalid("input", f"must have at most {MAX_EMBEDDING_INPUTS} items")
    for i, item in enumerate(value):
        if item == "" or item == []:
            raise Invalid(f"input[{i}]", "must not be empty")


def responses_model(body: dict[str, Any]) -> None:
    """`model`: optional in the SDK (a stored prompt may name it), required by the gateway, which
    routes by it."""
    if "model" not in body:
        raise Invalid("model", "", missing=True)


def thinking_budget(body: dict[str, Any]) -> None:
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if isinstance(budget, int) and budget >= body["max_tokens"]:
            raise Invalid("thinking.budget_tokens", "must be less than max_tokens")


def bad_request(e: Invalid, anthropic: bool) -> BadRequest:
    """`e` as the client's 400: OpenAI's wording with `param`; Anthropic's `path: problem`."""
    if anthropic:
        return BadRequest(f"{e.path}: {'Field required' if e.missing else e.problem}", param=e.path)
    if e.missing:
        return BadRequest(f"Missing required parameter: '{e.path}'.", param=e.path)
    what = "type" if e.kind == "type" else "value"
    return BadRequest(f"Invalid {what} for '{e.path}': {e.problem}.", param=e.path)
