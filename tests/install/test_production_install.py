"""A production install works on its own: `pip install <repo>` (no extras) into a fresh venv.

The runtime dependencies in pyproject.toml must be exactly what the product (extproc, routing)
imports: every product module imports without the dev venv, without the `simulator`/`test` extras
(the provider SDKs are absent, so this is a real check), every translator pair translates a
request, a response and a stream, and the `interlock` console script runs. The checks run in the
new venv's python through tests/install/probe.py; golden files are read here and passed to it.

Needs PyPI (or the configured index) for pip; pip's cache is reused. Select with `-m install`.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.install

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
PROBE = Path(__file__).resolve().parent / "probe.py"
# Build byproducts and local state that must not reach (or be written into) the installed tree.
NOT_COPIED = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache")

# Per provider API: the golden case whose target and upstream answers stand for that provider
# (the same upstream answer serves every client API). Streams are SSE, or AWS eventstream for Bedrock.
CHAT = {
    "openai": ("openai-openai/plain", "openai-openai/stream-text"),
    "azure-openai": ("openai-azure-openai/plain", "openai-azure-openai/stream-include-usage"),
    "anthropic": ("openai-anthropic/plain", "openai-anthropic/stream-text"),
    "vertex-anthropic": ("openai-vertex-anthropic/plain", "openai-vertex-anthropic/stream-include-usage"),
    "gemini": ("openai-gemini/plain", "openai-gemini/stream-text"),
    "vertex-gemini": ("openai-vertex-gemini/plain", "openai-vertex-gemini/stream-text"),
    "bedrock": ("openai-bedrock/plain", "openai-bedrock/stream-text"),
}
# Embeddings do not stream. Azure answers as OpenAI does; vertex-gemini is refused (see below).
EMBEDDINGS = {
    "openai": "openai_embeddings-openai/plain",
    "azure-openai": "openai_embeddings-openai/plain",
    "gemini": "openai_embeddings-gemini/single",
    "vertex-gemini": "openai_embeddings-gemini/vertex-rejected",
}
# The other client APIs: per pair, the golden cases (a whole answer, a stream or None) whose client
# request, target and upstream answer the probe replays.
CASES = {
    **{("openai-responses", p): ("plain", "stream-include-usage" if p == "vertex-anthropic" else "stream-text")
       for p in ("openai", "azure-openai", "anthropic", "vertex-anthropic", "gemini", "vertex-gemini", "bedrock")},
    ("openai-completions", "openai"): ("fim-suffix", "stream-plain"),
    ("openai-completions", "azure-openai"): ("fim-suffix", "stream-include-usage"),
    ("openai-completions", "mistral"): ("fim-plain", "fim-stream"),
    **{("anthropic-count-tokens", p): ("simple", None)
       for p in ("anthropic", "vertex-anthropic", "gemini", "vertex-gemini", "bedrock", "openai")},
}
GOLDEN_DIR = {"openai-responses": "openai-responses", "openai-completions": "openai-completions",
              "anthropic-count-tokens": "count-tokens"}
AZURE_OPTIONS = [["api_version", "2024-10-21"]]
# Pairs that refuse every request by design: (client API, provider API, status).
REFUSED = [("openai-embeddings", "vertex-gemini", 400)]


def _env() -> dict[str, str]:
    """The environment for the new venv's processes: nothing pointing back at the dev venv or repo."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _run(args: list[str], cwd: Path, timeout: float, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=cwd, env=_env(), input=stdin, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
    return done


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with the repository installed as a user would: `pip install <root>`; removed
    afterwards (~250 MB)."""
    base = tmp_path_factory.mktemp("production-install")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=NOT_COPIED, symlinks=True)
    env_dir = base / "venv"
    _run([sys.executable, "-m", "venv", str(env_dir)], base, 120)
    python = env_dir / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(source)], base, 600)
    yield env_dir
    shutil.rmtree(base, ignore_errors=True)


def _probe(venv: Path, mode: str, stdin: Any = None) -> dict[str, Any]:
    # -I: neither the current directory nor the probe's own directory (the repo) goes on sys.path.
    done = _run([str(venv / "bin" / "python"), "-I", str(PROBE), mode], venv.parent, 120,
                None if stdin is None else json.dumps(stdin))
    return json.loads(done.stdout)


def test_every_product_module_imports(venv: Path) -> None:
    report = _probe(venv, "imports")
    site = str(venv.resolve())
    assert all(str(Path(f).resolve()).startswith(site) for f in report["files"].values()), report["files"]
    assert not report["failures"], "product modules that do not import in a production install:\n" + "\n".join(
        f"{name}:\n{tb}" for name, tb in report["failures"].items())
    assert {"extproc.server", "extproc.cmd.cli", "extproc.translate.registry", "routing"} <= set(report["modules"])
    # The extras really are absent, so the imports above did not lean on them.
    assert report["importable"] == [], f"extras installed by a plain install: {report['importable']}"
    # grpcio is installed (xds-protos and grpcio-health-checking require it), but never imported.
    assert report["loaded"] == [], f"imported by product modules: {report['loaded']}"


def _golden(case: str, name: str) -> Path:
    return GOLDEN / case / name


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _fixtures() -> dict[str, Any]:
    chat = {}
    for provider, (plain, stream) in CHAT.items():
        streamed = next(p for p in (_golden(stream, "upstream_response.sse"),
                                    _golden(stream, "upstream_response.eventstream")) if p.exists())
        chat[provider] = {"target": json.loads(_golden(plain, "target.json").read_text()),
                          "response": _b64(_golden(plain, "upstream_response.json")), "stream": _b64(streamed)}
    embeddings = {}
    for provider, case in EMBEDDINGS.items():
        target = json.loads(_golden(case, "target.json").read_text())
        if provider == "azure-openai":
            target = {**target, "upstream_model": "embed-small-prod", "options": AZURE_OPTIONS}
        answer = _golden(case, "upstream_response.json")
        embeddings[provider] = {"target": target, "response": _b64(answer) if answer.exists() else None}
    cases = {}
    for (client, provider), (plain, stream) in CASES.items():
        d = GOLDEN / f"{GOLDEN_DIR[client]}-{provider}"
        case: dict[str, Any] = {"target": json.loads((d / plain / "target.json").read_text()),
                                "request": json.loads((d / plain / "client_request.json").read_text()),
                                "response": _b64(d / plain / "upstream_response.json"), "stream": None}
        if stream is not None:
            streamed = next(p for p in (d / stream / "upstream_response.sse", d / stream / "upstream_response.eventstream")
                            if p.exists())
            case |= {"stream": _b64(streamed), "stream_request": json.loads((d / stream / "client_request.json").read_text())}
        cases[f"{client}/{provider}"] = case
    return {"chat": chat, "embeddings": embeddings, "cases": cases, "refused": REFUSED}


def test_every_translator_pair_translates(venv: Path) -> None:
    pairs = _probe(venv, "translate", _fixtures())["pairs"]
    problems = {name: r["problems"] for name, r in pairs.items() if r["problems"]}
    assert not problems, "\n".join(f"{name}: {p}" for name, ps in problems.items() for p in ps)
    clients = {name.split("/")[0] for name in pairs}
    assert clients == {"openai", "anthropic", "openai-embeddings", "openai-responses", "openai-completions",
                       "anthropic-count-tokens"}, sorted(pairs)
    for name, result in pairs.items():
        client, provider = name.split("/")
        if (client, provider, 400) in REFUSED:
            assert result["done"] == ["refused 400"], name
        elif client in ("openai-embeddings", "anthropic-count-tokens"):
            assert result["done"] == ["request", "response"], name
        else:
            assert result["done"] == ["request", "response", "stream request", "stream"], name


def test_console_script(venv: Path) -> None:
    done = _run([str(venv / "bin" / "interlock"), "--help"], venv.parent, 60)
    assert done.stdout.startswith("usage: interlock")
    assert "simulate" in done.stdout
