"""The rate-limit process (`python -m extproc.cmd.cli ratelimit`) as Envoy's rate-limit filter sees it:
real processes driven over gRPC with the descriptor scheme of `extproc.limits.scheme`, a private
redis-server, the process's log and its `/metrics`, and SIGHUP."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import grpc
import pytest
import yaml
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from redis import Redis

from extproc.limits import Reservation
from tests.component.redis_server import RedisServer
from tests.conftest import free_port, rls_request

ROOT = Path(__file__).resolve().parents[2]
OK, OVER = rls_pb2.RateLimitResponse.OK, rls_pb2.RateLimitResponse.OVER_LIMIT
ENTRIES = {"tenant": "acme", "model": "m", "priority": "default", "unit": "tokens"}
MARKER = "reservation_tokens"


def write_config(path: Path, *, port: int, tokens_per: str, amount: int, store: str = "memory",
                 redis_url: str = "redis://127.0.0.1:6379/0", failure_mode: str = "open") -> None:
    """A minimal gateway config whose one tenant, `acme`, has one tokens limit."""
    path.write_text(yaml.safe_dump({
        "providers": [{"name": "p", "type": "openai", "endpoint": "http://127.0.0.1:9", "api_key_env": "NO_KEY"}],
        "models": [{"name": "m", "provider": "p"}],
        "tenants": [{"name": "acme", "api_key_sha256": ["0" * 64],
                     "limits": [{"unit": "tokens", "per": tokens_per, "amount": amount}]}],
        "rate_limit": {"port": port, "store": store, "redis_url": redis_url, "failure_mode": failure_mode,
                       "timeout": "500ms"},
    }))


class RateLimitProcess:
    """`python -m extproc.cmd.cli ratelimit -c CONFIG --port P --metrics-port M`, its output in a log
    file; stopped by its PID."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.port = port
        self.metrics_port = free_port()
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "extproc.cmd.cli", "ratelimit", "-c", str(config), "--port", str(port),
             "--metrics-port", str(self.metrics_port)],
            stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not logged within {timeout}s; log:\n{self.text()[-4000:]}")
            time.sleep(0.05)

    def metrics(self) -> dict[str, float]:
        """`/metrics` as {series (name and labels): value}."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
            body = r.read().decode()
        out = {}
        for line in body.splitlines():
            if line and not line.startswith("#"):
                series, value = line.rsplit(" ", 1)
                out[series] = float(value)
        return out

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def admission(tokens: int) -> rls_pb2.RateLimitRequest:
    """The filter's call before the request goes upstream: reserve `tokens`."""
    return rls_request((ENTRIES, tokens))


def stream_done(marker: str, actual: int) -> rls_pb2.RateLimitRequest:
    """The filter's `apply_on_stream_done` call: true the reservation up to `actual`."""
    return rls_request(({**ENTRIES, "reservation": marker, "actual": str(actual)}, None))


def headers(resp: rls_pb2.RateLimitResponse) -> dict[str, str]:
    return {h.key: h.value for h in resp.response_headers_to_add}


def call(port: int, req: rls_pb2.RateLimitRequest) -> rls_pb2.RateLimitResponse:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        resp: rls_pb2.RateLimitResponse = rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(req, timeout=5)
        return resp


def counters(p: RateLimitProcess) -> dict[str, float]:
    """The process's counters and gauges, without the `interlock_ratelimit_` prefix."""
    return {k.removeprefix("interlock_ratelimit_"): v for k, v in p.metrics().items()}


# --- three processes, one Redis budget --------------------------------------------------------


