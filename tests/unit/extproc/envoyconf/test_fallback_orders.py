"""Fallback orders (issue 10, point 5): the rendered aggregate clusters grow linearly with
providers, and every chain the router stage builds names one of them — the primary from the
live ranking, then the route's other providers in the order its policy ranks them on the config
alone (`routing.fallback_providers`: by price for `cheapest`)."""

from __future__ import annotations

import asyncio
import itertools
import random
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from extproc import errors, metadata
from extproc.admission import Board, Gate
from extproc.cmd.run import envoy_binary
from extproc.config import load_text
from extproc.config.model import Admission, GatewayConfig
from extproc.envoyconf.orders import provider_orders
from extproc.envoyconf.render import render, render_files
from extproc.runtime import Deployment, Runtime, compile_runtime
from extproc.stages import outbound, selection
from extproc.stages.feedback import RoutingState
from extproc.translate.registry import default_registry
from tests.unit.extproc.stages.support import chat, sha

NOW = 100.0


def generated(n: int, max_attempts: int = 3) -> str:
    """n providers, one model on each, one route over all of them (bench/fallback_size.py's)."""
    providers = "\n".join(f"  - {{name: p{i:02d}, type: openai, endpoint: 'http://127.0.0.1:{18000 + i}', "
                          "api_key_env: K}" for i in range(n))
    models = "\n".join(f"  - {{name: m{i:02d}, provider: p{i:02d}}}" for i in range(n))
    candidates = ", ".join(f"m{i:02d}" for i in range(n))
    return (f"providers:\n{providers}\nmodels:\n{models}\nroutes:\n"
            f"  - {{name: all, candidates: [{candidates}], policy: {{kind: cheapest, max_attempts: {max_attempts}}}}}\n"
            f"tenants:\n  - {{name: t, api_key_sha256: ['{'0' * 64}']}}\n")


def _aggregates(cfg: GatewayConfig) -> list[str]:
    docs = render(cfg, "/etc/interlock/envoy")
    return [c["name"] for c in docs["cds.yaml"]["resources"] if c["name"].startswith(metadata.AGGREGATE_PREFIX)]


# -- what the renderer writes ----------------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 4, 10, 30])
def test_aggregates_grow_linearly_with_providers(n: int) -> None:
    """Before: one per ordered 2- and 3-permutation of the providers, P(n,3) + P(n,2) — 36 for 4,
    810 for 10, 25,230 for 30. Now one order per provider (it first, the others in route order,
    three long) and its prefix of two."""
    names = _aggregates(load_text(generated(n)))
    assert len(names) == len(set(names)) <= 2 * n
    full = [x for x in names if x.count("~") == min(n, 3)]
    assert len(full) == n
    providers = [f"p{i:02d}" for i in range(n)]
    for first in providers:
        rest = [p for p in providers if p != first]
        assert metadata.aggregate_name((first, *rest[:2])) in names


def test_thirty_providers_render_well_under_a_configmap() -> None:
    files = render_files(load_text(generated(30)), "/etc/interlock/envoy")
    size = len(files["cds.yaml"].encode()) + len(files["rds.yaml"].encode())
    assert size < 256 * 1024, size  # a ConfigMap holds 1 MiB; before: 35 MB


def test_a_route_renders_its_orders_and_their_prefixes_only() -> None:
    cfg = load_text(generated(4))
    assert provider_orders(cfg) == sorted([
        ("p00", "p01", "p02"), ("p00", "p01"),
        ("p01", "p00", "p02"), ("p01", "p00"),
        ("p02", "p00", "p01"), ("p02", "p00"),
        ("p03", "p00", "p01"), ("p03", "p00"),
    ])


def test_orders_are_shared_across_routed_names() -> None:
    """Two routes listing the same providers in the same order render the same aggregates once;
    a model on two providers renders its own pair."""
    cfg = load_text(generated(3).replace("tenants:", "  - {name: again, candidates: [m00, m01, m02]}\ntenants:"))
    assert len(_aggregates(cfg)) == 6


def test_thirty_provider_render_passes_envoy_validate(tmp_path: Path) -> None:
    from extproc.cmd.cli import main

    path = tmp_path / "gateway.yaml"
    path.write_text(generated(30))
    assert main(["render", "--static", "-c", str(path), "-o", str(tmp_path / "static")]) == 0
    out = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(tmp_path / "static" / "envoy.yaml"),
                          "--disable-hot-restart", "--log-level", "error"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK" in out.stdout + out.stderr


# -- what the router stage names -------------------------------------------------------------------

# Four providers listed A, B, C, D; `cheapest` ranks d, b, c, a — the fallback order D, B, C, A.
# c has no images.
CONFIG = """
providers:
PROVIDERS
models:
  - {name: a, provider: A, price: {input_per_mtok: 4, output_per_mtok: 4}, capabilities: [tools, images]}
  - {name: b, provider: B, price: {input_per_mtok: 2, output_per_mtok: 2}, capabilities: [tools, images]}
  - {name: c, provider: C, price: {input_per_mtok: 3, output_per_mtok: 3}, capabilities: [tools]}
  - {name: d, provider: D, price: {input_per_mtok: 1, output_per_mtok: 1}, capabilities: [tools, images],
     max_concurrency: 1}
routes:
  - {name: r, candidates: [a, b, c, d], policy: {kind: cheapest, max_attempts: 3}}
tenants:
  - {name: all, api_key_sha256: ["ALL"]}
  - {name: no-b, api_key_sha256: ["NO_B"], models: [a, c, d, r]}
""".replace("ALL", sha("all")).replace("NO_B", sha("no-b")).replace("PROVIDERS", "\n".join(
    f"  - {{name: {p}, type: openai, endpoint: 'http://127.0.0.1:{i + 1}', api_key_env: K}}"
    for i, p in enumerate("ABCD")))


