"""Operating the gateway (issue 11, points 13, 14 and 16), through `interlock run` and the real Envoy:

- a second `interlock run` on busy ports exits non-zero naming each port, before it starts
  anything (so it never prints `ready`, restarts children, or drains the first instance);
- Ctrl-C under `interlock run | tee`, when `tee` died of the same Ctrl-C, still drains: in-flight
  streams finish, Envoy stops accepting, then every child stops;
- `run --simulate` with a copy of the demo config has the simulator's credentials; workers log
  the generation the supervisor loaded; `--log-level` after the subcommand;
- `/v1/models` answers name the gateway and a real creation time; capabilities are enforced on
  passthrough too (Envoy's own errors and `param`: `test_lifecycle.py`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
import yaml

from extproc.cmd.run import DEMO_CONFIG, DEMO_KEY, SIM_PORT
from extproc.cmd.supervisor import die_with_parent, port_open, wait_until
from tests.conftest import ROOT, free_port, free_port_run
from tests.integration.conftest import (
    HELLO_BODY,
    PROVIDER_ENV,
    TENANT_KEY,
    Gateway,
    Simulator,
    gateway_config,
    pid_alive,
    start_process,
)

# -- 13: a second instance on busy ports --------------------------------------------------------


def _run_second(args: list[str], log: Path) -> tuple[int, str]:
    """`interlock run ARGS` expected to give up on its own; killed (never SIGINT: the unfixed
    launcher drains whatever answers on its admin port) if it does not within 20 s."""
    p = start_process(["run", *args, "--drain-timeout", "1"], log, env=PROVIDER_ENV)
    try:
        code = p.proc.wait(20)
    except subprocess.TimeoutExpired:
        p.stop(signal.SIGKILL)
        raise AssertionError(f"a second instance kept running; log:\n{p.text()[-3000:]}") from None
    return code, p.text()


def test_a_second_run_on_the_same_ports_exits_naming_each_and_leaves_the_first_serving(
        gateway: Gateway, tmp_path: Path) -> None:
    cfg = yaml.safe_load(gateway.config_path.read_text())
    code, text = _run_second(["-c", str(gateway.config_path)], tmp_path / "second.log")
    assert code == 1 and "ready" not in text and "restarting" not in text, text
    ext = cfg["extproc"]["port"]
    for name, port in [("listen.port", cfg["listen"]["port"]), ("admin.port", cfg["admin"]["port"]),
                       ("metrics.port", cfg["metrics"]["port"]), ("extproc.port", ext),
                       ("extproc.port + 1 (worker 1)", ext + 1), ("rate_limit.port", cfg["rate_limit"]["port"])]:
        assert f"error: {name}: cannot listen on 127.0.0.1:{port}: in use" in text, text
    # The first instance was not drained through the shared admin port: it still takes connections.
    r = httpx.post(gateway.url + "/v1/chat/completions", json=HELLO_BODY, timeout=10,
                   headers={"authorization": f"Bearer {TENANT_KEY}"})
    assert r.status_code == 200, r.text
    assert "draining" not in gateway.process.text()


@pytest.mark.parametrize("busy", ["rate_limit.port", "extproc.port + 1 (worker 1)", "simulator"])
def test_one_busy_port_is_named_and_nothing_starts(simulator: Simulator, tmp_path: Path, busy: str) -> None:
    extproc = free_port_run(2)
    cfg = gateway_config(simulator.port, free_port(), free_port(), extproc, workers=2)
    held = {"rate_limit.port": cfg["rate_limit"]["port"], "extproc.port + 1 (worker 1)": extproc + 1,
            "simulator": SIM_PORT}[busy]
    (tmp_path / "gw.yaml").write_text(yaml.safe_dump(cfg))
    with socket.socket() as other:  # another program listening there
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):  # already taken (say, by a demo running): busy all the same
            other.bind(("127.0.0.1", held))
            other.listen()
        code, text = _run_second(["-c", str(tmp_path / "gw.yaml"), *(["--simulate"] if busy == "simulator" else [])],
                                 tmp_path / "run.log")
    errors = [line for line in text.splitlines() if line.startswith("error: ")]
    assert code == 1 and len(errors) == 1 and errors[0].startswith(f"error: {busy}"), text
    assert f"127.0.0.1:{held}: in use" in errors[0]
    assert "started" not in text and "ready" not in text


# -- 14 and 16: a copy of the demo config, `run --simulate`, stdout through `tee` ---------------------


def _as_in_a_terminal() -> None:
    """`tee` as a terminal starts it: SIGINT kills it. A test run started in the background by a
    shell without job control (`cmd &`) inherits SIGINT ignored, and so would `tee`."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    die_with_parent()


