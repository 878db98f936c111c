"""The simulated model server over real HTTP: the official `openai` SDK as the client, `/metrics`
parsed by prometheus_client's parser, and the control endpoints P2's fault tests use."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from simulator.modelserver import MODEL, BackgroundPool, ModelServerSpec


@pytest.fixture(scope="module")
def pool() -> Iterator[BackgroundPool]:
    p = BackgroundPool([ModelServerSpec(name="v", speed=4.0), ModelServerSpec(name="s", flavor="sglang", speed=4.0)],
                       first_octet=41)
    yield p
    p.close()


@pytest.fixture
def client(pool: BackgroundPool) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=pool.servers[0].url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


def metrics(url: str) -> dict[str, Any]:
    text = httpx.get(url + "/metrics").text
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(families: dict[str, Any], name: str, sample: str | None = None) -> float:
    return next(s.value for s in families[name].samples if s.name == (sample or name))


def test_servers_listen_on_distinct_loopback_addresses(pool: BackgroundPool) -> None:
    assert [s.host for s in pool.servers] == ["127.0.0.41", "127.0.0.42"]
    for server in pool.servers:
        assert httpx.get(server.url + "/health").status_code == 200
        assert httpx.get(server.url + "/v1/models").json()["data"][0]["id"] == MODEL


def test_chat_completion_counts_tokens_and_answers_max_tokens(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model=MODEL, max_tokens=7,
                                         messages=[{"role": "system", "content": "You are terse."},
                                                   {"role": "user", "content": "Say hello, world."}])
    assert out.object == "chat.completion" and out.choices[0].finish_reason == "length"
    assert out.usage is not None
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (4 + 5, 7)  # words and punctuation
    assert len(out.choices[0].message.content.split()) == 7


def test_chat_stream_with_usage(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model=MODEL, max_tokens=30, stream=True,
                                                 stream_options={"include_usage": True},
                                                 messages=[{"role": "user", "content": "stream please"}]))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 30
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 30 and chunks[-1].usage.prompt_tokens == 2
    assert all(c.usage is None for c in chunks[:-1])
    assert 3 <= len(chunks) <= 2 + 30 // 8 + 2  # tokens batched per `stream_interval`


def test_completions_stream_and_not(client: openai.OpenAI) -> None:
    whole = client.completions.create(model=MODEL, prompt="one two three", max_tokens=5)
    assert whole.usage is not None and whole.usage.prompt_tokens == 3 and whole.usage.completion_tokens == 5
    chunks = list(client.completions.create(model=MODEL, prompt="one two three", max_tokens=5, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 8


def test_errors_come_in_openai_format(pool: BackgroundPool, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model=MODEL, max_tokens=0, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.chat.completions.create(model=MODEL, max_tokens=16384, messages=[{"role": "user", "content": "x"}])
    bad = httpx.post(pool.servers[0].url + "/v1/chat/completions", content=b"{not json")
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "BadRequestError"
    ignored = httpx.post(pool.servers[0].url + "/v1/chat/completions",
                         json={"model": MODEL, "max_tokens": 2, "ignore_eos": True,
                               "messages": [{"role": "user", "content": "x"}]})
    assert ignored.status_code == 200  # vLLM ignores fields it does not know


def test_the_server_finds_a_shared_prefix_in_the_text(pool: BackgroundPool, client: openai.OpenAI) -> None:
    before = metrics(pool.servers[0].url)
    shared = " ".join(f"rule{i}" for i in range(320))
    first = client.chat.completions.create(model=MODEL, max_tokens=2,
                                           messages=[{"role": "user", "content": shared + " first question"}])
    second = client.chat.completions.create(model=MODEL, max_tokens=2,
                                            messages=[{"role": "user", "content": shared + " another one"}])
    assert first.usage is not None and second.usage is not None
    assert first.usage.prompt_tokens_details is not None and second.usage.prompt_tokens_details is not None
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.usage.prompt_tokens_details.cached_tokens == 320
    after = metrics(pool.servers[0].url)
    hits = "vllm:prefix_cache_hits"
    assert value(after, hits, hits + "_total") - value(before, hits, hits + "_total") == 320


def test_vllm_metrics_parse_with_vllm_names_types_and_labels(pool: BackgroundPool, client: openai.OpenAI) -> None:
    before = metrics(pool.servers[0].url)
    client.chat.completions.create(model=MODEL, max_tokens=11, messages=[{"role": "user", "content": "count me"}])
    after = metrics(pool.servers[0].url)
    types = {name: f.type for name, f in after.items()}
    assert types["vllm:num_requests_running"] == types["vllm:num_requests_waiting"] == "gauge"
    assert types["vllm:kv_cache_usage_perc"] == "gauge" and types["vllm:cache_config_info"] == "gauge"
    assert types["vllm:prompt_tokens"] == types["vllm:generation_tokens"] == "counter"
    assert types["vllm:prefix_cache_queries"] == types["vllm:prefix_cache_hits"] == "counter"
    assert types["vllm:time_to_first_token_seconds"] == "histogram"
    assert types["vllm:inter_token_latency_seconds"] == types["vllm:e2e_request_latency_seconds"] == "histogram"
    assert "vllm:gpu_cache_usage_perc" not in types
    running = after["vllm:num_requests_running"].samples[0]
    assert running.labels == {"model_name": MODEL, "engine": "0"} and running.value == 0
    info = after["vllm:cache_config_info"].samples[0].labels
    assert info["block_size"] == "16" and info["num_gpu_blocks"] == "2500"
    gen = "vllm:generation_tokens"
    assert value(after, gen, gen + "_total") - value(before, gen, gen + "_total") == 11
    ttft = "vllm:time_to_first_token_seconds"
    assert value(after, ttft, ttft + "_count") - value(before, ttft, ttft + "_count") == 1


def test_sglang_flavour_names(pool: BackgroundPool) -> None:
    url = pool.servers[1].url
    with openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0) as c:
        c.chat.completions.create(model=MODEL, max_tokens=3, messages=[{"role": "user", "content": "hi"}])
    fams = metrics(url)
    for name in ("sglang:num_queue_reqs", "sglang:num_running_reqs", "sglang:token_usage", "sglang:cache_hit_rate"):
        assert fams[name].type == "gauge"
    assert fams["sglang:time_to_first_token_seconds"].type == "histogram"
    assert value(fams, "sglang:generation_tokens", "sglang:generation_tokens_total") == 3
    assert not any(name.startswith("vllm:") for name in fams)


def test_speed_and_faults_are_switchable_at_runtime(pool: BackgroundPool) -> None:
    url = pool.servers[0].url
    assert httpx.post(url + "/sim/speed", json={"speed": 0}).status_code == 400
    assert httpx.post(url + "/sim/speed", json={"speed": 2.5}).json() == {"speed": 2.5}
    assert httpx.get(url + "/sim/state").json()["speed"] == 2.5
    try:
        assert httpx.post(url + "/sim/fault", json={"mode": "metrics-500"}).status_code == 200
        assert httpx.get(url + "/metrics").status_code == 500
        httpx.post(url + "/sim/fault", json={"mode": "metrics-hang"})
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(url + "/metrics", timeout=0.3)
        httpx.post(url + "/sim/fault", json={"mode": "down"})
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/health", timeout=1)
        assert httpx.post(url + "/sim/fault", json={"mode": "sideways"}).status_code == 400
    finally:
        httpx.post(url + "/sim/fault", json={"mode": "none"})
        httpx.post(url + "/sim/speed", json={"speed": 4.0})
    assert httpx.get(url + "/metrics").status_code == 200


def test_a_stopped_server_refuses_connections_and_comes_back(pool: BackgroundPool) -> None:
    server = pool.servers[1]
    body = {"model": MODEL, "max_tokens": 5000, "stream": True, "messages": [{"role": "user", "content": "long"}]}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        began = time.monotonic()
        pool.call(server.stop())
        assert time.monotonic() - began < 3  # an in-flight stream does not hold the shutdown
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/health", timeout=1)
    pool.call(server.start())
    assert httpx.get(server.url + "/health").status_code == 200


def test_requests_queue_when_the_slots_are_full() -> None:
    pool = BackgroundPool([ModelServerSpec(name="q", max_num_seqs=1, speed=1.0)], first_octet=43)
    try:
        url = pool.servers[0].url

        async def burst() -> list[float]:
            async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0) as c:
                async def one(i: int) -> float:
                    loop = asyncio.get_running_loop()
                    start = loop.time()
                    stream = await c.chat.completions.create(
                        model=MODEL, max_tokens=10, stream=True,
                        messages=[{"role": "user", "content": f"question {i} " + "word " * 400}])
                    first = None
                    async for _chunk in stream:
                        if first is None and _chunk.choices and _chunk.choices[0].delta.content:
                            first = loop.time() - start
                    assert first is not None
                    return first

                async def watch() -> int:
                    await asyncio.sleep(0.15)
                    fams = metrics(url)
                    return int(value(fams, "vllm:num_requests_waiting"))

                *ttfts, waiting = await asyncio.gather(*(one(i) for i in range(4)), watch())
                assert waiting >= 1
                return sorted(ttfts)

        ttfts = asyncio.run(burst())
        assert ttfts[-1] > ttfts[0] + 0.3
    finally:
        pool.close()


def test_answers_validate_against_the_sdk_types(pool: BackgroundPool) -> None:
    from openai.types import Completion
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    url = pool.servers[0].url
    body = {"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": "validate me"}]}
    ChatCompletion.model_validate(httpx.post(url + "/v1/chat/completions", json=body).json(), strict=True)
    raw = httpx.post(url + "/v1/chat/completions",
                     json={**body, "stream": True, "stream_options": {"include_usage": True}}).text
    events = [line[6:] for line in raw.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        ChatCompletionChunk.model_validate_json(event, strict=True)
    text = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "a b", "max_tokens": 3}).json()
    Completion.model_validate(text, strict=True)


def test_a_client_that_goes_away_frees_its_slot(pool: BackgroundPool) -> None:
    url = pool.servers[0].url
    body = {"model": MODEL, "max_tokens": 5000, "stream": True, "messages": [{"role": "user", "content": "long"}]}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body) as response:
        lines = response.iter_lines()  # kept referenced: closing it would close the stream
        for line in lines:
            if '"content":"' in line and '"content":""' not in line:
                break
        assert httpx.get(url + "/sim/state").json()["running"] == 1
    deadline = time.monotonic() + 5
    while httpx.get(url + "/sim/state").json()["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    state = httpx.get(url + "/sim/state").json()
    assert state["running"] == 0 and state["kv_blocks_used"] == 0
    aborted = [s for s in metrics(url)["vllm:request_success"].samples
               if s.labels.get("finished_reason") == "abort" and s.name.endswith("_total")]
    assert aborted[0].value >= 1
