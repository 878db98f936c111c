"""The simulator's Bedrock runtime (Converse / ConverseStream, SigV4), exercised with boto3 and raw HTTP."""

from __future__ import annotations

import datetime as dt
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import boto3
import botocore.config
import orjson
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import ClientError, EventStreamError

from simulator import BackgroundSimulator, count_tokens, start_background
from simulator.aws_auth import DEMO_ACCESS_KEY_ID, DEMO_SECRET_ACCESS_KEY
from simulator.validate.bedrock import bedrock_output_problems

MODEL = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-20250514-v1:0"
KEY_ID, SECRET = "AKIATESTKEY000000001", "test/secret/key"
TOOLS: dict[str, Any] = {"tools": [
    {"toolSpec": {"name": "get_weather", "inputSchema": {"json": {
        "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"]}}}},
    {"toolSpec": {"name": "get_time", "inputSchema": {"json": {
        "type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"]}}}}]}
HI = [{"role": "user", "content": [{"text": "hello there"}]}]


@pytest.fixture(scope="module")
def sim() -> Iterator[BackgroundSimulator]:
    simulator = start_background(aws_credentials={KEY_ID: SECRET})
    yield simulator
    simulator.stop()


def make_client(sim: BackgroundSimulator, key_id: str = KEY_ID, secret: str = SECRET) -> Any:
    return boto3.client("bedrock-runtime", endpoint_url=sim.url, region_name="eu-west-1", aws_access_key_id=key_id,
                        aws_secret_access_key=secret,
                        config=botocore.config.Config(retries={"max_attempts": 1}))


@pytest.fixture(autouse=True)
def fresh(sim: BackgroundSimulator) -> None:
    sim.reset()


@pytest.fixture
def client(sim: BackgroundSimulator) -> Any:
    return make_client(sim)


