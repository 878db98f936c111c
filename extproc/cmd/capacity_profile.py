"""`interlock capacity profile`'s measurements: closed-loop streamed chat completions against live
OpenAI-compatible endpoints, and what their `/metrics` show.

Per endpoint: a warm-up request (not measured), a prefill sweep (one request at a time, prompts of
128 tokens up to the longest `--prompt-tokens`, three each), then for every prompt length ×
concurrency that many clients sending requests back to back for `--duration-s` seconds while
`/metrics` is polled every 100 ms. The result is the profile JSON `routing.capacity` documents.
Errors are `ProfileError`s whose text is for the operator (which endpoint, what went wrong).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from typing import Any

import aiohttp

from routing import capacity as cap

_WORDS = ("sky", "red", "cat", "map", "sun", "box", "pen", "cup", "oak", "fog", "ink", "jar", "key", "log",
          "mud", "net", "owl", "pig", "rug", "tea", "urn", "van", "wig", "yak", "zip", "ant", "bee", "cow")


class ProfileError(Exception):
    """An endpoint that cannot be profiled; the text is for the operator."""


def _prompt(tokens: int, rng: random.Random) -> str:
    """About `tokens` tokens of unique text: 3-letter words (one token each by whitespace, by four
    characters a token and by common BPE vocabularies), led by a nonce so no prefix cache helps."""
    words = [f"q{rng.randrange(10**6):06d}"] + [rng.choice(_WORDS) for _ in range(max(tokens - 1, 0))]
    return " ".join(words)


def _base(url: str) -> str:
    url = url.rstrip("/")
    if url.endswith("/v1"):
        url = url[:-3]
    if not url.startswith(("http://", "https://")):
        url = "http://" + url
    return url


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"mean": round(sum(values) / len(values), 3), "p50": round(cap.quantile(values, 0.5) or 0.0, 3),
            "p90": round(cap.quantile(values, 0.9) or 0.0, 3)}


async def _models(http: aiohttp.ClientSession, base: str, api_key: str | None) -> list[str]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        async with http.get(f"{base}/v1/models", headers=headers) as resp:
            text = await resp.text()
            if resp.status != 200:
                raise ProfileError(f"{base}: GET /v1/models answered {resp.status}: {text[:200].strip()}")
            body = json.loads(text)
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        raise ProfileError(f"{base}: cannot reach the endpoint ({type(e).__name__}: {e or 'timeout'})") from None
    except ValueError:
        raise ProfileError(f"{base}: GET /v1/models did not answer JSON: not an OpenAI-compatible endpoint") from None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise ProfileError(f"{base}: GET /v1/models did not answer an OpenAI model list (no `data` array)")
    return [str(m.get("id")) for m in data if isinstance(m, dict) and m.get("id")]


async def _one(http: aiohttp.ClientSession, base: str, model: str, prompt: str, max_tokens: int,
               api_key: str | None, ignore_eos: bool) -> tuple[float, float | None, int, int]:
    """One streamed request → (TTFT s, TPOT s or None, prompt tokens, output tokens)."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}],
                            "max_tokens": max_tokens, "stream": True, "stream_options": {"include_usage": True},
                            "temperature": 0}
    if ignore_eos:
        body["ignore_eos"] = True
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    start = time.perf_counter()
    first = last = None
    usage: dict[str, Any] = {}
    buf = b""
    async with http.post(f"{base}/v1/chat/completions", json=body, headers=headers) as resp:
        if resp.status != 200:
            text = (await resp.text())[:300].strip()
            raise ProfileError(f"{base}: POST /v1/chat/completions answered {resp.status}: {text}")
        if "text/event-stream" not in resp.headers.get("content-type", ""):
            raise ProfileError(f"{base}: POST /v1/chat/completions with stream=true did not answer server-sent "
                               "events: not an OpenAI-compatible endpoint")
        async for data in resp.content.iter_any():
            now = time.perf_counter()
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    continue
                try:
                    chunk = json.loads(payload)
                except ValueError:
                    raise ProfileError(f"{base}: a stream event is not JSON: not an OpenAI-compatible "
                                       "endpoint") from None
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if delta.get("content") or delta.get("reasoning_content"):
                        first = now if first is None else first
                        last = now
                if isinstance(chunk.get("usage"), dict):
                    usage = chunk["usage"]
    if first is None or last is None:
        raise ProfileError(f"{base}: a streamed answer carried no content")
    if not isinstance(usage.get("prompt_tokens"), int) or not isinstance(usage.get("completion_tokens"), int):
        raise ProfileError(f"{base}: the stream carried no usage (stream_options.include_usage); the profile "
                           "needs the server's token counts")
    out = usage["completion_tokens"]
    tpot = (last - first) / (out - 1) if out > 1 else None
    return first - start, tpot, usage["prompt_tokens"], out


