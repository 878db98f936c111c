#!/usr/bin/env python3
"""Loopback load test: plain Envoy vs Interlock (OpenAI → OpenAI, OpenAI → Anthropic).

Prints a table, one line per comparison and, last, one line:
    bench: telemetry on/off: rps_ratio=R.RR p50_added_ms=X.XX (on: N req/s p50 X.XX ms; off: ...)
    bench: envoy_rps=N openai_rps=N anthropic_rps=N anthropic_p50_added_ms=X.X
The telemetry comparison runs two more Interlock instances in the same run (OpenAI → OpenAI):
"on" with metrics, tracing (every request sampled, OTLP/HTTP to the mock upstream, which answers
200) and the access log; "off" with OTEL_SDK_DISABLED=true and INTERLOCK_ACCESS_LOG=off. Runs
alternate on, off, on, off, ... so drift on a shared machine hits both; medians are compared, and
`p50_added_ms` is the 1-connection p50 difference. `--no-telemetry` skips it.
`*_rps` at --connections (default 32), median of --runs (default 3) runs of --duration seconds
after a warm-up; `anthropic_p50_added_ms` = Interlock (OpenAI → Anthropic) minus plain Envoy
p50 at one connection. CPU per request is the CPU time Envoy and the ext_proc workers used
during the timed runs divided by the requests they served.
"""

from __future__ import annotations

import argparse
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

KEY = "sk-bench-tenant"
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
    import hashlib

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
                                {"unit": "usd", "per": "day", "amount": 10**6}]}],
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


