"""Scripted per-model behaviour, recorded requests, and the injectable clock / sleep / RNG."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import random
import string
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, fields
from statistics import NormalDist
from typing import Any

from aiohttp import web

from simulator.aws_auth import AwsCredentials
from simulator.gcp import GcpAuth
from simulator.quota import Quota, QuotaView

MAX_RECORDS = 1000
UNANSWERED = web.RequestKey("sim_unanswered", bool)
STREAM_STATUS = web.RequestKey("sim_stream_status", int)
SLOT = web.RequestKey("sim_slot", str)
QUOTA = web.RequestKey("sim_quota", QuotaView)
WILDCARD = "*"
# Scripted faults of successful answers (`Behaviour.fault`; produced by `simulator.faults`).
FAULTS = ("html", "invalid_json", "cut", "stall", "reset")

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


@dataclass
class Behaviour:
    """How the simulator answers for one model.

    ttft_ms: delay of a successful answer: before its first byte when streaming, else before the
        whole answer (which also waits for the paced tokens). Error answers are immediate.
    ttft_ms_per_ktok: added to `ttft_ms` per 1,000 prompt tokens (prefill time); 0 = none.
    ttft_sigma: per-request log-normal spread of that delay: it is multiplied by exp(sigma · z), z a
        standard normal draw keyed by the simulator's seed, the model and the request body (the same
        request to the same model waits the same in every run: runs compared on one trace share their
        luck), so `ttft_ms` stays the median; 0 = every request waits exactly (default).
    tokens_per_s: pacing between streamed tokens; 0 = no pacing.
    output_tokens: length of a text reply before limits and stop sequences (its median when spread).
    output_tokens_sigma: per-request log-normal spread of that length: `output_tokens` × exp(sigma ·
        z), z a standard normal keyed by the model and the last user text (`textgen.reply_length`),
        so models can answer the same requests at different lengths; 0 = exactly `output_tokens`.
    status: fixed HTTP status to answer every request with (None = normal answers).
    error_rate / error_status: fraction of requests answered with `error_status` (seeded RNG).
    retry_after_s: `retry-after` (and rate-limit reset) on 429 and 503 answers.
    hang: accept the request and never answer until the client goes away or the server stops.
    stream_error_after: a streamed answer breaks off after this many content deltas with an
        in-stream error of `error_status` in the provider's format (None = streams complete).
    fault / fault_after: a successful answer that fails to deliver (see `faults`): `html`,
        `invalid_json`, `cut`, `stall` or `reset`; stream faults strike after `fault_after`
        content deltas (None = no fault).
    max_concurrency: requests of this model in flight at once (from acceptance until the answer,
        streamed or not, is sent or the client goes away); one more is answered at once with the
        provider's 429 and rate-limit headers, never queued (None = unlimited).
    request_limit / request_window_s: at most `request_limit` accepted requests of this model per
        fixed window of `request_window_s` seconds, windows aligned on the epoch of the simulator's
        clock (see `quota`; under `*` each model has its own count). One more is answered at once
        with the provider's 429, `retry-after` = whole seconds until the window resets (rounded up,
        at least 1), and OpenAI, Azure and Anthropic answers report the quota in their rate-limit
        headers (None = unlimited; those headers then carry fixed figures).
    capabilities: what the model can do, in the gateway config's words: `tools`, `images` and
        `embeddings` are enforced (a request using one the model lacks is refused as its provider
        refuses it), `json` and `reasoning` are accepted; None = from the model's name (see
        `simulator.capabilities`).
    """

    ttft_ms: float = 0
    ttft_ms_per_ktok: float = 0
    ttft_sigma: float = 0
    tokens_per_s: float = 0
    output_tokens: int = 12
    output_tokens_sigma: float = 0
    status: int | None = None
    error_rate: float = 0.0
    error_status: int = 500
    retry_after_s: float = 1
    hang: bool = False
    stream_error_after: int | None = None
    fault: str | None = None
    fault_after: int = 2
    max_concurrency: int | None = None
    request_limit: int | None = None
    request_window_s: float = 60
    capabilities: list[str] | None = None


@dataclass
class Concurrency:
    """One model's requests in flight now, the most at once since the last reset, and how many
    were accepted / rejected (429) for `max_concurrency` since then."""

    in_flight: int = 0
    peak: int = 0
    accepted: int = 0
    rejected: int = 0


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "ttft_ms": (int, float), "ttft_ms_per_ktok": (int, float), "ttft_sigma": (int, float), "tokens_per_s": (int, float), "output_tokens": (int,),
    "output_tokens_sigma": (int, float),
    "status": (int, type(None)), "error_rate": (int, float), "error_status": (int,),
    "retry_after_s": (int, float), "hang": (bool,), "stream_error_after": (int, type(None)),
    "fault": (str, type(None)), "fault_after": (int,),
    "max_concurrency": (int, type(None)), "request_limit": (int, type(None)), "request_window_s": (int, float),
    "capabilities": (list, type(None)),
}
# What `Behaviour.capabilities` may name: the gateway config's capabilities.
CAPABILITIES = ("tools", "images", "json", "reasoning", "embeddings", "fim")


def validate_patch(patch: Any) -> list[str]:
    """Problems of a behaviour patch given to `PUT /_sim/models/{model}`."""
    if not isinstance(patch, dict):
        return ["body: must be a JSON object"]
    problems: list[str] = []
    names = {f.name for f in fields(Behaviour)}
    for key, value in patch.items():
        if key not in names:
            problems.append(f"{key}: unknown field (known: {', '.join(sorted(names))})")
            continue
        allowed = _FIELD_TYPES[key]
        if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
            problems.append(f"{key}: wrong type")
            continue
        number: Any = value
        if key == "error_rate" and not 0 <= number <= 1:
            problems.append("error_rate: must be between 0 and 1")
        elif key in ("status", "error_status") and number is not None and not 100 <= number <= 599:
            problems.append(f"{key}: must be an HTTP status")
        elif key == "fault" and number is not None and number not in FAULTS:
            problems.append(f"fault: must be one of {', '.join(FAULTS)} or null")
        elif key in ("ttft_ms", "ttft_ms_per_ktok", "ttft_sigma", "tokens_per_s", "output_tokens", "output_tokens_sigma",
                     "retry_after_s",
                     "stream_error_after", "fault_after") and (
                number is not None and number < 0):
            problems.append(f"{key}: must not be negative")
        elif key == "max_concurrency" and number is not None and number < 1:
            problems.append("max_concurrency: must be at least 1")
        elif key == "request_limit" and number is not None and number < 0:
            problems.append("request_limit: must not be negative (0 refuses every request, null = unlimited)")
        elif key == "request_window_s" and not (math.isfinite(number) and number > 0):
            problems.append("request_window_s: must be a positive number of seconds")
        elif key == "capabilities" and number is not None and any(c not in CAPABILITIES for c in number):
            problems.append(f"capabilities: each must be one of {', '.join(CAPABILITIES)}")
    return problems


class BehaviourStore:
    """Behaviour patches per model; `*` applies to every model under the model's own patch."""

    def __init__(self) -> None:
        self._patches: dict[str, dict[str, Any]] = {}

    def update(self, model: str, patch: dict[str, Any]) -> Behaviour:
        self._patches.setdefault(model, {}).update(patch)
        return self.get(model)

    def get(self, model: str) -> Behaviour:
        merged = {**self._patches.get(WILDCARD, {}), **self._patches.get(model, {})}
        return Behaviour(**merged)

    def delete(self, model: str) -> bool:
        return self._patches.pop(model, None) is not None

    def reset(self) -> None:
        self._patches.clear()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {model: asdict(self.get(model)) for model in self._patches}

    def models(self) -> list[str]:
        return [m for m in self._patches if m != WILDCARD]


