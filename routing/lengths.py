"""How long each deployment's answers are, learned from the answers themselves.

A request without `max_tokens` (most SDK calls) says nothing about how long its answer will be, and
the model's output cap (65,536 for some) is no guide: pricing a request by a fraction of the cap made
the models with the largest caps look the dearest. So the expected answer length of a deployment is
learned from the output tokens its answers actually carried:

    mean_d = (Σ w_i · tokens_i + PRIOR_WEIGHT · prior_d) / (Σ w_i + PRIOR_WEIGHT)

with w_i = DECAY^(answers since i) — a count-based exponential memory of about 1 / (1 − DECAY) = 200
answers, so the figure follows a model whose answers get longer or shorter without forgetting it when
traffic stops. `prior_d` is the deployment's configured `expected_output_tokens` when set, else
`DEFAULT_PRIOR` tokens; one real answer outweighs it fourfold (`PRIOR_WEIGHT` = 0.25). A deployment
with neither answers nor a configured figure is not in `view()`: the scorers assume it answers like the
other candidates of the same decision that have answered (their mean — answers' length depends on the
route's prompts more than on the model), else `DEFAULT_PRIOR` (`routing.scorers`).

Censoring: an answer cut by the request's own cap (`tokens >= cap`) only says the natural length is at
least the cap; it is learned when the cap is at least the current mean (it pushes the mean up, as the
truth would), and ignored otherwise (learning it would drag the mean down to small caps).

The request's own `max_tokens` still caps the expectation (`routing.pricing.expected_output_tokens`).
Per process, like the latency statistics; not thread-safe; no clock (counts only).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

DEFAULT_PRIOR = 256.0
"""Tokens assumed for an answer before any answer has been seen: a typical chat reply."""
DECAY = 0.995
PRIOR_WEIGHT = 0.25


class OutputLengths:
    """Per-deployment expected output tokens; see the module docstring."""

    def __init__(self, *, default_prior: float = DEFAULT_PRIOR, decay: float = DECAY,
                 prior_weight: float = PRIOR_WEIGHT) -> None:
        if default_prior < 0 or not 0.0 < decay <= 1.0 or prior_weight <= 0:
            raise ValueError("default_prior must be >= 0, decay in (0, 1], prior_weight > 0")
        self.default_prior = default_prior
        self.decay = decay
        self.prior_weight = prior_weight
        self._sums: dict[str, tuple[float, float]] = {}  # deployment id → (Σ w·tokens, Σ w)
        self._configured: dict[str, float] = {}
        self._view: Mapping[str, float] | None = None

    def configure(self, priors: Mapping[str, int | None]) -> None:
        """The operator's `expected_output_tokens` per deployment id (None: not set)."""
        self._configured = {k: float(v) for k, v in priors.items() if v is not None}
        self._view = None

    def observe(self, deployment_id: str, tokens: int, cap: int | None) -> bool:
        """Learn one answer of `tokens` output tokens, produced under the request's `cap` (its
        max_tokens; None when it set none). Returns whether it was learned (see censoring)."""
        if tokens < 0:
            return False
        if cap is not None and tokens >= cap and cap < self.expected(deployment_id):
            return False
        s, w = self._sums.get(deployment_id, (0.0, 0.0))
        d = self.decay
        self._sums[deployment_id] = (s * d + tokens, w * d + 1.0)
        self._view = None
        return True

    def prior(self, deployment_id: str) -> float:
        return self._configured.get(deployment_id, self.default_prior)

    def expected(self, deployment_id: str) -> float:
        """Expected output tokens of the deployment's next answer (uncapped)."""
        prior = self.prior(deployment_id)
        s, w = self._sums.get(deployment_id, (0.0, 0.0))
        return (s + self.prior_weight * prior) / (w + self.prior_weight)

    def observed(self, deployment_id: str) -> float:
        """The decayed number of answers learned for the deployment."""
        return self._sums.get(deployment_id, (0.0, 0.0))[1]

    def view(self) -> Mapping[str, float]:
        """Read-only expected tokens of every deployment with answers or a configured prior; rebuilt
        only after something changed."""
        if self._view is None:
            ids = set(self._sums) | set(self._configured)
            self._view = MappingProxyType({k: self.expected(k) for k in ids})
        return self._view

    def fallback(self) -> float:
        """What a deployment with neither answers nor a configured prior, among candidates none of
        which has answered, is expected to produce."""
        return self.default_prior

    def retain(self, deployment_ids: Iterable[str]) -> None:
        keep = set(deployment_ids)
        for k in [k for k in self._sums if k not in keep]:
            del self._sums[k]
        self._view = None
