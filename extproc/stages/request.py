"""The client's request, read once at the edge.

`RequestHead` comes from the request headers (path → client API, tenant by mesh identity or key,
priority and deadline); `ClientRequest` from the body, once the body has passed the client API's request
check (`extproc.translate.schema`: every field type-checked, documented ranges, nesting depth; a
400 naming the field), so nothing downstream meets a field of the wrong type. Every decision
downstream — routing, admission, metering, the response's mode — reads these typed values, one
rule per field; translators still take the parsed JSON (`ClientRequest.body`) for the fields they
map. Pure functions of their inputs: no clock, no I/O. Both types are immutable; `body` must not
be mutated (a retry translates it again).
"""

from __future__ import annotations

import hashlib
import math
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from extproc import errors, metadata
from extproc.config.model import PRIORITIES, Tenant
from extproc.translate.schema import MAX_MODEL_CHARS, check_request

OPENAI_CHAT = "openai"
OPENAI_EMBEDDINGS = "openai-embeddings"
OPENAI_RESPONSES = "openai-responses"
ANTHROPIC_MESSAGES = errors.ANTHROPIC
OPENAI_COMPLETIONS = "openai-completions"  # legacy Completions, with fill-in-the-middle (`suffix`)
ANTHROPIC_COUNT_TOKENS = "anthropic-count-tokens"  # POST /v1/messages/count_tokens
# Path → client API (the translator registry's first key).
CLIENT_APIS = {"/v1/chat/completions": OPENAI_CHAT, "/v1/embeddings": OPENAI_EMBEDDINGS,
               "/v1/messages": ANTHROPIC_MESSAGES, "/v1/completions": OPENAI_COMPLETIONS,
               "/v1/messages/count_tokens": ANTHROPIC_COUNT_TOKENS, "/v1/responses": OPENAI_RESPONSES}

# A prompt head at least this long (bytes of JSON) earns an affinity key: shorter prompts gain
# little from a provider's prompt cache.
AFFINITY_MIN_BYTES = 1024
AFFINITY_PREFIX_BYTES = 8192
BYTES_PER_TOKEN = 4  # the prompt estimate before a provider counts: a quarter of the body's bytes
# On an answer whose x-interlock-priority claim was above the tenant's entitlement: the claimed class.
PRIORITY_LOWERED_HEADER = "x-interlock-priority-lowered-from"


@dataclass(frozen=True, slots=True)
class RequestHead:
    """What the request headers say. `deadline_ms` 0 means none. `priority` is the class the
    request gets (the tenant's entitlement applied); `lowered_from` the class `x-interlock-priority`
    claimed when it was above the entitlement, else ""."""

    request_id: str
    path: str  # without the query, trailing slash removed
    method: str
    tenant: Tenant
    priority: str
    deadline_ms: int
    headers: Mapping[str, str]  # lowercase names, as Envoy sent them
    lowered_from: str = ""


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """The client's body, parsed once; derived facts computed once.

    - `api`: the client API (`openai`, `openai-embeddings`, `anthropic`).
    - `max_output_tokens`: the client's limit on the answer (OpenAI `max_completion_tokens`, else
      `max_tokens`; Anthropic `max_tokens`), None when absent or 0.
    - `needs`: the capabilities the request uses (`tools`, `images`, `json`; `fim`: a completions `suffix`).
    - `affinity_key`: a digest of the stable prompt head (system prompt and first turn) when it is
      long enough to be worth a provider's prompt cache, else None.
    - `est_input_tokens`: the prompt estimate, a quarter of the body's bytes (at least 1).
    """

    api: str
    body: dict[str, Any]
    raw: bytes
    model: str
    stream: bool
    include_usage: bool
    encoding_format: str
    max_output_tokens: int | None
    needs: frozenset[str]
    affinity_key: bytes | None
    est_input_tokens: int

    @property
    def nbytes(self) -> int:
        return len(self.raw)


def normalized_path(headers: Mapping[str, str]) -> str:
    return headers.get(":path", "/").split("?", 1)[0].rstrip("/") or "/"


def error_api(path: str) -> str:
    """The API a request's errors are rendered in, known from the path alone."""
    return errors.ANTHROPIC if path.startswith("/v1/messages") else errors.OPENAI


