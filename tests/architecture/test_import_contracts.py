"""The architecture rules (import-linter contracts in pyproject.toml, run by `make lint`) hold on the
tree, and each kind of forbidden import added to a copy of the tree breaks the contract that names it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
PACKAGES = ("extproc", "routing", "simulator")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml"), "--no-cache"], cwd=tree,
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tree")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, out / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", out / "pyproject.toml")
    return out


def test_the_tree_keeps_every_contract(tree: Path) -> None:
    result = _lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "line", "contract"), [
    ("routing/pricing.py", "import extproc.errors", "routing is pure"),
    ("extproc/translate/sse.py", "import extproc.stages.router", "translation is sans-IO"),
    ("extproc/translate/sse.py", "import routing", "translation is sans-IO"),
    ("extproc/stages/metering.py", "import extproc.envoyconf.render", "stages never import"),
    ("extproc/stages/metering.py", "import simulator", "only the CLI may import the simulator"),
    ("extproc/h2grpc/server.py", "import extproc.errors", "the transport (h2grpc)"),
    ("extproc/limits/model.py", "import extproc.config", "rate limits never import"),
    ("extproc/config/reader.py", "import extproc.runtime", "config never imports"),
    ("extproc/cmd/run.py", "import simulator", "only the CLI may import the simulator"),
    ("extproc/errors.py", "import openai", "the product never imports grpcio or the provider SDKs"),
    # the one exception (extproc.auth.aws, botocore's credential providers) covers that module only
    ("extproc/auth/credentials.py", "import botocore", "the product never imports grpcio or the provider SDKs"),
    ("simulator/textgen.py", "import extproc.errors", "the simulator is an independent oracle"),
    ("extproc/telemetry/names.py", "import extproc.stages.router", "telemetry is called by the request path"),
    ("extproc/telemetry/tracing.py", "from extproc.h2grpc import Server", "telemetry is called by the request path"),
])
def test_a_forbidden_import_breaks_its_contract(tree: Path, module: str, line: str, contract: str) -> None:
    path = tree / module
    original = path.read_text()
    path.write_text(original + f"\n{line}  # injected by the test\n")
    try:
        result = _lint(tree)
    finally:
        path.write_text(original)
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout
