"""The capacity plan as one self-contained HTML page: inline SVG charts and tables, no script, no
external asset (it opens offline and passes a strict Content-Security-Policy)."""

from __future__ import annotations

from html import escape

from routing import capacity as cap

_W, _H, _PAD = 720, 260, 48
_CSS = ("body{font:14px system-ui,sans-serif;margin:2em;color:#222;max-width:60em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{padding:2px 10px;text-align:right;"
        "border-bottom:1px solid #ddd}th{background:#f4f4f4}h1{font-size:1.4em}h2{font-size:1.1em;margin-top:2em}"
        ".bad{color:#b00020}.ok{color:#1b5e20}svg text{font:11px system-ui,sans-serif}")


def _axis(x0: float, y0: float, w: float, h: float, ymax: float, label: str) -> list[str]:
    out = [f'<line x1="{x0}" y1="{y0}" x2="{x0 + w}" y2="{y0}" stroke="#888"/>',
           f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y0 - h}" stroke="#888"/>',
           f'<text x="{x0 - 4}" y="{y0 - h - 8}" text-anchor="start">{escape(label)}</text>']
    for i in range(5):
        v = ymax * i / 4
        y = y0 - h * i / 4
        out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{v:,.4g}</text>')
        if i:
            out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + w}" y2="{y:.1f}" stroke="#eee"/>')
    return out


def _frame(title: str, ymax: float, ylabel: str) -> tuple[list[str], float, float, float, float]:
    """A chart's opening: the <svg> element, its title and axes up to `ymax`. Returns the parts and
    the plot area (x0, y0 at its bottom left; width, height)."""
    w, h = _W - 2 * _PAD, _H - 2 * _PAD
    x0, y0 = _PAD + 10, _H - _PAD
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" role="img" '
           f'aria-label="{escape(title)}">', f'<text x="{_W / 2}" y="16" text-anchor="middle" '
           f'font-weight="bold">{escape(title)}</text>']
    return out + _axis(x0, y0, w, h, ymax, ylabel), x0, y0, w, h


def _bars(title: str, labels: list[str], values: list[float | None], ylabel: str, color: str,
          line: float | None = None, line_label: str = "") -> str:
    """A bar chart (None: a hatched 'n/a' bar) with an optional horizontal threshold line."""
    shown = [v for v in values if v is not None]
    ymax = max(shown + ([line] if line else []) + [1e-9]) * 1.15
    out, x0, y0, w, h = _frame(title, ymax, ylabel)
    bw = w / max(len(values), 1)
    step = max(1, len(labels) // 24)
    for i, (lab, v) in enumerate(zip(labels, values, strict=True)):
        x = x0 + i * bw + bw * 0.1
        if v is None:
            out.append(f'<rect x="{x:.1f}" y="{y0 - h:.1f}" width="{bw * 0.8:.1f}" height="{h:.1f}" '
                       f'fill="#fdd"><title>{escape(lab)}: n/a</title></rect>')
        else:
            bh = h * v / ymax
            out.append(f'<rect x="{x:.1f}" y="{y0 - bh:.1f}" width="{bw * 0.8:.1f}" height="{bh:.1f}" '
                       f'fill="{color}"><title>{escape(lab)}: {v:,.4g}</title></rect>')
        if i % step == 0:
            out.append(f'<text x="{x + bw * 0.4:.1f}" y="{y0 + 14}" text-anchor="middle">{escape(lab)}</text>')
    if line:
        y = y0 - h * line / ymax
        out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + w}" y2="{y:.1f}" stroke="#b00020" '
                   f'stroke-dasharray="6 4"/><text x="{x0 + w}" y="{y - 4:.1f}" text-anchor="end" '
                   f'fill="#b00020">{escape(line_label)}</text>')
    out.append("</svg>")
    return "".join(out)


