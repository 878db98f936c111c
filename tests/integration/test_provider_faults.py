"""Provider faults and gateway refusals through the real Envoy (issue 11, points 6 and 8).

The provider-fault matrix: every fault of a *successful* answer the simulator scripts
(`Behaviour.fault`: an HTML page or invalid JSON with status 200, an answer cut before its end, a
stall, a connection reset) × both client APIs × passthrough (same API on both sides) and
translated × single model and route × stream or not, each ending in its documented answer:

    fault          whole answer                           streamed answer
    html           502 api_error                          502 api_error, before any event
    invalid_json   502 api_error                          502 api_error, before any event
    cut            502 api_error (the JSON is cut)        200 whose stream ends with an error event
    stall          504 timeout_error (Envoy's idle        200 whose stream ends with a timeout_error
                   timeout: the headers were held)        event just before the idle timeout (the
                                                          router stage's own timer: Envoy 1.40
                                                          tells the ext_proc nothing when it cuts)
    reset          502 api_error                          the connection is reset

every error in the client's API format, from the provider that answered (`x-interlock-provider`),
never a 200 whose body the SDK reads as an empty or truncated answer without an error.

Gateway refusals say so: the tenant's rate limit, the rate-limit service down with
`failure_mode: closed` (429 with Retry-After, not 502), and the gateway's own 400s carry
`x-interlock-provider: interlock`, and the access log line names the gateway, not a provider.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import free_port
from tests.integration.conftest import PROVIDER_KEY, Gateway, Simulator, running_gateway, sha

KEY = "sk-it-faults"
LIMITED = "sk-it-faults-limited"  # 2 requests an hour
GUARDED = "sk-it-faults-guarded"  # limits it never reaches: every request asks the rate-limit service
IDLE_S = 1.0  # every provider's cluster.idle_timeout: how long a stall lasts
PROVIDERS = {"oa": "openai", "an": "anthropic"}  # provider name → its API
CLIENTS = ("openai", "anthropic")
WHOLE_FAULTS = ("html", "invalid_json", "cut")  # end at once
SLOW_FAULTS = ("stall", "reset")
HELLO: Any = [{"role": "user", "content": "Say hello."}]
POLICY = {"kind": "objective", "minimize": "cost", "exploration": 0.0, "affinity": False}


def route_name(fault: str, provider: str, api: str, stream: bool) -> str:
    """Each route cell has its own route, so what one cell teaches the router stays there."""
    return f"r-{fault}-{provider}-{api}-{'s' if stream else 'w'}"


def faults_config(sim: Simulator) -> dict[str, Any]:
    key = {"api_key_env": "IT_PROVIDER_KEY"}
    providers = [{"name": name, "type": kind, "endpoint": sim.url, **key, "cluster": {"idle_timeout": f"{IDLE_S:g}s"}}
                 for name, kind in PROVIDERS.items()]
    models: list[dict[str, Any]] = [
        {"name": f"solo-{p}", "provider": p, "upstream_model": f"solo-{p}-up", "max_output_tokens": 1024,
         "capabilities": ["json"]} for p in PROVIDERS]
    # The healthy fallback of every route: the other provider, dearer.
    models += [{"name": f"fallback-{p}", "provider": p, "upstream_model": f"fallback-{p}-up", "max_output_tokens": 1024,
                "price": {"input_per_mtok": 5.0, "output_per_mtok": 20.0}} for p in PROVIDERS]
    routes = []
    for fault, p, api, stream in itertools.product((*WHOLE_FAULTS, "stall"), PROVIDERS, CLIENTS, (False, True)):
        name = route_name(fault, p, api, stream)
        models.append({"name": f"{name}-p", "provider": p, "upstream_model": f"{name}-up", "max_output_tokens": 1024,
                       "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.4}})
        other = next(o for o in PROVIDERS if o != p)
        routes.append({"name": name, "candidates": [f"{name}-p", f"fallback-{other}"], "policy": POLICY})
    return {
        "providers": providers, "models": models, "routes": routes,
        # Its own port: the default one may be taken by another gateway on this machine.
        "rate_limit": {"failure_mode": "closed", "timeout": "100ms", "port": free_port()},
        "tenants": [{"name": "faults", "api_key_sha256": [sha(KEY)], "models": ["*"]},
                    {"name": "limited", "api_key_sha256": [sha(LIMITED)], "models": ["*"],
                     "limits": [{"unit": "requests", "per": "hour", "amount": 2}]},
                    {"name": "guarded", "api_key_sha256": [sha(GUARDED)], "models": ["*"],
                     "limits": [{"unit": "requests", "per": "hour", "amount": 100000}]}],
    }


@pytest.fixture(scope="module")
def gw(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(simulator, tmp_path_factory.mktemp("gw-faults"), faults_config(simulator)) as g:
        yield g


# -- one request, as an SDK sees it ----------------------------------------------------------

@dataclass
class Outcome:
    """How a request ended for the client. `kind`: `answer` (a complete answer), `status` (an
    HTTP error status), `stream_error` (an error event inside a 200 stream), `transport` (the
    connection broke)."""

    kind: str
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    error: dict[str, Any] = field(default_factory=dict)  # the client format's error object
    text: str = ""  # content received before the end
    seconds: float = 0.0


def ask(gw: Gateway, api: str, model: str, stream: bool, key: str = KEY, **extra: Any) -> Outcome:
    start = time.monotonic()
    out = _ask_openai(gw, model, stream, key, extra) if api == "openai" else _ask_anthropic(gw, model, stream, key, extra)
    out.seconds = time.monotonic() - start
    return out


def _ask_openai(gw: Gateway, model: str, stream: bool, key: str, extra: dict[str, Any]) -> Outcome:
    c = openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=10)
    text, headers = "", {}
    try:
        if not stream:
            raw = c.chat.completions.with_raw_response.create(model=model, messages=HELLO, **extra)
            done = raw.parse()
            return Outcome("answer", headers=dict(raw.headers), text=done.choices[0].message.content or "")
        chunks = c.chat.completions.create(model=model, messages=HELLO, stream=True, **extra)
        headers = dict(chunks.response.headers)
        for chunk in chunks:
            text += (chunk.choices[0].delta.content or "") if chunk.choices else ""
        return Outcome("answer", headers=headers, text=text)
    except openai.APIStatusError as e:
        assert "Traceback" not in e.response.text
        return Outcome("status", e.status_code, dict(e.response.headers), e.body if isinstance(e.body, dict) else {})
    except (openai.APIConnectionError, httpx.TransportError):  # before APIError: it is one
        return Outcome("transport", 0, headers, text=text)
    except openai.APIError as e:  # an error event inside the stream
        return Outcome("stream_error", 200, headers, e.body if isinstance(e.body, dict) else {}, text)


def _ask_anthropic(gw: Gateway, model: str, stream: bool, key: str, extra: dict[str, Any]) -> Outcome:
    c = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0, timeout=10)
    text, headers = "", {}
    try:
        if not stream:
            raw = c.messages.with_raw_response.create(model=model, max_tokens=100, messages=HELLO, **extra)
            msg = raw.parse()
            return Outcome("answer", headers=dict(raw.headers),
                           text="".join(b.text for b in msg.content if b.type == "text"))
        events = c.messages.create(model=model, max_tokens=100, messages=HELLO, stream=True, **extra)
        headers = dict(events.response.headers)
        for event in events:
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                text += event.delta.text
        return Outcome("answer", headers=headers, text=text)
    except anthropic.APIStatusError as e:
        body = e.body if isinstance(e.body, dict) else {}
        assert body.get("type") == "error", body  # Anthropic's error format, whatever the status
        if e.status_code == 200:  # an error event inside the stream
            return Outcome("stream_error", 200, headers, body["error"], text)
        return Outcome("status", e.status_code, dict(e.response.headers), body["error"])
    except (anthropic.APIConnectionError, httpx.TransportError):
        return Outcome("transport", 0, headers, text=text)


# -- the matrix -------------------------------------------------------------------------------

def cells(faults: tuple[str, ...], routes: bool = True) -> list[tuple[str, str, str, str, bool]]:
    """(fault, client API, provider, single|route, stream) for every combination."""
    return list(itertools.product(faults, CLIENTS, PROVIDERS, ("single", "route") if routes else ("single",),
                                  (False, True)))


def cell_id(cell: tuple[str, str, str, str, bool]) -> str:
    fault, api, provider, where, stream = cell
    kind = "passthrough" if PROVIDERS[provider] == api else "translated"
    return f"{fault}-{api}-to-{provider}-{kind}-{where}-{'stream' if stream else 'whole'}"


def aim(sim: Simulator, cell: tuple[str, str, str, str, bool]) -> str:
    """Script the fault on the deployment that answers the cell; return the model to ask for."""
    fault, api, provider, where, stream = cell
    if where == "single":
        sim.behave(f"solo-{provider}-up", fault=fault, fault_after=2)
        return f"solo-{provider}"
    name = route_name(fault, provider, api, stream)
    sim.behave(f"{name}-up", fault=fault, fault_after=2)
    return name


def expect(cell: tuple[str, str, str, str, bool], out: Outcome) -> None:
    """The documented answer of `cell` (see the module docstring)."""
    fault, api, provider, where, stream = cell
    if fault == "cut" and stream:
        assert out.kind == "stream_error", out
        assert out.text.startswith("Simulated"), out  # what came before the cut was delivered
        assert out.error["type"] == "api_error" and "ended before" in out.error["message"], out
    elif fault == "stall" and stream:
        # The router stage ends it just before Envoy's idle timeout would reset it.
        assert out.kind == "stream_error", out
        assert out.text.startswith("Simulated"), out  # what came before the stall was delivered
        assert out.error["type"] == "timeout_error" and provider in out.error["message"], out
        assert out.seconds < IDLE_S + 2, out
    elif fault == "reset" and stream:
        assert out.kind == "transport", out
        return
    elif fault == "reset":
        # Envoy's own reply (the upstream reset before the held headers went out).
        assert (out.kind, out.status, out.error.get("type")) == ("status", 502, "api_error"), out
        return
    elif fault == "stall":
        assert (out.kind, out.status, out.error.get("type")) == ("status", 504, "timeout_error"), out
        assert out.seconds < IDLE_S + 3, out
        return  # Envoy's own reply
    else:
        assert (out.kind, out.status, out.error.get("type")) == ("status", 502, "api_error"), out
        assert out.error["message"] and "<html" not in out.error["message"].lower(), out
    assert out.headers["x-interlock-provider"] == provider, out
    assert out.headers.get("x-interlock-route") == (None if where == "single" else route_name(fault, provider, api, stream))


@pytest.mark.parametrize("cell", cells(WHOLE_FAULTS), ids=cell_id)
def test_a_broken_success_ends_in_its_documented_answer(gw: Gateway, sim: Simulator,
                                                        cell: tuple[str, str, str, str, bool]) -> None:
    expect(cell, ask(gw, cell[1], aim(sim, cell), cell[4]))


def test_stalls_and_resets_end_in_their_documented_answers(gw: Gateway, sim: Simulator) -> None:
    """Stalls (single model and route) and resets (single model), all at once: each waits for
    Envoy's idle timeout, so they share the wait."""
    stalls = cells(("stall",))
    targets = [aim(sim, c) for c in stalls]
    with ThreadPoolExecutor(len(stalls)) as pool:
        outcomes = list(pool.map(lambda a: ask(gw, a[0][1], a[1], a[0][4]), zip(stalls, targets, strict=True)))
    for c, out in zip(stalls, outcomes, strict=True):
        expect(c, out)
    resets = cells(("reset",), routes=False)
    for p in PROVIDERS:
        sim.behave(f"solo-{p}-up", fault="reset", fault_after=2)
    with ThreadPoolExecutor(len(resets)) as pool:
        outcomes = list(pool.map(lambda c: ask(gw, c[1], f"solo-{c[2]}", c[4]), resets))
    for c, out in zip(resets, outcomes, strict=True):
        expect(c, out)


