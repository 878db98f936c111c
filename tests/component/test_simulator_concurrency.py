"""The simulator's per-model concurrency limit (`max_concurrency`) and its in-flight figures.

The simulator's sleep is a gate the test opens, so accepted requests stay in flight exactly as
long as the test wants, without real waits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from simulator import Simulator, start

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
MESSAGE = {"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "hello"}]}
OPENAI_HEADERS = {"Authorization": "Bearer k"}
ANTHROPIC_HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}


def with_gated_simulator(test: Callable[[Simulator, aiohttp.ClientSession, asyncio.Event], Awaitable[None]]) -> None:
    async def main() -> None:
        gate = asyncio.Event()

        async def sleep(seconds: float) -> None:
            await gate.wait()

        sim = await start(sleep=sleep, clock=lambda: 2_000_000_000.0)
        try:
            async with aiohttp.ClientSession(base_url=sim.url) as http:
                await test(sim, http, gate)
        finally:
            gate.set()
            await sim.stop()

    asyncio.run(main())


def figures(sim: Simulator, model: str = "m") -> dict[str, int]:
    return dict(sim.stats()["concurrency"].get(model, {}))


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def post(http: aiohttp.ClientSession, path: str, body: dict[str, Any],
               headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    async with http.post(path, json=body, headers=headers) as r:
        return r.status, {k.lower(): v for k, v in r.headers.items()}, await r.read()


def test_openai_limit_answers_429_with_rate_limit_headers() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession, gate: asyncio.Event) -> None:
        sim.set_behaviour("m", max_concurrency=3, ttft_ms=20, retry_after_s=2)
        tasks = [asyncio.create_task(post(http, "/v1/chat/completions", CHAT, OPENAI_HEADERS)) for _ in range(10)]
        await until(lambda: figures(sim).get("rejected") == 7)
        assert figures(sim) == {"in_flight": 3, "peak": 3, "accepted": 3, "rejected": 7}
        rejected = [t.result() for t in tasks if t.done()]
        assert len(rejected) == 7
        for status, headers, _ in rejected:
            assert status == 429
            assert headers["retry-after"] == "2" and headers["x-ratelimit-remaining-requests"] == "0"
            assert headers["x-ratelimit-reset-requests"] == "2s"
        gate.set()
        answers = await asyncio.gather(*tasks)
        assert sorted(status for status, _, _ in answers) == [200] * 3 + [429] * 7
        assert figures(sim) == {"in_flight": 0, "peak": 3, "accepted": 3, "rejected": 7}
        async with http.get("/_sim/stats") as r:
            assert (await r.json())["concurrency"]["m"] == {"in_flight": 0, "peak": 3, "accepted": 3, "rejected": 7}
        assert [r["status"] for r in sim.requests()].count(429) == 7

    with_gated_simulator(body)


def test_anthropic_streams_hold_their_slot_until_the_end() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession, gate: asyncio.Event) -> None:
        async with http.put("/_sim/models/m", json={"max_concurrency": 3, "tokens_per_s": 100}) as r:
            assert r.status == 200 and (await r.json())["max_concurrency"] == 3
        streams: list[aiohttp.ClientResponse] = []
        rejected = []
        for _ in range(10):
            r = await http.post("/v1/messages", json={**MESSAGE, "stream": True}, headers=ANTHROPIC_HEADERS)
            if r.status == 200:
                await r.content.readline()  # the stream has begun; it now waits on the gate
                streams.append(r)
            else:
                rejected.append((r.status, {k.lower(): v for k, v in r.headers.items()}, await r.json()))
                r.release()
        assert len(streams) == 3 and len(rejected) == 7
        for status, headers, error in rejected:
            assert status == 429 and error["error"]["type"] == "rate_limit_error"
            assert headers["retry-after"] == "1" and headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert figures(sim) == {"in_flight": 3, "peak": 3, "accepted": 3, "rejected": 7}
        gate.set()
        for r in streams:
            assert b"message_stop" in await r.read()
            r.release()
        await until(lambda: figures(sim)["in_flight"] == 0)
        assert figures(sim) == {"in_flight": 0, "peak": 3, "accepted": 3, "rejected": 7}

    with_gated_simulator(body)


def test_client_going_away_mid_stream_frees_its_slot() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession, gate: asyncio.Event) -> None:
        sim.set_behaviour("m", max_concurrency=1, tokens_per_s=100)
        r = await http.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=OPENAI_HEADERS)
        assert r.status == 200
        await r.content.readline()
        status, _, _ = await post(http, "/v1/chat/completions", {**CHAT, "stream": True}, OPENAI_HEADERS)
        assert status == 429 and figures(sim)["in_flight"] == 1
        r.close()  # drop the connection mid-stream
        await until(lambda: figures(sim)["in_flight"] == 0)
        gate.set()
        status, _, raw = await post(http, "/v1/chat/completions", {**CHAT, "stream": True}, OPENAI_HEADERS)
        assert status == 200 and raw.rstrip().endswith(b"data: [DONE]")
        assert figures(sim) == {"in_flight": 0, "peak": 1, "accepted": 2, "rejected": 1}

    with_gated_simulator(body)


def test_every_provider_api_is_limited() -> None:
    calls: list[tuple[str, dict[str, Any], dict[str, str], str]] = [
        ("/v1/chat/completions", CHAT, OPENAI_HEADERS, "m"),
        ("/v1/embeddings", {"model": "e", "input": "hi"}, OPENAI_HEADERS, "e"),
        ("/v1/messages", MESSAGE, ANTHROPIC_HEADERS, "m"),
        ("/v1beta/models/g:generateContent", {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
         {"x-goog-api-key": "k"}, "g"),
        ("/openai/deployments/d/chat/completions?api-version=2024-10-21", {"messages": CHAT["messages"]},
         {"api-key": "k"}, "d"),
    ]

    async def body(sim: Simulator, http: aiohttp.ClientSession, gate: asyncio.Event) -> None:
        for path, payload, headers, model in calls:
            sim.reset()
            sim.set_behaviour(model, max_concurrency=1, hang=True)
            held = asyncio.create_task(post(http, path, payload, headers))
            await until(lambda m=model: figures(sim, m).get("in_flight") == 1)  # type: ignore[misc]
            status, answer_headers, _ = await post(http, path, payload, headers)
            assert status == 429, path
            assert "retry-after" in answer_headers or path.startswith("/v1beta"), path
            held.cancel()
            await until(lambda m=model: figures(sim, m).get("in_flight") == 0)  # type: ignore[misc]
            assert figures(sim, model) == {"in_flight": 0, "peak": 1, "accepted": 1, "rejected": 1}

    with_gated_simulator(body)


def test_reset_and_delete_clear_the_figures() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession, gate: asyncio.Event) -> None:
        gate.set()
        for model in ("a", "b"):
            status, _, _ = await post(http, "/v1/chat/completions", {**CHAT, "model": model}, OPENAI_HEADERS)
            assert status == 200
        assert figures(sim, "a") == {"in_flight": 0, "peak": 1, "accepted": 1, "rejected": 0}
        async with http.put("/_sim/models/a", json={"max_concurrency": 0}) as r:
            assert r.status == 400 and "max_concurrency" in (await r.json())["problems"][0]
        sim.set_behaviour("a", max_concurrency=2)
        async with http.delete("/_sim/models/a") as r:
            assert r.status == 200
        assert set(sim.stats()["concurrency"]) == {"b"}
        async with http.post("/_sim/reset") as r:
            assert r.status == 200
        assert sim.stats()["concurrency"] == {}

    with_gated_simulator(body)
