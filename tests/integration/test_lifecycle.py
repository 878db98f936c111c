"""Process lifecycle: workers are restarted, Ctrl-C drains and leaves nothing behind, Envoy
answers 503 in the client's format when no ext_proc is there, and the demo (`make run`) serves."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
import yaml

from extproc.cmd.run import DEMO_CONFIG, SIM_PORT, envoy_binary
from extproc.cmd.supervisor import port_open, wait_until
from extproc.config import load_file, load_text
from extproc.envoyconf.render import render_files, worker_count
from tests.conftest import free_port, free_port_run
from tests.integration.conftest import (
    HELLO_BODY,
    TENANT_KEY,
    Simulator,
    gateway_config,
    pid_alive,
    start_gateway,
    start_process,
    wait_for_line,
)


def test_dead_worker_is_restarted_and_traffic_continues(simulator: Simulator, tmp_path: Path) -> None:
    gw = start_gateway(simulator, tmp_path)
    try:
        c = openai.OpenAI(base_url=gw.base_url, api_key=TENANT_KEY, max_retries=0)
        before = set(gw.process.descendants())
        worker_pid = _worker_pid(gw.process.descendants(), gw.extproc_ports[0])
        os.kill(worker_pid, signal.SIGKILL)
        # Until Envoy ejects the dead worker (its first refused connection) a request may get a
        # clean 503 in OpenAI format; never a hang, never another shape. Then the other serves.
        outcomes = []
        for _ in range(10):
            r = httpx.post(gw.url + "/v1/chat/completions", json=HELLO_BODY,
                           headers={"authorization": f"Bearer {TENANT_KEY}"}, timeout=10)
            assert r.status_code in (200, 503), r.text
            if r.status_code == 503:
                assert r.json()["error"]["code"] == "service_unavailable"
            outcomes.append(r.status_code)
        assert outcomes.count(503) <= 2 and outcomes[-5:] == [200] * 5, outcomes
        assert wait_until(lambda: port_open("127.0.0.1", gw.extproc_ports[0]), 15)
        assert "restarting" in gw.process.text()
        assert worker_pid not in gw.process.descendants() and set(gw.process.descendants()) != before
        # Envoy's health check brings the restarted worker back; every request succeeds.
        time.sleep(2.5)
        for _ in range(10):
            c.chat.completions.create(model="claude-haiku-4-5", messages=HELLO_BODY["messages"])  # type: ignore[arg-type]
    finally:
        gw.process.stop()


def test_ctrl_c_drains_and_leaves_no_process(simulator: Simulator, tmp_path: Path) -> None:
    gw = start_gateway(simulator, tmp_path)
    children = gw.process.descendants()
    assert len(children) >= 3  # Envoy and two workers
    assert gw.process.stop(signal.SIGINT) == 0
    assert wait_until(lambda: not any(pid_alive(p) for p in children), 10), [p for p in children if pid_alive(p)]
    assert "stopped" in gw.process.text()
    assert not port_open("127.0.0.1", int(gw.url.rsplit(":", 1)[1]))


def test_ext_proc_unavailable_is_503_in_openai_format(simulator: Simulator, tmp_path: Path) -> None:
    port, admin = free_port(), free_port()
    cfg = load_text(yaml.safe_dump(gateway_config(simulator.port, port, admin, free_port_run(1), workers=1)))
    (tmp_path / "envoy.yaml").write_text(render_files(cfg, str(tmp_path), static=True)["envoy.yaml"])
    envoy = subprocess.Popen([envoy_binary(), "-c", str(tmp_path / "envoy.yaml"), "--disable-hot-restart",
                              "--log-level", "error"], start_new_session=True)
    try:
        assert wait_until(lambda: port_open("127.0.0.1", port), 30)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=HELLO_BODY,
                       headers={"authorization": f"Bearer {TENANT_KEY}"}, timeout=10)
        assert r.status_code == 503
        assert r.headers["x-interlock-provider"] == "interlock" and r.headers["x-request-id"]
        assert r.json()["error"]["type"] == "api_error"
        assert "unavailable" in r.json()["error"]["message"]
        r = httpx.post(f"http://127.0.0.1:{port}/v1/messages", json=HELLO_BODY,
                       headers={"x-api-key": TENANT_KEY}, timeout=10)
        assert r.status_code == 503 and r.json()["type"] == "error"
        assert r.json()["error"]["type"] == "overloaded_error"
    finally:
        envoy.terminate()
        envoy.wait(10)


def test_demo_run_serves_openai_sdk_and_stops_clean(tmp_path: Path) -> None:
    """`make run`'s command: the embedded demo config on 127.0.0.1:10000 with simulated providers."""
    demo = load_file(str(DEMO_CONFIG))
    needed = [SIM_PORT, demo.listen.port, demo.admin.port, demo.metrics.port, demo.rate_limit.port,
              *(demo.extproc.port + i for i in range(worker_count(demo)))]
    for p in needed:
        if port_open("127.0.0.1", p):
            pytest.fail(f"port {p} is taken; the demo needs it")
    run = start_process(["run"], tmp_path / "demo.log")
    try:
        wait_for_line(run, "ready: http://127.0.0.1:10000", 90)
        text = run.text()
        assert "sk-interlock-demo" in text and "curl" in text
        c = openai.OpenAI(base_url="http://127.0.0.1:10000/v1", api_key="sk-interlock-demo", max_retries=0)
        a = anthropic.Anthropic(base_url="http://127.0.0.1:10000", api_key="sk-interlock-demo", max_retries=0)
        tool: Any = {"name": "get_weather", "input_schema": {"type": "object", "properties": {
            "city": {"type": "string"}}, "required": ["city"]}}
        for model in ("gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash", "bedrock-claude-sonnet"):
            done = c.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}])
            assert done.choices[0].message.content
            streamed = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Hi"}], stream=True) if ch.choices)
            assert streamed == done.choices[0].message.content
            called = c.chat.completions.create(model=model, messages=[{"role": "user", "content": "Weather?"}],
                                               tools=[{"type": "function", "function": {
                                                   "name": tool["name"], "parameters": tool["input_schema"]}}],
                                               tool_choice="required")
            assert called.choices[0].finish_reason == "tool_calls"
            msg = a.messages.create(model=model, max_tokens=100, messages=[{"role": "user", "content": "Hi"}])
            assert msg.content[0].type == "text" and msg.content[0].text
            with a.messages.stream(model=model, max_tokens=100, tools=[tool], tool_choice={"type": "any"},
                                   messages=[{"role": "user", "content": "Weather?"}]) as stream:
                assert stream.get_final_message().stop_reason == "tool_use"
        for route in ("auto", "fast"):
            raw = c.chat.completions.with_raw_response.create(model=route, messages=[{"role": "user", "content": "Hi"}])
            assert raw.parse().choices[0].message.content and raw.headers["x-interlock-route"] == route
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url="http://127.0.0.1:10000/v1", api_key="sk-wrong", max_retries=0) \
                .chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
        children = run.descendants()
    finally:
        code = run.stop(signal.SIGINT)
    assert code == 0
    assert wait_until(lambda: not any(pid_alive(p) for p in children), 10)


