"""Unit rows for the completions (fill-in-the-middle) and token-counting translators; the golden
directories (`openai-completions-*`, `count-tokens-*`) hold the whole exchanges."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from extproc.errors import BadRequest, ProviderError
from extproc.translate.base import ResponseContext, Target
from extproc.translate.completions_fim import PRESETS, apply_template, resolve_template
from extproc.translate.completions_mistral import CompletionsToMistral, error_message
from extproc.translate.completions_openai import CompletionsToOpenAI
from extproc.translate.count_tokens import CountTokensToOpenAI, count_answer

QWEN = Target("qwen", "Qwen/Qwen2.5-Coder-7B", "openai", 4096, frozenset({"fim"}),
              (("path_prefix", "/v1"), ("fim_template", PRESETS["qwen"])))
CTX = ResponseContext("req-1", 1767225600)


@pytest.mark.parametrize(("name", "prompt"), [
    ("qwen", "<|fim_prefix|>P<|fim_suffix|>S<|fim_middle|>"),
    ("starcoder", "<fim_prefix>P<fim_suffix>S<fim_middle>"),
    ("codellama", "<PRE> P <SUF>S <MID>"),
    ("deepseek", "<｜fim▁begin｜>P<｜fim▁hole｜>S<｜fim▁end｜>"),
    ("// {prefix} | {suffix} {braces}", "// P | S {braces}"),
])
def test_templates(name: str, prompt: str) -> None:
    assert apply_template(resolve_template(name), "P", "S") == prompt


def test_inserted_text_is_never_a_placeholder() -> None:
    assert apply_template(PRESETS["starcoder"], "f('{suffix}')", "{prefix}") == \
        "<fim_prefix>f('{suffix}')<fim_suffix>{prefix}<fim_middle>"


@pytest.mark.parametrize("bad", ["{prefix}", "{suffix}{prefix}", "{prefix}{suffix}{suffix}", "chatml"])
def test_bad_templates(bad: str) -> None:
    with pytest.raises(ValueError, match="once each"):
        resolve_template(bad)


def test_template_request_keeps_the_clients_body() -> None:
    body = {"model": "qwen", "prompt": "a", "suffix": "b", "stream": True}
    up = CompletionsToOpenAI().translate_request(body, QWEN)
    assert orjson.loads(up.body) == {"model": "Qwen/Qwen2.5-Coder-7B", "stream": True,
                                     "prompt": "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>"}
    assert body == {"model": "qwen", "prompt": "a", "suffix": "b", "stream": True} and up.stream


def test_without_suffix_a_template_model_gets_the_prompt_as_is() -> None:
    up = CompletionsToOpenAI().translate_request({"model": "qwen", "prompt": "a"}, QWEN)
    assert orjson.loads(up.body) == {"model": "Qwen/Qwen2.5-Coder-7B", "prompt": "a"}


def test_a_200_that_is_not_a_completion_is_a_502() -> None:
    with pytest.raises(ProviderError) as e:
        CompletionsToOpenAI().translate_response(b"<html>", QWEN, CTX)
    assert e.value.status == 502


@pytest.mark.parametrize(("field", "value"), [("n", 3), ("best_of", 2), ("logprobs", 0), ("echo", True),
                                              ("prompt", ["a"])])
def test_mistral_refuses_what_changes_the_answer(field: str, value: Any) -> None:
    target = Target("codestral", "codestral-latest", "mistral", 4096, frozenset({"fim"}))
    with pytest.raises(BadRequest) as e:
        CompletionsToMistral().translate_request({"model": "codestral", "prompt": "x", field: value}, target)
    assert e.value.param == field


@pytest.mark.parametrize(("body", "message"), [
    ({"object": "error", "message": "Unauthorized", "type": "invalid_request_error"}, "Unauthorized"),
    ({"object": "error", "message": {"detail": [{"loc": ["body", "prompt"], "msg": "Field required"}]}},
     "prompt: Field required"),
    ({"detail": "Not Found"}, "Not Found"),
    ([], None),
])
def test_mistral_error_messages(body: Any, message: str | None) -> None:
    assert error_message(body) == message


@pytest.mark.parametrize("raw", [b"{}", b'{"input_tokens": -1}', b'{"input_tokens": true}', b"<html>"])
def test_an_answer_without_a_count_is_a_502(raw: bytes) -> None:
    with pytest.raises(ProviderError) as e:
        count_answer(raw, "input_tokens")
    assert e.value.status == 502


def test_gemini_omits_a_zero_count() -> None:
    assert count_answer(b"{}", "totalTokens") == 0


def test_openai_count_carries_images_and_tool_choice() -> None:
    target = Target("gpt", "gpt-4o-mini", "openai", 4096, frozenset({"images", "tools"}), (("path_prefix", "/v1"),))
    body = {"model": "gpt", "tool_choice": {"type": "tool", "name": "f"},
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                {"type": "text", "text": "What is it?"}]}]}
    up = orjson.loads(CountTokensToOpenAI().translate_request(body, target).body)
    assert up["input"][0]["content"][0] == {"type": "input_image", "image_url": "https://example.com/a.png",
                                            "detail": "auto"}
    assert up["tool_choice"] == {"type": "function", "name": "f"}
    assert up["tools"][0]["name"] == "f"
