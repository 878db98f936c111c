"""What a simulated model can do, and where a request uses what it cannot.

Real providers refuse chat to an embeddings model, and tools or images to a model without them;
so does the simulator, each API in its provider's words (see the `capability_refusal` of each
exchange). A model's capabilities are its behaviour's `capabilities` when scripted (`PUT
/_sim/models/{model} {"capabilities": ["tools"]}`), else they follow its name: a name containing
`embed` (`text-embedding-3-small`, `gemini-embedding-001`, `amazon.titan-embed-text-v2:0`,
`cohere.embed-english-v3`, an Azure deployment `embed-…`) is an embeddings model, any other a chat
model with tools and images. Embeddings are refused only to a model whose scripted capabilities
lack them: by name alone every model embeds, as the simulator always did.

Pure functions over parsed request bodies.
"""

from __future__ import annotations

from typing import Any

from simulator.state import Behaviour

CHAT = frozenset({"tools", "images", "json", "reasoning"})


def model_capabilities(model: str, behaviour: Behaviour) -> frozenset[str]:
    """The model's capabilities (see the module docstring)."""
    if behaviour.capabilities is not None:
        return frozenset(behaviour.capabilities)
    return frozenset({"embeddings"}) if is_embeddings_name(model) else CHAT


def is_embeddings_name(model: str) -> bool:
    return "embed" in model.lower()


def serves_chat(model: str, behaviour: Behaviour) -> bool:
    """False for an embeddings model (capability `embeddings`, nothing of a chat model)."""
    caps = model_capabilities(model, behaviour)
    return not ("embeddings" in caps and not caps & CHAT)


def serves_embeddings(model: str, behaviour: Behaviour) -> bool:
    return behaviour.capabilities is None or "embeddings" in behaviour.capabilities


def _parts(messages: Any) -> list[tuple[int, int, dict[str, Any]]]:
    """(message index, part index, part) of every dict part of list contents."""
    found = []
    for i, message in enumerate(messages if isinstance(messages, list) else []):
        content = message.get("content") if isinstance(message, dict) else None
        for j, part in enumerate(content if isinstance(content, list) else []):
            if isinstance(part, dict):
                found.append((i, j, part))
    return found


def openai_image(body: dict[str, Any]) -> tuple[int, int] | None:
    """Where the first `image_url` part of a Chat Completions body is."""
    return next(((i, j) for i, j, part in _parts(body.get("messages")) if part.get("type") == "image_url"), None)


def openai_tools(body: dict[str, Any]) -> bool:
    return bool(body.get("tools") or body.get("functions"))


def anthropic_image(body: dict[str, Any]) -> tuple[int, int] | None:
    """Where the first `image` block of a Messages body is."""
    return next(((i, j) for i, j, part in _parts(body.get("messages")) if part.get("type") == "image"), None)


def anthropic_tools(body: dict[str, Any]) -> bool:
    return bool(body.get("tools"))


def _get(obj: Any, *names: str) -> Any:
    """A field of a Gemini body under its camelCase or snake_case name."""
    if not isinstance(obj, dict):
        return None
    return next((obj[n] for n in names if n in obj), None)


def gemini_image(body: dict[str, Any]) -> bool:
    """True when a content part carries an image (inline data or a file of an image type)."""
    for content in _get(body, "contents") or []:
        for part in _get(content, "parts") or []:
            blob = _get(part, "inlineData", "inline_data", "fileData", "file_data")
            mime = _get(blob, "mimeType", "mime_type")
            if isinstance(mime, str) and mime.startswith("image/"):
                return True
    return False


def gemini_tools(body: dict[str, Any]) -> bool:
    """True when `tools` declares functions (built-in tools such as search are not function calling)."""
    return any(_get(tool, "functionDeclarations", "function_declarations") for tool in _get(body, "tools") or [])


def bedrock_image(body: dict[str, Any]) -> tuple[int, int] | None:
    """Where the first `image` content block of a Converse body is."""
    return next(((i, j) for i, j, part in _parts(body.get("messages")) if "image" in part), None)


def bedrock_tools(body: dict[str, Any]) -> bool:
    return bool((body.get("toolConfig") or {}).get("tools"))