class SimState:
    """Everything a request handler needs besides the request itself.

    `gcp` (service accounts, issued OAuth tokens) and `aws` (SigV4 credentials) are configuration:
    `reset` keeps them, but zeroes the token counters and restores the token lifetime.
    """

    def __init__(self, api_keys: list[str] | None = None, *, seed: int = 0,
                 clock: Clock | None = None, sleep: Sleep | None = None) -> None:
        self.api_keys = set(api_keys) if api_keys is not None else None
        self.gcp = GcpAuth()
        self.aws = AwsCredentials()
        self.behaviours = BehaviourStore()
        self.records: deque[dict[str, Any]] = deque(maxlen=MAX_RECORDS)
        self.seen_models: dict[str, None] = {}
        self.seed = seed
        self.rng = random.Random(seed)
        self.clock: Clock = clock or time.time
        self.sleep: Sleep = sleep or asyncio.sleep
        self.stopping = asyncio.Event()
        self.concurrency: dict[str, Concurrency] = {}
        self.quotas: dict[str, Quota] = {}

    def reset(self) -> None:
        self.behaviours.reset()
        self.reset_concurrency()
        self.quotas.clear()
        self.records.clear()
        self.seen_models.clear()
        self.rng = random.Random(self.seed)
        self.gcp.reset_counters()

    def key_accepted(self, key: str | None) -> bool:
        if not key:
            return False
        return self.api_keys is None or key in self.api_keys

    def behaviour(self, model: str) -> Behaviour:
        self.seen_models.setdefault(model, None)
        return self.behaviours.get(model)

    def injected_status(self, behaviour: Behaviour) -> int | None:
        """The error status this request gets from the behaviour, if any."""
        if behaviour.status is not None:
            return behaviour.status
        if behaviour.error_rate > 0 and self.rng.random() < behaviour.error_rate:
            return behaviour.error_status
        return None

    def admission(self, behaviour: Behaviour, model: str, request: web.Request) -> int | None:
        """The error status this request gets, if any: injected, else 429 when the model's quota
        window is full (`request_limit`), else 429 above `max_concurrency`. None = accepted: it uses
        one request of the quota and holds one of the model's slots until `release`.

        With a `request_limit`, `request[QUOTA]` is what the answer reports of the quota, whatever
        the outcome."""
        now = self.clock()
        limit = behaviour.request_limit
        quota: Quota | None = None
        if limit is not None:
            quota = self.quotas.setdefault(model, Quota())
            quota.roll(now, behaviour.request_window_s)
            request[QUOTA] = quota.view(limit, now)
        status = self.injected_status(behaviour)
        if status is not None:
            return status
        if quota is not None and limit is not None and quota.used >= limit:
            quota.rejected += 1
            request[QUOTA] = quota.view(limit, now, exhausted=True)
            return 429
        figures = self.concurrency.setdefault(model, Concurrency())
        if behaviour.max_concurrency is not None and figures.in_flight >= behaviour.max_concurrency:
            figures.rejected += 1
            return 429
        figures.in_flight += 1
        figures.accepted += 1
        figures.peak = max(figures.peak, figures.in_flight)
        request[SLOT] = model
        if quota is not None and limit is not None:
            quota.used += 1
            request[QUOTA] = quota.view(limit, now)
        return None

    def retry_after_s(self, behaviour: Behaviour, request: web.Request) -> float:
        """Seconds a 429 or 503 answer to `request` asks the client to wait: until its quota window
        resets when the quota refused it, else the behaviour's `retry_after_s`."""
        quota = request.get(QUOTA)
        return quota.retry_after_s if quota is not None and quota.exhausted else behaviour.retry_after_s

    def quota_figures(self) -> dict[str, dict[str, Any]]:
        """Per model with a quota set or counted since the last reset: `Quota.figures` now."""
        now = self.clock()
        names = [*self.quotas, *(m for m in [*self.behaviours.models(), *self.seen_models]
                                 if self.behaviours.get(m).request_limit is not None)]
        result = {}
        for name in dict.fromkeys(names):
            behaviour = self.behaviours.get(name)
            quota = self.quotas.get(name, Quota())
            result[name] = quota.figures(behaviour.request_limit, behaviour.request_window_s, now)
        return result

    def reset_quota(self, model: str) -> None:
        """Forget `model`'s quota count and refusals."""
        self.quotas.pop(model, None)

    def release(self, request: web.Request) -> None:
        """Free the slot `request` holds, if any (its answer is sent or its client gone)."""
        model = request.get(SLOT)
        if model is None:
            return
        del request[SLOT]
        figures = self.concurrency.setdefault(model, Concurrency())
        figures.in_flight = max(0, figures.in_flight - 1)

    def reset_concurrency(self, model: str | None = None) -> None:
        """Zero the figures of `model` (None = every model); requests still in flight stay counted."""
        for name in [model] if model is not None else list(self.concurrency):
            figures = self.concurrency.get(name)
            if figures is None:
                continue
            if figures.in_flight:
                self.concurrency[name] = Concurrency(in_flight=figures.in_flight, peak=figures.in_flight)
            else:
                del self.concurrency[name]

    def random_id(self, length: int, alphabet: str = string.ascii_letters + string.digits) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(length))

    async def hang(self, request: web.Request) -> None:
        """Return once the client has gone away or the simulator is stopping."""
        while not self.stopping.is_set():
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 0.05)

    def latency_draw(self, model: str, key: bytes) -> float:
        """A standard normal draw fixed by the seed, the model and `key` (the request body)."""
        h = hashlib.blake2b(key, digest_size=8, key=f"{self.seed}\0{model}".encode()[:64]).digest()
        return NormalDist().inv_cdf((int.from_bytes(h, "big") + 0.5) / 2.0**64)

    def first_delay_s(self, behaviour: Behaviour, model: str = "", key: bytes = b"", prompt_tokens: int = 0) -> float:
        """This request's delay before its first byte, seconds: `ttft_ms` plus prefill for
        `prompt_tokens`, spread by `ttft_sigma` (see `Behaviour`)."""
        ms = behaviour.ttft_ms + behaviour.ttft_ms_per_ktok * prompt_tokens / 1000
        if behaviour.ttft_sigma > 0 and ms > 0:
            ms *= math.exp(behaviour.ttft_sigma * self.latency_draw(model, key))
        return ms / 1000

    async def wait_first(self, behaviour: Behaviour, model: str = "", key: bytes = b"",
                         prompt_tokens: int = 0) -> None:
        """The delay before a streamed answer's first byte (`model`, `key`: see `latency_draw`)."""
        delay = self.first_delay_s(behaviour, model, key, prompt_tokens)
        if delay > 0:
            await self.sleep(delay)

    async def wait_token(self, behaviour: Behaviour) -> None:
        if behaviour.tokens_per_s > 0:
            await self.sleep(1 / behaviour.tokens_per_s)

    async def wait_whole(self, behaviour: Behaviour, tokens: int, model: str = "", key: bytes = b"",
                         prompt_tokens: int = 0) -> None:
        """The delay of a non-streamed answer: the first-byte delay plus the paced generation of `tokens`."""
        delay = self.first_delay_s(behaviour, model, key, prompt_tokens)
        if behaviour.tokens_per_s > 0:
            delay += max(0, tokens - 1) / behaviour.tokens_per_s
        if delay > 0:
            await self.sleep(delay)
