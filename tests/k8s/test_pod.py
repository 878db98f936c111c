"""The chart's pod, emulated (tests.k8s.pod) from the image's layout (tests.k8s.image): probes at
the pod IP, traffic through the simulator, a ConfigMap update written as the kubelet writes it
picked up under load, and preStop + SIGTERM draining with no failed request in flight.

The tests run in file order on one pod; the last one stops it. The figures (time to ready,
requests served during the reload and the drain, failures) are printed at the end and quoted in
README "Deploy on Kubernetes"."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import free_port, free_port_run
from tests.integration.conftest import PROVIDER_KEY, Simulator, sha
from tests.k8s.chart import find, manifests
from tests.k8s.image import build_layout
from tests.k8s.pod import Pod

TENANT_KEY = "sk-k8s-tenant"
HELLO = [{"role": "user", "content": "Hello"}]
FIGURES: dict[str, Any] = {}


def pod_values(sim: Simulator, ports: dict[str, int]) -> dict[str, Any]:
    return {
        "config": {
            "listen": {"address": "0.0.0.0", "port": ports["listen"]},
            "admin": {"address": "127.0.0.1", "port": ports["admin"]},
            "metrics": {"address": "0.0.0.0", "port": ports["metrics"]},
            "extproc": {"address": "127.0.0.1", "port": ports["extproc"], "workers": 2},
            "rate_limit": {"address": "127.0.0.1", "port": ports["rate_limit"], "store": "memory"},
            "providers": [
                {"name": "openai", "type": "openai", "endpoint": sim.url,
                 "api_key_file": "/var/run/secrets/interlock/openai/api-key"},
                {"name": "anthropic", "type": "anthropic", "endpoint": sim.url, "api_key_env": "ANTHROPIC_API_KEY"},
            ],
            "models": [
                {"name": "gpt-4o-mini", "provider": "openai", "upstream_model": "gpt-4o-mini-k8s"},
                {"name": "claude-slow", "provider": "anthropic", "upstream_model": "claude-slow-k8s"},
            ],
            "tenants": [{"name": "k8s", "api_key_sha256": [sha(TENANT_KEY)]}],
        },
        "providerSecrets": [{"name": "openai", "secretName": "openai-key"}],
        "env": [{"name": "ANTHROPIC_API_KEY", "valueFrom": {"secretKeyRef": {"name": "anthropic-key", "key": "key"}}}],
        "drain": {"preStopSleepSeconds": 1, "timeoutSeconds": 15},
        "terminationGracePeriodSeconds": 25,
    }


@pytest.fixture(scope="module")
def pod(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    ports = {"listen": free_port(), "admin": free_port(), "metrics": free_port(), "extproc": free_port_run(2),
             "rate_limit": free_port()}
    docs = manifests(pod_values(simulator, ports))
    cm = find(docs, "ConfigMap", "interlock")
    layout = build_layout(tmp_path_factory.mktemp("image"))
    root = tmp_path_factory.mktemp("pod")
    p = Pod(find(docs, "Deployment"), root, layout,
            secrets={"openai-key": {"api-key": PROVIDER_KEY}, "anthropic-key": {"key": PROVIDER_KEY}},
            configmaps={cm["metadata"]["name"]: dict(cm["data"])})
    simulator.behave("gpt-4o-mini-k8s", ttft_ms=30)
    simulator.behave("claude-slow-k8s", ttft_ms=300, tokens_per_s=20, output_tokens=60)
    log = root / "container.log"
    p.start(log)
    try:
        FIGURES["time_to_ready_s"] = round(p.wait_ready(), 2)
        yield p
    except BaseException:
        print(log.read_text(errors="replace")[-6000:])
        raise
    finally:
        p.kill()
        if p.proc is not None and p.proc.returncode not in (0, None):
            print(log.read_text(errors="replace")[-6000:])


def chat(client: httpx.Client, url: str, model: str = "gpt-4o-mini") -> httpx.Response:
    return client.post(url + "/v1/chat/completions", json={"model": model, "messages": HELLO},
                       headers={"authorization": f"Bearer {TENANT_KEY}"})


class Load:
    """Client threads sending chat completions back to back to the pod IP (as the Service would);
    every status recorded, every error kept."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(timeout=30) as c:
            while not self._stop.is_set():
                try:
                    r = chat(c, self.url)
                    failed = None if r.status_code == 200 else f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as e:
                    failed = repr(e)
                with self._lock:
                    if failed:
                        self.failures.append(failed)
                    else:
                        self.ok += 1

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """No new request from now on; the ones in flight finish."""
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def __exit__(self, *exc: object) -> None:
        self.stop()


