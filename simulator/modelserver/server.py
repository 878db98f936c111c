"""The simulated model server's HTTP face: an OpenAI-compatible API in front of one `Engine`.

Routes (vLLM's): `POST /v1/chat/completions`, `POST /v1/completions` (JSON or SSE; `stream_options.
include_usage` adds the usage chunk), `GET /v1/models`, `GET /metrics` (vLLM or SGLang names, see
`metrics`), `GET /health` (200, empty). Any API key is accepted (vLLM without `--api-key`).
Requests are validated against the `openai` SDK's request types; unknown top-level fields are
ignored as vLLM ignores them. Errors use OpenAI's shape with vLLM's types: 400 `BadRequestError`
(bad JSON, bad fields, a prompt plus `max_tokens` beyond `max_model_len`, `n` > 1), 404
`NotFoundError` (unknown model).

Tokens: the simulator's token rule (`simulator.textgen`: every ``\\w+`` word and every punctuation
mark is a token, whitespace is not). The prompt is the token sequence of every message's text (string
content and `text` parts) in order, or of the completion prompt; `usage.prompt_tokens` is its length
and its full 16-token blocks are what the prefix cache hashes. Output: exactly `max_tokens` (or
`max_completion_tokens`) tokens, finish reason `length`; without a limit a length drawn from the
prompt (log-normal, median 250) with finish reason `stop`. The text is words of
`textgen.VOCABULARY` picked from a CRC of the prompt, so the same prompt always gets the same text.
A stream sends the first token at once and then a chunk every `stream_interval` tokens (vLLM's
`--stream-interval`), the last with `finish_reason`.

Control (for tests; not vLLM's): `POST /sim/speed {"speed": 1.5}` (> 0, multiplies throughput),
`POST /sim/fault {"mode": "none"|"metrics-500"|"metrics-hang"|"down"}` (`down`: every other path
drops the connection without answering), `GET /sim/state` (running, waiting, kv usage, speed, fault).
Requests may carry `x-sim-prefix-id`; the server ignores it (prefix reuse is found from the text).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import zlib
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Literal

import orjson
from aiohttp import web

from simulator.common import ClientGone, parse_json_body, write
from simulator.modelserver.engine import Engine, EngineConfig, Sequence_
from simulator.modelserver.kvcache import chain_hashes
from simulator.modelserver.metrics import sglang_metrics, use_sglang_buckets, vllm_metrics
from simulator.openai_checks import problems_error, semantic_problems
from simulator.textgen import TOKEN_RE, VOCABULARY

Flavor = Literal["vllm", "sglang"]
FAULTS = ("none", "metrics-500", "metrics-hang", "down")
MODEL = "sim-llama-8b"
DEFAULT_OUTPUT_MEDIAN = 250


@dataclass(frozen=True)
class ModelServerSpec:
    """One simulated server. `speed` multiplies every throughput (1.0 = the base figures below).

    Base figures (speed 1.0): a step costs `base_step_s` + 1/`decode_tokens_per_s` per decoding
    request + prefill tokens / `prefill_tokens_per_s`; at most `max_num_seqs` running requests,
    `max_num_batched_tokens` tokens per step, `kv_blocks` blocks of `block_size` tokens."""

    name: str = "sim-0"
    speed: float = 1.0
    flavor: Flavor = "vllm"
    seed: int = 0
    model: str = MODEL
    # The engine's capacity figures default as `EngineConfig`'s.
    max_num_seqs: int = EngineConfig.max_num_seqs
    kv_blocks: int = EngineConfig.kv_blocks
    block_size: int = EngineConfig.block_size
    max_num_batched_tokens: int = EngineConfig.max_num_batched_tokens
    max_model_len: int = EngineConfig.max_model_len
    prefill_tokens_per_s: float = EngineConfig.prefill_tokens_per_s
    decode_tokens_per_s: float = 280.0
    base_step_s: float = EngineConfig.base_step_s
    stream_interval: int = 8

    def engine_config(self) -> EngineConfig:
        return EngineConfig(max_num_seqs=self.max_num_seqs, kv_blocks=self.kv_blocks, block_size=self.block_size,
                            max_num_batched_tokens=self.max_num_batched_tokens, max_model_len=self.max_model_len,
                            prefill_tokens_per_s=self.prefill_tokens_per_s, base_step_s=self.base_step_s,
                            per_seq_s=1.0 / self.decode_tokens_per_s, speed=self.speed)


def prompt_tokens_of(texts: list[str]) -> list[str]:
    """The prompt's tokens by the simulator's rule, over `texts` in order."""
    out: list[str] = []
    for text in texts:
        out.extend(TOKEN_RE.findall(text))
    return out


def _message_texts(messages: list[dict[str, Any]]) -> list[str]:
    texts: list[str] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return texts


def default_output_tokens(tokens: list[str]) -> int:
    """Length of an unlimited answer: log-normal (median 250, sigma 0.6) from the prompt's CRC."""
    crc = zlib.crc32(" ".join(tokens[:64]).encode())
    z = NormalDist().inv_cdf((crc + 0.5) / 2 ** 32)
    return max(1, round(DEFAULT_OUTPUT_MEDIAN * math.exp(0.6 * z)))


