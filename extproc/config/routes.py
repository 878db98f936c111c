"""Routing sections of the config: `routes[]` and the policy union (`kind: ...`)."""

from __future__ import annotations

from typing import Any

from extproc.config.model import Route
from extproc.config.reader import _join, _Reader
from routing.policy import Policy

_POLICY_KINDS = ("objective", "weighted", "round_robin", "cheapest", "best_quality", "last_n_latency", "fill_pool")
_COMMON_POLICY_KEYS = ("kind", "exploration", "stale_after", "affinity", "affinity_tolerance",
                       "diversity_tolerance", "max_attempts")
_CONSTRAINT_KEYS = ("max_ttft", "ttft_quantile", "min_quality")
_POLICY_KEYS = {
    "objective": (*_COMMON_POLICY_KEYS, *_CONSTRAINT_KEYS, "minimize", "maximize"),
    "weighted": (*_COMMON_POLICY_KEYS, *_CONSTRAINT_KEYS, "weights"),
    "round_robin": _COMMON_POLICY_KEYS,
    "cheapest": _COMMON_POLICY_KEYS,
    "best_quality": _COMMON_POLICY_KEYS,
    "last_n_latency": (*_COMMON_POLICY_KEYS, "n"),
    "fill_pool": ("kind", "target_utilization", "band", "batch", "then"),
}


def _fill_pool(r: _Reader, d: dict[str, Any], path: str) -> Policy | None:
    """`{kind: fill_pool, target_utilization: 0.8, band: 0.05, batch: spill|wait, then: <policy>}`:
    the spillover policy (`routing.spillover`); `then` ranks the spill candidates (default: the
    cheapest, `{kind: objective, minimize: cost}`) and may not be fill_pool itself."""
    import routing.policy

    args: dict[str, Any] = {}
    if "target_utilization" in d:
        args["target_utilization"] = r.number(d, "target_utilization", path, 0.8, minimum=0.01, maximum=1)
    if "band" in d:
        args["band"] = r.number(d, "band", path, 0.05, minimum=0, maximum=0.49)
    if "batch" in d:
        args["batch"] = r.string(d, "batch", path, default="spill", choices=("spill", "wait"))
    raw_then = d.get("then", {"kind": "objective", "minimize": "cost"})
    if isinstance(raw_then, dict) and raw_then.get("kind") == "fill_pool":
        r.fail(_join(_join(path, "then"), "kind"), "must be a policy other than fill_pool (it ranks the spill candidates)")
        return None
    then = _policy(r, raw_then, _join(path, "then"))
    if then is None or isinstance(then, routing.policy.FillPoolPolicy):
        return None
    try:
        return routing.policy.FillPoolPolicy(then=then, **args)
    except (ValueError, TypeError) as e:
        r.fail(path, str(e).split(": ", 1)[-1])
        return None


def _policy(r: _Reader, raw: Any, path: str) -> Policy | None:
    """A routing policy (typed union by `kind`); durations in YAML, milliseconds/seconds inside."""
    import routing

    if not isinstance(raw, dict):
        r.fail(path, "must be a mapping with a kind")
        return None
    if raw.get("kind", "objective") not in _POLICY_KINDS:
        r.fail(_join(path, "kind"), f"must be one of: {', '.join(_POLICY_KINDS)}")
        return None
    kind = r.string(raw, "kind", path, default="objective") or "objective"
    d = r.mapping(raw, path, _POLICY_KEYS[kind]) or {}
    if kind == "fill_pool":
        return _fill_pool(r, d, path)
    args: dict[str, Any] = {}
    for key in ("exploration", "affinity_tolerance", "diversity_tolerance", "ttft_quantile", "min_quality"):
        if key in d and key in _POLICY_KEYS[kind]:
            args[key] = r.number(d, key, path, 0.0, minimum=0)
    if "max_attempts" in d:
        args["max_attempts"] = r.number(d, "max_attempts", path, 3, integer=True, minimum=1, maximum=5)
    if "n" in d:
        args["n"] = r.number(d, "n", path, 10, integer=True, minimum=1)
    if "affinity" in d:
        if not isinstance(d["affinity"], bool):
            r.fail(_join(path, "affinity"), "must be true or false")
        else:
            args["affinity"] = d["affinity"]
    if "stale_after" in d:
        args["stale_after_s"] = r.duration(d, "stale_after", path, 30.0)
    if "max_ttft" in d:
        args["max_ttft_ms"] = r.duration(d, "max_ttft", path, 1.0, allow_zero=False) * 1000
    if kind == "objective":
        if "minimize" in d:
            args["minimize"] = r.string(d, "minimize", path, choices=("cost", "latency"))
        if "maximize" in d:
            args["maximize"] = r.string(d, "maximize", path, choices=("quality",))
        if ("minimize" in d) == ("maximize" in d):
            r.fail(path, "an objective policy takes exactly one of minimize (cost, latency) or maximize (quality)")
            return None
    if kind == "weighted":
        wd = r.mapping(d.get("weights"), _join(path, "weights"), ("cost", "latency", "quality")) or {}
        for key in ("cost", "latency", "quality"):
            args[key] = r.number(wd, key, _join(path, "weights"), 1.0, minimum=0)
    cls = {"objective": routing.ObjectivePolicy, "weighted": routing.WeightedPolicy,
           "round_robin": routing.RoundRobinPolicy, "cheapest": routing.CheapestPolicy,
           "best_quality": routing.BestQualityPolicy, "last_n_latency": routing.LastNLatencyPolicy}[kind]
    try:
        return cls(**args)  # type: ignore[no-any-return]
    except (ValueError, TypeError) as e:
        r.fail(path, str(e).split(": ", 1)[-1])
        return None


def _route(r: _Reader, raw: Any, path: str, model_names: set[str]) -> Route | None:
    d = r.mapping(raw, path, ("name", "candidates", "policy"))
    if d is None:
        return None
    name = r.string(d, "name", path, required=True)
    if name in model_names:
        r.fail(_join(path, "name"), f"{name!r} is already a model name; a route needs a name of its own")
    candidates = []
    for i, c in enumerate(r.seq(d, "candidates", path, required=True)):
        if not isinstance(c, str) or c not in model_names:
            r.fail(f"{path}.candidates[{i}]", f"unknown model {c!r}")
        elif c in candidates:
            r.fail(f"{path}.candidates[{i}]", f"{c!r} is listed twice")
        else:
            candidates.append(c)
    policy = _policy(r, d.get("policy", {"kind": "objective", "minimize": "cost"}), _join(path, "policy"))
    if not name or not candidates or policy is None:
        return None
    return Route(name, tuple(candidates), policy)
