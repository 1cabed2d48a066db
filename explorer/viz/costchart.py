"""The composer's cost chart: stacked bars per stage (token mixer / MLP / other), parameters left and MACs right,
as self-contained SVG.

It is redrawn on every edit in the composer, so it is plain markup: the browser swaps it in as it swaps the
numbers beside it, with no plotting library to load or run (a plotly redraw cost 30-60 ms of each change in
headless Chromium on two cores). Hovering a bar segment shows its stage, mixer, part and exact value (an SVG
<title>); each segment carries its value in data-value, so what is drawn can be checked against the counts.
"""

from __future__ import annotations

import math
from html import escape

PART_COLOURS = {'token mixer': '#f59e0b', 'MLP': '#3b82f6', 'other': '#94a3b8'}
PARTS = (('token mixer', 'token_mixer'), ('MLP', 'mlp'), ('other', 'other'))
PANELS = (('params', 1e6, 'parameters (M)', 'M params'), ('macs', 1e9, 'MACs (G), batch 1', 'GMACs'))

WIDTH, HEIGHT = 420, 250
TOP, BOTTOM, LEFT, GAP = 52, 22, 34, 30  # plot area margins (px); GAP between the two panels


def nice_step(top: float, ticks: int = 4) -> float:
    """A round tick step (1, 2, 2.5 or 5 x 10^k) giving about `ticks` intervals up to `top`."""
    if top <= 0 or not math.isfinite(top):
        return 1.0
    raw = top / ticks
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def _fmt(v: float) -> str:
    return f'{v:,.0f}' if abs(v) >= 1000 else f'{v:.3g}'  # 2,000, never 2e+03


def stage_bars(report: dict) -> tuple[list[str], list[str], dict]:
    """(bar labels, their mixers, {panel key: {part: [value per bar, in the panel's unit]}}); stem, head and
    anything between stages go in a last bar 'rest' (as 'other')."""
    stages = report['stages']
    labels = [f'S{s["index"] + 1}' for s in stages] + ['rest']
    mixers = [s['mixer'] for s in stages] + ['stem + head']
    values = {}
    for key, scale, _, _ in PANELS:
        rest = report[key] - sum(s[key] for s in stages)
        values[key] = {
            part: [s[f'{prefix}_{key}'] / scale for s in stages] + [rest / scale if part == 'other' else 0.0]
            for part, prefix in PARTS
        }
    return labels, mixers, values


def stage_cost_svg(report: dict) -> str:
    """The chart for a CostReport.to_dict() (see the module docstring)."""
    labels, mixers, values = stage_bars(report)
    panel_w = (WIDTH - LEFT - GAP - 8) / 2
    plot_h = HEIGHT - TOP - BOTTOM
    out = [
        f'<svg class="mfx-costchart" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
        'aria-label="parameters and MACs per stage" xmlns="http://www.w3.org/2000/svg" '
        'font-family="system-ui, sans-serif">'
    ]
    x = 8.0  # legend
    for part, colour in PART_COLOURS.items():
        out.append(f'<rect x="{x:.0f}" y="6" width="11" height="11" rx="2" fill="{colour}"/>')
        out.append(f'<text x="{x + 15:.0f}" y="15.5" font-size="11" fill="#334155">{escape(part)}</text>')
        x += 24 + 6.6 * len(part)
    for p, (key, _, title, unit) in enumerate(PANELS):
        x0 = LEFT + p * (panel_w + GAP)
        totals = [sum(values[key][part][i] for part, _ in PARTS) for i in range(len(labels))]
        step = nice_step(max(totals))
        top = step * max(1, math.ceil(max(totals) / step - 1e-9))
        y_of = lambda v, top=top: TOP + plot_h * (1 - v / top)  # noqa: E731
        out.append(
            f'<text x="{x0 + panel_w / 2:.1f}" y="{TOP - 12}" font-size="12" text-anchor="middle" '
            f'fill="#0f172a">{escape(title)}</text>'
        )
        k = 0
        while k * step <= top + 1e-12:
            y = y_of(k * step)
            out.append(
                f'<line x1="{x0:.1f}" x2="{x0 + panel_w:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
                f'<text x="{x0 - 4:.1f}" y="{y + 3.5:.1f}" font-size="10" text-anchor="end" '
                f'fill="#475569">{_fmt(k * step)}</text>'
            )
            k += 1
        slot = panel_w / len(labels)
        bar_w = slot * 0.7
        for i, label in enumerate(labels):
            bx = x0 + slot * i + (slot - bar_w) / 2
            base = 0.0
            for part, _ in PARTS:
                v = values[key][part][i]
                if v > 0:
                    y1, y0 = y_of(base + v), y_of(base)
                    tip = f'{label} {mixers[i]}: {part} {v:.4g} {unit}'
                    out.append(
                        f'<rect x="{bx:.1f}" y="{y1:.1f}" width="{bar_w:.1f}" height="{max(y0 - y1, 0.5):.1f}" '
                        f'fill="{PART_COLOURS[part]}" data-panel="{key}" data-part="{escape(part)}" '
                        f'data-value="{v!r}"><title>{escape(tip)}</title></rect>'
                    )
                base += v
            out.append(
                f'<text x="{bx + bar_w / 2:.1f}" y="{HEIGHT - 7}" font-size="10" text-anchor="middle" '
                f'fill="#475569">{escape(label)}</text>'
            )
        out.append(
            f'<line x1="{x0:.1f}" x2="{x0 + panel_w:.1f}" y1="{TOP + plot_h:.1f}" y2="{TOP + plot_h:.1f}" '
            'stroke="#94a3b8"/>'
        )
    out.append('</svg>')
    return ''.join(out)
