"""Provider simulator: a stand-in for every provider API the gateway talks to.

OpenAI (chat completions, embeddings, models), Anthropic (Messages), Gemini API
(`gemini_api`), Vertex AI with Gemini and Anthropic models and Google's OAuth token endpoint
(`vertex_api`, `gcp`), Bedrock runtime Converse/ConverseStream with SigV4 (`bedrock_api`,
`aws_auth`) and Azure OpenAI (`azure_api`), all on one port. Speaks each provider's wire format
(JSON, SSE, AWS event stream), rejects what the provider would reject (strict validation
against the official SDK types, see `simulator.validate`), produces deterministic text, tool calls
and embeddings (`textgen`), counts usage itself, and follows a per-model behaviour script
changeable at run time (`state.Behaviour`: latency, injected errors, concurrency limits and
fixed-window request quotas reported in the providers' rate-limit headers, see `quota`; control
API in `server` and `control`).

    run(host, port, api_keys=None, *, gcp_service_accounts=None, aws_credentials=None)
                                              blocking; for `interlock simulate` / `make run`
    await start(host, port=0, api_keys=None, ...)  in-process; returns a `Simulator` (.port, .url, .stop())
    start_background(...)                     same, on a daemon thread, for synchronous callers
    gcp.make_service_account(path, token_uri) writes a service-account key file the simulator can know
"""

from simulator.background import BackgroundSimulator, start_background
from simulator.server import Simulator, make_app, run, start
from simulator.state import Behaviour
from simulator.textgen import FIRST_WORD, count_tokens

__all__ = ["BackgroundSimulator", "Behaviour", "FIRST_WORD", "Simulator", "count_tokens", "make_app", "run",
           "start", "start_background"]
