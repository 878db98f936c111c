"""Hypothesis strategies for the fuzz suite: request bodies shaped like each client API and then
mutated, raw body bytes, and request headers.

A body is built as a valid skeleton of its API (OpenAI chat completions, OpenAI embeddings,
Anthropic messages) with optional fields drawn from what the API defines, then a few mutations are
applied at random places: a value of the wrong type, null, a huge or negative number, a huge or
odd unicode string, deep nesting (up to ~1,100 levels), an unknown field, a deleted field.

Values too large for Hypothesis to draw cheaply (megabyte strings, thousand-level nesting) are
drawn as placeholders (`Big`, `Deep`) and expanded by `encode` when the body is serialised.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from tests.fuzz import profiles

CHAT_MODELS = ["gpt-4o-mini", "azure-gpt-4o", "claude-haiku-4-5", "gemini-2.5-flash", "vertex-gemini-pro",
               "vertex-claude", "bedrock-claude-sonnet", "auto"]
"""Every chat model of the fuzz gateway (one per provider type, `auto` a route over four)."""
EMBEDDING_MODELS = ["text-embedding-3-small", "azure-embedding", "gemini-embedding"]

# ---------------------------------------------------------------------------------------------
# Placeholders for values too large to draw


@dataclass(frozen=True)
class Big:
    """A string of `n` characters (`char` repeated)."""

    n: int
    char: str = "x"


@dataclass(frozen=True)
class Deep:
    """`n` nested JSON containers: `[[[...]]]` or `{"a":{"a":...}}` around `leaf`."""

    n: int
    kind: str = "list"
    leaf: str = "1"


_MARK = "\u0001fuzz-placeholder-{}\u0001"


def encode(doc: Any, *, ensure_ascii: bool = True) -> bytes:
    """Serialise a drawn document for sending, expanding `Big` and `Deep` placeholders in place
    (nothing while a campaign example runs dry: it is never sent). Strategies use `serialise`:
    what they draw next may depend on the bytes."""
    if profiles.DRY[0]:
        return b"{}"
    return serialise(doc, ensure_ascii=ensure_ascii)


def serialise(doc: Any, *, ensure_ascii: bool = True) -> bytes:
    expansions: dict[str, str] = {}

    def walk(x: Any) -> Any:
        if isinstance(x, Big):
            return x.char * x.n
        if isinstance(x, Deep):
            token = _MARK.format(len(expansions))
            text = "[" * x.n + x.leaf + "]" * x.n if x.kind == "list" else '{"a":' * x.n + x.leaf + "}" * x.n
            expansions[json.dumps(token, ensure_ascii=ensure_ascii)] = text
            return token
        if isinstance(x, dict):
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x

    text = json.dumps(walk(doc), ensure_ascii=ensure_ascii, separators=(",", ":"))
    for token, expanded in expansions.items():
        text = text.replace(token, expanded, 1)
    return text.encode("utf-8", "surrogatepass")


# ---------------------------------------------------------------------------------------------
# Scalars and junk

HUGE_INTS = [2**31, 2**31 - 1, 2**53 + 1, 2**63, 2**63 - 1, 2**64, -(2**63), 10**30, 10**400, -1, 0]
HUGE_FLOATS = [1e308, -1e308, 5e-324, 1.7976931348623157e308, 1e-30, -0.0, 0.5, 2.5]

unicode_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
"""Any code point, lone surrogates included (escaped as \\udXXX in the JSON)."""

odd_strings = st.one_of(
    st.sampled_from(["", " ", "\x00", "\u202e", "\ufeff", "\ud800", "null", "true", "0", "-1", "NaN", "[]", "{}",
                     "\u0000\u0001\u001f", "a\nb\r\nc", "💥" * 8, "ｇｐｔ", "../../etc/passwd", "%00", "${jndi:x}",
                     "\\", '"', "system", "user", "assistant", "tool", "function", "developer", "auto", "none",
                     "required", "any", "text", "image_url", "json_object", "json_schema", "base64", "float"]),
    unicode_text,
)

big_strings = st.builds(Big, st.sampled_from([4096, 70_000, 300_000, 1_040_000, 1_100_000]),
                        st.sampled_from(["x", "é", "💥", " ", "\\"]))
deep_values = st.builds(Deep, st.sampled_from([64, 200, 253, 256, 512, 1000, 1024, 1100]),
                        st.sampled_from(["list", "dict"]), st.sampled_from(["1", '"x"', "null", "{}", "[]"]))

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from(HUGE_INTS),
    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(HUGE_FLOATS), odd_strings,
)


def junk(depth: int = 2) -> st.SearchStrategy[Any]:
    """Any JSON value: scalars, small containers of them, huge strings, deep nesting."""
    small = st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(odd_strings, inner, max_size=4)), max_leaves=8)
    return st.one_of(small, small, small, big_strings, deep_values)


# ---------------------------------------------------------------------------------------------
# OpenAI chat completions

def _opt(d: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=d)


text_parts = st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=20)})
image_parts = st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.fixed_dictionaries(
    {"url": st.sampled_from(["https://example.com/cat.png", "data:image/png;base64,iVBORw0KGgo=",
                             "gs://bucket/x.jpg", "data:,", "ftp://x", "not a url"])},
    optional={"detail": st.sampled_from(["auto", "low", "high"])})})
openai_content = st.one_of(st.text(max_size=30), st.lists(st.one_of(text_parts, image_parts), min_size=1, max_size=3))
tool_call = st.fixed_dictionaries({
    "id": st.sampled_from(["call_1", "call_2", ""]), "type": st.just("function"),
    "function": st.fixed_dictionaries({"name": st.sampled_from(["get_weather", "x"]),
                                       "arguments": st.sampled_from(['{"city":"Paris"}', "{}", "not json", ""])})})
openai_message = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "developer"]), "content": openai_content},
                          optional={"name": st.text(max_size=8)}),
    st.fixed_dictionaries({"role": st.just("assistant")},
                          optional={"content": st.one_of(st.none(), openai_content),
                                    "tool_calls": st.lists(tool_call, min_size=1, max_size=2),
                                    "refusal": st.none()}),
    st.fixed_dictionaries({"role": st.just("tool"), "tool_call_id": st.sampled_from(["call_1", "zz"]),
                           "content": openai_content}),
)
json_schema = st.sampled_from([
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    {"type": "object", "properties": {}}, {}, {"type": "string"},
])
openai_tool = st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries(
    {"name": st.sampled_from(["get_weather", "lookup", "a" * 64])},
    optional={"description": st.text(max_size=20), "parameters": json_schema, "strict": st.booleans()})})
openai_chat_fields = _opt({
    "max_tokens": st.integers(1, 4096), "max_completion_tokens": st.integers(1, 4096),
    "temperature": st.floats(0, 2), "top_p": st.floats(0, 1), "n": st.integers(1, 3),
    "stream": st.booleans(), "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "stop": st.one_of(st.text(max_size=5), st.lists(st.text(max_size=5), max_size=4)),
    "presence_penalty": st.floats(-2, 2), "frequency_penalty": st.floats(-2, 2),
    "logit_bias": st.dictionaries(st.sampled_from(["50256", "1", "x"]), st.integers(-100, 100), max_size=2),
    "logprobs": st.booleans(), "top_logprobs": st.integers(0, 20), "seed": st.integers(-(2**31), 2**31),
    "user": st.text(max_size=10), "tools": st.lists(openai_tool, min_size=1, max_size=2),
    "tool_choice": st.one_of(st.sampled_from(["auto", "none", "required"]), st.fixed_dictionaries(
        {"type": st.just("function"), "function": st.fixed_dictionaries({"name": st.just("get_weather")})})),
    "parallel_tool_calls": st.booleans(),
    "response_format": st.one_of(
        st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object"])}),
        st.fixed_dictionaries({"type": st.just("json_schema"), "json_schema": st.fixed_dictionaries(
            {"name": st.just("out"), "schema": json_schema}, optional={"strict": st.booleans()})})),
    "reasoning_effort": st.sampled_from(["minimal", "low", "medium", "high"]),
    "service_tier": st.sampled_from(["auto", "default", "flex", "priority"]),
    "metadata": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
    "store": st.booleans(), "modalities": st.just(["text"]),
})
openai_chat = st.builds(
    lambda model, messages, extra: {"model": model, "messages": messages, **extra},
    st.sampled_from(CHAT_MODELS), st.lists(openai_message, min_size=1, max_size=4), openai_chat_fields)

# ---------------------------------------------------------------------------------------------
# OpenAI embeddings

openai_embeddings = st.builds(
    lambda model, inp, extra: {"model": model, "input": inp, **extra},
    st.sampled_from(EMBEDDING_MODELS),
    st.one_of(st.text(min_size=1, max_size=30), st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=4),
              st.lists(st.integers(0, 100_000), min_size=1, max_size=8),
              st.lists(st.lists(st.integers(0, 100_000), min_size=1, max_size=4), min_size=1, max_size=3)),
    _opt({"dimensions": st.integers(1, 3072), "encoding_format": st.sampled_from(["float", "base64"]),
          "user": st.text(max_size=10)}))

# ---------------------------------------------------------------------------------------------
# Anthropic messages

a_text = st.fixed_dictionaries({"type": st.just("text"), "text": st.text(min_size=1, max_size=20)},
                               optional={"cache_control": st.just({"type": "ephemeral"})})
a_image = st.fixed_dictionaries({"type": st.just("image"), "source": st.one_of(
    st.fixed_dictionaries({"type": st.just("base64"), "media_type": st.sampled_from(["image/png", "image/gif"]),
                           "data": st.sampled_from(["iVBORw0KGgo=", "", "!!"])}),
    st.fixed_dictionaries({"type": st.just("url"), "url": st.sampled_from(["https://example.com/a.png", "x"])}))})
a_tool_use = st.fixed_dictionaries({"type": st.just("tool_use"), "id": st.sampled_from(["toolu_1", ""]),
                                    "name": st.sampled_from(["get_weather", "x"]),
                                    "input": st.sampled_from([{"city": "Paris"}, {}])})
a_tool_result = st.fixed_dictionaries({"type": st.just("tool_result"), "tool_use_id": st.sampled_from(["toolu_1", "q"])},
                                      optional={"content": st.one_of(st.text(max_size=10), st.lists(a_text, max_size=2)),
                                                "is_error": st.booleans()})
a_thinking = st.fixed_dictionaries({"type": st.just("thinking"), "thinking": st.text(max_size=10),
                                    "signature": st.text(max_size=10)})
a_document = st.fixed_dictionaries({"type": st.just("document"), "source": st.fixed_dictionaries(
    {"type": st.just("text"), "media_type": st.just("text/plain"), "data": st.text(max_size=10)})})
a_blocks = st.lists(st.one_of(a_text, a_image, a_tool_use, a_tool_result, a_thinking, a_document),
                    min_size=1, max_size=3)
a_message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]),
                                   "content": st.one_of(st.text(min_size=1, max_size=30), a_blocks)})
a_tool = st.fixed_dictionaries({"name": st.sampled_from(["get_weather", "lookup"]), "input_schema": json_schema},
                               optional={"description": st.text(max_size=10), "cache_control": st.just(
                                   {"type": "ephemeral"})})
anthropic_fields = _opt({
    "system": st.one_of(st.text(max_size=20), st.lists(a_text, min_size=1, max_size=2)),
    "temperature": st.floats(0, 1), "top_p": st.floats(0, 1), "top_k": st.integers(0, 500),
    "stop_sequences": st.lists(st.text(max_size=5), max_size=3), "stream": st.booleans(),
    "tools": st.lists(a_tool, min_size=1, max_size=2),
    "tool_choice": st.one_of(st.fixed_dictionaries({"type": st.sampled_from(["auto", "any", "none"])}),
                             st.fixed_dictionaries({"type": st.just("tool"), "name": st.just("get_weather")})),
    "metadata": st.fixed_dictionaries({}, optional={"user_id": st.text(max_size=8)}),
    "thinking": st.one_of(st.fixed_dictionaries({"type": st.just("enabled"), "budget_tokens": st.integers(0, 4096)}),
                          st.just({"type": "disabled"})),
    "service_tier": st.sampled_from(["auto", "standard_only"]),
})
anthropic_messages = st.builds(
    lambda model, max_tokens, messages, extra: {"model": model, "max_tokens": max_tokens, "messages": messages,
                                                **extra},
    st.sampled_from(CHAT_MODELS), st.integers(1, 1024), st.lists(a_message, min_size=1, max_size=4),
    anthropic_fields)

VALID: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]},
    "/v1/embeddings": {"model": "text-embedding-3-small", "input": "hi"},
    "/v1/messages": {"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
}
"""One small valid request per client API path (translated where the API allows it)."""

SKELETONS = {"/v1/chat/completions": openai_chat, "/v1/embeddings": openai_embeddings,
             "/v1/messages": anthropic_messages}

# Fields of any API that the mutations may add (a known field in the wrong API is "unknown").
KNOWN_FIELDS = sorted({"model", "messages", "input", "max_tokens", "max_completion_tokens", "temperature", "top_p",
                       "top_k", "n", "stream", "stream_options", "stop", "stop_sequences", "tools", "tool_choice",
                       "response_format", "reasoning_effort", "service_tier", "logprobs", "top_logprobs", "seed",
                       "system", "thinking", "metadata", "dimensions", "encoding_format", "user", "logit_bias",
                       "parallel_tool_calls", "modalities", "audio", "prediction", "functions", "function_call",
                       "web_search_options", "store", "container", "mcp_servers", "betas", "content", "role",
                       "type", "text", "image_url", "source", "tool_calls", "tool_call_id", "name", "input_schema"})


# ---------------------------------------------------------------------------------------------
# Mutations


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in `doc` that holds a value (the root excluded)."""
    out: list[tuple[Any, ...]] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append((*prefix, k))
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.append((*prefix, i))
            out += _paths(v, (*prefix, i))
    return out


