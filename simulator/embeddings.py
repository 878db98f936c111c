"""Simulated OpenAI embeddings: `POST /v1/embeddings` (JSON; `encoding_format` float or base64).

Each input (a string, or a token array read as its numbers joined by spaces) gets
`textgen.embedding(model, text, dimensions)`, 8 dimensions unless `dimensions` says otherwise;
base64 is the little-endian float32 array. `usage.prompt_tokens` counts strings by the token rule
of `textgen` and token arrays by their length. Empty inputs are refused as OpenAI does.
Scripted errors, `hang` and the whole-answer `fault`s (`simulator.faults`) apply as for chat.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from aiohttp import web

from simulator import faults, textgen
from simulator.capabilities import serves_embeddings
from simulator.common import admit
from simulator.openai_api import ChatCompletions
from simulator.openai_checks import error
from simulator.state import SimState
from simulator.validate import openai_embedding_request_problems

DIMENSIONS = 8
_INVALID_INPUT = "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."


def _inputs(value: Any) -> list[str | list[int]]:
    if isinstance(value, str):
        return [value]
    if value and all(isinstance(v, int) for v in value):
        return [value]
    return list(value)


def usage_tokens(inputs: list[str | list[int]]) -> int:
    return sum(textgen.count_tokens(i) if isinstance(i, str) else len(i) for i in inputs)


def encode(values: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
    return values


class Embeddings(ChatCompletions):
    """One `POST /v1/embeddings` exchange (authentication and errors as for chat completions)."""

    def embeddings_refusal(self, model: str) -> web.Response:
        """OpenAI's answer to embeddings from a model that does not make them."""
        return error(403, "You are not allowed to generate embeddings from this model", headers=self._headers())

    async def answer(self) -> web.StreamResponse:
        body, refused = await self.valid_body(openai_embedding_request_problems)
        if refused is not None:
            return refused
        inputs = _inputs(body["input"])
        if not inputs or any(len(i) == 0 for i in inputs):
            return error(400, _INVALID_INPUT, headers=self._headers())
        dimensions = body.get("dimensions")
        if dimensions is not None and dimensions < 1:
            return error(400, f"Invalid value for 'dimensions' = {dimensions}. Must be greater than 0.",
                         param="dimensions", headers=self._headers())
        model = body["model"]
        if dimensions is not None and dimensions > max_dimensions(model):
            # As OpenAI refuses more dimensions than the model has (text-embedding-3-small: 1536,
            # -large: 3072), never by building a vector that long.
            return error(400, f"Invalid value for 'dimensions' = {dimensions}. Must be at most "
                         f"{max_dimensions(model)} for model {model}.", param="dimensions", headers=self._headers())
        behaviour = self.state.behaviour(model)
        if not serves_embeddings(model, behaviour):
            return self.embeddings_refusal(model)
        prompt = usage_tokens(inputs)
        refused = await admit(self.state, self.request, behaviour, model,
                              lambda status: self.status_error(status, behaviour, model, prompt))
        if refused is not None:
            return refused
        await self.state.wait_whole(behaviour, 1, model, await self.request.read(), prompt)
        fmt = body.get("encoding_format") or "float"
        data = []
        for index, item in enumerate(inputs):
            text = item if isinstance(item, str) else " ".join(map(str, item))
            vector = textgen.embedding(model, text, dimensions or DIMENSIONS)
            data.append({"object": "embedding", "index": index, "embedding": encode(vector, fmt)})
        result = {"object": "list", "data": data, "model": model,
                  "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}
        headers = self._headers(self.rate_headers(behaviour, prompt, False))
        return await faults.whole_answer(self.state, self.request, behaviour.fault, result, headers)


async def embeddings(state: SimState, request: web.Request) -> web.StreamResponse:
    return await Embeddings(state, request).answer()


def max_dimensions(model: str) -> int:
    """The most output dimensions `model` has: 1536 for the small text-embedding-3 model, 3072 for
    the rest (text-embedding-3-large and the simulator's other embeddings models)."""
    return 1536 if "small" in model else 3072
