"""Expected cost of a request on a deployment, in USD.

    output_cap      = request.max_output_tokens, or the deployment's max_output_tokens when None
    expected_output = min(output_cap, learned)
    cost_usd        = est_input_tokens × input price + expected_output × output price   (prices per token)

`learned` is the deployment's expected answer length as learned from its answers (`routing.lengths`,
read from the snapshot); before any answer it is the deployment's `expected_output_tokens` when the
operator set it, else the mean of every answer seen, else 256 tokens. A request's own `max_tokens`
caps it: a request without one is priced by what answers really cost, not by the model's output cap
(a quarter of a 65,536 cap made the models with the largest caps look the dearest).

Every price in the gateway is computed here: the scorers' expected cost (`expected_output_tokens`,
`cost_usd`) and the rate limiter's charges (`micro_usd`: integer micro-dollars, rounded up, so sums
stay exact). Pure functions.
"""

from __future__ import annotations

import math

from routing.lengths import DEFAULT_PRIOR
from routing.model import Deployment, RouteRequest


def output_cap(deployment: Deployment, max_output_tokens: int | None) -> int:
    """The most tokens the request may produce on `deployment`."""
    return deployment.max_output_tokens if max_output_tokens is None else max_output_tokens


def expected_output_tokens(deployment: Deployment, max_output_tokens: int | None,
                           learned: float | None = None) -> float:
    """Tokens the answer is expected to have (a float: an expectation, not a count): the learned
    length (None: the configured `expected_output_tokens`, else `DEFAULT_PRIOR`), capped."""
    cap = output_cap(deployment, max_output_tokens)
    if learned is None:
        learned = DEFAULT_PRIOR if deployment.expected_output_tokens is None else deployment.expected_output_tokens
    return float(min(cap, learned))


def cost_usd(deployment: Deployment, input_tokens: float, output_tokens: float) -> float:
    """What `input_tokens` in and `output_tokens` out cost on `deployment`, USD."""
    return input_tokens * deployment.in_per_tok + output_tokens * deployment.out_per_tok


def expected_cost_usd(request: RouteRequest, deployment: Deployment, learned: float | None = None) -> float:
    """Expected cost of serving `request` on `deployment`, USD (`learned`: see `expected_output_tokens`)."""
    out = expected_output_tokens(deployment, request.max_output_tokens, learned)
    return cost_usd(deployment, request.est_input_tokens, out)


NOMINAL_INPUT_TOKENS = 1000
"""The nominal request `nominal_cost_usd` prices: a 1,000-token prompt and a `DEFAULT_PRIOR`-token answer."""


def nominal_cost_usd(input_per_mtok: float, output_per_mtok: float) -> float:
    """What a nominal request costs at these prices (per million tokens), USD: the static price
    comparison of models before anything about a request is known (fallback orders)."""
    return (NOMINAL_INPUT_TOKENS * input_per_mtok + DEFAULT_PRIOR * output_per_mtok) / 1e6


def micro_usd(input_tokens: int, output_tokens: int, input_per_mtok: float, output_per_mtok: float) -> int:
    """A charge in whole micro-dollars, rounded up. At $X per million tokens one token costs X µ$,
    so the per-million prices are the per-token prices in micro-dollars."""
    return math.ceil(input_tokens * input_per_mtok + output_tokens * output_per_mtok)