def test_a_healthy_answer_is_untouched_by_the_checks(gw: Gateway, sim: Simulator) -> None:
    for api, provider, stream in itertools.product(CLIENTS, PROVIDERS, (False, True)):
        out = ask(gw, api, f"solo-{provider}", stream)
        assert out.kind == "answer" and out.text.startswith("Simulated"), (api, provider, stream, out)
        assert out.headers["x-interlock-provider"] == provider


def test_the_simulator_produces_each_fault(simulator: Simulator, sim: Simulator) -> None:
    """The oracle itself: each fault as the provider's wire shows it, without the gateway."""
    headers = {"authorization": f"Bearer {PROVIDER_KEY}"}
    body = {"model": "oracle", "messages": HELLO}
    url = simulator.url + "/v1/chat/completions"
    sim.behave("oracle", fault="html")
    r = httpx.post(url, json=body, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    sim.behave("oracle", fault="invalid_json")
    r = httpx.post(url, json=body, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    with pytest.raises(ValueError):
        r.json()
    sim.behave("oracle", fault="cut", fault_after=2)
    r = httpx.post(url, json={**body, "stream": True}, headers=headers)
    assert r.status_code == 200 and r.text.count("data: {") == 3 and "[DONE]" not in r.text  # opening + 2 deltas
    sim.behave("oracle", fault="reset", fault_after=2)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(url, json={**body, "stream": True}, headers=headers)
    sim.behave("oracle", fault="stall", fault_after=2)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url, json={**body, "stream": True}, headers=headers, timeout=0.5)


# -- who refused -----------------------------------------------------------------------------

def access_line(gw: Gateway, request_id: str) -> str:
    """The access log line of one request (the router stage's one line per answered request)."""
    pattern = re.compile(rf"request_id={re.escape(request_id)} tenant=\S+ model=\S+ provider=.*")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = pattern.findall(gw.process.text())
        if found:
            return str(found[-1])
        time.sleep(0.05)
    raise AssertionError(f"no access log line for {request_id}")


def test_the_tenants_rate_limit_is_the_gateways_refusal(gw: Gateway, sim: Simulator) -> None:
    outs = [ask(gw, "openai", "solo-oa", False, key=LIMITED) for _ in range(3)]
    assert [o.status for o in outs] == [200, 200, 429], outs
    refused = outs[2]
    assert refused.headers["x-interlock-provider"] == "interlock" and int(refused.headers["retry-after"]) >= 1
    line = access_line(gw, refused.headers["x-request-id"])
    assert " provider=interlock " in line and " status=429 " in line and " upstream_status=- " in line, line
    assert len([r for r in sim.requests() if (r.get("body") or {}).get("model") == "solo-oa-up"]) == 2


GATEWAY_400S = {  # refused by the gateway after it chose the deployment, before any provider saw them
    "tools-to-a-model-without-tools": ("/v1/chat/completions", {
        "model": "solo-an", "messages": HELLO,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}),
    "anthropic-tools-to-a-model-without-tools": ("/v1/messages", {
        "model": "solo-oa", "max_tokens": 50, "messages": HELLO,
        "tools": [{"name": "f", "input_schema": {"type": "object"}}]}),
    "embeddings-from-a-chat-model": ("/v1/embeddings", {"model": "solo-oa", "input": "hello"}),
    "messages-not-a-list": ("/v1/messages", {"model": "solo-an", "max_tokens": 50, "messages": "hello"}),
}


@pytest.mark.parametrize("case", list(GATEWAY_400S))
def test_the_gateways_own_400_names_the_gateway(gw: Gateway, sim: Simulator, case: str) -> None:
    path, body = GATEWAY_400S[case]
    anthropic_client = path == "/v1/messages"
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"} if anthropic_client else {
        "authorization": f"Bearer {KEY}"}
    r = httpx.post(gw.url + path, json=body, headers=headers, timeout=10)
    assert r.status_code == 400, r.text
    err = r.json()["error"] if not anthropic_client else r.json()
    if anthropic_client:
        assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
    else:
        assert err["type"] == "invalid_request_error"
    assert r.headers["x-interlock-provider"] == "interlock" and r.headers["x-interlock-model"] == body["model"]
    line = access_line(gw, r.headers["x-request-id"])
    assert " provider=interlock " in line and " status=400 " in line and " upstream_status=- " in line, line
    assert sim.requests() == []


