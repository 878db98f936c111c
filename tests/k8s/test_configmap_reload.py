"""The config watcher (extproc.cmd.reload) sees a ConfigMap update the way the kubelet writes it:
the mounted `gateway.yaml` is a symlink into `..data`, which is swapped to a new timestamped
directory; the file itself is never written. The watcher hashes the content read through the
path, so it follows the swap (no change was needed in reload.py)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from extproc.cmd.reload import Reloader
from extproc.config import load_text
from tests.k8s.pod import atomic_write

BASE = {"listen": {"port": 10000}, "providers": [{"name": "openai", "type": "openai", "api_key_env": "K"}],
        "models": [{"name": "a", "provider": "openai"}], "tenants": []}


def test_a_kubelet_style_swap_is_reloaded_once(tmp_path: Path) -> None:
    volume = tmp_path / "config"
    atomic_write(volume, {"gateway.yaml": yaml.safe_dump(BASE)})
    source = volume / "gateway.yaml"
    before = os.readlink(volume / "..data")
    told: list[int] = []
    reloader = Reloader(source, tmp_path / "work" / "active.yaml", load_text(source.read_text(), "g"),
                        lambda: told.append(1))
    reloader.poll()
    assert reloader.stats.successes == 0
    new = {**BASE, "models": [*BASE["models"], {"name": "b", "provider": "openai"}]}
    atomic_write(volume, {"gateway.yaml": yaml.safe_dump(new)})
    assert os.readlink(volume / "..data") != before and source.is_symlink()
    reloader.poll()
    reloader.poll()
    assert (reloader.stats.successes, reloader.stats.failures, told) == (1, 0, [1])
    assert [m.name for m in reloader.current.models] == ["a", "b"]
    assert yaml.safe_load((tmp_path / "work" / "active.yaml").read_text()) == new


def test_an_invalid_update_keeps_the_last_good_config(tmp_path: Path) -> None:
    volume = tmp_path / "config"
    atomic_write(volume, {"gateway.yaml": yaml.safe_dump(BASE)})
    source = volume / "gateway.yaml"
    reloader = Reloader(source, tmp_path / "work" / "active.yaml", load_text(source.read_text(), "g"), lambda: None)
    atomic_write(volume, {"gateway.yaml": "providers: 3\n"})
    reloader.poll()
    assert (reloader.stats.successes, reloader.stats.failures) == (0, 1)
    assert [m.name for m in reloader.current.models] == ["a"]
