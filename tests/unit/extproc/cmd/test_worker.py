"""`extproc.cmd.worker`: on SIGHUP a worker compiles the config as the generation the supervisor
loaded and logs it with the one it replaces; a worker started after reloads starts at the
supervisor's generation, not at its own count."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from extproc.cmd.reload import Reloader, generation_file, read_generation
from extproc.cmd.worker import RuntimeSlot, reloader
from extproc.config import load_file
from extproc.runtime import compile_runtime
from extproc.translate.registry import default_registry

BASE = """
providers: [{name: openai, type: openai, api_key_env: OPENAI_API_KEY}]
models: [{name: gpt-4o-mini, provider: openai}]
tenants: [{name: t, api_key_sha256: ["%s"]}]
""" % ("0" * 64)


def test_workers_log_the_generation_the_supervisor_loaded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "interlock.worker")
    source, active = tmp_path / "gw.yaml", tmp_path / "active.yaml"
    source.write_text(BASE)
    active.write_text(BASE)
    registry = default_registry()
    slot = RuntimeSlot(compile_runtime(load_file(str(active)), registry, generation=read_generation(active)))
    hup = reloader(slot, str(active), registry)
    sup = Reloader(source, active, load_file(str(source)), hup)
    assert (slot.current.generation, sup.stats.generation) == (1, 1)
    for n in (2, 3):
        source.write_text(BASE.replace("models: [", f"models: [{{name: m{n}, provider: openai}}, "))
        sup.poll()
        assert (slot.current.generation, sup.stats.generation) == (n, n)
        assert f"config generation {n} loaded (was {n - 1})" in caplog.text
    # A worker restarted now starts where the pod is.
    assert read_generation(active) == 3
    assert compile_runtime(load_file(str(active)), registry, generation=read_generation(active)).generation == 3


def test_a_work_directory_used_before_starts_at_generation_1(tmp_path: Path) -> None:
    source, active = tmp_path / "gw.yaml", tmp_path / "active.yaml"
    source.write_text(BASE)
    active.write_text(BASE)
    generation_file(active).write_text("7\n")  # an earlier run's
    Reloader(source, active, load_file(str(source)), lambda: None)
    assert read_generation(active) == 1


def test_a_bad_config_keeps_the_generation(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    active = tmp_path / "active.yaml"
    active.write_text(BASE)
    registry = default_registry()
    slot = RuntimeSlot(compile_runtime(load_file(str(active)), registry, generation=1))
    active.write_text("models: [")
    reloader(slot, str(active), registry)()
    assert slot.current.generation == 1 and "reload failed, keeping generation 1" in caplog.text
