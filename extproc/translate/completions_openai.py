"""OpenAI legacy Completions client (`POST /v1/completions`) → OpenAI-compatible or Azure OpenAI.

The code-completion path: the shortest through the gateway. The request was checked against
`openai.types.CompletionCreateParams` by the client request check; this module only
- replaces `model` with the deployment's upstream model (Azure: the deployment, in the path);
- for a fill-in-the-middle request (`suffix` not null) to a model with a `fim_template` target
  option (a prompt-only server such as vLLM): writes the template around `prompt` and `suffix`
  (`completions_fim.apply_template`) and sends that as `prompt`, without `suffix`. A template
  needs one prompt string: an array prompt, or `echo` (the client would get the template's
  tokens back), with a suffix is a 400 naming the field;
- otherwise passes every field through (`suffix` included: servers that take it fill the middle).
Whether a model takes FIM at all (capability `fim`) is decided before translation
(`extproc.stages.selection.refusal`); the translator refuses a suffix without it as well.
Answers (a `text_completion` object, or its SSE chunks ending with `data: [DONE]`, usage in the
body or, with `stream_options.include_usage`, in the last chunk) go back byte for byte and are
only read (`OpenAIPassthroughStream`); a 200 that is not a completion is a 502. Errors are
OpenAI's, read as for chat.
Paths: `openai` → `{path_prefix}/completions`; `azure-openai` →
`/openai/deployments/{deployment}/completions?api-version=…`.
"""

from __future__ import annotations

from typing import Any

import orjson

from extproc.errors import BadRequest
from extproc.translate.base import ResponseContext, Target, UpstreamRequest, Usage
from extproc.translate.completions_fim import apply_template
from extproc.translate.openai_azure import azure_path
from extproc.translate.openai_openai import OpenAIToOpenAI, usage_from_openai, whole_answer

_HEADERS = (("content-type", "application/json"),)


def fim_refusal(body: dict[str, Any], target: Target) -> BadRequest | None:
    """The 400 for a `suffix` sent to a model without the capability `fim` (None: it may be sent)."""
    if body.get("suffix") is None or "fim" in target.capabilities:
        return None
    return BadRequest(f"The model `{target.public_model}` does not support fill-in-the-middle (`suffix`): "
                      "send the request without `suffix`, or to a model with the capability `fim`.", param="suffix")


def templated(body: dict[str, Any], template: str) -> dict[str, Any]:
    """`body` with its prompt and suffix written into `template` (a copy; `body` is not changed)."""
    prompt = body["prompt"]
    if not isinstance(prompt, str):
        raise BadRequest("With `suffix`, `prompt` must be one string for this model (its server takes the "
                         "prefix and suffix in one templated prompt).", param="prompt")
    if body.get("echo"):
        raise BadRequest("`echo` cannot be combined with `suffix` for this model (its server would echo the "
                         "fill-in-the-middle template, not your prompt).", param="echo")
    out = {k: v for k, v in body.items() if k != "suffix"}
    out["prompt"] = apply_template(template, prompt, body["suffix"])
    return out


class CompletionsToOpenAI(OpenAIToOpenAI):
    """The (openai-completions, openai) translator. Stateless; share one instance."""

    passthrough = True

    def path(self, target: Target) -> str:
        return target.option("path_prefix", "/v1") + "/completions"

    def translate_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        refused = fim_refusal(body, target)
        if refused is not None:
            raise refused
        template = target.option("fim_template")
        upstream = templated(body, template) if template and body.get("suffix") is not None else dict(body)
        upstream["model"] = target.upstream_model
        return UpstreamRequest(path=self.path(target), body=orjson.dumps(upstream), headers=_HEADERS,
                               stream=body.get("stream") is True)

    def translate_response(self, body: bytes, target: Target, ctx: ResponseContext) -> tuple[bytes, Usage | None]:
        return body, usage_from_openai(whole_answer(body, "choices", "a completion").get("usage"))


class CompletionsToAzure(CompletionsToOpenAI):
    """The (openai-completions, azure-openai) translator. Stateless; share one instance."""

    def path(self, target: Target) -> str:
        return azure_path(target, "completions")
