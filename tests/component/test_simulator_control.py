"""The simulator's control API and scripted behaviours (status, rate limits, latency, hangs)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from simulator import Simulator, start

ROOT = Path(__file__).resolve().parents[2]
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
MESSAGE = {"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "hello"}]}
ANTHROPIC_HEADERS = {"x-api-key": "k", "anthropic-version": "2026-10-21"}


def with_simulator(test: Callable[[Simulator, aiohttp.ClientSession], Awaitable[None]], **options: Any) -> None:
    async def main() -> None:
        sim = await start(**options)
        try:
            async with aiohttp.ClientSession(base_url=sim.url) as http:
                await test(sim, http)
        finally:
            await sim.stop()

    asyncio.run(main())


def test_control_api_roundtrip() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        async with http.put("/_sim/models/org/m-1", json={"status": 503, "ttft_ms": 5}) as r:
            assert r.status == 200
            assert (await r.json())["status"] == 503 and (await r.json())["output_tokens"] == 12
        async with http.put("/_sim/models/org/m-1", json={"output_tokens": 3}) as r:
            assert (await r.json())["status"] == 503 and (await r.json())["output_tokens"] == 3
        async with http.put("/_sim/models/x", json={"stauts": 1, "error_rate": 2}) as r:
            assert r.status == 400
            problems = (await r.json())["problems"]
            assert problems[0].startswith("stauts: unknown field") and "error_rate" in problems[1]
        async with http.get("/_sim/models") as r:
            assert list(await r.json()) == ["org/m-1"]
        async with http.delete("/_sim/models/org/m-1") as r:
            assert r.status == 200
        async with http.delete("/_sim/models/org/m-1") as r:
            assert r.status == 404
        async with http.get("/_sim/health") as r:
            assert await r.json() == {"ok": True}

    with_simulator(body)


def test_recorded_requests() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        auth = {"Authorization": "Bearer k"}
        async with http.post("/v1/chat/completions", json=CHAT, headers=auth) as r:
            assert r.status == 200
        async with http.post("/v1/chat/completions", json={**CHAT, "bogus": 1}, headers=auth) as r:
            assert r.status == 400
        async with http.post("/v1/messages", data=b"{not json", headers=ANTHROPIC_HEADERS) as r:
            assert r.status == 400 and (await r.json())["type"] == "error"
        async with http.get("/v2/nothing", headers=auth) as r:
            assert r.status == 404
            assert (await r.json())["error"]["message"] == "Invalid URL (GET /v2/nothing)"
        async with http.get("/_sim/requests") as r:
            records = await r.json()
        assert [(x["path"], x["status"]) for x in records] == [
            ("/v1/chat/completions", 200), ("/v1/chat/completions", 400), ("/v1/messages", 400),
            ("/v2/nothing", 404)]
        assert records[0]["body"] == CHAT and records[0]["headers"]["authorization"] == "Bearer k"
        assert records[2]["body"] is None and records[0]["method"] == "POST"
        async with http.delete("/_sim/requests") as r:
            assert r.status == 200
        assert sim.requests() == []
        sim.set_behaviour("m", status=500)
        async with http.post("/_sim/reset") as r:
            assert r.status == 200
        assert sim.state.behaviours.snapshot() == {}

    with_simulator(body)


def test_fixed_statuses_in_provider_formats() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        sim.set_behaviour("m", status=503, retry_after_s=3)
        oa = openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="k", max_retries=0)
        with pytest.raises(openai.InternalServerError) as unavailable:
            await oa.chat.completions.create(**CHAT)  # type: ignore[call-overload]
        assert unavailable.value.status_code == 503
        assert unavailable.value.response.headers["retry-after"] == "3"
        sim.set_behaviour("m", status=529)
        an = anthropic.AsyncAnthropic(base_url=sim.url, api_key="k", max_retries=0)
        with pytest.raises(anthropic.OverloadedError) as overloaded:
            await an.messages.create(**MESSAGE)  # type: ignore[call-overload]
        assert overloaded.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
        sim.set_behaviour("m", status=404)
        with pytest.raises(anthropic.NotFoundError):
            await an.messages.create(**MESSAGE)  # type: ignore[call-overload]
        with pytest.raises(openai.NotFoundError) as missing:
            await oa.chat.completions.create(**CHAT)  # type: ignore[call-overload]
        assert missing.value.code == "model_not_found"
        await oa.close()
        await an.close()

    with_simulator(body)


def test_rate_limit_headers() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        sim.set_behaviour("m", status=429, retry_after_s=2)
        async with http.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer k"}) as r:
            assert r.status == 429
            assert (await r.json())["error"]["code"] == "rate_limit_exceeded"
            assert r.headers["retry-after"] == "2"
            assert r.headers["x-ratelimit-remaining-requests"] == "0"
            assert r.headers["x-ratelimit-reset-requests"] == "2s"
            for name in ("limit-requests", "limit-tokens", "remaining-tokens", "reset-tokens"):
                assert f"x-ratelimit-{name}" in r.headers
        async with http.post("/v1/messages", json=MESSAGE, headers=ANTHROPIC_HEADERS) as r:
            assert r.status == 429
            assert (await r.json())["error"]["type"] == "rate_limit_error"
            assert r.headers["retry-after"] == "2"
            assert r.headers["anthropic-ratelimit-requests-remaining"] == "0"
            assert r.headers["anthropic-ratelimit-tokens-reset"] == "2033-05-18T03:33:22Z"
            assert "anthropic-ratelimit-requests-limit" in r.headers
        sim.set_behaviour("m", status=None)
        async with http.post("/v1/messages", json=MESSAGE, headers=ANTHROPIC_HEADERS) as r:
            assert r.status == 200 and r.headers["anthropic-ratelimit-requests-remaining"] == "3999"

    with_simulator(body, clock=lambda: 2_000_000_000.0)


def test_error_rate_is_seeded() -> None:
    def statuses(seed: int) -> list[int]:
        seen: list[int] = []

        async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
            sim.set_behaviour("*", error_rate=0.5, error_status=502)
            for _ in range(20):
                async with http.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer k"}) as r:
                    seen.append(r.status)

        with_simulator(body, seed=seed)
        return seen

    first = statuses(7)
    assert first == statuses(7)
    assert set(first) == {200, 502}


def test_ttft_and_pacing_use_the_injected_sleep() -> None:
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        sim.set_behaviour("m", ttft_ms=250, tokens_per_s=100, output_tokens=5)
        async with http.post("/v1/chat/completions", json={**CHAT, "stream": True},
                             headers={"Authorization": "Bearer k"}) as r:
            await r.read()
        assert sleeps == [0.25, 0.01, 0.01, 0.01, 0.01]
        sleeps.clear()
        async with http.post("/v1/messages", json={**MESSAGE, "stream": True}, headers=ANTHROPIC_HEADERS) as r:
            await r.read()
        assert sleeps == [0.25, 0.01, 0.01, 0.01, 0.01]
        sleeps.clear()
        async with http.post("/v1/messages", json=MESSAGE, headers=ANTHROPIC_HEADERS) as r:
            await r.read()
        assert sleeps == [pytest.approx(0.29)]
        sleeps.clear()
        gemini = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}
        async with http.post("/v1beta/models/m:streamGenerateContent?alt=sse", json=gemini,
                             headers={"x-goog-api-key": "k"}) as r:
            assert (await r.read()).count(b"\r\n\r\n") == 5
        assert sleeps == [0.25, 0.01, 0.01, 0.01, 0.01]
        sleeps.clear()
        sim.set_behaviour("dep", ttft_ms=100)
        async with http.post("/openai/deployments/dep/embeddings?api-version=2024-10-21",
                             json={"input": "x"}, headers={"api-key": "k"}) as r:
            assert r.status == 200
        assert sleeps == [pytest.approx(0.1)]

    with_simulator(body, sleep=fake_sleep)


def test_ttft_prefill_and_spread() -> None:
    """`ttft_ms_per_ktok` adds prefill per prompt token; `ttft_sigma` spreads the delay log-normally
    around `ttft_ms`, drawn from (seed, model, request body): repeatable, and apart from error draws."""
    from simulator.openai_api import input_tokens

    def chat(i: int) -> dict[str, Any]:
        return {"model": "m", "messages": [{"role": "user", "content": f"request {i} " + "word " * 2000}]}

    prompt = input_tokens(chat(0))

    def run(seed: int, sigma: float, ids: range = range(40)) -> tuple[list[float], list[int]]:
        sleeps: list[float] = []
        statuses: list[int] = []

        async def fake_sleep(seconds: float) -> None:
            sleeps.append(seconds)

        async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
            sim.set_behaviour("m", ttft_ms=100, ttft_ms_per_ktok=50, ttft_sigma=sigma, error_rate=0.3)
            for i in ids:
                async with http.post("/v1/chat/completions", json=chat(i),
                                     headers={"Authorization": "Bearer k"}) as r:
                    statuses.append(r.status)
                    await r.read()

        with_simulator(body, seed=seed, sleep=fake_sleep)
        return sleeps, statuses

    fixed, fixed_statuses = run(3, 0)
    assert fixed and all(s == pytest.approx((100 + 50 * prompt / 1000) / 1000) for s in fixed)
    spread, statuses = run(3, 0.5)
    assert (spread, statuses) == run(3, 0.5)
    assert statuses == fixed_statuses  # latency draws do not disturb the error draws
    assert len(set(spread)) == len(spread) and spread != run(4, 0.5)[0]
    median = sorted(spread)[len(spread) // 2]
    assert 0.5 * fixed[0] < median < 2 * fixed[0] and max(spread) > 1.2 * fixed[0] > 1.2 * min(spread)
    same, _ = run(3, 0.5, range(5, 6))
    again, _ = run(3, 0.5, range(5, 6))
    assert same == again and len(same) in (0, 1)

    async def invalid(sim: Simulator, http: aiohttp.ClientSession) -> None:
        async with http.put("/_sim/models/m", json={"ttft_sigma": -1, "ttft_ms_per_ktok": "x"}) as r:
            assert r.status == 400
            assert [p.split(":")[0] for p in (await r.json())["problems"]] == ["ttft_sigma", "ttft_ms_per_ktok"]
        async with http.put("/_sim/models/m", json={}) as r:
            assert (await r.json())["ttft_sigma"] == 0 and (await r.json())["ttft_ms_per_ktok"] == 0

    with_simulator(invalid)


def test_ttft_spread_is_keyed_by_model_and_body() -> None:
    """Every provider format draws its spread from (model, body): the same request waits the same."""
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        sim.set_behaviour("*", ttft_ms=100, ttft_sigma=0.4, output_tokens=1)
        gemini = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}
        calls = [("/v1/chat/completions", {**CHAT, "stream": True}, {"Authorization": "Bearer k"}),
                 ("/v1/chat/completions", CHAT, {"Authorization": "Bearer k"}),
                 ("/v1/messages", {**MESSAGE, "stream": True}, ANTHROPIC_HEADERS),
                 ("/v1/messages", MESSAGE, ANTHROPIC_HEADERS),
                 ("/v1beta/models/m:streamGenerateContent?alt=sse", gemini, {"x-goog-api-key": "k"}),
                 ("/v1beta/models/m:generateContent", gemini, {"x-goog-api-key": "k"}),
                 ("/v1beta/models/other:generateContent", gemini, {"x-goog-api-key": "k"})]
        seen = []
        for path, payload, headers in calls:
            for _ in range(2):
                async with http.post(path, json=payload, headers=headers) as r:
                    assert r.status == 200, await r.text()
                    await r.read()
            assert len(sleeps) == 2 and sleeps[0] == sleeps[1] != 0.1
            seen.append(sleeps[0])
            sleeps.clear()
        assert seen[4] == seen[5]  # Gemini streams or not on the same body: the same request
        assert len(set(seen)) == len(seen) - 1

    with_simulator(body, sleep=fake_sleep)


def test_ttft_in_real_time() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        sim.set_behaviour("m", ttft_ms=200)
        oa = openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="k", max_retries=0)
        began = time.monotonic()
        stream = await oa.chat.completions.create(**CHAT, stream=True)  # type: ignore[call-overload]
        async for _ in stream:
            break
        assert time.monotonic() - began >= 0.2
        await stream.close()
        await oa.close()

    with_simulator(body)


def test_hang_until_the_client_goes_away() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        sim.set_behaviour("m", hang=True)
        an = anthropic.AsyncAnthropic(base_url=sim.url, api_key="k", max_retries=0, timeout=0.3)
        with pytest.raises(anthropic.APITimeoutError):
            await an.messages.create(**MESSAGE)  # type: ignore[call-overload]
        await an.close()
        assert sim.requests()[-1]["status"] is None
        task = asyncio.create_task(http.post("/v1/messages", json=MESSAGE, headers=ANTHROPIC_HEADERS))
        await asyncio.sleep(0.1)
        began = time.monotonic()
        await sim.stop()
        assert time.monotonic() - began < 2
        task.cancel()

    with_simulator(body)


def test_client_abandoning_a_stream_is_recorded() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        sim.set_behaviour("m", tokens_per_s=20, output_tokens=200)
        async with http.post("/v1/messages", json={**MESSAGE, "max_tokens": 500, "stream": True},
                             headers=ANTHROPIC_HEADERS) as r:
            assert b"message_start" in await r.content.readuntil(b"\n\n")
            r.close()
        for _ in range(50):
            if sim.requests()[-1]["status"] is not None:
                break
            await asyncio.sleep(0.02)
        assert sim.requests()[-1]["status"] == 200

    with_simulator(body)


def test_credentials_control_api() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        async with http.post("/_sim/aws/credentials", json={"access_key_id": "AKIA1", "secret_access_key": "s"}) as r:
            assert r.status == 201
        async with http.post("/_sim/aws/credentials", json={"access_key_id": "AKIA2"}) as r:
            assert r.status == 400 and (await r.json())["problems"] == ["secret_access_key: required string"]
        async with http.get("/_sim/aws/credentials") as r:
            assert "AKIA1" in (await r.json())["access_key_ids"]
        async with http.put("/_sim/gcp/oauth", json={"expires_in": 60}) as r:
            assert r.status == 200
        async with http.put("/_sim/gcp/oauth", json={"expires_in": "soon"}) as r:
            assert r.status == 400
        async with http.post("/_sim/gcp/service-accounts", json={"client_email": "a@b", "public_key_pem": "x"}) as r:
            assert r.status == 400 and "public_key_pem" in (await r.json())["problems"][0]
        async with http.get("/_sim/stats") as r:
            stats = await r.json()
            assert stats["gcp"] == {"token_requests": 0, "tokens_issued": 0, "tokens_valid": 0, "expires_in": 60}
        async with http.delete("/_sim/gcp/tokens") as r:
            assert (await r.json()) == {"revoked": 0}
        async with http.put("/_sim/models/m", json={"stream_error_after": -1}) as r:
            assert r.status == 400
        async with http.post("/_sim/reset") as r:
            assert r.status == 200
        assert sim.stats()["gcp"]["expires_in"] == 3600 and "AKIA1" in sim.state.aws.secrets

    with_simulator(body)


def test_anthropic_midstream_error() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        sim.set_behaviour("m", stream_error_after=1, error_status=529)
        async with http.post("/v1/messages", json={**MESSAGE, "stream": True}, headers=ANTHROPIC_HEADERS) as r:
            text = (await r.read()).decode()
        assert text.count("event: content_block_delta") == 1
        assert text.endswith('event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
                             '"message":"Overloaded"}}\n\n')

    with_simulator(body)


def test_run_serves_until_sigterm(tmp_path: Path) -> None:
    account = tmp_path / "sa.json"
    code = ("from simulator import run; run('127.0.0.1', 0, ['k'], "
            f"gcp_service_accounts=[{str(account)!r}], aws_credentials={{'AKIA9': 'secret'}})")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("simulator: listening on http://127.0.0.1:")
        url = line.strip().rsplit(" ", 1)[1]
        with openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0) as client:
            assert client.chat.completions.create(**CHAT).choices[0].message.content  # type: ignore[call-overload]
        info = json.loads(account.read_text())
        assert info["type"] == "service_account" and info["token_uri"] == url + "/token"
        with urllib.request.urlopen(url + "/_sim/gcp/service-accounts", timeout=5) as listed:
            assert json.loads(listed.read())[0]["client_email"] == info["client_email"]
        with urllib.request.urlopen(url + "/_sim/aws/credentials", timeout=5) as keys:
            assert "AKIA9" in json.loads(keys.read())["access_key_ids"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_answer_length_spread_per_model() -> None:
    """`output_tokens_sigma` spreads each model's answer length log-normally around its
    `output_tokens`, per (model, request): repeatable, capped by `max_tokens`, through every API."""

    def ask(i: int) -> dict[str, Any]:
        return {"messages": [{"role": "user", "content": f"question {i} about the gateway"}]}

    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        async with http.put("/_sim/models/long", json={"output_tokens": 300, "output_tokens_sigma": 0.4}) as r:
            assert r.status == 200 and (await r.json())["output_tokens_sigma"] == 0.4
        sim.set_behaviour("short", output_tokens=100, output_tokens_sigma=0.4)
        sim.set_behaviour("exact", output_tokens=100)
        oa = openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="k", max_retries=0)

        async def lengths(model: str, **extra: Any) -> list[int]:
            out = []
            for i in range(30):
                answer = await oa.chat.completions.create(model=model, **ask(i), **extra)  # type: ignore[call-overload]
                assert answer.usage is not None
                out.append(answer.usage.completion_tokens)
            return out

        long, short = await lengths("long"), await lengths("short")
        assert await lengths("long") == long  # the same request to the same model: the same length
        assert len(set(long)) > 20 and sorted(long)[15] in range(200, 450) and sorted(short)[15] in range(66, 150)
        assert 2 < sum(long) / sum(short) < 4.5
        assert await lengths("exact") == [100] * 30
        capped = await lengths("long", max_tokens=250)
        assert capped == [min(250, n) for n in long] and max(long) > 250
        an = anthropic.AsyncAnthropic(base_url=sim.url, api_key="k", max_retries=0)
        message = await an.messages.create(model="long", max_tokens=4000, **ask(3))  # type: ignore[call-overload]
        assert message.usage.output_tokens == long[3]  # the length depends on the request, not the API
        gemini = {"contents": [{"role": "user", "parts": [{"text": "question 4 about the gateway"}]}]}
        async with http.post("/v1beta/models/long:generateContent", json=gemini, headers={"x-goog-api-key": "k"}) as r:
            assert (await r.json())["usageMetadata"]["candidatesTokenCount"] == long[4]
        async with http.put("/_sim/models/long", json={"output_tokens_sigma": -0.1}) as r:
            assert r.status == 400 and (await r.json())["problems"] == ["output_tokens_sigma: must not be negative"]
        await oa.close()
        await an.close()

    with_simulator(body)
