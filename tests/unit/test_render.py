"""`interlock render`: what it writes is accepted by the real Envoy and carries the LLM defaults."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from extproc import metadata
from extproc.cli import main
from extproc.config import load_file
from extproc.envoyconf import render, render_files
from extproc.launcher import envoy_binary
from tests.conftest import FIXTURES, ROOT

VALID = sorted((FIXTURES / "config" / "valid").glob("*.yaml"))


def _validate(bootstrap: Path) -> None:
    out = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(bootstrap),
                          "--disable-hot-restart", "--log-level", "error"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK" in out.stdout + out.stderr


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_rendered_config_passes_envoy_validate(path: Path, tmp_path: Path) -> None:
    """Validate mode does not read file-based CDS/RDS, so every resource is also validated in
    the --static rendering, which holds the same clusters and routes inline."""
    assert main(["render", "-c", str(path), "-o", str(tmp_path / "dynamic")]) == 0
    assert sorted(p.name for p in (tmp_path / "dynamic").iterdir()) == ["cds.yaml", "envoy.yaml", "rds.yaml"]
    _validate(tmp_path / "dynamic" / "envoy.yaml")
    assert main(["render", "--static", "-c", str(path), "-o", str(tmp_path / "static")]) == 0
    _validate(tmp_path / "static" / "envoy.yaml")
    dynamic = yaml.safe_load((tmp_path / "dynamic" / "cds.yaml").read_text())["resources"]
    static = yaml.safe_load((tmp_path / "static" / "envoy.yaml").read_text())["static_resources"]["clusters"]
    # The static part: the ext_proc and rate-limit clusters; then the same provider clusters.
    assert [c["name"] for c in static[:2]] == ["interlock_extproc", "interlock_ratelimit"]
    assert [{k: v for k, v in c.items() if k != "@type"} for c in dynamic] == static[2:]


def test_render_refuses_invalid_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "-c", str(FIXTURES / "config" / "invalid" / "negative-price.yaml"),
                 "-o", str(tmp_path)]) == 1
    assert "models[1].price.input_per_mtok: must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "envoy.yaml").exists()


def _cluster(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in doc["static_resources"]["clusters"] if c["name"] == name)


def test_llm_defaults() -> None:
    cfg = load_file(str(FIXTURES / "config" / "valid" / "full.yaml"))
    doc = render(cfg, "/etc/interlock/envoy", static=True)["envoy.yaml"]
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert hcm["early_header_mutation_extensions"][0]["typed_config"]["mutations"] == [
        {"remove": metadata.CLUSTER_HEADER}]
    for r in routes:
        if "route" in r:
            assert r["route"]["timeout"] == "0s"  # no 15 s default cutting long generations
            assert r["route"]["idle_timeout"]
    anthropic_route = next(r for r in routes if r.get("route", {}).get("cluster") == "provider_anthropic")
    assert anthropic_route["route"]["retry_policy"]["per_try_timeout"] == "90s"
    assert anthropic_route["route"]["idle_timeout"] == "600s"
    ext = hcm["http_filters"][0]["typed_config"]
    assert ext["message_timeout"] == "45s"
    assert ext["processing_mode"]["request_body_mode"] == "BUFFERED"
    extproc = _cluster(doc, metadata.EXTPROC_CLUSTER)
    assert len(extproc["load_assignment"]["endpoints"][0]["lb_endpoints"]) == 4
    assert "http2_protocol_options" in extproc["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"]
    assert extproc["circuit_breakers"]["thresholds"][0]["max_requests"] == 20000
    anthropic = _cluster(doc, "provider_anthropic")
    assert anthropic["transport_socket"]["typed_config"]["sni"] == "api.anthropic.com"
    assert anthropic["circuit_breakers"]["thresholds"][0]["max_requests"] == 4096
    assert anthropic["outlier_detection"]["consecutive_5xx"] == 3
    assert anthropic["connect_timeout"] == "2s"
    vllm = _cluster(doc, "provider_vllm")
    assert vllm["type"] == "STATIC" and "transport_socket" not in vllm
    assert doc["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


def test_checked_in_demo_render_is_current() -> None:
    """envoy/demo/ is generated; regenerate with REGEN=1 when the renderer changes."""
    import dataclasses

    cfg = load_file(str(ROOT / "extproc" / "demo" / "demo.yaml"))
    cfg = dataclasses.replace(cfg, extproc=dataclasses.replace(cfg.extproc, workers=2))
    files = render_files(cfg, "/etc/interlock/envoy")
    out = ROOT / "envoy" / "demo"
    if os.environ.get("REGEN"):
        out.mkdir(exist_ok=True)
        for name, text in files.items():
            (out / name).write_text(text)
    for name, text in files.items():
        assert (out / name).read_text() == text, f"envoy/demo/{name} is stale: REGEN=1 pytest {__file__}"
        yaml.safe_load(text)
