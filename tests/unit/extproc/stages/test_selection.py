"""`extproc.stages.selection`: which deployments a request tries and in which order — the model or
route it names (404 when unknown or forbidden), one deployment per provider, 429 / 400 when nothing
can serve it, a 400 for what the model's capabilities lack (every pair, passthrough included), and
the admission gate's view and choice."""

from __future__ import annotations

import asyncio
import copy
from functools import cache
from typing import Any

import pytest
import yaml

import routing
from extproc import errors
from extproc.admission import Board, Candidate, Gate
from extproc.config import load_text
from extproc.config.model import Admission
from extproc.runtime import Deployment, Runtime, compile_runtime
from extproc.stages import request, selection
from extproc.stages.feedback import RoutingState
from extproc.stages.request import ClientRequest
from extproc.translate.registry import default_registry
from tests.unit.extproc.stages.support import CONFIG, ENVIRON, chat, client, dep, runtime, tenant

NOW = 100.0
GPT, CLAUDE, FLASH = dep("gpt"), dep("claude"), dep("flash")
TWIN_A, TWIN_B = dep("twin", "openai"), runtime().deployments["twin"][1]


def state() -> RoutingState:
    return RoutingState(clock=lambda: NOW, rand=lambda: 0.5, wall=lambda: 1_700_000_000.0)


def ids(chain: list[Deployment]) -> list[str]:
    return [d.id for d in chain]


# -- resolve ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("model", "route", "chain"), [
    ("gpt", None, [GPT]),
    ("claude", None, [CLAUDE]),
    # The ranking's best first, then the route's other providers in its static order.
    ("cheap", "cheap", [GPT, FLASH, CLAUDE]),  # fallbacks in the static order of `cheapest`: by price
    ("smart", "smart", [CLAUDE, GPT]),
    # twin-a and twin-b are both on openai: the chain keeps the better one per provider.
    ("pair", "pair", [TWIN_A, CLAUDE]),
])
def test_resolve_a_model_or_a_route(model: str, route: str | None, chain: list[Deployment]) -> None:
    r, got, snapshot = selection.resolve(runtime(), state(), chat(model), tenant())
    assert (r.name if r else None, ids(got)) == (route, ids(chain))
    assert (snapshot is None) == (route is None)
    if snapshot is not None:
        assert snapshot.taken_at == NOW


def test_a_model_with_deployments_on_two_providers_is_routed_over_both() -> None:
    r, chain, _ = selection.resolve(runtime(), state(), chat("dual"), tenant())
    assert r is not None and r.name == "dual"
    assert sorted(d.provider for d in chain) == ["anthropic", "openai"]


def test_a_tenants_allow_list_narrows_a_route() -> None:
    _, chain, _ = selection.resolve(runtime(), state(), chat("smart"), tenant("narrow"))
    assert ids(chain) == [GPT.id]


@pytest.mark.parametrize(("model", "who"), [("gpt-5-imaginary", "main"), ("claude", "narrow"), ("cheap", "narrow")])
def test_an_unknown_or_forbidden_model_is_404(model: str, who: str) -> None:
    with pytest.raises(errors.NotFound) as info:
        selection.resolve(runtime(), state(), chat(model), tenant(who))
    err = info.value
    assert (err.status, err.code, err.param, err.message) == (
        404, "model_not_found", "model", f"The model `{model}` does not exist or you do not have access to it.")


# -- choose: nothing can serve ---------------------------------------------------------------------

def test_every_candidate_cooling_down_is_429() -> None:
    s = state()
    for d in runtime().routes["cheap"].deployments:
        s.stats.record_failure(d.id, NOW)
    with pytest.raises(errors.RateLimited) as info:
        selection.choose(s, runtime().routes["cheap"], chat("cheap"), tenant())
    err = info.value
    assert (err.status, err.headers, err.message) == (429, {"retry-after": "1"},
                                                      "Every deployment behind `cheap` is cooling down.")