def signed_post(sim: BackgroundSimulator, path: str, body: bytes, secret: str = SECRET,
                tamper: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    request = AWSRequest(method="POST", url=sim.url + path, data=body, headers={"content-type": "application/json"})
    SigV4Auth(Credentials(KEY_ID, secret), "bedrock", "us-west-2").add_auth(request)
    prepared = request.prepare()
    raw = urllib.request.Request(prepared.url, data=tamper or body, method="POST", headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(raw, timeout=5) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def test_converse_text_usage_and_shape(client: Any, sim: BackgroundSimulator) -> None:
    image = {"image": {"format": "png", "source": {"bytes": b"\x89PNG\r\n"}}}
    response = client.converse(modelId=MODEL, system=[{"text": "Be terse."}],
                               messages=[{"role": "user", "content": [{"text": "What's up, doc?"}, image]}],
                               inferenceConfig={"maxTokens": 100, "temperature": 0.2})
    text = response["output"]["message"]["content"][0]["text"]
    assert text.startswith("Simulated response") and response["stopReason"] == "end_turn"
    prompt = count_tokens("Be terse.") + count_tokens("What's up, doc?")
    assert response["usage"] == {"inputTokens": prompt, "outputTokens": 12, "totalTokens": prompt + 12}
    assert response["metrics"]["latencyMs"] >= 1 and response["ResponseMetadata"]["RequestId"]
    body = {k: v for k, v in response.items() if k != "ResponseMetadata"}
    assert bedrock_output_problems(body, "Converse") == []
    record = sim.requests()[-1]
    assert record["path"] == f"/model/{MODEL}/converse"
    assert record["raw_path"] == f"/model/{quote(MODEL, safe='')}/converse"
    assert record["headers"]["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={KEY_ID}/")


def test_limits_and_stop_sequences(client: Any) -> None:
    cut = client.converse(modelId="amazon.nova-lite-v1:0", messages=HI, inferenceConfig={"maxTokens": 3})
    assert cut["stopReason"] == "max_tokens" and cut["usage"]["outputTokens"] == 3
    stop = client.converse(modelId="amazon.nova-lite-v1:0", messages=HI, inferenceConfig={"stopSequences": ["response"]})
    assert stop["stopReason"] == "stop_sequence"
    assert stop["output"]["message"]["content"][0]["text"] == "Simulated "


def test_tool_use_and_tool_results(client: Any) -> None:
    forced = {**TOOLS, "toolChoice": {"tool": {"name": "get_time"}}}
    response = client.converse(modelId=MODEL, messages=HI, toolConfig=forced)
    use = response["output"]["message"]["content"][0]["toolUse"]
    assert response["stopReason"] == "tool_use" and use["name"] == "get_time" and use["input"] == {"zone": "UTC"}
    history = [*HI, {"role": "assistant", "content": [{"toolUse": use}]},
               {"role": "user", "content": [{"toolResult": {"toolUseId": use["toolUseId"],
                                                            "content": [{"json": {"time": "12:00"}}]}}]}]
    after = client.converse(modelId=MODEL, messages=history, toolConfig=TOOLS)
    assert after["stopReason"] == "end_turn" and "text" in after["output"]["message"]["content"][0]


def test_converse_stream_events(client: Any) -> None:
    whole = client.converse(modelId=MODEL, messages=HI)
    events = list(client.converse_stream(modelId=MODEL, messages=HI)["stream"])
    names = [next(iter(e)) for e in events]
    assert names == ["messageStart"] + ["contentBlockDelta"] * 12 + ["contentBlockStop", "messageStop", "metadata"]
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == whole["output"]["message"]["content"][0]["text"]
    assert events[-1]["metadata"]["usage"] == whole["usage"]
    tools = list(client.converse_stream(modelId=MODEL, messages=HI, toolConfig=TOOLS)["stream"])
    start = tools[1]["contentBlockStart"]["start"]["toolUse"]
    assert start["name"] == "get_weather" and start["toolUseId"].startswith("tooluse_")
    arguments = "".join(e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in tools if "contentBlockDelta" in e)
    assert orjson.loads(arguments) == {"city": "example", "days": 1}
    assert tools[-2]["messageStop"]["stopReason"] == "tool_use"


def test_stream_frames_parse_with_botocore(sim: BackgroundSimulator) -> None:
    status, headers, body = signed_post(sim, f"/model/{quote(MODEL, safe='')}/converse-stream",
                                        orjson.dumps({"messages": HI}))
    assert status == 200 and headers["content-type"] == "application/vnd.amazon.eventstream"
    buffer = EventStreamBuffer()
    buffer.add_data(body)
    messages = list(buffer)
    assert len(messages) == 16
    for message in messages:
        headers = message.headers
        assert headers[":message-type"] == "event" and headers[":content-type"] == "application/json"
        payload = orjson.loads(message.payload)
        assert payload.pop("p")
        assert bedrock_output_problems(payload, "ConverseStream", headers[":event-type"]) == []


def test_midstream_exception_frame(client: Any, sim: BackgroundSimulator) -> None:
    sim.set_behaviour(MODEL, stream_error_after=2, error_status=429)
    stream = client.converse_stream(modelId=MODEL, messages=HI)["stream"]
    seen: list[str] = []
    with pytest.raises(EventStreamError) as broken:
        for event in stream:
            seen.append(next(iter(event)))
    assert seen == ["messageStart", "contentBlockDelta", "contentBlockDelta"]
    assert broken.value.response["Error"]["Code"] == "throttlingException"


@pytest.mark.parametrize(("status", "code"), [(429, "ThrottlingException"), (408, "ModelTimeoutException"),
                                              (503, "ServiceUnavailableException"), (403, "AccessDeniedException"),
                                              (500, "InternalServerException")])
def test_injected_errors_are_typed(client: Any, sim: BackgroundSimulator, status: int, code: str) -> None:
    sim.set_behaviour(MODEL, status=status)
    with pytest.raises(ClientError) as failed:
        client.converse(modelId=MODEL, messages=HI)
    assert failed.value.response["Error"]["Code"] == code
    assert failed.value.response["ResponseMetadata"]["HTTPStatusCode"] == status


@pytest.mark.parametrize(("body", "fragment"), [
    ({"messages": HI, "foo": 1}, 'Unknown parameter in input: "foo"'),
    ({"messages": HI, "inferenceConfig": {"topK": 5}}, 'Unknown parameter in inferenceConfig: "topK"'),
    ({"messages": [{"role": "user", "content": [{"text": "a", "image": {}}]}]}, "tagged union"),
    ({"messages": [{"role": "assistant", "content": [{"text": "a"}]}]}, "must start with a user message"),
    ({"messages": [*HI, *HI]}, "must alternate between user and assistant"),
    ({"messages": [{"role": "user", "content": [{"image": {"format": "png", "source": {"bytes": "!!"}}}]}]},
     "Invalid base64"),
])
def test_invalid_bodies(sim: BackgroundSimulator, body: Any, fragment: str) -> None:
    status, headers, raw = signed_post(sim, f"/model/{quote(MODEL, safe='')}/converse", orjson.dumps(body))
    assert status == 400 and headers["x-amzn-errortype"].startswith("ValidationException:")
    assert fragment in orjson.loads(raw)["message"]


def test_signature_rules(sim: BackgroundSimulator) -> None:
    path = f"/model/{quote(MODEL, safe='')}/converse"
    body = orjson.dumps({"messages": HI})
    assert signed_post(sim, path, body)[0] == 200
    status, headers, raw = signed_post(sim, path, body, secret="wrong")
    assert status == 403 and headers["x-amzn-errortype"].startswith("InvalidSignatureException")
    assert "The Canonical String for this request should have been" in orjson.loads(raw)["message"]
    status, headers, _ = signed_post(sim, path, body, tamper=body.replace(b"hello", b"HELLO"))
    assert status == 403 and headers["x-amzn-errortype"].startswith("InvalidSignatureException")
    unencoded = signed_post(sim, f"/model/{MODEL}/converse", body)
    assert unencoded[0] == 200
    with pytest.raises(ClientError) as unknown:
        make_client(sim, key_id="AKIAUNKNOWN000000000").converse(modelId=MODEL, messages=HI)
    assert unknown.value.response["Error"]["Code"] == "UnrecognizedClientException"
    demo = make_client(sim, DEMO_ACCESS_KEY_ID, DEMO_SECRET_ACCESS_KEY)
    assert demo.converse(modelId=MODEL, messages=HI)["stopReason"] == "end_turn"


def test_unsigned_and_stale_requests(sim: BackgroundSimulator) -> None:
    path = f"/model/{quote(MODEL, safe='')}/converse"
    request = urllib.request.Request(sim.url + path, data=b"{}", method="POST",
                                     headers={"content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as unsigned:
        urllib.request.urlopen(request, timeout=5)
    assert unsigned.value.code == 403
    assert unsigned.value.headers["x-amzn-ErrorType"].startswith("MissingAuthenticationTokenException")
    old = AWSRequest(method="POST", url=sim.url + path, data=b"{}", headers={"content-type": "application/json"})
    signer = SigV4Auth(Credentials(KEY_ID, SECRET), "bedrock", "us-east-1")
    old.context["timestamp"] = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20)).strftime("%Y%m%dT%H%M%SZ")
    signer._modify_request_before_signing(old)
    canonical = signer.canonical_request(old)
    signature = signer.signature(signer.string_to_sign(old, canonical), old)
    old.headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={signer.scope(old)}, "
                                    f"SignedHeaders={signer.signed_headers(signer.headers_to_sign(old))}, "
                                    f"Signature={signature}")
    prepared = old.prepare()
    stale = urllib.request.Request(prepared.url, data=b"{}", method="POST", headers=dict(prepared.headers))
    with pytest.raises(urllib.error.HTTPError) as expired:
        urllib.request.urlopen(stale, timeout=5)
    assert expired.value.code == 403 and "Signature expired" in orjson.loads(expired.value.read())["message"]
