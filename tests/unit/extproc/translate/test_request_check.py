"""The client request check (`extproc.translate.schema.check_request`) agrees with the official SDK
types, and what it lets through never breaks a translator.

Agreement (`bodies.sdk_problems` is the oracle, `simulator.validate` over the SDK param types):
the check refuses a body whenever the SDK does (naming one of the fields the SDK names, unless
it names a problem of the gateway's own rules first), and when the SDK does not, the check
refuses it only for one of its own rules (`bodies.gateway_only`: documented ranges, depth,
non-empty, a required field sent as null, the legacy Anthropic sampling fields). Both on a table
of bodies per client API and on Hypothesis-drawn ones.

Robustness: for every translator pair of the registry, a body the check accepts translates or is
refused with a client error (a `GatewayError` below 500) — never another exception — and what it
produces is JSON, with dropped-parameter names that are short constants (they go into the
`x-interlock-dropped-params` header).
"""

from __future__ import annotations

import dataclasses
import re
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings

from extproc.errors import BadRequest, GatewayError
from extproc.translate.base import Target
from extproc.translate.registry import default_registry
from extproc.translate.schema import MAX_DEPTH, check_request
from tests.golden.support import target as golden_target
from tests.unit.extproc.translate.bodies import (
    ANTHROPIC,
    APIS,
    EMBEDDINGS,
    OPENAI,
    bodies,
    gateway_only,
    sdk_problems,
)

GOLDEN = Path(__file__).resolve().parents[3] / "golden"
HELLO = [{"role": "user", "content": "Say hello."}]
BASE = {OPENAI: {"model": "m", "messages": HELLO},
        ANTHROPIC: {"model": "m", "messages": HELLO, "max_tokens": 64},
        EMBEDDINGS: {"model": "m", "input": "x"}}
IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def verdict(api: str, body: dict[str, Any]) -> BadRequest | None:
    try:
        check_request(api, body)
    except BadRequest as e:
        return e
    return None


def related(a: str, b: str) -> bool:
    """Both paths are in one top-level field. (Where a value fits no member of a union, which
    member's problem to name is a choice: the SDK names its closest member's, the check the member
    that got furthest; `input: [0, ""]` is `input[0]` to one and `input[1]` to the other.)"""
    return re.split(r"[.\[]", a, maxsplit=1)[0] == re.split(r"[.\[]", b, maxsplit=1)[0]


def assert_agrees(api: str, body: dict[str, Any]) -> BadRequest | None:
    """The check's verdict on `body` agrees with the SDK's (see the module docstring)."""
    sdk = sdk_problems(api, body)
    err = verdict(api, body)
    if sdk:
        assert err is not None, f"the SDK refuses {sdk}, the check accepts"
        assert err.param is not None
        named = {path for path, _ in sdk}
        assert any(related(err.param, p) for p in named) or gateway_only(api, body, err.param, err.message), (
            err.param, err.message, sdk)
    elif err is not None:
        assert err.param is not None and gateway_only(api, body, err.param, err.message), (err.param, err.message)
    return err


