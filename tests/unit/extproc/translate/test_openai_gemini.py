"""Request rules of the openai→gemini translator, as tables: what is mapped, dropped (and listed)
and refused with a 400 naming the parameter; paths; messages, images and tool results; tool call
ids with thought signatures round-tripping through a response."""

from __future__ import annotations

import copy
import json
import typing
from typing import Any

import orjson
import pytest
from google.genai import types
from openai.types.chat import completion_create_params

from extproc.errors import GatewayError
from extproc.translate.base import ResponseContext, Target
from extproc.translate.openai_gemini import _FIELDS, OpenAIToGemini

CAPS = frozenset({"tools", "images", "json", "reasoning"})
TARGET = Target("gem", "gemini-2.5-flash", "gemini", 65536, CAPS, (("api_version", "v1beta"),))
VERTEX = Target("gem", "gemini-2.5-flash", "vertex-gemini", 65536, CAPS,
                (("project", "p1"), ("location", "us-central1")))
USER = [{"role": "user", "content": "Hi"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
TOOL_G = {"type": "function", "function": {"name": "g"}}
CTX = ResponseContext("req-1", 1767225600)


def translate(target: Target = TARGET, **fields: Any) -> tuple[dict[str, Any], tuple[str, ...]]:
    body = {"model": "gem", "messages": USER, **fields}
    frozen = copy.deepcopy(body)
    up = OpenAIToGemini().translate_request(body, target)
    assert body == frozen
    out = orjson.loads(up.body)
    for content in out["contents"]:
        types.Content.model_validate_json(json.dumps(content))
    for key, model in (("generationConfig", types.GenerationConfig), ("toolConfig", types.ToolConfig)):
        if key in out:
            assert model.model_validate_json(json.dumps(out[key])).model_dump(
                mode="json", by_alias=True, exclude_none=True) == out[key]
    return out, up.dropped_params


def refused(target: Target = TARGET, **fields: Any) -> GatewayError:
    body = {"model": "gem", "messages": USER, **fields}
    with pytest.raises(GatewayError) as info:
        OpenAIToGemini().translate_request(body, target)
    assert info.value.status == 400 and info.value.type == "invalid_request_error"
    return info.value


def test_every_openai_field_is_decided() -> None:
    openai_fields = set(typing.get_type_hints(completion_create_params.CompletionCreateParamsStreaming))
    assert openai_fields | {"top_k"} == set(_FIELDS)


MAPPED = [
    ("max_completion_tokens wins", {"max_completion_tokens": 10, "max_tokens": 20},
     {"generationConfig": {"maxOutputTokens": 10}}),
    ("max_tokens", {"max_tokens": 20}, {"generationConfig": {"maxOutputTokens": 20}}),
    ("no max tokens: model default", {}, {}),
    ("sampling", {"temperature": 0, "top_p": 1, "top_k": 3, "seed": 1},
     {"generationConfig": {"temperature": 0, "topP": 1, "topK": 3, "seed": 1}}),
    ("penalties", {"presence_penalty": -1.5, "frequency_penalty": 2},
     {"generationConfig": {"presencePenalty": -1.5, "frequencyPenalty": 2}}),
    ("stop string", {"stop": "END"}, {"generationConfig": {"stopSequences": ["END"]}}),
    ("stop list", {"stop": ["a", "b"]}, {"generationConfig": {"stopSequences": ["a", "b"]}}),
    ("empty stop list", {"stop": []}, {}),
    ("n 1", {"n": 1}, {}),
    ("n 3", {"n": 3}, {"generationConfig": {"candidateCount": 3}}),
    ("json_object", {"response_format": {"type": "json_object"}},
     {"generationConfig": {"responseMimeType": "application/json"}}),
    ("text format", {"response_format": {"type": "text"}}, {}),
    ("reasoning effort", {"reasoning_effort": "minimal"},
     {"generationConfig": {"thinkingConfig": {"thinkingLevel": "MINIMAL"}}}),
    ("modalities text", {"modalities": ["text"]}, {}),
    ("tool_choice auto", {"tools": [TOOL], "tool_choice": "auto"},
     {"toolConfig": {"functionCallingConfig": {"mode": "AUTO"}}}),
    ("tool_choice none", {"tools": [TOOL], "tool_choice": "none"},
     {"toolConfig": {"functionCallingConfig": {"mode": "NONE"}}}),
    ("tool_choice required", {"tools": [TOOL], "tool_choice": "required"},
     {"toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}),
    ("tool_choice function", {"tools": [TOOL, TOOL_G], "tool_choice": {"type": "function", "function": {"name": "g"}}},
     {"toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["g"]}}}),
    ("allowed_tools auto narrows the declarations",
     {"tools": [TOOL, TOOL_G], "tool_choice": {"type": "allowed_tools", "allowed_tools": {
         "mode": "auto", "tools": [{"type": "function", "function": {"name": "g"}}]}}},
     {"tools": [{"functionDeclarations": [{"name": "g"}]}], "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}}}),
    ("allowed_tools required", {"tools": [TOOL, TOOL_G], "tool_choice": {"type": "allowed_tools", "allowed_tools": {
        "mode": "required", "tools": [{"type": "function", "function": {"name": "f"}}]}}},
     {"toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}}}),
    ("tool_choice none without tools", {"tool_choice": "none"}, {}),
    ("empty parameters", {"tools": [{"type": "function", "function": {"name": "h", "parameters": {}}}]},
     {"tools": [{"functionDeclarations": [{"name": "h"}]}]}),
]


@pytest.mark.parametrize(("fields", "expected"), [m[1:] for m in MAPPED], ids=[m[0] for m in MAPPED])
def test_mapped(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    out, _ = translate(**fields)
    for key, value in expected.items():
        assert out[key] == value
    assert set(out) - {"contents", "tools"} == set(expected) - {"tools"}


DROPPED = [
    ({"logit_bias": {"1": 2}}, "logit_bias"),
    ({"user": "u"}, "user"),
    ({"safety_identifier": "s"}, "safety_identifier"),
    ({"metadata": {"a": "b"}}, "metadata"),
    ({"store": True}, "store"),
    ({"service_tier": "flex"}, "service_tier"),
    ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
    ({"verbosity": "low"}, "verbosity"),
    ({"prompt_cache_key": "k"}, "prompt_cache_key"),
    ({"reasoning_effort": "none"}, "reasoning_effort"),
    ({"tools": [TOOL], "parallel_tool_calls": False}, "parallel_tool_calls"),
    ({"tools": [{"type": "function", "function": {"name": "f", "strict": True}}]}, "tools[].function.strict"),
    ({"messages": [{"role": "user", "content": "x", "name": "ada"}]}, "messages[].name"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}]}]},
     "cache_control"),
    ({"messages": [{"role": "user", "content": [{"type": "file", "file": {
        "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}}]}]}, "file.filename"),
]


@pytest.mark.parametrize(("fields", "name"), DROPPED, ids=[d[1] for d in DROPPED])
def test_dropped_and_listed(fields: dict[str, Any], name: str) -> None:
    assert name in translate(**fields)[1]


def test_nothing_listed_for_harmless_values() -> None:
    assert translate(store=False, metadata={}, parallel_tool_calls=True, tools=[TOOL])[1] == ()


def test_reasoning_effort_without_capability_is_dropped() -> None:
    target = Target("gem", "gemini-2.5-flash", "gemini", 100, frozenset())
    out, dropped = translate(target, reasoning_effort="high")
    assert "generationConfig" not in out and dropped == ("reasoning_effort",)


REFUSED = [
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"audio": {"voice": "alloy", "format": "mp3"}}, "audio"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"web_search_options": {}}, "web_search_options"),
    ({"moderation": True}, "moderation"),
    ({"temprature": 1}, "temprature"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"temperature": "hot"}, "temperature"),
    ({"seed": 1.5}, "seed"),
    ({"n": 0}, "n"),
    ({"stop": [1]}, "stop"),
    ({"response_format": {"type": "xml"}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format.json_schema.schema"),
    ({"tools": [{"type": "custom", "custom": {"name": "c"}}]}, "tools[0]"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]}, "tools[0].function.parameters"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice.function.name"),
    ({"tools": [TOOL], "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}},
     "tool_choice.allowed_tools"),
    ({"tools": [TOOL], "parallel_tool_calls": "no"}, "parallel_tool_calls"),
    ({"messages": [{"role": "system", "content": "only a system prompt"}]}, "messages"),
    ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "tool", "tool_call_id": "call_9", "content": "x"}]}, "messages[0].tool_call_id"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                                          "function": {"name": "f", "arguments": "[1]"}}]}]},
     "messages[0].tool_calls[0].function.arguments"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]},
     "messages[0].content[0].file"),
    ({"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}]},
     "messages[0].content[0]"),
]


@pytest.mark.parametrize(("fields", "param"), REFUSED, ids=[r[1] for r in REFUSED])
def test_refused(fields: dict[str, Any], param: str) -> None:
    assert refused(**fields).param == param


def test_capabilities_are_required() -> None:
    bare = Target("gem", "gemini-2.5-flash", "gemini", 100, frozenset())
    assert refused(bare, tools=[TOOL]).param == "tools"
    assert refused(bare, response_format={"type": "json_object"}).param == "response_format"


IMAGES = [
    ("jpeg url with query", "https://cdn.example.com/a/photo.JPG?x=1", TARGET,
     {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://cdn.example.com/a/photo.JPG?x=1"}}),
    ("files api uri", "https://generativelanguage.googleapis.com/v1beta/files/abc-123", TARGET,
     {"fileData": {"fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc-123"}}),
    ("gcs on vertex", "gs://b/x.webp", VERTEX, {"fileData": {"mimeType": "image/webp", "fileUri": "gs://b/x.webp"}}),
    ("data url", "data:image/JPEG;base64,/9j/4AAQ", TARGET, {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}}),
]


@pytest.mark.parametrize(("url", "target", "part"), [i[1:] for i in IMAGES], ids=[i[0] for i in IMAGES])
def test_image_parts(url: str, target: Target, part: dict[str, Any]) -> None:
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]
    assert translate(target, messages=messages)[0]["contents"][0]["parts"] == [part]


@pytest.mark.parametrize("url", ["gs://b/x.png", "data:text/plain;base64,aGk=", "ftp://x/a.png", "https://x/noext"])
def test_unusable_image_urls(url: str) -> None:
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]
    assert refused(messages=messages).param == "messages[0].content[0].image_url.url"


