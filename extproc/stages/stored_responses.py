"""The stored-response endpoints, sent to the provider account that stored the response:
`GET`/`DELETE /v1/responses/{id}` (retrieve, delete), `GET /v1/responses/{id}/input_items` (the
input items, a page) and `POST /v1/responses/{id}/cancel` (cancel a background response) — the
paths and methods of OpenAI's API reference and of the `openai` SDK (`responses.retrieve`,
`.delete`, `.input_items.list`, `.cancel`).

Only OpenAI-type providers store responses; the id the client holds names the account
(`extproc.translate.responses_openai`: `resp_….il<8 hex>`). `home` finds a deployment of the
tenant's models on that account (any model: the id, not a model, says where the response is);
`prepare` gives the headers that send the request there — the provider's path for the id as the
provider knows it (the client's query, e.g. `limit`/`after`/`order` of a page, kept), its
authority and its credentials — and the cluster to route to. A response the answer carries
(retrieve, cancel; delete's `response.deleted` object) gets its `id` and `previous_response_id`
tagged as the create path tags them (`tagged`), so the id a client reads back continues the
conversation on the same account; a page of input items, an error and a streamed retrieve
(`stream=true`: server-sent events) go back unchanged. An id without an account suffix (a response
served unstored by another provider type, or not made through this gateway) is a 400 that says
so; another method is a 405. Each call is one request against the tenant's request limits and
spends no tokens (`reservation`). No I/O but the credential's.
"""

from __future__ import annotations

from urllib.parse import quote

import orjson

from extproc import errors, metadata
from extproc.config.model import Tenant
from extproc.runtime import Deployment, Runtime
from extproc.translate.responses_openai import ResponsesToOpenAI, account_tag, provider_id, stored_by, tag_ids

PREFIX = "/v1/responses/"
_OPENAI_TYPES = ("openai", "azure-openai")
# What may follow the id, and the methods each takes.
_METHODS = {"": ("GET", "DELETE"), "/input_items": ("GET",), "/cancel": ("POST",)}
_ANSWER_IS_A_RESPONSE = ("", "/cancel")  # retrieve, delete (its `id`) and cancel: ids to tag


def _split(path: str) -> tuple[str, str] | None:
    """(id, what follows it) of a stored-response path, else None."""
    if not path.startswith(PREFIX):
        return None
    rid, _, rest = path[len(PREFIX):].partition("/")
    rest = "/" + rest if rest else ""
    return (rid, rest) if rid and rest in _METHODS else None


def is_stored_path(path: str) -> bool:
    """`/v1/responses/{id}`, `…/{id}/input_items` or `…/{id}/cancel`."""
    return _split(path) is not None


def response_id(path: str) -> str:
    split = _split(path)
    assert split is not None, "a stored-response path"
    return split[0]


def home(rt: Runtime, tenant: Tenant, method: str, path: str) -> Deployment:
    """The deployment on the account that stored the response at `path`: 405 for a method the
    endpoint does not take, 400 for an id that names no account, 404 when no model the tenant may
    use is on that account."""
    split = _split(path)
    assert split is not None, "a stored-response path"
    rid, rest = split
    if method not in _METHODS[rest]:
        raise errors.MethodNotAllowed(method, path)
    tag = stored_by(rid)
    if tag is None:
        raise errors.BadRequest(f"The response `{rid[:80]}` was not stored by this gateway's providers: only "
                                "responses made on OpenAI-type providers are stored (their ids end in the "
                                "account's `.il…` suffix); other providers serve responses unstored.",
                                param="response_id")
    for name, deployments in rt.deployments.items():
        if not tenant.allows(name):
            continue
        for d in deployments:
            if d.target.provider_type in _OPENAI_TYPES and account_tag(d.provider) == tag:
                return d
    raise errors.NotFound(f"No response with id `{rid[:80]}` is available to you.", code="not_found",
                          param="response_id")


async def prepare(rt: Runtime, d: Deployment, method: str, path: str, query: str = "") -> list[tuple[str, str]]:
    """The request headers that send `method path?query` to `d`'s provider account, the cluster
    header and the client's error format included."""
    translator = rt.registry.get("openai-responses", d.target.provider_type)
    assert isinstance(translator, ResponsesToOpenAI), "OpenAI-type providers pass Responses through"
    rid, rest = _split(path) or ("", "")
    p = d.account.config
    full = p.endpoint.base_path + translator.path(d.target) + "/" + quote(provider_id(rid), safe="") + rest
    full += "?" + query if query else ""
    protocol = list(p.headers)
    credentials = await d.account.credential.headers(method, p.endpoint.authority, full, dict(protocol), b"")
    return [(":path", full), (":authority", p.endpoint.authority), (metadata.TRANSLATED_FOR_HEADER, p.name),
            *protocol, *credentials, (metadata.CLUSTER_HEADER, p.cluster_name),
            (metadata.CLIENT_API_HEADER, errors.OPENAI)]


def retags(path: str, status: int, content_type: str) -> bool:
    """Whether the answer to `path` carries a response whose ids `tagged` must tag: a 2xx JSON
    answer of retrieve, delete or cancel."""
    split = _split(path)
    return (split is not None and split[1] in _ANSWER_IS_A_RESPONSE and 200 <= status < 300
            and content_type.split(";", 1)[0].strip().lower() == "application/json")


def tagged(body: bytes, d: Deployment) -> bytes:
    """The provider's answer with the response ids tagged with `d`'s account (unchanged when it is
    not a JSON object)."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(answer, dict):
        return body
    tag_ids(answer, account_tag(d.provider))
    return orjson.dumps(answer)


def reservation(tenant: Tenant, priority: str) -> dict[str, str]:
    """The rate-limit fields of a stored-response call: one request, no tokens, no money; no
    `model` (the call names none, so a limit on a model does not apply)."""
    return {"tenant": tenant.name, "priority": priority, "reserve_tokens": "0", "reserve_usd": "0",
            "reserve_min_tokens": "0", "reserve_min_usd": "0", "usage_tokens": "0", "usage_usd": "0"}
