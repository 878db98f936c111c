"""Why a route chose what it chose, in one line: the log line of every routed decision, and the
`x-interlock-explain` response header a tenant allowed to (`explain: true`) asks for with
`x-interlock-debug: explain`.

    route=auto policy=objective(cost,max_ttft=1000ms@p90,min_quality=0.78) by=objective
    chain=haiku@anthropic:claude-haiku-4-5,flash@gemini:gemini-2.5-flash
    dropped=nova@bedrock:...(health: cooling down for 3.2 s (2 consecutive failures))
    failed=mini@openai:...(quality 0.72 < 0.78)
    scores=haiku@anthropic:...{total=1.000,cost=$0.000431,out=212,lat=0.52s,ttft=0.210s,
           ttft_p50=0.110s,tpot=0.012s,n=35.2,age=0.4s} ...

(one line; wrapped here). Every candidate appears once: removed by a filter (`dropped`, with the
filter and its reason), breaking a policy constraint (`failed`: ranked after those meeting them;
`min_quality` drops show here), or scored (`scores`: each with the policy's total, the expected cost
in USD and the answer length it assumes in tokens, the expected duration, the TTFT at the policy's
quantile, and the estimates behind them — median TTFT, time per output token, effective number of
observations and their age; `wait>=` when requests still waiting for a first token raised its TTFT).
A `fill_pool` route's `by=` says first whether the request's priority class stays in the pool or
spills and why (`by=spill batch: pool at 0.86 >= 0.85; objective`, see `routing.spillover`), and
`pools=` lists each pool's load as the decision read it (`pools=gpu(util=0.86,waiting=0,ready=4/4)`).
Pure formatting of a `routing.Decision` and the snapshot it read; ASCII only (a header value).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import routing
from extproc.runtime import Deployment

REQUEST_HEADER = "x-interlock-debug"
RESPONSE_HEADER = "x-interlock-explain"
ASK = "explain"


def policy_text(policy: routing.Policy) -> str:
    """`kind(setting,...)`: the policy's objective and constraints."""
    parts: list[str] = []
    if isinstance(policy, routing.policy.FillPoolPolicy):
        return (f"{policy.kind}(target={policy.target_utilization:g},band={policy.band:g},batch={policy.batch},"
                f"then={policy_text(policy.then)})")
    if isinstance(policy, routing.ObjectivePolicy):
        parts.append(policy.objective)
    elif isinstance(policy, routing.WeightedPolicy):
        parts.append(f"cost={policy.cost:g},latency={policy.latency:g},quality={policy.quality:g}")
    if isinstance(policy, (routing.ObjectivePolicy, routing.WeightedPolicy)):
        if policy.max_ttft_ms is not None:
            parts.append(f"max_ttft={policy.max_ttft_ms:g}ms@p{policy.ttft_quantile * 100:g}")
        if policy.min_quality is not None:
            parts.append(f"min_quality={policy.min_quality:g}")
    return f"{policy.kind}({','.join(parts)})"


def _age(seconds: float) -> str:
    return "never" if math.isinf(seconds) else f"{seconds:.1f}s"


def text(route: str, policy: routing.Policy, decision: routing.Decision, snapshot: routing.Snapshot,
         chain: Sequence[Deployment], now: float) -> str:
    """The decision's explanation as one ASCII line (see the module docstring)."""
    ex = decision.explanation
    out = [f"route={route}", f"policy={policy_text(policy)}", f"by={ex.chosen_by}",
           f"chain={','.join(d.id for d in chain) or '-'}"]
    if ex.dropped:
        out.append("dropped=" + ",".join(f"{k}({v.filter}: {v.reason})" for k, v in ex.dropped.items()))
    if ex.constraint_failures:
        out.append("failed=" + ",".join(f"{k}({'; '.join(map(str, v))})" for k, v in ex.constraint_failures.items()))
    if ex.affinity_pool:
        out.append("affinity=" + ",".join(ex.affinity_pool))
    if isinstance(policy, routing.policy.FillPoolPolicy) and snapshot.pool_loads:
        out.append("pools=" + ",".join(
            f"{name}(util={x.utilization:.2f},waiting={x.waiting},ready={x.ready}/{x.endpoints}{',stale' if x.stale else ''})"
            for name, x in snapshot.pool_loads.items()))
    scores = []
    for dep_id, s in ex.scores.items():
        e = snapshot.estimate(dep_id)
        fields = (f"total={s.total:.3f},cost=${s.cost_usd:.6f},out={s.output_tokens:.0f},lat={s.latency_s:.3f}s,"
                  f"ttft={s.ttft_s:.3f}s,ttft_p50={e.ttft_p50_s:.3f}s,tpot={e.tpot_p50_s:.4f}s,n={e.weight:.1f},"
                  f"age={_age(snapshot.staleness(dep_id, now))}")
        if e.floor_s:
            fields += f",wait>={e.floor_s:.3f}s"
        scores.append(f"{dep_id}{{{fields}}}")
    if scores:
        out.append("scores=" + " ".join(scores))
    return ascii_only(" ".join(out))


def ascii_only(s: str) -> str:
    """Printable ASCII (a header value, a log line): anything else becomes `?`."""
    return s if s.isascii() and s.isprintable() else "".join(c if " " <= c <= "~" else "?" for c in s)


def asked(headers: Mapping[str, str] | None) -> bool:
    """Whether the request asks for its decision's explanation (`x-interlock-debug: explain`)."""
    if not headers:
        return False
    return ASK in (v.strip().lower() for v in headers.get(REQUEST_HEADER, "").split(","))
