"""Hypothesis strategies for client request bodies, drawn from the client APIs' type tables
(`extproc.translate.schema`), and the SDK oracle that judges them (`sdk_rejects`).

`bodies(api)` draws bodies that follow the table (fields present or not, every union member,
literal values, numbers at and past the documented bounds) and then, often, breaks them: one
value anywhere replaced by any JSON value, a required field removed, or a deep nest planted.
So a run sees valid bodies of every shape the translators map and invalid ones of every class.

`sdk_problems(api, body)` asks the official SDK types (`simulator.validate`, the test-only
oracle) and keeps the problems the gateway's check must agree with, leaving out what the gateway
deliberately allows: fields the type does not declare (extensions), null for a field (absent),
a string where the SDK wants one of its literals (open literal sets: newer enum values and block
or tool types pass), and everything inside an object whose tag is such a newer string.
"""

from __future__ import annotations

import re
from typing import Any

from hypothesis import strategies as st

from extproc.translate.schema import (
    engine,
    grammar,
    rules,
    sdk_anthropic_messages,
    sdk_openai_chat,
    sdk_openai_embeddings,
)
from simulator.validate import (
    anthropic_messages_request_problems,
    openai_chat_request_problems,
    openai_embedding_request_problems,
)

OPENAI, ANTHROPIC, EMBEDDINGS = "openai", "anthropic", "openai-embeddings"
APIS = (OPENAI, ANTHROPIC, EMBEDDINGS)
TABLES = {
    OPENAI: (sdk_openai_chat.TYPES, sdk_openai_chat.ROOT, {}),
    ANTHROPIC: (sdk_anthropic_messages.TYPES, sdk_anthropic_messages.ROOT, rules.ANTHROPIC_LEGACY),
    EMBEDDINGS: (sdk_openai_embeddings.TYPES, sdk_openai_embeddings.ROOT, {}),
}
BOUNDS = {OPENAI: rules.OPENAI_CHAT_BOUNDS, ANTHROPIC: rules.ANTHROPIC_BOUNDS, EMBEDDINGS: rules.EMBEDDINGS_BOUNDS}
SDK_CHECKS = {OPENAI: openai_chat_request_problems, ANTHROPIC: anthropic_messages_request_problems,
              EMBEDDINGS: openai_embedding_request_problems}
CLOSED = {EMBEDDINGS: {"encoding_format"}}

MAX_NEST = 5  # object levels a drawn body goes down before it stops adding optional fields
# Top-level fields most translators refuse outright: drawn rarely, so that most bodies reach the
# message and tool conversions.
RARE = {OPENAI: {"audio", "functions", "function_call", "web_search_options", "moderation", "logprobs",
                 "top_logprobs", "n", "modalities", "prediction"},
        ANTHROPIC: {"container", "diagnostics"}, EMBEDDINGS: set()}
_STRINGS = st.one_of(st.sampled_from(["", "x", "hello", "data:image/png;base64,iVBORw0KGgo=", "https://e.x/a.png",
                                      "{}", '{"a": 1}', "auto", "none", "text", "function", "user"]),
                     st.text(max_size=6))
_JSON = st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False,
                     allow_infinity=False) | _STRINGS,
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_STRINGS, inner, max_size=3),
                     max_leaves=6)


def _numbers(bound: engine.Bound | None, integer: bool) -> st.SearchStrategy[Any]:
    edges: list[Any] = [0, 1, -1, 2**63 - 1, 2**63, -(2**63), float(2**64)]
    if bound is not None:
        for b in (bound.lo, bound.hi):
            if b is not None:
                edges += [b, b - 1, b + 1] if integer else [b, b - 0.5, b + 0.5]
    small = st.integers(0, 300) if integer else st.floats(0, 1, allow_nan=False)
    return st.one_of(small, small, small, st.sampled_from(edges))


@st.composite
def _value(draw: st.DrawFn, expr: str, where: str, api: str, nest: int) -> Any:
    types, _, extra = TABLES[api]
    members = grammar.split_union(expr.lstrip("!"))
    member = draw(st.sampled_from(members))
    bound = BOUNDS[api].get(where)
    if member == "null":
        return None
    if member in ("true", "false"):
        return member == "true"
    if member.startswith("="):
        return member[1:] if draw(st.integers(0, 9)) else draw(_STRINGS)
    if member == "str":
        return draw(_STRINGS)
    if member in ("int", "num"):
        return draw(_numbers(bound, member == "int"))
    if member == "bool":
        return draw(st.booleans())
    if member == "any":
        return draw(_JSON)
    if member.startswith("["):
        size = draw(st.integers(1 if bound and bound.lo else 0, 3 if nest < MAX_NEST else 1))
        return [draw(_value(member[1:-1], f"{where}[]", api, nest + 1)) for _ in range(size)]
    if member.startswith("{"):
        keys = draw(st.lists(_STRINGS, max_size=2, unique=True))
        return {k: draw(_value(member[1:-1], f"{where}.*", api, nest + 1)) for k in keys}
    fields = {**types[member], **extra.get(member, {})}
    out: dict[str, Any] = {}
    rare = RARE[api] if member == TABLES[api][1] else ()
    for name, field_expr in fields.items():
        # one in 4 optional fields; one in 41 rare ones (Hypothesis favours 0 and the ends: ask for 23)
        odds, hit = (40, 23) if name in rare else (3, 0)
        if field_expr.startswith("!") or (nest < MAX_NEST and draw(st.integers(0, odds)) == hit):
            out[name] = draw(_value(field_expr, f"{member}.{name}", api, nest + 1))
    return out


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*path, i))
    return out


