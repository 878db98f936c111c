"""Simulated self-hosted model servers (vLLM / SGLang) for pool routing and capacity planning.

`engine` is the sans-IO continuous-batching core with its paged KV cache (`kvcache`), `metrics`
renders `/metrics`, `server` is the OpenAI-compatible HTTP face, `pool` starts several on loopback
addresses. CLI: ``python -m simulator.modelserver --help``.

Calibration (default `ModelServerSpec`, the length mix of `simulator.pool_trace`; measured on the
virtual clock by `engine.replay` / `replay_pool` and checked by tests/unit/simulator/test_modelserver.py;
a real-time run agrees within a few per cent):

- one server at speed 1.0 serves about 0.55 requests/s within a p90 TTFT of 1 s and about 0.67/s at
  full throughput (queue growing past that); speed s multiplies both;
- `pool_specs(4, seed=7)` (speeds 2.0, 1.32, 1.15, 1.0, sum 5.48) serves about 3.0 requests/s
  within the SLO and 3.7/s at full throughput, against the trace's 1/s trough and 4/s peak: with
  least-loaded picking on fresh metrics, 100 % of interactive requests meet 1 s at the trough and
  74 % in the two peak minutes (the pool needs spillover); round robin: p90 TTFT 46 s vs 1.9 s.
  Five servers of `pool_specs(5, 7)` meet the SLO for 99.9 % of interactive requests.

Shape (speed 1.0): a step costs 15 ms + 3.57 ms per decoding request + prefill tokens / 10,000 per s;
32 slots, 2,500 KV blocks of 16 tokens (about 19 requests of the mix: KV fills before the slots),
2,048 tokens per step, contexts up to 16,384 tokens. Inter-token latency at a full batch ≈ 85 ms.
"""

from simulator.modelserver.engine import Engine, EngineConfig, replay
from simulator.modelserver.pool import BackgroundPool, RunningServer, pool_specs, start_pool
from simulator.modelserver.server import MODEL, ModelServer, ModelServerSpec

__all__ = ["MODEL", "BackgroundPool", "Engine", "EngineConfig", "ModelServer", "ModelServerSpec", "RunningServer", "pool_specs",
           "replay", "start_pool"]
