"""The image's file layout without a container engine: the Dockerfile read as data, its build
stage's COPY lines copied into a build context, the package installed from there into the venv
path the final stage copies (/opt/interlock/venv), as `pip install .` in the build stage does.

The one difference from the image: the layout's venv gets the third-party dependencies from the
test venv (a .pth line) instead of downloading them again; Interlock's own files are the ones the
Dockerfile's COPY lines select, built into a wheel and installed."""

from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.k8s.chart import ROOT

DOCKERFILE = ROOT / "Dockerfile"


@dataclasses.dataclass
class Stage:
    name: str
    base: str
    workdir: str = "/"
    copies: list[tuple[list[str], str, str | None]] = dataclasses.field(default_factory=list)  # (srcs, dest, from)
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    user: str | None = None
    entrypoint: list[str] = dataclasses.field(default_factory=list)
    cmd: list[str] = dataclasses.field(default_factory=list)
    expose: list[int] = dataclasses.field(default_factory=list)
    runs: list[str] = dataclasses.field(default_factory=list)


def _instructions(text: str) -> list[tuple[str, str]]:
    lines, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        op, _, rest = current.partition(" ")
        lines.append((op.upper(), rest.strip()))
        current = ""
    return lines


def parse(text: str | None = None) -> tuple[dict[str, str], list[Stage]]:
    """The Dockerfile's global ARGs and its stages, in order."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for op, rest in _instructions(text if text is not None else DOCKERFILE.read_text()):
        if op == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif op == "FROM":
            parts = rest.split()
            base = parts[0]
            for name, value in args.items():
                base = base.replace("${" + name + "}", value)
            stages.append(Stage(parts[2] if len(parts) > 2 else str(len(stages)), base))
        elif op == "WORKDIR":
            stages[-1].workdir = rest
        elif op == "COPY":
            words = rest.split()
            frm = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
            words = [w for w in words if not w.startswith("--")]
            stages[-1].copies.append((words[:-1], words[-1], frm))
        elif op == "ENV":
            for pair in rest.split():
                k, _, v = pair.partition("=")
                stages[-1].env[k] = v
        elif op == "USER":
            stages[-1].user = rest
        elif op == "ENTRYPOINT":
            stages[-1].entrypoint = json.loads(rest)
        elif op == "CMD":
            stages[-1].cmd = json.loads(rest)
        elif op == "EXPOSE":
            stages[-1].expose = [int(p) for p in rest.split()]
        elif op == "RUN":
            stages[-1].runs.append(rest)
    return args, stages


VENV = "/opt/interlock/venv"
DEPS_MOUNT = "/run/interlock-test-deps"  # the test venv's packages, as the pod emulation mounts them


def build_layout(dest: Path) -> Path:
    """Build the final stage's /opt/interlock into `dest`/opt/interlock; returns the venv's path
    there. The venv runs only where that directory is mounted at /opt/interlock (tests.k8s.pod)."""
    _, stages = parse()
    build = stages[0]
    context = dest / "build-context"
    for sources, target, frm in build.copies:
        assert frm is None
        into = context / target.removeprefix("./") if not target.endswith("/") else context
        for src in sources:
            path = ROOT / src
            if path.is_dir():
                shutil.copytree(path, into, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                into.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, into / path.name)
    # The venv is created at its image path (scripts' shebangs name it): in a private mount
    # namespace where /opt/interlock is this layout's directory, as the build stage's RUN does.
    target = dest / Path(VENV).parent.relative_to("/")
    target.mkdir(parents=True)
    site = f"{VENV}/lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
    deps = sysconfig.get_paths()["purelib"]
    # Two lines: the test venv's own path, and DEPS_MOUNT, where the pod emulation binds it (a test
    # venv under /tmp is hidden in the pod by its /tmp emptyDir). Python skips a line naming no
    # directory.
    script = " && ".join([
        f"mkdir -p {Path(VENV).parent}", f"mount --bind {shlex.quote(str(target))} {Path(VENV).parent}",
        f"{shlex.quote(sys.executable)} -m venv --without-pip {VENV}",
        f"printf '%s\\n%s\\n' {shlex.quote(deps)} {DEPS_MOUNT} > {site}/_test_venv_dependencies.pth",
        f"{shlex.quote(sys.executable)} -m pip --python {VENV}/bin/python install -q --no-deps "
        f"--no-build-isolation --no-compile --no-index {shlex.quote(str(context))}"])
    subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], check=True,
                   capture_output=True, timeout=300)
    venv = dest / VENV.lstrip("/")
    shutil.rmtree(context)
    return venv
