"""A reload that changes a setting the running gateway cannot take is refused as a failure: the
last good config keeps serving and the workers are not told; live settings reload."""

from __future__ import annotations

from pathlib import Path

import pytest

from extproc.cmd.reload import Reloader
from extproc.config import load_file

BASE = """
providers: [{name: openai, type: openai, api_key_env: OPENAI_API_KEY}]
models: [{name: gpt-4o-mini, provider: openai}]
tenants: [{name: t, api_key_sha256: ["%s"]}]
""" % ("0" * 64)


@pytest.mark.parametrize(("edit", "refused"), [
    ("rate_limit: {port: 10040}", "rate_limit"),
    ("rate_limit: {store: redis}", "rate_limit"),
    ("metrics: {port: 9465}", "metrics"),
    ("admission: {success_rate_threshold: 0.3}", "admission.success_rate_threshold"),
    ("admission: {max_heap_bytes: 1073741824}", "admission.max_heap_bytes"),
    ("extproc: {workers: 3}", "extproc"),
    ("admission: {queue_timeout: 2s}", None),
    ("tenants: [{name: t, api_key_sha256: ['%s'], limits: [{unit: requests, per: minute, amount: 5}]}]" % ("0" * 64),
     None),
])
def test_settings_a_running_gateway_cannot_take_are_refused(
        edit: str, refused: str | None, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source, active = tmp_path / "gw.yaml", tmp_path / "active.yaml"
    source.write_text(BASE)
    active.write_text(BASE)
    told = []
    reloader = Reloader(source, active, load_file(str(source)), lambda: told.append(1))
    key = edit.split(":", 1)[0]
    source.write_text("\n".join(line for line in BASE.splitlines() if not line.startswith(key + ":")) + "\n" + edit)
    reloader.poll()
    if refused is None:
        assert (reloader.stats.successes, reloader.stats.failures, told) == (1, 0, [1])
        assert active.read_text() == source.read_text()
    else:
        assert (reloader.stats.successes, reloader.stats.failures, told) == (0, 1, [])
        assert active.read_text() == BASE
        assert f"{refused}: changing it needs a restart" in caplog.text


TWO = """
providers:
  - {name: a, type: openai, api_key_env: OPENAI_API_KEY}
  - {name: b, type: anthropic, api_key_env: ANTHROPIC_API_KEY}
models: [{name: ma, provider: a}, {name: mb, provider: b}]
routes: [{name: r, candidates: [%s]}]
tenants: [{name: t, api_key_sha256: ["%s"]}]
"""


def aggregates(envoy_dir: Path) -> set[str]:
    import yaml
    doc = yaml.safe_load((envoy_dir / "cds.yaml").read_text())
    return {c["name"] for c in doc["resources"] if c["name"].startswith("fallback~")}


def test_fallback_orders_a_reload_drops_stay_until_the_grace_period_ends(tmp_path: Path) -> None:
    """Reordering a route's candidates changes its fallback orders; a worker still on the old config
    names the old ones until it switches, so they stay in Envoy for the grace period (like the
    clusters of a removed provider), then go."""
    source, active, envoy = tmp_path / "gw.yaml", tmp_path / "active.yaml", tmp_path / "envoy"
    envoy.mkdir()
    before, after = TWO % ("ma, mb", "0" * 64), TWO % ("mb", "0" * 64)
    source.write_text(before)
    active.write_text(before)
    now = [0.0]
    reloader = Reloader(source, active, load_file(str(source)), lambda: None, envoy_dir=envoy, grace=60.0,
                        clock=lambda: now[0])
    source.write_text(after)  # the route now has one provider: no fallback orders at all
    reloader.poll()
    assert reloader.stats.successes == 1
    assert aggregates(envoy) == {"fallback~a~b", "fallback~b~a"}  # kept for workers not yet switched
    now[0] = 61.0
    reloader.poll()
    assert aggregates(envoy) == set()
