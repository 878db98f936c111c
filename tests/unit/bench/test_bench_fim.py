"""`bench/bench_fim.py`'s inputs are what they claim: a valid gateway config with a prompt-only FIM
model (and rate limits unless asked not to), and a plain-Envoy request that is exactly what the
gateway sends the provider for the client's request."""

from __future__ import annotations

import orjson
import yaml

from bench import bench_fim
from extproc.config import load_text
from extproc.runtime import compile_runtime
from extproc.translate.registry import default_registry


def test_the_gateway_config_is_valid_and_templated() -> None:
    cfg = load_text(yaml.safe_dump(bench_fim.gateway_config(10000, 18000)))
    assert cfg.rate_limited and cfg.models[0].fim_template
    assert not load_text(yaml.safe_dump(bench_fim.gateway_config(10000, 18000, limits=False))).rate_limited


def test_plain_envoy_gets_what_the_gateway_sends() -> None:
    rt = compile_runtime(load_text(yaml.safe_dump(bench_fim.gateway_config(10000, 18000))), default_registry(),
                         environ={"FIM_PROVIDER_KEY": "k"})
    d = rt.deployments["qwen-coder"][0]
    client = {"model": "qwen-coder", "prompt": bench_fim.PREFIX, "suffix": bench_fim.SUFFIX, "stream": True}
    sent = orjson.loads(rt.registry.get("openai-completions", "openai").translate_request(client, d.target).body)
    expected = bench_fim.apply_template(bench_fim.PRESETS["qwen"], bench_fim.PREFIX, bench_fim.SUFFIX)
    assert sent == {"model": bench_fim.UPSTREAM, "prompt": expected, "stream": True}