def _worker_pid(gw_pids: list[int], port: int) -> int:
    """The worker process serving `port`, found by its command line."""
    for pid in gw_pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--single" in argv and str(port).encode() in argv:
            return pid
    raise AssertionError(f"no worker for port {port} among {gw_pids}")


def test_envoys_own_errors_have_openais_whole_shape(simulator: Simulator, tmp_path: Path) -> None:
    """Envoy's local replies (here: no ext_proc to ask) are OpenAI errors with every field an
    OpenAI client reads, `param` included (null: no parameter is at fault)."""
    port = free_port()
    cfg = load_text(yaml.safe_dump(gateway_config(simulator.port, port, free_port(), free_port_run(1), workers=1)))
    (tmp_path / "envoy.yaml").write_text(render_files(cfg, str(tmp_path), static=True)["envoy.yaml"])
    envoy = subprocess.Popen([envoy_binary(), "-c", str(tmp_path / "envoy.yaml"), "--disable-hot-restart",
                              "--log-level", "error"], start_new_session=True)
    try:
        assert wait_until(lambda: port_open("127.0.0.1", port), 30)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=HELLO_BODY,
                       headers={"authorization": f"Bearer {TENANT_KEY}"}, timeout=10)
        assert r.status_code == 503
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["param"] is None, err
        with pytest.raises(openai.InternalServerError) as info:
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=TENANT_KEY, max_retries=0) \
                .chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
        assert (info.value.param, info.value.code) == (None, "service_unavailable")
    finally:
        envoy.terminate()
        envoy.wait(10)
