"""The simulated model server's engine on a virtual clock: batching, queueing, prefix cache, KV
accounting, speed, and `/metrics` agreeing with the engine's state."""

from __future__ import annotations

import random

import pytest
from prometheus_client.parser import text_string_to_metric_families

from simulator.modelserver.engine import Engine, EngineConfig, Sequence_, replay
from simulator.modelserver.kvcache import KVCache, chain_hashes
from simulator.modelserver.metrics import sglang_metrics, use_sglang_buckets, vllm_metrics
from simulator.modelserver.server import ModelServerSpec
from simulator.pool_trace import make_trace


def words(tag: str, n: int) -> list[str]:
    return [f"{tag}{i}" for i in range(n)]


def arrival(t: float, tokens: list[str], out: int) -> tuple[float, int, list[int], int]:
    return (t, len(tokens), chain_hashes(tokens, 16), out)


def ttft(seq: Sequence_) -> float:
    assert seq.first_token_at is not None
    return seq.first_token_at - seq.arrival


def test_ttft_grows_with_the_queue() -> None:
    config = EngineConfig(max_num_seqs=2)
    seqs = replay(config, [arrival(0.0, words(f"r{i}x", 500), 50) for i in range(8)])
    waits = [ttft(s) for s in seqs]
    assert waits[0] < 0.2
    assert waits == sorted(waits)
    assert waits[-1] > 5 * waits[0]


def test_ttft_grows_with_prefill_contention() -> None:
    alone = replay(EngineConfig(), [arrival(0.0, words("a", 2000), 10)])
    crowd = replay(EngineConfig(), [arrival(0.0, words(f"b{i}x", 2000), 10) for i in range(6)])
    assert max(ttft(s) for s in crowd) > 3 * ttft(alone[0])


def test_inter_token_latency_grows_with_the_batch() -> None:
    def tpot(n: int) -> float:
        seqs = replay(EngineConfig(), [arrival(0.0, words(f"c{i}x", 100), 200) for i in range(n)])
        s = seqs[0]
        assert s.first_token_at is not None and s.last_token_at is not None
        return (s.last_token_at - s.first_token_at) / (s.generated - 1)
    assert tpot(24) > 3 * tpot(1)


def test_a_cached_prefix_skips_its_prefill() -> None:
    shared = words("sys", 1024)
    first = shared + words("u", 600)
    second = shared + words("v", 600)
    other = words("w", 1024) + words("v", 600)
    seqs = replay(EngineConfig(), [arrival(0.0, first, 5), arrival(10.0, second, 5), arrival(20.0, other, 5)])
    assert [s.cached_tokens for s in seqs] == [0, 1024, 0]
    assert ttft(seqs[1]) < 0.6 * ttft(seqs[0])
    assert abs(ttft(seqs[2]) - ttft(seqs[0])) < 0.01


def test_a_fully_cached_prompt_still_computes_its_last_token() -> None:
    prompt = words("p", 64)
    seqs = replay(EngineConfig(), [arrival(0.0, prompt, 2), arrival(5.0, prompt, 2)])
    assert seqs[1].cached_tokens == 48


def test_kv_accounting_stays_consistent_under_preemption() -> None:
    engine = Engine(EngineConfig(kv_blocks=200, max_model_len=3000, max_num_seqs=16))
    rng = random.Random(3)
    seqs = [Sequence_(str(i), len(w), chain_hashes(w, 16), rng.randint(50, 400), 0.0)
            for i, w in enumerate(words(f"k{i}x", rng.randint(100, 900)) for i in range(30))]
    for s in seqs:
        engine.submit(s)
    now = 0.0
    while engine.busy:
        step = engine.schedule()
        assert step is not None
        held = {b for s in engine.running for b in s.blocks}
        assert len(held) == engine.kv.used_blocks
        assert 0 <= engine.kv.free_blocks <= engine.kv.num_blocks
        assert 0.0 <= engine.kv.usage() <= 1.0
        now += step.duration
        engine.complete(step, now)
    assert engine.stats.preemptions > 0
    assert engine.kv.used_blocks == 0
    assert all(s.done and s.generated == s.max_tokens for s in seqs)
    assert engine.stats.generation_tokens == sum(s.max_tokens for s in seqs)


