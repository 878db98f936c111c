"""`interlock render`: what it writes is accepted by the real Envoy and carries the LLM defaults."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from extproc import metadata
from extproc.cmd.cli import main
from extproc.cmd.run import envoy_binary
from extproc.config import load_file
from extproc.envoyconf.render import CLIENT_NAMESPACE, render, render_files
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


def _router_stage(hcm: dict[str, Any]) -> dict[str, Any]:
    """The router stage's ext_proc config (inside the matcher that skips it for replies to
    requests it never saw)."""
    f = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_proc")["typed_config"]
    return dict(f["extension_config"]["typed_config"])


def _cluster(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in doc["static_resources"]["clusters"] if c["name"] == name)


def test_llm_defaults() -> None:
    cfg = load_file(str(FIXTURES / "config" / "valid" / "full.yaml"))
    doc = render(cfg, "/etc/interlock/envoy", static=True)["envoy.yaml"]
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    # Neither the cluster nor the request id is the client's to choose.
    assert hcm["early_header_mutation_extensions"][0]["typed_config"]["mutations"] == [
        {"remove": metadata.CLUSTER_HEADER}, {"remove": metadata.REQUEST_ID_HEADER}]
    for r in routes:
        if "route" in r:
            assert r["route"]["timeout"] == "0s"  # no 15 s default cutting long generations
            assert r["route"]["idle_timeout"]
    anthropic_route = next(r for r in routes if r.get("route", {}).get("cluster") == "provider_anthropic")
    assert anthropic_route["route"]["retry_policy"]["per_try_timeout"] == "90s"
    assert anthropic_route["route"]["idle_timeout"] == "600s"
    ext = _router_stage(hcm)
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

    cfg = load_file(str(ROOT / "extproc" / "cmd" / "demo" / "demo.yaml"))
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


def test_rate_limit_and_last_line_filters_are_rendered_in_order() -> None:
    from extproc.config import load_file as load
    from extproc.envoyconf.render import render
    from extproc.limits import envoy_rate_limits

    cfg = load(str(FIXTURES / "config" / "valid" / "demo.yaml"))
    boot = render(cfg, "/tmp/x")["envoy.yaml"]
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    names = [f["name"] for f in hcm["http_filters"]]
    # Admission control is per provider (tests/unit/extproc/envoyconf/test_health_drain_limits.py).
    assert names == ["envoy.filters.http.health_check", "envoy.filters.http.header_to_metadata",
                     "envoy.filters.http.ext_proc", "envoy.filters.http.ratelimit", "envoy.filters.http.router"]
    rl = hcm["http_filters"][names.index("envoy.filters.http.ratelimit")]["typed_config"]
    assert rl["domain"] == "interlock" and rl["failure_mode_deny"] is False and rl["timeout"] == "0.100s"
    assert rl["rate_limits"] == envoy_rate_limits("interlock")
    assert boot["layered_runtime"]["layers"][0]["static_layer"]["interlock.admission_control.sr_threshold"] == 50.0
    clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}
    assert clusters["interlock_ratelimit"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"][
        "address"]["socket_address"]["port_value"] == cfg.rate_limit.port
    actions = {a["name"]: a["triggers"][0]["threshold"]["value"] for a in boot["overload_manager"]["actions"]}
    assert actions == {"envoy.overload_actions.shrink_heap": 0.95,
                       "envoy.overload_actions.stop_accepting_requests": 0.98}
    # The ext_proc may set Envoy's timeout header (deadlines).
    ext = _router_stage(hcm)
    assert ext["mutation_rules"]["allow_envoy"] is True
    # Envoy's own rate-limit 429 is shaped for the client, in Anthropic's format when the client
    # spoke Messages, even after the router stage rewrote the path for the provider.
    mappers = hcm["local_reply_config"]["mappers"]
    limited = [m for m in mappers if "request_rate_limited" in m["filter"]["extension_filter"]["typed_config"]["expression"]]
    assert len(limited) == 2
    assert any(m["body_format_override"]["json_format"].get("type") == "error" and
               CLIENT_NAMESPACE in m["filter"]["extension_filter"]["typed_config"]["expression"]
               for m in limited)
