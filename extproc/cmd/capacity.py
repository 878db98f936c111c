"""`interlock capacity profile|plan`: measure model servers, plan a pool's size.

`profile` measures live OpenAI-compatible endpoints (vLLM, SGLang, …; `capacity_profile`), one
progress line per step on stderr, and writes the profile JSON (format: `routing.capacity`'s
docstring). `plan` reads a traffic record and a profile, prints the servers as fitted, the hourly
table and the size trade-off (on stderr, a `planning:` progress line at most every 2 s while it
works), and writes an HTML page (`capacity_report`) and/or a JSON summary. Errors are one `error:`
line each on stderr and exit status 1 (2 for bad arguments), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from routing import capacity as cap


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 1,2,4") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected integers ≥ 1")
    return values


def _cmd_profile(args: argparse.Namespace) -> int:
    import asyncio

    from extproc.cmd.capacity_profile import ProfileError, profile_endpoints  # aiohttp: only when profiling

    if args.duration_s <= 0 or args.output_tokens < 2:
        print("error: --duration-s must be > 0 and --output-tokens ≥ 2", file=sys.stderr)
        return 2
    try:
        profile = asyncio.run(profile_endpoints(args))
    except ProfileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; no profile written", file=sys.stderr)
        return 1
    try:
        cap.load_profile(profile)
    except cap.CapacityError as e:
        for p in e.problems:
            print(f"error: the measurements cannot be fitted: {p}", file=sys.stderr)
        return 1
    try:
        Path(args.out).write_text(json.dumps(profile, indent=1) + "\n")
    except OSError as e:
        print(f"error: cannot write {args.out}: {e.strerror}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {len(profile['endpoints'])} endpoint(s), "
          f"{sum(len(e['points']) for e in profile['endpoints'])} steps")
    return 0


# --- plan -------------------------------------------------------------------------------------


def _read_json(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except OSError as e:
        raise cap.CapacityError([f"{path}: cannot read the {what}: {e.strerror}"]) from None
    except ValueError as e:
        raise cap.CapacityError([f"{path}: the {what} is not JSON ({e})"]) from None


def load_inputs(trace: str, profile: str, model: str | None = None
                ) -> tuple[cap.Traffic, list[cap.TrafficRecord], list[cap.ServerModel]]:
    """The traffic (filtered to `model` when given) and the server models; raises CapacityError."""
    try:
        with open(trace, encoding="utf-8") as f:
            traffic = cap.parse_traffic(f, source=trace)
    except OSError as e:
        raise cap.CapacityError([f"{trace}: cannot read the traffic record: {e.strerror}"]) from None
    except UnicodeDecodeError:
        raise cap.CapacityError([f"{trace}: not a text file (JSON lines expected)"]) from None
    servers = cap.load_profile(_read_json(profile, "profile"))
    records = [r for r in traffic.records if model is None or r.model == model]
    if model is not None and not records and traffic.records:
        raise cap.CapacityError([f"{trace}: no request for model {model!r} (it has: {', '.join(traffic.models)})"])
    return traffic, records, servers


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f}"


def plan_text(plan: cap.Plan, servers: list[cap.ServerModel], n_records: int, label: str) -> str:
    slo = plan.slo
    q = f"p{slo.quantile * 100:g}"
    cls = slo.priority or "every"
    lines = [f"traffic: {n_records:,} requests ({label}), {len(plan.needs)} hours of {plan.hour_s:g} s",
             f"SLO: {q} TTFT ≤ {slo.ttft_ms:g} ms" + (f", {q} TPOT ≤ {slo.tpot_ms:g} ms" if slo.tpot_ms else "")
             + f" for {cls} requests; target utilization {plan.target_utilization:.2f}",
             f"each figure: the median of {plan.runs} simulations (arrivals moved within "
             f"±{plan.jitter_s * 1000:g} ms; spill and spend: the mean)",
             "servers (fitted from the profile):"]
    for m in servers:
        extra = [f"KV {m.kv_tokens:,} tok" if m.kv_tokens else "KV unbounded",
                 f"{m.slots} slots" if m.slots else "slots unbounded",
                 f"step budget {m.batch_tokens:,} tok" if m.batch_tokens else "no step budget"]
        lines.append(f"  {m.name}: prefill {m.prefill_tokens_per_s:,.0f} tok/s, step {m.step_base_s * 1000:.1f} ms + "
                     f"{m.step_per_seq_s * 1000:.2f} ms/seq, overhead {m.ttft_overhead_s * 1000:.1f} ms, "
                     + ", ".join(extra))
    rec = plan.recommended
    lines.append("")
    head = f"{'hour':>4} {'arrivals':>8} {'replicas':>8} {q + ' TTFT ms':>12} {'util':>5}"
    if rec:
        head += f"   at {rec.replicas} replicas: {'spill':>6} {'spend $':>9} {q + ' TTFT ms':>12}"
    lines.append(head)
    by_hour = {h.hour: h for h in rec.hours} if rec else {}
    for need in plan.needs:
        row = (f"{need.hour:>4} {need.arrivals:>8,} {need.replicas if need.replicas is not None else 'n/a':>8} "
               f"{_ms(need.ttft_ms):>12} {need.utilization:>5.2f}")
        if rec:
            h = by_hour[need.hour]
            pad = len(str(rec.replicas)) + 16
            row += f"   {'':>{pad}}{h.spill_share * 100:>5.1f}% {h.spend_usd:>9.2f} {_ms(h.ttft_ms):>12}"
        lines.append(row)
    lines += ["", f"{'size':>4} {'GPU $':>9} {'provider $':>10} {'total $':>9} {'spill':>6} {q + ' TTFT ms':>12} "
              f"{'within SLO':>10} {'SLO met':>7}"]
    for s in plan.tradeoff:
        lines.append(f"{s.replicas:>4} {s.gpu_usd:>9.2f} {s.provider_usd:>10.2f} {s.total_usd:>9.2f} "
                     f"{s.spill_share * 100:>5.1f}% {_ms(s.ttft_ms):>12} {s.attainment * 100:>9.1f}% "
                     f"{'yes' if s.slo_met else 'no':>7}")
    if plan.autoscaled_gpu_usd is not None:
        lines.append(f"autoscaled (each hour at its need, no spillover): GPU ${plan.autoscaled_gpu_usd:,.2f}")
    lines.append("")
    for reason in plan.infeasible:
        lines.append(f"SLO infeasible: {reason}")
    if plan.peak_replicas is not None:
        lines.append(f"all day without spillover: {plan.peak_replicas} replicas")
    if rec:
        lines.append(f"recommended: {rec.replicas} replicas (the cheapest size above meeting the SLO with spillover: "
                     f"${rec.total_usd:,.2f}, {rec.spill_share * 100:.1f}% spilled)")
    else:
        lines.append("recommended: none of the sizes meets the SLO")
    return "\n".join(lines)


def plan_json(plan: cap.Plan) -> dict[str, Any]:
    rec = plan.recommended
    return {
        "slo": {"ttft_ms": plan.slo.ttft_ms, "quantile": plan.slo.quantile, "tpot_ms": plan.slo.tpot_ms,
                "priority": plan.slo.priority},
        "target_utilization": plan.target_utilization, "hour_s": plan.hour_s, "runs": plan.runs,
        "jitter_s": plan.jitter_s,
        "peak_replicas": plan.peak_replicas, "recommended_replicas": rec.replicas if rec else None,
        "infeasible": list(plan.infeasible), "autoscaled_gpu_usd": plan.autoscaled_gpu_usd,
        "hours": [{"hour": h.hour, "arrivals": h.arrivals, "replicas": h.replicas, "ttft_ms": h.ttft_ms,
                   "utilization": round(h.utilization, 4)} for h in plan.needs],
        "sizes": [{"replicas": s.replicas, "gpu_usd": round(s.gpu_usd, 4), "provider_usd": round(s.provider_usd, 4),
                   "total_usd": round(s.total_usd, 4), "spill_share": round(s.spill_share, 4), "ttft_ms": s.ttft_ms,
                   "attainment": round(s.attainment, 4), "slo_met": s.slo_met} for s in plan.tradeoff],
    }


def _progress_printer(started: float, every_s: float = 2.0) -> Callable[[str], None]:
    """A `plan` progress callback: one stderr line at most every `every_s` seconds (a plan that
    takes less prints none)."""
    last = [started]

    def say(what: str) -> None:
        now = time.perf_counter()
        if now - last[0] >= every_s:
            last[0] = now
            print(f"planning: {what} ({now - started:.0f} s)", file=sys.stderr, flush=True)

    return say


def _cmd_plan(args: argparse.Namespace) -> int:
    problems = []
    if not 0 < args.slo_quantile <= 1:
        problems.append("--slo-quantile must be in (0, 1]")
    if not 0 < args.target_utilization <= 1:
        problems.append("--target-utilization must be in (0, 1]")
    if args.slo_ttft_ms <= 0 or (args.slo_tpot_ms is not None and args.slo_tpot_ms <= 0):
        problems.append("--slo-ttft-ms and --slo-tpot-ms must be > 0")
    if min(args.gpu_hour_usd, args.provider_price_in, args.provider_price_out) < 0:
        problems.append("prices must be ≥ 0")
    if not 0 <= args.band < 1:
        problems.append("--band must be in [0, 1)")
    if args.runs < 1:
        problems.append("--runs must be ≥ 1")
    if args.day_seconds <= 0:
        problems.append("--day-seconds must be > 0")
    if args.min_replicas < 1 or args.max_replicas < args.min_replicas:
        problems.append("--min-replicas must be ≥ 1 and --max-replicas ≥ --min-replicas")
    if problems:
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        return 2
    try:
        traffic, records, servers = load_inputs(args.trace, args.profile, args.model)
    except cap.CapacityError as e:
        for p in e.problems:
            print(f"error: {p}", file=sys.stderr)
        return 1
    slo = cap.Slo(args.slo_ttft_ms, args.slo_quantile, args.slo_tpot_ms,
                  None if args.slo_priority == "all" else args.slo_priority)
    prices = cap.Prices(args.gpu_hour_usd, args.provider_price_in, args.provider_price_out)
    started = time.perf_counter()
    plan = cap.plan(records, servers, slo, prices, args.target_utilization, args.day_seconds / 24,
                    args.sizes or (), args.min_replicas, args.max_replicas, args.band, args.runs,
                    progress=_progress_printer(started))
    label = f"model {args.model}" if args.model else ("models " + ", ".join(m or "(none)" for m in traffic.models))
    if traffic.skipped:
        label += f"; {traffic.skipped} lines without token counts skipped"
    print(plan_text(plan, servers, len(records), label))
    print(f"(planned in {time.perf_counter() - started:.1f} s)", file=sys.stderr)
    try:
        if args.out_html:
            from extproc.cmd.capacity_report import render_html

            Path(args.out_html).write_text(render_html(plan, servers, len(records), label))
            print(f"wrote {args.out_html}")
        if args.out_json:
            Path(args.out_json).write_text(json.dumps(plan_json(plan), indent=1) + "\n")
            print(f"wrote {args.out_json}")
    except OSError as e:
        print(f"error: cannot write {e.filename}: {e.strerror}", file=sys.stderr)
        return 1
    return 0 if plan.recommended is not None or plan.peak_replicas is not None else 3


def add_parser(sub: Any) -> None:
    """`interlock capacity …` (called by `extproc.cmd.cli.build_parser`)."""
    p = sub.add_parser("capacity", help="measure model servers and plan a self-hosted pool's size",
                       description="`profile` measures live OpenAI-compatible model servers; `plan` turns a "
                                   "traffic record and a profile into replicas per hour, provider spend for the "
                                   "spillover and the cost/latency trade-off of a few pool sizes.")
    csub = p.add_subparsers(dest="capacity_command", required=True)
    pr = csub.add_parser("profile", help="measure TTFT, TPOT and throughput of live endpoints",
                         description="For every prompt length × concurrency, that many clients stream chat "
                                     "completions back to back for --duration-s seconds. Prints a progress line "
                                     "per step; writes the profile JSON.")
    pr.add_argument("--endpoint", action="append", required=True, metavar="URL",
                    help="an OpenAI-compatible server, e.g. http://10.0.0.5:8000 (repeatable: a pool whose "
                         "servers differ is profiled per server)")
    pr.add_argument("--model", help="the model to request (default: the first of GET /v1/models)")
    pr.add_argument("--concurrency", type=_ints, default=[1, 2, 4, 8, 16, 32], metavar="N,N,…",
                    help="concurrent clients per step (default: 1,2,4,8,16,32)")
    pr.add_argument("--prompt-tokens", type=_ints, default=[256, 1024, 4096], metavar="N,N,…",
                    help="prompt lengths in tokens (default: 256,1024,4096)")
    pr.add_argument("--output-tokens", type=int, default=64, help="max_tokens of each request (default: 64)")
    pr.add_argument("--duration-s", type=float, default=5.0,
                    help="seconds each step sends requests (default: 5; requests in flight then finish)")
    pr.add_argument("--timeout-s", type=float, default=60.0, help="per-request timeout (default: 60)")
    pr.add_argument("--api-key", help="bearer token for the endpoints (default: none)")
    pr.add_argument("--ignore-eos", action="store_true",
                    help="send vLLM's `ignore_eos: true` so every answer has --output-tokens tokens")
    pr.add_argument("--parallel", action="store_true",
                    help="profile every endpoint at the same time (separate servers; faster, a busier client)")
    pr.add_argument("--seed", type=int, default=0, help="seed of the prompts' text (default: 0)")
    pr.add_argument("--out", required=True, help="where to write the profile JSON")
    pr.set_defaults(func=_cmd_profile)

    pl = csub.add_parser("plan", help="replicas per hour, spillover spend and the size trade-off",
                         description="Simulates the traffic record's arrivals through N servers as the profile "
                                     "describes them (continuous batching). Exit status: 0; 1 for an unreadable "
                                     "or invalid file; 2 for bad arguments; 3 when no size meets the SLO.")
    pl.add_argument("--trace", required=True, metavar="FILE",
                    help="traffic record: JSON lines of a trace (t, prompt_tokens, output_tokens, priority, model) "
                         "or the gateway's access log (time, input_tokens, output_tokens, model)")
    pl.add_argument("--profile", required=True, metavar="FILE", help="a profile JSON from `capacity profile`")
    pl.add_argument("--model", help="plan only this model's requests (default: all of them)")
    pl.add_argument("--slo-ttft-ms", type=float, required=True, help="TTFT objective, ms")
    pl.add_argument("--slo-quantile", type=float, default=0.9, help="the objectives' quantile (default: 0.9)")
    pl.add_argument("--slo-tpot-ms", type=float, help="TPOT objective, ms (default: none)")
    pl.add_argument("--slo-priority", choices=("interactive", "default", "batch", "all"), default="interactive",
                    help="the requests the objectives apply to (default: interactive; unlabelled requests count "
                         "as interactive)")
    pl.add_argument("--target-utilization", type=float, default=0.8,
                    help="the pool's utilization ceiling; above it spillover starts (default: 0.8)")
    pl.add_argument("--band", type=float, default=0.05,
                    help="the spillover policy's hysteresis band, as the route's `fill_pool` policy (default: 0.05)")
    pl.add_argument("--gpu-hour-usd", type=float, default=0.0,
                    help="price of one replica for one hour, USD (charged for the record's own seconds, also when "
                         "--day-seconds compresses a day)")
    pl.add_argument("--provider-price-in", type=float, default=0.0,
                    help="provider price of input tokens, USD per 1M tokens")
    pl.add_argument("--provider-price-out", type=float, default=0.0,
                    help="provider price of output tokens, USD per 1M tokens")
    pl.add_argument("--sizes", type=_ints, metavar="N,N,…",
                    help="pool sizes for the trade-off (default: from the hourly needs, and one under the smallest)")
    pl.add_argument("--day-seconds", type=float, default=86400.0,
                    help="record seconds that stand for one day (default: 86400; 600 for a day compressed into "
                         "10 minutes: an hour is then 25 s)")
    pl.add_argument("--runs", type=int, default=cap.RUNS,
                    help=f"simulations per figure, each with arrivals moved by up to ±{cap.JITTER_S * 1000:g} ms; "
                         f"figures are their median (default: {cap.RUNS})")
    pl.add_argument("--min-replicas", type=int, default=1, help="smallest pool (default: 1)")
    pl.add_argument("--max-replicas", type=int, default=64, help="largest pool tried (default: 64)")
    pl.add_argument("--out-html", metavar="FILE", help="write a self-contained HTML report (inline SVG charts)")
    pl.add_argument("--out-json", metavar="FILE", help="write the plan as JSON")
    pl.set_defaults(func=_cmd_plan)
