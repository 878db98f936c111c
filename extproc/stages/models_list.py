"""`GET /v1/models` and `GET /v1/models/{id}`, answered by the router stage itself, in OpenAI's
format or, when the caller sends `anthropic-version`, Anthropic's."""

from __future__ import annotations

import orjson

from extproc import errors

PATH = "/v1/models"

_EPOCH = "1970-01-01T00:00:00Z"


def _anthropic(name: str) -> dict[str, str]:
    return {"type": "model", "id": name, "display_name": name, "created_at": _EPOCH}


def _openai(name: str, owner: str) -> dict[str, object]:
    return {"id": name, "object": "model", "created": 0, "owned_by": owner}


def models_body(models: list[tuple[str, str]], anthropic: bool, one: str | None) -> bytes:
    """`models`: (public name, owner) the tenant may use. With `one`, that model's object, or
    404 when it is not among them."""
    if one is not None:
        owner = next((o for name, o in models if name == one), None)
        if owner is None:
            raise errors.NotFound(f"The model `{one}` does not exist or you do not have access to it.",
                                  code="model_not_found")
        return orjson.dumps(_anthropic(one) if anthropic else _openai(one, owner))
    if anthropic:
        data = [_anthropic(name) for name, _ in models]
        return orjson.dumps({"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                             "last_id": data[-1]["id"] if data else None})
    return orjson.dumps({"object": "list", "data": [_openai(name, owner) for name, owner in models]})


def is_models_path(path: str) -> bool:
    return path == PATH or path.startswith(PATH + "/")


def answer(models: list[tuple[str, str]], method: str, path: str, anthropic: bool) -> bytes:
    """The body for a models request on `path` (see `is_models_path`); 405 unless GET, 404 for
    a model the tenant may not see. `models`: (public name, owner) the tenant may use."""
    if method != "GET":
        raise errors.MethodNotAllowed(method, path)
    return models_body(models, anthropic, path[len(PATH) + 1:] or None)
