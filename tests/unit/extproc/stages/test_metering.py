"""`extproc.stages.metering`: what a request is charged against its tenant's limits — the
reservation at admission (tokens and micro-dollars) and the spend trued up as the answer arrives."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from extproc.stages import metering
from extproc.stages.request import ANTHROPIC_MESSAGES, OPENAI_CHAT, OPENAI_EMBEDDINGS, ClientRequest
from extproc.translate.base import Usage
from tests.unit.extproc.stages.support import client, dep, priced

HELLO = [{"role": "user", "content": "Say hello."}]
GPT, CLAUDE = dep("gpt"), dep("claude")


def sized(api: str, nbytes: int, **body: Any) -> ClientRequest:
    """A request of exactly `nbytes` bytes (so its prompt estimate is nbytes // 4)."""
    raw = orjson.dumps({"model": "cheap", **body})
    assert len(raw) <= nbytes
    return client(api, raw + b" " * (nbytes - len(raw)))


# (api, body fields, chain as (input $/Mtok, output $/Mtok, max output tokens)) →
#   (reserve_tokens, reserve_usd); every request is 1000 bytes: a 250-token prompt estimate.
RESERVATIONS: dict[str, tuple[str, dict[str, Any], list[tuple[float, float, int]], int, int]] = {
    "client-max": (OPENAI_CHAT, {"messages": HELLO, "max_tokens": 100}, [(0.15, 0.6, 4096), (1.0, 5.0, 2048)],
                   250 + 100, 250 * 1 + 100 * 5),
    "max-completion-tokens": (OPENAI_CHAT, {"messages": HELLO, "max_completion_tokens": 10, "max_tokens": 100},
                              [(1.0, 5.0, 2048)], 250 + 10, 250 + 50),
    "no-client-max-takes-the-largest-cap": (OPENAI_CHAT, {"messages": HELLO}, [(0.15, 0.6, 4096), (1.0, 5.0, 2048)],
                                            250 + 4096, 250 * 1 + 4096 * 5),
    "max-tokens-0-is-none": (OPENAI_CHAT, {"messages": HELLO, "max_tokens": 0}, [(1.0, 5.0, 2048), (0.1, 0.1, 8192)],
                             250 + 8192, 250 + 8192 * 5),
    "anthropic": (ANTHROPIC_MESSAGES, {"messages": HELLO, "max_tokens": 64}, [(3.0, 15.0, 8192)],
                  250 + 64, 250 * 3 + 64 * 15),
    "embeddings-no-output": (OPENAI_EMBEDDINGS, {"input": "x", "max_tokens": 100}, [(0.02, 0.0, 4096)],
                             250, 5),
    # The dearest input price and the dearest output price, even from different candidates.
    "dearest-each": (OPENAI_CHAT, {"messages": HELLO, "max_tokens": 100}, [(5.0, 1.0, 4096), (1.0, 5.0, 4096)],
                     350, 250 * 5 + 100 * 5),
    "rounded-up": (OPENAI_CHAT, {"messages": HELLO, "max_tokens": 1}, [(0.001, 0.001, 4096)], 251, 1),
    "free": (OPENAI_CHAT, {"messages": HELLO, "max_tokens": 1}, [(0.0, 0.0, 4096)], 251, 0),
    "capped-at-1000-dollars": (OPENAI_CHAT, {"messages": HELLO}, [(1_000_000.0, 1_000_000.0, 4096)],
                               250 + 4096, 10**9),
}


@pytest.mark.parametrize("case", list(RESERVATIONS))
def test_reservation(case: str) -> None:
    api, body, prices, tokens, usd = RESERVATIONS[case]
    chain = [priced(d, i, o, m) for d, (i, o, m) in zip([GPT, CLAUDE, GPT], prices, strict=False)]
    req = sized(api, 1000, **body)
    assert req.est_input_tokens == 250
    assert metering.reservation(req, chain, "acme", "batch") == {
        "tenant": "acme", "model": "cheap", "priority": "batch",
        "reserve_tokens": str(tokens), "reserve_usd": str(usd),
        # Until the answer says otherwise the prompt is what was spent, at the primary's price.
        "usage_tokens": "250", "usage_usd": str(math.ceil(250 * prices[0][0])),
    }


@pytest.mark.parametrize(("prompt", "completion", "tokens", "usd"), [
    (0, 0, "0", "0"), (12, 9, "21", str(12 * 1 + 9 * 5)), (1, 0, "1", "1"), (1_000_000, 1000, "1001000", "1005000"),
])
def test_usage_fields_at_the_deployments_prices(prompt: int, completion: int, tokens: str, usd: str) -> None:
    d = priced(CLAUDE, 1.0, 5.0)
    assert metering.usage_fields(d, prompt, completion) == {"usage_tokens": tokens, "usage_usd": usd}


@pytest.mark.parametrize(("usage", "events", "tokens", "usd"), [
    # No usage from the provider: the prompt estimate and one token per event seen.
    (None, 0, 250, 250),
    (None, 7, 257, 250 + 7 * 5),
    (Usage(), 7, 257, 250 + 7 * 5),
    # The provider's usage, once it reports any, replaces the estimate.
    (Usage(prompt_tokens=12, completion_tokens=9), 7, 21, 12 + 9 * 5),
    (Usage(prompt_tokens=12), 7, 12, 12),
    (Usage(completion_tokens=3), 0, 3, 15),
], ids=["nothing-yet", "events-only", "empty-usage", "usage", "prompt-only", "completion-only"])
def test_spent(usage: Usage | None, events: int, tokens: int, usd: int) -> None:
    d = priced(CLAUDE, 1.0, 5.0)
    assert metering.spent(d, usage, 250, events) == {"usage_tokens": str(tokens), "usage_usd": str(usd)}


@pytest.mark.parametrize(("chunk", "events"), [
    (b"", 0),
    (b'data: {"a":1}\n\n', 1),
    (b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n', 3),
    (b"event: content_block_delta\ndata: {}\n\nevent: ping\ndata: {}\n\n", 2),
    (b'{"partial": "no event yet', 0),
    # AWS event stream (Bedrock): binary frames with an :event-type header each.
    (b"\x00\x00\x00\x5f\x00\x00\x00\x4b\x0b:event-type\x07\x00\x05chunk" * 2, 2),
])
def test_events_in(chunk: bytes, events: int) -> None:
    assert metering.events_in(chunk) == events
