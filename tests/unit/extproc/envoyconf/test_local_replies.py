"""Envoy's own replies as rendered: the listener's filters in front of the router stage, the HTTP
codec limits, the buffer limit and the local-reply mappers (tests/integration/test_malformed_http.py
sends the requests)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from extproc import metadata
from extproc.config import load_file
from extproc.config.model import Limits
from extproc.envoyconf.render import (
    ANTHROPIC_PATH,
    CLIENT_NAMESPACE,
    MAX_HEADERS_COUNT,
    MAX_REQUEST_HEADERS_KB,
    buffer_limit,
    render,
)
from tests.conftest import FIXTURES


def _limits(max_request_bytes: int, max_response_bytes: int) -> Limits:
    return Limits(max_request_bytes=max_request_bytes, max_response_bytes=max_response_bytes)


def _render(max_request_bytes: int = 2_000_000, max_response_bytes: int = 3_000_000
            ) -> tuple[dict[str, Any], dict[str, Any]]:
    cfg = load_file(str(FIXTURES / "config" / "valid" / "demo.yaml"))
    cfg = dataclasses.replace(cfg, limits=_limits(max_request_bytes, max_response_bytes))
    listener = render(cfg, "/tmp/x")["envoy.yaml"]["static_resources"]["listeners"][0]
    return listener, listener["filter_chains"][0]["filters"][0]["typed_config"]


def _filters(hcm: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f["typed_config"] for f in hcm["http_filters"]}


def _mappers(hcm: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(m["filter"]["extension_filter"]["typed_config"]["expression"], m)
            for m in hcm["local_reply_config"]["mappers"]]


def _cel_text(e: dict[str, Any], ids: set[int]) -> str:
    """A parsed CEL AST back as text (the few node kinds the renderer writes); collects the ids."""
    assert e["id"] not in ids
    ids.add(e["id"])
    if "ident_expr" in e:
        return str(e["ident_expr"]["name"])
    if "const_expr" in e:
        return repr(e["const_expr"]["string_value"])
    if "select_expr" in e:
        sel = e["select_expr"]
        text = f"{_cel_text(sel['operand'], ids)}.{sel['field']}"
        return f"has({text})" if sel.get("test_only") else text
    call = e["call_expr"]
    args = [_cel_text(a, ids) for a in call["args"]]
    if call["function"] == "!_":
        return f"!{args[0]}"
    if call["function"] == "_||_":
        return " || ".join(args)
    return f"{_cel_text(call['target'], ids)}.{call['function']}({', '.join(args)})"


def test_router_stage_is_skipped_for_envoys_refusals_of_malformed_requests() -> None:
    """Point 2: Envoy sends its reply to a request its codec refused through every filter; the
    ext_proc held it for a gRPC round trip and the connection closed first (an empty reply)."""
    _, hcm = _render()
    wrapped = _filters(hcm)["envoy.filters.http.ext_proc"]
    assert wrapped["@type"].endswith("ExtensionWithMatcher")
    assert wrapped["extension_config"]["typed_config"]["@type"].endswith("ExternalProcessor")
    (matcher,) = wrapped["xds_matcher"]["matcher_list"]["matchers"]
    assert matcher["on_match"]["action"]["typed_config"]["@type"].endswith("SkipFilter")
    single = matcher["predicate"]["single_predicate"]
    assert single["input"]["typed_config"]["@type"].endswith("HttpAttributesCelMatchInput")
    cel = single["custom_match"]["typed_config"]["expr_match"]["parsed_expr"]["expr"]
    # Refused before any filter saw the headers, or the HTTP/1 codec refused the body.
    assert _cel_text(cel, set()) == "!has(request.method) || response.code_details.startsWith('http1.')"


def test_codec_limits_are_explicit_and_their_refusals_have_their_status() -> None:
    _, hcm = _render()
    assert hcm["max_request_headers_kb"] == MAX_REQUEST_HEADERS_KB
    assert hcm["common_http_protocol_options"]["max_headers_count"] == MAX_HEADERS_COUNT
    assert hcm["common_http_protocol_options"]["headers_with_underscores_action"] == "REJECT_REQUEST"
    for status in (431, 426):
        shaped = [m for expr, m in _mappers(hcm) if f"response.code == {status}" in expr]
        assert len(shaped) == 2 and all(m["status_code"] == status for m in shaped)
    underscore = [m for expr, m in _mappers(hcm) if "unexpected_underscore" in expr]
    assert [m["status_code"] for m in underscore] == [400, 400]
    # Never a 5xx for the client's input: an unknown transfer-coding (Envoy's 501), and the
    # router stage's headers not fitting beside the client's (Envoy's 503).
    assert [m["status_code"] for expr, m in _mappers(hcm) if "response.code == 501" in expr] == [400, 400]
    assert [m["status_code"] for expr, m in _mappers(hcm)
            if "header_mutation_result_exceeds_limit" in expr] == [431, 431]


def test_replies_never_carry_envoys_own_text() -> None:
    """Point 7: `%LOCAL_REPLY_BODY%` showed Envoy's reason ("upstream connect error or
    disconnect/reset before headers. reset reason: protocol error")."""
    _, hcm = _render()
    for _, m in _mappers(hcm):
        body = m["body_format_override"]["json_format"]
        message = body["error"]["message"]
        assert "%" not in message and message.endswith("."), message
        if "type" not in body:  # OpenAI's format, with every field OpenAI's SDK reads
            assert set(body["error"]) == {"message", "type", "param", "code"}


