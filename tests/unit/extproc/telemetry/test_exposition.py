"""The pod's one scrape: merging processes' Prometheus texts, the Unix-socket hand-over, and
which sources answered."""

from __future__ import annotations

import asyncio

from extproc.telemetry import exposition

WORKER = """# HELP interlock_requests_total Requests.
# TYPE interlock_requests_total counter
interlock_requests_total{interlock_tenant="a"} 3.0
# HELP gen_ai_client_token_usage Tokens.
# TYPE gen_ai_client_token_usage histogram
gen_ai_client_token_usage_bucket{le="1.0"} 0.0
gen_ai_client_token_usage_bucket{le="+Inf"} 2.0
gen_ai_client_token_usage_count 2.0
gen_ai_client_token_usage_sum 17.0
"""


def test_merge_keeps_one_family_header_and_labels_each_process() -> None:
    text = exposition.merge([("worker-0", WORKER), ("worker-1", WORKER.replace("3.0", "4.0")), ("gone", None)])
    lines = text.splitlines()
    assert lines.count("# TYPE interlock_requests_total counter") == 1
    assert lines.count("# TYPE gen_ai_client_token_usage histogram") == 1
    i = lines.index("# TYPE interlock_requests_total counter")
    assert lines[i + 1:i + 3] == ['interlock_requests_total{process="worker-0",interlock_tenant="a"} 3.0',
                                  'interlock_requests_total{process="worker-1",interlock_tenant="a"} 4.0']
    assert 'gen_ai_client_token_usage_count{process="worker-1"} 2.0' in lines
    assert 'gen_ai_client_token_usage_bucket{process="worker-0",le="+Inf"} 2.0' in lines
    j = lines.index("# TYPE gen_ai_client_token_usage histogram")
    assert all(line.startswith("gen_ai_client_token_usage") for line in lines[j + 1:j + 9])


def test_merge_without_a_name_adds_no_label_and_keeps_empty_braces() -> None:
    assert exposition.merge([("", "# TYPE envoy_server_live gauge\nenvoy_server_live{} 1\n")]) == (
        "# TYPE envoy_server_live gauge\nenvoy_server_live{} 1\n")
    assert exposition.merge([("p", "x 1\n")]) == 'x{process="p"} 1\n'


def test_pod_text_says_which_sources_answered() -> None:
    texts = {"s0": WORKER, "s1": None}
    text = exposition.pod_text("own_metric 1\n", [("worker-0", "s0"), ("worker-1", "s1")], "http://admin",
                               get=texts.get, get_url=lambda url: "# TYPE envoy_x counter\nenvoy_x 5\n")
    assert 'interlock_scrape_source_up{source="worker-0"} 1' in text
    assert 'interlock_scrape_source_up{source="worker-1"} 0' in text
    assert 'interlock_scrape_source_up{source="envoy"} 1' in text
    assert "own_metric 1" in text and "envoy_x 5" in text
    assert 'interlock_requests_total{process="worker-0",interlock_tenant="a"} 3.0' in text


def test_envoy_url_filters_the_stats_that_matter() -> None:
    url = exposition.envoy_url("http://127.0.0.1:9901")
    assert url.startswith("http://127.0.0.1:9901/stats/prometheus?filter=")
    for stat in ("cluster.provider_openai.upstream_rq_retry", "cluster.x.outlier_detection.ejections_active",
                 "cluster.x.circuit_breakers.default.rq_open", "http.interlock.ext_proc.streams_failed",
                 "cluster.x.membership_healthy"):
        assert __import__("re").match(exposition.ENVOY_FILTER, stat), stat
    assert not __import__("re").match(exposition.ENVOY_FILTER, "cluster.x.upstream_cx_tx_bytes_buffered")


def test_socket_names_are_per_gateway_and_process(tmp_path: object) -> None:
    a = exposition.socket_name("/tmp/gw-a", "worker-0")
    assert a.startswith("\0interlock-") and a.endswith("-worker-0")
    assert a != exposition.socket_name("/tmp/gw-b", "worker-0") != exposition.socket_name("/tmp/gw-a", "worker-1")
    assert [label for label, _ in exposition.scrape_sources("/tmp/gw-a", 2)] == ["worker-0", "worker-1", "ratelimit"]


def test_serve_and_fetch_over_an_abstract_unix_socket() -> None:
    name = exposition.socket_name(f"/tmp/test-exposition-{id(object())}", "worker-0")

    async def main() -> tuple[str | None, str | None]:
        server = await exposition.serve_text(name, lambda: "x 1\n" * 10000)
        loop = asyncio.get_running_loop()
        got = await loop.run_in_executor(None, exposition.fetch, name)
        await exposition.close(server)
        gone = await loop.run_in_executor(None, exposition.fetch, name, 0.5)
        return got, gone

    got, gone = asyncio.run(main())
    assert got == "x 1\n" * 10000
    assert gone is None