CASES: list[tuple[str, dict[str, Any], str | None]] = [
    # (api, fields over BASE, the param the check names or None when the body is valid)
    (OPENAI, {}, None),
    (OPENAI, {"messages": [{"role": "system", "content": "s"}, {"role": "developer", "content": [
        {"type": "text", "text": "d"}]}, *HELLO]}, None),
    (OPENAI, {"messages": [{"role": "user", "content": [{"type": "text", "text": "t"}, {
        "type": "image_url", "image_url": {"url": "https://e.x/a.png", "detail": "low"}}]}]}, None),
    (OPENAI, {"messages": [*HELLO, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "18 C"}], "tools": [TOOL]}, None),
    (OPENAI, {"temperature": 0.7, "top_p": 1, "n": 1, "stop": ["a"], "seed": 7, "logit_bias": {"1": -5},
              "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
              "stream": True, "stream_options": {"include_usage": True}, "tool_choice": "auto",
              "parallel_tool_calls": False, "metadata": {"k": "v"}, "user": "u", "max_completion_tokens": 5}, None),
    (OPENAI, {"temperature": None, "tools": None, "stop": None}, None),  # null counts as absent
    (OPENAI, {"vendor_extension": {"a": [1]}, "reasoning_effort": "ultra"}, None),  # extension; newer value
    (OPENAI, {"messages": True}, "messages"),
    (OPENAI, {"messages": 3}, "messages"),
    (OPENAI, {"messages": [{"role": "user"}]}, "messages[0].content"),
    (OPENAI, {"messages": [{"content": "x"}]}, "messages[0].role"),
    (OPENAI, {"messages": [{"role": "user", "content": [{"type": []}]}]}, "messages[0].content[0].type"),
    (OPENAI, {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
     "messages[0].content[0].text"),
    (OPENAI, {"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {
        "name": "f", "arguments": {}}}]}]}, "messages[0].tool_calls[0].function.arguments"),
    (OPENAI, {"service_tier": {}}, "service_tier"),
    (OPENAI, {"reasoning_effort": []}, "reasoning_effort"),
    (OPENAI, {"tool_choice": {"type": "function"}}, "tool_choice.function"),
    (OPENAI, {"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools[0].function.name"),
    (OPENAI, {"stop": [1]}, "stop[0]"),
    (OPENAI, {"logit_bias": {"1": "x"}}, "logit_bias.1"),
    (OPENAI, {"stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
    (OPENAI, {"temperature": 2.5}, "temperature"),
    (OPENAI, {"top_p": -0.1}, "top_p"),
    (OPENAI, {"n": 0}, "n"),
    (OPENAI, {"max_tokens": 2**63}, "max_tokens"),
    (ANTHROPIC, {}, None),
    (ANTHROPIC, {"system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
                 "messages": [{"role": "user", "content": [IMAGE, {"type": "text", "text": "what?"}]}],
                 "tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": {"type": "any"},
                 "thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 2048,
                 "metadata": {"user_id": "u"}, "stop_sequences": ["x"], "stream": True}, None),
    (ANTHROPIC, {"messages": [*HELLO, {"role": "assistant", "content": [
        {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}}]}, {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t", "content": "ok"}]}]}, None),
    (ANTHROPIC, {"temperature": 0.5, "top_k": 5}, None),  # older clients' fields
    (ANTHROPIC, {"tools": [{"type": "web_search_20990101", "name": "web_search"}]}, None),  # a newer tool
    (ANTHROPIC, {"messages": True}, "messages"),
    (ANTHROPIC, {"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    (ANTHROPIC, {"messages": [{"role": "user", "content": [{"type": []}]}]}, "messages[0].content[0].type"),
    (ANTHROPIC, {"messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "data": 1, "media_type": "image/png"}}]}]}, "messages[0].content[0].source.data"),
    (ANTHROPIC, {"tool_choice": "x"}, "tool_choice"),
    (ANTHROPIC, {"tool_choice": {"type": "tool"}}, "tool_choice.name"),
    (ANTHROPIC, {"tools": [{"name": "f"}]}, "tools[0].input_schema"),
    (ANTHROPIC, {"service_tier": {}}, "service_tier"),
    (ANTHROPIC, {"max_tokens": "5"}, "max_tokens"),
    (ANTHROPIC, {"metadata": {"user_id": 5}}, "metadata.user_id"),
    (ANTHROPIC, {"temperature": 1.5}, "temperature"),
    (ANTHROPIC, {"thinking": {"type": "enabled", "budget_tokens": 100}}, "thinking.budget_tokens"),
    (EMBEDDINGS, {}, None),
    (EMBEDDINGS, {"input": [[1, 2], [3]], "dimensions": 256, "encoding_format": "base64", "user": "u"}, None),
    (EMBEDDINGS, {"input": None}, "input"),
    (EMBEDDINGS, {"input": [True]}, "input[0]"),
    (EMBEDDINGS, {"input": [[1, False]]}, "input[0][1]"),
    (EMBEDDINGS, {"dimensions": "256"}, "dimensions"),
    (EMBEDDINGS, {"dimensions": 2**63}, "dimensions"),
    (EMBEDDINGS, {"encoding_format": "int8"}, "encoding_format"),
    (EMBEDDINGS, {"user": ["u"]}, "user"),
]


@pytest.mark.parametrize(("api", "fields", "param"), CASES,
                         ids=[f"{a}-{orjson.dumps(f).decode()[:50]}" for a, f, _ in CASES])
def test_the_check_agrees_with_the_sdk_types(api: str, fields: dict[str, Any], param: str | None) -> None:
    body = {**BASE[api], **fields}
    err = assert_agrees(api, body)
    assert (err.param if err else None) == param, err and err.message


def test_the_table_covers_every_client_api_valid_and_invalid() -> None:
    for api in APIS:
        verdicts = [param is None for a, _, param in CASES if a == api]
        assert verdicts.count(True) >= 2 and verdicts.count(False) >= 7, api


@pytest.mark.parametrize("api", APIS)
def test_deep_nesting_is_refused_wherever_it_is(api: str) -> None:
    nested: Any = {}
    for _ in range(MAX_DEPTH):
        nested = [nested]
    err = verdict(api, {**BASE[api], "x": nested})
    assert err is not None and err.param == "x"


# --- Hypothesis: agreement on drawn bodies; no translator breaks on what the check accepts ---

@cache
def targets() -> dict[str, list[Target]]:
    """Per provider type, a golden case's target (fully configured) and the same with no
    capabilities (the refusals a plain deployment makes)."""
    out: dict[str, list[Target]] = {}
    for path in sorted(GOLDEN.glob("*/*/target.json")):
        t = golden_target(path.parent)
        if t.provider_type not in out:
            out[t.provider_type] = [t, dataclasses.replace(t, capabilities=frozenset())]
    return out


DROPPED_NAME = re.compile(r"[a-z_.\[\]]{1,64}")
REGISTRY = default_registry()


@cache
def translators(api: str) -> list[tuple[str, Any]]:
    """(provider type, translator) for every pair of the registry with client API `api`."""
    out = []
    for provider in targets():
        try:
            out.append((provider, REGISTRY.get(api, provider)))
        except GatewayError:
            continue
    return out


def translate_everywhere(api: str, body: dict[str, Any]) -> None:
    """Every translator of `api` takes `body` or refuses it with a client error; nothing else."""
    snapshot = orjson.dumps(body)
    for provider, translator in translators(api):
        for target in targets()[provider]:
            try:
                out = translator.translate_request(body, target)
            except GatewayError as e:
                assert e.status < 500, (provider, e)
                continue
            orjson.loads(out.body)
            assert all(DROPPED_NAME.fullmatch(n) for n in out.dropped_params), out.dropped_params
    assert orjson.dumps(body) == snapshot, "a translator changed its input"


HYPOTHESIS = settings(max_examples=250, deadline=None, derandomize=True, database=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _run(api: str, body: dict[str, Any]) -> None:
    err = assert_agrees(api, body)
    if err is None:
        translate_everywhere(api, body)


@HYPOTHESIS
@given(body=bodies(OPENAI))
def test_drawn_openai_chat_bodies(body: dict[str, Any]) -> None:
    _run(OPENAI, body)


@HYPOTHESIS
@given(body=bodies(ANTHROPIC))
def test_drawn_anthropic_messages_bodies(body: dict[str, Any]) -> None:
    _run(ANTHROPIC, body)


@HYPOTHESIS
@given(body=bodies(EMBEDDINGS))
def test_drawn_openai_embeddings_bodies(body: dict[str, Any]) -> None:
    _run(EMBEDDINGS, body)


def test_every_client_api_reaches_every_provider_type() -> None:
    assert {p for p, _ in translators(OPENAI)} == {"openai", "azure-openai", "anthropic", "vertex-anthropic",
                                                   "gemini", "vertex-gemini", "bedrock"}
    assert {p for p, _ in translators(ANTHROPIC)} == {p for p, _ in translators(OPENAI)}
    assert {p for p, _ in translators(EMBEDDINGS)} == {"openai", "azure-openai", "gemini", "vertex-gemini"}
