"""OpenAI Responses: the request's conversion to chat (one row per input kind and refusal), the
request check and the facts routing reads, the account tags of stored responses, and the
passthrough stream's reading of its end."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from extproc.errors import BadRequest
from extproc.stages.request import client_request
from extproc.translate.base import ResponseContext, Target
from extproc.translate.responses_chat import to_chat
from extproc.translate.responses_openai import (
    ResponsesPassthroughStream,
    ResponsesToAzure,
    ResponsesToOpenAI,
    account_tag,
    provider_id,
    stored_by,
)
from extproc.translate.responses_response import ChatToResponsesStream, to_response

GPT = Target("gpt", "gpt-4o-2024-08-06", "openai", 4096)
CTX = ResponseContext("req-1", 1767225600)
USER = {"role": "user", "content": "Hi"}


@pytest.mark.parametrize(("body", "messages"), [
    ({"input": "Hi"}, [USER]),
    ({"input": "Hi", "instructions": "Be brief."}, [{"role": "system", "content": "Be brief."}, USER]),
    ({"input": [{"role": "developer", "content": [{"type": "input_text", "text": "Terse."}]}, USER]},
     [{"role": "system", "content": "Terse."}, USER]),
    ({"input": [{"role": "user", "content": [{"type": "input_text", "text": "What is it?"},
                                             {"type": "input_image", "image_url": "https://x/cat.png", "detail": "low"}]}]},
     [{"role": "user", "content": [{"type": "text", "text": "What is it?"},
                                   {"type": "image_url", "image_url": {"url": "https://x/cat.png", "detail": "low"}}]}]),
    # an assistant turn with text, then two calls: one assistant message; their outputs: tool messages
    ({"input": [USER, {"role": "assistant", "content": "Checking."},
                {"type": "function_call", "call_id": "c1", "name": "a", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "b", "arguments": "{\"x\":1}"},
                {"type": "function_call_output", "call_id": "c1", "output": "1"},
                {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "2"}]}]},
     [USER, {"role": "assistant", "content": "Checking.", "tool_calls": [
         {"id": "c1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
         {"id": "c2", "type": "function", "function": {"name": "b", "arguments": "{\"x\":1}"}}]},
      {"role": "tool", "tool_call_id": "c1", "content": "1"}, {"role": "tool", "tool_call_id": "c2", "content": "2"}]),
    # an assistant output message replayed as an item
    ({"input": [USER, {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
                       "content": [{"type": "output_text", "text": "Hello", "annotations": []}]}]},
     [USER, {"role": "assistant", "content": "Hello"}]),
])
def test_input_items_become_chat_messages(body: dict[str, Any], messages: list[dict[str, Any]]) -> None:
    request = {"model": "m", "store": False, **body}
    frozen = copy.deepcopy(request)
    chat, dropped = to_chat(request)
    assert chat["messages"] == messages and dropped == set()
    assert request == frozen


def test_fields_map_and_drops_are_named() -> None:
    chat, dropped = to_chat({
        "model": "m", "input": "Hi", "max_output_tokens": 50, "reasoning": {"effort": "low", "summary": "auto"},
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}],
        "tool_choice": {"type": "function", "name": "f"}, "temperature": 0.2, "metadata": {"k": "v"},
        "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}, "strict": True},
                 "verbosity": "low"},
        "truncation": "auto", "stream": True})
    assert chat == {
        "model": "m", "messages": [USER], "max_completion_tokens": 50, "reasoning_effort": "low",
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}, "strict": True}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}}, "temperature": 0.2,
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"},
                                                                   "strict": True}},
        "stream": True, "stream_options": {"include_usage": True}}
    # the SDK's default `store` is true: omitted, it is served unstored and named
    assert dropped == {"store", "metadata", "reasoning.summary", "text.verbosity", "truncation"}


@pytest.mark.parametrize(("fields", "param", "words"), [
    ({"store": True}, "store", "store: false"),
    ({"previous_response_id": "resp_1"}, "previous_response_id", "whole conversation"),
    ({"conversation": "conv_1"}, "conversation", "whole conversation"),
    ({"background": True}, "background", "OpenAI-type providers only"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt", "instructions"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type", "built-in tool `web_search`"),
    ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools[0].type", "OpenAI-type"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]", "stored responses"),
    ({"input": [{"type": "web_search_call", "id": "ws_1", "status": "completed"}]}, "input[0]", "OpenAI-type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]},
     "input[0].content[0]", "image_url"),
    ({"tool_choice": {"type": "web_search_preview"}, "tools": []}, "tool_choice", "OpenAI-type"),
])
def test_what_only_openai_serves_is_a_400_that_says_what_to_send(fields: dict[str, Any], param: str,
                                                                 words: str) -> None:
    with pytest.raises(BadRequest) as info:
        to_chat({"model": "m", "input": "Hi", **fields})
    assert info.value.param == param and words in info.value.message


def test_client_request_reads_the_responses_fields() -> None:
    body = {"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "u", "detail": "auto"}]}],
            "tools": [{"type": "function", "name": "f", "parameters": {}, "strict": True}], "max_output_tokens": 64, "stream": True,
            "text": {"format": {"type": "json_object"}}}
    req = client_request("openai-responses", body, orjson.dumps(body))
    assert (req.model, req.stream, req.include_usage, req.max_output_tokens) == ("m", True, True, 64)
    assert req.needs == frozenset({"tools", "images", "json"})
    with pytest.raises(BadRequest) as info:
        client_request("openai-responses", {"input": "Hi"}, b"{}")
    assert info.value.param == "model"
    with pytest.raises(BadRequest) as info:
        client_request("openai-responses", {"model": "m", "input": "Hi", "max_output_tokens": -1}, b"{}")
    assert info.value.param == "max_output_tokens"


def test_whole_completion_becomes_a_response() -> None:
    completion = {"id": "chatcmpl-abc", "created": 5, "model": "x", "choices": [{"index": 0, "finish_reason": "length",
                  "message": {"role": "assistant", "content": "Hel", "tool_calls": [
                      {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}],
                  "usage": {"prompt_tokens": 3, "completion_tokens": 2,
                            "prompt_tokens_details": {"cached_tokens": 1}}}
    r = to_response(completion, CTX)
    assert (r["id"], r["status"], r["incomplete_details"]) == ("resp_abc", "incomplete", {"reason": "max_output_tokens"})
    assert [(i["type"], i["id"]) for i in r["output"]] == [("message", "msg_abc"), ("function_call", "fc_c1")]
    assert r["usage"] == {"input_tokens": 3, "input_tokens_details": {"cached_tokens": 1, "cache_write_tokens": 0},
                          "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 5}


def test_chat_stream_error_goes_on_and_ends_the_stream() -> None:
    s = ChatToResponsesStream(CTX)
    out = s.feed(b'data: {"id":"chatcmpl-1","created":1,"model":"x","choices":[{"index":0,"delta":{"content":"a"}}]}'
                 b'\n\ndata: {"error":{"message":"boom","type":"api_error","param":null,"code":null}}\n\n'
                 b'data: [DONE]\n\n')
    assert out.endswith(b'data: {"error":{"message":"boom","type":"api_error","param":null,"code":null}}\n\n')
    assert b"response.completed" not in out


def test_account_tags() -> None:
    tag = account_tag("openai-main")
    assert tag == account_tag("openai-main") != account_tag("openai-other")
    assert stored_by(f"resp_1.{tag}") == tag and provider_id(f"resp_1.{tag}") == "resp_1"
    assert stored_by("resp_1") is None and provider_id("resp_1") == "resp_1" and stored_by(None) is None


def test_passthrough_keeps_state_fields_and_strips_the_tag() -> None:
    tag = account_tag("a")
    body = {"model": "gpt", "input": "Hi", "store": True, "previous_response_id": f"resp_9.{tag}",
            "tools": [{"type": "web_search"}], "background": True}
    up = ResponsesToOpenAI().translate_request(body, GPT)
    assert orjson.loads(up.body) == {**body, "model": "gpt-4o-2024-08-06", "previous_response_id": "resp_9"}
    assert (up.path, up.dropped_params) == ("/v1/responses", ())
    assert ResponsesToAzure().translate_request(body, GPT).path == "/openai/v1/responses"


EVENTS = (b'event: response.created\ndata: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1"}}'
          b'\n\nevent: response.completed\ndata: {"type":"response.completed","sequence_number":1,"response":'
          b'{"id":"resp_1","usage":{"input_tokens":3,"output_tokens":2}}}\n\n')


@pytest.mark.parametrize("tag", ["", "ilabcdef01"])
def test_passthrough_stream_sees_its_end_split_anywhere(tag: str) -> None:
    for cut in range(len(EVENTS) + 1):
        s = ResponsesPassthroughStream(tag)
        out = s.feed(EVENTS[:cut]) + s.feed(EVENTS[cut:]) + s.finish()
        assert s.complete and s.usage is not None and s.usage.total_tokens == 5
        assert (out == EVENTS) if not tag else (out.count(b'"resp_1.ilabcdef01"') == 2)
    cut_short = ResponsesPassthroughStream(tag)
    out = cut_short.feed(EVENTS[:100]) + cut_short.finish()
    assert not cut_short.complete
    assert out.endswith(b"ended before the response was complete.\",\"type\":\"api_error\",\"param\":null,"
                        b"\"code\":null}}\n\n") if tag else out == EVENTS[:100]


def test_an_image_part_without_detail_is_accepted_as_the_api_accepts_it() -> None:
    image: dict[str, Any] = {"type": "input_image", "image_url": "https://x/cat.png"}
    body = {"model": "m", "input": [{"role": "user", "content": [image]}]}
    req = client_request("openai-responses", body, orjson.dumps(body))  # the API's default: `auto`
    assert req.needs == frozenset({"images"})
    chat, _ = to_chat(body)
    assert chat["messages"][0]["content"] == [{"type": "image_url", "image_url": {"url": "https://x/cat.png"}}]
    bad = {"model": "m", "input": [{"role": "user", "content": [{**image, "detail": 1}]}]}  # still checked
    with pytest.raises(BadRequest) as info:
        client_request("openai-responses", bad, orjson.dumps(bad))
    assert info.value.param == "input[0].content[0].detail"


def test_a_translated_response_echoes_the_request() -> None:
    from openai.types.responses import Response

    from extproc.translate.responses_response import echoing

    tool = {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}
    sent: dict[str, Any] = {"model": "m", "input": "Hi", "instructions": "Be brief.", "tools": [tool],
                            "tool_choice": "required", "text": {"format": {"type": "json_object"}},
                            "reasoning": {"effort": "low"}, "max_output_tokens": 64, "temperature": 0.5,
                            "top_p": 0.9, "parallel_tool_calls": False, "metadata": {"k": "v"}, "user": "u1"}
    echoed = {k: v for k, v in sent.items() if k not in ("model", "input")}
    ctx = echoing("openai-responses", sent, CTX)
    completion = {"id": "chatcmpl-abc", "created": 5, "model": "x", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "{}"}}]}
    whole = to_response(completion, ctx)
    assert {k: whole[k] for k in echoed} == echoed
    assert Response.model_validate(whole).tools[0].name == "f"  # type: ignore[union-attr]
    stream = ChatToResponsesStream(ctx)
    out = stream.feed(b'data: {"id":"chatcmpl-abc","created":5,"model":"x","choices":[{"index":0,'
                      b'"delta":{"content":"{}"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n') + stream.finish()
    events = [orjson.loads(line[6:]) for line in out.split(b"\n") if line.startswith(b"data: ")]
    assert events[-1]["type"] == "response.completed"
    assert {k: events[-1]["response"][k] for k in echoed} == echoed
    assert {k: events[0]["response"][k] for k in echoed} == echoed
    plain = to_response(completion, CTX)  # nothing to echo: the defaults
    assert (plain["tools"], plain["tool_choice"], plain["instructions"]) == ([], "auto", None)
    assert echoing("openai", sent, CTX) is CTX
