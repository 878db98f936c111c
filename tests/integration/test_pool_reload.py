"""A pool added by a config edit serves within seconds, without a restart: Envoy gets its cluster,
the workers the new config, and the pool scraper (SIGHUP) starts scraping its servers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import openai
import pytest
import yaml

from tests.conftest import free_port
from tests.integration.conftest import TENANT_KEY, sha, start_gateway
from tests.integration.pool_standin import StandIns
from tests.integration.test_reload import write_atomically


@pytest.fixture
def servers() -> Iterator[StandIns]:
    s = StandIns(2, free_port(), first=121)
    try:
        yield s
    finally:
        s.close()


def test_a_pool_added_by_reload_serves(servers: StandIns, tmp_path: Path) -> None:
    config = {
        "providers": [{"name": "first", "type": "pool", "endpoints": [servers.servers[0].address]}],
        "models": [{"name": "llama", "provider": "first"}],
        "tenants": [{"name": "it", "api_key_sha256": [sha(TENANT_KEY)], "models": ["*"]}],
    }
    (tmp_path / "gw").mkdir()
    gw = start_gateway(SimpleNamespace(port=free_port()), tmp_path / "gw", config=config)  # type: ignore[arg-type]
    client = openai.OpenAI(base_url=gw.base_url, api_key=TENANT_KEY, max_retries=0, timeout=10)
    try:
        doc = yaml.safe_load(gw.config_path.read_text())
        doc["providers"].append({"name": "second", "type": "pool", "endpoints": [servers.servers[1].address]})
        doc["models"].append({"name": "llama-2", "provider": "second"})
        write_atomically(Path(gw.config_path), doc)
        deadline = time.monotonic() + 20
        answer = ""
        while time.monotonic() < deadline:
            try:
                r = client.chat.completions.create(model="llama-2", messages=[{"role": "user", "content": "hi"}])
                answer = r.choices[0].message.content or ""
                break
            except openai.APIStatusError:  # 404 until the workers have it, 503 until the scraper has
                time.sleep(0.2)
        assert answer == f"served by {servers.servers[1].address}"
        assert "pools reloaded: first, second" in gw.process.text()
    finally:
        gw.process.stop()