def client_key(headers: Mapping[str, str]) -> str:
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return headers.get("x-api-key", "").strip()


XFCC_HEADER = "x-forwarded-client-cert"
_spiffe_index: tuple[Mapping[str, Tenant], dict[str, Tenant]] | None = None


def mesh_identity(headers: Mapping[str, str]) -> str | None:
    """The SPIFFE ID of the client certificate, from the `URI` of the last (this hop's) element of
    `x-forwarded-client-cert`. Trusted because Envoy sets the header itself under mTLS
    (`SANITIZE_SET`) and strips a client's own otherwise (`extproc.envoyconf.listener_tls`)."""
    raw = headers.get(XFCC_HEADER)
    if not raw:
        return None
    element = _split_quoted(raw, ",")[-1]
    for pair in _split_quoted(element, ";"):
        name, _, value = pair.partition("=")
        if name.strip().lower() == "uri":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1].replace('\\"', '"')
            return value if value.startswith("spiffe://") else None
    return None


def _split_quoted(text: str, sep: str) -> list[str]:
    parts, start, quoted, i = [], 0, False, 0
    while i < len(text):
        c = text[i]
        if c == "\\" and quoted:
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c == sep and not quoted:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def _by_spiffe_id(tenants_by_key_hash: Mapping[str, Tenant]) -> dict[str, Tenant]:
    """SPIFFE ID → tenant, rebuilt once per runtime (the mapping is replaced on every reload)."""
    global _spiffe_index
    if _spiffe_index is None or _spiffe_index[0] is not tenants_by_key_hash:
        _spiffe_index = (tenants_by_key_hash, {s: t for t in tenants_by_key_hash.values() for s in t.spiffe_ids})
    return _spiffe_index[1]


def authenticate(headers: Mapping[str, str], tenants_by_key_hash: Mapping[str, Tenant]) -> Tenant:
    """The tenant of the caller's mesh identity (a client certificate's SPIFFE ID listed in a
    tenant's `spiffe_ids`: the key it sends, if any, is then its own business, e.g. a provider
    key), else the tenant whose key the request carries; 401 when none or unknown."""
    identity = mesh_identity(headers)
    if identity is not None:
        tenant = _by_spiffe_id(tenants_by_key_hash).get(identity)
        if tenant is not None:
            return tenant
    key = client_key(headers)
    if not key:
        raise errors.Unauthorized("Missing API key: send `Authorization: Bearer <key>` or `x-api-key`.")
    tenant = tenants_by_key_hash.get(hashlib.sha256(key.encode("utf-8")).hexdigest())
    if tenant is None:
        raise errors.Unauthorized("Invalid API key.")
    return tenant


def read_head(headers: Mapping[str, str], tenants_by_key_hash: Mapping[str, Tenant]) -> RequestHead:
    """Authenticate and read the admission headers (`x-interlock-priority`,
    `x-interlock-deadline-ms`; the tenant's defaults without them). 401 / 400. A class above the
    tenant's entitlement (`Tenant.entitled_priority`) is lowered to it, not refused."""
    tenant = authenticate(headers, tenants_by_key_hash)
    claimed, deadline_ms = _admission_class(headers, tenant)
    priority = tenant.entitled_priority(claimed)
    return RequestHead(headers.get(metadata.REQUEST_ID_HEADER, ""), normalized_path(headers),
                       headers.get(":method", "GET"), tenant, priority, deadline_ms, headers,
                       claimed if priority != claimed else "")


def priority_headers(head: RequestHead | None) -> list[tuple[str, str]]:
    """The response headers naming the class a request got (`x-interlock-priority`) and, when its
    claim was lowered, the class it claimed (`x-interlock-priority-lowered-from`)."""
    if head is None:
        return []
    out = [(metadata.PRIORITY_HEADER, head.priority)]
    return [*out, (PRIORITY_LOWERED_HEADER, head.lowered_from)] if head.lowered_from else out


