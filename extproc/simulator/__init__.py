"""Provider simulator: a stand-in for the OpenAI and Anthropic HTTP APIs.

Speaks each provider's wire format (JSON and SSE streaming), rejects what the provider would
reject (strict validation against the official SDK types, see `extproc.schemas`), produces
deterministic text and tool calls (`textgen`), counts usage itself, and follows a per-model
behaviour script changeable at run time (`state.Behaviour`, control API in `server`).

    run(host, port, api_keys=None)            blocking; for `interlock simulate` / `make run`
    await start(host, port=0, api_keys=None)  in-process; returns a `Simulator` (.port, .url, .stop())
    start_background(...)                     same, on a daemon thread, for synchronous callers
"""

from extproc.simulator.background import BackgroundSimulator, start_background
from extproc.simulator.server import Simulator, make_app, run, start
from extproc.simulator.state import Behaviour
from extproc.simulator.textgen import FIRST_WORD, count_tokens

__all__ = ["BackgroundSimulator", "Behaviour", "FIRST_WORD", "Simulator", "count_tokens", "make_app", "run",
           "start", "start_background"]