class _MetricsWatch:
    """Polls `/metrics` every 100 ms while a step runs; gives up quietly if the server has none."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http, self.base = http, base
        self.available: bool | None = None
        self.flavor: str | None = None
        self.block_size: int | None = None
        self.num_gpu_blocks: int | None = None
        self.reset()

    def reset(self) -> None:
        self.running_max = 0
        self.waiting_max = 0
        self.kv_max = 0.0

    async def sample(self) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        try:
            async with self.http.get(f"{self.base}/metrics", timeout=aiohttp.ClientTimeout(total=1)) as resp:
                if resp.status != 200:
                    self.available = False
                    return
                text = await resp.text()
            families = list(text_string_to_metric_families(text))
        except Exception:  # noqa: BLE001 — no usable /metrics: the profile goes without
            self.available = False
            return
        values: dict[str, float] = {}
        for fam in families:
            for s in fam.samples:
                if s.name in ("vllm:cache_config_info", "vllm:cache_config_info_info"):
                    try:
                        self.block_size = int(float(s.labels.get("block_size", "")))
                        self.num_gpu_blocks = int(float(s.labels.get("num_gpu_blocks", "")))
                    except ValueError:
                        pass
                elif s.name == "sglang:max_total_num_tokens":
                    self.block_size, self.num_gpu_blocks = 1, int(s.value)
                else:
                    values[s.name] = values.get(s.name, 0.0) + float(s.value)
        if "vllm:num_requests_running" in values:
            self.flavor = "vllm"
            running, waiting = values["vllm:num_requests_running"], values.get("vllm:num_requests_waiting", 0.0)
            kv = values.get("vllm:kv_cache_usage_perc", values.get("vllm:gpu_cache_usage_perc", 0.0))
        elif "sglang:num_running_reqs" in values:
            self.flavor = "sglang"
            running, waiting = values["sglang:num_running_reqs"], values.get("sglang:num_queue_reqs", 0.0)
            kv = values.get("sglang:token_usage", 0.0)
        else:
            self.available = False
            return
        self.available = True
        self.running_max = max(self.running_max, int(running))
        self.waiting_max = max(self.waiting_max, int(waiting))
        self.kv_max = max(self.kv_max, kv)

    async def watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set() and self.available is not False:
            await self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)


async def _step(http: aiohttp.ClientSession, base: str, model: str, concurrency: int, prompt_tokens: int,
                args: argparse.Namespace, rng: random.Random, watch: _MetricsWatch) -> dict[str, Any]:
    deadline = time.perf_counter() + args.duration_s
    results: list[tuple[float, float | None, int, int]] = []

    async def client() -> None:
        while time.perf_counter() < deadline:
            results.append(await _one(http, base, model, _prompt(prompt_tokens, rng), args.output_tokens,
                                      args.api_key, args.ignore_eos))

    stop = asyncio.Event()
    watch.reset()
    watcher = asyncio.create_task(watch.watch(stop))
    started = time.perf_counter()
    try:
        await asyncio.gather(*(client() for _ in range(concurrency)))
    finally:
        stop.set()
        await watcher
    elapsed = time.perf_counter() - started
    ttft = [r[0] * 1000 for r in results]
    tpot = [r[1] * 1000 for r in results if r[1] is not None]
    n = len(results)
    point: dict[str, Any] = {
        "concurrency": concurrency, "prompt_tokens_requested": prompt_tokens, "requests": n,
        "prompt_tokens": round(sum(r[2] for r in results) / n, 1) if n else 0,
        "output_tokens": round(sum(r[3] for r in results) / n, 1) if n else 0,
        "ttft_ms": _stats(ttft), "tpot_ms": _stats(tpot) or {"mean": 0.0, "p50": 0.0, "p90": 0.0},
        "output_tokens_per_s": round(sum(r[3] for r in results) / elapsed, 1),
        "requests_per_s": round(n / elapsed, 3), "seconds": round(elapsed, 2)}
    if watch.available:
        point["server"] = {"running_max": watch.running_max, "waiting_max": watch.waiting_max,
                           "kv_usage_max": round(watch.kv_max, 4)}
    return point


async def _profile_one(http: aiohttp.ClientSession, url: str, args: argparse.Namespace,
                       rng: random.Random) -> dict[str, Any]:
    base = _base(url)
    models = await _models(http, base, args.api_key)
    model = args.model or (models[0] if models else None)
    if model is None:
        raise ProfileError(f"{base}: GET /v1/models lists no model; name one with --model")
    if args.model and models and args.model not in models:
        raise ProfileError(f"{base}: model {args.model!r} is not served here (it serves: {', '.join(models[:5])})")
    try:  # the first request on a connection (and a cold server) is slower: not measured
        await _one(http, base, model, _prompt(16, rng), 2, args.api_key, args.ignore_eos)
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        raise ProfileError(f"{base}: the warm-up request failed ({type(e).__name__}: {e or 'timeout'})") from None
    prefill = await _prefill_sweep(http, base, model, args, rng)
    watch = _MetricsWatch(http, base)
    points = []
    slots = 0
    kv_max = 0.0
    for prompt in args.prompt_tokens:
        for conc in args.concurrency:
            try:
                p = await _step(http, base, model, conc, prompt, args, rng, watch)
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                raise ProfileError(f"{base}: a request failed at prompt {prompt} tokens, concurrency {conc} "
                                   f"({type(e).__name__}: {e or 'timeout'})") from None
            points.append(p)
            srv = p.get("server") or {}
            if srv and srv["running_max"] <= conc - 2 and srv["waiting_max"] >= 2 and srv["kv_usage_max"] < 0.9:
                # It never ran them all while several waited, with KV to spare: a slot limit (max_num_seqs);
                # one request between a client's answer and its next one is not.
                slots = srv["running_max"] if slots == 0 else min(slots, srv["running_max"])
            kv_max = max(kv_max, srv.get("kv_usage_max", 0.0))
            ttft, tpot = p["ttft_ms"] or {}, p["tpot_ms"]
            print(f"profile {base}: prompt {p['prompt_tokens']:.0f} tok, concurrency {conc}: {p['requests']} "
                  f"requests, TTFT p50 {ttft.get('p50', 0):.0f} ms p90 {ttft.get('p90', 0):.0f} ms, "
                  f"TPOT {tpot['mean']:.1f} ms, {p['output_tokens_per_s']:.0f} tok/s", file=sys.stderr, flush=True)
    metrics = None
    if watch.available:
        metrics = {"flavor": watch.flavor, "slots": slots or None, "block_size": watch.block_size,
                   "num_gpu_blocks": watch.num_gpu_blocks, "kv_usage_max": round(kv_max, 4)}
    return {"url": base, "model": model, "prefill": prefill, "points": points, "metrics": metrics}


SWEEP = (128, 256, 512, 768, 1024, 1536, 2048, 2560, 3072, 4096, 5120, 6144, 8192, 12288, 16384)


async def _prefill_sweep(http: aiohttp.ClientSession, base: str, model: str, args: argparse.Namespace,
                         rng: random.Random) -> list[dict[str, Any]]:
    """TTFT of one request at a time against prompt length (up to the longest `--prompt-tokens`), three
    requests each: the prefill rate and the step token budget (chunked prefill) show here."""
    lengths = sorted({n for n in SWEEP if n <= max(args.prompt_tokens)} | set(args.prompt_tokens))
    out: list[dict[str, Any]] = []
    for n in lengths:
        ttft, prompt = [], []
        try:
            for _ in range(3):
                t, _tpot, p_tokens, _ = await _one(http, base, model, _prompt(n, rng), 2, args.api_key,
                                                   args.ignore_eos)
                ttft.append(t * 1000)
                prompt.append(p_tokens)
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise ProfileError(f"{base}: a request failed at prompt {n} tokens, alone "
                               f"({type(e).__name__}: {e or 'timeout'})") from None
        out.append({"prompt_tokens": round(sum(prompt) / len(prompt), 1), "requests": len(ttft),
                    "ttft_ms": _stats(ttft)})
    stats = out[-1]["ttft_ms"] or {}
    print(f"profile {base}: prefill sweep, {len(out)} prompt lengths up to {out[-1]['prompt_tokens']:.0f} tok "
          f"(TTFT {stats.get('mean', 0):.0f} ms)", file=sys.stderr, flush=True)
    return out


async def profile_endpoints(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every `--endpoint` (one after the other, or all at once with `--parallel`); raises
    ProfileError."""
    timeout = aiohttp.ClientTimeout(total=args.timeout_s, sock_connect=min(args.timeout_s, 5.0))
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as http:
        if args.parallel:
            endpoints = list(await asyncio.gather(*(_profile_one(http, url, args, random.Random(f"{args.seed}:{i}"))
                                                    for i, url in enumerate(args.endpoint))))
        else:
            endpoints = [await _profile_one(http, url, args, random.Random(f"{args.seed}:{i}"))
                         for i, url in enumerate(args.endpoint)]
    return {"format": cap.PROFILE_FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "model": endpoints[0]["model"], "output_tokens_requested": args.output_tokens,
            "duration_s": args.duration_s, "endpoints": endpoints}
