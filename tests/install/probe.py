"""Run by tests/install/test_production_install.py with the python of a fresh production install.

Standard library and the installed product only (this file runs outside the dev venv, with
`python -I`, so neither the repository nor its tests are importable). Prints one JSON report.

    probe.py imports     import every module of extproc and routing; which SDKs are importable
    probe.py translate   one request, response and stream per registered translator pair;
                         fixtures (from tests/golden) come as JSON on stdin
"""

from __future__ import annotations

import base64
import importlib
import importlib.util
import json
import pkgutil
import sys
import traceback
from typing import Any

PRODUCT = ("extproc", "routing")
# The extras: never imported by the product, and not installed by a plain `pip install`.
SDKS = ("openai", "anthropic", "google.genai", "botocore", "boto3")
# Installed with the product (xds-protos and grpcio-health-checking require grpcio) but never
# imported by it: the product speaks gRPC through its own h2grpc.
NOT_LOADED = (*SDKS, "grpc", "simulator")


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # the parent package is missing
        return False


def imports() -> dict[str, Any]:
    modules: list[str] = []
    failures: dict[str, str] = {}
    files: dict[str, str] = {}
    for root in PRODUCT:
        package = importlib.import_module(root)
        files[root] = str(package.__file__)
        modules.append(root)

        def walk_error(name: str) -> None:
            failures[name] = traceback.format_exc()

        for info in pkgutil.walk_packages(package.__path__, root + ".", onerror=walk_error):
            modules.append(info.name)
            try:
                importlib.import_module(info.name)
            except BaseException:  # noqa: B036 (SystemExit at import is a failure too)
                failures[info.name] = traceback.format_exc()
    return {"modules": modules, "failures": failures, "files": files,
            "loaded": sorted(m for m in NOT_LOADED if m in sys.modules),
            "importable": sorted(m for m in SDKS if _importable(m))}


def _sse_payloads(data: bytes) -> list[str]:
    """The `data:` payload of every event of an SSE body."""
    payloads = []
    for block in data.decode().replace("\r\n", "\n").split("\n\n"):
        lines = [line[5:].lstrip(" ") for line in block.split("\n") if line.startswith("data:")]
        if lines:
            payloads.append("\n".join(lines))
    return payloads


def _check_body(client_api: str, body: Any) -> list[str]:
    if not isinstance(body, dict):
        return [f"client body is {type(body).__name__}, not an object"]
    if client_api == "openai":
        ok = body.get("object") == "chat.completion" and isinstance(body.get("choices"), list) and body["choices"]
        ok = ok and isinstance(body["choices"][0].get("message"), dict)
    elif client_api == "openai-responses":
        ok = body.get("object") == "response" and isinstance(body.get("output"), list) and body["output"]
    elif client_api == "openai-completions":
        ok = body.get("object") == "text_completion" and isinstance(body.get("choices"), list) and body["choices"]
    elif client_api == "anthropic-count-tokens":
        ok = isinstance(body.get("input_tokens"), int) and not isinstance(body["input_tokens"], bool)
    elif client_api == "anthropic":
        ok = body.get("type") == "message" and body.get("role") == "assistant" and isinstance(body.get("content"), list)
    else:
        ok = body.get("object") == "list" and isinstance(body.get("data"), list) and body["data"]
        ok = ok and all(d.get("object") == "embedding" and "embedding" in d for d in body["data"])
    return [] if ok else [f"client body has not the {client_api} shape: {json.dumps(body)[:300]}"]


def _check_stream(client_api: str, data: bytes) -> list[str]:
    payloads = _sse_payloads(data)
    if client_api == "openai-responses":
        kinds = [json.loads(p).get("type") for p in payloads]
        ok = kinds and kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete")
        return [] if ok else [f"responses stream events are {kinds}"]
    if client_api == "openai-completions":
        if not payloads or payloads[-1] != "[DONE]":
            return [f"completions stream does not end with [DONE]: {data[-200:]!r}"]
        if not any(json.loads(p).get("object") == "text_completion" for p in payloads[:-1]):
            return [f"completions stream is not text_completion chunks: {data[:300]!r}"]
        return []
    if client_api == "openai":
        if not payloads or payloads[-1] != "[DONE]":
            return [f"openai stream does not end with [DONE]: {data[-200:]!r}"]
        chunks = [json.loads(p) for p in payloads[:-1]]
        # Azure passes its prompt_filter_results chunk (object "") through, as its SDK users expect.
        if not all(isinstance(c, dict) and isinstance(c.get("choices"), list) for c in chunks) or not any(
                c.get("object") == "chat.completion.chunk" for c in chunks):
            return [f"openai stream is not chat.completion.chunk events: {data[:300]!r}"]
        if not any(c.get("choices") and c["choices"][0].get("finish_reason") for c in chunks):
            return ["openai stream has no finish_reason"]
        return []
    events = [json.loads(p) for p in payloads]
    types = [e.get("type") for e in events]
    if not types or types[0] != "message_start" or types[-1] != "message_stop" or "message_delta" not in types:
        return [f"anthropic stream events are {types}"]
    return []


