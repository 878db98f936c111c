"""The translator interface: one implementation per (client API, provider API) pair.

Translators are pure: they take parsed values and bytes and return bytes, never touch the
network, the clock or process state, and never mutate their inputs, so a retry can run them
again on the original request. Anything that varies per call (the response timestamp, the
request id) comes in through `ResponseContext`.

Lifetime: a `Translator` is stateless and shared by every stream; a `StreamTranslator` is made
per response stream and is fed that stream's body chunks in order (chunks need not align with
events). Neither is thread-safe; neither needs to be (one asyncio task owns a stream).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from extproc.errors import GatewayError, ProviderError


@dataclass(frozen=True)
class Target:
    """The deployment a request is translated for."""

    public_model: str
    upstream_model: str
    provider_type: str  # the upstream API: openai, azure-openai, anthropic, gemini, vertex-gemini, ...
    max_output_tokens: int
    capabilities: frozenset[str] = frozenset()
    # Provider settings a translator needs for paths and bodies (api_version, path_prefix,
    # project, location, region, ...), as (name, value) pairs; see `option`.
    options: tuple[tuple[str, str], ...] = ()

    def option(self, name: str, default: str = "") -> str:
        for key, value in self.options:
            if key == name:
                return value
        return default


@dataclass(frozen=True)
class UpstreamRequest:
    """What goes to the provider, less credentials and host (the router stage adds those)."""

    path: str  # API path, e.g. "/v1/messages"; the provider endpoint's base path is prefixed
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()  # protocol headers, e.g. anthropic-version
    dropped_params: tuple[str, ...] = ()  # client parameters this provider does not take
    stream: bool = False


@dataclass
class Usage:
    """Token usage as the provider reported it. Counts are tokens."""

    prompt_tokens: int = 0  # every input token, cached ones included
    completion_tokens: int = 0  # reasoning tokens included
    cached_tokens: int = 0  # of prompt_tokens, read from the provider's prompt cache
    cache_creation_tokens: int = 0  # of prompt_tokens, written to the prompt cache
    reasoning_tokens: int = 0  # of completion_tokens

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ResponseContext:
    """Per-request values a response translation needs; injected so translation stays pure."""

    request_id: str
    created: int  # unix seconds, from the injected clock
    include_usage: bool = False  # OpenAI stream_options.include_usage
    encoding_format: str = "float"  # OpenAI embeddings: "float" or "base64"


class StreamTranslator(Protocol):
    """Incremental translation of one streamed response body."""

    usage: Usage | None

    def feed(self, chunk: bytes) -> bytes:
        """Take the next upstream bytes; return what to send to the client now (maybe b"")."""
        ...

    def finish(self) -> bytes:
        """The upstream body ended; return the final client bytes (e.g. `data: [DONE]`)."""
        ...


class Translator(Protocol):
    # True when successful responses need no translation (client and provider speak the same
    # API): the router stage then lets the body bypass the ext_proc entirely.
    passthrough: bool
    # An optional ability is a separate small protocol, e.g. `ForwardsClientHeaders`
    # (`extproc.stages.outbound`): client headers that go upstream unchanged.

    def translate_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        """Client request (parsed JSON) → upstream request. Raises GatewayError (400) on input
        the target cannot serve without changing what the client gets back."""
        ...

    def translate_response(self, body: bytes, target: Target, ctx: ResponseContext) -> tuple[bytes, Usage | None]:
        """A whole successful (2xx) upstream response body → client body and usage."""
        ...

    def stream_translator(self, target: Target, ctx: ResponseContext) -> StreamTranslator:
        """A fresh `StreamTranslator` for one streamed 2xx response to a request translated for
        `target`. For a passthrough pair it returns the body unchanged and only reads it (usage,
        the end of the stream). One per stream; never shared."""
        ...

    def translate_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> GatewayError:
        """A non-2xx upstream response (status, body, lowercased response headers) → an error
        safe to show the client (status from `client_status_for`)."""
        ...


def client_status_for(upstream_status: int) -> int:
    """The status a client sees for a provider's non-2xx status.

    Client mistakes keep their status (400, 404, 413, 422→400, 429). A provider refusing the
    gateway's own credentials (401, 403) is the gateway's fault, not the client's: 502. Provider
    overload (503, 529) is 503; a provider timeout is 504; any other 5xx is 502.
    """
    if upstream_status in (401, 403):
        return 502
    if upstream_status == 422:
        return 400
    if upstream_status in (400, 404, 408, 409, 413, 429):
        return 504 if upstream_status == 408 else upstream_status
    if upstream_status in (503, 529):
        return 503
    if upstream_status == 504:
        return 504
    if 400 <= upstream_status < 500:
        return 400
    return 502


def provider_error(status: int, provider_message: str | None, retry_after: str | None) -> ProviderError:
    """Build the client-safe error for a provider failure. The provider's own message is kept
    for client mistakes (it explains what to fix) and replaced where it could describe the
    gateway's credentials or internals."""
    client_status = client_status_for(status)
    if status in (401, 403):
        message = "The provider rejected the gateway's credentials for this model."
    elif client_status >= 500:
        message = f"The provider failed to serve the request (status {status})."
    else:
        message = provider_message or f"The provider rejected the request (status {status})."
    types = {400: "invalid_request_error", 404: "not_found_error", 413: "invalid_request_error",
             429: "rate_limit_error", 504: "timeout_error"}
    err = ProviderError(message, client_status, types.get(client_status, "api_error"))
    if client_status == 429:
        err.code = "rate_limit_exceeded"
        err.headers["retry-after"] = retry_after if retry_after and retry_after.isascii() and retry_after.isdigit() else "1"
    return err


@dataclass
class Registry:
    """(client API, provider type) → translator. Adding a provider is one `register` line."""

    _pairs: dict[tuple[str, str], Translator] = field(default_factory=dict)

    def register(self, client_api: str, provider_type: str, translator: Translator) -> None:
        self._pairs[(client_api, provider_type)] = translator

    def get(self, client_api: str, provider_type: str) -> Translator:
        try:
            return self._pairs[(client_api, provider_type)]
        except KeyError:
            raise GatewayError(
                f"This gateway cannot translate {client_api} requests for {provider_type} providers.",
                400, "invalid_request_error") from None