@pytest.mark.parametrize(("fields", "cooling", "reasons"), [
    ({"max_tokens": 5000}, [],
     "gpt: max output tokens 5000 > the deployment's limit 4096; "
     "claude: max output tokens 5000 > the deployment's limit 2048"),
    # One cools down, the other cannot serve at all: a 400 (waiting would not help), naming both.
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]},
     [CLAUDE], "gpt: lacks images; claude: cooling down for 1.0 s (1 consecutive failure)"),
])
def test_no_candidate_able_to_serve_is_400_with_the_reasons(fields: dict[str, Any], cooling: list[Deployment],
                                                             reasons: str) -> None:
    s = state()
    for d in cooling:
        s.stats.record_failure(d.id, NOW)
    with pytest.raises(errors.BadRequest) as info:
        selection.choose(s, runtime().routes["smart"], chat("smart", **fields), tenant())
    err = info.value
    assert (err.status, err.param, err.message) == (
        400, "model", f"No model behind `smart` can serve this request ({reasons}).")


def test_a_cooling_candidate_is_not_first_but_keeps_its_place_among_the_fallbacks() -> None:
    s = state()
    s.stats.record_failure(GPT.id, NOW)
    chain, _ = selection.choose(s, runtime().routes["cheap"], chat("cheap"), tenant())
    assert ids(chain) == [FLASH.id, GPT.id, CLAUDE.id]


def test_an_exploring_decision_records_its_probe() -> None:
    # `twin` uses the default weighted policy, which probes a never-observed deployment once.
    s = state()
    route = runtime().routes["twin"]
    first, snap = selection.choose(s, route, chat("twin"), tenant())
    assert dict(snap.probed) == {}
    assert dict(s.stats.snapshot(NOW).probed) == {first[0].id: NOW}
    second, _ = selection.choose(s, route, chat("twin"), tenant())
    assert ids(second) == [TWIN_A.id]  # the probe is pending: back to the best one


@pytest.mark.parametrize(("who", "fields", "expected"), [
    ("main", {}, {"needs": frozenset(), "max_output_tokens": None, "allowed_models": None,
                  "observes_latency": False}),
    ("main", {"stream": True}, {"needs": frozenset(), "max_output_tokens": None, "allowed_models": None,
                                "observes_latency": True}),
    ("narrow", {"max_tokens": 64, "tools": [{"type": "function", "function": {"name": "f"}}]},
     {"needs": frozenset({"tools"}), "max_output_tokens": 64, "allowed_models": frozenset({"gpt"}),
      "observes_latency": False}),
])
def test_route_request(who: str, fields: dict[str, Any], expected: dict[str, Any]) -> None:
    req = chat("smart", **fields)
    got = selection.route_request(req, runtime().routes["smart"], tenant(who), NOW)
    assert got == routing.RouteRequest(est_input_tokens=req.est_input_tokens, now=NOW,
                                       affinity_key=req.affinity_key, **expected)


# -- candidates and admission ----------------------------------------------------------------------

SNAPSHOT = routing.Snapshot(NOW, estimates={
    GPT.id: routing.LatencyEstimate.of(0.2, 0.01, weight=3.0),
    CLAUDE.id: routing.LatencyEstimate.of(0.5, 0.02, weight=0.5),  # seen, but not enough to judge by
})


@pytest.mark.parametrize(("max_output", "gpt_service_s"), [(None, 0.2 + 0.01 * 256), (100, 0.2 + 0.01 * 100),
                                                           (10_000, 0.2 + 0.01 * 4096)])
def test_candidates_describe_the_chain_from_the_snapshot(max_output: int | None, gpt_service_s: float) -> None:
    got = selection.candidates([GPT, CLAUDE, FLASH], SNAPSHOT, max_output)
    assert got == [Candidate(GPT.id, 2, 0.2, pytest.approx(gpt_service_s)),  # type: ignore[arg-type]
                   Candidate(CLAUDE.id, 3, 0.0, 1.0), Candidate(FLASH.id, 0, 0.0, 1.0)]


@pytest.mark.parametrize(("index", "expected"), [(0, [GPT, FLASH, CLAUDE]), (1, [FLASH, GPT, CLAUDE]),
                                                 (2, [CLAUDE, GPT, FLASH])])
def test_admitted_first(index: int, expected: list[Deployment]) -> None:
    assert selection.admitted_first([GPT, FLASH, CLAUDE], index) == expected


def _gate(board: Board) -> Gate:
    settings = Admission(queue_timeout=0.0)
    return Gate(board, lambda: settings, lambda: NOW)