def output_words(tokens: list[str], n: int) -> list[str]:
    """`n` deterministic output pieces (each one token; all but the first lead with a space)."""
    crc = zlib.crc32(" ".join(tokens[-64:]).encode())
    size = len(VOCABULARY)
    first, stride = crc % size, 1 + (crc >> 8) % (size - 1)
    return [("" if i == 0 else " ") + VOCABULARY[(first + i * stride) % size] for i in range(n)]


def _error(status: int, message: str, param: str | None = None) -> web.Response:
    kind = {400: "BadRequestError", 404: "NotFoundError"}.get(status, "InternalServerError")
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _known_field_problems(problems: list[str]) -> list[str]:
    """`problems` without unknown top-level fields (vLLM ignores those)."""
    return [p for p in problems if not (p.endswith(": unknown field") and "." not in p.split(":", 1)[0]
                                        and "[" not in p.split(":", 1)[0])]


@dataclass
class _Exchange:
    seq: Sequence_
    tokens: list[str]
    stream: bool
    event: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0


class ModelServer:
    """One server: engine, engine loop, fault switch and the aiohttp app. Lives on one event loop."""

    def __init__(self, spec: ModelServerSpec) -> None:
        self.spec = spec
        self.engine = Engine(spec.engine_config())
        if spec.flavor == "sglang":
            use_sglang_buckets(self.engine)
        elif spec.flavor != "vllm":
            raise ValueError(f"flavor: must be vllm or sglang, not {spec.flavor!r}")
        self.fault = "none"
        self.created = time.time()
        self._exposition: tuple[int, bytes] = (-1, b"")
        self._fault_cleared = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ids = 0
        self.app = web.Application(middlewares=[self._down])
        self.app.router.add_post("/v1/chat/completions", self.chat)
        self.app.router.add_post("/v1/completions", self.completions)
        self.app.router.add_get("/v1/models", self.models)
        self.app.router.add_get("/metrics", self.metrics)
        self.app.router.add_get("/health", self.health)
        self.app.router.add_post("/sim/speed", self.set_speed_route)
        self.app.router.add_post("/sim/fault", self.set_fault_route)
        self.app.router.add_get("/sim/state", self.state)
        self.app.on_startup.append(self._start_loop)
        self.app.on_cleanup.append(self._stop_loop)

    # -- engine loop ----------------------------------------------------------------------------

    async def _start_loop(self, _app: web.Application) -> None:
        self._task = asyncio.create_task(self._run(), name=f"engine-{self.spec.name}")

    async def _stop_loop(self, _app: web.Application) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        target = loop.time()
        while True:
            step = self.engine.schedule()
            if step is None:
                self._wake.clear()
                await self._wake.wait()
                target = loop.time()
                continue
            target = max(target, loop.time() - 0.05) + step.duration
            await asyncio.sleep(max(0.0, target - loop.time()))
            for seq in self.engine.complete(step, loop.time()):
                exchange = seq.owner
                if not isinstance(exchange, _Exchange):
                    continue
                if seq.done or exchange.stream and (
                        seq.generated == 1 or seq.generated - exchange.sent >= self.spec.stream_interval):
                    exchange.event.set()

    def set_speed(self, speed: float) -> None:
        if not speed > 0 or not math.isfinite(speed):
            raise ValueError("speed: must be a positive number")
        self.engine.speed = speed

    def set_fault(self, mode: str) -> None:
        if mode not in FAULTS:
            raise ValueError(f"mode: must be one of {', '.join(FAULTS)}")
        self.fault = mode
        if mode == "none":
            self._fault_cleared.set()
            self._fault_cleared = asyncio.Event()

    # -- routes ---------------------------------------------------------------------------------

    @web.middleware
    async def _down(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.fault == "down" and not request.path.startswith("/sim/"):
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=503)
        return await handler(request)

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def models(self, request: web.Request) -> web.Response:
        data = [{"id": self.spec.model, "object": "model", "created": 1_700_000_000, "owned_by": "vllm",
                 "root": self.spec.model, "parent": None, "max_model_len": self.spec.max_model_len}]
        return web.json_response({"object": "list", "data": data})

    async def metrics(self, request: web.Request) -> web.Response:
        if self.fault == "metrics-500":
            return web.Response(status=500, text="Internal Server Error")
        if self.fault == "metrics-hang":
            await self._fault_cleared.wait()
        if self._exposition[0] != self.engine.version:
            render = sglang_metrics if self.spec.flavor == "sglang" else vllm_metrics
            self._exposition = (self.engine.version, render(self.engine, self.spec.model, self.created).encode())
        return web.Response(body=self._exposition[1],
                            headers={"content-type": "text/plain; version=0.0.4; charset=utf-8"})

    async def state(self, request: web.Request) -> web.Response:
        e = self.engine
        return web.json_response({"name": self.spec.name, "speed": e.speed, "fault": self.fault,
                                  "running": len(e.running), "waiting": len(e.waiting),
                                  "kv_cache_usage": e.kv.usage(), "kv_blocks_used": e.kv.used_blocks,
                                  "prefix_hits": e.stats.prefix_hits, "prefix_queries": e.stats.prefix_queries})

    async def set_speed_route(self, request: web.Request) -> web.Response:
        body, problem = await parse_json_body(request)
        speed = body.get("speed") if isinstance(body, dict) else None
        if problem or isinstance(speed, bool) or not isinstance(speed, int | float):
            return _error(400, "body must be {\"speed\": <number > 0>}", "speed")
        try:
            self.set_speed(float(speed))
        except ValueError as exc:
            return _error(400, str(exc), "speed")
        return web.json_response({"speed": self.engine.speed})

    async def set_fault_route(self, request: web.Request) -> web.Response:
        body, problem = await parse_json_body(request)
        mode = body.get("mode") if isinstance(body, dict) else None
        try:
            if problem or not isinstance(mode, str):
                raise ValueError(f"mode: must be one of {', '.join(FAULTS)}")
            self.set_fault(mode)
        except ValueError as exc:
            return _error(400, str(exc), "mode")
        return web.json_response({"mode": self.fault})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        from simulator.validate import openai_chat_request_problems

        body, problem = await parse_json_body(request)
        if problem:
            return _error(400, f"We could not parse the JSON body of your request: {problem}")
        problems = _known_field_problems(openai_chat_request_problems(body))
        if not problems:
            problems = semantic_problems(body)
        if problems:
            return _vllm_problems(problems)
        tokens = prompt_tokens_of(_message_texts(body["messages"]))
        limit = body.get("max_completion_tokens")
        if limit is None:
            limit = body.get("max_tokens")
        return await self._serve(request, body, tokens, limit, "chat")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        from simulator.completions_api import completions_request_problems

        body, problem = await parse_json_body(request)
        if problem:
            return _error(400, f"We could not parse the JSON body of your request: {problem}")
        problems = _known_field_problems(completions_request_problems(body))
        if not problems and body.get("stream_options") is not None and body.get("stream") is not True:
            problems = ["stream_options: only allowed when 'stream' is enabled"]
        if not problems and body.get("max_tokens") is not None and body["max_tokens"] < 1:
            problems = ["max_tokens: must be at least 1"]
        if problems:
            return _vllm_problems(problems)
        prompt = body["prompt"]
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            return _error(400, "prompt: the simulated server takes one text prompt", "prompt")
        limit = body.get("max_tokens")
        return await self._serve(request, body, prompt_tokens_of([prompt]), 16 if limit is None else limit,
                                 "text")

    async def _serve(self, request: web.Request, body: dict[str, Any], tokens: list[str], limit: int | None,
                     kind: Literal["chat", "text"]) -> web.StreamResponse:
        if body["model"] != self.spec.model:
            return _error(404, f"The model `{body['model']}` does not exist.", "model")
        if (body.get("n") or 1) != 1:
            return _error(400, "n: the simulated server answers one choice (n = 1)", "n")
        if not tokens:
            return _error(400, "The prompt is empty.", "messages" if kind == "chat" else "prompt")
        finish = "length"
        if limit is None:
            limit, finish = default_output_tokens(tokens), "stop"
        refusal = self.engine.refusal(len(tokens), limit)
        if refusal is not None:
            return _error(400, refusal)
        loop = asyncio.get_running_loop()
        self._ids += 1
        prefix = "chatcmpl-" if kind == "chat" else "cmpl-"
        seq_id = f"{prefix}{self.spec.name}-{self._ids:08x}"
        seq = Sequence_(seq_id, len(tokens), chain_hashes(tokens, self.spec.block_size), limit, loop.time(),
                        finish)
        exchange = _Exchange(seq, tokens, body.get("stream") is True)
        seq.owner = exchange
        self.engine.submit(seq)
        self._wake.set()
        created = int(time.time())
        try:
            if body.get("stream") is True:
                return await self._stream(request, body, exchange, kind, created)
            while not seq.done:
                exchange.event.clear()
                await exchange.event.wait()
        finally:
            if not seq.done:
                self.engine.abort(seq)
        text = "".join(output_words(tokens, seq.generated))
        usage = _usage(seq)
        if kind == "chat":
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text, "refusal": None,
                                                              "tool_calls": []},
                                      "logprobs": None, "finish_reason": finish, "stop_reason": None}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None}
            obj = "text_completion"
        result = {"id": seq.id, "object": obj, "created": created, "model": self.spec.model, "choices": [choice],
                  "usage": usage}
        return web.Response(body=orjson.dumps(result), content_type="application/json")

    async def _stream(self, request: web.Request, body: dict[str, Any], exchange: _Exchange,
                      kind: Literal["chat", "text"], created: int) -> web.StreamResponse:
        seq = exchange.seq
        include_usage = (body.get("stream_options") or {}).get("include_usage") is True
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
        head = orjson.dumps({"id": seq.id, "object": obj, "created": created, "model": self.spec.model})[:-1]
        tail = b',"usage":null}' if include_usage else b"}"

        def chunk(choice: dict[str, Any]) -> bytes:
            return b"data: " + head + b',"choices":[' + orjson.dumps(choice) + b"]" + tail + b"\n\n"

        response = web.StreamResponse(status=200, headers={"content-type": "text/event-stream",
                                                           "cache-control": "no-cache"})
        await response.prepare(request)
        words = output_words(exchange.tokens, seq.max_tokens)
        try:
            if kind == "chat":
                await write(response, chunk({"index": 0, "delta": {"role": "assistant", "content": ""},
                                             "logprobs": None, "finish_reason": None}))
            while True:
                exchange.event.clear()
                if seq.generated == exchange.sent and not seq.done:
                    await exchange.event.wait()
                upto = seq.generated
                piece = "".join(words[exchange.sent:upto])
                exchange.sent = upto
                finish = seq.finish_reason if seq.done else None
                if kind == "chat":
                    data = chunk({"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": finish})
                else:
                    data = chunk({"index": 0, "text": piece, "logprobs": None, "finish_reason": finish})
                if seq.done and include_usage:
                    data += (b"data: " + head + b',"choices":[],"usage":' + orjson.dumps(_usage(seq)) + b"}\n\n")
                if seq.done:
                    data += b"data: [DONE]\n\n"
                await write(response, data)
                if seq.done:
                    break
            await response.write_eof()
        except ClientGone:
            pass
        return response


def _usage(seq: Sequence_) -> dict[str, Any]:
    return {"prompt_tokens": seq.prompt_len, "completion_tokens": seq.generated,
            "total_tokens": seq.prompt_len + seq.generated,
            "prompt_tokens_details": {"cached_tokens": seq.cached_tokens}}


def _vllm_problems(problems: list[str]) -> web.Response:
    """OpenAI's 400 for validation problems, typed as vLLM types it."""
    response = problems_error(problems, {})
    payload = orjson.loads(response.body)  # type: ignore[arg-type]
    payload["error"]["type"] = "BadRequestError"
    return web.Response(status=400, body=orjson.dumps(payload), content_type="application/json")