@dataclass
class Piped:
    """`interlock run` whose stdout goes through `tee` (as `make run | tee run.log` does)."""

    run: subprocess.Popen[bytes]
    tee: subprocess.Popen[bytes]
    stdout: Path  # what tee wrote
    stderr: Path
    config: Path
    url: str
    admin: str

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")

    def descendants(self) -> list[int]:
        kids = Path(f"/proc/{self.run.pid}/task/{self.run.pid}/children")
        return [int(k) for k in kids.read_text().split()] if kids.exists() else []


@pytest.fixture(scope="module")
def piped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Piped]:
    if port_open("127.0.0.1", SIM_PORT):
        pytest.fail(f"port {SIM_PORT} is taken; `run --simulate` with the demo's providers needs it")
    work = tmp_path_factory.mktemp("piped")
    cfg = yaml.safe_load(DEMO_CONFIG.read_text())
    port, admin, extproc = free_port(), free_port(), free_port_run(2)
    cfg.update({"listen": {"address": "127.0.0.1", "port": port}, "admin": {"address": "127.0.0.1", "port": admin},
                "metrics": {"address": "127.0.0.1", "port": free_port()},
                "rate_limit": {"address": "127.0.0.1", "port": free_port()},
                "extproc": {"address": "127.0.0.1", "port": extproc, "workers": 2}})
    config = work / "my-gateway.yaml"  # a copy of the demo config, as a user starts from it
    config.write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERLOCK_SIM_")}
    stdout, stderr = work / "stdout.log", work / "stderr.log"
    # SIGTERM when this test process dies, however it dies: nothing outlives a killed test run.
    run = subprocess.Popen([sys.executable, "-m", "extproc.cmd.cli", "run", "-c", str(config), "--simulate",
                            "--drain-timeout", "10", "--log-level", "info"],
                           stdout=subprocess.PIPE, stderr=stderr.open("wb"), cwd=ROOT, start_new_session=True,
                           env={**env, "PYTHONPATH": str(ROOT)}, preexec_fn=die_with_parent)
    assert run.stdout is not None
    tee = subprocess.Popen(["tee", str(stdout)], stdin=run.stdout, stdout=subprocess.DEVNULL,
                           preexec_fn=_as_in_a_terminal)
    run.stdout.close()  # tee is the pipe's only reader
    p = Piped(run, tee, stdout, stderr, config, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}")
    try:
        if not wait_until(lambda: stdout.exists() and "ready: " in stdout.read_text() or run.poll() is not None,
                          90, 0.1) or run.poll() is not None:
            raise AssertionError(f"not ready; log:\n{p.log()[-4000:]}")
        yield p
    finally:
        for proc in (run, tee):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def test_run_simulate_with_a_copied_demo_config_has_the_simulators_credentials(piped: Piped) -> None:
    """The copy reads INTERLOCK_SIM_* like the embedded demo (here unset in the environment)."""
    c = openai.OpenAI(base_url=piped.url + "/v1", api_key=DEMO_KEY, max_retries=0)
    for model in ("gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash", "bedrock-claude-sonnet"):
        done = c.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}])
        assert done.choices[0].message.content, model
    assert c.embeddings.create(model="text-embedding-3-small", input="hi").data


def test_workers_log_the_generation_the_supervisor_loaded(piped: Piped) -> None:
    cfg = yaml.safe_load(piped.config.read_text())
    cfg["models"].append({**cfg["models"][0], "name": "gpt-4o-mini-copy"})
    piped.config.write_text(yaml.safe_dump(cfg))
    assert wait_until(lambda: "config reloaded (generation 2)" in piped.log(), 15), piped.log()[-3000:]
    assert wait_until(lambda: piped.log().count("config generation 2 loaded (was 1)") == 2
                      and "limits (config generation 2)" in piped.log(), 10), piped.log()[-3000:]
    assert "config generation 1 loaded" not in piped.log()


