"""Data -> plotly Figure. The only module that imports plotly; every function takes plain data (dicts and
lists as the counters and explorer.measure.compare return them) and returns a Figure."""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.measure.profile import run_names
from explorer.measure.units import fmt_count
from explorer.viz.diagram import mixer_colour
from explorer.viz.text import plain

FAMILY_COLOURS = (
    '#2563eb',
    '#dc2626',
    '#16a34a',
    '#9333ea',
    '#ea580c',
    '#0891b2',
    '#ca8a04',
    '#db2777',
    '#4b5563',
    '#65a30d',
    '#7c3aed',
    '#0d9488',
)
LINE_COLOURS = (  # twelve hues far apart; a curve's dash changes after each twelve
    '#e11d48',
    '#2563eb',
    '#16a34a',
    '#9333ea',
    '#ea580c',
    '#0891b2',
    '#ca8a04',
    '#4b5563',
    '#db2777',
    '#65a30d',
    '#92400e',
    '#1e3a8a',
)
LINE_DASHES = ('solid', 'dash', 'dot', 'dashdot', 'longdash')
HIGHLIGHT_LINE = dict(color='#0f172a', width=4)  # the composer's design among the presets


def line_style(k: int) -> dict:
    """The k-th curve's line: a colour and a dash, the pair distinct for the first 60 curves (every preset fits;
    with eight colours alone the ninth curve looked like the first)."""
    n = len(LINE_COLOURS)
    return dict(color=LINE_COLOURS[k % n], dash=LINE_DASHES[(k // n) % len(LINE_DASHES)], width=2)


_LAYOUT = dict(
    template='plotly_white',
    margin=dict(l=50, r=16, t=36, b=40),
    font=dict(size=12),
    legend=dict(orientation='h', yanchor='bottom', y=1.02, xanchor='left', x=0),
)


def empty_figure(message: str, height: int = 300) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(
        text=message, showarrow=False, x=0.5, y=0.5, xref='paper', yref='paper', font=dict(size=13, color='#64748b')
    )
    fig.update_layout(**_LAYOUT, height=height, xaxis=dict(visible=False), yaxis=dict(visible=False))
    return fig


# one colour per preset family, the same whatever the filter shows; a family not listed gets one by its name
FAMILY_COLOUR = {
    'PoolFormer': '#2563eb',
    'PoolFormerV2': '#92400e',  # brown squares: its points sit almost on PoolFormer's (82.1 vs 82.2 at 8.8 G)
    'ConvFormer': '#16a34a',
    'CAFormer': '#dc2626',
    'IdentityFormer': '#9333ea',
    'RandFormer': '#ca8a04',
    'MLP': '#ea580c',
    'Transformer': '#db2777',
    'Hybrid': '#4b5563',
}
FAMILY_SYMBOL = {'PoolFormerV2': 'square'}  # others: circles
HOVER_X = {'GMACs': 'GMACs per image', 'parameters': 'parameters (M)', 'measured throughput': 'images/s'}
DESIGN_STYLE = {  # kind -> (marker symbol, colour, legend name)
    'current': ('star', '#e11d48', 'your design'),
    'pin': ('diamond', '#0f172a', 'pinned designs'),
}
UNKNOWN = 'unknown'  # the y tick of the row where points without a published top-1 sit


def family_colour(family: str) -> str:
    return FAMILY_COLOUR.get(family) or FAMILY_COLOURS[sum(map(ord, family)) % len(FAMILY_COLOURS)]


def export_config(filename: str, image_format: str = 'png') -> dict:
    """Plotly config for a figure's modebar: its camera button saves `filename`.png or .svg (2x for PNG)."""
    fmt = image_format if image_format in ('png', 'svg') else 'png'
    safe = ''.join(c if c.isalnum() or c in '-_' else '_' for c in filename[:60]) or 'figure'
    return {
        'displaylogo': False,
        'toImageButtonOptions': {'format': fmt, 'filename': safe, 'scale': 2 if fmt == 'png' else 1},
    }


def _accuracy_ticks(known: list[float], y_unknown: float | None) -> dict:
    """y ticks every 1, 2 or 5 points of top-1, and 'unknown' at the row of points without one."""
    if not known:  # no point has a top-1: one row, and no invented accuracy ticks
        return dict(tickmode='array', tickvals=[y_unknown], ticktext=[UNKNOWN])
    lo, hi = min(known), max(known)
    step = next(s for s in (1, 2, 5, 10) if (hi - lo) / s <= 8)
    first = int(lo // step) * step
    ticks = [first + k * step for k in range(int((hi - first) // step) + 2)]
    vals, text = ticks + ([y_unknown] if y_unknown is not None else []), [f'{t:g}' for t in ticks]
    return dict(tickmode='array', tickvals=vals, ticktext=text + ([UNKNOWN] if y_unknown is not None else []))


def accuracy_figure(
    rows: list[dict],
    x_title: str,
    frontier: list[str] = (),
    log_x: bool = False,
    height: int = 460,
    higher_x_better: bool = False,
) -> go.Figure:
    """Top-1 against an x measure: presets coloured by family (one legend entry each), the designs a person made
    (their own design, pinned ones) as labelled points, and the Pareto frontier of the presets.

    rows: one per point, as explorer.app.panels.compare_rows gives them: kind ('preset', 'current' or 'pin'), key
    (what a click reports), name, family, x, top1 (None: unknown, drawn on a row of its own below the rest),
    params, macs (counted, batch 1), source. frontier: keys of the points on the frontier, in x order; its steps
    are drawn for a lower x being better (MACs, params) or, with `higher_x_better`, a higher one (throughput).
    Each point's customdata: [key, name, params, MACs, top-1, source, family] as text."""
    if not rows:
        return empty_figure('nothing to plot: no preset family is chosen and no design has this measure', height)
    axis_name = next((v for k, v in HOVER_X.items() if x_title.startswith(k)), 'x')  # the hover's x, with its unit
    known = [r['top1'] for r in rows if r.get('top1') is not None]
    # points without a top-1 on a row of their own below the rest (at 0 when no point has one)
    missing = len(known) < len(rows)
    y_unknown = (min(known) - max(2.0, (max(known) - min(known)) * 0.12) if known else 0.0) if missing else None

    def y(r):
        return r['top1'] if r.get('top1') is not None else y_unknown

    def trace(pts, name, **style):
        return go.Scatter(
            x=[r['x'] for r in pts],
            y=[y(r) for r in pts],
            name=plain(name),
            customdata=[
                [
                    r['key'],
                    plain(r['name']),
                    fmt_count(r.get('params')),
                    fmt_count(r.get('macs')),
                    '—' if r.get('top1') is None else f'{r["top1"]:g}%',
                    plain(r.get('source') or ''),
                    plain(r.get('family') or ''),
                ]
                for r in pts
            ],
            hovertemplate='<b>%{customdata[1]}</b> · %{customdata[6]}<br>top-1: %{customdata[4]}'
            '<br>%{customdata[2]} params · %{customdata[3]} MACs (counted, batch 1)<br>'
            + axis_name  # fixed text of X_AXES, never a request's
            + ': %{x:,.4r}'
            '<br><i>%{customdata[5]}</i><extra></extra>',
            **style,
        )

    fig = go.Figure()
    presets = [r for r in rows if r['kind'] == 'preset']
    for fam in sorted({r['family'] for r in presets}):
        pts = [r for r in presets if r['family'] == fam]
        marker = dict(
            size=10,
            color=family_colour(fam),
            line=dict(width=1, color='white'),
            symbol=[FAMILY_SYMBOL.get(fam, 'circle') + ('' if r.get('top1') is not None else '-open') for r in pts],
        )
        fig.add_trace(trace(pts, fam, mode='markers', marker=marker, legendgroup=f'family:{fam}'))
    by_key = {r['key']: r for r in rows}
    front = [by_key[k] for k in frontier if k in by_key]
    if front:
        fig.add_trace(
            go.Scatter(
                x=[r['x'] for r in front],
                y=[r['top1'] for r in front],
                mode='lines',
                name='Pareto frontier',
                line=dict(color='#0f172a', width=1.5, dash='dot'),
                line_shape='vh' if higher_x_better else 'hv',  # the edge of what the frontier dominates
                hoverinfo='skip',
            )
        )
    for kind, (symbol, colour, legend) in DESIGN_STYLE.items():
        pts = [r for r in rows if r['kind'] == kind]
        if not pts:
            continue
        marker = dict(
            symbol=symbol, size=18 if kind == 'current' else 13, color=colour, line=dict(width=1, color='white')
        )
        if kind == 'pin':  # the names ride with the points
            fig.add_trace(
                trace(
                    pts,
                    legend,
                    mode='markers+text',
                    marker=marker,
                    text=[plain(r['name']) for r in pts],
                    textposition='top center',
                    textfont=dict(size=11, color=colour),
                )
            )
        else:  # one point: its label is an annotation (an arrow keeps it readable among the presets)
            fig.add_trace(trace(pts, legend, mode='markers', marker=marker))
            for r in pts:
                fig.add_annotation(
                    x=math.log10(r['x']) if log_x and r['x'] > 0 else r['x'],
                    y=y(r),
                    text=f'yours: {plain(r["name"])}',
                    font=dict(color=colour, size=12),
                    arrowcolor=colour,
                    ax=30,
                    ay=-30,
                )
    if y_unknown is not None and known:
        sep = y_unknown + max(1.0, (max(known) - min(known)) * 0.06)
        fig.add_hline(y=sep, line=dict(color='#cbd5e1', width=1, dash='dash'))
    fig.update_layout(**_LAYOUT, height=height, xaxis_title=x_title, yaxis_title='ImageNet-1k top-1 (%)')
    fig.update_layout(margin=dict(l=64, r=16, t=84, b=48), clickmode='event', hovermode='closest')
    fig.update_xaxes(type='log' if log_x else 'linear')
    if log_x:  # whole numbers at 1, 2, 5 per decade: plotly's own log ticks read '8 9 10 2' (the 2 meaning 20)
        xs = [r['x'] for r in rows if r['x'] and r['x'] > 0]
        ticks = _log_ticks(min(xs), max(xs)) if xs else []
        if ticks:
            fig.update_xaxes(tickvals=ticks, ticktext=[f'{t:,g}' for t in ticks])
            if sum(min(xs) <= t <= max(xs) for t in ticks) < 2:  # 120 and 180 images/s: ticks 100 and 200 only
                fig.update_xaxes(range=[math.log10(ticks[0]), math.log10(ticks[-1])])
    fig.update_yaxes(**_accuracy_ticks(known, y_unknown))
    return fig


def scaling_figure(curves: dict[str, list[dict]], height: int = 340, highlight: str | None = None) -> go.Figure:
    """MACs (G) and activation memory (MiB, batch 1) against input resolution, one line per model; the curve named
    `highlight` (the composer's design) drawn thick and dark, the others each in their own colour and dash."""
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=('MACs (G), batch 1', 'activation memory (MiB), batch 1'), horizontal_spacing=0.1
    )
    if not any(curves.values()):
        return empty_figure('none of these input sizes fits these models (each divides by its total stride)', height)
    for k, (raw_name, rows) in enumerate(curves.items()):
        name = plain(raw_name)
        if not rows:
            continue
        line = HIGHLIGHT_LINE if raw_name == highlight else line_style(k - (highlight in curves))
        sizes = [r['img_size'] for r in rows]
        fig.add_trace(
            go.Scatter(
                x=sizes,
                y=[r['macs'] / 1e9 for r in rows],
                mode='lines+markers',
                name=name,
                line=line,
                legendgroup=name,
                meta=name,  # request text as data: in the template '%{{y}}' in a name would be filled in
                hovertemplate='%{meta}<br>%{x}²: %{y:.4g} GMACs<extra></extra>',
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=sizes,
                y=[r['act_bytes'] / 2**20 for r in rows],
                mode='lines+markers',
                name=name,
                line=line,
                legendgroup=name,
                showlegend=False,
                meta=name,  # request text as data: in the template '%{{y}}' in a name would be filled in
                hovertemplate='%{meta}<br>%{x}²: %{y:.4g} MiB<extra></extra>',
            ),
            row=1,
            col=2,
        )
    fig.update_layout(**_LAYOUT, height=height)
    fig.update_layout(margin=dict(l=50, r=16, t=84, b=44), legend=dict(y=1.2, font=dict(size=11)))
    fig.update_xaxes(title_text='input resolution (px)')
    fig.update_annotations(font_size=12)
    return fig


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1, 2 and 5 times each power of ten from just below `lo` to just above `hi` (positive numbers)."""
    out = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        out += [m * 10.0**e for m in (1, 2, 5)]
    below = max([t for t in out if t <= lo], default=out[0])
    above = min([t for t in out if t >= hi], default=out[-1])
    return [float(f'{t:.6g}') for t in out if below <= t <= above]


def _unit(values: list[float]) -> tuple[float, str]:
    """(divisor, suffix) that shows the largest |value| with 1 to 3 digits before the point: G, M, k or none."""
    top = max((abs(v) for v in values), default=0)
    return next(((d, u) for d, u in ((1e9, 'G'), (1e6, 'M'), (1e3, 'k')) if top >= d), (1.0, ''))


def diff_figure(diff: dict, height: int = 300) -> go.Figure:
    """Δparams and ΔMACs per stage, B − A (A and B named in the hover), each in the unit that suits its largest
    bar (G, M, k); bars above zero mean B costs more. The hover gives the exact count."""
    rows = diff['rows']
    labels = [f'S{r["stage"]}' if isinstance(r['stage'], int) else str(r['stage']) for r in rows]
    units = {key: _unit([r[key] for r in rows]) for key in ('d_params', 'd_macs')}
    titles = {'d_params': 'parameters', 'd_macs': 'MACs'}
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=[f'Δ {titles[k]} ({units[k][1] or "count"}), B − A' for k in titles],
        horizontal_spacing=0.12,
    )
    pair = f'{plain(diff["b"])} − {plain(diff["a"])}'
    for col, key in ((1, 'd_params'), (2, 'd_macs')):
        scale = units[key][0]
        vals = [r[key] / scale for r in rows]
        fig.add_trace(
            go.Bar(
                x=labels,
                y=vals,
                showlegend=False,
                marker_color=['#dc2626' if v > 0 else '#16a34a' for v in vals],
                customdata=[f'{r[key]:+,}' for r in rows],
                meta=pair,
                hovertemplate=f'%{{x}}: %{{customdata}} {titles[key]}<br>%{{meta}}<extra></extra>',
            ),
            row=1,
            col=col,
        )
    fig.update_layout(**_LAYOUT, height=height)
    fig.update_layout(margin=dict(l=56, r=16, t=40, b=40))
    fig.update_yaxes(tickformat=',~r', exponentformat='none')
    fig.update_annotations(font_size=12)
    return fig


def bench_figure(history: list[dict], height: int = 280) -> go.Figure:
    """Throughput (images/s) of each run in the history, labelled by model and settings; where a run was timed in
    rounds, a bar from the slowest to the fastest round's images/s."""
    if not history:
        return empty_figure('no measurement yet', height)
    labels = [f'#{i + 1} {plain(name)}' for i, name in enumerate(run_names(history))]
    thr = [h.get('throughput') for h in history]
    rounds = [h.get('round_throughputs') or [] for h in history]
    spread = [
        f'{len(r)} rounds: {_number(min(r))} to {_number(max(r))} images/s' if len(r) > 1 else 'one round'
        for r in rounds
    ]
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=thr,
            marker_color='#3b82f6',
            error_y=dict(
                type='data',
                symmetric=False,
                array=[max(r) - t if len(r) > 1 else 0 for r, t in zip(rounds, thr)],
                arrayminus=[t - min(r) if len(r) > 1 else 0 for r, t in zip(rounds, thr)],
                color='#0f172a',
                thickness=1.5,
            ),
            customdata=[[plain(h.get('settings', '')), s] for h, s in zip(history, spread)],
            hovertemplate='%{x}<br>%{y:,.4r} images/s (median latency)<br>%{customdata[1]}'
            '<br>%{customdata[0]}<extra></extra>',
        )
    )
    fig.update_layout(**_LAYOUT, height=height, yaxis_title='images/s (whisker: slowest–fastest round)')
    return fig


def _number(v: float) -> str:
    """1,084.3 or 3.42: a measured number as people write it, never 1.08e+03."""
    return f'{v:,.1f}' if abs(v) >= 100 else f'{v:.3g}'


__all__ = [
    'empty_figure',
    'accuracy_figure',
    'scaling_figure',
    'diff_figure',
    'bench_figure',
    'export_config',
    'family_colour',
    'mixer_colour',
]
