"""OpenAI Responses (`POST /v1/responses`) through the real Envoy when the provider fails, with the
official `openai` SDK's `client.responses.create` as the client, plain and `stream=True`, for
passthrough deployments (an `openai` and an `azure-openai` provider) and a translated one (an
`anthropic` provider behind the Responses client API):

    provider does                  whole answer                 streamed answer
    html / invalid_json (200)      502 api_error                502 api_error, before any event
    cut (clean early end)          502 api_error                200 whose stream ends with an error
                                                                the SDK raises (api_error)
    stall                          504 timeout_error            200 whose stream ends with a
                                                                timeout_error within the idle timeout
    reset                          502 api_error                the connection is reset
    in-stream error event          —                            passthrough: OpenAI's `error` event,
                                                                as the SDK yields it; translated: an
                                                                error the SDK raises
    hang (no headers)              504                          504
    429 / 503                      the same status              the same status
    500                            502 (the README: 5xx → 502)  502

every error in OpenAI's format (the SDK raises `openai.APIStatusError` with the gateway's message, or
`openai.APIError` for an error inside the stream), nothing waiting past the provider's idle timeout,
and no stack trace or key in what the client reads. The simulator's Responses route is checked as
an oracle first, without the gateway. The words of the 504 for a hang are a known gateway bug
(strict xfail below).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import ResponseErrorEvent

from tests.integration.conftest import PROVIDER_KEY, Gateway, Simulator, fault_providers, running_gateway, sha

KEY = "sk-it-responses-faults"
IDLE_S = 1.0  # every provider's cluster.idle_timeout: how long a stall or hang lasts
PROVIDERS = {"oa": "openai", "az": "azure-openai", "an": "anthropic"}  # provider name → its type
SECRETS = ("Traceback", PROVIDER_KEY, KEY)


def faults_config(sim: Simulator) -> dict[str, Any]:
    providers = fault_providers(sim, PROVIDERS, IDLE_S)
    models = [{"name": f"r-{p}", "provider": p, "upstream_model": f"r-{p}-up", "max_output_tokens": 1024}
              for p in PROVIDERS]
    return {"providers": providers, "models": models,
            "tenants": [{"name": "faults", "api_key_sha256": [sha(KEY)], "models": ["*"]}]}


@pytest.fixture(scope="module")
def gw(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(simulator, tmp_path_factory.mktemp("gw-responses-faults"), faults_config(simulator)) as g:
        yield g


@dataclass
class Outcome:
    """How a Responses request ended for the SDK. `kind`: `answer` (a complete response), `status`
    (an HTTP error status), `stream_error` (an error inside a 200 stream: raised by the SDK, or an
    `error` event it yielded), `transport` (the connection broke)."""

    kind: str
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    error: dict[str, Any] = field(default_factory=dict)  # OpenAI's error object (or the error event)
    text: str = ""  # output text received before the end
    events: list[str] = field(default_factory=list)  # the stream's event types
    seconds: float = 0.0


def ask(gw: Gateway, model: str, stream: bool) -> Outcome:
    start = time.monotonic()
    out = _ask(gw, model, stream)
    out.seconds = time.monotonic() - start
    return out


def _ask(gw: Gateway, model: str, stream: bool) -> Outcome:
    c = openai.OpenAI(base_url=gw.base_url, api_key=KEY, max_retries=0, timeout=10)
    text, headers, kinds = "", {}, []
    try:
        if not stream:
            raw = c.responses.with_raw_response.create(model=model, input="Say hello.", store=False)
            done = raw.parse()
            return Outcome("answer", headers=dict(raw.headers), text=done.output_text)
        events = c.responses.create(model=model, input="Say hello.", store=False, stream=True)
        headers = dict(events.response.headers)
        for event in events:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                text += event.delta
            if event.type == "error":  # the provider's own error event, passed on
                assert not any(s in event.message for s in SECRETS), event
                return Outcome("stream_error", 200, headers, event.to_dict(), text, kinds)
        return Outcome("answer", headers=headers, text=text, events=kinds)
    except openai.APIStatusError as e:
        assert not any(s in e.response.text for s in SECRETS), e.response.text
        return Outcome("status", e.status_code, dict(e.response.headers),
                       e.body if isinstance(e.body, dict) else {}, events=kinds)
    except (openai.APIConnectionError, httpx.TransportError):  # before APIError: it is one
        return Outcome("transport", 0, headers, text=text, events=kinds)
    except openai.APIError as e:  # an error the gateway wrote into the stream
        body = e.body if isinstance(e.body, dict) else {}
        assert not any(s in str(body) for s in SECRETS), body
        return Outcome("stream_error", 200, headers, body, text, kinds)


def _kind(provider: str) -> str:
    return {"openai": "passthrough", "azure-openai": "azure-passthrough"}.get(PROVIDERS[provider], "translated")


def _passthrough(provider: str) -> bool:
    return PROVIDERS[provider] in ("openai", "azure-openai")


CELLS = list(itertools.product(PROVIDERS, (False, True)))


def cell_id(cell: tuple[str, bool]) -> str:
    provider, stream = cell
    return f"{_kind(provider)}-{'stream' if stream else 'whole'}"


# -- the simulator as an oracle -----------------------------------------------------------------

def _sim_post(simulator: Simulator, body: dict[str, Any], **kw: Any) -> httpx.Response:
    return httpx.post(simulator.url + "/v1/responses", json=body,
                      headers={"authorization": f"Bearer {PROVIDER_KEY}"}, **kw)


def _events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """The (event name, data) of each event of a Responses stream."""
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_the_simulators_responses_route_produces_each_fault(simulator: Simulator, sim: Simulator) -> None:
    body: dict[str, Any] = {"model": "oracle", "input": "Say hello.", "store": False}
    streamed = {**body, "stream": True}
    sim.behave("oracle", stream_error_after=2, error_status=500)
    r = _sim_post(simulator, streamed)
    events = _events(r.text)
    assert r.status_code == 200 and [k for k, _ in events].count("response.output_text.delta") == 2
    kind, last = events[-1]
    assert kind == "error" and last["sequence_number"] == len(events) - 1, events[-1]
    error = ResponseErrorEvent.model_validate(last)  # the SDK's own type, strictly
    assert (error.code, error.param) == ("server_error", None) and error.message
    assert not any(k.startswith("response.completed") for k, _ in events)
    sim.behave("oracle", stream_error_after=None, error_status=429, status=429)
    r = _sim_post(simulator, body)
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded" and r.headers["retry-after"]
    sim.behave("oracle", status=None, fault="html")
    r = _sim_post(simulator, streamed)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    sim.behave("oracle", fault="invalid_json")
    r = _sim_post(simulator, body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    with pytest.raises(ValueError):
        r.json()
    sim.behave("oracle", fault="cut", fault_after=2)
    r = _sim_post(simulator, streamed)
    kinds = [k for k, _ in _events(r.text)]
    assert r.status_code == 200 and kinds.count("response.output_text.delta") == 2, kinds
    assert kinds[-1] == "response.output_text.delta"
    sim.behave("oracle", fault="reset")
    with pytest.raises(httpx.RemoteProtocolError):
        _sim_post(simulator, streamed)
    sim.behave("oracle", fault="stall")
    with pytest.raises(httpx.ReadTimeout):
        _sim_post(simulator, streamed, timeout=0.5)
    sim.behave("oracle", fault=None, hang=True)
    with pytest.raises(httpx.ReadTimeout):
        _sim_post(simulator, body, timeout=0.5)
    sim.behave("oracle", hang=False)
    r = _sim_post(simulator, body)
    assert r.status_code == 200 and r.json()["output"][0]["content"][0]["text"].startswith("Simulated")


# -- through the gateway ------------------------------------------------------------------------

def _aim(sim: Simulator, provider: str, **behaviour: Any) -> str:
    sim.behave(f"r-{provider}-up", **behaviour)
    return f"r-{provider}"


def _from_the_gateway(out: Outcome, provider: str) -> None:
    """An answer the gateway made for the provider that failed, in OpenAI's format."""
    assert out.headers["x-interlock-provider"] == provider, out
    assert out.headers["x-interlock-model"] == f"r-{provider}", out


