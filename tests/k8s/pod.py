"""A pod of the chart's Deployment run as local processes, the way the kubelet would run it.

- Volumes: a ConfigMap or Secret volume is a directory the kubelet's atomic writer fills
  (`..<timestamp>/` holding the files, a `..data` symlink to it, one `key -> ..data/key` symlink
  per key); an update writes a new timestamped directory and renames a fresh `..data` symlink
  over the old one (the files themselves are never rewritten). An emptyDir is an empty directory
  writable by the pod's fsGroup.
- The container: a private mount namespace (`unshare -m`) where each volume is bind-mounted at
  its `mountPath` (read-only where the manifest says `readOnly`) and the image's /opt/interlock
  (tests.k8s.image) at its place, and the root filesystem remounted read-only when the manifest
  says `readOnlyRootFilesystem` (here `/` is the host's, read-only in that namespace only); then the image's ENTRYPOINT + the manifest's args run as the
  pod's `runAsUser`/`runAsGroup` (`setpriv`, no capabilities, no new privileges) with only the
  image's ENV and the manifest's env, in the image's WORKDIR. No network namespace: ports are
  the host's, and the pod IP is 127.0.0.2 (probes and traffic go there).
- Termination: the preStop exec command, then SIGTERM, then SIGKILL after
  `terminationGracePeriodSeconds`, as the kubelet does.
"""

from __future__ import annotations

import datetime
import os
import shlex
import signal
import ssl
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.k8s.image import DEPS_MOUNT, VENV, parse

POD_IP = "127.0.0.2"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def atomic_write(volume: Path, data: dict[str, str], mode: int = 0o644) -> None:
    """Write `data` into a ConfigMap/Secret volume directory as the kubelet's AtomicWriter does."""
    volume.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("..%Y_%m_%d_%H_%M_%S.%f")
    new = volume / stamp
    new.mkdir()
    for key, text in data.items():
        (new / key).write_text(text)
        (new / key).chmod(mode)
    new.chmod(0o755)
    data_link = volume / "..data"
    old = Path(os.readlink(data_link)) if data_link.is_symlink() else None
    tmp = volume / "..data_tmp"
    tmp.symlink_to(stamp)
    os.rename(tmp, data_link)  # the atomic swap
    for key in data:
        if not (volume / key).is_symlink():
            (volume / key).symlink_to(f"..data/{key}")
    if old is not None:
        for f in (volume / old).iterdir():
            f.unlink()
        (volume / old).rmdir()