def wrk(url: str, body_file: Path, connections: int, duration: float, threads: int = 2) -> WrkResult:
    script = body_file.with_suffix(".lua")
    script.write_text(
        'wrk.method = "POST"\n'
        f'wrk.body = io.open("{body_file}"):read("*a")\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {KEY}"\n')
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


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes (and their waited-for children) in seconds."""
    total = 0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError):
            pass
    return total / tick


def descendants(pid: int) -> list[int]:
    out = [pid]
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for k in kids:
        out += descendants(int(k))
    return out


def check_reply(url: str, body: bytes, expect_model_prefix: str) -> None:
    """The scenario must answer a parseable OpenAI chat completion before it is timed."""
    from openai.types.chat import ChatCompletion

    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        completion = ChatCompletion.model_validate(json.loads(r.read()))
    assert completion.choices[0].message.content, "empty completion"
    assert completion.model.startswith(expect_model_prefix), completion.model


def start(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


TELEMETRY_ON = {"OTEL_TRACES_SAMPLER_ARG": "1"}  # + OTEL_EXPORTER_OTLP_ENDPOINT: the mock upstream
TELEMETRY_OFF = {"OTEL_SDK_DISABLED": "true", "INTERLOCK_ACCESS_LOG": "off"}


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
    """Interlock with metrics + tracing + access log on vs all off, alternating runs; one line."""
    on_env = {**TELEMETRY_ON, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{mock_port}",
              "OTEL_TRACES_SAMPLER_ARG": f"{args.trace_ratio:g}"}
    urls, pids = {}, {}
    for name, env in (("telemetry-on", on_env), ("telemetry-off", TELEMETRY_OFF)):
        proc, port = start_gateway(work, name, mock_port, workers, env)
        procs.insert(0, proc)
        urls[name] = f"http://127.0.0.1:{port}/v1/chat/completions"
        pids[name] = descendants(proc.pid)
    body = work / "telemetry.json"
    body.write_bytes(request_body("gpt-4o-mini"))
    runs: dict[str, list[WrkResult]] = {name: [] for name in urls}
    cpu = {name: 0.0 for name in urls}
    for url in urls.values():
        check_reply(url, body.read_bytes(), "gpt-4o-mini")
        wrk(url, body, args.connections, args.warmup)
    for i in range(args.runs):
        for name, url in urls.items():
            cpu0 = cpu_seconds(pids[name])
            r = wrk(url, body, args.connections, args.duration)
            cpu[name] += cpu_seconds(pids[name]) - cpu0
            runs[name].append(r)
            print(f"bench: {name} run {i + 1}/{args.runs}: {r.rps:.0f} req/s, p50 {r.p50_ms:.2f} ms, "
                  f"errors {r.errors}", flush=True)
    med = {name: sorted(rs, key=lambda r: r.rps)[len(rs) // 2] for name, rs in runs.items()}
    unloaded = {name: wrk(url, body, 1, args.unloaded, threads=1) for name, url in urls.items()}
    on, off = med["telemetry-on"], med["telemetry-off"]
    errors = sum(r.errors for rs in runs.values() for r in rs)
    added = unloaded["telemetry-on"].p50_ms - unloaded["telemetry-off"].p50_ms
    # CPU per request of the gateway's processes (Envoy, workers, rate limit): on a shared machine
    # the steadier figure; its inverse ratio is the throughput ratio on a machine of its own.
    us = {name: cpu[name] / max(1, sum(r.requests for r in runs[name])) * 1e6 for name in urls}
    return (f"bench: telemetry on/off (traced {args.trace_ratio:.0%}): rps_ratio={on.rps / off.rps:.2f} "
            f"p50_added_ms={added:.2f} cpu_ratio={us['telemetry-off'] / us['telemetry-on']:.2f} "
            f"cpu_us_per_req={us['telemetry-on']:.0f}/{us['telemetry-off']:.0f} "
            f"(on: {on.rps:.0f} req/s, 1-conn p50 {unloaded['telemetry-on'].p50_ms:.2f} ms; "
            f"off: {off.rps:.0f} req/s, 1-conn p50 {unloaded['telemetry-off'].p50_ms:.2f} ms"
            f"{f'; {errors} errors' if errors else ''})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=20, help="seconds per timed run (default 20)")
    ap.add_argument("--warmup", type=float, default=3, help="seconds of warm-up per scenario (default 3)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per scenario; the median is reported")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    ap.add_argument("--unloaded", type=float, default=5, help="seconds of the 1-connection run (default 5)")
    ap.add_argument("--workers", type=int, default=0, help="ext_proc workers (default: one per core)")
    ap.add_argument("--no-telemetry", action="store_true", help="skip the telemetry on/off comparison")
    ap.add_argument("--trace-ratio", type=float, default=1.0,
                    help="share of requests traced in the telemetry 'on' instance (default 1: every request)")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        print("bench: wrk is not installed (make bench installs it with apt-get)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="interlock-bench-"))
    envoy = envoy_binary()
    mock_port, mock_admin, plain_port, plain_admin, gw_port, gw_admin = (free_port() for _ in range(6))
    workers = args.workers or os.cpu_count() or 1
    extproc_base = free_port_run(workers)
    (work / "mock.yaml").write_text(yaml.safe_dump(mock_upstream_config(mock_port, mock_admin)))
    (work / "plain.yaml").write_text(yaml.safe_dump(plain_envoy_config(plain_port, plain_admin, mock_port)))
    (work / "gateway.yaml").write_text(yaml.safe_dump(
        interlock_config(gw_port, gw_admin, extproc_base, mock_port, workers)))
    procs: list[subprocess.Popen[bytes]] = []
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

        scenarios = {
            "envoy": (f"http://127.0.0.1:{plain_port}/v1/chat/completions", "gpt-4o-mini", "gpt-4o-mini"),
            "openai": (f"http://127.0.0.1:{gw_port}/v1/chat/completions", "gpt-4o-mini", "gpt-4o-mini"),
            "anthropic": (f"http://127.0.0.1:{gw_port}/v1/chat/completions", "claude-haiku-4-5", "claude-haiku"),
        }
        bodies = {}
        for name, (url, model, prefix) in scenarios.items():
            bodies[name] = work / f"{name}.json"
            bodies[name].write_bytes(request_body(model))
            check_reply(url, bodies[name].read_bytes(), prefix)
        print("bench: every scenario answers a valid OpenAI chat completion", flush=True)

        gw_pids = descendants(gateway.pid)
        plain_pid = procs[1].pid
        results: dict[str, dict[str, float]] = {}
        for name, (url, _, _) in scenarios.items():
            pids = [plain_pid] if name == "envoy" else gw_pids
            wrk(url, bodies[name], args.connections, args.warmup)
            runs = []
            for i in range(args.runs):
                cpu0 = cpu_seconds(pids)
                r = wrk(url, bodies[name], args.connections, args.duration)
                cpu = cpu_seconds(pids) - cpu0
                runs.append((r, cpu))
                print(f"bench: {name} run {i + 1}/{args.runs}: {r.rps:.0f} req/s, p50 {r.p50_ms:.2f} ms, "
                      f"p99 {r.p99_ms:.2f} ms, errors {r.errors}", flush=True)
            runs.sort(key=lambda x: x[0].rps)
            med, cpu = runs[len(runs) // 2]
            unloaded = wrk(url, bodies[name], 1, args.unloaded, threads=1)
            results[name] = {"rps": med.rps, "p50": med.p50_ms, "p99": med.p99_ms,
                             "cpu_us": cpu / max(1, med.requests) * 1e6,
                             "errors": sum(r.errors for r, _ in runs), "unloaded_p50": unloaded.p50_ms,
                             "unloaded_p99": unloaded.p99_ms}
        print()
        print(f"{'scenario':<28}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU µs/req':>12}"
              f"{'1-conn p50':>12}{'errors':>8}")
        labels = {"envoy": "plain Envoy", "openai": "Interlock OpenAI→OpenAI",
                  "anthropic": "Interlock OpenAI→Anthropic"}
        for name, r in results.items():
            print(f"{labels[name]:<28}{r['rps']:>9.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}{r['cpu_us']:>12.0f}"
                  f"{r['unloaded_p50']:>12.2f}{r['errors']:>8.0f}")
        telemetry = "" if args.no_telemetry else telemetry_comparison(args, work, mock_port, workers, procs)
        added = results["anthropic"]["unloaded_p50"] - results["envoy"]["unloaded_p50"]
        print(f"\n{args.connections} connections, median of {args.runs} x {args.duration:.0f} s; "
              f"1-conn p50 over {args.unloaded:.0f} s; {workers} ext_proc workers; {os.cpu_count()} cores")
        if telemetry:
            print(telemetry)
        print(f"bench: envoy_rps={results['envoy']['rps']:.0f} openai_rps={results['openai']['rps']:.0f} "
              f"anthropic_rps={results['anthropic']['rps']:.0f} anthropic_p50_added_ms={added:.1f}")
        return 1 if any(r["errors"] for r in results.values()) or "errors" in telemetry else 0
    finally:
        for p in reversed(procs):
            stop(p, signal.SIGINT if p is procs[-1] else signal.SIGTERM)


if __name__ == "__main__":
    sys.exit(main())
