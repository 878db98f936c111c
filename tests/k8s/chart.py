"""The Helm chart rendered with the real Helm SDK (PyPI helm-python-sdk: Helm's Go library through
its C ABI, no helm binary and no cluster), and the value sets its tests render."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "interlock"
HERE = Path(__file__).resolve().parent
VALUES = HERE / "values"
GOLDEN = HERE / "golden"
RELEASE, NAMESPACE = "gw", "llm"
VALUE_SETS = sorted(p.name.removesuffix(".in.yaml") for p in VALUES.glob("*.in.yaml"))


def values_of(name: str) -> dict[str, Any]:
    return yaml.safe_load((VALUES / f"{name}.in.yaml").read_text()) or {}


def render(values: dict[str, Any] | None = None) -> str:
    """Every rendered manifest as one YAML stream, in template order (`helm template`'s output)."""
    import helm_python as helm

    chart = helm.Chart.load(CHART)
    rendered = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    parts = []
    for path in sorted(rendered):
        text = rendered[path].strip("\n")
        if path.endswith(".yaml") and text.strip():
            parts.append(f"---\n# Source: {path}\n{text}\n")
    return "".join(parts)


def manifests(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(render(values)) if d]


def find(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(hits) == 1, f"{len(hits)} {kind} manifests"
    return hits[0]


def gateway_config(docs: list[dict[str, Any]]) -> str:
    """The gateway config the pod mounts (the ConfigMap's gateway.yaml)."""
    cm = find(docs, "ConfigMap", "interlock")
    return str(cm["data"]["gateway.yaml"])
