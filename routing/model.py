"""The values a routing decision reads and returns: deployments, the request's features, the decision.

Every type here is immutable and compared by value. Units: times in seconds (floats), prices in USD per
million tokens, token counts as ints. Policies live in `routing.policy`; the statistics snapshot in
`routing.snapshot`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

CAPABILITIES = frozenset({"tools", "images", "json", "reasoning", "embeddings", "fim"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Deployment:
    """One model served by one provider account: the unit a decision picks.

    `id` is unique across the gateway (the gateway uses ``"model@provider:upstream_model"``, e.g.
    ``"claude-haiku-4-5@anthropic:claude-haiku-4-5-20251001"``) and stable across
    processes and replicas: affinity hashing and statistics are keyed by it. `model` is the public model
    name a tenant's allow-list names. Prices are USD per million tokens; `quality` is an operator-assigned
    score in [0, 1]; `expected_output_tokens`, when set, is the typical answer length assumed for cost and
    latency estimates until answers are observed (see `routing.lengths`). Construction validates every field (ValueError).
    """

    id: str
    model: str
    provider: str
    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    quality: float = 0.5
    context_window: int = 128_000
    max_output_tokens: int = 4096
    capabilities: frozenset[str] = frozenset()
    expected_output_tokens: int | None = None
    salt: int = field(init=False, repr=False, compare=False)
    in_per_tok: float = field(init=False, repr=False, compare=False)
    out_per_tok: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problems = []
        if not self.id:
            problems.append("id: must not be empty")
        if self.input_per_mtok < 0 or self.output_per_mtok < 0:
            problems.append("prices: must be >= 0")
        if not 0.0 <= self.quality <= 1.0:
            problems.append(f"quality: must be in [0, 1], got {self.quality}")
        if self.context_window < 1 or self.max_output_tokens < 1:
            problems.append("context_window, max_output_tokens: must be >= 1")
        if self.expected_output_tokens is not None and self.expected_output_tokens < 0:
            problems.append("expected_output_tokens: must be >= 0")
        unknown = self.capabilities - CAPABILITIES
        if unknown:
            problems.append(f"capabilities: unknown {', '.join(sorted(unknown))}")
        if problems:
            raise ValueError(f"deployment {self.id!r}: " + "; ".join(problems))
        digest = hashlib.blake2b(self.id.encode(), digest_size=8).digest()
        object.__setattr__(self, "salt", int.from_bytes(digest, "big"))
        object.__setattr__(self, "in_per_tok", self.input_per_mtok / 1e6)
        object.__setattr__(self, "out_per_tok", self.output_per_mtok / 1e6)


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteRequest:
    """What the decision knows about one request; built once by the router stage.

    - `needs`: capabilities the request uses (subset of `CAPABILITIES`).
    - `est_input_tokens`: an estimate of the prompt's tokens.
    - `max_output_tokens`: the client's max_tokens; None means each deployment's own
      `max_output_tokens` for context and cost estimates.
    - `allowed_models`: the tenant's allow-list, already expanded to public model names; None = all.
    - `affinity_key`: a digest of the long prompt prefix (any length; rehashed here), or None.
    - `exhausted`: deployment ids or model names whose budget is exhausted for this request (the
      budget layer's hook; empty until it exists).
    - `now`: the caller's monotonic clock, seconds; the same clock the statistics use.
    - `observes_latency`: the answer will teach its deployment's latency (a streamed request), so it
      may be used to explore a stale estimate (`routing.pickers.explore`).
    """

    est_input_tokens: int
    now: float
    needs: frozenset[str] = frozenset()
    max_output_tokens: int | None = None
    allowed_models: frozenset[str] | None = None
    affinity_key: bytes | None = None
    exhausted: frozenset[str] = frozenset()
    observes_latency: bool = True


class Dropped(NamedTuple):
    """Why a filter removed a deployment: the filter's name and a human-readable reason."""

    filter: str
    reason: str


class ConstraintFailure(NamedTuple):
    """A policy constraint a deployment breaks: `constraint` ("ttft_p90" — the quantile in the name —,
    or "quality"), the deployment's `value` and the policy's `limit` (seconds for TTFT). `str()` gives
    the readable form, e.g. "ttft p90 1079 ms > 800 ms" or "quality 0.78 < 0.8"."""

    constraint: str
    value: float
    limit: float

    def __str__(self) -> str:
        if self.constraint == "quality":
            return f"quality {self.value:g} < {self.limit:g}"
        return f"{self.constraint.replace('_', ' ')} {self.value * 1000:.0f} ms > {self.limit * 1000:g} ms"


class Scores(NamedTuple):
    """One eligible deployment's scores, each in [0, 1] (higher is better), and the estimates behind them.

    `cost` = cheapest eligible expected cost / this one's; `latency` = fastest eligible expected latency /
    this one's; `quality` = the deployment's quality; `total` = what the policy ranks by. `cost_usd` is the
    expected cost of the request (USD), `latency_s` its expected duration (TTFT p50 + expected output tokens
    × TPOT p50, seconds), `ttft_s` the TTFT at the policy's constraint quantile (median when it has none),
    `output_tokens` the answer length both estimates assume (learned, capped by the request's max_tokens).
    """

    cost: float
    latency: float
    quality: float
    total: float
    cost_usd: float
    latency_s: float
    ttft_s: float
    output_tokens: float = 0.0


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why the decision came out as it did. Read-only: the mappings must not be mutated.

    - `dropped`: every candidate a filter removed, with the first filter that did.
    - `scores`: every eligible deployment's scores (`Scores`).
    - `constraint_failures`: eligible deployments that broke a policy constraint, with each broken one.
      Ranked after every deployment that met them all.
    - `chosen_by`: what picked the primary: "objective", "affinity", "exploration", a baseline's kind
      ("round_robin", "cheapest", "best_quality", "last_n_latency"),
      "fallback: no deployment met the constraints", or "none: every candidate was dropped".
    - `affinity_pool`: the deployments the affinity key was hashed over (within the policy and the
      tolerance), empty when affinity did not apply.
    """

    dropped: Mapping[str, Dropped]
    scores: Mapping[str, Scores]
    constraint_failures: Mapping[str, tuple[ConstraintFailure, ...]]
    chosen_by: str
    affinity_pool: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    """The ordered candidate list (primary first, then fallbacks, distinct ids) and its explanation.

    Empty `deployments` means no candidate could serve the request; `explanation.dropped` says why.
    """

    deployments: tuple[str, ...]
    explanation: Explanation

    @property
    def primary(self) -> str | None:
        return self.deployments[0] if self.deployments else None
