"""Rules of the openai→bedrock translator, as tables: what is mapped, what is dropped (and
listed), what is refused with a 400 naming the parameter, how Bedrock errors reach the client,
and how broken or unusual streams end. Every translated body passes botocore's ParamValidator."""

from __future__ import annotations

import base64
import copy
import typing
from typing import Any

import botocore.session
import orjson
import pytest
from botocore.validate import ParamValidator
from openai.types.chat import completion_create_params

from extproc.errors import GatewayError, render
from extproc.translate.base import ResponseContext, Target
from extproc.translate.openai_bedrock import _FIELDS, OpenAIToBedrock, path_for
from simulator.eventstream_encode import encode_message, event_message, exception_message
from tests.golden.support import boto3_params

TARGET = Target("claude", "anthropic.claude-3-haiku-20240307-v1:0", "bedrock", 4096,
                frozenset({"tools", "images", "json", "reasoning"}))
PLAIN = Target("claude", "anthropic.claude-3-haiku-20240307-v1:0", "bedrock", 4096, frozenset())
USER = [{"role": "user", "content": "Hi"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
CALL = {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                                            "function": {"name": "f", "arguments": "{}"}}]}
RESULT = {"role": "tool", "tool_call_id": "call_1", "content": "done"}
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG fake").decode()
PDF = "data:application/pdf;base64," + base64.b64encode(b"%PDF-1.4 fake").decode()
CONVERSE = botocore.session.get_session().get_service_model("bedrock-runtime").operation_model("Converse")
CTX = ResponseContext("req-1", 1767225600, include_usage=True)


def translate(target: Target = TARGET, **fields: Any) -> tuple[dict[str, Any], tuple[str, ...]]:
    body = {"model": "claude", "messages": USER, **fields}
    frozen = copy.deepcopy(body)
    up = OpenAIToBedrock().translate_request(body, target)
    assert body == frozen
    out = orjson.loads(up.body)
    report = ParamValidator().validate(boto3_params(out, target.upstream_model), CONVERSE.input_shape)
    assert not report.has_errors(), report.generate_report()
    return out, up.dropped_params


def refused(target: Target = TARGET, **fields: Any) -> GatewayError:
    body = {"model": "claude", "messages": USER, **fields}
    with pytest.raises(GatewayError) as info:
        OpenAIToBedrock().translate_request(body, target)
    assert info.value.status == 400 and info.value.type == "invalid_request_error"
    return info.value


def test_every_openai_field_is_decided() -> None:
    openai_fields = set(typing.get_type_hints(completion_create_params.CompletionCreateParamsStreaming))
    assert openai_fields | {"top_k"} == set(_FIELDS)


@pytest.mark.parametrize(("model", "path"), [
    ("anthropic.claude-3-haiku-20240307-v1:0", "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"),
    ("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.x-v1:0",
     "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.x-v1%3A0/converse"),
    ("a b~c", "/model/a%20b~c/converse"),
])
def test_path_is_fully_percent_encoded(model: str, path: str) -> None:
    assert path_for(model, stream=False) == path
    assert path_for(model, stream=True) == path.removesuffix("/converse") + "/converse-stream"