def test_freeing_a_block_twice_is_an_error() -> None:
    kv = KVCache(4, 16)
    blocks = kv.allocate(2)
    kv.free(blocks)
    with pytest.raises(AssertionError):
        kv.free(blocks)


def test_speed_scales_throughput() -> None:
    load = [arrival(0.0, words(f"s{i}x", 800), 100) for i in range(40)]
    slow = replay(EngineConfig(speed=1.0), load)
    fast = replay(EngineConfig(speed=2.0), load)
    end_slow = max(s.last_token_at or 0 for s in slow)
    end_fast = max(s.last_token_at or 0 for s in fast)
    assert end_slow / end_fast == pytest.approx(2.0, rel=0.02)


def test_a_request_beyond_the_context_is_refused() -> None:
    engine = Engine(EngineConfig(max_model_len=4096))
    assert engine.refusal(4000, 96) is None
    refusal = engine.refusal(4000, 200)
    assert refusal is not None and "maximum context length is 4096 tokens" in refusal


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_vllm_metrics_agree_with_the_engine() -> None:
    engine = Engine(EngineConfig(max_num_seqs=3))
    for i in range(5):
        w = words(f"m{i}x", 300)
        engine.submit(Sequence_(str(i), len(w), chain_hashes(w, 16), 20, 0.0))
    now = 0.0
    for _ in range(3):
        step = engine.schedule()
        assert step is not None
        now += step.duration
        engine.complete(step, now)
    got = samples(vllm_metrics(engine, "m", 1.0))
    lab = (("engine", "0"), ("model_name", "m"))
    assert got[("vllm:num_requests_running", lab)] == 3
    assert got[("vllm:num_requests_waiting", lab)] == 2
    assert got[("vllm:kv_cache_usage_perc", lab)] == pytest.approx(engine.kv.usage())
    assert got[("vllm:kv_cache_usage_perc", lab)] > 0
    assert got[("vllm:time_to_first_token_seconds_count", lab)] == 3
    assert got[("vllm:generation_tokens_total", lab)] == engine.stats.generation_tokens
    assert got[("vllm:prefix_cache_queries_total", lab)] == 900
    info = [k for k in got if k[0] == "vllm:cache_config_info"]
    assert len(info) == 1 and dict(info[0][1])["num_gpu_blocks"] == "2500" and dict(info[0][1])["block_size"] == "16"


def test_sglang_metrics_agree_with_the_engine() -> None:
    engine = Engine(EngineConfig(max_num_seqs=1))
    use_sglang_buckets(engine)
    for i in range(3):
        w = words(f"g{i}x", 160)
        engine.submit(Sequence_(str(i), len(w), chain_hashes(w, 16), 4, 0.0))
    step = engine.schedule()
    assert step is not None
    engine.complete(step, step.duration)
    got = samples(sglang_metrics(engine, "m", 1.0))
    lab = (("engine_type", "unified"), ("model_name", "m"), ("pp_rank", "0"), ("tp_rank", "0"))
    assert got[("sglang:num_running_reqs", lab)] == 1
    assert got[("sglang:num_queue_reqs", lab)] == 2
    assert got[("sglang:token_usage", lab)] == pytest.approx(engine.kv.used_blocks * 16 / 40000)
    assert got[("sglang:time_to_first_token_seconds_count", (("model_name", "m"),))] == 1


