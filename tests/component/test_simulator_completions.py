"""The simulator's completions (OpenAI legacy Completions, Mistral FIM) and token counting
endpoints, exercised with the official SDKs where one exists."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from openai.types import Completion

from simulator import BackgroundSimulator, start_background
from tests.component.test_simulator_openai import raw_post

KEY = "sk-sim-test"


@pytest.fixture(scope="module")
def sim() -> Iterator[BackgroundSimulator]:
    simulator = start_background(api_keys=[KEY])
    yield simulator
    simulator.stop()


@pytest.fixture
def client(sim: BackgroundSimulator) -> Iterator[openai.OpenAI]:
    sim.reset()
    with openai.OpenAI(base_url=sim.url + "/v1", api_key=KEY, max_retries=0) as c:
        yield c


def test_completion_with_suffix(client: openai.OpenAI) -> None:
    out = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="def add(a, b):\n", suffix="\n", max_tokens=8)
    assert out.object == "text_completion" and out.choices[0].text.startswith("Simulated")
    assert out.usage is not None and out.usage.completion_tokens <= 8


def test_completion_stream_with_usage(client: openai.OpenAI) -> None:
    chunks = list(client.completions.create(model="gpt-3.5-turbo-instruct", prompt="x = ", stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text.startswith("Simulated")
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_a_prompt_only_model_refuses_suffix_as_vllm_does(sim: BackgroundSimulator, client: openai.OpenAI) -> None:
    sim.set_behaviour("qwen-coder", capabilities=["tools"])
    with pytest.raises(openai.BadRequestError, match="suffix is not currently supported"):
        client.completions.create(model="qwen-coder", prompt="a", suffix="b")
    client.completions.create(model="qwen-coder", prompt="<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>")


def test_completions_request_is_validated(sim: BackgroundSimulator) -> None:
    status, _, body = raw_post(sim.url + "/v1/completions", {"model": "m", "prompt": "x", "suffix": 3})
    assert status == 400 and "suffix" in json.loads(body)["error"]["message"]


def test_mistral_fim(sim: BackgroundSimulator) -> None:
    status, _, body = raw_post(sim.url + "/v1/fim/completions", {"model": "codestral-latest", "prompt": "def f(",
                                                                 "suffix": "return 1", "max_tokens": 5})
    answer = json.loads(body)
    assert status == 200 and answer["choices"][0]["message"]["content"].startswith("Simulated")
    assert answer["usage"]["completion_tokens"] <= 5
    status, _, body = raw_post(sim.url + "/v1/fim/completions", {"model": "codestral-latest", "prompt": "x", "n": 2})
    assert status == 422 and "n" in json.loads(body)["message"]


def test_mistral_fim_stream(sim: BackgroundSimulator) -> None:
    status, _, body = raw_post(sim.url + "/v1/fim/completions", {"model": "codestral-latest", "prompt": "x",
                                                                 "stream": True})
    frames = [f for f in body.decode().split("\n\n") if f]
    assert status == 200 and frames[-1] == "data: [DONE]"
    chunks: list[Any] = [json.loads(f[6:]) for f in frames[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and "usage" in chunks[-1]
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks).startswith("Simulated")


def test_anthropic_count_tokens(sim: BackgroundSimulator) -> None:
    sim.reset()
    with anthropic.Anthropic(base_url=sim.url, api_key=KEY, max_retries=0) as c:
        counted = c.messages.count_tokens(model="claude-haiku-4-5", messages=[{"role": "user", "content": "Hello there"}])
        made = c.messages.create(model="claude-haiku-4-5", max_tokens=5,
                                 messages=[{"role": "user", "content": "Hello there"}])
    assert counted.input_tokens == made.usage.input_tokens > 0


def test_openai_input_tokens(client: openai.OpenAI) -> None:
    counted = client.responses.input_tokens.count(model="gpt-4o-mini", input="Hello there", instructions="Be brief")
    assert counted.object == "response.input_tokens" and counted.input_tokens > 0


def test_gemini_count_tokens(sim: BackgroundSimulator) -> None:
    from google import genai
    from google.genai import types

    client = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=sim.url, api_version="v1beta"))
    counted = client.models.count_tokens(model="gemini-2.5-flash", contents="Hello there")
    assert counted.total_tokens and counted.total_tokens > 0
    status, _, body = raw_post(sim.url + "/v1beta/models/gemini-2.5-flash:countTokens?key=" + KEY,
                               {"generateContentRequest": {"model": "models/gemini-2.5-flash", "contents": [
                                   {"role": "user", "parts": [{"text": "Hello there"}]}],
                                   "systemInstruction": {"parts": [{"text": "Be brief"}]}}}, key=None)
    assert status == 200 and json.loads(body)["totalTokens"] > counted.total_tokens


def test_completion_type_matches_sdk(client: openai.OpenAI) -> None:
    raw = client.completions.with_raw_response.create(model="m", prompt="x")
    Completion.model_validate(json.loads(raw.content))


def test_bedrock_count_tokens_with_boto3(sim: BackgroundSimulator) -> None:
    import boto3

    from simulator.aws_auth import DEMO_ACCESS_KEY_ID, DEMO_SECRET_ACCESS_KEY

    client = boto3.client("bedrock-runtime", endpoint_url=sim.url, region_name="eu-west-1",
                          aws_access_key_id=DEMO_ACCESS_KEY_ID, aws_secret_access_key=DEMO_SECRET_ACCESS_KEY)
    messages = [{"role": "user", "content": [{"text": "Hello there"}]}]
    counted = client.count_tokens(modelId="anthropic.claude-3-haiku-20240307-v1:0",
                                  input={"converse": {"messages": messages}})
    made = client.converse(modelId="anthropic.claude-3-haiku-20240307-v1:0", messages=messages)
    assert counted["inputTokens"] == made["usage"]["inputTokens"] > 0
