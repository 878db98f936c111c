"""`extproc.stages.metering`: what a request is charged against its tenant's limits — the
reservation at admission (tokens and micro-dollars) and the spend trued up as the answer arrives."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from extproc import errors
from extproc.config.model import Tenant
from extproc.limits import Limit, Per, Unit
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
#   (reserve_tokens, reserve_usd); every request is 1000 bytes: a 250-token prompt estimate. The
#   reservation is what the request may spend on the deployment it is sent to first (the chain's
#   first): a fallback that answers instead is charged what it really spent by the true-up.
RESERVATIONS: dict[str, tuple[str, dict[str, Any], list[tuple[float, float, int]], int, int]] = {
    "client-max": (OPENAI_CHAT, {"messages": HELLO, "max_tokens": 100}, [(0.15, 0.6, 4096), (1.0, 5.0, 2048)],
                   250 + 100, math.ceil(250 * 0.15 + 100 * 0.6)),
    "max-completion-tokens": (OPENAI_CHAT, {"messages": HELLO, "max_completion_tokens": 10, "max_tokens": 100},
                              [(1.0, 5.0, 2048)], 250 + 10, 250 + 50),
    # Not the largest cap of the chain: a fallback's cap made a route's every request reserve it.
    "no-client-max-takes-the-primarys-cap": (OPENAI_CHAT, {"messages": HELLO}, [(0.15, 0.6, 4096), (1.0, 5.0, 8192)],
                                             250 + 4096, math.ceil(250 * 0.15 + 4096 * 0.6)),
    "max-tokens-0-is-none": (OPENAI_CHAT, {"messages": HELLO, "max_tokens": 0}, [(1.0, 5.0, 2048), (0.1, 0.1, 8192)],
                             250 + 2048, 250 + 2048 * 5),
    "client-max-above-the-cap": (OPENAI_CHAT, {"messages": HELLO, "max_tokens": 9000}, [(1.0, 5.0, 2048)],
                                 250 + 2048, 250 + 2048 * 5),
    "anthropic": (ANTHROPIC_MESSAGES, {"messages": HELLO, "max_tokens": 64}, [(3.0, 15.0, 8192)],
                  250 + 64, 250 * 3 + 64 * 15),
    "embeddings-no-output": (OPENAI_EMBEDDINGS, {"input": "x", "max_tokens": 100}, [(0.02, 0.0, 4096)],
                             250, 5),
    "the-primarys-prices": (OPENAI_CHAT, {"messages": HELLO, "max_tokens": 100}, [(5.0, 1.0, 4096), (1.0, 5.0, 4096)],
                            350, 250 * 5 + 100 * 1),
    "rounded-up": (OPENAI_CHAT, {"messages": HELLO, "max_tokens": 1}, [(0.001, 0.001, 4096)], 251, 1),
    "free": (OPENAI_CHAT, {"messages": HELLO, "max_tokens": 1}, [(0.0, 0.0, 4096)], 251, 0),
    "capped-at-1000-dollars": (OPENAI_CHAT, {"messages": HELLO}, [(1_000_000.0, 1_000_000.0, 4096)],
                               250 + 4096, 10**9),
}
ACME = Tenant("acme", ())


@pytest.mark.parametrize("case", list(RESERVATIONS))
def test_reservation(case: str) -> None:
    api, body, prices, tokens, usd = RESERVATIONS[case]
    chain = [priced(d, i, o, m) for d, (i, o, m) in zip([GPT, CLAUDE, GPT], prices, strict=False)]
    req = sized(api, 1000, **body)
    assert req.est_input_tokens == 250
    prompt_usd = math.ceil(250 * prices[0][0])
    assert metering.reservation(req, chain, ACME, "batch") == {
        "tenant": "acme", "model": "cheap", "priority": "batch",
        "reserve_tokens": str(tokens), "reserve_usd": str(usd),
        # The part known at admission: the rate-limit service shrinks a reservation no lower.
        "reserve_min_tokens": "250", "reserve_min_usd": str(min(prompt_usd, usd)),
        # Until the answer says otherwise the prompt is what was spent, at the primary's price.
        "usage_tokens": "250", "usage_usd": str(prompt_usd),
    }


def limited(*limits: tuple[str, str, float, dict[str, str]]) -> Tenant:
    return Tenant("acme", (), limits=tuple(Limit({"tenant": "acme", **keys}, Unit(unit), Per(per), amount)
                                          for unit, per, amount, keys in limits))


@pytest.mark.parametrize(("limits", "tokens", "usd"), [
    # 40,000 tokens a minute and a 65,536-token cap: the output part is cut to fit the window.
    ([("tokens", "minute", 40000, {})], 40000, 250 * 0.3 + 65536 * 2.5),
    # The smallest window of those the request matches; a limit of another model or class is not one.
    ([("tokens", "minute", 40000, {}), ("tokens", "day", 30000, {}), ("tokens", "minute", 500, {"model": "other"}),
      ("tokens", "minute", 500, {"priority": "batch"})], 30000, 250 * 0.3 + 65536 * 2.5),
    ([("usd", "day", 0.01, {})], 250 + 65536, 10_000),
    ([("tokens", "hour", 1000, {"model": "cheap", "priority": "default"}), ("requests", "second", 1, {})],
     1000, 250 * 0.3 + 65536 * 2.5),
])
def test_a_reservation_never_exceeds_a_whole_window(limits: Any, tokens: int, usd: float) -> None:
    d = priced(GPT, 0.3, 2.5, 65536)
    got = metering.reservation(sized(OPENAI_CHAT, 1000, messages=HELLO), [d], limited(*limits), "default")
    assert (got["reserve_tokens"], got["reserve_usd"]) == (str(tokens), str(math.ceil(usd)))
    assert (got["reserve_min_tokens"], got["reserve_min_usd"]) == ("250", str(math.ceil(250 * 0.3)))


def test_the_first_deployment_whose_prompt_fits_every_window() -> None:
    cheap, dear = priced(GPT, 1.0, 5.0), priced(CLAUDE, 100.0, 500.0)
    req = sized(OPENAI_CHAT, 4000, messages=HELLO)  # a 1,000-token prompt: $0.001 on cheap, $0.1 on dear
    assert metering.first_admissible([dear, cheap], req, ACME, "default") == 0  # no limits
    assert metering.first_admissible([dear, cheap], req, limited(("usd", "day", 0.05, {})), "default") == 1
    assert metering.first_admissible([dear, cheap], req, limited(("tokens", "hour", 1000, {})), "default") == 0
    # A limit of another class does not apply.
    assert metering.first_admissible([dear], req, limited(("usd", "day", 0.05, {"priority": "batch"})), "default") == 0


@pytest.mark.parametrize(("api", "body", "limits", "message", "param"), [
    (OPENAI_CHAT, {"messages": HELLO, "max_tokens": 50}, [("tokens", "hour", 999, {})],
     "The request can never be admitted: its prompt alone (about 1000 tokens, estimated) is more than this API "
     "key's limit of 999 tokens per hour, before the `max_tokens` of 50 it asks for. Shorten the prompt, or ask "
     "for a higher limit.", "messages"),
    (OPENAI_CHAT, {"messages": HELLO, "max_completion_tokens": 7}, [("tokens", "minute", 10, {"model": "cheap"})],
     "The request can never be admitted: its prompt alone (about 1000 tokens, estimated) is more than this API "
     "key's limit of 10 tokens per minute on model cheap, before the `max_completion_tokens` of 7 it asks for. "
     "Shorten the prompt, or ask for a higher limit.", "messages"),
    (ANTHROPIC_MESSAGES, {"messages": HELLO, "max_tokens": 64}, [("usd", "day", 0.0001, {"priority": "default"})],
     "The request can never be admitted: its prompt alone (about 1000 tokens, estimated, $0.001 at gpt's input "
     "price) is more than this API key's limit of $0.0001 per day for default requests, before the `max_tokens` "
     "of 64 it asks for. Shorten the prompt, or ask for a higher limit.", "messages"),
    (OPENAI_EMBEDDINGS, {"input": "x"}, [("tokens", "day", 1, {})],
     "The request can never be admitted: its prompt alone (about 1000 tokens, estimated) is more than this API "
     "key's limit of 1 token per day. Shorten the prompt, or ask for a higher limit.", "input"),
    (OPENAI_CHAT, {"messages": HELLO}, [("requests", "hour", 0, {})],
     "The request can never be admitted: this API key's limit of 0 requests per hour admits none.", None),
])
def test_a_prompt_over_a_whole_window_is_a_400_naming_the_limit(api: str, body: dict[str, Any], limits: Any,
                                                                 message: str, param: str | None) -> None:
    req = sized(api, 4000, **body)
    with pytest.raises(errors.BadRequest) as e:
        metering.first_admissible([priced(GPT, 1.0, 5.0), priced(CLAUDE, 2.0, 5.0)], req, limited(*limits), "default")
    assert (e.value.message, e.value.param, e.value.code) == (message, param, "rate_limit_window_too_small")


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
