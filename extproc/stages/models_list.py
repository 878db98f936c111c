"""`GET /v1/models` and `GET /v1/models/{id}` bodies, in OpenAI's or Anthropic's format."""

from __future__ import annotations

import orjson

from extproc import errors

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