@pytest.mark.parametrize("fault", ["html", "invalid_json", "cut"])
@pytest.mark.parametrize("cell", CELLS, ids=cell_id)
def test_a_broken_success_ends_in_its_documented_answer(gw: Gateway, sim: Simulator, cell: tuple[str, bool],
                                                        fault: str) -> None:
    provider, stream = cell
    out = ask(gw, _aim(sim, provider, fault=fault, fault_after=2), stream)
    if fault == "cut" and stream:
        assert out.kind == "stream_error", out
        assert out.text.startswith("Simulated"), out  # what came before the cut was delivered
        assert out.error["type"] == "api_error" and "ended before" in out.error["message"], out
        assert "response.completed" not in out.events, out
    else:
        assert (out.kind, out.status, out.error.get("type")) == ("status", 502, "api_error"), out
        assert out.error["message"] and "<html" not in out.error["message"].lower(), out
    _from_the_gateway(out, provider)


def test_stalls_hangs_and_resets_end_within_the_idle_timeout(gw: Gateway, sim: Simulator) -> None:
    """All at once, per behaviour: each waits for the provider's idle timeout, so they share it."""
    for behaviour in ({"fault": "stall", "fault_after": 2}, {"hang": True}, {"fault": "reset", "fault_after": 2}):
        sim.reset()
        targets = [_aim(sim, p, **behaviour) for p, _ in CELLS]
        with ThreadPoolExecutor(len(CELLS)) as pool:
            outcomes = list(pool.map(lambda a: ask(gw, a[0], a[1][1]), zip(targets, CELLS, strict=True)))
        for (provider, stream), out in zip(CELLS, outcomes, strict=True):
            where = (behaviour, provider, stream, out)
            if "hang" in behaviour:  # Envoy's own reply (see the xfail below for its words)
                assert (out.kind, out.status) == ("status", 504) and out.error.get("message"), where
                assert out.seconds < IDLE_S + 3, where
            elif behaviour["fault"] == "stall" and not stream:
                # Envoy's own reply: nothing reached the client before the idle timeout.
                assert (out.kind, out.status, out.error.get("type")) == ("status", 504, "timeout_error"), where
                assert out.seconds < IDLE_S + 3, where
            elif behaviour["fault"] == "stall":
                # The router stage ends it just before Envoy's idle timeout would reset it.
                assert out.kind == "stream_error" and out.text.startswith("Simulated"), where
                assert out.error["type"] == "timeout_error" and provider in out.error["message"], where
                assert out.seconds < IDLE_S + 2, where
            elif stream:
                assert out.kind == "transport", where
            else:
                assert (out.kind, out.status, out.error.get("type")) == ("status", 502, "api_error"), where


@pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: _kind(p))
def test_the_providers_error_event_reaches_the_client(gw: Gateway, sim: Simulator, provider: str) -> None:
    """Passthrough: OpenAI's own `error` event, as the SDK types it; translated: Anthropic's error
    event becomes an OpenAI error the SDK raises. Either way after what came before it, and last."""
    out = ask(gw, _aim(sim, provider, stream_error_after=2, error_status=500), True)
    assert out.kind == "stream_error", out
    assert out.text.startswith("Simulated") and "response.completed" not in out.events, out
    if _passthrough(provider):
        assert out.error["type"] == "error" and out.error["code"] == "server_error", out
        assert out.error["sequence_number"] == len(out.events) - 1, out  # numbered on from the stream's
    else:
        assert out.error["type"] == "api_error" and "status 500" in out.error["message"], out
    _from_the_gateway(out, provider)


@pytest.mark.parametrize("status", [429, 500, 503])
@pytest.mark.parametrize("cell", CELLS, ids=cell_id)
def test_a_providers_error_status_reaches_the_client_in_openais_format(
        gw: Gateway, sim: Simulator, cell: tuple[str, bool], status: int) -> None:
    provider, stream = cell
    out = ask(gw, _aim(sim, provider, status=status, retry_after_s=1), stream)
    assert (out.kind, out.status) == ("status", 502 if status == 500 else status), out  # README: 5xx → 502
    assert out.error.get("message") and out.error.get("type"), out
    if status == 429:
        assert out.error["type"] in ("requests", "rate_limit_error", "tokens"), out
        assert int(out.headers["retry-after"]) >= 1, out
    _from_the_gateway(out, provider)


@pytest.mark.parametrize("cell", CELLS, ids=cell_id)
def test_a_healthy_answer_is_untouched(gw: Gateway, sim: Simulator, cell: tuple[str, bool]) -> None:
    provider, stream = cell
    out = ask(gw, f"r-{provider}", stream)
    assert out.kind == "answer" and out.text.startswith("Simulated"), out
    if stream:
        assert out.events[-1] == "response.completed", out
    _from_the_gateway(out, provider)


@pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: _kind(p))
def test_a_hanging_provider_is_reported_as_a_timeout(gw: Gateway, sim: Simulator, provider: str) -> None:
    """A provider that takes the request and never answers ends in Envoy's timeout, a 504: the
    client is told it timed out (failed before: "could not be reached", `api_error`, as if the
    connection had been refused)."""
    out = ask(gw, _aim(sim, provider, hang=True), False)
    assert (out.kind, out.status) == ("status", 504), out
    assert out.error["type"] == "timeout_error" and "could not be reached" not in out.error["message"], out
