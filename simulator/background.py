"""The simulator on its own event loop in a daemon thread, for synchronous callers (sync SDKs)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from simulator.server import Simulator, start
from simulator.state import Behaviour, Clock, Sleep


class BackgroundSimulator:
    """A `Simulator` served from a background thread; every method is safe to call from any thread."""

    def __init__(self, simulator: Simulator, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self.simulator = simulator
        self._loop = loop
        self._thread = thread

    @property
    def port(self) -> int:
        return self.simulator.port

    @property
    def url(self) -> str:
        return self.simulator.url

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        async def invoke() -> Any:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(invoke(), self._loop).result()

    def set_behaviour(self, model: str, **patch: Any) -> Behaviour:
        return self._call(self.simulator.set_behaviour, model, **patch)

    def requests(self) -> list[dict[str, Any]]:
        return self._call(self.simulator.requests)

    def reset(self) -> None:
        self._call(self.simulator.reset)

    @property
    def token_url(self) -> str:
        return self.simulator.token_url

    def add_gcp_service_account(self, path: str | Path) -> dict[str, Any]:
        return self._call(self.simulator.add_gcp_service_account, path)

    def add_aws_credentials(self, access_key_id: str, secret_access_key: str) -> None:
        self._call(self.simulator.add_aws_credentials, access_key_id, secret_access_key)

    def set_gcp_token_lifetime(self, seconds: int) -> None:
        self._call(self.simulator.set_gcp_token_lifetime, seconds)

    def revoke_gcp_tokens(self) -> int:
        return self._call(self.simulator.revoke_gcp_tokens)

    def stats(self) -> dict[str, Any]:
        return self._call(self.simulator.stats)

    def stop(self) -> None:
        """Stop serving and end the thread."""
        asyncio.run_coroutine_threadsafe(self.simulator.stop(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


def start_background(host: str = "127.0.0.1", port: int = 0, api_keys: list[str] | None = None, *,
                     seed: int = 0, clock: Clock | None = None, sleep: Sleep | None = None,
                     gcp_service_accounts: list[str] | None = None,
                     aws_credentials: dict[str, str] | None = None) -> BackgroundSimulator:
    """Start the simulator in a daemon thread (arguments as for `start`) and return once it listens."""
    loop = asyncio.new_event_loop()
    ready: dict[str, Any] = {}
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            ready["simulator"] = loop.run_until_complete(
                start(host, port, api_keys, seed=seed, clock=clock, sleep=sleep,
                      gcp_service_accounts=gcp_service_accounts, aws_credentials=aws_credentials))
        except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
            ready["error"] = exc
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.close()

    thread = threading.Thread(target=serve, name="simulator", daemon=True)
    thread.start()
    started.wait()
    if "error" in ready:
        raise ready["error"]
    return BackgroundSimulator(ready["simulator"], loop, thread)