def _ratelimit_pid(gw: Gateway) -> int:
    for pid in gw.process.descendants():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"ratelimit" in cmdline:
            return pid
    raise AssertionError("the rate-limit process is not running")


def test_rate_limiter_down_with_failure_mode_closed_is_a_429(gw: Gateway, sim: Simulator) -> None:
    """`rate_limit.failure_mode: closed` and the rate-limit process not answering (stopped): the
    documented 429 with Retry-After in each client's format, made by the gateway, not a 502
    blaming a provider; the provider is never called."""
    pid = _ratelimit_pid(gw)
    os.kill(pid, signal.SIGSTOP)
    try:
        outs = {(api, provider): ask(gw, api, f"solo-{provider}", False, key=GUARDED)
                for api, provider in itertools.product(CLIENTS, PROVIDERS)}
    finally:
        os.kill(pid, signal.SIGCONT)
    for (api, provider), out in outs.items():
        assert (out.kind, out.status, out.error.get("type")) == ("status", 429, "rate_limit_error"), (api, provider, out)
        assert int(out.headers["retry-after"]) >= 1
        assert out.headers["x-interlock-provider"] == "interlock"
        assert out.headers["x-interlock-model"] == f"solo-{provider}"
        assert "rate limit" in out.error["message"].lower(), out.error
        if api == "openai":
            assert out.error["code"] == "rate_limit_exceeded"
        line = access_line(gw, out.headers["x-request-id"])
        assert " provider=interlock " in line and " status=429 " in line, line
    assert sim.requests() == []