MAPPED = [
    ("default max tokens", {}, {"inferenceConfig": {"maxTokens": 4096}}),
    ("max_completion_tokens wins", {"max_completion_tokens": 10, "max_tokens": 20},
     {"inferenceConfig": {"maxTokens": 10}}),
    ("sampling", {"temperature": 0.7, "top_p": 0.5, "stop": "END"},
     {"inferenceConfig": {"maxTokens": 4096, "temperature": 0.7, "topP": 0.5, "stopSequences": ["END"]}}),
    ("temperature 1 kept", {"temperature": 1}, {"inferenceConfig": {"maxTokens": 4096, "temperature": 1}}),
    ("empty stop list", {"stop": []}, {"inferenceConfig": {"maxTokens": 4096}}),
    ("tool choice auto", {"tools": [TOOL], "tool_choice": "auto"},
     {"toolConfig": {"tools": [{"toolSpec": {"name": "f", "inputSchema": {"json": {"type": "object", "properties": {}}}}}],
                     "toolChoice": {"auto": {}}}}),
    ("tool choice required", {"tools": [TOOL], "tool_choice": "required"},
     {"toolConfig": {"tools": [{"toolSpec": {"name": "f", "inputSchema": {"json": {"type": "object", "properties": {}}}}}],
                     "toolChoice": {"any": {}}}}),
    ("tool choice named, strict, no parameters",
     {"tools": [{"type": "function", "function": {"name": "g", "description": "G.", "strict": True}}],
      "tool_choice": {"type": "function", "function": {"name": "g"}}},
     {"toolConfig": {"tools": [{"toolSpec": {"name": "g", "description": "G.", "strict": True,
                                             "inputSchema": {"json": {"type": "object", "properties": {}}}}}],
                     "toolChoice": {"tool": {"name": "g"}}}}),
    ("tool choice none sends no tools", {"tools": [TOOL], "tool_choice": "none"}, {}),
    ("json schema", {"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "description": "An x.", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}}},
     {"outputConfig": {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": {
         "schema": '{"type":"object","properties":{"a":{"type":"string"}}}', "name": "x", "description": "An x."}}}}}),
    ("text format", {"response_format": {"type": "text"}}, {}),
    ("effort", {"reasoning_effort": "high"}, {"outputConfig": {"effort": "high"}}),
    ("service tier", {"service_tier": "flex"}, {"serviceTier": {"type": "flex"}}),
    ("service tier fast is priority", {"service_tier": "fast"}, {"serviceTier": {"type": "priority"}}),
    ("service tier auto is the default", {"service_tier": "auto"}, {}),
    ("safety identifier", {"safety_identifier": "u-1@example.com"},
     {"requestMetadata": {"safety_identifier": "u-1@example.com"}}),
    ("n 1 and text modality", {"n": 1, "modalities": ["text"], "logprobs": False, "store": False}, {}),
    ("stream options", {"stream": True, "stream_options": {"include_usage": True}}, {}),
]


@pytest.mark.parametrize(("name", "fields", "expected"), MAPPED, ids=[m[0] for m in MAPPED])
def test_mapped(name: str, fields: dict[str, Any], expected: dict[str, Any]) -> None:
    out, dropped = translate(**fields)
    assert dropped == ()
    for key, value in expected.items():
        assert out[key] == value
    keys = {"messages", "inferenceConfig", *expected}
    assert set(out) == keys


DROPPED = [
    ("temperature above 1", {"temperature": 1.5}, ("temperature",)),
    ("sampling hints", {"top_k": 5, "seed": 1, "frequency_penalty": 0.1, "presence_penalty": 0.1,
                        "logit_bias": {"1": 2}},
     ("frequency_penalty", "logit_bias", "presence_penalty", "seed", "top_k")),
    ("parallel tool calls false", {"tools": [TOOL], "parallel_tool_calls": False}, ("parallel_tool_calls",)),
    ("hints", {"prediction": {"type": "content", "content": "x"}, "verbosity": "low", "store": True,
               "metadata": {"a": "b"}, "prompt_cache_key": "k", "prompt_cache_retention": "24h"},
     ("metadata", "prediction", "prompt_cache_key", "prompt_cache_retention", "store", "verbosity")),
    ("effort without capability", {"reasoning_effort": "low", "_target": PLAIN}, ("reasoning_effort",)),
    ("effort minimal", {"reasoning_effort": "minimal"}, ("reasoning_effort",)),
    ("service tier scale", {"service_tier": "scale"}, ("service_tier",)),
    ("user loses to safety identifier", {"user": "a", "safety_identifier": "b"}, ("user",)),
    ("user Bedrock cannot carry", {"user": "naïve|user"}, ("user",)),
    ("message name", {"messages": [{"role": "user", "content": "Hi", "name": "bob"}]}, ("messages[].name",)),
    ("image detail", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}}]}]}, ("image_url.detail",)),
]


@pytest.mark.parametrize(("name", "fields", "expected"), DROPPED, ids=[d[0] for d in DROPPED])
def test_dropped_and_listed(name: str, fields: dict[str, Any], expected: tuple[str, ...]) -> None:
    target = fields.pop("_target", TARGET)
    out, dropped = translate(target, **fields)
    assert dropped == expected
    assert "additionalModelRequestFields" not in out


