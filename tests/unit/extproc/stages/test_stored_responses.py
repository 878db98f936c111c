"""The stored-response endpoints: which paths and methods they are, where they go (the account the
id names, the provider's path with the client's query), which answers get their ids tagged, and
what they charge against the tenant's limits."""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any

import orjson
import pytest
import yaml

from extproc import errors
from extproc.config.load import load_text
from extproc.runtime import Runtime, compile_runtime
from extproc.stages import stored_responses
from extproc.translate.registry import default_registry
from extproc.translate.responses_openai import account_tag

CONFIG: dict[str, Any] = {
    "providers": [{"name": "oa", "type": "openai", "api_key_env": "K"},
                  {"name": "az", "type": "azure-openai", "endpoint": "https://r.openai.azure.com", "api_key_env": "K"},
                  {"name": "an", "type": "anthropic", "api_key_env": "K"}],
    "models": [{"name": "gpt", "provider": "oa"}, {"name": "azure-gpt", "provider": "az"},
               {"name": "claude", "provider": "an"}],
    "tenants": [{"name": "t", "api_key_sha256": ["0" * 64]},
                {"name": "claude-only", "api_key_sha256": ["1" * 64], "models": ["claude"]}],
}


@cache
def runtime() -> Runtime:
    return compile_runtime(load_text(yaml.safe_dump(CONFIG)), default_registry(), environ={"K": "secret"})


def rid(account: str) -> str:
    return f"resp_abc.{account_tag(account)}"


@pytest.mark.parametrize(("path", "stored"), [
    ("/v1/responses/resp_1", True), ("/v1/responses/resp_1/input_items", True), ("/v1/responses/resp_1/cancel", True),
    ("/v1/responses", False), ("/v1/responses/", False), ("/v1/responses/resp_1/other", False),
    ("/v1/responses/resp_1/input_items/x", False), ("/v1/chat/completions", False),
])
def test_stored_paths(path: str, stored: bool) -> None:
    assert stored_responses.is_stored_path(path) is stored


@pytest.mark.parametrize(("method", "rest"), [("GET", ""), ("DELETE", ""), ("GET", "/input_items"),
                                              ("POST", "/cancel")])
def test_each_endpoint_goes_to_the_account_the_id_names(method: str, rest: str) -> None:
    rt = runtime()
    tenant = rt.config.tenants[0]
    for account, model in (("oa", "gpt"), ("az", "azure-gpt")):
        d = stored_responses.home(rt, tenant, method, f"/v1/responses/{rid(account)}{rest}")
        assert (d.provider, d.model) == (account, model)


@pytest.mark.parametrize(("method", "rest"), [("POST", ""), ("DELETE", "/input_items"), ("POST", "/input_items"),
                                              ("GET", "/cancel")])
def test_another_method_is_a_405(method: str, rest: str) -> None:
    with pytest.raises(errors.MethodNotAllowed):
        stored_responses.home(runtime(), runtime().config.tenants[0], method, f"/v1/responses/{rid('oa')}{rest}")


def test_an_id_without_an_account_or_on_no_account_of_the_tenant() -> None:
    rt = runtime()
    with pytest.raises(errors.BadRequest) as bad:
        stored_responses.home(rt, rt.config.tenants[0], "GET", "/v1/responses/resp_abc/input_items")
    assert bad.value.param == "response_id" and "unstored" in bad.value.message
    with pytest.raises(errors.NotFound):
        stored_responses.home(rt, rt.config.tenants[1], "POST", f"/v1/responses/{rid('oa')}/cancel")


def test_the_provider_path_keeps_the_sub_resource_and_the_query() -> None:
    rt = runtime()
    d = rt.deployments["gpt"][0]
    headers = dict(asyncio.run(stored_responses.prepare(rt, d, "GET", f"/v1/responses/{rid('oa')}/input_items",
                                                        "limit=2&order=asc")))
    assert headers[":path"] == "/v1/responses/resp_abc/input_items?limit=2&order=asc"
    assert headers["authorization"] == "Bearer secret"
    azure = rt.deployments["azure-gpt"][0]
    headers = dict(asyncio.run(stored_responses.prepare(rt, azure, "POST", f"/v1/responses/{rid('az')}/cancel")))
    assert headers[":path"] == "/openai/v1/responses/resp_abc/cancel" and headers["api-key"] == "secret"


def test_a_response_in_the_answer_gets_the_accounts_tag() -> None:
    d = runtime().deployments["gpt"][0]
    json = "application/json"
    assert stored_responses.retags("/v1/responses/r", 200, json)
    assert stored_responses.retags("/v1/responses/r/cancel", 200, "application/json; charset=utf-8")
    assert not stored_responses.retags("/v1/responses/r/input_items", 200, json)  # items: no response ids
    assert not stored_responses.retags("/v1/responses/r", 404, json)
    assert not stored_responses.retags("/v1/responses/r", 200, "text/event-stream")  # a streamed retrieve
    answer = {"id": "resp_abc", "object": "response", "previous_response_id": "resp_0", "output": []}
    tagged = orjson.loads(stored_responses.tagged(orjson.dumps(answer), d))
    assert (tagged["id"], tagged["previous_response_id"]) == (rid("oa"), f"resp_0.{account_tag('oa')}")
    deleted = {"id": "resp_abc", "object": "response.deleted", "deleted": True}
    assert orjson.loads(stored_responses.tagged(orjson.dumps(deleted), d))["id"] == rid("oa")
    assert stored_responses.tagged(b"not json", d) == b"not json"


def test_a_call_charges_one_request_and_nothing_else() -> None:
    fields = stored_responses.reservation(runtime().config.tenants[0], "default")
    assert fields["tenant"] == "t" and "model" not in fields
    assert {k: v for k, v in fields.items() if k.startswith(("reserve_", "usage_"))} == dict.fromkeys(
        ("reserve_tokens", "reserve_usd", "reserve_min_tokens", "reserve_min_usd", "usage_tokens", "usage_usd"), "0")