def _containers(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = [prefix] if isinstance(doc, dict | list) else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _containers(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _containers(v, (*prefix, i))
    return out


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        doc = doc[p]
    return doc


@st.composite
def mutated(draw: st.DrawFn, skeleton: st.SearchStrategy[dict[str, Any]], max_mutations: int = 3) -> Any:
    """A document from `skeleton` with 0..max_mutations mutations (about one in six stays valid, so
    the happy path and streams are fuzzed too). Half the mutations hit a top-level field, where
    each API's own checks start."""
    doc = copy.deepcopy(draw(skeleton))  # sampled values are shared objects: never mutate them
    count = draw(st.integers(0, max_mutations * 2)) // 2 or draw(st.integers(0, 1))
    for _ in range(count):
        op = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add", "model", "wrap"]))
        if op == "model":
            doc["model"] = draw(st.one_of(st.sampled_from(CHAT_MODELS + EMBEDDING_MODELS + ["", "*", "gpt-4o-mini "]),
                                          odd_strings, big_strings, junk()))
            continue
        paths = _paths(doc)
        if op == "add" or not paths:
            holders = [p for p in _containers(doc) if isinstance(_at(doc, p), dict)] or [()]
            holder = _at(doc, draw(st.sampled_from(holders)))
            key = draw(st.one_of(st.sampled_from(KNOWN_FIELDS), odd_strings))
            holder[key] = draw(junk())
            continue
        top = [p for p in paths if len(p) == 1]
        at_top = draw(st.booleans())
        path = draw(st.sampled_from(top if top and at_top else paths))
        parent, last = _at(doc, path[:-1]), path[-1]
        if op == "delete":
            del parent[last]
        elif op == "wrap":
            parent[last] = [parent[last]] if draw(st.booleans()) else {"v": parent[last]}
        else:
            parent[last] = draw(junk())
    return doc


def top_level_junk() -> st.SearchStrategy[Any]:
    """Bodies that are JSON but not an object, or an object of nothing expected."""
    return st.one_of(junk(), st.dictionaries(odd_strings, junk(), max_size=5))


# ---------------------------------------------------------------------------------------------
# Raw body bytes

BOMS = [b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff"]
INVALID_UTF8 = [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80", b"\xe2\x82", b"\xfe"]
RAW_JSONISH = [b"", b" ", b"null", b"true", b"1", b"-0", b"1e999999", b"123456789012345678901234567890",
               b'"str"', b"[]", b"{}", b"{", b"}", b"[", b'{"model":', b'{"model":"gpt-4o-mini",}', b"NaN",
               b'{"model":NaN}', b'{"model":Infinity,"messages":-Infinity}', b"{'model':'gpt-4o-mini'}",
               b'{"model":"gpt-4o-mini"} trailing', b'{"model":"gpt-4o-mini"}{"model":"x"}',
               b'/* c */{"model":"gpt-4o-mini"}', b'{"model":"\\ud800"}', b'{"model":"\\u00"}',
               b'{"a":' * 100_000, b"[" * 100_000 + b"]" * 100_000, b"\x00" * 16, b'{"model":"gpt-4o-mini"\x00}']


@st.composite
def raw_body(draw: st.DrawFn, skeleton: st.SearchStrategy[dict[str, Any]]) -> bytes:
    """Bytes that are not (quite) a valid body of the API: truncated, with a BOM, in another
    encoding, with invalid UTF-8, duplicate keys, non-JSON literals, or random bytes."""
    valid = serialise(draw(skeleton), ensure_ascii=draw(st.booleans()))
    kind = draw(st.sampled_from(["truncate", "bom", "utf16", "invalid_utf8", "flip", "duplicate", "literal",
                                 "random", "splice"]))
    if kind == "truncate":
        return valid[: draw(st.integers(0, max(0, len(valid) - 1)))]
    if kind == "bom":
        return draw(st.sampled_from(BOMS)) + valid
    if kind == "utf16":
        return valid.decode("utf-8", "surrogatepass").encode(draw(st.sampled_from(
            ["utf-16", "utf-16-le", "utf-32", "latin-1"])), "replace")
    if kind == "invalid_utf8":
        at = draw(st.integers(0, len(valid)))
        return valid[:at] + draw(st.sampled_from(INVALID_UTF8)) + valid[at:]
    if kind == "flip":
        at = draw(st.integers(0, max(0, len(valid) - 1)))
        return valid[:at] + bytes([draw(st.integers(0, 255))]) + valid[at + 1:]
    if kind == "duplicate":
        return valid[:-1] + b',"model":' + serialise(draw(junk())) + b"}"
    if kind == "literal":
        return draw(st.sampled_from(RAW_JSONISH))
    if kind == "splice":
        at = draw(st.integers(0, len(valid)))
        return valid[:at] + draw(st.sampled_from(RAW_JSONISH)) + valid[at:]
    return draw(st.binary(max_size=200))


# ---------------------------------------------------------------------------------------------
# Headers

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
header_names = st.text(st.sampled_from(TCHARS), min_size=1, max_size=40)
# A field value: visible ASCII, spaces and tabs inside, and obs-text (bytes 0x80-0xff).
header_values = st.one_of(
    st.binary(max_size=60).map(lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7F or c == 0x09).strip()),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60).map(lambda s: s.strip().encode()),
    st.sampled_from([b"", b"0", b"-1", b"1e99", b"99999999999999999999", b" 5", b"5.5", b"abc", b"null", b"\xff\xfe",
                     b"interactive", b"batch", b"default", b"openai", b"anthropic", b"gpt-4o-mini", b"*", b","]),
    st.builds(lambda n, c: c * n, st.sampled_from([1024, 8192, 16384, 60_000]), st.sampled_from([b"a", b"\xe9"])),
)
INTERLOCK_HEADERS = ["x-interlock-priority", "x-interlock-deadline-ms", "x-interlock-client-api",
                     "x-interlock-cluster", "x-interlock-stage", "x-interlock-translated-for", "x-interlock-model",
                     "x-interlock-provider", "x-interlock-route", "x-interlock-attempts",
                     "x-interlock-dropped-params"]
SPECIAL_HEADERS = ["anthropic-version", "anthropic-beta", "openai-beta", "x-request-id", "traceparent", "tracestate",
                   "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip", "user-agent", "accept",
                   "accept-encoding", "accept-charset", "te", "expect", "upgrade", "connection", "keep-alive",
                   "proxy-authorization", "cookie", "origin", "referer", "range", "if-none-match", "via", "forwarded",
                   "x-envoy-retry-on", "x-envoy-max-retries", "x-envoy-upstream-rq-timeout-ms",
                   "x-envoy-upstream-rq-per-try-timeout-ms", "x-envoy-expected-rq-timeout-ms",
                   "x-envoy-original-path", "x-envoy-decorator-operation", "x-envoy-force-trace",
                   "x-envoy-internal", "x-envoy-hedge-on-per-try-timeout", "grpc-timeout", "x-http-method-override",
                   "content-encoding", "content-language", "host", "authorization", "x-api-key", "content-type"]
CONTENT_TYPES = [b"application/json", b"application/json; charset=utf-8", b"application/json; charset=utf-16",
                 b"APPLICATION/JSON", b"application/json;", b"text/plain", b"text/event-stream", b"",
                 b"multipart/form-data; boundary=x", b"application/x-www-form-urlencoded", b"application/xml",
                 b"application/grpc", b"application/json, text/plain", b"*/*", b"application/octet-stream"]


def auth_headers(key: str) -> st.SearchStrategy[list[tuple[bytes, bytes]]]:
    k = key.encode()
    forms = [
        [(b"authorization", b"Bearer " + k)], [(b"x-api-key", k)], [(b"Authorization", b"bearer " + k)],
        [(b"authorization", b"BEARER " + k)], [(b"authorization", b"Bearer  " + k)],
        [(b"authorization", b"Bearer " + k + b" ")], [(b"authorization", k)], [(b"authorization", b"Bearer")],
        [(b"authorization", b"Bearer ")], [(b"authorization", b"Basic c2staXQtdGVuYW50Og==")],
        [(b"authorization", b"Bearer " + k), (b"authorization", b"Bearer " + k)],
        [(b"authorization", b"Bearer " + k), (b"x-api-key", b"sk-other")],
        [(b"authorization", b"Bearer sk-other"), (b"x-api-key", k)], [(b"x-api-key", b"")],
        [(b"x-api-key", k), (b"x-api-key", k)], [(b"x-api-key", k + b"," + k)], [],
        [(b"authorization", b"Bearer \xff\xfe")], [(b"authorization", b"Bearer " + b"k" * 8192)],
        [(b"proxy-authorization", b"Bearer " + k)], [(b"x-api-key", b"Bearer " + k)],
    ]
    return st.sampled_from(forms)


@st.composite
def header_sets(draw: st.DrawFn, key: str) -> list[tuple[bytes, bytes]]:
    """The request's headers: an auth form, a content type, then extra headers (known ones with junk
    values, the gateway's own `x-interlock-*`, random names, sometimes a hundred or more)."""
    headers = list(draw(auth_headers(key)))
    ct = draw(st.one_of(st.just([b"application/json"]), st.lists(st.sampled_from(CONTENT_TYPES), max_size=2)))
    headers += [(b"content-type", c) for c in ct]
    extra = st.tuples(st.one_of(st.sampled_from(INTERLOCK_HEADERS + SPECIAL_HEADERS), header_names)
                      .map(lambda s: s.encode()), header_values)
    headers += draw(st.lists(extra, max_size=8))
    if draw(st.integers(0, 9)) == 0:
        n = draw(st.sampled_from([50, 95, 101, 150]))
        headers += [(f"x-fuzz-{i}".encode(), b"v") for i in range(n)]
    return headers