def test_three_processes_share_one_token_budget_over_grpc(tmp_path: Path) -> None:
    """3 rate-limit processes with `store: redis` share a 30 000 tokens/s limit. A client offers
    each process 150 admissions/s of 400 tokens (6× the limit in reservations) for three
    one-second windows, and trues every admitted request up 20 ms later to an actual of 200–400
    tokens, as Envoy's stream-done call does. Per window, the accepted actual tokens are within
    5 % of the limit and never above it; every process decided some calls, and /metrics counts
    exactly the calls made, with no store failure."""
    limit, windows, rate, estimate, hold_s = 30_000, 3, 150, 400, 0.02
    redis = RedisServer(free_port())
    procs: list[RateLimitProcess] = []
    try:
        for i in range(3):
            port = free_port()
            config = tmp_path / f"rl{i}.yaml"
            write_config(config, port=port, tokens_per="second", amount=limit, store="redis", redis_url=redis.url)
            procs.append(RateLimitProcess(config, port, tmp_path / f"rl{i}.log"))
        for p in procs:
            p.wait_for("rate limit service on")
        start = int(time.time()) + 1
        accepted, refused, sent = asyncio.run(asyncio.wait_for(
            offer_load([p.port for p in procs], start, windows, rate, estimate, hold_s), 30))

        per_window: Counter[int] = Counter()
        for window, actual in accepted:
            assert start <= window <= start + windows, (window, start)  # the last calls may land after
            per_window[window] += actual
        assert max(per_window.values()) <= limit, dict(per_window)
        for window in range(start, start + windows):
            assert 0.95 * limit <= per_window[window], (window - start, dict(per_window))
            assert refused[window] > 0, "the offered load did not exceed the limit"
        for i, p in enumerate(procs):
            m = counters(p)
            assert m['info{store="redis",failure_mode="open"}'] == 1
            assert m["calls_total"] == sent[i]["admissions"] + sent[i]["true-ups"]
            assert m["over_limit_total"] == sent[i]["refused"] > 0
            assert sent[i]["true-ups"] > 0
            assert (m["store_failures_total"], m["degraded_total"], m["errors_total"], m["malformed_total"]) == (0,) * 4
            assert m["store_healthy"] == 1
        for p in procs:
            assert p.stop() == 0, p.text()[-2000:]
            assert "rate limit service stopped: calls=" in p.text()
    finally:
        for p in procs:
            p.stop()
        redis.stop()


