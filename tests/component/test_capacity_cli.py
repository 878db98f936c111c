"""`interlock capacity profile|plan` as an operator runs them: against a live simulated model server
(`python -m simulator.modelserver`), then planning a trace; bad inputs end in `error:` lines."""

from __future__ import annotations

import http.server
import json
import re
import socket
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator import pool_trace

INTERLOCK = str(Path(sys.executable).with_name("interlock"))


def interlock(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INTERLOCK, "capacity", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def model_server() -> Iterator[str]:
    """One simulated vLLM server at 4× the base speed (a quick profile)."""
    proc = subprocess.Popen([sys.executable, "-m", "simulator.modelserver", "--servers", "1", "--hosts", "127.0.0.1",
                             "--port", "0", "--speeds", "4"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield json.loads(proc.stdout.readline())["url"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def profile(model_server: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("capacity") / "profile.json"
    run = interlock("profile", "--endpoint", model_server, "--concurrency", "1,4", "--prompt-tokens", "64,512",
                    "--output-tokens", "8", "--duration-s", "0.5", "--out", str(out))
    return out, run


def test_profile_measures_a_live_server_step_by_step(model_server: str, profile: tuple) -> None:
    out, run = profile
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"wrote {out}: 1 endpoint(s), 4 steps\n"
    steps = [line for line in run.stderr.splitlines() if "concurrency" in line]
    assert [s.split(": ")[1] for s in steps] == ["prompt 64 tok, concurrency 1", "prompt 64 tok, concurrency 4",
                                                 "prompt 512 tok, concurrency 1", "prompt 512 tok, concurrency 4"]
    data = json.loads(out.read_text())
    (ep,) = data["endpoints"]
    assert data["format"] == "interlock-capacity-profile/1" and ep["url"] == model_server
    assert ep["model"] == "sim-llama-8b"
    assert [p["prompt_tokens"] for p in ep["points"]] == [64.0, 64.0, 512.0, 512.0]  # the server's own count
    assert all(p["requests"] > 0 and p["output_tokens"] == 8.0 for p in ep["points"])
    assert ep["metrics"] == {"flavor": "vllm", "slots": None, "block_size": 16, "num_gpu_blocks": 2500,
                             "kv_usage_max": ep["metrics"]["kv_usage_max"]}
    # A busier server decodes slower: TPOT at 4 concurrent requests above TPOT alone.
    assert ep["points"][1]["tpot_ms"]["mean"] > ep["points"][0]["tpot_ms"]["mean"]


def test_plan_prints_the_tables_and_writes_a_self_contained_page(profile: tuple, tmp_path: Path) -> None:
    trace = pool_trace.write_trace_jsonl(tmp_path / "trace.jsonl", pool_trace.make_trace(7, 120, 2.0))
    html, js = tmp_path / "report.html", tmp_path / "plan.json"
    run = interlock("plan", "--trace", str(trace), "--profile", str(profile[0]), "--slo-ttft-ms", "1000",
                    "--slo-quantile", "0.9", "--target-utilization", "0.8", "--gpu-hour-usd", "2.5",
                    "--provider-price-in", "0.5", "--provider-price-out", "1.5", "--day-seconds", "120",
                    "--sizes", "1,2", "--out-html", str(html), "--out-json", str(js))
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("traffic: ") and "24 hours of 5 s" in lines[0]
    assert any(line.split()[:4] == ["hour", "arrivals", "replicas", "p90"] for line in lines)
    assert sum(1 for line in lines if line.split() and line.split()[0].isdigit()) == 24 + 2  # hours + sizes
    plan = json.loads(js.read_text())
    assert [s["replicas"] for s in plan["sizes"]] == [1, 2]
    assert plan["recommended_replicas"] in (1, 2, None)
    for s in plan["sizes"]:
        assert s["gpu_usd"] == pytest.approx(s["replicas"] * 2.5 * 120 / 3600, abs=1e-4)  # 120 s of GPU time
    page = html.read_text()
    assert page.startswith("<!doctype html>") and page.count("<svg") >= 3
    for fetches in ("<script", "<link", "src=", "href=", "url(", "@import"):  # nothing to load from elsewhere
        assert fetches not in page
    assert "Replicas needed" in page and "Cost of the record by pool size" in page
    charts = [ET.fromstring(svg) for svg in re.findall(r"<svg.*?</svg>", page, re.S)]  # well-formed SVG
    assert [c.get("aria-label") for c in charts][:2] == ["Replicas needed (no spillover)", "Arrivals"]
    assert all(len(list(c.iter("{http://www.w3.org/2000/svg}rect"))) >= 2 for c in charts)


@pytest.fixture
def sglang_server_with_two_slots() -> Iterator[str]:
    """A simulated SGLang-flavoured server that runs at most 2 requests at once (`max_num_seqs`)."""
    import asyncio

    from simulator.modelserver import ModelServerSpec, start_pool

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    spec = ModelServerSpec(name="s", speed=4.0, flavor="sglang", max_num_seqs=2)
    (server,) = asyncio.run_coroutine_threadsafe(start_pool([spec], hosts=["127.0.0.1"]), loop).result(10)
    yield server.url
    asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_profile_reads_a_slot_limit_and_the_kv_size_from_sglang_metrics(sglang_server_with_two_slots: str,
                                                                        tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    run = interlock("profile", "--endpoint", sglang_server_with_two_slots, "--concurrency", "1,6", "--prompt-tokens",
                    "64", "--output-tokens", "16", "--duration-s", "1", "--out", str(out))
    assert run.returncode == 0, run.stderr
    metrics = json.loads(out.read_text())["endpoints"][0]["metrics"]
    assert (metrics["flavor"], metrics["slots"], metrics["block_size"]) == ("sglang", 2, 1)
    assert metrics["num_gpu_blocks"] == 2500 * 16  # sglang:max_total_num_tokens


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def not_openai() -> Iterator[str]:
    """A web server that is not a model server (404 for every path)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_profile_errors_name_the_endpoint_and_the_problem(not_openai: str, tmp_path: Path) -> None:
    port = _free_port()
    run = interlock("profile", "--endpoint", f"127.0.0.1:{port}", "--out", str(tmp_path / "p.json"))
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.startswith(f"error: http://127.0.0.1:{port}: cannot reach the endpoint (")
    run = interlock("profile", "--endpoint", not_openai, "--out", str(tmp_path / "p.json"))
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.startswith(f"error: {not_openai}: GET /v1/models answered 501")
    assert not (tmp_path / "p.json").exists()
    run = interlock("profile", "--endpoint", not_openai, "--concurrency", "0,x", "--out", "p.json")
    assert run.returncode == 2 and "argument --concurrency: '0,x': expected comma-separated integers" in run.stderr


def test_plan_errors_are_one_line_each_without_a_traceback(profile: tuple, tmp_path: Path) -> None:
    good_trace = tmp_path / "t.jsonl"
    good_trace.write_text('{"t": 0, "prompt_tokens": 10, "output_tokens": 2}\n')
    bad_trace = tmp_path / "bad.jsonl"
    bad_trace.write_text('{"t": 0, "prompt_tokens": 10, "output_tokens": 2}\nnot json\n{"t": 1}\n'
                         '{"t": 2, "prompt_tokens": "many", "output_tokens": 2}\n')
    not_profile = tmp_path / "np.json"
    not_profile.write_text('{"hello": 1}')
    broken = tmp_path / "broken.json"
    broken.write_text("{")

    def plan(trace: Path | str, prof: Path | str, *extra: str) -> subprocess.CompletedProcess[str]:
        return interlock("plan", "--trace", str(trace), "--profile", str(prof), "--slo-ttft-ms", "1000", *extra)

    cases = [
        (plan(tmp_path / "missing.jsonl", profile[0]), 1,
         [f"error: {tmp_path / 'missing.jsonl'}: cannot read the traffic record: No such file or directory"]),
        (plan(bad_trace, profile[0]), 1,
         [f"error: {bad_trace}:2: not a JSON object", f"error: {bad_trace}:4: token counts must be integers"]),
        (plan(good_trace, not_profile), 1,
         ["error: profile: not an Interlock capacity profile (`format` must be 'interlock-capacity-profile/1')"]),
        (plan(good_trace, broken), 1, [f"error: {broken}: the profile is not JSON (Expecting property name "
                                       "enclosed in double quotes: line 1 column 2 (char 1))"]),
        (plan(good_trace, profile[0], "--model", "other"), 1,
         [f"error: {good_trace}: no request for model 'other' (it has: )"]),
        (plan(good_trace, profile[0], "--target-utilization", "1.5"), 2,
         ["error: --target-utilization must be in (0, 1]"]),
        (plan(good_trace, profile[0], "--runs", "0"), 2, ["error: --runs must be ≥ 1"]),
    ]
    for run, status, lines in cases:
        assert run.returncode == status, run.stderr
        assert run.stderr.splitlines() == lines
        assert run.stdout == ""


def test_an_slo_no_pool_can_meet_is_named_and_exits_3(profile: tuple, tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(f'{{"t": {i}, "prompt_tokens": 4000, "output_tokens": 20}}\n' for i in range(5)))
    run = interlock("plan", "--trace", str(trace), "--profile", str(profile[0]), "--slo-ttft-ms", "5")
    assert run.returncode == 3, run.stderr
    assert "Traceback" not in run.stderr
    lines = run.stdout.splitlines()
    assert any(line.startswith("SLO infeasible: hour 0: p90 TTFT is ") and line.endswith(
        "ms even with each request alone on the fastest server (prefill alone), above the 5 ms SLO") for line in lines)
    assert lines[-1] == "recommended: none of the sizes meets the SLO"
