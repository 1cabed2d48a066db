"""Data -> plotly Figure. The only module that imports plotly; every function takes plain data (dicts and
lists as the counters and explorer.measure.compare return them) and returns a Figure."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.viz.diagram import mixer_colour
from explorer.viz.text import plain

PART_COLOURS = {'token mixer': '#f59e0b', 'MLP': '#3b82f6', 'other': '#94a3b8'}
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
LINE_COLOURS = ('#e11d48', '#2563eb', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#ca8a04', '#4b5563')
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


def stage_cost_figure(report: dict, height: int = 300) -> go.Figure:
    """Stacked bars per stage (token mixer / MLP / other), parameters left and MACs right.

    `report` is a CostReport.to_dict(): stages with token_mixer_*, mlp_*, other_* counts; stem and head go in a
    last bar 'rest' (everything the stages do not hold). Built without make_subplots and without a template
    lookup: this figure is redrawn on every edit in the composer, and those two cost most of 100 ms."""
    stages = report['stages']
    labels = [f'S{s["index"] + 1}' for s in stages] + ['rest']
    mixers = [s['mixer'] for s in stages] + ['stem + head']
    data = []
    for col, key, scale, unit in ((1, 'params', 1e6, 'M params'), (2, 'macs', 1e9, 'GMACs')):
        rest = report[key] - sum(s[key] for s in stages)  # stem, head and anything between stages
        for part, prefix in (('token mixer', 'token_mixer'), ('MLP', 'mlp'), ('other', 'other')):
            values = [s[f'{prefix}_{key}'] / scale for s in stages] + [rest / scale if part == 'other' else 0]
            data.append(
                go.Bar(
                    x=labels,
                    y=values,
                    name=part,
                    marker_color=PART_COLOURS[part],
                    legendgroup=part,
                    showlegend=col == 1,
                    customdata=mixers,
                    xaxis=f'x{col if col > 1 else ""}',
                    yaxis=f'y{col if col > 1 else ""}',
                    hovertemplate=f'%{{x}} %{{customdata}}<br>{part}: %{{y:.4g}} {unit}<extra></extra>',
                )
            )
    axis = dict(gridcolor='#e5e7eb', zerolinecolor='#cbd5e1', tickfont=dict(size=10), automargin=True)
    title = dict(
        showarrow=False, xref='paper', yref='paper', y=1.0, xanchor='center', yanchor='bottom', font=dict(size=12)
    )
    layout = go.Layout(
        barmode='stack',
        height=height,
        paper_bgcolor='white',
        plot_bgcolor='white',
        font=dict(size=12),
        margin=dict(l=36, r=8, t=64, b=30),
        hoverlabel=dict(bgcolor='white'),
        legend=dict(orientation='h', yanchor='bottom', y=1.14, xanchor='left', x=0, font=dict(size=11)),
        xaxis=dict(domain=[0, 0.44], **axis),
        yaxis=dict(**axis),
        xaxis2=dict(domain=[0.56, 1], anchor='y2', **axis),
        yaxis2=dict(anchor='x2', **axis),
        annotations=[dict(text='parameters (M)', x=0.22, **title), dict(text='MACs (G), batch 1', x=0.78, **title)],
    )
    return go.Figure(data=data, layout=layout)


def accuracy_figure(
    points: list[dict], x: str, x_title: str, frontier: list[int], user: dict | None = None, height: int = 420
) -> go.Figure:
    """Top-1 against `x` for the presets with published accuracy, coloured by family, Pareto frontier drawn.

    points: dicts with name, display_name, family, top1, source, params_m, gmacs (published), and `x`.
    user: {'name', 'x', 'top1' (or None)}: a star when its accuracy is known, else a dashed vertical line."""
    fig = go.Figure()
    families = sorted({p['family'] for p in points})
    shown = [p for p in points if p.get(x) is not None and p.get('top1') is not None]
    for k, fam in enumerate(families):
        pts = [p for p in shown if p['family'] == fam]
        if not pts:
            continue
        fig.add_trace(
            go.Scatter(
                x=[p[x] for p in pts],
                y=[p['top1'] for p in pts],
                mode='markers',
                name=fam,
                marker=dict(size=10, color=FAMILY_COLOURS[k % len(FAMILY_COLOURS)], line=dict(width=1, color='white')),
                customdata=[
                    [p['display_name'], _num(p.get('params_m')), _num(p.get('gmacs')), p.get('source', ''), p[x]]
                    for p in pts
                ],
                hovertemplate='<b>%{customdata[0]}</b><br>top-1 %{y:.1f}%<br>x: %{customdata[4]:.4g}'
                '<br>published: %{customdata[1]} M params, %{customdata[2]} GMACs'
                '<br><i>%{customdata[3]}</i><extra></extra>',
            )
        )
    if frontier:
        fpts = [points[i] for i in frontier]
        fig.add_trace(
            go.Scatter(
                x=[p[x] for p in fpts],
                y=[p['top1'] for p in fpts],
                mode='lines',
                name='Pareto frontier',
                line=dict(color='#0f172a', width=1.5, dash='dot'),
                line_shape='hv',
                hoverinfo='skip',
            )
        )
    if user and user.get('x') is not None:
        if user.get('top1') is not None:
            fig.add_trace(
                go.Scatter(
                    x=[user['x']],
                    y=[user['top1']],
                    mode='markers',
                    name=f'yours: {plain(user["name"])}',
                    marker=dict(symbol='star', size=18, color='#e11d48', line=dict(width=1, color='#0f172a')),
                )
            )
        else:
            fig.add_vline(
                x=user['x'],
                line=dict(color='#e11d48', width=2, dash='dash'),
                annotation_text=f'yours: {plain(user["name"])} (accuracy unknown)',
                annotation_position='top left',
                annotation_font=dict(color='#e11d48', size=11),
            )
    if not shown:
        return empty_figure('no preset has both a published top-1 and this measure yet', height)
    fig.update_layout(**_LAYOUT, height=height, xaxis_title=x_title, yaxis_title='ImageNet-1k top-1 (%)')
    fig.update_layout(margin=dict(l=56, r=16, t=60, b=48))
    return fig


def scaling_figure(curves: dict[str, list[dict]], height: int = 340) -> go.Figure:
    """MACs (G) and activation memory (MiB, batch 1) against input resolution, one line per model."""
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=('MACs (G), batch 1', 'activation memory (MiB), batch 1'), horizontal_spacing=0.1
    )
    for k, (raw_name, rows) in enumerate(curves.items()):
        name = plain(raw_name)
        if not rows:
            continue
        colour = LINE_COLOURS[k % len(LINE_COLOURS)]
        sizes = [r['img_size'] for r in rows]
        fig.add_trace(
            go.Scatter(
                x=sizes,
                y=[r['macs'] / 1e9 for r in rows],
                mode='lines+markers',
                name=name,
                line=dict(color=colour),
                legendgroup=name,
                hovertemplate=f'{name}<br>%{{x}}²: %{{y:.4g}} GMACs<extra></extra>',
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
                line=dict(color=colour),
                legendgroup=name,
                showlegend=False,
                hovertemplate=f'{name}<br>%{{x}}²: %{{y:.4g}} MiB<extra></extra>',
            ),
            row=1,
            col=2,
        )
    fig.update_layout(**_LAYOUT, height=height)
    fig.update_layout(margin=dict(l=50, r=16, t=84, b=44), legend=dict(y=1.2, font=dict(size=11)))
    fig.update_xaxes(title_text='input resolution (px)')
    fig.update_annotations(font_size=12)
    return fig


def diff_figure(diff: dict, height: int = 300) -> go.Figure:
    """Δparams (M) and ΔMACs (G) per stage, B − A: bars above zero mean B costs more."""
    rows = diff['rows']
    labels = [f'S{r["stage"]}' if isinstance(r['stage'], int) else str(r['stage']) for r in rows]
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(
            f'Δ parameters (M), {plain(diff["b"])} − {plain(diff["a"])}',
            f'Δ MACs (G), {plain(diff["b"])} − {plain(diff["a"])}',
        ),
        horizontal_spacing=0.1,
    )
    for col, key, scale in ((1, 'd_params', 1e6), (2, 'd_macs', 1e9)):
        vals = [r[key] / scale for r in rows]
        fig.add_trace(
            go.Bar(
                x=labels,
                y=vals,
                showlegend=False,
                marker_color=['#dc2626' if v > 0 else '#16a34a' for v in vals],
                hovertemplate='%{x}: %{y:+.4g}<extra></extra>',
            ),
            row=1,
            col=col,
        )
    fig.update_layout(**_LAYOUT, height=height)
    fig.update_layout(margin=dict(l=50, r=16, t=40, b=40))
    fig.update_annotations(font_size=12)
    return fig


def bench_figure(history: list[dict], height: int = 280) -> go.Figure:
    """Throughput (images/s) of each run in the history, labelled by model and settings."""
    if not history:
        return empty_figure('no measurement yet', height)
    labels = [f'#{i + 1} {plain(h["name"])}' for i, h in enumerate(history)]
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=[h.get('throughput') for h in history],
            marker_color='#3b82f6',
            customdata=[[h.get('settings', '')] for h in history],
            hovertemplate='%{x}<br>%{y:.4g} images/s<br>%{customdata[0]}<extra></extra>',
        )
    )
    fig.update_layout(**_LAYOUT, height=height, yaxis_title='images/s')
    return fig


def _num(v) -> str:
    return '—' if v is None else f'{v:g}'


__all__ = [
    'empty_figure',
    'stage_cost_figure',
    'accuracy_figure',
    'scaling_figure',
    'diff_figure',
    'bench_figure',
    'mixer_colour',
]
