"""The simulator's Gemini API, exercised with the official `google-genai` SDK and raw HTTP."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from google import genai
from google.genai import errors, types

from simulator import BackgroundSimulator, count_tokens, start_background

KEY = "gemini-sim-key"
MODEL = "gemini-2.5-flash"
WEATHER = types.FunctionDeclaration(name="get_weather", parameters=types.Schema(
    type=types.Type.OBJECT, properties={"city": types.Schema(type=types.Type.STRING),
                                        "days": types.Schema(type=types.Type.INTEGER)}, required=["city", "days"]))
TIME = types.FunctionDeclaration(name="get_time", parameters_json_schema={
    "type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"]})
NO_AFC = types.AutomaticFunctionCallingConfig(disable=True)


@pytest.fixture(scope="module")
def sim() -> Iterator[BackgroundSimulator]:
    simulator = start_background(api_keys=[KEY])
    yield simulator
    simulator.stop()


@pytest.fixture(params=["v1", "v1beta"])
def client(sim: BackgroundSimulator, request: pytest.FixtureRequest) -> genai.Client:
    sim.reset()
    return genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=sim.url, api_version=request.param))


def raw(sim: BackgroundSimulator, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    request = urllib.request.Request(sim.url + path, data=data, method="POST",
                                     headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


HELLO = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}


def test_generate_text_usage_and_envelope(client: genai.Client, sim: BackgroundSimulator) -> None:
    config = types.GenerateContentConfig(system_instruction="Be terse.", max_output_tokens=50, temperature=0.3)
    response = client.models.generate_content(model=MODEL, contents="What's up, doc?", config=config)
    assert response.text and response.text.startswith("Simulated response")
    candidate = response.candidates[0]  # type: ignore[index]
    assert candidate.finish_reason == types.FinishReason.STOP and candidate.content.role == "model"  # type: ignore[union-attr]
    usage = response.usage_metadata
    assert usage is not None
    assert usage.prompt_token_count == count_tokens("Be terse.") + count_tokens("What's up, doc?")
    assert usage.candidates_token_count == count_tokens(response.text) == 12
    assert usage.total_token_count == usage.prompt_token_count + 12
    assert response.model_version == MODEL and response.response_id
    record = sim.requests()[-1]
    assert record["headers"]["x-goog-api-key"] == KEY and record["body"]["generationConfig"]["maxOutputTokens"] == 50


def test_limits_candidates_and_determinism(client: genai.Client) -> None:
    cut = client.models.generate_content(model=MODEL, contents="hi", config={"max_output_tokens": 3})
    assert cut.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS  # type: ignore[index]
    assert cut.usage_metadata.candidates_token_count == 3  # type: ignore[union-attr]
    stopped = client.models.generate_content(model=MODEL, contents="hi", config={"stop_sequences": ["response"]})
    assert stopped.text == "Simulated "
    two = client.models.generate_content(model=MODEL, contents="hi", config={"candidate_count": 2})
    assert [c.index for c in two.candidates] == [0, 1]  # type: ignore[union-attr]
    assert two.usage_metadata.candidates_token_count == 24  # type: ignore[union-attr]
    again = client.models.generate_content(model=MODEL, contents="hi")
    assert again.text == client.models.generate_content(model=MODEL, contents="hi").text


def test_stream_matches_whole_answer(client: genai.Client, sim: BackgroundSimulator) -> None:
    whole = client.models.generate_content(model=MODEL, contents="stream me")
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="stream me"))
    assert "".join(c.text or "" for c in chunks) == whole.text
    assert len(chunks) == 12
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP  # type: ignore[index]
    assert all(c.candidates[0].finish_reason is None for c in chunks[:-1])  # type: ignore[index]
    assert chunks[-1].usage_metadata == whole.usage_metadata
    assert sim.requests()[-1]["query"] == "alt=sse"
    status, body = raw(sim, f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse&key={KEY}", HELLO)
    assert status == 200
    events = body.split(b"\r\n\r\n")
    assert events[-1] == b"" and all(e.startswith(b"data: {") for e in events[:-1])
    types.GenerateContentResponse.model_validate(orjson.loads(events[0][len(b"data: "):]))
    status, body = raw(sim, f"/v1beta/models/{MODEL}:streamGenerateContent?key={KEY}", HELLO)
    assert status == 200 and len(orjson.loads(body)) == 12


def test_function_calls_follow_the_calling_mode(client: genai.Client) -> None:
    tools: list[Any] = [types.Tool(function_declarations=[WEATHER, TIME])]
    auto = client.models.generate_content(model=MODEL, contents="weather in Paris?",
                                          config=types.GenerateContentConfig(tools=tools,
                                                                             automatic_function_calling=NO_AFC))
    assert auto.function_calls and auto.function_calls[0].name == "get_weather"
    assert auto.function_calls[0].args == {"city": "example", "days": 1}
    forced = types.ToolConfig(function_calling_config=types.FunctionCallingConfig(
        mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=["get_time"]))
    anyone = client.models.generate_content(model=MODEL, contents="time?", config=types.GenerateContentConfig(
        tools=tools, tool_config=forced, automatic_function_calling=NO_AFC))
    assert anyone.function_calls and anyone.function_calls[0].args == {"zone": "UTC"}
    none = types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.NONE))
    text = client.models.generate_content(model=MODEL, contents="time?", config=types.GenerateContentConfig(
        tools=tools, tool_config=none, automatic_function_calling=NO_AFC))
    assert text.function_calls is None and text.text
    history = [types.Content(role="user", parts=[types.Part.from_text(text="weather?")]),
               types.Content(role="model", parts=[types.Part.from_function_call(name="get_weather",
                                                                                args={"city": "Paris", "days": 1})]),
               types.Content(role="user", parts=[types.Part.from_function_response(name="get_weather",
                                                                                   response={"temp": 21})])]
    after = client.models.generate_content(model=MODEL, contents=history, config=types.GenerateContentConfig(
        tools=tools, automatic_function_calling=NO_AFC))
    assert after.function_calls is None and (after.text or "").startswith("Simulated")
    streamed = list(client.models.generate_content_stream(model=MODEL, contents="weather?", config=types.GenerateContentConfig(
        tools=tools, automatic_function_calling=NO_AFC)))
    assert len(streamed) == 1 and streamed[0].function_calls[0].name == "get_weather"  # type: ignore[index]


def test_embeddings_are_deterministic(client: genai.Client) -> None:
    first = client.models.embed_content(model="gemini-embedding-001", contents=["alpha", "beta"])
    assert [len(e.values or []) for e in first.embeddings or []] == [8, 8]
    again = client.models.embed_content(model="gemini-embedding-001", contents=["alpha"],
                                        config={"output_dimensionality": 4})
    assert len(again.embeddings[0].values or []) == 4  # type: ignore[index]
    assert first.embeddings != client.models.embed_content(model="other", contents=["alpha", "beta"]).embeddings
    assert first.embeddings == client.models.embed_content(model="gemini-embedding-001",
                                                           contents=["alpha", "beta"]).embeddings


def test_single_embed_content_route(sim: BackgroundSimulator) -> None:
    status, body = raw(sim, "/v1beta/models/gemini-embedding-001:embedContent",
                       {"content": {"parts": [{"text": "alpha"}]}, "outputDimensionality": 3},
                       {"x-goog-api-key": KEY})
    assert status == 200 and len(orjson.loads(body)["embedding"]["values"]) == 3
    status, body = raw(sim, "/v1beta/models/gemini-embedding-001:batchEmbedContents",
                       {"requests": [{"model": "models/other", "content": {"parts": [{"text": "a"}]}}]},
                       {"x-goog-api-key": KEY})
    assert status == 400 and "Model names should match" in orjson.loads(body)["error"]["message"]


@pytest.mark.parametrize(("body", "message"), [
    ({**HELLO, "foo": 1}, 'Invalid JSON payload received. Unknown name "foo": Cannot find field.'),
    ({"contents": [{"role": "user", "parts": [{"text": "x", "bar": 2}]}]},
     'Invalid JSON payload received. Unknown name "bar" at \'contents[0].parts[0]\': Cannot find field.'),
    ({**HELLO, "generationConfig": {"temperature": "hot"}},
     "Invalid value at 'generation_config.temperature' (TYPE_FLOAT), \"hot\""),
    ({**HELLO, "generationConfig": {"max_tokens": 5}},
     'Invalid JSON payload received. Unknown name "max_tokens" at \'generation_config\': Cannot find field.'),
    ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "Please use a valid role: user, model."),
    ({"contents": []}, "* GenerateContentRequest.contents: contents is not specified\n"),
    ({"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}]},
     "Please ensure that function response turn comes immediately after a function call turn."),
])
def test_invalid_bodies_are_google_400s(sim: BackgroundSimulator, body: Any, message: str) -> None:
    status, raw_body = raw(sim, f"/v1beta/models/{MODEL}:generateContent", body, {"x-goog-api-key": KEY})
    error = orjson.loads(raw_body)["error"]
    assert (status, error["code"], error["status"]) == (400, 400, "INVALID_ARGUMENT")
    assert error["message"] == message
    assert error["details"][0]["@type"] == "type.googleapis.com/google.rpc.BadRequest"


def test_snake_case_names_are_accepted(sim: BackgroundSimulator) -> None:
    body = {**HELLO, "generation_config": {"max_output_tokens": 2}, "system_instruction": {"parts": [{"text": "s"}]}}
    status, raw_body = raw(sim, f"/v1beta/models/{MODEL}:generateContent", body, {"x-goog-api-key": KEY})
    assert status == 200 and orjson.loads(raw_body)["usageMetadata"]["candidatesTokenCount"] == 2


@pytest.mark.parametrize(("headers", "path_key", "status", "state"), [
    ({"authorization": f"Bearer {KEY}"}, False, 401, "UNAUTHENTICATED"),
    ({}, False, 403, "PERMISSION_DENIED"),
    ({"x-goog-api-key": "wrong"}, False, 400, "INVALID_ARGUMENT"),
    ({}, True, 200, None),
])
def test_key_rules(sim: BackgroundSimulator, headers: dict[str, str], path_key: bool, status: int,
                   state: str | None) -> None:
    query = f"?key={KEY}" if path_key else ""
    got, body = raw(sim, f"/v1beta/models/{MODEL}:generateContent{query}", HELLO, headers)
    assert got == status
    if state:
        assert orjson.loads(body)["error"]["status"] == state


def test_behaviours_in_google_format(client: genai.Client, sim: BackgroundSimulator) -> None:
    sim.set_behaviour(MODEL, status=429, retry_after_s=7)
    with pytest.raises(errors.ClientError) as limited:
        client.models.generate_content(model=MODEL, contents="hi")
    assert limited.value.code == 429 and limited.value.status == "RESOURCE_EXHAUSTED"
    details = limited.value.details["error"]["details"]
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"} in details
    sim.set_behaviour(MODEL, status=503)
    with pytest.raises(errors.ServerError) as overloaded:
        client.models.generate_content(model=MODEL, contents="hi")
    assert overloaded.value.status == "UNAVAILABLE"
    sim.set_behaviour(MODEL, status=404)
    with pytest.raises(errors.ClientError, match="is not found for API version"):
        client.models.generate_content(model=MODEL, contents="hi")
    sim.set_behaviour(MODEL, status=None, stream_error_after=3, error_status=500)
    with pytest.raises(errors.APIError):
        list(client.models.generate_content_stream(model=MODEL, contents="hi"))
