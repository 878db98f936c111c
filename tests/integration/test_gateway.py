"""End to end through the real Envoy, the ext_proc workers and the simulator, with the official
`openai` SDK as the client for the happy paths and raw HTTP for malformed input."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import openai
import pytest

from tests.integration.conftest import LIMITED_KEY, PROVIDER_KEY, TENANT_KEY, Gateway, Simulator

MODELS = ["gpt-4o-mini", "claude-haiku-4-5"]
HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello to the gateway."}]
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def client(gw: Gateway, key: str = TENANT_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=30)


def post(gw: Gateway, body: bytes | dict[str, Any], key: str | None = TENANT_KEY,
         path: str = "/v1/chat/completions") -> httpx.Response:
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(gw.url + path, content=data, headers=headers, timeout=30)


def assert_openai_error(r: httpx.Response, status: int, *, type_: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers.get("x-request-id")
    # Every answer names who made it: a provider, or `interlock` when the gateway answered itself.
    assert r.headers.get("x-interlock-provider") and r.headers.get("x-interlock-model")
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert "Traceback" not in r.text and PROVIDER_KEY not in r.text
    if type_:
        assert err["type"] == type_, err
    return dict(err)


@pytest.mark.parametrize("model", MODELS)
def test_completion(gateway: Gateway, sim: Simulator, model: str) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(model=model, messages=HELLO)  # type: ignore[arg-type]
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage and completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert raw.headers["x-interlock-model"] == model
    assert raw.headers["x-interlock-provider"] == ("openai" if model.startswith("gpt") else "anthropic")
    assert raw.headers["x-request-id"]
    upstream = sim.requests()[-1]
    assert upstream["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert TENANT_KEY not in json.dumps(upstream)
    assert upstream["body"]["model"] in ("gpt-4o-mini-2024-07-18", "claude-haiku-4-5-20251001")


@pytest.mark.parametrize("model", MODELS)
def test_stream_matches_completion_and_reports_usage(gateway: Gateway, sim: Simulator, model: str) -> None:
    c = client(gateway)
    whole = c.chat.completions.create(model=model, messages=HELLO)  # type: ignore[arg-type]
    chunks = list(c.chat.completions.create(model=model, messages=HELLO, stream=True,  # type: ignore[arg-type]
                                            stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole.choices[0].message.content
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finish == ["stop"]
    usage_chunks = [ch for ch in chunks if ch.usage is not None]
    assert len(usage_chunks) == 1 and not usage_chunks[0].choices
    assert whole.usage is not None
    assert usage_chunks[0].usage == whole.usage  # the provider's counts, streamed or not
    assert len({ch.id for ch in chunks}) == 1


@pytest.mark.parametrize("model", MODELS)
def test_stream_without_usage_option_has_no_usage_chunk(gateway: Gateway, sim: Simulator, model: str) -> None:
    chunks = list(client(gateway).chat.completions.create(model=model, messages=HELLO, stream=True))  # type: ignore[arg-type]
    assert chunks and all(ch.usage is None for ch in chunks)
    assert all(ch.choices for ch in chunks)


def test_passthrough_stream_usage_is_counted_when_the_client_did_not_ask(gateway: Gateway, sim: Simulator) -> None:
    """The gateway asks the provider for a stream's usage the client did not ask for, counts it,
    and gives the client the stream it would have had: no `usage` member, no usage-only chunk."""
    from openai.types.chat import ChatCompletionChunk

    from tests.integration.test_provider_faults import access_line

    body = {"model": "gpt-4o-mini", "messages": HELLO, "stream": True, "stream_options": {"include_usage": False}}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, timeout=30,
                      headers={"authorization": f"Bearer {TENANT_KEY}"}) as r:
        assert r.status_code == 200
        raw = b"".join(r.iter_bytes())
        request_id = r.headers["x-request-id"]
    upstream = sim.requests()[-1]["body"]
    assert upstream["stream_options"] == {"include_usage": True}
    assert b'"usage"' not in raw  # neither `"usage":null` members nor the usage-only chunk
    events = [e.removeprefix(b"data: ") for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"[DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(e) for e in events[:-1]]
    assert chunks and all(ch.choices and ch.usage is None for ch in chunks)
    line = access_line(gateway, request_id)
    prompt, completion = (int(re.search(rf"{k}=(\d+)", line).group(1))  # type: ignore[union-attr]
                          for k in ("prompt_tokens", "completion_tokens"))
    assert prompt > 0 and completion > 0


@pytest.mark.parametrize("model", MODELS)
def test_tool_calls(gateway: Gateway, sim: Simulator, model: str) -> None:
    c = client(gateway)
    msg = [{"role": "user", "content": "What is the weather in Paris?"}]
    done = c.chat.completions.create(model=model, messages=msg, tools=[WEATHER_TOOL], tool_choice="required")  # type: ignore[arg-type,list-item]
    call = done.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert done.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and "city" in json.loads(call.function.arguments)  # type: ignore[union-attr]
    args: dict[int, str] = {}
    names: dict[int, str] = {}
    for ch in c.chat.completions.create(model=model, messages=msg, tools=[WEATHER_TOOL],  # type: ignore[arg-type,list-item]
                                        tool_choice="required", stream=True):
        for tc in (ch.choices[0].delta.tool_calls or []) if ch.choices else []:
            args[tc.index] = args.get(tc.index, "") + (tc.function.arguments or "" if tc.function else "")
            if tc.function and tc.function.name:
                names[tc.index] = tc.function.name
    assert names == {0: "get_weather"} and json.loads(args[0]) == json.loads(call.function.arguments)  # type: ignore[union-attr]
    follow = c.chat.completions.create(model=model, messages=[  # type: ignore[arg-type]
        *msg, {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "18 C and sunny"}], tools=[WEATHER_TOOL])
    assert follow.choices[0].finish_reason == "stop" and follow.choices[0].message.content


def test_anthropic_translation_reaches_provider_in_its_format(gateway: Gateway, sim: Simulator) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="claude-haiku-4-5", messages=HELLO, temperature=0.2, stop=["zzz"])  # type: ignore[arg-type]
    assert raw.headers["x-interlock-dropped-params"] == "temperature"
    up = sim.requests()[-1]
    assert up["path"] == "/v1/messages"
    assert up["headers"]["anthropic-version"] == "2026-10-21"
    assert up["body"]["system"] == "Be brief." and up["body"]["max_tokens"] == 8192
    assert up["body"]["stop_sequences"] == ["zzz"] and "temperature" not in up["body"]
    assert "x-api-key" not in up["headers"]


def test_models_lists_what_the_tenant_may_use(gateway: Gateway) -> None:
    all_models = sorted(m.id for m in client(gateway).models.list())
    assert all_models == sorted(["gpt-4o-mini", "claude-haiku-4-5", "claude-no-tools", "unreachable-model"])
    assert [m.id for m in client(gateway, LIMITED_KEY).models.list()] == ["gpt-4o-mini"]


# -- errors ---------------------------------------------------------------------------------------

def test_wrong_key_is_401_in_openai_format(gateway: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError) as e:
        client(gateway, "sk-wrong").chat.completions.create(model="gpt-4o-mini", messages=HELLO)  # type: ignore[arg-type]
    assert e.value.status_code == 401
    assert isinstance(e.value.body, dict) and e.value.body["type"] == "authentication_error"


def test_missing_key_is_401(gateway: Gateway, sim: Simulator) -> None:
    assert_openai_error(post(gateway, {"model": "gpt-4o-mini", "messages": HELLO}, key=None), 401,
                        type_="authentication_error")
    assert_openai_error(httpx.get(gateway.url + "/v1/models"), 401)
    assert sim.requests() == []


def test_malformed_json_is_400(gateway: Gateway) -> None:
    r = post(gateway, b'{"model": "gpt-4o-mini", "messages": [')
    assert r.headers["x-interlock-provider"] == "interlock"
    err = assert_openai_error(r, 400, type_="invalid_request_error")
    assert "JSON" in err["message"]


@pytest.mark.parametrize("body,param", [
    ({"messages": HELLO}, "model"),
    ({"model": "claude-haiku-4-5"}, "messages"),
    ({"model": "claude-haiku-4-5", "messages": HELLO, "n": 3}, "n"),
])
def test_missing_or_unservable_fields_are_400(gateway: Gateway, body: dict[str, Any], param: str) -> None:
    err = assert_openai_error(post(gateway, body), 400, type_="invalid_request_error")
    assert err["param"] == param


def test_tools_to_a_model_without_tools_is_400(gateway: Gateway) -> None:
    err = assert_openai_error(post(gateway, {"model": "claude-no-tools", "messages": HELLO,
                                             "tools": [WEATHER_TOOL]}), 400)
    assert err["param"] == "tools"


def test_empty_body_is_400(gateway: Gateway) -> None:
    assert_openai_error(post(gateway, b""), 400)


def test_unknown_and_forbidden_models_are_404(gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError):
        client(gateway).chat.completions.create(model="gpt-7", messages=HELLO)  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError) as e:
        client(gateway, LIMITED_KEY).chat.completions.create(model="claude-haiku-4-5", messages=HELLO)  # type: ignore[arg-type]
    assert isinstance(e.value.body, dict) and e.value.body["code"] == "model_not_found"


def test_unknown_path_is_404(gateway: Gateway) -> None:
    assert_openai_error(post(gateway, {"x": 1}, path="/v1/images/generations"), 404)


def test_oversized_body_is_413(gateway: Gateway) -> None:
    big = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 2_000_000}]}
    assert_openai_error(post(gateway, big), 413)


def test_provider_400_is_mapped_with_its_message(gateway: Gateway, sim: Simulator) -> None:
    # The simulator, like OpenAI, rejects parameters it does not know.
    err = assert_openai_error(post(gateway, {"model": "gpt-4o-mini", "messages": HELLO, "frobnicate": 1}), 400)
    assert "frobnicate" in err["message"]


@pytest.mark.parametrize("model,upstream,client_status", [
    *[(m, up, client) for m in MODELS for up, client in ((500, 502), (503, 503), (401, 502), (404, 404))],
    ("claude-haiku-4-5", 529, 503),  # Anthropic's "overloaded"
])
def test_provider_errors_are_mapped(gateway: Gateway, sim: Simulator, model: str, upstream: int,
                                    client_status: int) -> None:
    sim.behave(sim_model(model), status=upstream)
    r = post(gateway, {"model": model, "messages": HELLO})
    assert_openai_error(r, client_status)
    assert r.headers["x-interlock-provider"]


@pytest.mark.parametrize("model", MODELS)
def test_provider_429_keeps_retry_after(gateway: Gateway, sim: Simulator, model: str) -> None:
    sim.behave(sim_model(model), status=429, retry_after_s=7)
    r = post(gateway, {"model": model, "messages": HELLO})
    assert_openai_error(r, 429, type_="rate_limit_error")
    assert r.headers["retry-after"] == "7"
    with pytest.raises(openai.RateLimitError):
        client(gateway).chat.completions.create(model=model, messages=HELLO)  # type: ignore[arg-type]


@pytest.mark.parametrize("model", MODELS)
def test_provider_error_on_stream_request_is_json_error(gateway: Gateway, sim: Simulator, model: str) -> None:
    sim.behave(sim_model(model), status=503)
    with pytest.raises(openai.InternalServerError) as e:
        list(client(gateway).chat.completions.create(model=model, messages=HELLO, stream=True))  # type: ignore[arg-type]
    assert e.value.status_code == 503


def test_provider_unreachable_is_503(gateway: Gateway) -> None:
    err = assert_openai_error(post(gateway, {"model": "unreachable-model", "messages": HELLO}), 503)
    assert "could not be reached" in err["message"]


def sim_model(model: str) -> str:
    return {"gpt-4o-mini": "gpt-4o-mini-2024-07-18", "claude-haiku-4-5": "claude-haiku-4-5-20251001"}[model]
