"""Helpers for the golden files in tests/golden/<client>-<provider>/<case>/, shared by the golden
runner (`test_golden.py`) and the unit tests that feed the recorded streams (`stream_pieces`) or
check translated Bedrock bodies with botocore (`boto3_params`)."""

from __future__ import annotations

import array
import base64
import dataclasses
import json
from pathlib import Path
from typing import Any

import orjson
from anthropic._streaming import SSEDecoder as AnthropicSSEDecoder
from openai._streaming import SSEDecoder as OpenAISSEDecoder

from extproc.errors import GatewayError, render
from extproc.translate.base import ResponseContext, Target, Usage
from simulator.eventstream_encode import encode_message

GOLDEN = Path(__file__).resolve().parent
# What a case's translation writes (and `REGEN=1` rewrites).
OUTPUTS = ("upstream_request.json", "upstream_meta.json", "client_response.json", "client_response.sse",
           "client_error.json", "usage.json")


def load(path: Path) -> Any:
    return json.loads(path.read_text())


def dump(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def target(case: Path) -> Target:
    """The case's `target.json` as a Target (lists to the tuples and frozensets Target holds)."""
    raw = load(case / "target.json")
    return Target(**{**raw, "capabilities": frozenset(raw.get("capabilities", ())),
                     "options": tuple(tuple(pair) for pair in raw.get("options", ()))})


def context(case: Path, request: dict[str, Any]) -> ResponseContext:
    """Request id "req-golden", created 1767225600, include_usage as the router derives it from the
    client request; `context.json` in the case overrides any of them."""
    opts = request.get("stream_options")
    include = bool(request.get("stream") is True and isinstance(opts, dict) and opts.get("include_usage"))
    raw: dict[str, Any] = {"request_id": "req-golden", "created": 1767225600, "include_usage": include}
    if (case / "context.json").exists():
        raw.update(load(case / "context.json"))
    return ResponseContext(**raw)


def error_doc(err: GatewayError, client_api: str) -> dict[str, Any]:
    """The error as the client gets it: {status, headers, body}, rendered in the client's format."""
    status, body, headers = render(err, "anthropic" if client_api == "anthropic" else "openai")
    return {"status": status, "headers": headers, "body": orjson.loads(body)}


def usage_doc(usage: Usage) -> dict[str, Any]:
    return {**dataclasses.asdict(usage), "total_tokens": usage.total_tokens}


def stream_pieces(data: bytes) -> list[list[bytes]]:
    """The ways every stream is fed: whole, byte by byte, and in two pieces at every split."""
    ways = [[data], [data[i:i + 1] for i in range(len(data))]]
    ways += [[data[:i], data[i:]] for i in range(1, len(data))]
    return ways


def translate_stream(translator: Any, target: Target, ctx: ResponseContext, pieces: list[bytes]) -> tuple[bytes, Any]:
    """The client bytes and usage of one upstream stream fed in `pieces`."""
    stream = translator.stream_translator(target, ctx)
    out = b"".join(stream.feed(piece) for piece in pieces) + stream.finish()
    return out, stream.usage


def openai_sse(raw: bytes) -> list[Any]:
    """Server-sent events as the openai SDK decodes them."""
    return list(OpenAISSEDecoder().iter_bytes(iter([raw])))


def anthropic_sse(raw: bytes) -> list[Any]:
    """Server-sent events as the anthropic SDK decodes them."""
    return list(AnthropicSSEDecoder().iter_bytes(iter([raw])))


def encode_stream(spec: list[dict[str, Any]]) -> bytes:
    """The wire bytes of a readable ConverseStream spec: a list of {"event": type, "payload"} or
    {"exception": type, "payload"}."""
    out = []
    for item in spec:
        payload = orjson.dumps(item["payload"])
        if "event" in item:
            headers = {":event-type": item["event"], ":content-type": "application/json", ":message-type": "event"}
        else:
            headers = {":exception-type": item["exception"], ":content-type": "application/json",
                       ":message-type": "exception"}
        out.append(encode_message(headers, payload))
    return b"".join(out)


def boto3_params(body: dict[str, Any], model_id: str) -> dict[str, Any]:
    """A translated Converse body as boto3 takes it: base64 blobs back to bytes, plus modelId."""

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: (base64.b64decode(v, validate=True) if k == "bytes" and isinstance(v, str) else walk(v))
                    for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return {"modelId": model_id, **walk(body)}


def decoded_embeddings(body: dict[str, Any]) -> dict[str, Any]:
    """`body` with base64 embeddings decoded to floats, as the openai SDK hands them over."""
    data = [{**item, "embedding": array.array("f", base64.b64decode(item["embedding"])).tolist()}
            if isinstance(item["embedding"], str) else item for item in body["data"]]
    return {**body, "data": data}
