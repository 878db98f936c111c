"""A measured profile → one `ServerModel` per endpoint: the continuous-batching engine fitted to the
measurements (see the package docstring for the format and the fit). Pure."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from routing.capacity.traffic import CapacityError

PROFILE_FORMAT = "interlock-capacity-profile/1"


@dataclass(frozen=True)
class ServerModel:
    """One server's fitted engine (see the package docstring). Seconds and tokens."""

    name: str
    prefill_tokens_per_s: float
    step_base_s: float
    step_per_seq_s: float
    ttft_overhead_s: float = 0.0
    slots: int | None = None  # most requests running at once; None: unbounded
    kv_tokens: int | None = None  # KV cache capacity in tokens; None: unbounded
    batch_tokens: int | None = None  # tokens one step computes (chunked prefill); None: unbounded

    def step_s(self, decoding: int, prefill_tokens: float = 0.0) -> float:
        return self.step_base_s + self.step_per_seq_s * decoding + prefill_tokens / self.prefill_tokens_per_s

    def alone_ttft_s(self, prompt_tokens: float) -> float:
        """TTFT of a request alone on an idle server: its prefill chunks, one step each."""
        chunks = 1 if self.batch_tokens is None else max(1, math.ceil(prompt_tokens / self.batch_tokens))
        return self.ttft_overhead_s + chunks * self.step_base_s + max(prompt_tokens, 1) / self.prefill_tokens_per_s


def _linear_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least squares y = a + b·x → (a, b); with one distinct x, the line through the origin and the mean."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if n < 2 or sxx == 0:
        return 0.0, (my / mx if mx else 0.0)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return my - b * mx, b


def _num(obj: object, path: str, problems: list[str], positive: bool = True) -> float:
    if isinstance(obj, bool) or not isinstance(obj, (int, float)) or (positive and obj <= 0) or obj < 0:
        problems.append(f"{path}: must be a number {'> 0' if positive else '≥ 0'}")
        return 1.0
    return float(obj)


_BUDGETS = (None, 16384, 8192, 4096, 2048, 1024, 512, 256)


def _fit_prefill(solo: Sequence[tuple[float, float]], base: float) -> tuple[float, float, int | None]:
    """(overhead s, s per prompt token, step token budget) from (prompt tokens, TTFT s) alone on the
    server: TTFT = overhead + chunks × base + prompt / rate, chunks = ⌈prompt / budget⌉; the budget
    whose line fits best (an unbounded one unless another fits clearly better)."""
    best: tuple[float, float, float, int | None] | None = None
    for budget in _BUDGETS:
        chunks = [1 if budget is None else max(1, math.ceil(p / budget)) for p, _ in solo]
        ys = [t - c * base for (_, t), c in zip(solo, chunks, strict=True)]
        a, b = _linear_fit([p for p, _ in solo], ys)
        if b <= 0:
            continue
        sse = sum((a + b * p - y) ** 2 for (p, _), y in zip(solo, ys, strict=True))
        if best is None or sse < best[0] * 0.25:
            best = (sse, a, b, budget)
    if best is None:  # TTFT did not grow with the prompt: prefill too fast to see
        return max(0.0, min(t for _, t in solo) - base), 1e-7, None
    return best[1], best[2], best[3]


