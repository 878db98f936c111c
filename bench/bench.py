#!/usr/bin/env python3
"""Loopback load test, plain Envoy vs Interlock in one run: non-streamed, streamed, fill-in-the-middle.

Steps, in order (`make bench`, ~7 minutes on the 2-core machine):

1. Non-streamed (`wrk` from Debian; the mock upstream is an Envoy answering the recorded provider
   bodies of `recorded/`): plain Envoy; Interlock OpenAI → OpenAI; OpenAI → Anthropic through the
   tenant with rate limits (requests, tokens and USD limits it never reaches: every request makes
   the admission and the true-up call); OpenAI → Anthropic through a tenant without limits. Each
   at --connections (32), --runs (3) runs of --duration (10) s after a warm-up, the runs
   alternating scenario by scenario so drift on a shared machine hits all of them; the median run
   is reported, with the CPU per request of Envoy or of every gateway process (utime + stime from
   /proc/<pid>/stat over the run, divided by its requests); the line on the throughput lost to
   rate limits also says the CPU per request they add, by process (Envoy, the workers together,
   the rate-limit process: the median run with limits minus the median without). Then each at 1
   connection (--unloaded s) and at 16 and 64 connections (--conc-duration s): p50 and p99 added
   over plain Envoy.
2. The telemetry comparison (`--no-telemetry` skips it): two more Interlock instances (OpenAI →
   OpenAI), "on" with metrics, tracing (every request sampled, OTLP/HTTP to the mock upstream) and
   the access log, "off" with OTEL_SDK_DISABLED=true and INTERLOCK_ACCESS_LOG=off; runs alternate
   on, off, ...; medians compared; `p50_added_ms` is the 1-connection p50 difference; the line
   also says the CPU per request telemetry adds, by process (Envoy's tracer and access log are in
   Envoy's share; the workers' metrics and spans in theirs), and what a third instance with
   Envoy's tracer alone (INTERLOCK_METRICS, INTERLOCK_SPANS and INTERLOCK_ACCESS_LOG off) keeps
   of the "off" throughput and CPU (`envoy_tracer_only rps_ratio=… cpu_ratio=…`).
3. The streaming scenarios (`bench_stream.py`, `--no-stream` skips them; see its docstring): a
   paced streaming mock speaking both APIs, plain Envoy and Interlock; unloaded time to first
   event on every path, CPU per event at 64 streams, 128 concurrent translated streams.
4. Fill-in-the-middle (`bench_fim.py`, `--no-fim` skips it).

Then a summary (the tables again) and, last, these lines:

    bench-fim: envoy_ttft_p50_ms=… interlock_ttft_p50_ms=… added_p50_ms=… added_p99_ms=… n=… errors=…
    bench: telemetry on/off (traced 100%): rps_ratio=R.RR p50_added_ms=X.XX cpu_ratio=R.RR …
    bench: envoy_rps=… openai_rps=… anthropic_rps=… anthropic_p50_added_ms=… anthropic_norl_rps=…
           ttfe_added_ms=… stream128_ttfe_p99_ms=… stream128_gap_p99_ms=…
           translate_cpu_us_per_event=… passthrough_cpu_ratio=…

Fields of the last line:

- `envoy_rps`, `openai_rps`, `anthropic_rps`: req/s of plain Envoy, Interlock OpenAI → OpenAI and
  OpenAI → Anthropic (tenant with rate limits) at 32 connections, median run.
- `anthropic_p50_added_ms`: OpenAI → Anthropic (rate limits on) minus plain Envoy, p50 at 1 connection.
- `anthropic_norl_rps`: OpenAI → Anthropic through a tenant without rate limits, same conditions
  (throughput lost to rate limits = 1 - anthropic_rps / anthropic_norl_rps).
- `ttfe_added_ms`: unloaded (one stream at a time) time to first event, p50, added over plain
  Envoy: the largest among OpenAI → OpenAI, OpenAI → Anthropic, Anthropic → Anthropic and OpenAI →
  Anthropic through the tenant with rate limits.
- `stream128_ttfe_p99_ms`, `stream128_gap_p99_ms`: 128 concurrent OpenAI → Anthropic streams
  (100 events paced 10 ms, 12.8k events/s offered): p99 of the time to first event, and p99 of
  the gap between consecutive text events of a stream.
- `translate_cpu_us_per_event`: CPU µs of all the gateway's processes per text event delivered,
  OpenAI → Anthropic (tenant without limits) at 64 concurrent streams.
- `passthrough_cpu_ratio`: the same for OpenAI → OpenAI (the client does not ask for
  `stream_options.include_usage`) divided by plain Envoy's CPU per event at 64 streams.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from extproc.cmd.run import envoy_binary  # noqa: E402
from extproc.cmd.supervisor import port_open, wait_until  # noqa: E402
from tests.support.ports import free_port, free_port_run  # noqa: E402

if __package__:  # imported as bench.bench
    from bench import bench_stream  # noqa: E402
    from bench.procs import cpu_seconds, descendants, proc_cpu, start, stop  # noqa: E402
else:  # run as a script: bench/ is on sys.path
    import bench_stream  # type: ignore[no-redef]  # noqa: E402
    from procs import cpu_seconds, descendants, proc_cpu, start, stop  # type: ignore[no-redef]  # noqa: E402

KEY = "sk-bench-tenant"
KEY_NORL = "sk-bench-tenant-nolimits"
RECORDED = Path(__file__).parent / "recorded"
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def request_body(model: str) -> bytes:
    """A ~2 KB chat request: a system prompt and a short conversation."""
    filler = ("Envoy is an L7 proxy and communication bus designed for large modern service oriented "
              "architectures. ") * 4
    body = {"model": model, "max_tokens": 256, "messages": [
        {"role": "system", "content": "You are a concise assistant. " + filler},
        {"role": "user", "content": "Summarise what a service proxy does. " + filler},
        {"role": "assistant", "content": "A service proxy sits between services. " + filler},
        {"role": "user", "content": "And Envoy in particular, in two sentences?"}]}
    return json.dumps(body).encode()


def _listener(port: int, filters: list[dict], routes: list[dict]) -> dict:
    return {"name": f"l{port}", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": {"@type": HCM, "stat_prefix": "bench",
                                                             "route_config": {"virtual_hosts": [{
                                                                 "name": "all", "domains": ["*"],
                                                                 "routes": routes}]},
                                                             "http_filters": [*filters, ROUTER]}}]}]}


def mock_upstream_config(port: int, admin: int) -> dict:
    """Envoy answering the recorded provider bodies; the buffer filter reads the request first
    so keep-alive connections stay open."""
    buffer = {"name": "envoy.filters.http.buffer", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
        "max_request_bytes": 1048576}}
    routes = [{"match": {"path": path}, "direct_response": {"status": 200, "body": {
        "filename": str(RECORDED / name)}}, "response_headers_to_add": [{"header": {
            "key": "content-type", "value": "application/json"}}]}
        for path, name in (("/v1/chat/completions", "openai_chat_completion.json"),
                           ("/v1/messages", "anthropic_message.json"))]
    # The OTLP/HTTP sink of the telemetry comparison: spans and metrics are accepted and dropped.
    routes += [{"match": {"prefix": "/v1/traces"}, "direct_response": {"status": 200}},
               {"match": {"prefix": "/v1/metrics"}, "direct_response": {"status": 200}}]
    return {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
            "static_resources": {"listeners": [_listener(port, [buffer], routes)], "clusters": []}}


def plain_envoy_config(port: int, admin: int, upstream: int) -> dict:
    cluster = {"name": "upstream", "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
        "cluster_name": "upstream", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
            "socket_address": {"address": "127.0.0.1", "port_value": upstream}}}}]}]}}
    routes = [{"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "0s"}}]
    return {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
            "static_resources": {"listeners": [_listener(port, [], routes)], "clusters": [cluster]}}


def interlock_config(port: int, admin: int, extproc: int, upstream: int, workers: int) -> dict:
    endpoint = f"http://127.0.0.1:{upstream}"
    return {
        "listen": {"address": "127.0.0.1", "port": port}, "admin": {"port": admin},
        "extproc": {"port": extproc, "workers": workers},
        "providers": [{"name": "openai", "type": "openai", "endpoint": endpoint, "api_key_env": "BENCH_KEY"},
                      {"name": "anthropic", "type": "anthropic", "endpoint": endpoint,
                       "api_key_env": "BENCH_KEY"}],
        "models": [{"name": "gpt-4o-mini", "provider": "openai", "upstream_model": "gpt-4o-mini-2024-07-18"},
                   {"name": "claude-haiku-4-5", "provider": "anthropic",
                    "upstream_model": "claude-haiku-4-5-20251001", "max_output_tokens": 8192}],
        "rate_limit": {"port": free_port()}, "metrics": {"port": free_port()},
        # Rate limiting on (descriptors present on every request), with limits the run never
        # reaches: the cost of admission and true-up is in the figures.
        "tenants": [{"name": "bench", "api_key_sha256": [hashlib.sha256(KEY.encode()).hexdigest()],
                     "limits": [{"unit": "requests", "per": "second", "amount": 1_000_000},
                                {"unit": "tokens", "per": "minute", "amount": 10**11},
                                {"unit": "usd", "per": "day", "amount": 10**6}]},
                    # The same path without rate limits: `anthropic_norl_rps`.
                    {"name": "norl", "api_key_sha256": [hashlib.sha256(KEY_NORL.encode()).hexdigest()]}],
    }


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def wrk(url: str, body_file: Path, connections: int, duration: float, threads: int = 2, key: str = KEY
        ) -> WrkResult:
    script = body_file.with_name(f"{body_file.stem}-{hashlib.sha256(key.encode()).hexdigest()[:8]}.lua")
    script.write_text(
        'wrk.method = "POST"\n'
        f'wrk.body = io.open("{body_file}"):read("*a")\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n')
    out = subprocess.run(["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{max(1, round(duration))}s",
                          "--latency", "-s", str(script), url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(int(g) for g in errs.groups()) if errs else 0)
    return WrkResult(rps, p50, p99, requests, errors)






def check_reply(url: str, body: bytes, expect_model_prefix: str, key: str = KEY) -> None:
    """The scenario must answer a parseable OpenAI chat completion before it is timed."""
    from openai.types.chat import ChatCompletion

    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        completion = ChatCompletion.model_validate(json.loads(r.read()))
    assert completion.choices[0].message.content, "empty completion"
    assert completion.model.startswith(expect_model_prefix), completion.model






TELEMETRY_ON = {"OTEL_TRACES_SAMPLER_ARG": "1"}  # + OTEL_EXPORTER_OTLP_ENDPOINT: the mock upstream
TELEMETRY_OFF = {"OTEL_SDK_DISABLED": "true", "INTERLOCK_ACCESS_LOG": "off"}
# + the endpoint: Envoy's tracer, and nothing of Interlock's own (metrics, stage spans, access log)
TRACER_ONLY = {"INTERLOCK_METRICS": "off", "INTERLOCK_SPANS": "off", "INTERLOCK_ACCESS_LOG": "off",
               "OTEL_METRICS_EXPORTER": "none"}


def start_gateway(work: Path, name: str, upstream: int, workers: int, env: dict[str, str]
                  ) -> tuple[subprocess.Popen[bytes], int]:
    """One more Interlock instance (its own ports and work directory); waits until it is ready."""
    port, admin, extproc = free_port(), free_port(), free_port_run(workers)
    (work / f"{name}.yaml").write_text(yaml.safe_dump(interlock_config(port, admin, extproc, upstream, workers)))
    log = work / f"{name}.log"
    proc = start([sys.executable, "-m", "extproc.cmd.cli", "--log-level", "warning", "run", "-c",
                  str(work / f"{name}.yaml"), "--workdir", str(work / f"rendered-{name}")], log,
                 env={**os.environ, "BENCH_KEY": "sk-upstream-bench", "PYTHONPATH": str(ROOT), **env})
    if not wait_until(lambda: "ready:" in log.read_text() or proc.poll() is not None, 60, 0.2) or proc.poll():
        print(log.read_text()[-3000:], file=sys.stderr)
        raise SystemExit(f"bench: {name} did not become ready within 60 s")
    return proc, port


def telemetry_comparison(args: argparse.Namespace, work: Path, mock_port: int, workers: int,
                         procs: list[subprocess.Popen[bytes]]) -> str:
    """Interlock with metrics + tracing + access log on vs all off, alternating runs; one line.
    A third instance runs Envoy's tracer alone (every part of Interlock's own telemetry off: no
    metrics, no router-stage spans, no access log): what the tracer by itself leaves of the
    throughput, against the same "off"."""
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{mock_port}",
                "OTEL_TRACES_SAMPLER_ARG": f"{args.trace_ratio:g}"}
    on_env = {**TELEMETRY_ON, **endpoint}
    tracer_env = {**endpoint, **TRACER_ONLY}
    urls, pids, roles = {}, {}, {}
    for name, env in (("telemetry-on", on_env), ("telemetry-off", TELEMETRY_OFF), ("envoy-tracer-only", tracer_env)):
        proc, port = start_gateway(work, name, mock_port, workers, env)
        procs.insert(0, proc)
        urls[name] = f"http://127.0.0.1:{port}/v1/chat/completions"
        pids[name] = descendants(proc.pid)
        roles[name] = bench_stream.gateway_processes(proc.pid)
    body = work / "telemetry.json"
    body.write_bytes(request_body("gpt-4o-mini"))
    runs: dict[str, list[WrkResult]] = {name: [] for name in urls}
    cpu = {name: 0.0 for name in urls}
    # CPU µs per request by process, each run: what telemetry adds, and where (Envoy's tracer and
    # access log are Envoy's; the workers' metrics and spans are ours).
    parts: dict[str, list[dict[str, float]]] = {name: [] for name in urls}
    for url in urls.values():
        check_reply(url, body.read_bytes(), "gpt-4o-mini")
        wrk(url, body, args.connections, args.warmup)
    for i in range(args.runs):
        for name, url in urls.items():
            cpu0 = cpu_seconds(pids[name])
            each0 = {role: proc_cpu(pid) for role, pid in roles[name].items()}
            r = wrk(url, body, args.connections, args.duration)
            cpu[name] += cpu_seconds(pids[name]) - cpu0
            parts[name].append({role: (proc_cpu(pid) - each0[role]) / max(1, r.requests) * 1e6
                                for role, pid in roles[name].items()})
            runs[name].append(r)
            print(f"bench: {name} run {i + 1}/{args.runs}: {r.rps:.0f} req/s, p50 {r.p50_ms:.2f} ms, "
                  f"errors {r.errors}", flush=True)
    med = {name: sorted(rs, key=lambda r: r.rps)[len(rs) // 2] for name, rs in runs.items()}
    unloaded = {name: wrk(url, body, 1, args.unloaded, threads=1) for name, url in urls.items()
                if name != "envoy-tracer-only"}
    on, off, tracer = med["telemetry-on"], med["telemetry-off"], med["envoy-tracer-only"]
    errors = sum(r.errors for rs in runs.values() for r in rs)
    added = unloaded["telemetry-on"].p50_ms - unloaded["telemetry-off"].p50_ms
    # CPU per request of the gateway's processes (Envoy, workers, rate limit): on a shared machine
    # the steadier figure; its inverse ratio is the throughput ratio on a machine of its own.
    us = {name: cpu[name] / max(1, sum(r.requests for r in runs[name])) * 1e6 for name in urls}
    return (f"bench: telemetry on/off (traced {args.trace_ratio:.0%}): rps_ratio={on.rps / off.rps:.2f} "
            f"p50_added_ms={added:.2f} cpu_ratio={us['telemetry-off'] / us['telemetry-on']:.2f} "
            f"cpu_us_per_req={us['telemetry-on']:.0f}/{us['telemetry-off']:.0f} "
            f"added by process: {cpu_added(parts['telemetry-on'], parts['telemetry-off'])}; "
            f"envoy_tracer_only rps_ratio={tracer.rps / off.rps:.2f} "
            f"cpu_ratio={us['telemetry-off'] / us['envoy-tracer-only']:.2f} "
            f"(on: {on.rps:.0f} req/s, 1-conn p50 {unloaded['telemetry-on'].p50_ms:.2f} ms; "
            f"off: {off.rps:.0f} req/s, 1-conn p50 {unloaded['telemetry-off'].p50_ms:.2f} ms"
            f"{f'; {errors} errors' if errors else ''})")


def non_streamed(args: argparse.Namespace, work: Path, workers: int, lines: list[str]
                 ) -> tuple[dict[str, dict[str, float]], str]:
    """Plain Envoy and Interlock on the recorded bodies: throughput, CPU per request, the added
    latency at 1 / 16 / 64 connections, and the telemetry comparison; every process stopped after."""
    envoy = envoy_binary()
    mock_port, mock_admin, plain_port, plain_admin, gw_port, gw_admin = (free_port() for _ in range(6))
    extproc_base = free_port_run(workers)
    (work / "mock.yaml").write_text(yaml.safe_dump(mock_upstream_config(mock_port, mock_admin)))
    (work / "plain.yaml").write_text(yaml.safe_dump(plain_envoy_config(plain_port, plain_admin, mock_port)))
    (work / "gateway.yaml").write_text(yaml.safe_dump(
        interlock_config(gw_port, gw_admin, extproc_base, mock_port, workers)))
    procs: list[subprocess.Popen[bytes]] = []
    gateway = None
    try:
        print(f"bench: starting mock upstream, plain Envoy and Interlock ({workers} ext_proc workers); "
              f"logs in {work}", flush=True)
        procs.append(start([envoy, "-c", str(work / "mock.yaml"), "--disable-hot-restart", "--concurrency", "1",
                            "--log-level", "error"], work / "mock.log"))
        procs.append(start([envoy, "-c", str(work / "plain.yaml"), "--disable-hot-restart",
                            "--log-level", "error"], work / "plain.log"))
        gateway = start([sys.executable, "-m", "extproc.cmd.cli", "--log-level", "warning", "run", "-c",
                         str(work / "gateway.yaml"), "--workdir", str(work / "rendered")], work / "gateway.log",
                        env={**os.environ, "BENCH_KEY": "sk-upstream-bench", "PYTHONPATH": str(ROOT)})
        procs.append(gateway)
        ready = wait_until(lambda: all(port_open("127.0.0.1", p) for p in (mock_port, plain_port, gw_port))
                           and "ready:" in (work / "gateway.log").read_text(), 60, 0.2)
        if not ready:
            print((work / "gateway.log").read_text()[-3000:], file=sys.stderr)
            raise SystemExit("bench: processes did not become ready within 60 s")

        chat = "/v1/chat/completions"
        scenarios = {  # name: (url, model, reply's model prefix, tenant key)
            "envoy": (f"http://127.0.0.1:{plain_port}{chat}", "gpt-4o-mini", "gpt-4o-mini", KEY),
            "openai": (f"http://127.0.0.1:{gw_port}{chat}", "gpt-4o-mini", "gpt-4o-mini", KEY),
            "anthropic": (f"http://127.0.0.1:{gw_port}{chat}", "claude-haiku-4-5", "claude-haiku", KEY),
            "anthropic_norl": (f"http://127.0.0.1:{gw_port}{chat}", "claude-haiku-4-5", "claude-haiku", KEY_NORL),
        }
        bodies = {}
        for name, (url, model, prefix, key) in scenarios.items():
            bodies[name] = work / f"{name}.json"
            bodies[name].write_bytes(request_body(model))
            check_reply(url, bodies[name].read_bytes(), prefix, key)
        print("bench: every scenario answers a valid OpenAI chat completion", flush=True)

        gw_pids = descendants(gateway.pid)
        by_role = bench_stream.gateway_processes(gateway.pid)
        plain_pid = procs[1].pid
        for name, (url, _, _, key) in scenarios.items():
            wrk(url, bodies[name], args.connections, args.warmup, key=key)
        # Runs alternate scenario by scenario, so drift on a shared machine hits all of them.
        runs: dict[str, list[tuple[WrkResult, float]]] = {name: [] for name in scenarios}
        # CPU µs per request by process, each run: what the rate limits add, and where.
        parts: dict[str, list[dict[str, float]]] = {"anthropic": [], "anthropic_norl": []}
        for i in range(args.runs):
            for name, (url, _, _, key) in scenarios.items():
                pids = [plain_pid] if name == "envoy" else gw_pids
                cpu0 = cpu_seconds(pids)
                each0 = {role: proc_cpu(pid) for role, pid in by_role.items()}
                r = wrk(url, bodies[name], args.connections, args.duration, key=key)
                runs[name].append((r, cpu_seconds(pids) - cpu0))
                if name in parts:
                    parts[name].append({role: (proc_cpu(pid) - each0[role]) / max(1, r.requests) * 1e6
                                        for role, pid in by_role.items()})
                print(f"bench: {name} run {i + 1}/{args.runs}: {r.rps:.0f} req/s, p50 {r.p50_ms:.2f} ms, "
                      f"p99 {r.p99_ms:.2f} ms, errors {r.errors}", flush=True)
        results: dict[str, dict[str, float]] = {}
        for name in scenarios:
            ordered = sorted(runs[name], key=lambda x: x[0].rps)
            med, cpu = ordered[len(ordered) // 2]
            results[name] = {"rps": med.rps, "p50": med.p50_ms, "p99": med.p99_ms,
                             "cpu_us": cpu / max(1, med.requests) * 1e6,
                             "errors": sum(r.errors for r, _ in ordered)}
        # Added latency by concurrency (1 = the unloaded connection), each path against plain Envoy.
        levels = (1, 16, 64)
        by_level: dict[str, dict[int, WrkResult]] = {name: {} for name in scenarios}
        for c in levels:
            for name, (url, _, _, key) in scenarios.items():
                seconds = args.unloaded if c == 1 else args.conc_duration
                by_level[name][c] = wrk(url, bodies[name], c, seconds, threads=1 if c == 1 else 2, key=key)
                results[name]["errors"] += by_level[name][c].errors
        for name in scenarios:
            results[name]["unloaded_p50"] = by_level[name][1].p50_ms
            results[name]["unloaded_p99"] = by_level[name][1].p99_ms

        def say(line: str = "") -> None:
            lines.append(line)
            print(line, flush=True)

        say()
        say(f"{'scenario':<36}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU µs/req':>12}{'1-conn p50':>12}"
            f"{'errors':>8}")
        labels = {"envoy": "plain Envoy", "openai": "Interlock OpenAI→OpenAI",
                  "anthropic": "Interlock OpenAI→Anthropic",
                  "anthropic_norl": "Interlock OpenAI→Anthropic, no limits"}
        for name, r in results.items():
            say(f"{labels[name]:<36}{r['rps']:>9.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}{r['cpu_us']:>12.0f}"
                f"{r['unloaded_p50']:>12.2f}{r['errors']:>8.0f}")
        say(f"({args.connections} connections, median of {args.runs} x {args.duration:.0f} s, runs alternated; "
            f"1-conn p50 over {args.unloaded:.0f} s; {workers} ext_proc workers; {os.cpu_count()} cores)")
        loss = 1 - results["anthropic"]["rps"] / results["anthropic_norl"]["rps"]
        say(f"throughput lost to rate limits (OpenAI→Anthropic, same run): {loss:.1%}; "
            f"CPU µs per request they add, by process (medians of the runs): {cpu_added(parts['anthropic'], parts['anthropic_norl'])}")
        say()
        say("added latency over plain Envoy by concurrency (p50 / p99 ms; "
            f"{args.unloaded:.0f} s at 1, {args.conc_duration:.0f} s at 16 and 64):")
        say(f"{'path':<36}" + "".join(f"{f'c={c} p50/p99':>18}" for c in levels))
        for name in scenarios:
            base = by_level["envoy"]
            if name == "envoy":
                cells = [f"{by_level[name][c].p50_ms:.2f}/{by_level[name][c].p99_ms:.2f}" for c in levels]
                say(f"{'plain Envoy (absolute)':<36}" + "".join(f"{x:>18}" for x in cells))
                continue
            cells = [f"{by_level[name][c].p50_ms - base[c].p50_ms:+.2f}/{by_level[name][c].p99_ms - base[c].p99_ms:+.2f}"
                     for c in levels]
            say(f"{labels[name]:<36}" + "".join(f"{x:>18}" for x in cells))
            for c in levels:
                results[name][f"added_p50_c{c}"] = by_level[name][c].p50_ms - base[c].p50_ms
                results[name][f"added_p99_c{c}"] = by_level[name][c].p99_ms - base[c].p99_ms
        telemetry = "" if args.no_telemetry else telemetry_comparison(args, work, mock_port, workers, procs)
        return results, telemetry
    finally:
        for p in reversed(procs):
            stop(p, signal.SIGINT if p is gateway else signal.SIGTERM)


def cpu_added(on_rows: list[dict[str, float]], off_rows: list[dict[str, float]]) -> str:
    """`envoy +a ratelimit +c workers +b (total +d)`: the median per-request CPU of each process
    group in the `on` runs minus the `off` runs (the workers summed; processes under 1 µs left
    out). Used for what the rate limits add and for what telemetry adds."""
    def group(role: str) -> str:
        return "workers" if role.startswith("worker") else role

    def medians(rows: list[dict[str, float]]) -> dict[str, float]:
        out: dict[str, list[float]] = {}
        for row in rows:
            sums: dict[str, float] = {}
            for role, us in row.items():
                sums[group(role)] = sums.get(group(role), 0.0) + us
            for g, us in sums.items():
                out.setdefault(g, []).append(us)
        return {g: sorted(v)[len(v) // 2] for g, v in out.items()}

    on, off = medians(on_rows), medians(off_rows)
    added = {g: on.get(g, 0.0) - off.get(g, 0.0) for g in on}
    shown = " ".join(f"{g} {d:+.0f}" for g, d in sorted(added.items()) if abs(d) >= 1 or on.get(g, 0) >= 1)
    return f"{shown} (total {sum(added.values()):+.0f})"


def fim(args: argparse.Namespace) -> tuple[str, bool]:
    """bench/bench_fim.py in its own process; its output is passed through, its last line returned."""
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("bench_fim.py")),
                           "--duration", f"{args.fim_duration:g}"], capture_output=True, text=True, cwd=ROOT)
    print(proc.stdout, end="", flush=True)
    if proc.returncode and proc.stderr:
        print(proc.stderr[-3000:], file=sys.stderr)
    last = [line for line in proc.stdout.splitlines() if line.startswith("bench-fim:")]
    return (last[-1] if last else "bench-fim: did not finish"), proc.returncode == 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10, help="seconds per timed run (default 10)")
    ap.add_argument("--warmup", type=float, default=3, help="seconds of warm-up per scenario (default 3)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per scenario; the median is reported")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    ap.add_argument("--unloaded", type=float, default=5, help="seconds of the 1-connection run (default 5)")
    ap.add_argument("--conc-duration", type=float, default=4,
                    help="seconds of each 16- and 64-connection latency run (default 4)")
    ap.add_argument("--workers", type=int, default=0, help="ext_proc workers (default: one per core)")
    ap.add_argument("--no-telemetry", action="store_true", help="skip the telemetry on/off comparison")
    ap.add_argument("--trace-ratio", type=float, default=1.0,
                    help="share of requests traced in the telemetry 'on' instance (default 1: every request)")
    ap.add_argument("--no-stream", action="store_true", help="skip the streaming scenarios (bench_stream.py)")
    ap.add_argument("--stream-duration", type=float, default=10,
                    help="timed seconds of each loaded streaming run (default 10)")
    ap.add_argument("--stream-unloaded", type=float, default=20,
                    help="seconds of the unloaded streaming scenario (default 20)")
    ap.add_argument("--no-fim", action="store_true", help="skip the fill-in-the-middle scenario (bench_fim.py)")
    ap.add_argument("--fim-duration", type=float, default=15, help="seconds of the FIM scenario (default 15)")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        print("bench: wrk is not installed (make bench installs it with apt-get)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="interlock-bench-"))
    workers = args.workers or os.cpu_count() or 1
    lines: list[str] = []
    results, telemetry = non_streamed(args, work, workers, lines)
    stream: dict[str, float] = {}
    stream_errors = 0
    if not args.no_stream:
        print("\nbench: streaming scenarios (bench/bench_stream.py)", flush=True)
        out = bench_stream.run(work, duration=args.stream_duration, unloaded=args.stream_unloaded, workers=workers)
        stream, stream_errors = out.figures, out.errors
        lines += ["", *out.lines[1:]]
    fim_line, fim_ok = ("", True) if args.no_fim else fim(args)

    # The summary: the tables again, then the lines.
    print("\n" + "\n".join(lines))
    if fim_line:
        print(fim_line)
    if telemetry:
        print(telemetry)
    added = results["anthropic"]["unloaded_p50"] - results["envoy"]["unloaded_p50"]
    fields = [f"envoy_rps={results['envoy']['rps']:.0f}", f"openai_rps={results['openai']['rps']:.0f}",
              f"anthropic_rps={results['anthropic']['rps']:.0f}", f"anthropic_p50_added_ms={added:.2f}",
              f"anthropic_norl_rps={results['anthropic_norl']['rps']:.0f}"]
    if stream:
        fields.append(bench_stream.summary(stream))
    print("bench: " + " ".join(fields))
    failed = (any(r["errors"] for r in results.values()) or "errors" in telemetry or stream_errors
              or not fim_ok)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
