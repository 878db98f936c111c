"""The Helm chart (helm/interlock): golden renders, lint, Kubernetes and CRD schemas, the values
schema, and the gateway config it ships passing `interlock check` and `envoy --mode validate`.

`REGEN=1` rewrites the golden renders (tests/k8s/golden/<set>.out.yaml) from the value sets
(tests/k8s/values/<set>.in.yaml)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from extproc.cmd.run import envoy_binary
from extproc.config import load_text
from extproc.config.model import ListenerTls
from extproc.envoyconf.render import render_files, write_files
from tests.k8s.certs import certificate
from tests.k8s.chart import (
    CHART,
    GOLDEN,
    ROOT,
    VALUE_SETS,
    find,
    gateway_config,
    manifests,
    render,
    values_of,
)
from tests.k8s.pod import atomic_write

REGEN = os.environ.get("REGEN") == "1"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schema known.
KUBE_VERSIONS = ("1.29.0", "1.35.0")
CRD_GROUPS = {"monitoring.coreos.com", "networking.istio.io", "gateway.envoyproxy.io"}
# npm packages with the CRDs' published OpenAPI schemas (`make k8s-schemas` installs them here).
NPM_SCHEMAS = ROOT / ".venv" / "k8s-schemas"


@pytest.mark.parametrize("name", VALUE_SETS)
def test_golden_render(name: str) -> None:
    got = render(values_of(name))
    golden = GOLDEN / f"{name}.out.yaml"
    if REGEN:
        golden.write_text(got)
    assert golden.exists(), f"no golden render for {name}: run REGEN=1"
    assert got == golden.read_text(), f"{name}: render differs from {golden} (REGEN=1 rewrites it)"


def test_every_golden_render_has_its_value_set() -> None:
    assert sorted(p.name.removesuffix(".out.yaml") for p in GOLDEN.glob("*.out.yaml")) == VALUE_SETS


@pytest.mark.parametrize("name", VALUE_SETS)
def test_helm_lint_is_clean(name: str) -> None:
    report = helm.lint(CHART, values_of(name), strict=True, namespace="llm")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert problems == []


@pytest.mark.parametrize("name", VALUE_SETS)
def test_manifests_pass_the_kubernetes_schemas(name: str) -> None:
    import kubernetes_validate

    checked = 0
    for doc in manifests(values_of(name)):
        if doc["apiVersion"].split("/")[0] in CRD_GROUPS:
            continue
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)  # raises, naming the field
        checked += 1
    assert checked >= 3


def test_the_kubernetes_schemas_reject_a_misplaced_field() -> None:
    import kubernetes_validate

    deployment = find(manifests(), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFilesystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFilesystem"):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[0], strict=True)


def _crds(name: str) -> list[dict[str, Any]]:
    return [d for d in manifests(values_of(name)) if d["apiVersion"].split("/")[0] in CRD_GROUPS]


def _validate_crds(docs: list[dict[str, Any]]) -> list[str | None]:
    if not (NPM_SCHEMAS / "node_modules" / "@kubernetes-models").is_dir():
        pytest.skip("make k8s-schemas (npm @kubernetes-models/*) has not run")
    script = Path(__file__).with_name("validate_crds.mjs")
    out = subprocess.run(["node", str(script)], input=json.dumps(docs), capture_output=True, text=True,
                         cwd=NPM_SCHEMAS, env={**os.environ, "NODE_PATH": str(NPM_SCHEMAS / "node_modules")},
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout))


def test_custom_resources_pass_their_published_schemas() -> None:
    docs = [d for name in VALUE_SETS for d in _crds(name)]
    kinds = {d["kind"] for d in docs}
    assert kinds == {"ServiceMonitor", "PrometheusRule", "ServiceEntry", "VirtualService", "EnvoyExtensionPolicy"}
    results = _validate_crds(docs)
    assert [(d["kind"], r) for d, r in zip(docs, results, strict=True) if r] == []


def test_the_crd_validator_rejects_a_wrong_field() -> None:
    """The npm schemas are really applied: a ServiceMonitor with a numeric interval fails."""
    monitor = find(_crds("production"), "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["interval"] = 30
    [result] = _validate_crds([monitor])
    assert result is not None and "interval must be string" in result


@pytest.mark.parametrize(("values", "message"), [
    ({"replicas": 3}, "at '': additional properties 'replicas' not allowed"),
    ({"replicaCount": "3"}, "at '/replicaCount': got string, want integer"),
    ({"drain": {"preStopSleepSeconds": 5, "timeoutSecond": 30}},
     "at '/drain': additional properties 'timeoutSecond'"),
    ({"service": {"type": "Ingress", "port": 80}}, "at '/service/type': value must be one of"),
    ({"providerSecrets": [{"name": "openai"}]}, "at '/providerSecrets/0': missing property 'secretName'"),
    ({"config": {"listen": {"port": "10000"}}}, "at '/config/listen/port': got string, want integer"),
    ({"metrics": {"serviceMonitor": {"enabled": "yes"}}},
     "at '/metrics/serviceMonitor/enabled': got string, want boolean"),
    ({"logLevel": "verbose"}, "at '/logLevel': value must be one of 'debug', 'info', 'warning', 'error'"),
])
def test_values_that_break_the_schema_fail_with_the_key(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError) as e:
        render(values)
    assert message in str(e.value)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_the_shipped_config_passes_check_and_envoy_validate(name: str, tmp_path: Path) -> None:
    """What the pod does at start (`interlock run` loads the mounted gateway.yaml and renders
    Envoy's files into the work emptyDir), and Envoy accepts the result. Validate mode does not
    read file-based CDS/RDS, so the self-contained (`--static`) form is validated as well."""
    cfg = load_text(gateway_config(manifests(values_of(name))), "gateway.yaml")
    if cfg.listen.tls is not None:  # the Secret's files, here: Envoy reads them when it validates
        secret = tmp_path / "listener-tls"
        atomic_write(secret, certificate(1))
        cfg = dataclasses.replace(cfg, listen=dataclasses.replace(cfg.listen, tls=ListenerTls(
            str(secret / "tls.crt"), str(secret / "tls.key"),
            str(secret / "tls.crt") if cfg.listen.tls.client_ca_file else None, cfg.listen.tls.client_certificate)))
    for form, static in (("dynamic", False), ("static", True)):
        out = tmp_path / form
        write_files(out, render_files(cfg, str(out), static=static))
        proc = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(out / "envoy.yaml")],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_the_chart_ships_the_observability_files_unchanged() -> None:
    for name in ("alerts.yaml", "dashboard.json"):
        assert (CHART / "files" / name).read_bytes() == (ROOT / "observability" / name).read_bytes(), (
            f"helm/interlock/files/{name} differs from observability/{name}: copy it over")
    docs = manifests(values_of("production"))
    rules = find(docs, "PrometheusRule")
    assert rules["spec"] == yaml.safe_load((ROOT / "observability" / "alerts.yaml").read_text())["spec"]
    dashboard = find(docs, "ConfigMap", "-dashboard")
    assert json.loads(dashboard["data"]["interlock.json"]) == json.loads(
        (ROOT / "observability" / "dashboard.json").read_text())


@pytest.mark.parametrize("name", VALUE_SETS)
def test_the_pod_is_hardened_and_drains(name: str) -> None:
    values = values_of(name)
    docs = manifests(values)
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    [c] = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    scheme = "HTTPS" if "tls" in values.get("config", {}).get("listen", {}) else "HTTP"
    assert c["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http", "scheme": scheme}
    assert c["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http", "scheme": scheme}
    assert "limits" in c["resources"] and "requests" in c["resources"]
    writable = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    assert {m["name"] for m in c["volumeMounts"] if m["mountPath"] in writable} <= empty_dirs
    drain = float(c["args"][c["args"].index("--drain-timeout") + 1])
    sleep = float(c["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] > sleep + drain
    # A ConfigMap change is reloaded in place: no checksum annotation that would roll the pods.
    assert not any("checksum" in k for k in pod.get("annotations", {}))
    # Credentials are referenced, never inlined: no Secret is rendered.
    assert not [d for d in docs if d["kind"] == "Secret"]


def test_the_config_needs_the_pod_to_listen_on_all_interfaces() -> None:
    """The kubelet probes the pod IP: the default listener binds every interface."""
    cfg = load_text(gateway_config(manifests()), "gateway.yaml")
    assert cfg.listen.address == "0.0.0.0" and cfg.metrics.address == "0.0.0.0"
    assert cfg.admin.address == "127.0.0.1"


def test_node_is_available_for_the_crd_schemas() -> None:
    assert shutil.which("node"), "node (Debian nodejs) validates the custom resources"


def test_every_value_is_documented_where_it_is_declared() -> None:
    """Each key of values.yaml has a comment right above it, or sits inside a documented mapping
    (the Kubernetes objects passed through whole, such as `resources`)."""
    import re

    lines = (CHART / "values.yaml").read_text().splitlines()
    documented_indent: list[int] = []  # indents of documented mappings we are inside
    undocumented = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z_][\w.-]*):(.*)$", line)
        if not m:
            continue
        indent = len(m[1])
        documented_indent = [d for d in documented_indent if d < indent]
        above = next((x.strip() for x in reversed(lines[:i]) if x.strip()), "")
        has_comment = above.startswith("#")
        if has_comment and not m[3].strip():
            documented_indent.append(indent)
        if m[3].strip() and not has_comment and not documented_indent:
            undocumented.append(f"{i + 1}: {line.strip()}")
    assert undocumented == []
