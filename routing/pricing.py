"""Expected cost of a request on a deployment, in USD.

    output_cap      = request.max_output_tokens, or the deployment's max_output_tokens when None
    expected_output = min(output_cap, deployment.expected_output_tokens)   when the deployment sets it
                    = output_cap / 4                                       otherwise
    cost_usd        = est_input_tokens × input price + expected_output × output price   (prices per token)

Why a quarter of the cap: answers rarely run to max_tokens, and a fixed fraction keeps the ratio between
deployments' costs right (the scorers use ratios) while still charging long-answer requests more. An
operator who knows a model's typical answer length sets `expected_output_tokens`, which wins. Pure
functions; the pipeline inlines the same arithmetic on its hot path.
"""

from __future__ import annotations

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


def expected_cost_usd(request: RouteRequest, deployment: Deployment) -> float:
    """Expected cost of serving `request` on `deployment`, USD."""
    out = expected_output_tokens(deployment, request.max_output_tokens)
    return request.est_input_tokens * deployment.in_per_tok + out * deployment.out_per_tok