def server_model(endpoint: dict, where: str = "endpoints[0]") -> ServerModel:
    """Fit one profiled endpoint (a dict of the profile's `endpoints` list). Raises CapacityError."""
    problems: list[str] = []
    points = endpoint.get("points") if isinstance(endpoint, dict) else None
    if not isinstance(points, list) or not points:
        raise CapacityError([f"{where}.points: must be a non-empty list of measurements"])
    rows: list[tuple[int, float, float, float, float]] = []  # concurrency, prompt, output, ttft_s, tpot_s
    for i, p in enumerate(points):
        at = f"{where}.points[{i}]"
        if not isinstance(p, dict):
            problems.append(f"{at}: must be an object")
            continue
        c = p.get("concurrency")
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            problems.append(f"{at}.concurrency: must be an integer ≥ 1")
            continue
        if not p.get("requests"):
            continue  # a step in which nothing completed carries no figures
        ttft: dict = p["ttft_ms"] if isinstance(p.get("ttft_ms"), dict) else {}
        tpot: dict = p["tpot_ms"] if isinstance(p.get("tpot_ms"), dict) else {}
        rows.append((c, _num(p.get("prompt_tokens"), f"{at}.prompt_tokens", problems, positive=False),
                     _num(p.get("output_tokens"), f"{at}.output_tokens", problems),
                     _num(ttft.get("mean"), f"{at}.ttft_ms.mean", problems) / 1000,
                     _num(tpot.get("mean"), f"{at}.tpot_ms.mean", problems, positive=False) / 1000))
    if problems:
        raise CapacityError(problems)
    if not rows:
        raise CapacityError([f"{where}.points: no step completed a request"])
    least = min(r[0] for r in rows)
    solo = [(r[1], r[3]) for r in rows if r[0] == least]
    sweep = endpoint.get("prefill")
    if isinstance(sweep, list) and sweep:
        least, solo = 1, []
        for i, p in enumerate(sweep):
            at = f"{where}.prefill[{i}]"
            solo_ttft = p.get("ttft_ms") if isinstance(p, dict) else None
            if not isinstance(solo_ttft, dict):
                problems.append(f"{at}.ttft_ms: must be an object with `mean`")
                continue
            solo.append((_num(p.get("prompt_tokens"), f"{at}.prompt_tokens", problems),
                         _num(solo_ttft.get("mean"), f"{at}.ttft_ms.mean", problems) / 1000))
        if problems:
            raise CapacityError(problems)
    shortest = min(r[1] for r in rows)
    decode = [r for r in rows if r[1] == shortest]
    # Closed-loop clients with equal answer lengths fall into step: their prefills share one step
    # outside everyone's decode, so TPOT against concurrency is the decode step itself.
    xs = [float(r[0]) for r in decode]
    ys = [max(r[4], 1e-6) for r in decode]
    base, per_seq = _linear_fit(xs, ys)
    if per_seq < 0:
        base, per_seq = sum(ys) / len(ys), 0.0
    if base < 0:
        base, per_seq = 0.0, sum(ys) / sum(xs)
    overhead, per_tok, budget = _fit_prefill(solo, base)
    overhead -= per_seq * (least - 1)
    metrics: dict = endpoint["metrics"] if isinstance(endpoint.get("metrics"), dict) else {}
    slots = metrics.get("slots") if isinstance(metrics.get("slots"), int) and metrics["slots"] > 0 else None
    kv = None
    if isinstance(metrics.get("num_gpu_blocks"), int) and isinstance(metrics.get("block_size"), int):
        kv = int(metrics["num_gpu_blocks"]) * int(metrics["block_size"]) or None
    return ServerModel(str(endpoint.get("url") or where), 1.0 / per_tok, base, per_seq, max(0.0, overhead),
                       slots, kv, budget)


def load_profile(profile: object) -> list[ServerModel]:
    """The server models of a parsed profile JSON (one per endpoint). Raises CapacityError."""
    if not isinstance(profile, dict) or profile.get("format") != PROFILE_FORMAT:
        raise CapacityError([f"profile: not an Interlock capacity profile (`format` must be {PROFILE_FORMAT!r})"])
    endpoints = profile.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        raise CapacityError(["profile.endpoints: must be a non-empty list"])
    models, problems = [], []
    for i, ep in enumerate(endpoints):
        try:
            models.append(server_model(ep if isinstance(ep, dict) else {}, f"endpoints[{i}]"))
        except CapacityError as e:
            problems += e.problems
    if problems:
        raise CapacityError(problems)
    return models