async def offer_load(ports: list[int], start: int, windows: int, rate: int, estimate: int,
                     hold_s: float) -> tuple[list[tuple[int, int]], Counter[int], list[Counter[str]]]:
    """Offer `rate` admissions/s to each port from `start` for `windows` seconds, round robin;
    true every admitted one up after `hold_s`. Returns (window of the reservation, actual) per
    accepted request, refusals per second, and calls per process."""
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{p}") for p in ports]
    stubs = [rls_pb2_grpc.RateLimitServiceStub(c) for c in channels]
    rng = random.Random(7)
    accepted: list[tuple[int, int]] = []
    refused: Counter[int] = Counter()
    sent: list[Counter[str]] = [Counter() for _ in ports]

    async def request(i: int, actual: int) -> None:
        sent[i]["admissions"] += 1
        resp = await stubs[i].ShouldRateLimit(admission(estimate), timeout=5)
        if resp.overall_code != OK:
            sent[i]["refused"] += 1
            refused[int(time.time())] += 1
            return
        marker = resp.dynamic_metadata[MARKER]
        await asyncio.sleep(hold_s)  # the response streams
        sent[i]["true-ups"] += 1
        done = await stubs[i].ShouldRateLimit(stream_done(marker, actual), timeout=5)
        assert done.overall_code == OK
        accepted.append((int(Reservation.parse(marker).at), actual))

    try:
        for c in channels:
            await asyncio.wait_for(c.channel_ready(), 10)
        total = rate * len(ports)
        tasks = []
        for k in range(total * windows):
            delay = start + k / total - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(request(k % len(ports), rng.randint(estimate // 2, estimate))))
        await asyncio.gather(*tasks)
    finally:
        for c in channels:
            await c.close()
    return accepted, refused, sent


# --- Redis unreachable ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_redis_unreachable_applies_the_failure_mode_logged_and_counted_then_recovers(
        tmp_path: Path, mode: str) -> None:
    """With nothing listening at `redis_url`, every admission gets the failure mode (open: OK
    without a reservation marker; closed: OVER_LIMIT with only `retry-after: 1`); the first
    failure is logged once and every one is counted. Once Redis listens on that port, calls are
    decided by Redis again (markers, limit headers, counts in Redis), which is logged, and the
    health gauge returns to 1."""
    redis_port, port = free_port(), free_port()
    config = tmp_path / "rl.yaml"
    write_config(config, port=port, tokens_per="minute", amount=1000, store="redis",
                 redis_url=f"redis://127.0.0.1:{redis_port}/0", failure_mode=mode)
    p = RateLimitProcess(config, port, tmp_path / "rl.log")
    redis: RedisServer | None = None
    try:
        p.wait_for("rate limit service on")
        for _ in range(2):
            resp = call(port, admission(100))
            if mode == "open":
                assert resp.overall_code == OK and headers(resp) == {} and MARKER not in resp.dynamic_metadata
            else:
                assert resp.overall_code == OVER and headers(resp) == {"retry-after": "1"}
        p.wait_for(f"; failing {mode} until it answers again")
        assert p.text().count("redis reserve failed (") == 1
        m = counters(p)
        assert m[f'info{{store="redis",failure_mode="{mode}"}}'] == 1
        assert (m["calls_total"], m["degraded_total"], m["store_failures_total"], m["over_limit_total"]) == (2, 2, 2, 0)
        assert m["store_healthy"] == 0

        redis = RedisServer(redis_port)
        resp = call(port, admission(100))
        assert resp.overall_code == OK and MARKER in resp.dynamic_metadata
        assert headers(resp)["x-ratelimit-remaining-tokens"] == "900"
        p.wait_for("redis answers again (2 failed operations so far)")
        with Redis.from_url(redis.url) as raw:
            assert [int(raw.get(k) or 0) for k in raw.keys("interlock:rl:*")] == [100]
        resp = call(port, admission(1500))
        assert resp.overall_code == OVER
        assert headers(resp)["x-ratelimit-limit-tokens"] == "1000" and int(headers(resp)["retry-after"]) >= 1
        m = counters(p)
        assert (m["calls_total"], m["degraded_total"], m["store_failures_total"], m["over_limit_total"]) == (4, 2, 2, 1)
        assert m["store_healthy"] == 1
    finally:
        p.stop()
        if redis is not None:
            redis.stop()


# --- SIGHUP -----------------------------------------------------------------------------------


def test_sighup_reloads_the_limits_and_a_bad_config_keeps_them(tmp_path: Path) -> None:
    """A tokens limit of 1000/min, spent by a 1000-token reservation, refuses a 500-token one (a
    reservation is shrunk to what the window has left, never to nothing). The config now says
    2000, SIGHUP: the same reservation is allowed under the new limit. A config that does not
    load, SIGHUP: logged, counted, and the 2000 limit stays."""
    port = free_port()
    config = tmp_path / "rl.yaml"
    write_config(config, port=port, tokens_per="minute", amount=1000)
    p = RateLimitProcess(config, port, tmp_path / "rl.log")
    try:
        p.wait_for("rate limit service on")
        assert call(port, admission(1000)).overall_code == OK
        resp = call(port, admission(500))
        assert resp.overall_code == OVER and headers(resp)["x-ratelimit-limit-tokens"] == "1000"

        write_config(config, port=port, tokens_per="minute", amount=2000)
        p.proc.send_signal(signal.SIGHUP)
        p.wait_for("rate limits reloaded: 1 limits")
        resp = call(port, admission(500))
        assert resp.overall_code == OK and MARKER in resp.dynamic_metadata
        assert headers(resp)["x-ratelimit-limit-tokens"] == "2000"
        m = counters(p)
        assert (m['reloads_total{result="success"}'], m['reloads_total{result="failure"}'], m["limits"]) == (1, 0, 1)

        config.write_text(config.read_text().replace("amount: 2000", "amount: -5"))
        p.proc.send_signal(signal.SIGHUP)
        p.wait_for("rate limit reload failed, keeping 1 limits: tenants[0].limits[0].amount")
        resp = call(port, admission(1))
        assert headers(resp)["x-ratelimit-limit-tokens"] == "2000"
        m = counters(p)
        assert (m['reloads_total{result="success"}'], m['reloads_total{result="failure"}'], m["limits"]) == (1, 1, 1)
        assert p.stop() == 0
    finally:
        p.stop()



# --- the workers' true-ups -----------------------------------------------------------------------


def test_a_workers_true_up_datagram_gives_back_what_a_request_did_not_use(tmp_path: Path) -> None:
    """The admission names its reservation in a header (what the router stage reads); the worker's
    datagram to the same port number trues it up, as Envoy's stream-done call did; a line that is
    not in the format is counted, not applied."""
    from extproc.limits import trueup

    port = free_port()
    config = tmp_path / "rl.yaml"
    write_config(config, port=port, tokens_per="hour", amount=10_000)
    p = RateLimitProcess(config, port, tmp_path / "rl.log")
    try:
        p.wait_for("rate limit service on")
        first = call(port, admission(8000))
        assert first.overall_code == OK and headers(first)["x-ratelimit-remaining-tokens"] == "2000"
        markers = trueup.parse_header(headers(first)[trueup.RESERVATION_HEADER])
        assert set(markers) == {"tokens"}
        sender = trueup.Sender("127.0.0.1", port)
        sender.send([trueup.line(ENTRIES, "tokens", markers["tokens"], "1200"), b"not\ta\ttrue-up\n"])
        sender.close()

        deadline = time.monotonic() + 5
        while counters(p)["trueups_total"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        m = counters(p)
        assert m["trueups_total"] == 1 and m["malformed_total"] == 1
        time.sleep(0.1)  # the settlement runs in the background, right after the datagram
        assert headers(call(port, admission(1)))["x-ratelimit-remaining-tokens"] == str(10_000 - 1200 - 1)
        assert (sender.sent, sender.dropped) == (2, 0)
    finally:
        assert p.stop() == 0, p.text()[-2000:]
