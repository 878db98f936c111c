"""Expected cost of a request on a deployment, in USD.

    output_cap      = request.max_output_tokens, or the deployment's max_output_tokens when None
    expected_output = min(output_cap, deployment.expected_output_tokens)   when the deployment sets it
                    = output_cap / 4                                       otherwise
    cost_usd        = est_input_tokens × input price + expected_output × output price   (prices per token)

Why a quarter of the cap: answers rarely run to max_tokens, and a fixed fraction keeps the ratio between
deployments' costs right (the scorers use ratios) while still charging long-answer requests more. An
operator who knows a model's typical answer length sets `expected_output_tokens`, which wins.

Every price in the gateway is computed here: the scorers' expected cost (`expected_output_tokens`,
`cost_usd`) and the rate limiter's charges (`micro_usd`: integer micro-dollars, rounded up, so sums
stay exact). Pure functions.
"""

from __future__ import annotations

import math

from routing.model import Deployment, RouteRequest

OUTPUT_FRACTION = 0.25


def output_cap(deployment: Deployment, max_output_tokens: int | None) -> int:
    """The most tokens the request may produce on `deployment`."""
    return deployment.max_output_tokens if max_output_tokens is None else max_output_tokens


def expected_output_tokens(deployment: Deployment, max_output_tokens: int | None) -> float:
    """Tokens the answer is expected to have (a float: an expectation, not a count)."""
    cap = output_cap(deployment, max_output_tokens)
    if deployment.expected_output_tokens is not None:
        return float(min(cap, deployment.expected_output_tokens))
    return cap * OUTPUT_FRACTION


def cost_usd(deployment: Deployment, input_tokens: float, output_tokens: float) -> float:
    """What `input_tokens` in and `output_tokens` out cost on `deployment`, USD."""
    return input_tokens * deployment.in_per_tok + output_tokens * deployment.out_per_tok


def expected_cost_usd(request: RouteRequest, deployment: Deployment) -> float:
    """Expected cost of serving `request` on `deployment`, USD."""
    out = expected_output_tokens(deployment, request.max_output_tokens)
    return cost_usd(deployment, request.est_input_tokens, out)


def micro_usd(input_tokens: int, output_tokens: int, input_per_mtok: float, output_per_mtok: float) -> int:
    """A charge in whole micro-dollars, rounded up. At $X per million tokens one token costs X µ$,
    so the per-million prices are the per-token prices in micro-dollars."""
    return math.ceil(input_tokens * input_per_mtok + output_tokens * output_per_mtok)
