"""Bad input through the real Envoy (issue 11, points 1, 3 and 4): a malformed body is a 400 in the
client's error format naming the field, for both client APIs and every provider type,
passthrough included — never a 5xx; nothing taken from the request comes back in a header
unbounded; numbers outside the range a provider documents are 400s naming the field.

Every request here but one kind (an unknown field, which a passthrough provider judges) is refused
before any provider is called, so the simulator sees none."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.integration.conftest import TENANT_KEY, Gateway, Simulator

OPENAI_MODELS = ["gpt-4o-mini", "azure-gpt-4o", "claude-haiku-4-5", "gemini-2.5-flash", "vertex-gemini-pro",
                 "vertex-claude", "bedrock-claude-sonnet"]
ANTHROPIC_MODELS = OPENAI_MODELS
HELLO = [{"role": "user", "content": "Say hello."}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
ANTHROPIC_TOOL = {"name": "f", "input_schema": {"type": "object"}}


def _nested(levels: int) -> str:
    return "[" * levels + "]" * levels


def post(gw: Gateway, path: str, body: dict[str, Any] | bytes) -> httpx.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(gw.url + path, content=data, timeout=30,
                      headers={"authorization": f"Bearer {TENANT_KEY}", "content-type": "application/json"})


def openai_400(r: httpx.Response, param: str) -> None:
    assert r.status_code == 400, (r.status_code, r.text[:300])
    error = r.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param), error
    assert f"'{param}'" in error["message"] or param in error["message"]


def anthropic_400(r: httpx.Response, field: str) -> None:
    assert r.status_code == 400, (r.status_code, r.text[:300])
    doc = r.json()
    assert doc["type"] == "error" and doc["error"]["type"] == "invalid_request_error", doc
    assert doc["error"]["message"].startswith(f"{field}: "), doc


# -- point 1: every field type-checked, every provider type -------------------------------------

OPENAI_BAD: list[tuple[dict[str, Any] | bytes, str]] = [
    ({"messages": True}, "messages"),
    ({"messages": 5}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": []}]}]}, "messages[0].content[0].type"),
    ({"messages": HELLO, "service_tier": {}}, "service_tier"),
    ({"messages": HELLO, "reasoning_effort": []}, "reasoning_effort"),
    ({"messages": HELLO, "tools": [TOOL], "tool_choice": 5}, "tool_choice"),
    ({"messages": HELLO, "stream": "yes"}, "stream"),
    # parses (orjson reads 1,024 levels) but could never be encoded again (254)
    (b'{"model": "MODEL", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", '
     b'"function": {"name": "f", "parameters": {"p": ' + _nested(300).encode() + b"}}}]}",
     "tools[0].function.parameters.p"),
    (b'{"model": "MODEL", "messages": [{"role": "user", "content": "x"}], "vendor": ' + _nested(300).encode() + b"}",
     "vendor"),
]


@pytest.mark.parametrize("model", OPENAI_MODELS)
def test_malformed_openai_chat_bodies_are_400s_naming_the_field(providers_gateway: Gateway, sim: Simulator,
                                                               model: str) -> None:
    for body, param in OPENAI_BAD:
        raw = body.replace(b"MODEL", model.encode()) if isinstance(body, bytes) else {"model": model, **body}
        r = post(providers_gateway, "/v1/chat/completions", raw)
        openai_400(r, param)
        assert r.headers["x-interlock-provider"] == "interlock"
    assert sim.requests() == []


ANTHROPIC_BAD: list[tuple[dict[str, Any], str | None]] = [
    ({"messages": True}, "messages"),
    ({"messages": 5}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": []}]}]}, "messages[0].content[0].type"),
    ({"messages": HELLO, "tools": [ANTHROPIC_TOOL], "tool_choice": "x"}, "tool_choice"),
    ({"messages": HELLO, "reasoning_effort": []}, None),  # not an Anthropic field: see below
    ({"messages": HELLO, "service_tier": {}}, "service_tier"),
    ({"messages": HELLO, "system": 5}, "system"),
    ({"messages": HELLO, "max_tokens": "64"}, "max_tokens"),
]


@pytest.mark.parametrize("model", ANTHROPIC_MODELS)
def test_malformed_anthropic_messages_bodies_are_400s_naming_the_field(providers_gateway: Gateway,
                                                                      model: str) -> None:
    for fields, field in ANTHROPIC_BAD:
        r = post(providers_gateway, "/v1/messages", {"model": model, "max_tokens": 64, **fields})
        if field is None:
            # An unknown field is the translator's to judge: passed to Anthropic (which refuses
            # it, as the simulator does), refused by the translators to other APIs. Never a 5xx.
            assert r.status_code == 400, (r.status_code, r.text[:300])
            continue
        anthropic_400(r, field)


# -- point 3: nothing from the request echoed into a header unbounded ---------------------------

@pytest.mark.parametrize(("path", "extra"), [
    ("/v1/chat/completions", {"messages": HELLO}),
    ("/v1/messages", {"messages": HELLO, "max_tokens": 64}),
    ("/v1/embeddings", {"input": "x"}),
])
def test_a_huge_model_name_is_refused_with_a_short_header(providers_gateway: Gateway, path: str,
                                                          extra: dict[str, Any]) -> None:
    # 900 KB: within the request limit (1 MiB), so the body is read and the model refused.
    r = post(providers_gateway, path, {"model": "m" * 900_000, **extra})
    assert r.status_code in (400, 404), r.status_code
    assert len(r.headers["x-interlock-model"]) <= 256
    assert sum(len(k) + len(v) for k, v in r.headers.items()) < 4096
    assert len(r.content) < 4096


@pytest.mark.parametrize("model", ["gpt\r\nset-cookie: a=1", "modèle\u0000x", "g" * 300])
def test_a_model_name_with_control_characters_comes_back_escaped(providers_gateway: Gateway, model: str) -> None:
    r = post(providers_gateway, "/v1/chat/completions", {"model": model, "messages": HELLO})
    assert r.status_code in (400, 404), r.status_code
    shown = r.headers["x-interlock-model"]
    assert shown.isascii() and shown.isprintable() and len(shown) <= 256
    assert "set-cookie" not in r.headers


# -- point 4: numbers outside the documented ranges ----------------------------------------------

@pytest.mark.parametrize(("model", "fields", "param"), [
    ("gpt-4o-mini", {"temperature": 5}, "temperature"),
    ("claude-haiku-4-5", {"top_p": 1.5}, "top_p"),
    ("gemini-2.5-flash", {"n": 0}, "n"),
    ("bedrock-claude-sonnet", {"max_tokens": 2**63}, "max_tokens"),
    ("azure-gpt-4o", {"max_completion_tokens": 2**64 - 1}, "max_completion_tokens"),
    ("gpt-4o-mini", {"logit_bias": {"1": 1000}}, "logit_bias.1"),
    ("gpt-4o-mini", {"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
    ("gemini-2.5-flash", {"seed": 2**40}, "seed"),  # Gemini's seed is an int32
])
def test_openai_chat_numbers_out_of_range_are_400s(providers_gateway: Gateway, sim: Simulator, model: str,
                                                   fields: dict[str, Any], param: str) -> None:
    openai_400(post(providers_gateway, "/v1/chat/completions", {"model": model, "messages": HELLO, **fields}), param)
    assert sim.requests() == []


@pytest.mark.parametrize(("model", "fields", "field"), [
    ("claude-haiku-4-5", {"temperature": 1.5}, "temperature"),
    ("gpt-4o-mini", {"max_tokens": 2**63}, "max_tokens"),
    ("claude-haiku-4-5", {"thinking": {"type": "enabled", "budget_tokens": 10}}, "thinking.budget_tokens"),
])
def test_anthropic_numbers_out_of_range_are_400s(providers_gateway: Gateway, sim: Simulator, model: str,
                                                 fields: dict[str, Any], field: str) -> None:
    anthropic_400(post(providers_gateway, "/v1/messages", {"model": model, "max_tokens": 64, "messages": HELLO,
                                                           **fields}), field)
    assert sim.requests() == []


@pytest.mark.parametrize("model", ["text-embedding-3-small", "azure-embedding", "gemini-embedding"])
@pytest.mark.parametrize(("fields", "param"), [
    ({"dimensions": 2**63}, "dimensions"),  # the example: the simulator would build the vector
    ({"dimensions": 0}, "dimensions"),
    ({"input": ["x"] * 2049}, "input"),
])
def test_embeddings_numbers_out_of_range_are_400s(providers_gateway: Gateway, sim: Simulator, model: str,
                                                  fields: dict[str, Any], param: str) -> None:
    openai_400(post(providers_gateway, "/v1/embeddings", {"model": model, "input": "x", **fields}), param)
    assert sim.requests() == []
