"""The simulator's per-model request quota (`request_limit`, `request_window_s`), with the official SDKs:
rate-limit headers counting down, each provider's 429 over the quota, window resets, stats, reset
and control-API validation.

OpenAI, Azure and Anthropic run on a simulator whose clock the tests set (`Clock`); windows are
aligned on that clock's epoch, so `T0`, a multiple of 60, starts a window. Gemini, Vertex and
Bedrock need the real clock (OAuth JWTs, SigV4 dates) and use a window too long to end mid-test.
"""

from __future__ import annotations

import datetime as dt
import math
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import boto3
import botocore.config
import openai
import orjson
import pytest
from botocore.exceptions import ClientError
from google import genai
from google.genai import errors, types
from google.oauth2 import service_account

from simulator import BackgroundSimulator, start_background
from simulator.common import go_duration

KEY = "sk-quota"
T0 = 2_000_000_040.0  # 60 × 33_333_334: a 60 s window starts here
CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
MESSAGE: dict[str, Any] = {"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "hello"}]}
HI: Any = [{"role": "user", "content": "hello there"}]


class Clock:
    """The simulator's clock: epoch seconds the test sets."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def sim(clock: Clock) -> Iterator[BackgroundSimulator]:
    simulator = start_background(api_keys=[KEY], clock=clock)
    yield simulator
    simulator.stop()


@pytest.fixture(autouse=True)
def fresh(sim: BackgroundSimulator, clock: Clock) -> None:
    sim.reset()
    clock.now = T0


@pytest.fixture
def oa(sim: BackgroundSimulator) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=sim.url + "/v1", api_key=KEY, max_retries=0) as client:
        yield client


@pytest.fixture
def an(sim: BackgroundSimulator) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=sim.url, api_key=KEY, max_retries=0) as client:
        yield client


@pytest.fixture
def azure(sim: BackgroundSimulator) -> Iterator[openai.AzureOpenAI]:
    with openai.AzureOpenAI(azure_endpoint=sim.url, api_key=KEY, api_version="2024-10-21", max_retries=0) as client:
        yield client


def control(sim: BackgroundSimulator, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else orjson.dumps(body)
    request = urllib.request.Request(sim.url + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())


def requests_headers(headers: Any) -> tuple[str, str, str]:
    return (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-remaining-requests"],
            headers["x-ratelimit-reset-requests"])


def anthropic_requests_headers(headers: Any) -> tuple[str, str, str]:
    return (headers["anthropic-ratelimit-requests-limit"], headers["anthropic-ratelimit-requests-remaining"],
            headers["anthropic-ratelimit-requests-reset"])


def rfc3339(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(("seconds", "text"), [
    (0.25, "250ms"), (0.0004, "1ms"), (1, "1s"), (1.2345, "1.235s"), (45, "45s"), (59.9996, "1m0s"),
    (90.5, "1m30.5s"), (360, "6m0s"), (3600, "1h0m0s"), (3725.25, "1h2m5.25s"),
])
def test_reset_durations_in_openai_format(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_openai_remaining_counts_down_then_429_until_the_window_resets(
        oa: openai.OpenAI, sim: BackgroundSimulator, clock: Clock) -> None:
    sim.set_behaviour("m", request_limit=3)
    clock.now = T0 + 15
    for left in (2, 1, 0):
        raw = oa.chat.completions.with_raw_response.create(**CHAT)
        assert requests_headers(raw.headers) == ("3", str(left), "45s")
        assert raw.headers["x-ratelimit-limit-tokens"] == "30000000"
        assert (raw.parse().choices[0].message.content or "").startswith("Simulated")
    with pytest.raises(openai.RateLimitError) as limited:
        oa.chat.completions.create(**CHAT)
    headers = limited.value.response.headers
    assert limited.value.status_code == 429 and limited.value.code == "rate_limit_exceeded"
    assert headers["retry-after"] == "45" and requests_headers(headers) == ("3", "0", "45s")
    assert headers["x-ratelimit-remaining-tokens"] != "0"  # the request quota refused it, not tokens
    clock.now = T0 + 59.75
    with pytest.raises(openai.RateLimitError) as limited:
        oa.chat.completions.create(**CHAT)
    assert limited.value.response.headers["retry-after"] == "1"  # 0.25 s rounded up
    assert requests_headers(limited.value.response.headers) == ("3", "0", "250ms")
    clock.now = T0 + 60
    raw = oa.chat.completions.with_raw_response.create(**CHAT)
    assert requests_headers(raw.headers) == ("3", "2", "1m0s")
    assert sim.stats()["quota"] == {"m": {"limit": 3, "window_s": 60, "used_in_window": 1, "remaining": 2,
                                          "reset_in_s": 60.0, "rejected": 2}}
    assert [r["status"] for r in sim.requests()] == [200, 200, 200, 429, 429, 200]


def test_openai_streams_carry_the_quota(oa: openai.OpenAI, sim: BackgroundSimulator, clock: Clock) -> None:
    sim.set_behaviour("m", request_limit=2, request_window_s=90)
    clock.now = 90 * 22_222_223 + 0.5  # half a second into a 90 s window
    for left in (1, 0):
        with oa.chat.completions.with_streaming_response.create(**CHAT, stream=True) as response:
            assert requests_headers(response.headers) == ("2", str(left), "1m29.5s")
            assert "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    with pytest.raises(openai.RateLimitError) as limited:
        oa.chat.completions.create(**CHAT, stream=True)
    assert limited.value.response.headers["retry-after"] == "90"


def test_openai_embeddings_count_against_their_model(oa: openai.OpenAI, sim: BackgroundSimulator) -> None:
    sim.set_behaviour("e", request_limit=1)
    raw = oa.embeddings.with_raw_response.create(model="e", input="hi")
    assert requests_headers(raw.headers) == ("1", "0", "1m0s")
    with pytest.raises(openai.RateLimitError):
        oa.embeddings.create(model="e", input="hi")
    assert oa.chat.completions.with_raw_response.create(**CHAT).headers["x-ratelimit-remaining-requests"] == "9999"


def test_anthropic_remaining_counts_down_in_json_and_streams(
        an: anthropic.Anthropic, sim: BackgroundSimulator, clock: Clock) -> None:
    sim.set_behaviour("m", request_limit=2)
    clock.now = T0 + 20
    reset = rfc3339(T0 + 60)
    raw = an.messages.with_raw_response.create(**MESSAGE)
    assert anthropic_requests_headers(raw.headers) == ("2", "1", reset)
    assert raw.headers["anthropic-ratelimit-tokens-limit"] == "2000000"
    assert raw.parse().content[0].type == "text"
    with an.messages.with_streaming_response.create(**MESSAGE, stream=True) as response:
        assert anthropic_requests_headers(response.headers) == ("2", "0", reset)
        assert [event.type for event in response.parse()][-1] == "message_stop"
    with pytest.raises(anthropic.RateLimitError) as limited:
        an.messages.create(**MESSAGE)
    headers = limited.value.response.headers
    assert limited.value.status_code == 429
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert headers["retry-after"] == "40" and anthropic_requests_headers(headers) == ("2", "0", reset)
    assert headers["anthropic-ratelimit-tokens-remaining"] != "0"
    clock.now = T0 + 60
    raw = an.messages.with_raw_response.create(**MESSAGE)
    assert anthropic_requests_headers(raw.headers) == ("2", "1", rfc3339(T0 + 120))


def test_azure_quota_headers_and_429(azure: openai.AzureOpenAI, sim: BackgroundSimulator, clock: Clock) -> None:
    sim.set_behaviour("d", request_limit=1)
    clock.now = T0 + 15.5
    raw = azure.chat.completions.with_raw_response.create(model="d", messages=HI)
    assert requests_headers(raw.headers) == ("1", "0", "44.5s")
    with pytest.raises(openai.RateLimitError) as limited:
        azure.chat.completions.create(model="d", messages=HI, stream=True)
    headers = limited.value.response.headers
    assert headers["retry-after"] == "45" and headers["retry-after-ms"] == "44500"
    assert requests_headers(headers) == ("1", "0", "44.5s")
    assert limited.value.code == "429" and "Please retry after 45 seconds" in limited.value.message


def test_errors_report_the_quota_without_using_it(oa: openai.OpenAI, an: anthropic.Anthropic,
                                                  azure: openai.AzureOpenAI, sim: BackgroundSimulator) -> None:
    sim.set_behaviour("*", request_limit=2, status=500)
    with pytest.raises(openai.InternalServerError) as failed:
        oa.chat.completions.create(**CHAT)
    assert requests_headers(failed.value.response.headers) == ("2", "2", "1m0s")
    with pytest.raises(anthropic.InternalServerError) as failed_an:
        an.messages.create(**MESSAGE)
    assert anthropic_requests_headers(failed_an.value.response.headers) == ("2", "2", rfc3339(T0 + 60))
    sim.set_behaviour("*", status=404)
    with pytest.raises(openai.NotFoundError) as missing:
        azure.chat.completions.create(model="d", messages=HI)
    assert missing.value.code == "DeploymentNotFound"
    assert requests_headers(missing.value.response.headers) == ("2", "2", "1m0s")
    sim.set_behaviour("*", status=429, retry_after_s=7)  # an injected 429 keeps its own retry-after
    with pytest.raises(openai.RateLimitError) as injected:
        oa.chat.completions.create(**CHAT)
    assert injected.value.response.headers["retry-after"] == "7"
    assert requests_headers(injected.value.response.headers) == ("2", "2", "1m0s")
    sim.set_behaviour("*", status=None)
    assert requests_headers(oa.chat.completions.with_raw_response.create(**CHAT).headers) == ("2", "1", "1m0s")
    assert sim.stats()["quota"]["m"]["rejected"] == 0


def test_limit_changes_keep_the_count_window_changes_restart_it(
        oa: openai.OpenAI, sim: BackgroundSimulator, clock: Clock) -> None:
    sim.set_behaviour("m", request_limit=1)
    clock.now = T0 + 15
    oa.chat.completions.create(**CHAT)
    with pytest.raises(openai.RateLimitError):
        oa.chat.completions.create(**CHAT)
    sim.set_behaviour("m", request_limit=2)
    assert requests_headers(oa.chat.completions.with_raw_response.create(**CHAT).headers) == ("2", "0", "45s")
    sim.set_behaviour("m", request_window_s=30)
    assert requests_headers(oa.chat.completions.with_raw_response.create(**CHAT).headers) == ("2", "1", "15s")
    sim.set_behaviour("m", request_limit=0)
    with pytest.raises(openai.RateLimitError) as limited:
        oa.chat.completions.create(**CHAT)
    assert limited.value.response.headers["retry-after"] == "15"
    sim.set_behaviour("m", request_limit=None)
    raw = oa.chat.completions.with_raw_response.create(**CHAT)
    assert requests_headers(raw.headers) == ("10000", "9999", "6ms")  # the fixed figures again


def test_without_a_quota_headers_are_the_fixed_ones(oa: openai.OpenAI, an: anthropic.Anthropic,
                                                     sim: BackgroundSimulator) -> None:
    for _ in range(3):
        assert requests_headers(oa.chat.completions.with_raw_response.create(**CHAT).headers) == (
            "10000", "9999", "6ms")
        assert anthropic_requests_headers(an.messages.with_raw_response.create(**MESSAGE).headers)[:2] == (
            "4000", "3999")
    assert sim.stats()["quota"] == {}


def test_stats_reset_and_delete(oa: openai.OpenAI, sim: BackgroundSimulator, clock: Clock) -> None:
    status, behaviour = control(sim, "PUT", "/_sim/models/a", {"request_limit": 1, "request_window_s": 10})
    assert status == 200 and (behaviour["request_limit"], behaviour["request_window_s"]) == (1, 10)
    clock.now = T0 + 2.5
    assert control(sim, "GET", "/_sim/stats")[1]["quota"] == {"a": {
        "limit": 1, "window_s": 10, "used_in_window": 0, "remaining": 1, "reset_in_s": 7.5, "rejected": 0}}
    oa.chat.completions.create(**{**CHAT, "model": "a"})
    with pytest.raises(openai.RateLimitError):
        oa.chat.completions.create(**{**CHAT, "model": "a"})
    assert sim.stats()["quota"]["a"] == {"limit": 1, "window_s": 10, "used_in_window": 1, "remaining": 0,
                                         "reset_in_s": 7.5, "rejected": 1}
    clock.now = T0 + 11
    assert sim.stats()["quota"]["a"] == {"limit": 1, "window_s": 10, "used_in_window": 0, "remaining": 1,
                                         "reset_in_s": 9.0, "rejected": 1}
    sim.set_behaviour("*", request_limit=1)  # every model its own count
    for model in ("x", "y"):
        oa.chat.completions.create(**{**CHAT, "model": model})
    assert {m: f["used_in_window"] for m, f in sim.stats()["quota"].items()} == {"a": 0, "x": 1, "y": 1}
    assert control(sim, "DELETE", "/_sim/models/a") == (200, {"deleted": True})
    assert sim.stats()["quota"]["a"] == {"limit": 1, "window_s": 60, "used_in_window": 0, "remaining": 1,
                                         "reset_in_s": 49.0, "rejected": 0}  # now under `*`, count forgotten
    assert control(sim, "POST", "/_sim/reset") == (200, {"ok": True})
    assert control(sim, "GET", "/_sim/stats")[1]["quota"] == {}


@pytest.mark.parametrize(("patch", "problem"), [
    ({"request_limit": -1}, "request_limit: must not be negative (0 refuses every request, null = unlimited)"),
    ({"request_limit": "5"}, "request_limit: wrong type"),
    ({"request_limit": True}, "request_limit: wrong type"),
    ({"request_limit": 2.5}, "request_limit: wrong type"),
    ({"request_window_s": 0}, "request_window_s: must be a positive number of seconds"),
    ({"request_window_s": -1.5}, "request_window_s: must be a positive number of seconds"),
    ({"request_window_s": None}, "request_window_s: wrong type"),
])
def test_invalid_quota_patches_are_refused(sim: BackgroundSimulator, patch: dict[str, Any], problem: str) -> None:
    assert control(sim, "PUT", "/_sim/models/m", patch) == (400, {"problems": [problem]})
    with pytest.raises(ValueError, match=problem.split(":")[0]):
        sim.set_behaviour("m", **patch)
    assert control(sim, "GET", "/_sim/models")[1] == {}


# Google and Bedrock: real clock, a window (1e9 s, aligned on the epoch) that ends in 2033.
LONG = 1e9


@pytest.fixture(scope="module")
def real_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BackgroundSimulator, Path]]:
    simulator = start_background(api_keys=[KEY], aws_credentials={"AKIAQUOTATEST0000001": "quota/secret"})
    account = tmp_path_factory.mktemp("gcp") / "sa.json"
    simulator.add_gcp_service_account(account)
    yield simulator, account
    simulator.stop()


def expected_retry_s() -> int:
    return math.ceil(LONG - time.time() % LONG)


def test_gemini_over_the_quota_is_resource_exhausted(real_sim: tuple[BackgroundSimulator, Path]) -> None:
    sim, _ = real_sim
    sim.reset()
    sim.set_behaviour("gemini-2.5-flash", request_limit=1, request_window_s=LONG)
    client = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=sim.url, api_version="v1beta"))
    assert client.models.generate_content(model="gemini-2.5-flash", contents="hi").text
    with pytest.raises(errors.ClientError) as limited:
        client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert limited.value.code == 429 and limited.value.status == "RESOURCE_EXHAUSTED"
    delays = [d["retryDelay"] for d in limited.value.details["error"]["details"] if d["@type"].endswith("RetryInfo")]
    assert len(delays) == 1 and abs(int(delays[0].removesuffix("s")) - expected_retry_s()) <= 2
    assert sim.stats()["quota"]["gemini-2.5-flash"]["rejected"] == 1


def test_vertex_over_the_quota_is_resource_exhausted(real_sim: tuple[BackgroundSimulator, Path]) -> None:
    sim, account = real_sim
    sim.reset()
    sim.set_behaviour("gemini-2.5-flash", request_limit=1, request_window_s=LONG)
    creds = service_account.Credentials.from_service_account_file(
        str(account), scopes=["https://www.googleapis.com/auth/cloud-platform"])
    client = genai.Client(vertexai=True, project=creds.project_id, location="us-central1", credentials=creds,
                          http_options=types.HttpOptions(base_url=sim.url))
    assert client.models.generate_content(model="gemini-2.5-flash", contents="hi").text
    with pytest.raises(errors.ClientError) as limited:
        client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert limited.value.code == 429 and limited.value.status == "RESOURCE_EXHAUSTED"
    answered = [r for r in sim.requests() if r["path"] != "/token"]
    assert [r["status"] for r in answered] == [200, 429]


def test_bedrock_over_the_quota_is_throttled(real_sim: tuple[BackgroundSimulator, Path]) -> None:
    sim, _ = real_sim
    sim.reset()
    model = "anthropic.claude-3-haiku-20240307-v1:0"
    sim.set_behaviour(model, request_limit=1, request_window_s=LONG)
    client = boto3.client("bedrock-runtime", endpoint_url=sim.url, region_name="eu-west-1",
                          aws_access_key_id="AKIAQUOTATEST0000001", aws_secret_access_key="quota/secret",
                          config=botocore.config.Config(retries={"total_max_attempts": 1}))
    messages = [{"role": "user", "content": [{"text": "hello"}]}]
    assert client.converse(modelId=model, messages=messages)["stopReason"] == "end_turn"
    for call in (client.converse, client.converse_stream):
        with pytest.raises(ClientError) as limited:
            call(modelId=model, messages=messages)
        assert limited.value.response["Error"]["Code"] == "ThrottlingException"
        assert limited.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert sim.stats()["quota"][model]["rejected"] == 2