def test_probes_answer_at_the_pod_ip_and_traffic_flows(pod: Pod) -> None:
    assert pod.probe("liveness") == 200 and pod.probe("readiness") == 200
    with httpx.Client(timeout=30) as c:
        r = chat(c, pod.url())
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"]
        r = chat(c, pod.url(), "claude-slow")  # the key from the Secret via env
        assert r.status_code == 200, r.text
        metrics = c.get(pod.url("metrics") + "/metrics")
        assert metrics.status_code == 200 and "interlock_config_generation 1" in metrics.text


def test_the_container_sees_its_mounts_as_the_manifest_says(pod: Pod) -> None:
    ro = pod.run_inside("touch /etc/interlock/x")
    assert ro.returncode != 0 and "Read-only file system" in ro.stderr
    root = pod.run_inside("touch /opt/interlock/x")
    assert root.returncode != 0 and "Read-only file system" in root.stderr
    work = pod.run_inside("ls /var/run/interlock && id -u && readlink /etc/interlock/gateway.yaml")
    assert work.returncode == 0, work.stderr
    files = work.stdout.split()
    assert {"envoy.yaml", "cds.yaml", "rds.yaml", "active.yaml"} <= set(files)
    assert "10001" in files and "..data/gateway.yaml" in files


def test_a_configmap_update_is_picked_up_under_load(pod: Pod) -> None:
    cm_name = pod.spec["volumes"][0]["configMap"]["name"]
    config = yaml.safe_load(pod.configmaps[cm_name]["gateway.yaml"])
    config["providers"].append({**config["providers"][0], "name": "openai-b"})
    config["models"].append({"name": "gpt-new", "provider": "openai-b", "upstream_model": "gpt-4o-mini-k8s"})
    with Load(pod.url()) as load, httpx.Client(timeout=30) as c:
        time.sleep(1.0)
        before = load.ok
        written = time.monotonic()
        pod.update_configmap(cm_name, {"gateway.yaml": yaml.safe_dump(config)})
        while chat(c, pod.url(), "gpt-new").status_code != 200:
            assert time.monotonic() - written < 20, "the new model never answered"
            time.sleep(0.05)
        picked_up = time.monotonic() - written
        time.sleep(1.0)
        load.stop()
        metrics = c.get(pod.url("metrics") + "/metrics").text
    assert load.failures == []
    assert 'interlock_config_reloads_total{result="success"} 1' in metrics
    FIGURES["reload"] = {"picked_up_after_s": round(picked_up, 2), "requests_ok": load.ok - before,
                         "failures": len(load.failures)}


def test_prestop_and_sigterm_drain_without_a_failed_request(pod: Pod, capsys: pytest.CaptureFixture[str]) -> None:
    streams: list[tuple[int, str]] = []
    stream_errors: list[str] = []

    def stream() -> None:
        try:
            with httpx.Client(timeout=30) as c, c.stream(
                    "POST", pod.url() + "/v1/chat/completions", headers={"authorization": f"Bearer {TENANT_KEY}"},
                    json={"model": "claude-slow", "messages": HELLO, "stream": True}) as r:
                streams.append((r.status_code, r.read().decode()))
        except httpx.HTTPError as e:
            stream_errors.append(repr(e))

    load = Load(pod.url()).__enter__()
    time.sleep(0.5)
    long_ones = [threading.Thread(target=stream) for _ in range(4)]
    for t in long_ones:
        t.start()
    time.sleep(0.5)
    before = load.ok
    stopping = time.monotonic()
    pod.pre_stop()  # meanwhile the endpoint is removed from the Service
    load.stop()  # ... after which no new request reaches the pod
    in_flight = sum(t.is_alive() for t in long_ones)
    readiness: list[int | None] = []
    watcher = threading.Thread(target=lambda: [readiness.append(pod.probe("readiness")) or time.sleep(0.05)
                                               for _ in range(40)], daemon=True)
    watcher.start()
    status = pod.terminate()
    exited = time.monotonic() - stopping
    watcher.join(10)
    for t in long_ones:
        t.join(30)
    assert status == 0, f"the container exited with {status}"
    assert stream_errors == [] and load.failures == []
    assert in_flight == 4, "the streams should still have been running at SIGTERM"
    assert len(streams) == 4
    # Readiness fails once the drain begins (503, then nothing once the listener stops accepting)
    # and never passes again.
    failing = next((i for i, code in enumerate(readiness) if code != 200), None)
    assert failing is not None and 200 not in readiness[failing:], readiness
    for code, body in streams:
        assert code == 200 and body.rstrip().endswith("data: [DONE]"), body[-300:]
    FIGURES["drain"] = {"requests_ok_during_prestop": load.ok - before, "streams_in_flight_at_sigterm": in_flight,
                         "streams_completed": len(streams),
                        "failures": len(load.failures) + len(stream_errors), "exit_after_s": round(exited, 2)}
    with capsys.disabled():
        print(f"\npod emulation figures: {FIGURES}")