def test_pdf_file_becomes_inline_data() -> None:
    messages = [{"role": "user", "content": [{"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE"}}]}]
    assert translate(messages=messages)[0]["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}}]


@pytest.mark.parametrize(("content", "response"), [
    ('{"ok": true}', {"ok": True}),
    ("[1, 2]", {"result": "[1, 2]"}),
    ("42", {"result": "42"}),
    ("{not json", {"result": "{not json"}),
    ("", {"result": ""}),
    ([{"type": "text", "text": '{"a"'}, {"type": "text", "text": ": 1}"}], {"a": 1}),
])
def test_tool_results_are_objects(content: Any, response: dict[str, Any]) -> None:
    messages = [{"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                       "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": content}]
    out, _ = translate(messages=messages)
    assert out["contents"][1] == {"role": "user", "parts": [
        {"functionResponse": {"id": "c1", "name": "f", "response": response}}]}


def test_call_ids_and_signatures_round_trip() -> None:
    """The id a response gives the client comes back as the same functionCall and signature."""
    upstream = {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "f", "args": {"x": 1}}, "thoughtSignature": "c2lnbmF0dXJl"},
        {"functionCall": {"id": "gem-id-2", "name": "g", "args": {}}}]}, "finishReason": "STOP"}],
        "responseId": "rid"}
    body, _ = OpenAIToGemini().translate_response(orjson.dumps(upstream), TARGET, CTX)
    message = orjson.loads(body)["choices"][0]["message"]
    assert [c["id"] for c in message["tool_calls"]] == ["call_rid_0__thought__c2lnbmF0dXJl", "gem-id-2"]
    results = [{"role": "tool", "tool_call_id": c["id"], "content": "done"} for c in message["tool_calls"]]
    out, _ = translate(messages=[*USER, message, *results])
    assert out["contents"][1]["parts"] == [
        {"functionCall": {"id": "call_rid_0", "name": "f", "args": {"x": 1}}, "thoughtSignature": "c2lnbmF0dXJl"},
        {"functionCall": {"id": "gem-id-2", "name": "g", "args": {}}}]
    assert [p["functionResponse"]["id"] for p in out["contents"][2]["parts"]] == ["call_rid_0", "gem-id-2"]