def test_client_api_is_the_clients_own_path_recorded_before_the_router_stage() -> None:
    """Point 7: the router stage rewrites the path for the provider and the header naming the
    client's API is removed before the request goes upstream, so Envoy's replies after that came
    in the provider's API's format."""
    _, hcm = _render()
    names = [f["name"] for f in hcm["http_filters"]]
    record = _filters(hcm)["envoy.filters.http.header_to_metadata"]
    assert record["request_rules"] == [{"header": ":path", "remove": False, "on_header_present": {
        "metadata_namespace": CLIENT_NAMESPACE, "key": "path", "type": "STRING"}}]
    assert names.index("envoy.filters.http.header_to_metadata") < names.index("envoy.filters.http.ext_proc")
    for expr, m in _mappers(hcm):
        anthropic = m["body_format_override"]["json_format"].get("type") == "error"
        client = f"metadata.filter_metadata['{CLIENT_NAMESPACE}']['path'].startsWith('{ANTHROPIC_PATH}')"
        assert client in expr
        assert metadata.CLIENT_API_HEADER not in expr
        negated = f"!(('{CLIENT_NAMESPACE}'"  # OpenAI's format: the client did not speak Messages
        assert expr.count(negated) == (0 if anthropic else 1)


@pytest.mark.parametrize("request_bytes,response_bytes", [(2_000_000, 3_000_000), (3_000_000, 2_000_000)])
def test_one_buffer_limit_for_http1_and_http2_clients(request_bytes: int, response_bytes: int) -> None:
    """Point 10: the listener's limit held HTTP/1 streams only; an HTTP/2 stream's buffer is its
    window (256 MiB by default), so 3 MB answers passed a 1 MiB limit."""
    listener, hcm = _render(request_bytes, response_bytes)
    assert buffer_limit(_limits(request_bytes, response_bytes)) == 3_000_000
    assert listener["per_connection_buffer_limit_bytes"] == 3_000_000
    assert hcm["http2_protocol_options"]["initial_stream_window_size"] == 3_000_000
    # Within HTTP/2's bounds for a window.
    assert buffer_limit(_limits(1024, 1024)) == 65535 and buffer_limit(_limits(2**32, 1024)) == 2**31 - 1


def test_answer_over_the_buffer_is_a_502_naming_the_limit() -> None:
    """Point 10: a translated answer over the buffer was a bare 500 "Internal Server Error"."""
    _, hcm = _render(max_response_bytes=3_000_000)
    shaped = [m for expr, m in _mappers(hcm) if "response_payload_too_large" in expr]
    assert len(shaped) == 2 and all(m["status_code"] == 502 for m in shaped)
    for m in shaped:
        body = m["body_format_override"]["json_format"]
        assert "3000000 bytes (limits.max_response_bytes)" in body["error"]["message"]
        assert body["error"]["type"] == "api_error"
        assert body.get("type") == "error" or body["error"]["code"] == "response_too_large"
    # Mappers come in two halves (Anthropic's format, then OpenAI's), each in the same order: this
    # one before the catch-all 5xx one, which keeps Envoy's status.
    exprs = [expr for expr, _ in _mappers(hcm)]
    half = exprs[:len(exprs) // 2]
    assert half.index(next(e for e in half if "response_payload_too_large" in e)) < half.index(
        next(e for e in half if "response.code >= 500" in e))
