"""Onboarding is a config change: edits to the running gateway's YAML take effect without a
restart and without a failed request; an invalid edit keeps the last good config serving."""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.integration.conftest import TENANT_KEY, Gateway, Simulator, start_gateway

HELLO = [{"role": "user", "content": "Hello"}]


def write_atomically(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(doc))
    os.replace(tmp, path)


class SteadyLoad:
    """A few client threads sending requests back to back; records every status."""

    def __init__(self, gw: Gateway, model: str, threads: int = 3) -> None:
        self.gw, self.model = gw, model
        self.statuses: list[int] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(timeout=10) as c:
            while not self._stop.is_set():
                try:
                    r = c.post(self.gw.url + "/v1/chat/completions", json={"model": self.model, "messages": HELLO},
                               headers={"authorization": f"Bearer {TENANT_KEY}"})
                    self.statuses.append(r.status_code)
                    if r.status_code != 200:
                        self.failures.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as e:
                    self.failures.append(repr(e))

    def __enter__(self) -> SteadyLoad:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)


def answers_within(gw: Gateway, model: str, seconds: float) -> float:
    """Seconds until `model` answers 200; fails past `seconds`."""
    start = time.monotonic()
    last = None
    while time.monotonic() - start < seconds:
        r = httpx.post(gw.url + "/v1/chat/completions", json={"model": model, "messages": HELLO},
                       headers={"authorization": f"Bearer {TENANT_KEY}"}, timeout=10)
        if r.status_code == 200:
            return time.monotonic() - start
        last = (r.status_code, r.text[:300])
        time.sleep(0.05)
    raise AssertionError(f"{model} did not answer within {seconds}s; last: {last}")


def metric(gw: Gateway, name: str) -> float:
    cfg = yaml.safe_load(gw.config_path.read_text())
    with urllib.request.urlopen(f"http://127.0.0.1:{cfg['metrics']['port']}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.rsplit(" ", 1)[0] == name:
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {name}")


def test_config_edits_under_load(simulator: Simulator, tmp_path: Path) -> None:
    gw = start_gateway(simulator, tmp_path)
    try:
        doc = yaml.safe_load(gw.config_path.read_text())
        with SteadyLoad(gw, "gpt-4o-mini") as load:
            time.sleep(0.5)
            # 1. A new model on an existing provider.
            doc["models"].append({"name": "gpt-4o-mini-new", "provider": "openai",
                                  "upstream_model": "gpt-4o-mini-2025-01-01"})
            write_atomically(gw.config_path, doc)
            assert answers_within(gw, "gpt-4o-mini-new", 2.0) <= 2.0

            # 2. A new provider (a new Envoy cluster) and a model on it.
            sim = f"http://127.0.0.1:{simulator.port}"
            doc["providers"].append({"name": "anthropic-eu", "type": "anthropic", "endpoint": sim,
                                     "api_key_env": "IT_PROVIDER_KEY"})
            doc["models"].append({"name": "claude-eu", "provider": "anthropic-eu",
                                  "upstream_model": "claude-haiku-4-5-20251001", "max_output_tokens": 512})
            write_atomically(gw.config_path, doc)
            assert answers_within(gw, "claude-eu", 2.0) <= 2.0
            r = httpx.post(gw.url + "/v1/chat/completions", json={"model": "claude-eu", "messages": HELLO},
                           headers={"authorization": f"Bearer {TENANT_KEY}"}, timeout=10)
            assert r.headers["x-interlock-provider"] == "anthropic-eu"
            with urllib.request.urlopen(gw.admin + "/clusters", timeout=5) as resp:
                assert "provider_anthropic-eu::" in resp.read().decode()

            # 3. An invalid edit: the last good config keeps serving; the failure is counted.
            failures_before = metric(gw, 'interlock_config_reloads_total{result="failure"}')
            bad = yaml.safe_load(yaml.safe_dump(doc))
            bad["models"].append({"name": "broken", "provider": "openai", "price": {"input_per_mtok": -1}})
            write_atomically(gw.config_path, bad)
            deadline = time.monotonic() + 5
            while metric(gw, 'interlock_config_reloads_total{result="failure"}') == failures_before:
                assert time.monotonic() < deadline, "the failed reload was not counted"
                time.sleep(0.1)
            assert f"models[{len(bad['models']) - 1}].price.input_per_mtok: must be >= 0" in gw.process.text()
            assert answers_within(gw, "claude-eu", 1.0) <= 1.0
            r = httpx.post(gw.url + "/v1/chat/completions", json={"model": "broken", "messages": HELLO},
                           headers={"authorization": f"Bearer {TENANT_KEY}"}, timeout=10)
            assert r.status_code == 404

            # 4. Removing a model: it stops being routable; the rest keeps serving.
            doc["models"] = [m for m in doc["models"] if m["name"] != "gpt-4o-mini-new"]
            write_atomically(gw.config_path, doc)
            deadline = time.monotonic() + 2
            while httpx.post(gw.url + "/v1/chat/completions", json={"model": "gpt-4o-mini-new", "messages": HELLO},
                             headers={"authorization": f"Bearer {TENANT_KEY}"}, timeout=10).status_code != 404:
                assert time.monotonic() < deadline, "the removed model still answers"
                time.sleep(0.05)
            time.sleep(0.5)
        assert load.failures == [], load.failures[:5]
        assert len(load.statuses) > 50
        assert metric(gw, 'interlock_config_reloads_total{result="success"}') == 3
    finally:
        gw.process.stop()