PATHS = [
    (TARGET, False, "/v1beta/models/gemini-2.5-flash:generateContent"),
    (Target("g", "gemini-2.5-flash", "gemini", 1), True, "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"),
    (Target("g", "tunedModels/my-tune", "gemini", 1, options=(("api_version", "v1"),)), False,
     "/v1/tunedModels/my-tune:generateContent"),
    (VERTEX, True, "/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-2.5-flash:"
                   "streamGenerateContent?alt=sse"),
    (Target("g", "endpoints/123", "vertex-gemini", 1, options=(("project", "p"), ("location", "global"),
                                                               ("api_version", "v1beta1"))), False,
     "/v1beta1/projects/p/locations/global/endpoints/123:generateContent"),
]


@pytest.mark.parametrize(("target", "stream", "path"), PATHS, ids=[p[2] for p in PATHS])
def test_paths(target: Target, stream: bool, path: str) -> None:
    up = OpenAIToGemini().translate_request({"model": "g", "messages": USER, "stream": stream}, target)
    assert (up.path, up.stream) == (path, stream)


def test_vertex_without_project_is_a_gateway_error() -> None:
    with pytest.raises(GatewayError) as info:
        OpenAIToGemini().translate_request({"model": "g", "messages": USER},
                                           Target("g", "m", "vertex-gemini", 1, options=(("location", "x"),)))
    assert info.value.status == 500