@dataclass
class Pod:
    """One pod of `deployment`; volumes under `root`; `secrets` as {secretName: {key: value}}."""

    deployment: dict[str, Any]
    root: Path
    layout: Path  # the image's venv directory (tests.k8s.image.build_layout)
    secrets: dict[str, dict[str, str]]
    configmaps: dict[str, dict[str, str]]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    volume_dirs: dict[str, Path] = field(default_factory=dict)

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.deployment["spec"]["template"]["spec"])

    @property
    def container(self) -> dict[str, Any]:
        [c] = self.spec["containers"]
        return dict(c)

    def port(self, name: str) -> int:
        return next(int(p["containerPort"]) for p in self.container["ports"] if p["name"] == name)

    def url(self, port_name: str = "http") -> str:
        return f"http://{POD_IP}:{self.port(port_name)}"

    # --- the kubelet's side -------------------------------------------------------------------

    def _lay_out_volumes(self) -> None:
        gid = int(self.spec["securityContext"].get("fsGroup", 0))
        for v in self.spec["volumes"]:
            d = self.root / "volumes" / v["name"]
            self.volume_dirs[v["name"]] = d
            if "configMap" in v:
                atomic_write(d, self.configmaps[v["configMap"]["name"]])
            elif "secret" in v:
                atomic_write(d, self.secrets[v["secret"]["secretName"]])
            elif "emptyDir" in v:
                d.mkdir(parents=True)
                os.chown(d, 0, gid)
                d.chmod(0o2777)
            else:
                raise AssertionError(f"volume kind of {v} not emulated")
        self.root.chmod(0o755)
        for parent in (self.root, self.root / "volumes"):
            parent.chmod(0o755)

    def update_configmap(self, name: str, data: dict[str, str]) -> None:
        """The kubelet's sync after `kubectl apply` of the ConfigMap `name`."""
        for v in self.spec["volumes"]:
            if v.get("configMap", {}).get("name") == name:
                atomic_write(self.volume_dirs[v["name"]], data)

    def _env(self) -> dict[str, str]:
        _, stages = parse()
        env = {"PATH": DEFAULT_PATH, "HOME": "/"}
        for k, v in stages[-1].env.items():
            env[k] = v.replace("$PATH", DEFAULT_PATH)
        for e in self.container.get("env", []):
            if "value" in e:
                env[e["name"]] = str(e["value"])
            else:
                ref = e["valueFrom"]["secretKeyRef"]
                env[e["name"]] = self.secrets[ref["name"]][ref["key"]]
        return env

    def _script(self) -> str:
        _, stages = parse()
        final = stages[-1]
        sc = {**self.spec["securityContext"], **self.container.get("securityContext", {})}
        deps = sysconfig.get_paths()["purelib"]
        os.makedirs(DEPS_MOUNT, exist_ok=True)  # the layout's .pth names it (tests.k8s.image)
        lines = ["set -e", *self._base_python(),
                 f"mount --bind {shlex.quote(deps)} {DEPS_MOUNT}", f"mount -o remount,bind,ro {DEPS_MOUNT}"]
        binds = [(str(self.layout.parent), str(Path(VENV).parent), True)]
        mounts = sorted(self.container["volumeMounts"], key=lambda m: m["mountPath"] == "/tmp")
        binds += [(str(self.volume_dirs[m["name"]]), m["mountPath"], bool(m.get("readOnly"))) for m in mounts]
        for src, target, ro in binds:
            lines.append(f"mkdir -p {shlex.quote(target)}")
            lines.append(f"mount --bind {shlex.quote(src)} {shlex.quote(target)}")
            if ro:
                lines.append(f"mount -o remount,bind,ro {shlex.quote(target)}")
        if sc.get("readOnlyRootFilesystem"):
            lines.append("mount -o remount,bind,ro /")
        lines.append(f"cd {shlex.quote(final.workdir)}")
        env = " ".join(shlex.quote(f"{k}={v}") for k, v in self._env().items())
        argv = " ".join(shlex.quote(a) for a in [*final.entrypoint, *self.container["args"]])
        lines.append(f"exec setpriv --reuid={sc['runAsUser']} --regid={sc['runAsGroup']} --clear-groups "
                     f"--no-new-privs -- env -i {env} {argv}")
        return "\n".join(lines)

    def _base_python(self) -> list[str]:
        """The image's base Python is world-readable; the one the layout's venv links to may sit
        under a private directory (/root/.pyenv): that directory becomes a tmpfs in the pod's
        namespace holding only the Python installation."""
        base = Path(sys.base_prefix)
        blocked = next((a for a in reversed(base.parents) if not a.stat().st_mode & 0o001), None)
        if blocked is None:
            return []
        stage = self.root / "base-python"
        stage.mkdir()
        return [f"mount --bind {shlex.quote(str(base))} {shlex.quote(str(stage))}",
                f"mount -t tmpfs -o mode=755 tmpfs {shlex.quote(str(blocked))}",
                f"mkdir -p {shlex.quote(str(base))}",
                f"mount --bind {shlex.quote(str(stage))} {shlex.quote(str(base))}"]

    def start(self, log: Path) -> None:
        self._lay_out_volumes()
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", self._script()],
                                     stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)

    def probe(self, kind: str) -> int | None:
        """The HTTP status of the container's `kind` probe (startup | liveness | readiness) at the
        pod IP, None when nothing answers."""
        get = self.container[f"{kind}Probe"]["httpGet"]
        port = self.port(get["port"]) if isinstance(get["port"], str) else int(get["port"])
        timeout = float(self.container[f"{kind}Probe"]["timeoutSeconds"])
        scheme = get.get("scheme", "HTTP").lower()
        context = ssl._create_unverified_context() if scheme == "https" else None  # the kubelet does not verify
        try:
            with urllib.request.urlopen(f"{scheme}://{POD_IP}:{port}{get['path']}", timeout=timeout,
                                        context=context) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)
        except OSError:
            return None

    def wait_ready(self, timeout: float = 90) -> float:
        """Seconds from start until the startup and readiness probes pass (polled every 0.1 s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, "the container exited while starting"
            if self.probe("startup") == 200 and self.probe("readiness") == 200:
                return time.monotonic() - self.started_at
            time.sleep(0.1)
        raise AssertionError(f"not ready within {timeout} s")

    def pre_stop(self) -> None:
        """The preStop exec hook (inside the container: here, the same command on the host)."""
        subprocess.run(self.container["lifecycle"]["preStop"]["exec"]["command"], check=True, timeout=120)

    def terminate(self) -> int:
        """SIGTERM, then SIGKILL after the grace period; the container's exit status (-9: killed)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(float(self.spec["terminationGracePeriodSeconds"]))
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            return -9

    def run_inside(self, command: str) -> subprocess.CompletedProcess[str]:
        """`command` (sh) in the container's mount namespace, as its user (`kubectl exec`)."""
        assert self.proc is not None
        sc = {**self.spec["securityContext"], **self.container.get("securityContext", {})}
        return subprocess.run(["nsenter", "-t", str(self.proc.pid), "-m", "setpriv", f"--reuid={sc['runAsUser']}",
                               f"--regid={sc['runAsGroup']}", "--clear-groups", "sh", "-c", command],
                              capture_output=True, text=True, timeout=30)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