def _stream(url: str, got: dict[str, Any], first: threading.Event) -> None:
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "Tell me a story"}]}
    try:
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30,
                          headers={"authorization": f"Bearer {DEMO_KEY}"}) as r:
            got["status"] = r.status_code
            chunks = []
            for chunk in r.iter_text():
                chunks.append(chunk)
                first.set()
            got["text"] = "".join(chunks)
    except httpx.HTTPError as e:
        got["error"] = repr(e)
    finally:
        first.set()


def test_ctrl_c_after_tee_died_still_drains_then_stops_everything(piped: Piped) -> None:
    """Ctrl-C under `make run | tee`: the terminal's SIGINT kills `tee` and reaches `interlock
    run`, whose stdout is now a pipe nobody reads. The drain must happen anyway: a stream in
    flight finishes whole, new connections are refused, then every child stops."""
    urllib_put(f"http://127.0.0.1:{SIM_PORT}/_sim/models/gpt-4o-mini-2024-07-18",
               {"output_tokens": 40, "tokens_per_s": 10})
    children = piped.descendants()
    got: dict[str, Any] = {}
    first = threading.Event()
    streamer = threading.Thread(target=_stream, args=(piped.url, got, first), daemon=True)
    streamer.start()
    assert first.wait(10) and "error" not in got, got
    piped.tee.send_signal(signal.SIGINT)
    piped.tee.wait(5)
    piped.run.send_signal(signal.SIGINT)
    started = time.monotonic()
    # Envoy stops accepting once its graceful drain period (1 s) is over, long before the stream ends.
    assert wait_until(lambda: not port_open("127.0.0.1", int(piped.url.rsplit(":", 1)[1])), 5), "still accepting"
    assert streamer.is_alive(), got
    streamer.join(20)
    assert got.get("status") == 200 and got.get("text", "").rstrip().endswith("data: [DONE]"), got
    assert time.monotonic() - started >= 2  # the stream (4 s at 10 tokens/s) outlived the drain period
    assert piped.run.wait(30) == 0, piped.log()[-3000:]
    assert wait_until(lambda: not any(pid_alive(p) for p in children), 10)
    log = piped.log()
    assert "drain: no request in flight" in log and "BrokenPipeError" not in log, log[-3000:]


def urllib_put(url: str, body: dict[str, Any]) -> None:
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="PUT")
    urllib.request.urlopen(req, timeout=5).close()


# -- 16: answers the gateway makes itself -------------------------------------------------------


def test_models_list_names_the_gateway_and_a_real_creation_time(gateway: Gateway) -> None:
    c = openai.OpenAI(base_url=gateway.base_url, api_key=TENANT_KEY, max_retries=0)
    raw = c.models.with_raw_response.list()
    assert (raw.headers["x-interlock-provider"], raw.headers["x-interlock-model"]) == ("interlock", "-")
    assert raw.headers["x-request-id"]
    listed = raw.parse().data
    assert listed and all(time.time() - 86400 < m.created <= time.time() for m in listed)
    one = c.models.with_raw_response.retrieve("gpt-4o-mini")
    assert (one.headers["x-interlock-provider"], one.headers["x-interlock-model"]) == ("interlock", "gpt-4o-mini")
    a = anthropic.Anthropic(base_url=gateway.url, api_key=TENANT_KEY, max_retries=0)
    assert all(m.created_at.year >= 2026 for m in a.models.list().data)


def test_capabilities_are_enforced_on_passthrough(gateway: Gateway) -> None:
    """An OpenAI client to an OpenAI-type provider (the body would go upstream unchanged): tools
    to a model whose `capabilities` lack them are the gateway's 400, not the provider's problem."""
    c = openai.OpenAI(base_url=gateway.base_url, api_key=TENANT_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(model="unreachable-model", messages=[{"role": "user", "content": "Hi"}],
                                  tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    assert info.value.param == "tools" and info.value.response.headers["x-interlock-provider"] == "interlock"
