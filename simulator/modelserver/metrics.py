"""`/metrics` of the simulated model server in the Prometheus text format, as vLLM or SGLang name it.

Sources checked (names, types, HELP texts, label sets, buckets):
- vLLM `vllm/v1/metrics/loggers.py` (`PrometheusStatLogger`, the 0.11/0.12 line): labels
  `model_name`, `engine`; `vllm:num_requests_running|waiting` and `vllm:kv_cache_usage_perc`
  gauges; counters `vllm:prefix_cache_queries|hits`, `vllm:prompt_tokens`, `vllm:generation_tokens`,
  `vllm:num_preemptions`, `vllm:request_success` (+ `finished_reason`), exposed with `_total`;
  histograms `vllm:time_to_first_token_seconds`, `vllm:inter_token_latency_seconds`,
  `vllm:request_time_per_output_token_seconds`, `vllm:e2e_request_latency_seconds`,
  `vllm:request_{queue,prefill,decode,inference}_time_seconds`, `vllm:request_{prompt,generation}_tokens`;
  `vllm:cache_config_info` is an info gauge (value 1) labelled with the `CacheConfig` fields and
  `engine` (no `model_name`). `vllm:gpu_cache_usage_perc` (deprecated in 0.9) and
  `vllm:time_per_output_token_seconds` (deprecated in 0.11) are gone from current releases unless
  `--show-hidden-metrics-for-version` asks for them; the simulator emits neither.
- SGLang `python/sglang/srt/metrics/collector.py` (`SchedulerMetricsCollector`,
  `TokenizerMetricsCollector`): gauges `sglang:num_running_reqs`, `sglang:num_queue_reqs`,
  `sglang:num_used_tokens`, `sglang:token_usage`, `sglang:cache_hit_rate`,
  `sglang:max_total_num_tokens`, `sglang:gen_throughput`; counters `sglang:prompt_tokens_total`,
  `sglang:generation_tokens_total`, `sglang:cached_tokens_total`, `sglang:num_requests_total`;
  histograms `sglang:time_to_first_token_seconds`, `sglang:inter_token_latency_seconds`,
  `sglang:e2e_request_latency_seconds` with SGLang's default buckets. Labels: `model_name`,
  `engine_type`, `tp_rank`, `pp_rank` on the scheduler's gauges, `model_name` on the tokenizer's series.

The text is laid out as prometheus_client's `generate_latest` lays it out (which both servers use):
labels sorted by name, numbers as `3.0` / `+Inf`, a counter's HELP and TYPE under its `_total` name, a
`_created` gauge (the server's start time) after each counter and histogram.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from simulator.modelserver.engine import Engine, Histogram

SGLANG_TTFT = (0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400)
SGLANG_ITL = (0.002, 0.004, 0.006, 0.008, 0.010, 0.015, 0.020, 0.025, 0.030, 0.035, 0.040, 0.060, 0.080,
              0.100, 0.200, 0.400, 0.600, 0.800, 1.000, 2.000, 4.000, 6.000, 8.000)
SGLANG_E2E = (0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400, 600, 1200, 1800, 2400)


def _num(value: float) -> str:
    """A sample value or bucket bound as prometheus_client prints it."""
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    inner = ",".join(f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                     for k, v in sorted(pairs))
    return "{" + inner + "}"


class _Writer:
    """Families in prometheus_client's `generate_latest` layout: labels sorted by name, a counter's
    HELP/TYPE under its `_total` name, and a `_created` gauge after every counter and histogram."""

    def __init__(self, created: float) -> None:
        self.lines: list[str] = []
        self.created = created

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, labels: Sequence[tuple[str, str]], value: float) -> None:
        self.lines.append(f"{name}{_labels(labels)} {_num(value)}")

    def gauge(self, name: str, help_text: str, labels: Sequence[tuple[str, str]], value: float) -> None:
        self.family(name, "gauge", help_text)
        self.sample(name, labels, value)

    def _created(self, name: str, help_text: str, label_sets: Sequence[Sequence[tuple[str, str]]]) -> None:
        self.family(name + "_created", "gauge", help_text)
        for labels in label_sets:
            self.sample(name + "_created", labels, self.created)

    def counter(self, name: str, help_text: str, labels: Sequence[tuple[str, str]], value: float) -> None:
        self.counters(name, help_text, [(labels, value)])

    def counters(self, name: str, help_text: str, series: Sequence[tuple[Sequence[tuple[str, str]], float]]) -> None:
        self.family(name + "_total", "counter", help_text)
        for labels, value in series:
            self.sample(name + "_total", labels, value)
        self._created(name, help_text, [labels for labels, _ in series])

    def histogram(self, name: str, help_text: str, labels: Sequence[tuple[str, str]], hist: Histogram) -> None:
        self.family(name, "histogram", help_text)
        cumulative = 0
        for bound, n in zip(hist.bounds, hist.counts, strict=False):
            cumulative += n
            self.sample(name + "_bucket", [*labels, ("le", _num(bound))], cumulative)
        self.sample(name + "_bucket", [*labels, ("le", "+Inf")], hist.count)
        self.sample(name + "_count", labels, hist.count)
        self.sample(name + "_sum", labels, hist.total)
        self._created(name, help_text, [labels])

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def vllm_metrics(engine: Engine, model: str, created: float) -> str:
    """The vLLM exposition of `engine`'s state and statistics."""
    cfg = engine.config
    stats = engine.stats
    lab = [("model_name", model), ("engine", "0")]
    w = _Writer(created)
    info = [("block_size", str(cfg.block_size)), ("cache_dtype", "auto"), ("calculate_kv_scales", "False"),
            ("cpu_offload_gb", "0"), ("enable_prefix_caching", "True"), ("engine", "0"),
            ("gpu_memory_utilization", "0.9"), ("is_attention_free", "False"),
            ("num_cpu_blocks", "None"), ("num_gpu_blocks", str(cfg.kv_blocks)),
            ("num_gpu_blocks_override", "None"), ("prefix_caching_hash_algo", "sha256"),
            ("sliding_window", "None"), ("swap_space", "4")]
    w.gauge("vllm:cache_config_info", "Information of the LLMEngine CacheConfig", info, 1)
    w.gauge("vllm:num_requests_running", "Number of requests in model execution batches.", lab,
            len(engine.running))
    w.gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", lab, len(engine.waiting))
    w.gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", lab, engine.kv.usage())
    w.counter("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.", lab,
              stats.prefix_queries)
    w.counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.", lab,
              stats.prefix_hits)
    w.counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.", lab, stats.preemptions)
    w.counter("vllm:prompt_tokens", "Number of prefill tokens processed.", lab, stats.prompt_tokens)
    w.counter("vllm:generation_tokens", "Number of generation tokens processed.", lab, stats.generation_tokens)
    w.counters("vllm:request_success", "Count of successfully processed requests.",
               [([*lab, ("finished_reason", r)], stats.finished[r]) for r in ("stop", "length", "abort")])
    w.histogram("vllm:request_prompt_tokens", "Number of prefill tokens processed.", lab, stats.prompt_len)
    w.histogram("vllm:request_generation_tokens", "Number of generation tokens processed.", lab,
                stats.generation_len)
    w.histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", lab,
                stats.ttft)
    w.histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", lab, stats.itl)
    w.histogram("vllm:request_time_per_output_token_seconds",
                "Histogram of time_per_output_token_seconds per request.", lab, stats.request_tpot)
    w.histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", lab, stats.e2e)
    w.histogram("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", lab,
                stats.queue)
    w.histogram("vllm:request_inference_time_seconds", "Histogram of time spent in RUNNING phase for request.",
                lab, stats.inference)
    w.histogram("vllm:request_prefill_time_seconds", "Histogram of time spent in PREFILL phase for request.", lab,
                stats.prefill)
    w.histogram("vllm:request_decode_time_seconds", "Histogram of time spent in DECODE phase for request.", lab,
                stats.decode)
    return w.text()