@cache
def _runtime() -> Runtime:
    return compile_runtime(load_text(CONFIG), default_registry(), environ={"K": "k"})


def _state(cooling: tuple[str, ...] = ()) -> RoutingState:
    s = RoutingState(clock=lambda: NOW, rand=lambda: 0.5, wall=lambda: 1_700_000_000.0)
    for model in cooling:
        s.stats.record_failure(_dep(model).id, NOW)
    return s


def _dep(model: str) -> Deployment:
    return _runtime().deployments[model][0]


def _tenant(name: str) -> Any:
    return next(t for t in _runtime().config.tenants if t.name == name)


def _image() -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]}


def _choose(cooling: tuple[str, ...] = (), tenant: str = "all", images: bool = False) -> list[Deployment]:
    req = chat("r", **_image()) if images else chat("r")
    chain, _ = selection.choose(_state(cooling), _runtime().routes["r"], req, _tenant(tenant))
    return chain


def _models(chain: list[Deployment]) -> str:
    return "".join(d.model for d in chain)


@pytest.mark.parametrize(("cooling", "tenant", "images", "expected"), [
    # The ranking picks d; fallbacks in the static order (here the ranking's too).
    ((), "all", False, "dbc"),
    # d cooling: b first, then D (cooling keeps its place: Envoy skips it when it ejected its
    # hosts) and C — B's order.
    (("d",), "all", False, "bdc"),
    # A cooling: it was fourth anyway.
    (("a",), "all", False, "dbc"),
    # c cannot take images: B's order (B, D, C) ends before C, a prefix the renderer wrote too.
    (("d",), "all", True, "bd"),
    # The tenant may not use b: D's order (D, B, C) ends at once — a single provider.
    ((), "no-b", False, "d"),
])
def test_the_chain_is_the_primary_then_the_routes_order(cooling: tuple[str, ...], tenant: str, images: bool,
                                                         expected: str) -> None:
    chain = _choose(cooling, tenant, images)
    assert _models(chain) == expected
    assert _cluster(chain) in _rendered()


@pytest.mark.parametrize(("index", "expected"), [(0, "dbc"), (1, "bdc"), (2, "cdb")])
def test_an_admitted_fallback_brings_its_own_order(index: int, expected: str) -> None:
    """Admitted to c (third in d, b, c): c's order is C, D, B. Before: c, d, b, an order of the
    old permutations that happened to agree."""
    chain = _choose()
    got = selection.admitted_first(chain, index)
    assert _models(got) == expected
    assert _cluster(got) in _rendered()


def test_admission_spilling_to_a_fallback_names_a_rendered_order() -> None:
    """d's one slot is taken: the gate admits b, and the request tries B's order (B, D, C)."""
    board = Board()
    assert board.try_acquire(_dep("d").id, 10)
    gate = Gate(board, lambda: Admission(queue_timeout=0.0), lambda: NOW)
    got, ticket = asyncio.run(selection.admit(gate, _state(), _choose(), None, chat("r"), "default", None))
    assert ticket is not None and ticket.deployment_id == got[0].id
    assert _models(got) == "bdc"
    assert _cluster(got) in _rendered()


@cache
def _rendered() -> frozenset[str]:
    docs = render(_runtime().config, "/etc/interlock/envoy")
    return frozenset(c["name"] for c in docs["cds.yaml"]["resources"])


def _cluster(chain: list[Deployment]) -> str:
    return dict(outbound.routing_headers(chain, "openai", None))[metadata.CLUSTER_HEADER]


def test_every_chain_names_a_rendered_cluster() -> None:
    """Whatever is cooling, whoever asks, whatever the request needs and wherever admission puts
    it first: the chain is the route's order from its first provider, cut short, and Envoy has an
    aggregate (or the provider's own cluster) of that name."""
    providers = ("D", "B", "C", "A")  # the static order of `cheapest`
    rng = random.Random(7)
    cases = list(itertools.product(
        [c for k in range(4) for c in itertools.combinations("abcd", k)], ["all", "no-b"], [False, True]))
    served = 0
    for cooling, tenant, images in cases:
        try:
            chain = _choose(cooling, tenant, images)
        except errors.GatewayError:  # nothing left to serve it: a 400 / 429, no cluster
            continue
        served += 1
        for index in {0, rng.randrange(len(chain))}:
            got = selection.admitted_first(chain, index)
            order = metadata.fallback_order(providers, got[0].provider, 3)
            assert tuple(d.provider for d in got) == order[:len(got)], (cooling, tenant, images, index)
            assert _cluster(got) in _rendered(), (cooling, tenant, images, index)
    assert served > len(cases) * 3 // 4