# (chain, slots already taken per deployment on the board, priority, deadline in s from now)
#   → (chain after admission, the ticket's (index, counted)), or None for no ticket
ADMIT_CASES: dict[str, tuple[list[Deployment], dict[str, int], str, float | None,
                             list[Deployment], tuple[int, bool] | None]] = {
    "free-budget": ([GPT, CLAUDE], {}, "default", None, [GPT, CLAUDE], (0, True)),
    "spills-to-the-next": ([GPT, CLAUDE], {GPT.id: 1}, "default", None, [CLAUDE, GPT], (1, True)),
    "spills-to-one-without-budget": ([GPT, FLASH, CLAUDE], {GPT.id: 2}, "default", None, [FLASH, GPT, CLAUDE],
                                     (1, False)),
    "interactive-takes-the-reserve": ([GPT, CLAUDE], {GPT.id: 1}, "interactive", None, [GPT, CLAUDE], (0, True)),
    "batch-share-used": ([CLAUDE, GPT], {CLAUDE.id: 1, GPT.id: 0}, "batch", None, [GPT, CLAUDE], (1, True)),
    "no-budget-no-deadline": ([FLASH], {}, "default", None, [FLASH], None),
    "deadline-without-budget": ([FLASH], {}, "default", 10.0, [FLASH], (0, False)),
}


@pytest.mark.parametrize("case", list(ADMIT_CASES))
def test_admit(case: str) -> None:
    chain, taken, priority, deadline_s, expected, ticket_of = ADMIT_CASES[case]
    board = Board()
    for dep_id, n in taken.items():
        for _ in range(n):
            assert board.try_acquire(dep_id, 10)
    gate = _gate(board)
    req = chat("cheap")
    deadline_at = None if deadline_s is None else NOW + deadline_s
    got, ticket = asyncio.run(selection.admit(gate, state(), chain, SNAPSHOT, req, priority, deadline_at))
    assert ids(got) == ids(expected)
    assert (None if ticket is None else (ticket.index, ticket.counted)) == ticket_of
    if ticket is not None:
        assert ticket.deployment_id == got[0].id
        if ticket.counted:
            assert board.in_flight(got[0].id) == taken.get(got[0].id, 0) + 1


def test_without_a_gate_the_chain_is_unchanged() -> None:
    got, ticket = asyncio.run(selection.admit(None, state(), [GPT, CLAUDE], None, chat("cheap"), "default", NOW + 1))
    assert (ids(got), ticket) == ([GPT.id, CLAUDE.id], None)


def test_every_budget_in_use_is_429() -> None:
    board = Board()
    assert board.try_acquire(GPT.id, 10) and board.try_acquire(CLAUDE.id, 10) and board.try_acquire(CLAUDE.id, 10)
    with pytest.raises(errors.RateLimited) as info:
        asyncio.run(selection.admit(_gate(board), state(), [GPT, CLAUDE], SNAPSHOT, chat("cheap"), "default", None))
    assert info.value.status == 429 and info.value.headers["retry-after"].isdigit()


def test_a_deadline_shorter_than_every_expected_first_token_is_504() -> None:
    slow = routing.Snapshot(NOW, estimates={FLASH.id: routing.LatencyEstimate.of(2.0, 0.01, weight=5.0)})
    with pytest.raises(errors.DeadlineExceeded) as info:
        asyncio.run(selection.admit(_gate(Board()), state(), [FLASH], slow, chat("flash"), "default", NOW + 1.0))
    assert info.value.status == 504


def test_without_a_snapshot_admission_reads_the_states_statistics() -> None:
    s = state()
    s.stats.observe(FLASH.id, 3.0, None, NOW)  # learned: 3 s to the first token
    with pytest.raises(errors.DeadlineExceeded):
        asyncio.run(selection.admit(_gate(Board()), s, [FLASH], None, chat("flash"), "default", NOW + 1.0))


# -- refusal: capabilities, for every pair, passthrough included -----------------------------------

IMAGE_PART = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
ANTHROPIC_IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


@cache
def capable_runtime() -> Runtime:
    """The stage tests' config plus an embeddings model and a route that lists it beside a chat model."""
    cfg = copy.deepcopy(CONFIG)
    cfg["models"].append({"name": "embed", "provider": "openai", "upstream_model": "text-embedding-3-small",
                          "capabilities": ["embeddings"]})
    cfg["routes"].append({"name": "any", "candidates": ["embed", "gpt"], "policy": {"kind": "cheapest"}})
    return compile_runtime(load_text(yaml.safe_dump(cfg)), default_registry(), environ=ENVIRON)