def _admission_class(h: Mapping[str, str], tenant: Tenant) -> tuple[str, int]:
    raw = h.get(metadata.PRIORITY_HEADER)
    if raw is None:
        priority = tenant.priority
    elif raw.strip().lower() in PRIORITIES:
        priority = raw.strip().lower()
    else:
        raise errors.BadRequest(f"Invalid {metadata.PRIORITY_HEADER} {raw[:40]!r}: expected one of "
                                f"{', '.join(PRIORITIES)}.")
    raw = h.get(metadata.DEADLINE_HEADER)
    if raw is None:
        return priority, math.ceil(tenant.deadline * 1000)
    value = raw.strip()
    if value.isascii() and value.isdigit() and 0 < int(value) <= 86_400_000:  # isdigit alone takes "²"
        return priority, int(value)
    raise errors.BadRequest(f"Invalid {metadata.DEADLINE_HEADER} {raw[:40]!r}: expected a whole number "
                            "of milliseconds between 1 and 86400000.")


def client_api(head: RequestHead, has_body: bool, max_request_bytes: int) -> str:
    """The client API a request path speaks; 404 unknown path, 405 not POST, 400 no body, 413
    a declared length over the limit (Envoy's buffer limit catches undeclared ones)."""
    api = CLIENT_APIS.get(head.path)
    if api is None:
        raise errors.NotFound(f"Unknown path {head.path}.", code="unknown_url")
    if head.method != "POST":
        raise errors.MethodNotAllowed(head.method, head.path)
    if not has_body:
        raise errors.BadRequest("The request needs a JSON body.")
    length = head.headers.get("content-length", "")
    if length.isascii() and length.isdigit() and int(length) > max_request_bytes:
        raise errors.PayloadTooLarge(f"Request body too large: {length} bytes, the limit is {max_request_bytes}.")
    return api