def _stacked(title: str, sizes: list[cap.SizeResult], slo: cap.Slo) -> str:
    """Cost per size (GPU + provider, stacked) with the predicted TTFT quantile printed on each bar."""
    ymax = max([s.total_usd for s in sizes] + [1e-9]) * 1.2
    out, x0, y0, w, h = _frame(title, ymax, "USD")
    bw = w / max(len(sizes), 1)
    q = f"p{slo.quantile * 100:g}"
    for i, s in enumerate(sizes):
        x = x0 + i * bw + bw * 0.2
        gh, ph = h * s.gpu_usd / ymax, h * s.provider_usd / ymax
        ttft = "—" if s.ttft_ms is None else f"{s.ttft_ms:,.0f} ms"
        out.append(f'<rect x="{x:.1f}" y="{y0 - gh:.1f}" width="{bw * 0.6:.1f}" height="{gh:.1f}" fill="#3f6fb5">'
                   f'<title>{s.replicas} replicas: GPU ${s.gpu_usd:,.2f}</title></rect>')
        out.append(f'<rect x="{x:.1f}" y="{y0 - gh - ph:.1f}" width="{bw * 0.6:.1f}" height="{ph:.1f}" '
                   f'fill="#e39b2d"><title>{s.replicas} replicas: provider ${s.provider_usd:,.2f}</title></rect>')
        cls = "#1b5e20" if s.slo_met else "#b00020"
        out.append(f'<text x="{x + bw * 0.3:.1f}" y="{y0 - gh - ph - 6:.1f}" text-anchor="middle" fill="{cls}">'
                   f'{q} {ttft}</text>')
        out.append(f'<text x="{x + bw * 0.3:.1f}" y="{y0 + 14}" text-anchor="middle">{s.replicas} replicas</text>')
    out.append(f'<rect x="{x0 + w - 170}" y="26" width="10" height="10" fill="#3f6fb5"/><text x="{x0 + w - 155}" '
               f'y="35">GPU hours</text><rect x="{x0 + w - 90}" y="26" width="10" height="10" fill="#e39b2d"/>'
               f'<text x="{x0 + w - 75}" y="35">provider tokens</text></svg>')
    return "".join(out)


def render_html(plan: cap.Plan, servers: list[cap.ServerModel], n_records: int, label: str) -> str:
    """The whole page."""
    from extproc.cmd.capacity import plan_text

    slo = plan.slo
    q = f"p{slo.quantile * 100:g}"
    hours = [str(h.hour) for h in plan.needs]
    rec = plan.recommended
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>Capacity plan</title>"
             f"<style>{_CSS}</style></head><body><h1>Capacity plan</h1>"]
    summary = (f"{n_records:,} requests ({escape(label)}); SLO {q} TTFT ≤ {slo.ttft_ms:g} ms"
               + (f", {q} TPOT ≤ {slo.tpot_ms:g} ms" if slo.tpot_ms else "")
               + f" for {escape(slo.priority or 'all')} requests; target utilization {plan.target_utilization:.2f}.")
    parts.append(f"<p>{summary}</p>")
    if rec:
        parts.append(f'<p class=ok><b>Recommended: {rec.replicas} replicas</b> — ${rec.total_usd:,.2f} '
                     f'(GPU ${rec.gpu_usd:,.2f} + provider ${rec.provider_usd:,.2f}), {rec.spill_share * 100:.1f}% '
                     f'of requests spilled, {q} TTFT {rec.ttft_ms or 0:,.0f} ms on the pool.</p>')
    else:
        parts.append("<p class=bad><b>No size of the trade-off meets the SLO.</b></p>")
    if plan.peak_replicas is not None:
        parts.append(f"<p>All day without spillover: {plan.peak_replicas} replicas.</p>")
    for reason in plan.infeasible:
        parts.append(f"<p class=bad>SLO infeasible: {escape(reason)}</p>")
    parts.append("<h2>Replicas needed by hour</h2>")
    parts.append(_bars("Replicas needed (no spillover)", hours, [None if h.replicas is None else float(h.replicas)
                                                               for h in plan.needs], "replicas", "#3f6fb5"))
    parts.append(_bars("Arrivals", hours, [float(h.arrivals) for h in plan.needs], "requests", "#888"))
    if rec:
        parts.append(_bars(f"Predicted {q} TTFT at {rec.replicas} replicas (with spillover)", hours,
                           [h.ttft_ms for h in rec.hours], "ms", "#5a9", slo.ttft_ms, f"SLO {slo.ttft_ms:g} ms"))
        parts.append(_bars(f"Spilled share at {rec.replicas} replicas", hours,
                           [h.spill_share * 100 for h in rec.hours], "%", "#e39b2d"))
    parts.append("<h2>Cost and latency by pool size</h2>")
    parts.append(_stacked("Cost of the record by pool size", list(plan.tradeoff), slo))
    parts.append(f"<h2>Tables</h2><pre>{escape(plan_text(plan, servers, n_records, label))}</pre>")
    parts.append("<p>Predictions come from a simulation of the pool's continuous batching, fed only by the "
                 "measured profile; spilled requests are assumed to meet the SLO at the provider.</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