def _replace(body: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(body, dict):
        return {**body, head: _replace(body[head], rest, new)}
    return [_replace(v, rest, new) if i == head else v for i, v in enumerate(body)]


def _delete(body: Any, path: tuple[Any, ...]) -> Any:
    if len(path) == 1:
        return {k: v for k, v in body.items() if k != path[0]} if isinstance(body, dict) else \
            [v for i, v in enumerate(body) if i != path[0]]
    head = path[0]
    if isinstance(body, dict):
        return {**body, head: _delete(body[head], path[1:])}
    return [_delete(v, path[1:]) if i == head else v for i, v in enumerate(body)]


def _nest(depth: int) -> Any:
    value: Any = {}
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def bodies(draw: st.DrawFn, api: str) -> dict[str, Any]:
    """A body of client API `api`: valid by its table, then (usually) broken somewhere."""
    _, root, _ = TABLES[api]
    body = draw(_value(f"!{root}", root, api, 0))
    body["model"] = draw(st.sampled_from(["m", "m", "m", "gpt-4o", "gpt-4o", "x" * 300]))
    if api == ANTHROPIC and draw(st.booleans()):  # older clients' sampling fields
        body.update({k: draw(_numbers(BOUNDS[api].get(f"MessageCreateParams.{k}"), k == "top_k"))
                     for k in draw(st.lists(st.sampled_from(["temperature", "top_p", "top_k"]), max_size=2))})
    how = draw(st.sampled_from(["valid", "valid", "valid", "replace", "replace", "delete", "nest"]))
    paths = _paths(body)[1:]
    if how == "replace" and paths:
        body = _replace(body, draw(st.sampled_from(paths)), draw(_JSON))
    elif how == "delete" and paths:
        body = _delete(body, draw(st.sampled_from(paths)))
    elif how == "nest" and paths:
        body = _replace(body, draw(st.sampled_from(paths)), _nest(draw(st.sampled_from([20, 70, 300]))))
    return body


# --- the oracle ---------------------------------------------------------------------------------

_SEGMENT = re.compile(r"\[(\d+)\]|\.?([^.\[\]]+)")
_MISSING = object()


def at(body: Any, path: str) -> Any:
    """The value at an SDK problem path (``messages[0].content``), or `_MISSING`."""
    value = body
    for index, key in _SEGMENT.findall(path):
        if key and isinstance(value, dict) and key in value:
            value = value[key]
        elif index and isinstance(value, list) and int(index) < len(value):
            value = value[int(index)]
        else:
            return _MISSING
    return value


def _split(problem: str) -> tuple[str, str]:
    path, _, message = problem.rpartition(": ")
    return path, message


def _is_literal_complaint(message: str) -> bool:
    return message.startswith("must be one of '") or bool(re.fullmatch(r"must be '[^']*'", message))


def sdk_problems(api: str, body: dict[str, Any]) -> list[tuple[str, str]]:
    """The SDK's (path, problem) pairs the gateway's check must agree with (see the docstring)."""
    found = [_split(p) for p in SDK_CHECKS[api](body)]
    newer_tags = [path.rsplit(".", 1)[0] for path, message in found
                  if path.rsplit(".", 1)[-1] in ("type", "role") and _is_literal_complaint(message)
                  and isinstance(at(body, path), str)]
    kept = []
    for path, message in found:
        if message == "unknown field":
            continue
        if any(path.startswith(prefix) and path[len(prefix):len(prefix) + 1] in (".", "[") for prefix in newer_tags):
            continue
        value = at(body, path)
        if value is None and message != "required field missing" and not path.endswith("]"):
            continue  # null for a field counts as absent (not in an array)
        if _is_literal_complaint(message) and isinstance(value, str) and path not in CLOSED.get(api, ()):
            continue
        kept.append((path, message))
    return kept


# What only the gateway refuses (its own rules, `extproc.translate.schema.rules`): documented
# ranges, non-empty lists and strings, nesting depth, the legacy Anthropic sampling fields (the SDK
# no longer declares them), a required field sent as null.
GATEWAY_ONLY = re.compile(r".*(must be between|must be at least|must be at most|must not be empty|must have "
                          r"|is nested more than|must be less than max_tokens).*")


def gateway_only(api: str, body: dict[str, Any], param: str, message: str) -> bool:
    """True when the gateway's refusal is one of its own rules rather than a type the SDK checks."""
    if GATEWAY_ONLY.fullmatch(message):
        return True
    if api == ANTHROPIC and param in ("temperature", "top_p", "top_k"):
        return True
    return at(body, param) is None and ("required" in message or "Field required" in message)