def parse_json(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object; 400 otherwise."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise errors.BadRequest(f"The request body is not valid JSON: {e.msg} (position {e.pos}).") from None
    if not isinstance(body, dict):
        raise errors.BadRequest("The request body must be a JSON object.")
    return body


# Visible ASCII but `%`: what a header value may carry as is (RFC 9110 field-vchar, less the escape).
_HEADER_SAFE = frozenset(string.printable[:94]) - {"%"}


def header_value(text: str, limit: int = MAX_MODEL_CHARS) -> str:
    """`text` as a bounded, valid header value: anything but visible ASCII percent-encoded (as
    UTF-8), then cut to `limit` characters (never inside an escape). For every value taken from
    the request or the config that goes into a response header (`x-interlock-model`, ...): a
    client's 5 MB model name or one holding CR LF must not reach (or break) the header block."""
    if len(text) <= limit and _HEADER_SAFE.issuperset(text):
        return text
    out: list[str] = []
    n = 0
    for c in text[:limit]:
        piece = c if c in _HEADER_SAFE else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
        if n + len(piece) > limit:
            break
        out.append(piece)
        n += len(piece)
    return "".join(out)


def requested_model(body: Mapping[str, Any]) -> str | None:
    model = body.get("model")
    return model if isinstance(model, str) and model else None


def client_request(api: str, body: dict[str, Any], raw: bytes) -> ClientRequest:
    """Check a parsed body (`parse_json`) against its client API (400 naming the first bad
    field) and read the fields decisions need."""
    check_request(api, body)
    model = body["model"]
    if api in (OPENAI_COMPLETIONS, ANTHROPIC_COUNT_TOKENS):
        return _short_request(api, body, raw)
    embeddings = api == OPENAI_EMBEDDINGS
    stream = not embeddings and body.get("stream") is True
    opts = body.get("stream_options")
    if api == OPENAI_RESPONSES:  # a Responses stream always ends with its usage (`response.completed`)
        return ClientRequest(
            api=api, body=body, raw=raw, model=model, stream=stream, include_usage=stream, encoding_format="float",
            max_output_tokens=max_output_tokens(api, body), needs=responses_needs(body),
            affinity_key=affinity_key(body), est_input_tokens=max(1, len(raw) // BYTES_PER_TOKEN))
    return ClientRequest(
        api=api, body=body, raw=raw, model=model, stream=stream,
        include_usage=bool(stream and isinstance(opts, dict) and opts.get("include_usage")),
        encoding_format="base64" if embeddings and body.get("encoding_format") == "base64" else "float",
        max_output_tokens=None if embeddings else max_output_tokens(api, body),
        needs=frozenset() if embeddings else needs(body),
        affinity_key=None if embeddings else affinity_key(body),
        est_input_tokens=max(1, len(raw) // BYTES_PER_TOKEN))


_FIM = frozenset({"fim"})


def _short_request(api: str, body: dict[str, Any], raw: bytes) -> ClientRequest:
    """Completions (the code-completion path: only what routing and metering read, no prompt
    walk; `needs` is `fim` with a `suffix`, so routing keeps to models that fill in the middle) and token counting (spends no tokens: no output, a prompt estimate of 0, so the rate
    limit charges the request and no tokens; never streamed)."""
    if api == ANTHROPIC_COUNT_TOKENS:
        return ClientRequest(api=api, body=body, raw=raw, model=body["model"], stream=False, include_usage=False,
                             encoding_format="float", max_output_tokens=None, needs=needs(body), affinity_key=None,
                             est_input_tokens=0)
    stream = body.get("stream") is True
    opts = body.get("stream_options")
    return ClientRequest(
        api=api, body=body, raw=raw, model=body["model"], stream=stream,
        include_usage=bool(stream and isinstance(opts, dict) and opts.get("include_usage")),
        encoding_format="float", max_output_tokens=max_output_tokens(api, body),
        needs=_FIM if body.get("suffix") is not None else frozenset(), affinity_key=None,
        est_input_tokens=max(1, len(raw) // BYTES_PER_TOKEN))


def max_output_tokens(api: str, body: Mapping[str, Any]) -> int | None:
    """The one rule for the client's output limit: a non-negative integer (never a boolean),
    else 400 naming the field (the request check already ensures it); absent or 0 → None."""
    names = ("max_tokens",) if api in (ANTHROPIC_MESSAGES, OPENAI_COMPLETIONS) else ("max_completion_tokens",
                                                                                      "max_tokens")
    if api == OPENAI_RESPONSES:
        names = ("max_output_tokens",)
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise errors.BadRequest(f"`{name}` must be a non-negative integer.", param=name)
        return value or None
    return None


def needs(body: Mapping[str, Any]) -> frozenset[str]:
    """Capabilities the request uses: `tools`, `json` (a JSON response format or Anthropic
    `output_config.format`), `images` (an image part in any message)."""
    found = set()
    if body.get("tools"):
        found.add("tools")
    fmt = body.get("response_format")
    output_config = body.get("output_config")
    if (isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")) or (
            isinstance(output_config, dict) and output_config.get("format")):
        found.add("json")
    messages = body.get("messages")
    for m in messages if isinstance(messages, list) else ():
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list) and any(
                isinstance(p, dict) and p.get("type") in ("image_url", "image") for p in content):
            found.add("images")
            break
    return frozenset(found)


def responses_needs(body: Mapping[str, Any]) -> frozenset[str]:
    """`needs` of a Responses body: `tools`, `json` (`text.format` a JSON schema or object),
    `images` (an `input_image` part in any input message)."""
    found = set()
    if body.get("tools"):
        found.add("tools")
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        found.add("json")
    items = body.get("input")
    for item in items if isinstance(items, list) else ():
        content = item.get("content") if isinstance(item, dict) else None
        if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == "input_image" for p in content):
            found.add("images")
            break
    return frozenset(found)


def affinity_key(body: Mapping[str, Any]) -> bytes | None:
    """A hash of the stable head of the prompt (system prompt and first turn; Responses:
    `instructions` and the first input items): requests sharing it share the provider's prompt
    cache, so they should land on the same deployment."""
    messages = body.get("messages")
    if messages is None and "input" in body:
        messages = body["input"] if isinstance(body["input"], list) else [body["input"]]
    system = body.get("system") or body.get("instructions")
    head: list[Any] = [system] if system else []
    if isinstance(messages, list):
        head += messages[:2]
    prefix = orjson.dumps(head)
    if len(prefix) < AFFINITY_MIN_BYTES:
        return None
    return hashlib.blake2b(prefix[:AFFINITY_PREFIX_BYTES], digest_size=16).digest()
