"""Prometheus text from a model server's `/metrics` → the few gauges endpoint picking reads
(sans-IO). Only the needed series are parsed; the rest of the page is skipped by a prefix test.

vLLM: `vllm:num_requests_waiting`, `vllm:num_requests_running`, `vllm:kv_cache_usage_perc`
(`vllm:gpu_cache_usage_perc` before vLLM 0.10), `vllm:cache_config_info` (its labels; read for
completeness, not scored). SGLang: `sglang:num_queue_reqs`, `sglang:num_running_reqs`,
`sglang:token_usage` (KV-cache use, 0..1). A server with several engines (data parallel) reports
one series per engine: counts are summed, KV-cache use averaged.
"""

from __future__ import annotations

from dataclasses import dataclass

_NAMES = {
    "vllm": {"vllm:num_requests_waiting": "waiting", "vllm:num_requests_running": "running",
             "vllm:kv_cache_usage_perc": "kv", "vllm:gpu_cache_usage_perc": "kv"},
    "sglang": {"sglang:num_queue_reqs": "waiting", "sglang:num_running_reqs": "running",
               "sglang:token_usage": "kv"},
}
_PREFIX = {"vllm": "vllm:", "sglang": "sglang:"}


class MetricsError(ValueError):
    """The page has none of the series the flavour must publish."""


@dataclass(frozen=True, slots=True)
class Gauges:
    waiting: int
    running: int
    kv_usage: float


def parse(text: str, flavor: str = "vllm") -> Gauges:
    """The gauges of one `/metrics` page. MetricsError when waiting or running is missing."""
    names, prefix = _NAMES[flavor], _PREFIX[flavor]
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        brace = line.find("{")
        space = line.find(" ")
        end = brace if 0 <= brace < space or (brace >= 0 and space < 0) else space
        what = names.get(line[:end])
        if what is None:
            continue
        value_text = line[line.rfind("}") + 1:] if brace >= 0 else line[end:]
        fields = value_text.split()
        if not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        if value != value:  # NaN
            continue
        sums[what] = sums.get(what, 0.0) + value
        counts[what] = counts.get(what, 0) + 1
    if "waiting" not in sums or "running" not in sums:
        raise MetricsError(f"no {prefix}* waiting/running gauges in the page")
    kv = sums["kv"] / counts["kv"] if counts.get("kv") else 0.0
    return Gauges(int(sums["waiting"]), int(sums["running"]), min(1.0, max(0.0, kv)))
