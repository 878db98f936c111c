"""The simulator refuses what a model cannot do, as each real provider does: chat to an embeddings
model, tools or images to a model without them, embeddings from a model that makes none —
exercised with the official SDKs, each of which must recognise the refusal as its provider's."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import boto3
import botocore.config
import openai
import pytest
from botocore.exceptions import ClientError
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from simulator import BackgroundSimulator, start_background

KEY = "sk-sim-capabilities"
AWS_ID, AWS_SECRET = "AKIACAPABILITIES0001", "capabilities/test/secret"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


@pytest.fixture(scope="module")
def sim() -> Iterator[BackgroundSimulator]:
    simulator = start_background(api_keys=[KEY], aws_credentials={AWS_ID: AWS_SECRET})
    yield simulator
    simulator.stop()


@pytest.fixture(autouse=True)
def fresh(sim: BackgroundSimulator) -> None:
    sim.reset()


def script(sim: BackgroundSimulator, model: str, capabilities: list[str]) -> None:
    request = urllib.request.Request(f"{sim.url}/_sim/models/{model}", method="PUT",
                                     data=json.dumps({"capabilities": capabilities}).encode())
    urllib.request.urlopen(request, timeout=5).close()


# -- one call per provider: (chat, tools, image) -------------------------------------------------

def _openai(sim: BackgroundSimulator) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.url + "/v1", api_key=KEY, max_retries=0)


def _azure(sim: BackgroundSimulator) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(azure_endpoint=sim.url, api_key=KEY, api_version="2024-10-21", max_retries=0)


def openai_call(client: Callable[[BackgroundSimulator], Any]) -> Callable[..., Any]:
    def call(sim: BackgroundSimulator, model: str, tools: bool = False, image: bool = False) -> Any:
        content: Any = "What is the weather?"
        if image:
            content = [{"type": "text", "text": "What is this?"},
                       {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
        extra: dict[str, Any] = {"tools": [{"type": "function", "function": {
            "name": "get_weather", "parameters": WEATHER}}]} if tools else {}
        return client(sim).chat.completions.create(model=model, messages=[{"role": "user", "content": content}],
                                                   **extra)
    return call


def anthropic_call(sim: BackgroundSimulator, model: str, tools: bool = False, image: bool = False) -> Any:
    content: Any = "What is the weather?"
    if image:
        content = [{"type": "text", "text": "What is this?"},
                   {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]
    extra: dict[str, Any] = {"tools": [{"name": "get_weather", "input_schema": WEATHER}]} if tools else {}
    client = anthropic.Anthropic(base_url=sim.url, api_key=KEY, max_retries=0)
    return client.messages.create(model=model, max_tokens=64, messages=[{"role": "user", "content": content}],
                                  **extra)


def gemini_call(sim: BackgroundSimulator, model: str, tools: bool = False, image: bool = False) -> Any:
    client = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=sim.url, api_version="v1beta"))
    parts: list[Any] = ["What is the weather?"]
    if image:
        parts.append(types.Part.from_bytes(data=PNG, mime_type="image/png"))
    config = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[types.FunctionDeclaration(
        name="get_weather", parameters_json_schema=WEATHER)])]) if tools else None
    return client.models.generate_content(model=model, contents=parts, config=config)


def bedrock_call(sim: BackgroundSimulator, model: str, tools: bool = False, image: bool = False) -> Any:
    client = boto3.client("bedrock-runtime", endpoint_url=sim.url, region_name="us-east-1",
                          aws_access_key_id=AWS_ID, aws_secret_access_key=AWS_SECRET,
                          config=botocore.config.Config(retries={"max_attempts": 1}))
    content: list[dict[str, Any]] = [{"text": "What is the weather?"}]
    if image:
        content.append({"image": {"format": "png", "source": {"bytes": PNG}}})
    extra: dict[str, Any] = {"toolConfig": {"tools": [{"toolSpec": {
        "name": "get_weather", "inputSchema": {"json": WEATHER}}}]}} if tools else {}
    return client.converse(modelId=model, messages=[{"role": "user", "content": content}], **extra)


def _status(err: Exception) -> int:
    if isinstance(err, openai.APIStatusError | anthropic.APIStatusError):
        return err.status_code
    if isinstance(err, genai_errors.APIError):
        return int(err.code)
    assert isinstance(err, ClientError)
    return int(err.response["ResponseMetadata"]["HTTPStatusCode"])


def _message(err: Exception) -> str:
    if isinstance(err, ClientError):
        return f"{err.response['Error']['Code']}: {err.response['Error']['Message']}"
    return str(err)


PROVIDERS: dict[str, tuple[Callable[..., Any], type[Exception]]] = {
    "openai": (openai_call(_openai), openai.APIStatusError),
    "azure": (openai_call(_azure), openai.APIStatusError),
    "anthropic": (anthropic_call, anthropic.APIStatusError),
    "gemini": (gemini_call, genai_errors.APIError),
    "bedrock": (bedrock_call, ClientError),
}

# What each provider answers to chat on an embeddings model.
CHAT_ON_EMBEDDINGS = {
    "openai": (404, "This is not a chat model"),
    "azure": (400, "The chatCompletion operation does not work with the specified model"),
    "anthropic": (404, "not_found_error"),
    "gemini": (404, "is not supported for generateContent"),
    "bedrock": (400, "ValidationException: This action doesn't support the model"),
}
TOOLS_REFUSED = {
    "openai": (400, "'tools' is not supported with this model"),
    "azure": (400, "'tools' is not supported with this model"),
    "anthropic": (400, "does not support tool use"),
    "gemini": (400, "Function calling is not enabled"),
    "bedrock": (400, "ValidationException: This model doesn't support tool use."),
}
IMAGES_REFUSED = {
    "openai": (400, "image_url is only supported by certain models"),
    "azure": (400, "image_url is only supported by certain models"),
    "anthropic": (400, "does not support image input"),
    "gemini": (400, "Image input modality is not enabled"),
    "bedrock": (400, "ValidationException: messages.0.content.1.image: This model doesn't support image"),
}
EMBEDDINGS_MODEL = {"openai": "text-embedding-3-small", "azure": "embed-deployment", "anthropic": "voyage-embed-3",
                    "gemini": "gemini-embedding-001", "bedrock": "amazon.titan-embed-text-v2:0"}
CHAT_MODEL = {"openai": "gpt-4o-mini", "azure": "gpt4o-deployment", "anthropic": "claude-haiku-4-5",
              "gemini": "gemini-2.5-flash", "bedrock": "anthropic.claude-sonnet-4-5-20250929-v1:0"}


def refused(sim: BackgroundSimulator, provider: str, model: str, **kw: bool) -> tuple[int, str]:
    call, error = PROVIDERS[provider]
    with pytest.raises(error) as info:
        call(sim, model, **kw)
    return _status(info.value), _message(info.value)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_chat_to_an_embeddings_model_is_refused(sim: BackgroundSimulator, provider: str) -> None:
    status, message = refused(sim, provider, EMBEDDINGS_MODEL[provider])
    assert (status, CHAT_ON_EMBEDDINGS[provider][1] in message) == (CHAT_ON_EMBEDDINGS[provider][0], True), message
    assert all(r["status"] == status for r in sim.requests())


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tools_to_a_model_without_them_are_refused(sim: BackgroundSimulator, provider: str) -> None:
    model = CHAT_MODEL[provider]
    script(sim, model, ["images"])
    status, message = refused(sim, provider, model, tools=True)
    assert (status, TOOLS_REFUSED[provider][1] in message) == (TOOLS_REFUSED[provider][0], True), message
    PROVIDERS[provider][0](sim, model, image=True)  # what it has still works


@pytest.mark.parametrize("provider", PROVIDERS)
def test_images_to_a_model_without_them_are_refused(sim: BackgroundSimulator, provider: str) -> None:
    model = CHAT_MODEL[provider]
    script(sim, model, ["tools"])
    status, message = refused(sim, provider, model, image=True)
    assert (status, IMAGES_REFUSED[provider][1] in message) == (IMAGES_REFUSED[provider][0], True), message
    PROVIDERS[provider][0](sim, model, tools=True)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_chat_model_by_name_takes_tools_and_images(sim: BackgroundSimulator, provider: str) -> None:
    PROVIDERS[provider][0](sim, CHAT_MODEL[provider], tools=True, image=True)


def test_openai_details_of_the_refusals(sim: BackgroundSimulator) -> None:
    """`param` and `code` as OpenAI sets them (clients and gateways read them)."""
    with pytest.raises(openai.NotFoundError) as not_chat:
        openai_call(_openai)(sim, "text-embedding-3-small")
    assert (not_chat.value.param, not_chat.value.type) == ("model", "invalid_request_error")
    script(sim, "gpt-4o-mini", [])
    with pytest.raises(openai.BadRequestError) as tools:
        openai_call(_openai)(sim, "gpt-4o-mini", tools=True)
    assert (tools.value.param, tools.value.code) == ("tools", "unsupported_parameter")
    with pytest.raises(openai.BadRequestError) as image:
        openai_call(_openai)(sim, "gpt-4o-mini", image=True)
    assert image.value.param == "messages.[0].content.[1].type"


def test_embeddings_from_a_model_scripted_without_them_are_refused(sim: BackgroundSimulator) -> None:
    """By name every model embeds; scripted capabilities without `embeddings` refuse it."""
    assert _openai(sim).embeddings.create(model="gpt-4o-mini", input="hi").data
    script(sim, "gpt-4o-mini", ["tools", "images"])
    with pytest.raises(openai.PermissionDeniedError, match="not allowed to generate embeddings"):
        _openai(sim).embeddings.create(model="gpt-4o-mini", input="hi")
    script(sim, "chat-deployment", ["tools"])
    with pytest.raises(openai.BadRequestError, match="embeddings operation does not work"):
        _azure(sim).embeddings.create(model="chat-deployment", input="hi")
    script(sim, "gemini-2.5-flash", ["tools"])
    client = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=sim.url, api_version="v1beta"))
    with pytest.raises(genai_errors.ClientError) as gemini:
        client.models.embed_content(model="gemini-2.5-flash", contents=["hi"])
    assert gemini.value.code == 404 and "is not supported for batchEmbedContents" in str(gemini.value)


@pytest.mark.parametrize(("patch", "problem"), [
    ({"capabilities": ["tools", "vision"]}, "capabilities: each must be one of"),
    ({"capabilities": "tools"}, "capabilities: wrong type"),
])
def test_a_bad_capabilities_script_is_refused(sim: BackgroundSimulator, patch: dict[str, Any], problem: str) -> None:
    request = urllib.request.Request(f"{sim.url}/_sim/models/m", method="PUT", data=json.dumps(patch).encode())
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 400 and problem in info.value.read().decode()
