"""`extproc.stages.models_list`: `GET /v1/models` and `GET /v1/models/{id}` answered by the gateway,
in OpenAI's format or Anthropic's, listing only what the tenant may use, with the headers every
answer carries and a real creation time."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from extproc import errors
from extproc.stages import models_list
from tests.unit.extproc.stages.support import runtime, tenant

MODELS = [("gpt", "openai"), ("claude", "anthropic"), ("cheap", "interlock")]
CREATED = 1_767_225_600  # 2026-01-01T00:00:00Z
CREATED_AT = "2026-01-01T00:00:00Z"


def _openai(name: str, owner: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": CREATED, "owned_by": owner}


def _anthropic(name: str) -> dict[str, Any]:
    return {"type": "model", "id": name, "display_name": name, "created_at": CREATED_AT}


def body_of(models: list[tuple[str, str]], method: str, path: str, anthropic: bool) -> Any:
    body, _ = models_list.answer(models, method, path, anthropic, CREATED)
    return orjson.loads(body)


@pytest.mark.parametrize(("models", "anthropic", "path", "expected"), [
    (MODELS, False, "/v1/models", {"object": "list", "data": [_openai(n, o) for n, o in MODELS]}),
    ([], False, "/v1/models", {"object": "list", "data": []}),
    (MODELS, True, "/v1/models", {"data": [_anthropic(n) for n, _ in MODELS], "has_more": False,
                                  "first_id": "gpt", "last_id": "cheap"}),
    ([], True, "/v1/models", {"data": [], "has_more": False, "first_id": None, "last_id": None}),
    (MODELS, False, "/v1/models/claude", _openai("claude", "anthropic")),
    (MODELS, True, "/v1/models/claude", _anthropic("claude")),
    ([("ft:gpt/acme", "openai")], False, "/v1/models/ft:gpt/acme", _openai("ft:gpt/acme", "openai")),
    (MODELS, False, "/v1/models/", {"object": "list", "data": [_openai(n, o) for n, o in MODELS]}),
], ids=["openai-list", "openai-empty", "anthropic-list", "anthropic-empty", "openai-one", "anthropic-one",
        "one-with-a-slash", "trailing-slash"])
def test_answer(models: list[tuple[str, str]], anthropic: bool, path: str, expected: dict[str, Any]) -> None:
    assert body_of(models, "GET", path, anthropic) == expected


@pytest.mark.parametrize("path", ["/v1/models/gpt-5-imaginary", "/v1/models/GPT"])
@pytest.mark.parametrize("anthropic", [False, True])
def test_a_model_not_listed_is_404(path: str, anthropic: bool) -> None:
    with pytest.raises(errors.NotFound) as info:
        models_list.answer(MODELS, "GET", path, anthropic)
    name = path.rsplit("/", 1)[1]
    assert (info.value.status, info.value.code, info.value.message) == (
        404, "model_not_found", f"The model `{name}` does not exist or you do not have access to it.")


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/models"), ("DELETE", "/v1/models/gpt"),
                                              ("HEAD", "/v1/models")])
def test_only_get_is_allowed(method: str, path: str) -> None:
    with pytest.raises(errors.MethodNotAllowed) as info:
        models_list.answer(MODELS, method, path, False)
    assert (info.value.status, info.value.message) == (405, f"Method {method} is not allowed on {path}.")


@pytest.mark.parametrize(("path", "is_models"), [("/v1/models", True), ("/v1/models/gpt", True),
                                                 ("/v1/models/a/b", True), ("/v1/modelsx", False),
                                                 ("/v1/model", False), ("/v1", False), ("/models", False),
                                                 ("/v1/chat/completions", False)])
def test_is_models_path(path: str, is_models: bool) -> None:
    assert models_list.is_models_path(path) is is_models


@pytest.mark.parametrize(("who", "ids"), [
    ("main", ["gpt", "claude", "flash", "proxied", "keyless", "dual", "twin", "cheap", "smart", "pair"]),
    ("narrow", ["gpt", "smart"]),
])
def test_a_tenant_lists_what_it_may_use(who: str, ids: list[str]) -> None:
    body = body_of(runtime().models_for(tenant(who)), "GET", "/v1/models", False)
    assert [m["id"] for m in body["data"]] == ids


@pytest.mark.parametrize(("path", "model"), [("/v1/models", "-"), ("/v1/models/", "-"), ("/v1/models/claude", "claude"),
                                             ("/v1/models/cheap", "cheap")])
@pytest.mark.parametrize("anthropic", [False, True])
def test_every_answer_names_who_made_it(path: str, model: str, anthropic: bool) -> None:
    """Like every answer of the gateway: `x-interlock-provider` is the gateway itself, and
    `x-interlock-model` the model asked for (only one the tenant may see: never an unknown name)."""
    _, headers = models_list.answer(MODELS, "GET", path, anthropic)
    assert dict(headers) == {"content-type": "application/json", "x-interlock-provider": "interlock",
                             "x-interlock-model": model}


@pytest.mark.parametrize("anthropic", [False, True])
def test_models_have_a_real_creation_time(anthropic: bool) -> None:
    """Not the epoch: when this gateway process started serving them (SDKs and UIs show it)."""
    body, _ = models_list.answer(MODELS, "GET", "/v1/models", anthropic)
    listed = orjson.loads(body)["data"]
    since = models_list.SERVING_SINCE
    assert time.time() - 86400 < since <= time.time()
    if anthropic:
        assert {m["created_at"] for m in listed} == {time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since))}
    else:
        assert {m["created"] for m in listed} == {since}