REFUSED = [
    ("n", {"n": 2}, "n"),
    ("logprobs", {"logprobs": True}, "logprobs"),
    ("top_logprobs", {"top_logprobs": 2}, "top_logprobs"),
    ("audio", {"audio": {"voice": "alloy", "format": "mp3"}}, "audio"),
    ("modalities", {"modalities": ["text", "audio"]}, "modalities"),
    ("functions", {"functions": [{"name": "f"}]}, "functions"),
    ("web search", {"web_search_options": {}}, "web_search_options"),
    ("unknown field", {"frobnicate": 1}, "frobnicate"),
    ("json object", {"response_format": {"type": "json_object"}}, "response_format"),
    ("json schema without schema", {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
     "response_format.json_schema.schema"),
    ("custom tool", {"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0]"),
    ("allowed tools", {"tools": [TOOL], "tool_choice": {"type": "allowed_tools", "allowed_tools": {}}},
     "tool_choice"),
    ("tool choice without tools", {"tool_choice": "required"}, "tool_choice"),
    ("max tokens zero", {"max_tokens": 0}, "max_tokens"),
    ("temperature out of range", {"temperature": 2.5}, "temperature"),
    ("top_p out of range", {"top_p": 1.5}, "top_p"),
    ("empty stop", {"stop": ["ok", ""]}, "stop"),
    ("image url", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]},
     "messages[0].content[0].image_url.url"),
    ("svg image", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/svg+xml;base64,PHN2Zz4="}}]}]},
     "messages[0].content[0].image_url.url"),
    ("file id", {"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]},
     "messages[0].content[0].file"),
    ("audio part", {"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]}, "messages[0].content[0]"),
    ("tool history without tools", {"messages": [*USER, CALL, RESULT]}, "tools"),
    ("tool history with tool choice none", {"messages": [*USER, CALL, RESULT], "tools": [TOOL],
                                            "tool_choice": "none"}, "tools"),
    ("bad tool arguments", {"messages": [*USER, {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}], "tools": [TOOL]},
     "messages[1].tool_calls[0].function.arguments"),
    ("function role", {"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role"),
    ("bad cache control", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "x", "cache_control": {"type": "persistent"}}]}]},
     "messages[0].content[0].cache_control"),
]


@pytest.mark.parametrize(("name", "fields", "param"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused(name: str, fields: dict[str, Any], param: str) -> None:
    assert refused(**fields).param == param


@pytest.mark.parametrize(("capability", "fields"), [
    ("tools", {"tools": [TOOL]}),
    ("images", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": PNG}}]}]}),
    ("json", {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}),
])
def test_capabilities_are_required(capability: str, fields: dict[str, Any]) -> None:
    assert capability in refused(PLAIN, **fields).message.lower().replace("structured output", "json")


def test_messages_merge_and_tool_results_join_a_user_turn() -> None:
    out, _ = translate(tools=[TOOL], messages=[
        {"role": "system", "content": "S1"}, {"role": "user", "content": "a"},
        {"role": "developer", "content": [{"type": "text", "text": "S2"}]},
        {"role": "user", "content": [{"type": "text", "text": "b"}, {"type": "text", "text": ""}]},
        {"role": "assistant", "content": "", "tool_calls": [*CALL["tool_calls"], {
            "id": "call_2", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}]},
        RESULT, {"role": "tool", "tool_call_id": "call_2", "content": ""},
        {"role": "user", "content": "c"}, {"role": "assistant", "content": ""},
        {"role": "assistant", "content": None, "refusal": "No."}])
    assert out["system"] == [{"text": "S1"}, {"text": "S2"}]
    assert out["messages"] == [
        {"role": "user", "content": [{"text": "a"}, {"text": "b"}]},
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": "call_1", "name": "f", "input": {}}},
                                          {"toolUse": {"toolUseId": "call_2", "name": "f", "input": {"x": 1}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "call_1", "content": [{"text": "done"}]}},
                                     {"toolResult": {"toolUseId": "call_2", "content": [{"text": "(empty)"}]}},
                                     {"text": "c"}]},
        {"role": "assistant", "content": [{"text": "No."}]}]


def test_images_documents_and_cache_points() -> None:
    out, _ = translate(messages=[
        {"role": "system", "content": [{"type": "text", "text": "S", "prompt_cache_breakpoint": {"ttl": "12h"}}]},
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": PNG}},
            {"type": "file", "file": {"file_data": PDF, "filename": "Q3 report (final).v2.pdf"}},
            {"type": "file", "file": {"file_data": PDF, "filename": "Q3 report (final).v2.pdf"}},
            {"type": "file", "file": {"file_data": "data:text/csv;base64,YSxi"}},
            {"type": "text", "text": "Compare.", "cache_control": {"type": "ephemeral"}}]},
        {"role": "tool", "tool_call_id": "x", "content": [
            {"type": "text", "text": "r", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]},
        CALL, RESULT], tools=[TOOL])
    assert out["system"] == [{"text": "S"}, {"cachePoint": {"type": "default", "ttl": "1h"}}]
    png = PNG.split(",", 1)[1]
    pdf = PDF.split(",", 1)[1]
    assert out["messages"][0]["content"] == [
        {"image": {"format": "png", "source": {"bytes": png}}},
        {"document": {"format": "pdf", "name": "Q3 report (final)-v2", "source": {"bytes": pdf}}},
        {"document": {"format": "pdf", "name": "Q3 report (final)-v2-2", "source": {"bytes": pdf}}},
        {"document": {"format": "csv", "name": "document-1", "source": {"bytes": "YSxi"}}},
        {"text": "Compare."}, {"cachePoint": {"type": "default"}},
        {"toolResult": {"toolUseId": "x", "content": [{"text": "r"}]}},
        {"cachePoint": {"type": "default", "ttl": "1h"}}]


