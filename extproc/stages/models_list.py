"""`GET /v1/models` and `GET /v1/models/{id}`, answered by the router stage itself, in OpenAI's
format or, when the caller sends `anthropic-version`, Anthropic's.

Like every answer, these name who made them: `x-interlock-provider: interlock` and
`x-interlock-model` (the model asked for by `/v1/models/{id}`, `-` for the list). A model's
`created` (`created_at` for Anthropic) is when this gateway process started serving: the gateway
knows when it began offering a model, not when its provider made it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import orjson

from extproc import errors, metadata

PATH = "/v1/models"
SERVING_SINCE = int(time.time())


def _anthropic(name: str, created: int) -> dict[str, str]:
    at = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"type": "model", "id": name, "display_name": name, "created_at": at}


def _openai(name: str, owner: str, created: int) -> dict[str, object]:
    return {"id": name, "object": "model", "created": created, "owned_by": owner}


def models_body(models: list[tuple[str, str]], anthropic: bool, one: str | None, created: int = SERVING_SINCE
                ) -> bytes:
    """`models`: (public name, owner) the tenant may use. With `one`, that model's object, or
    404 when it is not among them."""
    if one is not None:
        owner = next((o for name, o in models if name == one), None)
        if owner is None:
            raise errors.NotFound(f"The model `{one}` does not exist or you do not have access to it.",
                                  code="model_not_found")
        return orjson.dumps(_anthropic(one, created) if anthropic else _openai(one, owner, created))
    if anthropic:
        data = [_anthropic(name, created) for name, _ in models]
        return orjson.dumps({"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                             "last_id": data[-1]["id"] if data else None})
    return orjson.dumps({"object": "list", "data": [_openai(name, owner, created) for name, owner in models]})


def is_models_path(path: str) -> bool:
    return path == PATH or path.startswith(PATH + "/")


def answer(models: list[tuple[str, str]], method: str, path: str, anthropic: bool,
           created: int = SERVING_SINCE) -> tuple[bytes, list[tuple[str, str]]]:
    """The body and headers of the answer to a models request on `path` (see `is_models_path`);
    405 unless GET, 404 for a model the tenant may not see. `models`: (public name, owner) the
    tenant may use; `created`: the models' creation time (Unix seconds)."""
    if method != "GET":
        raise errors.MethodNotAllowed(method, path)
    one = path[len(PATH) + 1:] or None
    body = models_body(models, anthropic, one, created)
    return body, [("content-type", "application/json"), (metadata.PROVIDER_HEADER, metadata.GATEWAY_PROVIDER),
                  (metadata.MODEL_HEADER, one or "-")]