def _refused(req: ClientRequest) -> errors.GatewayError:
    with pytest.raises(errors.BadRequest) as info:
        selection.resolve(capable_runtime(), state(), req, tenant())
    return info.value


@pytest.mark.parametrize(("req", "param", "message"), [
    # OpenAI client → an OpenAI-type provider: passthrough, the body would go upstream unchanged.
    (chat("proxied", tools=[TOOL]), "tools", "Model proxied does not support tools."),
    (client(model="proxied", messages=[{"role": "user", "content": "a"},
                                       {"role": "user", "content": [{"type": "text", "text": "b"}, IMAGE_PART]}]),
     "messages[1].content[1]", "Model proxied does not support images."),
    (chat("proxied", response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
     "response_format", "Model proxied does not support structured output."),
    # Translated pairs get the same answer before any translator runs.
    (chat("gpt", messages=[{"role": "user", "content": [IMAGE_PART]}]), "messages[0].content[0]",
     "Model gpt does not support images."),
    (client(request.ANTHROPIC_MESSAGES, model="flash", max_tokens=10, tools=[{"name": "f", "input_schema": {}}],
            messages=[{"role": "user", "content": "hi"}]), "tools", "Model flash does not support tools."),
    (client(request.ANTHROPIC_MESSAGES, model="gpt", max_tokens=10,
            messages=[{"role": "user", "content": [ANTHROPIC_IMAGE]}]), "messages[0].content[0]",
     "Model gpt does not support images."),
    (client(request.ANTHROPIC_MESSAGES, model="flash", max_tokens=10, messages=[{"role": "user", "content": "hi"}],
            output_config={"format": {"type": "json_schema", "schema": {}}}), "output_config.format",
     "Model flash does not support structured output."),
    # Chat to an embeddings model, embeddings to a chat model.
    (chat("embed"), "model", "The model `embed` is an embeddings model: it serves /v1/embeddings only."),
    (client(request.ANTHROPIC_MESSAGES, model="embed", max_tokens=10, messages=[{"role": "user", "content": "hi"}]),
     "model", "The model `embed` is an embeddings model: it serves /v1/embeddings only."),
    (client(request.OPENAI_EMBEDDINGS, model="gpt", input="hi"), "model", "The model `gpt` does not serve embeddings."),
], ids=["passthrough-tools", "passthrough-image", "passthrough-json", "translated-image", "anthropic-tools",
        "anthropic-image", "anthropic-json", "chat-to-embeddings", "messages-to-embeddings", "embeddings-to-chat"])
def test_what_a_model_cannot_do_is_a_400_naming_the_parameter(req: ClientRequest, param: str, message: str) -> None:
    err = _refused(req)
    assert (err.status, err.param, err.message) == (400, param, message)


@pytest.mark.parametrize("req", [
    chat("gpt", tools=[TOOL], response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
    chat("claude", tools=[TOOL], messages=[{"role": "user", "content": [IMAGE_PART]}]),
    client(request.ANTHROPIC_MESSAGES, model="claude", max_tokens=10, tools=[{"name": "f", "input_schema": {}}],
           messages=[{"role": "user", "content": [ANTHROPIC_IMAGE]}]),
    client(request.OPENAI_EMBEDDINGS, model="embed", input="hi"),
], ids=["openai-tools-json", "openai-tools-image", "anthropic-tools-image", "embeddings"])
def test_what_a_model_can_do_passes(req: ClientRequest) -> None:
    _, chain, _ = selection.resolve(capable_runtime(), state(), req, tenant())
    assert [d.model for d in chain] == [req.model]


def test_a_route_drops_the_deployments_that_cannot_serve_the_request() -> None:
    _, chain, _ = selection.resolve(capable_runtime(), state(), chat("any"), tenant())
    assert [d.model for d in chain] == ["gpt"]
    _, chain, _ = selection.resolve(capable_runtime(), state(), client(request.OPENAI_EMBEDDINGS, model="any",
                                                                       input="hi"), tenant())
    assert [d.model for d in chain] == ["embed"]
    err = _refused(chat("any", tools=[TOOL], messages=[{"role": "user", "content": [IMAGE_PART]}]))
    assert err.status == 400 and err.param == "model"  # the routing filter's own 400: nothing can serve it
