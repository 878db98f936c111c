"""`bench/bench_stream.py`'s measuring parts: the load generator's response parser counts exactly the
text events of a response however its bytes are split, tells a finished response and an error
from a good one; the percentile is the nearest rank; the mock's streams are what the providers'
SDKs parse, with usage where each provider puts it; the mock reads requests of both framings."""

from __future__ import annotations

import json
import math

import pytest
from anthropic.types import RawMessageStreamEvent
from openai.types.chat import ChatCompletionChunk
from pydantic import TypeAdapter

from bench import bench_stream as bs


def chunked_response(writes: list[bytes]) -> bytes:
    return bs.SSE_HEAD + b"".join(bs._chunk(w) for w in writes) + b"0\r\n\r\n"


def feed_split(data: bytes, cuts: list[int]) -> tuple[bs.ResponseParser, int]:
    p = bs.ResponseParser()
    texts = 0
    last = 0
    for cut in [*cuts, len(data)]:
        texts += p.feed(data[last:cut])
        last = cut
    return p, texts


def sse_events(writes: list[bytes]) -> list[tuple[str | None, bytes]]:
    """(event name, data) of every SSE event in the writes."""
    out = []
    for block in b"".join(writes).split(b"\n\n"):
        if not block:
            continue
        name, data = None, b""
        for line in block.split(b"\n"):
            if line.startswith(b"event: "):
                name = line[7:].decode()
            elif line.startswith(b"data: "):
                data = line[6:]
        out.append((name, data))
    return out


@pytest.mark.parametrize("stream", ["openai", "openai_usage", "anthropic"])
def test_the_parser_counts_every_text_event_at_every_split(stream: str) -> None:
    n = 5
    writes = (bs.anthropic_stream("m", n) if stream == "anthropic"
              else bs.openai_stream("m", n, include_usage=stream == "openai_usage"))
    data = chunked_response(writes)
    whole, texts = feed_split(data, [])
    assert (whole.done, whole.status, whole.error, texts) == (True, 200, False, n)
    for cut in range(1, len(data)):
        p, texts = feed_split(data, [cut])
        assert (p.done, p.error, texts) == (True, False, n), cut
    p, texts = feed_split(data, list(range(1, len(data))))  # byte by byte
    assert (p.done, texts, p.events) == (True, n, whole.events)


def test_the_parser_is_not_done_before_the_last_chunk_and_resets_for_the_next_response() -> None:
    data = chunked_response(bs.openai_stream("m", 3, include_usage=False))
    p = bs.ResponseParser()
    assert p.feed(data[:-5]) == 3 and not p.done
    p.feed(data[-5:])
    assert p.done
    p.reset()
    assert p.feed(data) == 3 and p.done


def test_a_sized_error_answer_and_an_error_event_are_errors() -> None:
    body = json.dumps({"error": {"message": "nope", "type": "invalid_request_error"}}).encode()
    data = b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    p, texts = feed_split(data, [10, len(data) - 3])
    assert (p.done, p.status, p.error, texts) == (True, 429, True, 0)
    stream = chunked_response([b'data: {"error":{"message":"cut"}}\n\n'])
    p, _ = feed_split(stream, [])
    assert p.done and p.error and p.status == 200


def test_percentile_is_the_nearest_rank() -> None:
    xs = [float(x) for x in range(1, 101)]  # 1..100
    assert bs.percentile(xs, 0.5) == 50 and bs.percentile(xs, 0.99) == 99 and bs.percentile(xs, 1.0) == 100
    assert bs.percentile(reversed(xs), 0.5) == 50
    assert bs.percentile([7.0], 0.99) == 7 and bs.percentile([1.0, 2.0], 0.5) == 1
    assert bs.percentile([1.0, 2.0, 3.0], 0.0) == 1
    assert math.isnan(bs.percentile([], 0.5))


@pytest.mark.parametrize("include_usage", [False, True])
def test_the_mock_openai_stream_is_what_the_sdk_parses(include_usage: bool) -> None:
    events = sse_events(bs.openai_stream("mock-gpt", 4, include_usage))
    assert events[-1] == (None, b"[DONE]")
    chunks = [ChatCompletionChunk.model_validate_json(d) for _, d in events[:-1]]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == bs.TOKEN.decode() * 4
    usage = [c.usage for c in chunks if c.usage is not None]
    assert usage == ([chunks[-1].usage] if include_usage else [])
    if include_usage:
        assert chunks[-1].choices == [] and usage[0] is not None and usage[0].completion_tokens == 4


def test_the_mock_anthropic_stream_is_what_the_sdk_parses() -> None:
    adapter: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)
    events = [(name, adapter.validate_json(d)) for name, d in sse_events(bs.anthropic_stream("mock-claude", 4))]
    assert all(name == e.type for name, e in events)
    assert [e.type for _, e in events][:2] == ["message_start", "content_block_start"]
    assert [e.type for _, e in events][-3:] == ["content_block_stop", "message_delta", "message_stop"]
    deltas = [e.delta.text for _, e in events if e.type == "content_block_delta" and e.delta.type == "text_delta"]
    assert deltas == [bs.TOKEN.decode()] * 4
    assert events[-2][1].usage.output_tokens == 4  # type: ignore[union-attr]


def test_every_write_of_a_stream_carries_exactly_one_text_event() -> None:
    for writes in (bs.openai_stream("m", 6, True), bs.anthropic_stream("m", 6)):
        assert [w.count(bs.TOKEN) for w in writes] == [1] * 6


def test_the_mock_reads_sized_and_chunked_requests_whole() -> None:
    body = b'{"model":"m","stream":true}'
    sized = b"POST /v1/messages HTTP/1.1\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    chunked = (b"POST /v1/chat/completions HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
               + bs._chunk(body[:10]) + bs._chunk(body[10:]) + b"0\r\n\r\n")
    for raw, path in ((sized, b"/v1/messages"), (chunked, b"/v1/chat/completions")):
        for cut in range(len(raw)):
            assert bs.take_request(raw[:cut]) is None, cut
        assert bs.take_request(raw + b"NEXT") == (path, body, b"NEXT")


def test_the_request_the_load_generator_sends_is_one_http_request() -> None:
    raw = bs.http_request("/v1/chat/completions", {"authorization": "Bearer k"}, bs.chat_body("stream-gpt", 100))
    path, body, rest = bs.take_request(raw) or (b"", b"", b"x")
    sent = json.loads(body)
    assert (path, rest) == (b"/v1/chat/completions", b"")
    assert sent["stream"] is True and sent["max_tokens"] == 100 and "stream_options" not in sent


def test_gateway_processes_are_named_from_their_command_lines() -> None:
    cli = [b"/venv/bin/python", b"-m", b"extproc.cmd.cli", b"--log-level", b"warning"]
    assert bs.role([b"/venv/bin/envoy", b"-c", b"x.yaml"]) == "envoy"
    assert bs.role([*cli, b"extproc", b"-c", b"c.yaml", b"--single", b"--worker-index", b"1"]) == "worker1"
    assert bs.role([*cli, b"ratelimit", b"-c", b"c.yaml"]) == "ratelimit"
    assert bs.role([*cli, b"run", b"-c", b"c.yaml"]) == "supervisor"
    assert bs.role([*cli, b"pool-scraper", b"-c", b"c.yaml"]) == "pool-scraper"
    assert bs.role([b"/usr/bin/redis-server"]) == "other"
