"""Tiny stand-ins for vLLM servers whose `/metrics` a test dictates (so a test can load one
server, make its metrics fail or hang, and see the gateway's picks follow), each on its own
127.0.0.x address. They answer OpenAI chat completions with who they are, and record the
`x-gateway-destination-endpoint` list each request arrived with."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class StandIn:
    host: str
    port: int
    waiting: int = 0
    running: int = 0
    kv: float = 0.0
    metrics_status: int = 200  # != 200: /metrics fails with this status
    metrics_delay: float = 0.0  # seconds /metrics takes (a hanging scrape)
    chat_status: int = 200  # != 200: chat completions fail with this status (an overloaded server)
    chat_reset: bool = False  # chat completions: the connection is reset before any answer
    served: list[dict[str, Any]] = field(default_factory=list)
    runner: web.AppRunner | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def metrics_text(self) -> str:
        labels = '{engine="0",model_name="llama"}'
        return (f"# HELP vllm:num_requests_waiting Number of requests waiting.\n# TYPE vllm:num_requests_waiting gauge\n"
                f"vllm:num_requests_waiting{labels} {float(self.waiting)}\n"
                f"# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{labels} {float(self.running)}\n"
                f"# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{labels} {self.kv}\n"
                f'vllm:cache_config_info{{block_size="16",num_gpu_blocks="4096"}} 1.0\n')

    async def _metrics(self, request: web.Request) -> web.Response:
        if self.metrics_delay:
            await asyncio.sleep(self.metrics_delay)
        if self.metrics_status != 200:
            return web.Response(status=self.metrics_status, text="metrics broken")
        return web.Response(text=self.metrics_text(), content_type="text/plain")

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.served.append({"list": request.headers.get("x-gateway-destination-endpoint"), "body": body,
                            "authorization": request.headers.get("authorization")})
        if self.chat_reset:
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)  # never sent: the connection is gone
        if self.chat_status != 200:
            return web.json_response({"error": {"message": "overloaded", "type": "server_error", "code": None}},
                                     status=self.chat_status)
        text = f"served by {self.address}"
        return web.json_response({
            "id": "chatcmpl-standin", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/v1/chat/completions", self._chat)
        return app


class StandIns:
    """Servers on 127.0.0.<first>…, one event loop in a thread. `stop(i)` / `start(i)` take one
    down and up again (connection refused in between)."""

    def __init__(self, count: int, port: int, first: int = 61) -> None:
        self.servers = [StandIn(f"127.0.0.{first + i}", port) for i in range(count)]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        for i in range(count):
            self.start(i)

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def start(self, i: int) -> None:
        s = self.servers[i]

        async def go() -> None:
            s.runner = web.AppRunner(s.app(), access_log=None)
            await s.runner.setup()
            await web.TCPSite(s.runner, s.host, s.port).start()
        self._run(go())

    def stop(self, i: int) -> None:
        s = self.servers[i]
        if s.runner is not None:
            self._run(s.runner.cleanup())
            s.runner = None

    def reset(self) -> None:
        for s in self.servers:
            s.waiting, s.running, s.kv, s.metrics_status, s.metrics_delay, s.chat_status = 0, 0, 0.0, 200, 0.0, 200
            s.chat_reset = False
            s.served.clear()

    def by_address(self) -> dict[str, StandIn]:
        return {s.address: s for s in self.servers}

    def close(self) -> None:
        for i in range(len(self.servers)):
            self.stop(i)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
