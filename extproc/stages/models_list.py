"""`GET /v1/models` and `GET /v1/models/{id}`, answered by the router stage itself, in OpenAI's
format or, when the caller sends `anthropic-version`, Anthropic's.

Like every answer, these name who made them: `x-interlock-provider: interlock` and
`x-interlock-model` (the model asked for by `/v1/models/{id}`, `-` for the list). A model's
`created` (`created_at` for Anthropic) is when this gateway process started serving: the gateway
knows when it began offering a model, not when its provider made it.

Each model object says which of the gateway's client APIs serve it: `apis`, a list of request
paths (OpenAI's model object is open to extra fields; Anthropic's too), from `apis_by_model`: an
embeddings model serves `/v1/embeddings`; any other serves `/v1/chat/completions`, `/v1/messages`
and `/v1/responses` (every provider type takes all three); a route serves what its deployments do.
`/v1/completions` and `/v1/messages/count_tokens` are listed for the provider types that serve
them (`selection.SERVED_BY`); a `mistral` deployment (native fill-in-the-middle) serves
`/v1/completions` only.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from extproc import errors, metadata
from extproc.stages.request import ANTHROPIC_COUNT_TOKENS, OPENAI_COMPLETIONS
from extproc.stages.selection import ONLY_API, SERVED_BY

PATH = "/v1/models"
SERVING_SINCE = int(time.time())


def _anthropic(name: str, created: int) -> dict[str, str]:
    at = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"type": "model", "id": name, "display_name": name, "created_at": at}


def _openai(name: str, owner: str, created: int) -> dict[str, object]:
    return {"id": name, "object": "model", "created": created, "owned_by": owner}


CHAT_APIS = ("/v1/chat/completions", "/v1/messages", "/v1/responses")
EMBEDDINGS_APIS = ("/v1/embeddings",)


# Paths only some provider types serve (`selection.SERVED_BY`): completions (fill-in-the-middle)
# and token counting; a `mistral` deployment (native FIM) serves completions only.
COMPLETIONS_API, COUNT_TOKENS_API = "/v1/completions", "/v1/messages/count_tokens"
_OPTIONAL = ((COMPLETIONS_API, SERVED_BY[OPENAI_COMPLETIONS]), (COUNT_TOKENS_API, SERVED_BY[ANTHROPIC_COUNT_TOKENS]))


def _paths(d: Any) -> tuple[str, ...]:
    if "embeddings" in d.capabilities:
        return EMBEDDINGS_APIS
    ptype = getattr(getattr(d, "target", None), "provider_type", None)
    if ptype in ONLY_API:
        return (COMPLETIONS_API,)
    return CHAT_APIS + tuple(path for path, types in _OPTIONAL if ptype in types)


def serves(deployments: Iterable[Any]) -> list[str]:
    """The request paths that serve a model backed by `deployments` (anything with `capabilities`)."""
    out: list[str] = []
    for d in deployments:
        for api in _paths(d):
            if api not in out:
                out.append(api)
    return out


def apis_by_model(rt: Any) -> dict[str, list[str]]:
    """Public model or route name → `serves` of its deployments (a `Runtime`'s)."""
    out = {name: serves(deps) for name, deps in rt.deployments.items()}
    for name, route in rt.routes.items():
        out.setdefault(name, serves(route.deployments))
    return out


def models_body(models: list[tuple[str, str]], anthropic: bool, one: str | None, created: int = SERVING_SINCE,
                apis: Mapping[str, Sequence[str]] | None = None) -> bytes:
    """`models`: (public name, owner) the tenant may use. With `one`, that model's object, or
    404 when it is not among them. `apis`: the paths serving each model (`apis_by_model`)."""
    body = _models_body(models, anthropic, one, created)
    if apis is None:
        return body
    parsed = orjson.loads(body)
    for item in parsed.get("data", [parsed]) if one is None else [parsed]:
        item["apis"] = list(apis.get(item["id"], ()))
    return orjson.dumps(parsed)


def _models_body(models: list[tuple[str, str]], anthropic: bool, one: str | None, created: int) -> bytes:
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
           created: int = SERVING_SINCE, apis: Mapping[str, Sequence[str]] | None = None
           ) -> tuple[bytes, list[tuple[str, str]]]:
    """The body and headers of the answer to a models request on `path` (see `is_models_path`);
    405 unless GET, 404 for a model the tenant may not see. `models`: (public name, owner) the
    tenant may use; `created`: the models' creation time (Unix seconds)."""
    if method != "GET":
        raise errors.MethodNotAllowed(method, path)
    one = path[len(PATH) + 1:] or None
    body = models_body(models, anthropic, one, created, apis)
    return body, [("content-type", "application/json"), (metadata.PROVIDER_HEADER, metadata.GATEWAY_PROVIDER),
                  (metadata.MODEL_HEADER, one or "-")]