# ----- responses ---------------------------------------------------------------------------------

def _converse(content: list[dict[str, Any]], stop: str = "end_turn", **extra: Any) -> bytes:
    return orjson.dumps({"output": {"message": {"role": "assistant", "content": content}}, "stopReason": stop,
                         "usage": {"inputTokens": 3, "outputTokens": 2, "totalTokens": 5},
                         "metrics": {"latencyMs": 9}, **extra})


@pytest.mark.parametrize(("stop", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
    ("model_context_window_exceeded", "length"), ("guardrail_intervened", "content_filter"),
    ("content_filtered", "content_filter"), ("malformed_model_output", "stop"), ("something_new", "stop"),
])
def test_finish_reasons(stop: str, finish: str) -> None:
    body, _ = OpenAIToBedrock().translate_response(_converse([{"text": "x"}], stop), TARGET, CTX)
    assert orjson.loads(body)["choices"][0]["finish_reason"] == finish


def test_reasoning_is_hidden_and_service_tier_reported() -> None:
    body, usage = OpenAIToBedrock().translate_response(_converse(
        [{"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "s"}}}, {"text": "Yes."}],
        serviceTier={"type": "reserved"}), TARGET, CTX)
    out = orjson.loads(body)
    assert out["choices"][0]["message"]["content"] == "Yes."
    assert "service_tier" not in out
    assert usage is not None and usage.total_tokens == 5


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"output": {}}', b'{"output": {"message": {}}}'])
def test_unreadable_responses_are_502(body: bytes) -> None:
    with pytest.raises(GatewayError) as info:
        OpenAIToBedrock().translate_response(body, TARGET, CTX)
    assert info.value.status == 502


# ----- errors ------------------------------------------------------------------------------------

ERRORS = [
    (400, "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/", {"message": "bad input"},
     400, "bad input"),
    (400, None, {"__type": "com.amazon.coral.validate#ValidationException", "message": "typed in body"},
     400, "typed in body"),
    (429, "ThrottlingException", {"message": "slow down"}, 429, "slow down"),
    (400, "ServiceQuotaExceededException", {"Message": "quota"}, 429, "quota"),
    (403, "AccessDeniedException", {"message": "User arn:aws:iam::1:user/x is not authorized"}, 502,
     "The provider rejected the gateway's credentials for this model."),
    (403, "UnrecognizedClientException", {"message": "The security token included in the request is invalid."},
     502, "The provider rejected the gateway's credentials for this model."),
    (400, "IncompleteSignatureException", {"message": "Authorization header requires Credential"}, 502,
     "The provider rejected the gateway's credentials for this model."),
    (404, "ResourceNotFoundException", {"message": "arn:aws:bedrock:us-east-1:123456789012:x not found"}, 502,
     "The provider does not know the model this deployment is configured with."),
    (408, "ModelTimeoutException", {"message": "timed out"}, 504,
     "The provider failed to serve the request (status 408)."),
    (429, "ModelNotReadyException", {"message": "not ready"}, 503,
     "The provider failed to serve the request (status 503)."),
    (503, "ServiceUnavailableException", {"message": "unavailable"}, 503,
     "The provider failed to serve the request (status 503)."),
    (500, "InternalServerException", {"message": "oops"}, 502, "The provider failed to serve the request (status 500)."),
    (424, "ModelErrorException", {"message": "model crashed", "originalStatusCode": 500}, 502,
     "The provider failed to serve the request (status 500)."),
    (502, None, "<html>Bad Gateway</html>", 502, "The provider failed to serve the request (status 502)."),
    (400, None, {"message": 7}, 400, "The provider rejected the request (status 400)."),
]


@pytest.mark.parametrize(("status", "kind", "body", "client_status", "message"), ERRORS)
def test_errors(status: int, kind: str | None, body: Any, client_status: int, message: str) -> None:
    raw = body.encode() if isinstance(body, str) else orjson.dumps(body)
    err = OpenAIToBedrock().translate_error(status, raw, {"x-amzn-errortype": kind} if kind else {})
    rendered_status, rendered, headers = render(err, "openai")
    assert (rendered_status, orjson.loads(rendered)["error"]["message"]) == (client_status, message)
    assert ("retry-after" in headers) == (client_status == 429)


# ----- streams -----------------------------------------------------------------------------------

def _stream(*messages: bytes, ctx: ResponseContext = CTX) -> tuple[list[Any], Any]:
    stream = OpenAIToBedrock().stream_translator(TARGET, ctx)
    out = b"".join(stream.feed(m) for m in messages) + stream.finish()
    lines = [line.removeprefix(b"data: ") for line in out.split(b"\n\n") if line]
    return [line.decode() if line == b"[DONE]" else orjson.loads(line) for line in lines], stream.usage


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    return event_message(kind, orjson.dumps(payload))


START = _event("messageStart", {"role": "assistant"})
TEXT = _event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}})
STOP = _event("messageStop", {"stopReason": "end_turn"})
META = _event("metadata", {"usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2},
                           "metrics": {"latencyMs": 1}})


