"""The pool's moving parts without a network: metric pages, the shared board and
prefix table, and the router stage's headers and metadata (`extproc.pools`)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from extproc import errors
from extproc.config.model import PoolSettings, Provider
from extproc.pools import board as boards
from extproc.pools import picker
from extproc.pools.metrics import MetricsError, parse
from routing.pool import prefix_hashes

VLLM = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="llama"} 7.0
vllm:num_requests_running{engine="1",model_name="llama"} 5.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="llama"} 2.0
vllm:num_requests_waiting{engine="1",model_name="llama"} 1.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="llama"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="llama"} 0.3
vllm:cache_config_info{block_size="16",num_gpu_blocks="4096"} 1.0
vllm:num_requests_waiting_by_reason{reason="capacity"} 99
vllm:prompt_tokens_total{model_name="llama"} 12345.0
"""


def test_vllm_page() -> None:
    g = parse(VLLM)
    assert (g.waiting, g.running, g.kv_usage) == (3, 12, pytest.approx(0.4))


def test_older_vllm_and_sglang_names() -> None:
    old = "vllm:num_requests_waiting 0\nvllm:num_requests_running 4\nvllm:gpu_cache_usage_perc 0.25\n"
    assert parse(old) == parse(old.replace("gpu_cache", "kv_cache"))
    assert parse(old).kv_usage == 0.25
    sg = ('sglang:num_queue_reqs{model_name="m"} 6\nsglang:num_running_reqs{model_name="m"} 32\n'
          'sglang:token_usage{model_name="m"} 0.71\nsglang:cache_hit_rate{model_name="m"} 0.4\n')
    g = parse(sg, "sglang")
    assert (g.waiting, g.running, g.kv_usage) == (6, 32, 0.71)


@pytest.mark.parametrize("page", ["", "<html>busy</html>", "vllm:num_requests_running 3\n",
                                  "sglang:num_queue_reqs 1\nsglang:num_running_reqs 1\n"])
def test_a_page_without_the_gauges_is_an_error(page: str) -> None:
    with pytest.raises(MetricsError):
        parse(page)


def test_board_round_trip(tmp_path: Path) -> None:
    path = boards.board_path(tmp_path, "gpus")
    reader = boards.BoardReader(path)
    assert reader.read() == []  # no scraper yet: no endpoints
    writer = boards.BoardWriter(path)
    now = time.monotonic()
    writer.publish([("127.0.0.11:8000", now - 0.1, 3, 7, 0.5, 0, False, 0),
                    ("127.0.0.12:8000", 0.0, 0, 0, 0.0, 0, True, 1)])
    a, b = reader.read(now)
    assert (a.address, a.waiting, a.running, a.kv_usage, a.down) == ("127.0.0.11:8000", 3, 7, 0.5, False)
    assert a.age_s == pytest.approx(0.1) and b.age_s == float("inf") and b.down
    writer.publish([("127.0.0.12:8000", now, 1, 1, 0.0, 0, False, 1)])
    assert [e.address for e in reader.read(now)] == ["127.0.0.12:8000"]


def test_shared_prefixes_find_the_longest_known_prefix(tmp_path: Path) -> None:
    one = boards.SharedPrefixes(tmp_path / "p")
    other = boards.SharedPrefixes(tmp_path / "p")  # another worker's view of the same file
    head = b"h" * 2048
    one.remember(prefix_hashes(head + b"a" * 2048), 3)
    assert other.lookup(prefix_hashes(head + b"a" * 2048 + b"more")) == 3
    assert other.lookup(prefix_hashes(head + b"b" * 512)) == 3  # shares the 2 KB head
    assert other.lookup(prefix_hashes(b"x" * 4096)) is None


def test_route_sets_header_and_metadata_that_agree(tmp_path: Path) -> None:
    writer = boards.BoardWriter(boards.board_path(tmp_path, "rt"))
    now = time.monotonic()
    writer.publish([("127.0.0.11:8000", now, 4, 0, 0.2, 0, False, 0), ("127.0.0.12:8000", now, 0, 0, 0.1, 0, False, 1),
                    ("127.0.0.13:8000", now, 0, 0, 0.0, 0, True, 2)])
    pool = Provider("rt", "pool", None, pool=PoolSettings(endpoints=("127.0.0.11:8000",)))  # type: ignore[arg-type]
    cloud = Provider("cloud", "openai", None)  # type: ignore[arg-type]
    picker.picker_for(pool, str(tmp_path))
    headers, meta, picked = picker.route([pool], {"messages": [{"role": "user", "content": "hi"}]}, 500)
    assert headers == [("x-gateway-destination-endpoint", "127.0.0.12:8000,127.0.0.11:8000")]
    assert meta == {"envoy.lb": {"x-gateway-destination-endpoint": "127.0.0.12:8000,127.0.0.11:8000"}}
    picker.done(picked)
    # With a per-token provider in the order: the metadata only (no internal addresses to it).
    headers, meta, picked = picker.route([cloud, pool], {"messages": [{"role": "user", "content": "hi"}]}, 500)
    assert headers == []
    assert meta == {"envoy.lb": {"x-gateway-destination-endpoint": "127.0.0.12:8000,127.0.0.11:8000",
                                 "interlock.endpoint": "127.0.0.12:8000"}}
    assert picked is not None and picked.pool.inflight.tokens == {"127.0.0.12:8000": 500}
    picker.served(picked, "127.0.0.11:8000")  # a retry answered
    assert picked.pool.inflight.tokens == {"127.0.0.12:8000": 0, "127.0.0.11:8000": 500}
    picker.done(picked)
    picker.done(picked)
    assert picked.pool.inflight.tokens["127.0.0.11:8000"] == 0
    assert picker.route([cloud], {}, 1) == ([], {}, None)
    writer.publish([("127.0.0.11:8000", now, 0, 0, 0.0, 0, True, 0)])
    with pytest.raises(errors.Unavailable, match="No server of the pool `rt` is ready"):
        picker.route([pool, cloud], {}, 1)
    assert picker.route([cloud, pool], {}, 1) == ([], {}, None)  # a fallback pool with none: Envoy's to fail


def test_a_worker_started_without_interlock_run_keeps_its_pool_files_out_of_the_current_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`interlock extproc` on its own (no pool directory set, no scraper: no server known ready):
    its pool files go to a directory of its own, not wherever it was started."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(picker.POOL_DIR_ENV, raising=False)
    pool = Provider("alone", "pool", None, pool=PoolSettings(endpoints=("127.0.0.11:8000",)))  # type: ignore[arg-type]
    with pytest.raises(errors.Unavailable, match="No server of the pool `alone` is ready"):
        picker.route([pool], {"messages": [{"role": "user", "content": "hi"}]}, 10)
    assert list(tmp_path.iterdir()) == []