def _request(client_api: str, model: str, stream: bool) -> dict[str, Any]:
    if client_api == "openai-embeddings":
        return {"model": model, "input": ["The quick brown fox", "jumps over the lazy dog"], "encoding_format": "float"}
    messages = [{"role": "user", "content": "Say hello."}]
    body: dict[str, Any] = {"model": model, "max_tokens": 64, "messages": messages}
    if client_api == "openai" and stream:
        body["stream_options"] = {"include_usage": True}
    if client_api == "anthropic":
        body["system"] = "Be brief."
    if stream:
        body["stream"] = True
    return body


def _pair(client_api: str, provider: str, translator: Any, fixture: dict[str, Any], refused: int | None) -> dict[str, Any]:
    from extproc.errors import GatewayError
    from extproc.translate.base import ResponseContext, Target

    raw = fixture["target"]
    target = Target(raw["public_model"], raw["upstream_model"], provider, raw["max_output_tokens"],
                    frozenset(raw.get("capabilities", ())), tuple((k, v) for k, v in raw.get("options", ())))
    done: list[str] = []
    problems: list[str] = []
    streams = fixture.get("stream") is not None
    for stream in (False, True) if streams else (False,):
        what = "stream request" if stream else "request"
        try:
            given = fixture.get("stream_request" if stream else "request")
            body = given if given is not None else _request(client_api, target.public_model, stream)
            upstream = translator.translate_request(body, target)
        except GatewayError as e:
            if refused is not None and e.status == refused:
                done.append(f"refused {e.status}")
                return {"done": done, "problems": problems}
            problems.append(f"{what} refused: {e.status} {e}")
            continue
        if refused is not None:
            problems.append(f"{what} should have been refused with {refused}")
        if not upstream.path.startswith("/") or upstream.stream != stream:
            problems.append(f"{what}: path {upstream.path!r}, stream {upstream.stream}")
        if not isinstance(json.loads(upstream.body), dict):
            problems.append(f"{what}: upstream body is not a JSON object")
        done.append(what)
        ctx = ResponseContext("req-install", 1767225600, include_usage=stream)
        if stream:
            translated = translator.stream_translator(target, ctx)
            data = base64.b64decode(fixture["stream"])
            # In two uneven pieces: translators must not assume chunks align with events.
            out = translated.feed(data[:7]) + translated.feed(data[7:]) + translated.finish()
            problems += _check_stream(client_api, out)
            done.append("stream")
        else:
            client, _usage = translator.translate_response(base64.b64decode(fixture["response"]), target, ctx)
            problems += _check_body(client_api, json.loads(client))
            done.append("response")
    return {"done": done, "problems": problems}


def translate(spec: dict[str, Any]) -> dict[str, Any]:
    from extproc.translate.registry import default_registry

    registry = default_registry()
    refused = {(c, p): status for c, p, status in spec["refused"]}
    results: dict[str, Any] = {}
    for (client_api, provider), translator in sorted(registry._pairs.items()):
        name = f"{client_api}/{provider}"
        fixtures = spec["embeddings"] if client_api == "openai-embeddings" else spec["chat"]
        if name in spec["cases"]:
            fixtures = {provider: spec["cases"][name]}
        if provider not in fixtures:
            results[name] = {"done": [], "problems": [f"no {client_api} fixture for provider {provider}"]}
            continue
        try:
            results[name] = _pair(client_api, provider, translator, fixtures[provider],
                                  refused.get((client_api, provider)))
        except Exception:
            results[name] = {"done": [], "problems": [traceback.format_exc()]}
    return {"pairs": results}


if __name__ == "__main__":
    mode = sys.argv[1]
    report = imports() if mode == "imports" else translate(json.load(sys.stdin))
    json.dump(report, sys.stdout)
