#!/usr/bin/env python3
"""How large the rendered Envoy config gets as providers are added (issue 10, point 5).

For n providers it generates a gateway config with one model per provider and one route over all
of them (`max_attempts: 3`, the default), renders it as `interlock render` does, and counts the
fallback aggregate clusters, the routes and the bytes of `cds.yaml` + `rds.yaml` (what a
Kubernetes ConfigMap holds; its limit is 1 MiB). The demo config comes last. No network, no Envoy.

    .venv/bin/python bench/fallback_size.py [--providers 4 10 30] [--max-attempts 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from extproc import metadata  # noqa: E402
from extproc.config import load_file, load_text  # noqa: E402
from extproc.config.model import GatewayConfig  # noqa: E402
from extproc.envoyconf.render import render, render_files  # noqa: E402

DEMO = Path(__file__).resolve().parent.parent / "extproc" / "cmd" / "demo" / "demo.yaml"
CONFIGMAP_LIMIT = 1 << 20


def generated(n: int, max_attempts: int = 3) -> str:
    """n providers, one model on each, one route over every model in provider order."""
    providers = "\n".join(f"  - {{name: p{i:02d}, type: openai, endpoint: 'http://127.0.0.1:{18000 + i}', "
                          "api_key_env: INTERLOCK_SIM_API_KEY}" for i in range(n))
    models = "\n".join(f"  - {{name: m{i:02d}, provider: p{i:02d}}}" for i in range(n))
    candidates = ", ".join(f"m{i:02d}" for i in range(n))
    return (f"providers:\n{providers}\nmodels:\n{models}\nroutes:\n"
            f"  - {{name: all, candidates: [{candidates}], policy: {{kind: cheapest, max_attempts: {max_attempts}}}}}\n"
            f"tenants:\n  - {{name: t, api_key_sha256: ['{'0' * 64}']}}\n")


def measure(cfg: GatewayConfig) -> dict[str, int]:
    """Clusters (providers + aggregates), aggregates, routes, and bytes of cds.yaml + rds.yaml."""
    docs = render(cfg, "/etc/interlock/envoy")
    files = render_files(cfg, "/etc/interlock/envoy")
    clusters = [r["name"] for r in docs["cds.yaml"]["resources"]]
    routes = docs["rds.yaml"]["resources"][0]["virtual_hosts"][0]["routes"]
    return {
        "clusters": len(clusters),
        "aggregates": sum(c.startswith(metadata.AGGREGATE_PREFIX) for c in clusters),
        "routes": len(routes),
        "bytes": len(files["cds.yaml"].encode()) + len(files["rds.yaml"].encode()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--providers", type=int, nargs="+", default=[4, 10, 30])
    ap.add_argument("--max-attempts", type=int, default=3)
    args = ap.parse_args(argv)
    rows = [(f"{n} providers, 1 route", measure(load_text(generated(n, args.max_attempts))))
            for n in args.providers]
    rows.append(("demo config", measure(load_file(str(DEMO)))))
    print(f"{'config':<24} {'clusters':>9} {'aggregates':>11} {'routes':>7} {'cds+rds bytes':>14} {'of 1 MiB':>9}")
    for name, m in rows:
        print(f"{name:<24} {m['clusters']:>9} {m['aggregates']:>11} {m['routes']:>7} {m['bytes']:>14,} "
              f"{m['bytes'] / CONFIGMAP_LIMIT:>8.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