def use_sglang_buckets(engine: Engine) -> None:
    """Give `engine` SGLang's default latency buckets (call before it serves anything)."""
    engine.stats.ttft = Histogram(SGLANG_TTFT)
    engine.stats.itl = Histogram(SGLANG_ITL)
    engine.stats.e2e = Histogram(SGLANG_E2E)


def sglang_metrics(engine: Engine, model: str, created: float) -> str:
    """The SGLang exposition of `engine`'s state and statistics."""
    cfg = engine.config
    stats = engine.stats
    sched = [("model_name", model), ("engine_type", "unified"), ("tp_rank", "0"), ("pp_rank", "0")]
    tok = [("model_name", model)]
    capacity = cfg.kv_blocks * cfg.block_size
    used = engine.kv.used_blocks * cfg.block_size
    hit_rate = stats.prefix_hits / stats.prefix_queries if stats.prefix_queries else 0.0
    w = _Writer(created)
    w.gauge("sglang:num_running_reqs", "The number of running requests.", sched, len(engine.running))
    w.gauge("sglang:num_used_tokens", "The number of used tokens.", sched, used)
    w.gauge("sglang:token_usage", "The token usage.", sched, used / capacity)
    w.gauge("sglang:num_queue_reqs", "The number of requests in the waiting queue.", sched, len(engine.waiting))
    w.gauge("sglang:cache_hit_rate", "The prefix cache hit rate.", sched, hit_rate)
    w.gauge("sglang:max_total_num_tokens", "Maximum total number of tokens in the KV cache pool.", sched, capacity)
    w.counter("sglang:prompt_tokens", "Number of prefill tokens processed.", tok, stats.prompt_tokens)
    w.counter("sglang:generation_tokens", "Number of generation tokens processed.", tok, stats.generation_tokens)
    w.counter("sglang:cached_tokens", "Number of cached prompt tokens.", tok, stats.prefix_hits)
    w.counter("sglang:num_requests", "Number of requests processed.", tok,
              stats.finished["stop"] + stats.finished["length"])
    w.histogram("sglang:time_to_first_token_seconds", "Histogram of time to first token in seconds.", tok,
                stats.ttft)
    w.histogram("sglang:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", tok,
                stats.itl)
    w.histogram("sglang:e2e_request_latency_seconds", "Histogram of End-to-end request latency in seconds", tok,
                stats.e2e)
    return w.text()