def test_stream_without_metadata_still_ends_with_done() -> None:
    events, usage = _stream(START, TEXT, STOP)
    assert events[-1] == "[DONE]" and events[-2]["usage"]["total_tokens"] == 0
    assert usage is None


def test_usage_arrives_only_with_metadata() -> None:
    stream = OpenAIToBedrock().stream_translator(TARGET, CTX)
    stream.feed(START + TEXT + STOP)
    assert stream.usage is None
    assert stream.feed(META).endswith(b"data: [DONE]\n\n")
    assert stream.usage is not None and stream.usage.total_tokens == 2
    assert stream.feed(TEXT) == b"" and stream.finish() == b""


@pytest.mark.parametrize(("tail", "status_message"), [
    (exception_message("validationException", b'{"message":"bad"}'), "bad"),
    (exception_message("internalServerException", b'{"message":"x"}'),
     "The provider failed to serve the request (status 500)."),
    (exception_message("serviceUnavailableException", b"not json"),
     "The provider failed to serve the request (status 503)."),
    (encode_message({":message-type": "error", ":error-code": "InternalFailure", ":error-message": "boom"}, b""),
     "The provider failed to serve the request (status 500)."),
    (_event("contentBlockDelta", {"x": 1})[:-1] + b"\x00", "The provider returned a stream the gateway could not read."),
    (event_message("contentBlockDelta", b"{not json"),
     "The provider returned a stream event the gateway could not read."),
])
def test_stream_failures_end_with_one_error_line(tail: bytes, status_message: str) -> None:
    events, _ = _stream(START, TEXT, tail, STOP, META)
    assert events[-1]["error"]["message"] == status_message
    assert [e["choices"][0]["delta"] for e in events[:-1]] == [{"role": "assistant", "content": ""},
                                                                {"content": "Hi"}]


def test_unknown_events_and_messages_are_ignored() -> None:
    events, _ = _stream(START, _event("somethingNew", {"a": 1}),
                        encode_message({":message-type": "ping"}, b""), TEXT, STOP, META,
                        ctx=ResponseContext("r", 1, include_usage=False))
    assert [e if isinstance(e, str) else e["choices"][0]["delta"] for e in events] == [
        {"role": "assistant", "content": ""}, {"content": "Hi"}, {}, "[DONE]"]
    assert "usage" not in events[0]
