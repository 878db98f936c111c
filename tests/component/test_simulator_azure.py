"""The simulator's Azure OpenAI deployments and OpenAI embeddings, with the official `openai` SDK."""

from __future__ import annotations

import base64
import struct
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest

from simulator import BackgroundSimulator, count_tokens, start_background

KEY = "azure-sim-key"
VERSION = "2024-10-21"
HI: list[Any] = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def sim() -> Iterator[BackgroundSimulator]:
    simulator = start_background(api_keys=[KEY])
    yield simulator
    simulator.stop()


@pytest.fixture
def azure(sim: BackgroundSimulator) -> Iterator[openai.AzureOpenAI]:
    sim.reset()
    with openai.AzureOpenAI(azure_endpoint=sim.url, api_key=KEY, api_version=VERSION, max_retries=0) as client:
        yield client


@pytest.fixture
def oa(sim: BackgroundSimulator) -> Iterator[openai.OpenAI]:
    sim.reset()
    with openai.OpenAI(base_url=sim.url + "/v1", api_key=KEY, max_retries=0) as client:
        yield client


def post(sim: BackgroundSimulator, path: str, body: Any, headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(sim.url + path, data=orjson.dumps(body), method="POST",
                                     headers={"content-type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers.items()), orjson.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers.items()), orjson.loads(err.read())


def test_chat_on_a_deployment(azure: openai.AzureOpenAI, sim: BackgroundSimulator) -> None:
    raw = azure.chat.completions.with_raw_response.create(model="prod-gpt", messages=HI)
    completion = raw.parse()
    assert completion.model == "prod-gpt" and (completion.choices[0].message.content or "").startswith("Simulated")
    assert completion.usage and completion.usage.prompt_tokens == count_tokens("hello there")
    extra = completion.model_extra or {}
    assert extra["prompt_filter_results"][0]["content_filter_results"]["hate"] == {"filtered": False,
                                                                                  "severity": "safe"}
    assert raw.headers["x-ratelimit-remaining-requests"] and raw.headers["apim-request-id"]
    record = sim.requests()[-1]
    assert record["path"] == "/openai/deployments/prod-gpt/chat/completions" and record["query"] == f"api-version={VERSION}"
    assert record["headers"]["api-key"] == KEY


def test_stream_opens_with_prompt_filter_results(azure: openai.AzureOpenAI) -> None:
    chunks = list(azure.chat.completions.create(model="prod-gpt", messages=HI, stream=True,
                                                stream_options={"include_usage": True}))
    assert chunks[0].choices == [] and (chunks[0].model_extra or {}).get("prompt_filter_results")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Simulated response") and chunks[-1].usage and chunks[-1].usage.completion_tokens == 12
    assert all("obfuscation" not in (c.model_extra or {}) for c in chunks)


def test_body_model_is_optional_and_ignored(sim: BackgroundSimulator) -> None:
    path = f"/openai/deployments/dep-a/chat/completions?api-version={VERSION}"
    status, _, body = post(sim, path, {"messages": HI}, {"api-key": KEY})
    assert status == 200 and body["model"] == "dep-a"
    status, _, body = post(sim, path, {"messages": HI, "model": "gpt-4o"}, {"api-key": KEY})
    assert status == 200 and body["model"] == "dep-a"
    status, _, body = post(sim, path, {"messages": HI, "bogus": 1}, {"api-key": KEY})
    assert status == 400 and "bogus" in body["error"]["message"]


@pytest.mark.parametrize(("query", "headers", "status", "code"), [
    (f"?api-version={VERSION}", {"authorization": f"Bearer {KEY}"}, 401, "401"),
    (f"?api-version={VERSION}", {"api-key": "wrong"}, 401, "401"),
    ("", {"api-key": KEY}, 404, "404"),
    ("?api-version=yesterday", {"api-key": KEY}, 400, "BadRequest"),
])
def test_access_rules(sim: BackgroundSimulator, query: str, headers: dict[str, str], status: int, code: str) -> None:
    got, _, body = post(sim, f"/openai/deployments/dep-a/chat/completions{query}", {"messages": HI}, headers)
    assert (got, body["error"]["code"]) == (status, code)
    if status == 401:
        assert body["error"]["message"].startswith("Access denied due to invalid subscription key")


def test_rate_limit_and_missing_deployment(azure: openai.AzureOpenAI, sim: BackgroundSimulator) -> None:
    sim.set_behaviour("prod-gpt", status=429, retry_after_s=3)
    with pytest.raises(openai.RateLimitError) as limited:
        azure.chat.completions.create(model="prod-gpt", messages=HI)
    headers = limited.value.response.headers
    assert headers["retry-after"] == "3" and headers["retry-after-ms"] == "3000"
    assert "Please retry after 3 seconds" in limited.value.message
    sim.set_behaviour("prod-gpt", status=404)
    with pytest.raises(openai.NotFoundError) as missing:
        azure.chat.completions.create(model="prod-gpt", messages=HI)
    assert missing.value.code == "DeploymentNotFound"


def test_azure_embeddings(azure: openai.AzureOpenAI, sim: BackgroundSimulator) -> None:
    result = azure.embeddings.create(model="embed-dep", input=["alpha beta", "gamma"])
    assert [len(d.embedding) for d in result.data] == [8, 8] and result.model == "embed-dep"
    assert result.usage.prompt_tokens == 3
    assert sim.requests()[-1]["path"] == "/openai/deployments/embed-dep/embeddings"


def test_openai_embeddings_float_and_base64(oa: openai.OpenAI, sim: BackgroundSimulator) -> None:
    floats = oa.embeddings.create(model="text-embedding-3-small", input="hello world", encoding_format="float",
                                  dimensions=4)
    vector = floats.data[0].embedding
    assert len(vector) == 4 and abs(sum(v * v for v in vector) - 1) < 1e-4
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == 2
    decoded = oa.embeddings.create(model="text-embedding-3-small", input="hello world", dimensions=4)
    assert decoded.data[0].embedding == pytest.approx(vector, abs=1e-6)
    assert sim.requests()[-1]["body"]["encoding_format"] == "base64"
    status, _, body = post(sim, "/v1/embeddings", {"model": "e", "input": [[1, 2, 3], [4]], "encoding_format": "base64"},
                           {"authorization": f"Bearer {KEY}"})
    assert status == 200 and body["usage"]["prompt_tokens"] == 4
    packed = base64.b64decode(body["data"][0]["embedding"])
    assert len(struct.unpack(f"<{len(packed) // 4}f", packed)) == 8


@pytest.mark.parametrize(("body", "fragment"), [
    ({"model": "e", "input": ""}, "'$.input' is invalid"),
    ({"model": "e", "input": "x", "encoding_format": "hex"}, "encoding_format"),
    ({"model": "e", "input": "x", "foo": 1}, "foo"),
    ({"input": "x"}, "model"),
])
def test_openai_embedding_rejections(sim: BackgroundSimulator, body: Any, fragment: str) -> None:
    status, _, answer = post(sim, "/v1/embeddings", body, {"authorization": f"Bearer {KEY}"})
    assert status == 400 and fragment in answer["error"]["message"]


def test_embedding_behaviours(oa: openai.OpenAI, sim: BackgroundSimulator) -> None:
    sim.set_behaviour("text-embedding-3-small", status=429)
    with pytest.raises(openai.RateLimitError) as limited:
        oa.embeddings.create(model="text-embedding-3-small", input="x")
    assert limited.value.response.headers["x-ratelimit-remaining-requests"] == "0"


def test_openai_midstream_error(oa: openai.OpenAI, sim: BackgroundSimulator) -> None:
    sim.set_behaviour("gpt-4o", stream_error_after=2, error_status=500)
    stream = oa.chat.completions.create(model="gpt-4o", messages=HI, stream=True)
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


@pytest.mark.parametrize(("model", "dimensions", "status"), [
    ("text-embedding-3-small", 1536, 200), ("text-embedding-3-small", 1537, 400),
    ("text-embedding-3-large", 3072, 200), ("text-embedding-3-large", 10_000_000, 400)])
def test_more_dimensions_than_the_model_has_is_a_400(oa: openai.OpenAI, model: str, dimensions: int,
                                                       status: int) -> None:
    if status == 200:
        assert len(oa.embeddings.create(model=model, input="x", dimensions=dimensions).data[0].embedding) == dimensions
        return
    with pytest.raises(openai.BadRequestError) as info:
        oa.embeddings.create(model=model, input="x", dimensions=dimensions)
    assert info.value.status_code == 400 and info.value.param == "dimensions"
