"""Deterministic model output and the simulator's own token counting.

Token rule (used for every usage number the simulator reports): the number of matches of
``\\w+|[^\\w\\s]`` in a text, i.e. words and single punctuation marks; whitespace never counts.

Text rule: a reply of `n` tokens is ``Simulated response`` followed by words drawn from
`VOCABULARY` with a `random.Random` seeded by SHA-256 of ``model + "\\0" + last user text``;
every 8th token (index 7, 15, …) is ``,`` and the last token of a reply of 3 or more tokens is
``.``. Every reply therefore starts with the word ``Simulated`` (1 token) and, from 2 tokens on,
``Simulated response``: a stop sequence ``"response"`` always cuts the reply to ``"Simulated "``.
Words are joined by single spaces, punctuation is attached to the preceding word, so the reply
counts exactly `n` tokens by the token rule.

Length: `n` is the behaviour's `output_tokens`, or with `output_tokens_sigma` > 0 that median
spread log-normally: ``round(n · exp(sigma · z))`` (at least 1), z a standard normal drawn from
SHA-256 of ``"length\0" + model + "\0" + last user text`` (`reply_length`): the same request to the
same model is always as long, and models with different medians answer with different lengths.

Limits: the reply is first cut to `max_tokens` tokens (stop ``length``), then at the earliest
occurrence of any stop sequence (stop ``stop_sequence``; the text before it is kept).

Tool arguments: built from the JSON schema's ``required`` properties: ``enum``/``const`` → the
first allowed value, string → ``"example"``, integer/number → ``1``, boolean → ``true``,
array → ``[]``, object → its own required properties, null → ``null``, untyped → ``"example"``.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Literal

TOKEN_RE = re.compile(r"\w+|[^\w\s]")
FIRST_WORD = "Simulated"
SECOND_WORD = "response"

VOCABULARY = (
    "the", "a", "gateway", "routes", "every", "request", "to", "model", "with", "low", "latency",
    "and", "tokens", "flow", "through", "envoy", "while", "providers", "answer", "in", "order",
    "stream", "events", "arrive", "quickly", "retries", "keep", "traffic", "healthy", "under",
    "load", "clusters", "balance", "calls", "across", "regions", "cache", "hits", "save", "cost",
    "tenants", "share", "capacity", "fairly", "budgets", "limit", "usage", "per", "minute",
    "outputs", "remain", "deterministic", "for", "tests", "simulated", "replies", "look", "like",
    "real", "ones", "but", "nothing", "today",
)

StopKind = Literal["end", "length", "stop_sequence", "tool"]


def count_tokens(text: str) -> int:
    """Tokens in `text` by the simulator's rule (words and single punctuation marks)."""
    return len(TOKEN_RE.findall(text))


def count_all(texts: list[str]) -> int:
    """Tokens over several texts (same as counting their space-joined concatenation)."""
    return sum(count_tokens(t) for t in texts)


@dataclass
class ToolCall:
    """A tool the simulated model calls; `arguments` is the JSON text of its input."""

    name: str
    arguments: str
    custom: bool = False


@dataclass
class Output:
    """What the simulated model produced for one request."""

    pieces: list[str]
    stop: StopKind
    stop_sequence: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def output_tokens(self) -> int:
        if self.tool_calls:
            return count_all([t for c in self.tool_calls for t in (c.name, c.arguments)])
        return count_tokens(self.text)


def reply_pieces(model: str, seed_text: str, n_tokens: int) -> list[str]:
    """The `n_tokens` stream pieces of the deterministic reply (each piece is one token)."""
    digest = hashlib.sha256(f"{model}\0{seed_text}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    pieces: list[str] = []
    for i in range(max(0, n_tokens)):
        if i == 0:
            pieces.append(FIRST_WORD)
        elif i == 1:
            pieces.append(" " + SECOND_WORD)
        elif i == n_tokens - 1 and n_tokens >= 3:
            pieces.append(".")
        elif i % 8 == 7:
            pieces.append(",")
        else:
            pieces.append(" " + rng.choice(VOCABULARY))
    return pieces


def reply_length(model: str, seed_text: str, n_tokens: int, sigma: float = 0.0) -> int:
    """The reply's length before limits: `n_tokens`, spread by `sigma` (see the module docstring)."""
    if sigma <= 0 or n_tokens <= 0:
        return n_tokens
    digest = hashlib.sha256(f"length\0{model}\0{seed_text}".encode()).digest()
    z = NormalDist().inv_cdf((int.from_bytes(digest[:8], "big") + 0.5) / 2.0**64)
    return max(1, round(n_tokens * math.exp(sigma * z)))


def generate_text(model: str, seed_text: str, n_tokens: int, max_tokens: int | None,
                  stop_sequences: list[str], sigma: float = 0.0) -> Output:
    """The reply for a text turn (`n_tokens` spread by `sigma`: `reply_length`), cut at `max_tokens`
    and then at the first stop sequence."""
    pieces = reply_pieces(model, seed_text, reply_length(model, seed_text, n_tokens, sigma))
    stop: StopKind = "end"
    if max_tokens is not None and max_tokens < len(pieces):
        pieces = pieces[:max(0, max_tokens)]
        stop = "length"
    text = "".join(pieces)
    hits = [(text.find(s), s) for s in stop_sequences if s and s in text]
    if not hits:
        return Output(pieces, stop)
    cut, sequence = min(hits, key=lambda h: h[0])
    kept: list[str] = []
    used = 0
    for piece in pieces:
        if used + len(piece) >= cut:
            if cut > used:
                kept.append(piece[:cut - used])
            break
        kept.append(piece)
        used += len(piece)
    return Output(kept, "stop_sequence", sequence)


def example_value(schema: Any) -> Any:
    """A value that satisfies the JSON schema's required structure (see module docstring)."""
    if not isinstance(schema, dict):
        return "example"
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return example_value(options[0])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), kind[0] if kind else None)
    if kind == "object" or (kind is None and isinstance(schema.get("properties"), dict)):
        return example_object(schema)
    return {"string": "example", "integer": 1, "number": 1, "boolean": True, "array": [],
            "null": None}.get(kind, "example") if isinstance(kind, str) else "example"


def example_object(schema: Any) -> dict[str, Any]:
    """An object holding every required property of `schema` (an object schema)."""
    if not isinstance(schema, dict):
        return {}
    properties: dict[str, Any] = schema["properties"] if isinstance(schema.get("properties"), dict) else {}
    required: list[Any] = schema["required"] if isinstance(schema.get("required"), list) else []
    return {name: example_value(properties.get(name, {})) for name in required if isinstance(name, str)}


def fragments(text: str, size: int = 8) -> list[str]:
    """`text` split into consecutive fragments of at most `size` characters."""
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def embedding(model: str, text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for `text`: values drawn with a `random.Random` seeded by SHA-256
    of ``model + "\\0" + text``, rounded to 6 decimals."""
    digest = hashlib.sha256(f"{model}\0{text}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    values = [rng.uniform(-1, 1) for _ in range(max(1, dimensions))]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [round(v / norm, 6) for v in values]
