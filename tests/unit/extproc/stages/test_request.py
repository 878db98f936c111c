"""`extproc.stages.request`: the client's request read once — headers (tenant, priority, deadline,
client API) and body (model, limits, needs, affinity, estimate) — and the 400/401/404/405/413
errors a client gets for each malformed field."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from extproc import errors
from extproc.config.model import Tenant
from extproc.stages import request
from extproc.stages.request import ANTHROPIC_MESSAGES, OPENAI_CHAT, OPENAI_EMBEDDINGS
from extproc.translate.schema import MAX_DEPTH, MAX_MODEL_CHARS
from tests.unit.extproc.stages.support import client, sha

MAX_BYTES = 65536
MAIN = Tenant("main", (sha("sk-main"),))
SLOW = Tenant("slow", (sha("sk-slow"),), priority="batch", deadline=2.5)
TENANTS = {sha("sk-main"): MAIN, sha("sk-slow"): SLOW}
HELLO = [{"role": "user", "content": "Say hello."}]
# The least a valid body of each client API needs besides the fields under test.
BASE: dict[str, dict[str, Any]] = {OPENAI_CHAT: {"model": "m", "messages": HELLO},
                                   ANTHROPIC_MESSAGES: {"model": "m", "messages": HELLO, "max_tokens": 64},
                                   OPENAI_EMBEDDINGS: {"model": "m", "input": "x"}}


def valid(api: str, **fields: Any) -> request.ClientRequest:
    return client(api, **{**BASE[api], **fields})


def refused(api: str, **fields: Any) -> errors.BadRequest:
    with pytest.raises(errors.BadRequest) as info:
        valid(api, **fields)
    assert info.value.status == 400
    return info.value


# -- max output tokens ---------------------------------------------------------------------------

@pytest.mark.parametrize(("api", "fields", "expected"), [
    (OPENAI_CHAT, {}, None),
    (OPENAI_CHAT, {"max_tokens": 300}, 300),
    (OPENAI_CHAT, {"max_tokens": 0}, None),
    (OPENAI_CHAT, {"max_tokens": None}, None),
    (OPENAI_CHAT, {"max_completion_tokens": 50, "max_tokens": 300}, 50),
    (OPENAI_CHAT, {"max_completion_tokens": None, "max_tokens": 300}, 300),
    (OPENAI_CHAT, {"max_completion_tokens": 70}, 70),
    (ANTHROPIC_MESSAGES, {"max_tokens": 256}, 256),
    (ANTHROPIC_MESSAGES, {"max_tokens": 0}, None),
    # Anthropic has no max_completion_tokens: an extension field, neither read nor checked.
    (ANTHROPIC_MESSAGES, {"max_completion_tokens": 50, "max_tokens": 256}, 256),
    (ANTHROPIC_MESSAGES, {"max_completion_tokens": True, "max_tokens": 256}, 256),
    # Embeddings have no output: the fields are extensions, not read.
    (OPENAI_EMBEDDINGS, {"max_tokens": True}, None),
], ids=lambda v: orjson.dumps(v).decode() if isinstance(v, dict) else str(v))
def test_max_output_tokens(api: str, fields: dict[str, Any], expected: int | None) -> None:
    assert valid(api, **fields).max_output_tokens == expected


@pytest.mark.parametrize(("api", "fields", "param", "message"), [
    (OPENAI_CHAT, {"max_tokens": True}, "max_tokens", "Invalid type for 'max_tokens': expected an integer, got a boolean."),
    (OPENAI_CHAT, {"max_tokens": False}, "max_tokens", None),
    (OPENAI_CHAT, {"max_tokens": -1}, "max_tokens",
     "Invalid value for 'max_tokens': must be between 0 and 9223372036854775807."),
    (OPENAI_CHAT, {"max_tokens": "300"}, "max_tokens", None),
    (OPENAI_CHAT, {"max_tokens": 1.5}, "max_tokens", None),
    (OPENAI_CHAT, {"max_tokens": 300.0}, "max_tokens", None),
    (OPENAI_CHAT, {"max_tokens": [300]}, "max_tokens", None),
    (OPENAI_CHAT, {"max_tokens": 2**63}, "max_tokens", None),  # past int64
    (OPENAI_CHAT, {"max_tokens": float(2**64)}, "max_tokens", None),  # 2**64 parses as a float
    (OPENAI_CHAT, {"max_completion_tokens": True, "max_tokens": 300}, "max_completion_tokens", None),
    (OPENAI_CHAT, {"max_completion_tokens": -5}, "max_completion_tokens", None),
    (ANTHROPIC_MESSAGES, {"max_tokens": True}, "max_tokens", "max_tokens: expected an integer, got a boolean"),
    (ANTHROPIC_MESSAGES, {"max_tokens": False}, "max_tokens", None),
    (ANTHROPIC_MESSAGES, {"max_tokens": "256"}, "max_tokens", None),
    (ANTHROPIC_MESSAGES, {"max_tokens": None}, "max_tokens", "max_tokens: Field required"),
    (ANTHROPIC_MESSAGES, {"max_tokens": -1}, "max_tokens", None),
], ids=lambda v: orjson.dumps(v).decode() if isinstance(v, dict) else str(v))
def test_a_max_tokens_that_is_not_a_non_negative_integer_is_a_400_naming_the_field(
        api: str, fields: dict[str, Any], param: str, message: str | None) -> None:
    err = refused(api, **fields)
    assert err.param == param
    if message is not None:
        assert err.message == message
    status, rendered, _ = errors.render(err, errors.OPENAI)
    assert status == 400 and orjson.loads(rendered)["error"]["param"] == param


# -- needs ---------------------------------------------------------------------------------------

def _parts(*parts: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(parts)}]


IMAGE_URL = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
ANTHROPIC_IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
TEXT = {"type": "text", "text": "What is this?"}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
ANTHROPIC_TOOL = {"name": "f", "input_schema": {"type": "object"}}


@pytest.mark.parametrize(("api", "fields", "expected"), [
    (OPENAI_CHAT, {}, set()),
    (OPENAI_CHAT, {"tools": [TOOL]}, {"tools"}),
    (OPENAI_CHAT, {"tools": []}, set()),
    (OPENAI_CHAT, {"tools": None}, set()),
    (OPENAI_CHAT, {"response_format": {"type": "json_object"}}, {"json"}),
    (OPENAI_CHAT, {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, {"json"}),
    (OPENAI_CHAT, {"response_format": {"type": "text"}}, set()),
    (OPENAI_CHAT, {"messages": _parts(TEXT, IMAGE_URL)}, {"images"}),
    (OPENAI_CHAT, {"messages": [*HELLO, {"role": "assistant", "content": "ok"}, *_parts(IMAGE_URL)]}, {"images"}),
    (OPENAI_CHAT, {"messages": _parts(TEXT)}, set()),
    (OPENAI_CHAT, {"messages": _parts(TEXT, IMAGE_URL), "tools": [TOOL], "response_format": {"type": "json_object"}},
     {"tools", "images", "json"}),
    (ANTHROPIC_MESSAGES, {}, set()),
    (ANTHROPIC_MESSAGES, {"tools": [ANTHROPIC_TOOL]}, {"tools"}),
    (ANTHROPIC_MESSAGES, {"output_config": {"format": {"type": "json_schema", "schema": {}}}}, {"json"}),
    (ANTHROPIC_MESSAGES, {"output_config": {"effort": "low"}}, set()),
    (ANTHROPIC_MESSAGES, {"messages": _parts(ANTHROPIC_IMAGE, TEXT)}, {"images"}),
    (ANTHROPIC_MESSAGES, {"messages": _parts(TEXT)}, set()),
], ids=lambda v: orjson.dumps(v).decode()[:60] if isinstance(v, dict) else str(v))
def test_needs(api: str, fields: dict[str, Any], expected: set[str]) -> None:
    assert valid(api, **fields).needs == frozenset(expected)


def test_embeddings_need_nothing() -> None:
    assert valid(OPENAI_EMBEDDINGS, tools=[TOOL]).needs == frozenset()


# -- the request check: every field type-checked before use (the classes) --------------

@pytest.mark.parametrize(("api", "fields", "param"), [
    (OPENAI_CHAT, {"messages": True}, "messages"),
    (OPENAI_CHAT, {"messages": 5}, "messages"),
    (OPENAI_CHAT, {"messages": "x"}, "messages"),
    (OPENAI_CHAT, {"messages": None}, "messages"),
    (OPENAI_CHAT, {"messages": []}, "messages"),
    (OPENAI_CHAT, {"messages": {"content": [IMAGE_URL]}}, "messages"),
    (OPENAI_CHAT, {"messages": [1, "x", None, True]}, "messages[0]"),
    (OPENAI_CHAT, {"messages": [{"role": "user", "content": [1, "image_url", None]}]}, "messages[0].content[0]"),
    (OPENAI_CHAT, {"messages": [{"role": "user", "content": {"type": "image_url"}}]}, "messages[0].content"),
    (OPENAI_CHAT, {"messages": [{"role": "user", "content": [{"type": []}]}]}, "messages[0].content[0].type"),
    (OPENAI_CHAT, {"messages": [{"role": [], "content": "x"}]}, "messages[0].role"),
    (OPENAI_CHAT, {"response_format": "json_object"}, "response_format"),
    (OPENAI_CHAT, {"service_tier": {}}, "service_tier"),
    (OPENAI_CHAT, {"reasoning_effort": []}, "reasoning_effort"),
    (OPENAI_CHAT, {"stream": "true"}, "stream"),
    (OPENAI_CHAT, {"stream": 1}, "stream"),
    (OPENAI_CHAT, {"stream": True, "stream_options": "include_usage"}, "stream_options"),
    (OPENAI_CHAT, {"tools": [{"type": "function", "function": {"name": 7}}]}, "tools[0].function.name"),
    (OPENAI_CHAT, {"tool_choice": 5}, "tool_choice"),
    (ANTHROPIC_MESSAGES, {"messages": True}, "messages"),
    (ANTHROPIC_MESSAGES, {"messages": []}, "messages"),
    (ANTHROPIC_MESSAGES, {"output_config": "json"}, "output_config"),
    (ANTHROPIC_MESSAGES, {"tool_choice": "x"}, "tool_choice"),
    (ANTHROPIC_MESSAGES, {"messages": [{"role": "user", "content": [{"type": []}]}]}, "messages[0].content[0].type"),
    (ANTHROPIC_MESSAGES, {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
     "messages[0].content[0].text"),
    (ANTHROPIC_MESSAGES, {"system": 5}, "system"),
    (ANTHROPIC_MESSAGES, {"service_tier": {}}, "service_tier"),
    (ANTHROPIC_MESSAGES, {"temperature": "hot"}, "temperature"),
    (OPENAI_EMBEDDINGS, {"input": True}, "input"),
    (OPENAI_EMBEDDINGS, {"encoding_format": "BASE64"}, "encoding_format"),
], ids=lambda v: orjson.dumps(v).decode()[:60] if isinstance(v, dict) else str(v))
def test_a_field_of_the_wrong_type_is_a_400_naming_it(api: str, fields: dict[str, Any], param: str) -> None:
    err = refused(api, **fields)
    assert err.param == param
    if api == ANTHROPIC_MESSAGES:
        assert err.message.startswith(f"{param}: ")
    else:
        assert f"'{param}'" in err.message


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("api", [OPENAI_CHAT, ANTHROPIC_MESSAGES, OPENAI_EMBEDDINGS])
def test_nesting_past_the_limit_anywhere_is_a_400_and_up_to_it_passes(api: str) -> None:
    # The body is level 1 and the extension field's array level 2: it may nest MAX_DEPTH - 1 deep.
    valid(api, extension=_nested(MAX_DEPTH - 1))
    assert refused(api, extension=_nested(MAX_DEPTH)).param == "extension"
    # 300 levels parse (orjson takes 1,024) but could not be encoded again (orjson writes 254).
    raw = b'{"model": "m", "messages": [], "x": ' + b"[" * 300 + b"]" * 300 + b"}"
    with pytest.raises(errors.BadRequest):
        request.client_request(api, request.parse_json(raw), raw)


@pytest.mark.parametrize(("api", "fields", "param"), [
    (OPENAI_CHAT, {"temperature": 2.5}, "temperature"),
    (OPENAI_CHAT, {"temperature": -0.1}, "temperature"),
    (OPENAI_CHAT, {"top_p": 1.5}, "top_p"),
    (OPENAI_CHAT, {"n": 0}, "n"),
    (OPENAI_CHAT, {"n": 129}, "n"),
    (OPENAI_CHAT, {"frequency_penalty": 3}, "frequency_penalty"),
    (OPENAI_CHAT, {"presence_penalty": -2.5}, "presence_penalty"),
    (OPENAI_CHAT, {"top_logprobs": 21}, "top_logprobs"),
    (OPENAI_CHAT, {"logit_bias": {"50256": -101}}, "logit_bias.50256"),
    (OPENAI_CHAT, {"seed": 2**63}, "seed"),
    (OPENAI_CHAT, {"max_completion_tokens": 2**63}, "max_completion_tokens"),
    (ANTHROPIC_MESSAGES, {"temperature": 1.5}, "temperature"),
    (ANTHROPIC_MESSAGES, {"top_p": -1}, "top_p"),
    (ANTHROPIC_MESSAGES, {"top_k": -1}, "top_k"),
    (ANTHROPIC_MESSAGES, {"max_tokens": 2**63}, "max_tokens"),
    (ANTHROPIC_MESSAGES, {"thinking": {"type": "enabled", "budget_tokens": 1000}}, "thinking.budget_tokens"),
    (ANTHROPIC_MESSAGES, {"max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 2000}},
     "thinking.budget_tokens"),
    (OPENAI_EMBEDDINGS, {"dimensions": 2**63}, "dimensions"),
    (OPENAI_EMBEDDINGS, {"dimensions": 0}, "dimensions"),
    (OPENAI_EMBEDDINGS, {"input": ["x"] * 2049}, "input"),
    (OPENAI_EMBEDDINGS, {"input": ""}, "input"),
    (OPENAI_EMBEDDINGS, {"input": [[1], []]}, "input[1]"),
], ids=lambda v: orjson.dumps(v).decode()[:60] if isinstance(v, dict) else str(v))
def test_a_number_outside_the_documented_range_is_a_400_naming_it(api: str, fields: dict[str, Any],
                                                                   param: str) -> None:
    assert refused(api, **fields).param == param


@pytest.mark.parametrize(("api", "fields"), [
    (OPENAI_CHAT, {"temperature": 0, "top_p": 1, "n": 128, "frequency_penalty": -2, "presence_penalty": 2,
                   "top_logprobs": 20, "logit_bias": {"1": 100}, "seed": -(2**63), "max_tokens": 2**63 - 1}),
    (ANTHROPIC_MESSAGES, {"temperature": 1, "top_p": 0, "top_k": 0, "max_tokens": 1025,
                          "thinking": {"type": "enabled", "budget_tokens": 1024}}),
    (OPENAI_EMBEDDINGS, {"dimensions": 1, "input": ["x"] * 2048}),
])
def test_the_ends_of_each_range_pass(api: str, fields: dict[str, Any]) -> None:
    valid(api, **fields)


@pytest.mark.parametrize("api", [OPENAI_CHAT, ANTHROPIC_MESSAGES, OPENAI_EMBEDDINGS])
def test_a_model_name_longer_than_the_bound_is_a_400_and_the_message_does_not_echo_it(api: str) -> None:
    valid(api, model="m" * MAX_MODEL_CHARS)
    err = refused(api, model="m" * 5_000_000)
    assert err.param == "model" and len(err.message) < 200


def test_extension_fields_and_newer_enum_values_and_tags_pass() -> None:
    valid(OPENAI_CHAT, reasoning_effort="ultra", service_tier="turbo", vendor_extension={"a": [1]},
          messages=[{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "x"}}]}])
    valid(ANTHROPIC_MESSAGES, tools=[{"type": "web_search_20990101", "name": "web_search"}],
          messages=[{"role": "user", "content": [{"type": "future_block", "payload": {}}]}], speed="warp")


def test_a_key_in_a_path_is_shortened() -> None:
    err = refused(OPENAI_CHAT, logit_bias={"k" * 10_000: "x"})
    assert err.param is not None and len(err.param) < 100


# -- affinity key --------------------------------------------------------------------------------

def _head_of_length(n: int) -> list[dict[str, Any]]:
    """One user message whose JSON head (`[message]`) is exactly `n` bytes."""
    overhead = len(orjson.dumps([{"role": "user", "content": ""}]))
    return [{"role": "user", "content": "x" * (n - overhead)}]


LONG = "You are a careful assistant. " * 40  # > 1024 bytes on its own


@pytest.mark.parametrize(("api", "fields", "keyed"), [
    (OPENAI_CHAT, {"messages": HELLO}, False),
    (OPENAI_CHAT, {"messages": _head_of_length(1023)}, False),
    (OPENAI_CHAT, {"messages": _head_of_length(1024)}, True),
    (ANTHROPIC_MESSAGES, {"system": LONG, "messages": HELLO}, True),
    (OPENAI_CHAT, {"messages": [{"role": "system", "content": LONG}, *HELLO]}, True),
    # Only the system prompt and the first two messages count.
    (OPENAI_CHAT, {"messages": [*HELLO, {"role": "assistant", "content": "Hi"}, {"role": "user", "content": LONG}]},
     False),
], ids=["short", "1023-bytes", "1024-bytes", "anthropic-system", "openai-system", "long-third-message"])
def test_affinity_key_only_for_a_long_prompt_head(api: str, fields: dict[str, Any], keyed: bool) -> None:
    key = valid(api, **fields).affinity_key
    assert (key is not None) == keyed
    if key is not None:
        assert isinstance(key, bytes) and len(key) == 16


def test_affinity_key_is_equal_for_equal_heads_and_different_otherwise() -> None:
    head = [{"role": "system", "content": LONG}, {"role": "user", "content": "Question one?"}]

    def key(messages: list[dict[str, Any]], **fields: Any) -> bytes | None:
        return valid(OPENAI_CHAT, messages=messages, **fields).affinity_key

    a = key(head)
    assert a is not None
    # Same head, other turns and other parameters after it: same key (same provider cache).
    assert key([*head, {"role": "assistant", "content": "A."}, {"role": "user", "content": "More?"}],
               temperature=0.3, model_extra="y") == a
    # Any change in the head: another key.
    assert key([head[0], {"role": "user", "content": "Question two?"}]) != a
    assert key([{"role": "system", "content": LONG + "!"}, head[1]]) != a
    # Anthropic's top-level system prompt keys the same way.
    assert (valid(ANTHROPIC_MESSAGES, system=LONG).affinity_key
            == valid(ANTHROPIC_MESSAGES, system=LONG, max_tokens=9).affinity_key)
    assert valid(OPENAI_EMBEDDINGS, input=LONG, messages=head).affinity_key is None


# -- stream, usage, encoding, estimate, model ----------------------------------------------------

@pytest.mark.parametrize(("api", "fields", "stream", "include_usage"), [
    (OPENAI_CHAT, {}, False, False),
    (OPENAI_CHAT, {"stream": True}, True, False),
    (OPENAI_CHAT, {"stream": True, "stream_options": {"include_usage": True}}, True, True),
    (OPENAI_CHAT, {"stream": True, "stream_options": {"include_usage": False}}, True, False),
    (OPENAI_CHAT, {"stream": False, "stream_options": {"include_usage": True}}, False, False),
    (OPENAI_CHAT, {"stream_options": {"include_usage": True}}, False, False),
    (ANTHROPIC_MESSAGES, {"stream": True}, True, False),
    # Embeddings do not stream: the fields are extensions there, not read.
    (OPENAI_EMBEDDINGS, {"stream": True, "stream_options": {"include_usage": True}}, False, False),
], ids=lambda v: orjson.dumps(v).decode() if isinstance(v, dict) else str(v))
def test_stream_and_include_usage(api: str, fields: dict[str, Any], stream: bool, include_usage: bool) -> None:
    req = valid(api, **fields)
    assert (req.stream, req.include_usage) == (stream, include_usage)


@pytest.mark.parametrize(("api", "fields", "expected"), [
    (OPENAI_EMBEDDINGS, {"encoding_format": "base64"}, "base64"),
    (OPENAI_EMBEDDINGS, {"encoding_format": "float"}, "float"),
    (OPENAI_EMBEDDINGS, {}, "float"),
    (OPENAI_CHAT, {"encoding_format": "base64"}, "float"),
    (ANTHROPIC_MESSAGES, {"encoding_format": "base64"}, "float"),
])
def test_encoding_format_only_for_embeddings(api: str, fields: dict[str, Any], expected: str) -> None:
    assert valid(api, **fields).encoding_format == expected


@pytest.mark.parametrize(("nbytes", "tokens"), [(1, 1), (3, 1), (4, 1), (7, 1), (8, 2), (400, 100), (403, 100),
                                                (404, 101)])
def test_prompt_estimate_is_a_quarter_of_the_bytes_and_at_least_one(nbytes: int, tokens: int) -> None:
    raw = b" " * nbytes  # the estimate reads the length of the bytes only
    req = request.client_request(OPENAI_CHAT, dict(BASE[OPENAI_CHAT]), raw)
    assert (req.nbytes, req.est_input_tokens) == (nbytes, tokens)


def test_the_request_keeps_the_body_and_its_bytes() -> None:
    raw = orjson.dumps({"model": "gpt", "messages": HELLO, "temperature": 0.2})
    req = client(raw=raw)
    assert (req.api, req.model, req.raw, req.body) == (OPENAI_CHAT, "gpt", raw, orjson.loads(raw))


@pytest.mark.parametrize("api", [OPENAI_CHAT, ANTHROPIC_MESSAGES, OPENAI_EMBEDDINGS])
@pytest.mark.parametrize("model", [None, "", 42, ["gpt"]], ids=["null", "empty", "number", "list"])
def test_a_missing_or_malformed_model_is_a_400_naming_it(api: str, model: Any) -> None:
    assert refused(api, model=model).param == "model"
    body = {k: v for k, v in BASE[api].items() if k != "model"}
    with pytest.raises(errors.BadRequest) as info:
        client(api, **body)
    assert info.value.param == "model"
    assert info.value.message == ("model: Field required" if api == ANTHROPIC_MESSAGES
                                  else "Missing required parameter: 'model'.")


@pytest.mark.parametrize(("raw", "message"), [
    (b"{not json", "The request body is not valid JSON: "),
    (b"", "The request body is not valid JSON: "),
    (b'["model"]', "The request body must be a JSON object."),
    (b'"hello"', "The request body must be a JSON object."),
    (b"null", "The request body must be a JSON object."),
])
def test_a_body_that_is_not_a_json_object_is_a_400(raw: bytes, message: str) -> None:
    with pytest.raises(errors.BadRequest) as info:
        request.parse_json(raw)
    assert info.value.status == 400 and info.value.message.startswith(message)


# -- request headers: authentication, admission class, client API --------------------------------

def _headers(path: str = "/v1/chat/completions", method: str = "POST", **extra: str) -> dict[str, str]:
    return {":path": path, ":method": method, "x-request-id": "rid-1", **{k.replace("_", "-"): v
                                                                          for k, v in extra.items()}}


@pytest.mark.parametrize(("headers", "tenant"), [
    ({"authorization": "Bearer sk-main"}, "main"),
    ({"authorization": "bearer sk-main "}, "main"),
    ({"authorization": "BEARER sk-slow"}, "slow"),
    ({"x-api-key": "sk-main"}, "main"),
    ({"x-api-key": " sk-slow "}, "slow"),
    ({"authorization": "Bearer sk-main", "x-api-key": "sk-slow"}, "main"),
    ({"authorization": "Basic c2stbWFpbg==", "x-api-key": "sk-slow"}, "slow"),
], ids=["bearer", "bearer-lowercase", "bearer-uppercase", "x-api-key", "x-api-key-padded", "bearer-first",
        "non-bearer-authorization"])
def test_authenticate(headers: dict[str, str], tenant: str) -> None:
    assert request.authenticate(headers, TENANTS).name == tenant


@pytest.mark.parametrize(("headers", "message"), [
    ({}, "Missing API key: send `Authorization: Bearer <key>` or `x-api-key`."),
    ({"authorization": "Bearer   "}, "Missing API key: send `Authorization: Bearer <key>` or `x-api-key`."),
    ({"x-api-key": ""}, "Missing API key: send `Authorization: Bearer <key>` or `x-api-key`."),
    ({"authorization": "Basic c2stbWFpbg=="}, "Missing API key: send `Authorization: Bearer <key>` or `x-api-key`."),
    ({"authorization": "Bearer sk-unknown"}, "Invalid API key."),
    ({"x-api-key": "sk-MAIN"}, "Invalid API key."),
], ids=["none", "empty-bearer", "empty-x-api-key", "basic", "unknown", "wrong-case"])
def test_authentication_failures_are_401(headers: dict[str, str], message: str) -> None:
    with pytest.raises(errors.Unauthorized) as info:
        request.read_head(_headers(**headers), TENANTS)
    err = info.value
    assert (err.status, err.type, err.code, err.message) == (401, "authentication_error", "invalid_api_key", message)


@pytest.mark.parametrize(("key", "extra", "priority", "deadline_ms"), [
    ("sk-main", {}, "default", 0),
    ("sk-slow", {}, "batch", 2500),
    # Above its entitlement (its own class, batch): lowered, not refused.
    ("sk-slow", {"x_interlock_priority": "interactive"}, "batch", 2500),
    ("sk-main", {"x_interlock_priority": " BATCH "}, "batch", 0),
    ("sk-main", {"x_interlock_deadline_ms": "30000"}, "default", 30000),
    ("sk-slow", {"x_interlock_deadline_ms": "1"}, "batch", 1),
    ("sk-main", {"x_interlock_deadline_ms": " 250 "}, "default", 250),
    ("sk-main", {"x_interlock_deadline_ms": "86400000"}, "default", 86_400_000),
])
def test_priority_and_deadline_headers_and_the_tenants_defaults(key: str, extra: dict[str, str], priority: str,
                                                                 deadline_ms: int) -> None:
    head = request.read_head(_headers(authorization=f"Bearer {key}", **extra), TENANTS)
    assert (head.priority, head.deadline_ms) == (priority, deadline_ms)


@pytest.mark.parametrize(("tenant", "claimed", "used", "lowered_from"), [
    (Tenant("t", ()), None, "default", ""),
    (Tenant("t", ()), "interactive", "default", "interactive"),
    (Tenant("t", ()), "default", "default", ""),
    (Tenant("t", ()), "batch", "batch", ""),  # a lower class needs no entitlement
    (Tenant("t", (), priority="batch"), "default", "batch", "default"),
    (Tenant("t", (), priority="interactive"), "interactive", "interactive", ""),
    (Tenant("t", (), priorities=("batch", "default", "interactive")), "interactive", "interactive", ""),
    (Tenant("t", (), priority="batch", priorities=("batch", "default")), "interactive", "default", "interactive"),
    (Tenant("t", (), priority="batch", priorities=("batch", "default")), None, "batch", ""),
])
def test_a_priority_above_the_tenants_entitlement_is_lowered_and_named(
        tenant: Tenant, claimed: str | None, used: str, lowered_from: str) -> None:
    tenants = {sha("sk-t"): tenant}
    extra = {} if claimed is None else {"x_interlock_priority": claimed}
    head = request.read_head(_headers(authorization="Bearer sk-t", **extra), tenants)
    assert (head.priority, head.lowered_from) == (used, lowered_from)
    named = [("x-interlock-priority", used)] + ([("x-interlock-priority-lowered-from", claimed)] if lowered_from else [])
    assert request.priority_headers(head) == named
    assert request.priority_headers(None) == []


@pytest.mark.parametrize(("extra", "message"), [
    ({"x_interlock_priority": "urgent"},
     "Invalid x-interlock-priority 'urgent': expected one of interactive, default, batch."),
    ({"x_interlock_priority": ""}, "Invalid x-interlock-priority '': expected one of interactive, default, batch."),
    ({"x_interlock_deadline_ms": "soon"}, "Invalid x-interlock-deadline-ms 'soon': expected a whole number of "
                                          "milliseconds between 1 and 86400000."),
    ({"x_interlock_deadline_ms": "0"}, "Invalid x-interlock-deadline-ms '0': expected a whole number of "
                                       "milliseconds between 1 and 86400000."),
    ({"x_interlock_deadline_ms": "-5"}, "Invalid x-interlock-deadline-ms '-5': expected a whole number of "
                                        "milliseconds between 1 and 86400000."),
    ({"x_interlock_deadline_ms": "1.5"}, "Invalid x-interlock-deadline-ms '1.5': expected a whole number of "
                                         "milliseconds between 1 and 86400000."),
    ({"x_interlock_deadline_ms": "86400001"}, "Invalid x-interlock-deadline-ms '86400001': expected a whole "
                                              "number of milliseconds between 1 and 86400000."),
])
def test_bad_admission_headers_are_400(extra: dict[str, str], message: str) -> None:
    with pytest.raises(errors.BadRequest) as info:
        request.read_head(_headers(authorization="Bearer sk-main", **extra), TENANTS)
    assert (info.value.status, info.value.message) == (400, message)


@pytest.mark.parametrize("value", ["\u00b2", "1\u00b2"])
def test_a_deadline_in_superscript_digits_is_a_400(value: str) -> None:
    with pytest.raises(errors.BadRequest) as info:
        request.read_head(_headers(authorization="Bearer sk-main", x_interlock_deadline_ms=value), TENANTS)
    assert info.value.status == 400


def test_the_head_keeps_the_request_id_normalized_path_and_method() -> None:
    h = _headers("/v1/chat/completions/?api-version=1", authorization="Bearer sk-main")
    head = request.read_head(h, TENANTS)
    assert (head.request_id, head.path, head.method, head.tenant, head.headers) == (
        "rid-1", "/v1/chat/completions", "POST", MAIN, h)
    bare = request.read_head({"x-api-key": "sk-main"}, TENANTS)
    assert (bare.request_id, bare.path, bare.method, bare.deadline_ms) == ("", "/", "GET", 0)


@pytest.mark.parametrize(("path", "api"), [("/v1/chat/completions", errors.OPENAI), ("/v1/messages", errors.ANTHROPIC),
                                           ("/v1/messages/count_tokens", errors.ANTHROPIC),
                                           ("/v1/embeddings", errors.OPENAI), ("/nope", errors.OPENAI)])
def test_errors_are_rendered_in_the_api_of_the_path(path: str, api: str) -> None:
    assert request.error_api(path) == api


@pytest.mark.parametrize(("path", "api"), [("/v1/chat/completions", OPENAI_CHAT), ("/v1/messages", ANTHROPIC_MESSAGES),
                                           ("/v1/embeddings", OPENAI_EMBEDDINGS),
                                           ("/v1/chat/completions/?x=1", OPENAI_CHAT)])
def test_client_api_by_path(path: str, api: str) -> None:
    head = request.read_head(_headers(path, content_length=str(MAX_BYTES), x_api_key="sk-main"), TENANTS)
    assert request.client_api(head, True, MAX_BYTES) == api


@pytest.mark.parametrize(("path", "method", "has_body", "length", "status", "message"), [
    ("/v1/images/generations", "POST", True, "10", 404, "Unknown path /v1/images/generations."),
    ("/v1/messages/batches", "POST", True, "10", 404, "Unknown path /v1/messages/batches."),
    ("/v1/chat/completions", "GET", False, "", 405, "Method GET is not allowed on /v1/chat/completions."),
    ("/v1/embeddings", "PUT", True, "10", 405, "Method PUT is not allowed on /v1/embeddings."),
    ("/v1/messages", "POST", False, "", 400, "The request needs a JSON body."),
    ("/v1/chat/completions", "POST", True, str(MAX_BYTES + 1), 413,
     f"Request body too large: {MAX_BYTES + 1} bytes, the limit is {MAX_BYTES}."),
], ids=["unknown-path", "unknown-subpath", "get", "put", "no-body", "too-large"])
def test_client_api_errors(path: str, method: str, has_body: bool, length: str, status: int, message: str) -> None:
    head = request.read_head(_headers(path, method, x_api_key="sk-main", content_length=length), TENANTS)
    with pytest.raises(errors.GatewayError) as info:
        request.client_api(head, has_body, MAX_BYTES)
    assert (info.value.status, info.value.message) == (status, message)
    if status == 404:
        assert info.value.code == "unknown_url"
    if status == 413:
        assert info.value.code == "request_too_large"


@pytest.mark.parametrize("length", ["", "chunked", "-1"])
def test_an_undeclared_length_is_left_to_envoys_buffer_limit(length: str) -> None:
    head = request.read_head(_headers(x_api_key="sk-main", content_length=length), TENANTS)
    assert request.client_api(head, True, MAX_BYTES) == OPENAI_CHAT