def test_calibration_one_default_server_serves_half_a_request_per_second_of_the_trace_mix() -> None:
    """The figures in `simulator.pool_trace`: at speed 1.0 about 0.55 requests/s of the evaluation
    mix within a p90 TTFT of 1 s; at 0.8/s the queue grows without bound."""
    mix = [(len(r.prompt.split()), chain_hashes(r.prompt.split(), 16), r.output_tokens) for r in make_trace(7)[:400]]
    config = ModelServerSpec().engine_config()

    def p90(rate: float) -> float:
        rng = random.Random(1)
        t, load = 0.0, []
        for prompt, hashes, out in mix:
            t += rng.expovariate(rate)
            if t > 300:
                break
            load.append((t, prompt, hashes, out))
        waits = sorted(ttft(s) for s in replay(config, load))
        return waits[int(0.9 * len(waits))]

    assert p90(0.45) < 1.0
    assert p90(0.8) > 10.0


def test_the_exposition_is_laid_out_as_prometheus_client_writes_it() -> None:
    """vLLM and SGLang expose through prometheus_client; the same families built with it render to
    the same lines (creation times aside)."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

    from simulator.modelserver.engine import TTFT_BUCKETS

    engine = Engine(EngineConfig())
    w = words("e", 40)
    engine.submit(Sequence_("0", len(w), chain_hashes(w, 16), 3, 0.0))
    now = 0.0
    while engine.busy:
        step = engine.schedule()
        assert step is not None
        now += step.duration
        engine.complete(step, now)
    registry = CollectorRegistry()
    names = ["model_name", "engine"]
    Gauge("vllm:num_requests_running", "Number of requests in model execution batches.", names,
          registry=registry).labels("m", "0").set(0)
    Counter("vllm:prompt_tokens", "Number of prefill tokens processed.", names,
            registry=registry).labels("m", "0").inc(40)
    hist = Histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", names,
                     buckets=TTFT_BUCKETS, registry=registry).labels("m", "0")
    first = engine.stats.ttft
    hist.observe(first.total)

    def families(text: str) -> list[str]:
        wanted = ("vllm:num_requests_running", "vllm:prompt_tokens_total", "vllm:time_to_first_token_seconds")
        return [line for line in text.splitlines()
                if any(name in line for name in wanted) and "_created" not in line]

    assert families(vllm_metrics(engine, "m", 1.0)) == families(generate_latest(registry).decode())


def test_calibration_four_seeded_servers_saturate_at_the_peak_and_serve_the_trough() -> None:
    """What `make eval-pool` relies on (virtual clock, perfectly fresh load): with load-aware picking
    the trough meets the interactive SLO and the peak does not (the pool needs spillover); round robin
    leaves the slow servers queueing, several times worse at p90."""
    from simulator.modelserver import pool_specs
    from simulator.modelserver.engine import replay_pool

    trace = make_trace(7)
    load = [(r.t, r.prompt_tokens, chain_hashes(r.prompt.split(), 16), r.output_tokens) for r in trace]
    configs = [s.engine_config() for s in pool_specs(4, 7)]

    def least_loaded(engines: list[Engine], _i: int) -> int:
        def score(e: Engine) -> float:
            return 10 * len(e.waiting) + max(e.kv.usage(), len(e.running) / e.config.max_num_seqs) / e.speed
        return min(range(len(engines)), key=lambda j: score(engines[j]))

    def outcome(pick: object) -> tuple[float, float, float]:
        done = replay_pool(configs, load, pick)  # type: ignore[arg-type]
        waits = [(r, ttft(s)) for r, (_e, s) in zip(trace, done, strict=True)]
        p90 = sorted(w for _r, w in waits)[int(0.9 * len(waits))]

        def attained(lo: float, hi: float) -> float:
            inter = [w for r, w in waits if r.priority == "interactive" and lo <= r.t < hi]
            return sum(w <= 1.0 for w in inter) / len(inter)
        return p90, attained(0, 90), attained(240, 360)

    rr_p90, _, _ = outcome(lambda engines, i: i % len(engines))
    la_p90, trough, peak = outcome(least_loaded)
    assert trough >= 0.99
    assert peak < 0.9
    assert rr_p90 >= 2 * la_p90
