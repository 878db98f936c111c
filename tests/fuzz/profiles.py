"""Hypothesis profiles of the fuzz suite, chosen with `HYPOTHESIS_PROFILE` (default `ci`).

- `ci`: what `make test` runs, about a minute for all of tests/fuzz on a 2-core machine;
  derandomized (the same examples in every run, so CI is reproducible), no deadline, no
  shrinking, and each test stops at its first failure (reported as generated, so a failing run
  stays within budget); no example database (nothing written to the work tree).
- `campaign`: what `make fuzz` runs: many more examples from a random seed (`make fuzz` prints it;
  `make fuzz SEED=n` replays the same draws), each distinct failure (by its class in
  `harness.GatewayInvariant`) shrunk and reported. The campaign is bounded in time as well as in
  examples: the tests share `FUZZ_CAMPAIGN_SECONDS` (default 540) by their `share`, and once a
  test has spent its part its remaining examples run dry: they draw as usual (Hypothesis checks
  that a choice sequence always draws the same) but the harness sends nothing and answers a
  good reply itself, so generation and shrinking end fast. The replay of a failure Hypothesis
  reports always runs for real.

`FUZZ_EXAMPLES_SCALE` multiplies every test's example count (a quick local look: 0.2).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, Phase, settings
from hypothesis.control import current_build_context

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
          HealthCheck.large_base_example, HealthCheck.function_scoped_fixture]

settings.register_profile(
    "ci", max_examples=300, deadline=None, derandomize=True, database=None, print_blob=False,
    report_multiple_bugs=False, phases=(Phase.explicit, Phase.generate), suppress_health_check=_QUIET)
settings.register_profile(
    "campaign", max_examples=6000, deadline=None, derandomize=False, database=None, print_blob=True,
    report_multiple_bugs=True, phases=(Phase.explicit, Phase.generate, Phase.shrink),
    suppress_health_check=_QUIET)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)

_SCALE = float(os.environ.get("FUZZ_EXAMPLES_SCALE", "1"))
CAMPAIGN_SECONDS = float(os.environ.get("FUZZ_CAMPAIGN_SECONDS", "540"))
TOTAL_SHARE: list[float] = [0.0]
"""Sum of the shares of the collected fuzz tests (set by tests/fuzz/conftest.py at collection)."""
_started: dict[str, float] = {}
DRY = [False]
"""True while an example runs past its test's campaign budget: the harness sends nothing."""

F = TypeVar("F", bound=Callable[..., Any])


def _over_budget(share: float) -> bool:
    if PROFILE != "campaign" or not TOTAL_SHARE[0]:
        return False
    if current_build_context().is_final:
        return False  # the replay of a failure Hypothesis reports: always run it
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
    start = _started.setdefault(test, time.monotonic())
    return time.monotonic() - start > CAMPAIGN_SECONDS * share / TOTAL_SHARE[0]


def fuzz(share: float) -> Callable[[F], F]:
    """Put under `@given`: the test runs `share` of the profile's examples (at least 3; cheap
    tests get more, costly ones such as framing with pauses fewer) and, in a campaign, gets
    `share` of its time. Its strategies should be drawn lazily (`st.data()`), so that examples
    past the time budget cost little more than their draws."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            DRY[0] = _over_budget(share)
            try:
                return fn(*args, **kwargs)
            finally:
                DRY[0] = False

        run._fuzz_share = share  # type: ignore[attr-defined]
        base = settings.default.max_examples if settings.default is not None else 100
        return settings(max_examples=max(3, int(base * share * _SCALE)))(run)  # type: ignore[return-value]

    return decorate
