"""A search's trials as a plotly scatter: one colour per mixer pattern, the Pareto frontier as a line, the
published presets as labelled points. Each trial's point carries its trial number (customdata[0]) so a click can
load that design (the app listens to plotly_click)."""

from __future__ import annotations

import plotly.graph_objects as go

from explorer.viz.plots import _LAYOUT, FAMILY_COLOURS, empty_figure
from explorer.viz.text import plain

LABELS = {
    'params_m': 'parameters (M)',
    'gmacs': 'GMACs per image (1 multiply-accumulate = 1)',
    'latency_ms': 'predicted latency (ms)',
    'act_mib': 'activation memory per image (MiB, float32)',
    'accuracy': 'Fashion-MNIST test accuracy (%)',
}
MAX_PATTERNS = 10  # colours; the rarer patterns share one grey trace
PRESET_COLOUR = '#dc2626'  # the published presets' diamonds
# the patterns' colours: the family palette without the presets' red (the second pattern was drawn in it)
PATTERN_COLOURS = tuple(c for c in FAMILY_COLOURS if c != PRESET_COLOUR)


def axes(objectives: dict) -> tuple[str, str]:
    """The plot's x and y metrics: the first two objectives (one objective: it against parameters)."""
    keys = list(objectives)
    if len(keys) == 1:
        return (keys[0], 'params_m') if keys[0] != 'params_m' else ('params_m', 'gmacs')
    return keys[0], keys[1]


PRESET_PICK = 'preset:'  # a preset point's customdata: this prefix and the preset's name (trials: their number)


def search_figure(
    trials: list[dict], frontier: list[dict], objectives: dict, presets: list[dict] | None = None, height: int = 520
) -> go.Figure:
    """trials / frontier: dicts with number, pattern, design, metrics, feasible (explorer.search.study.Frontier);
    presets: {'name', 'metrics'} placed where their metrics are known."""
    if not trials:
        return empty_figure('no trials yet: press Search', height)
    x, y = axes(objectives)
    trials = [t for t in trials if x in t['metrics'] and y in t['metrics']]  # a design never trained has no accuracy
    if not trials:
        return empty_figure('no trial has been trained yet: every design so far is outside the constraints', height)
    fig = go.Figure()
    counts: dict[str, int] = {}
    for t in trials:
        if t['feasible']:
            counts[t['pattern']] = counts.get(t['pattern'], 0) + 1
    top = sorted(counts, key=lambda p: (-counts[p], p))[:MAX_PATTERNS]
    groups = [(p, [t for t in trials if t['feasible'] and t['pattern'] == p]) for p in top]
    groups.append(('other patterns', [t for t in trials if t['feasible'] and t['pattern'] not in top]))
    groups.append(('outside the constraints', [t for t in trials if not t['feasible']]))
    for k, (name, pts) in enumerate(groups):
        if not pts:
            continue
        grey = name in ('other patterns', 'outside the constraints')
        colour = '#cbd5e1' if name == 'outside the constraints' else '#94a3b8' if grey else PATTERN_COLOURS[k]
        fig.add_trace(_points(pts, x, y, plain(name), colour, 5 if grey else 7))
    if frontier:
        pts = sorted(frontier, key=lambda t: (t['metrics'][x], t['metrics'][y]))
        fig.add_trace(
            go.Scatter(
                x=[t['metrics'][x] for t in pts],
                y=[t['metrics'][y] for t in pts],
                mode='lines+markers',
                name=f'Pareto frontier ({len(pts)})',
                line=dict(color='#0f172a', width=1.5),
                marker=dict(size=10, color='rgba(0,0,0,0)', line=dict(width=2, color='#0f172a')),
                customdata=[[t['number'], plain(t['design'])] for t in pts],
                hovertemplate='<b>frontier: trial %{customdata[0]}</b><br>%{customdata[1]}<br>'
                f'{x} %{{x:.4g}}, {y} %{{y:.4g}}<extra></extra>',
            )
        )
    # presets near the trials (within 1.5x their largest values): far-away giants squeeze the trials into a corner
    reach = {k: 1.5 * max(abs(t['metrics'][k]) for t in trials) for k in (x, y)}
    shown = [
        p
        for p in presets or []
        if all(p['metrics'].get(k) is not None and abs(p['metrics'][k]) <= reach[k] for k in (x, y))
    ]
    if shown:
        fig.add_trace(
            go.Scatter(
                x=[p['metrics'][x] for p in shown],
                y=[p['metrics'][y] for p in shown],
                mode='markers+text',
                name='published presets',
                text=_preset_labels(shown, x, y),
                hovertext=[plain(p['name']) for p in shown],
                textposition='top center',
                textfont=dict(size=10, color='#b91c1c'),
                marker=dict(symbol='diamond', size=9, color=PRESET_COLOUR),
                customdata=[[f'{PRESET_PICK}{p["name"]}'] for p in shown],  # a click opens the preset
                hovertemplate='<b>%{hovertext}</b> (click: open in Compose)<br>'
                + f'{x} %{{x:.4g}}, {y} %{{y:.4g}}<extra></extra>',
            )
        )
    fig.update_layout(**_LAYOUT, height=height, xaxis_title=LABELS[x], yaxis_title=LABELS[y], clickmode='event')
    fig.update_layout(margin=dict(l=56, r=16, t=70, b=48))
    return fig


def _preset_labels(shown: list[dict], x: str, y: str, near: float = 0.04) -> list[str]:
    """One label per cluster of presets: points within `near` of the plotted span of each other on both axes
    (PoolFormer-, IdentityFormer- and RandFormer-S12 count the same) share one label, 'name +k', the others'
    names on hover. Labelled one by one, they printed over each other."""
    span = {k: (max(p['metrics'][k] for p in shown) - min(p['metrics'][k] for p in shown)) or 1.0 for k in (x, y)}
    labels, anchors = [''] * len(shown), []  # anchors: [index, count]
    for i, p in enumerate(shown):
        for a in anchors:
            q = shown[a[0]]
            if all(abs(p['metrics'][k] - q['metrics'][k]) <= near * span[k] for k in (x, y)):
                a[1] += 1
                break
        else:
            anchors.append([i, 0])
    for i, extra in anchors:
        labels[i] = plain(shown[i]['name']) + (f' +{extra}' if extra else '')
    return labels


def _points(pts: list[dict], x: str, y: str, name: str, colour: str, size: int) -> go.Scatter:
    return go.Scatter(
        x=[t['metrics'][x] for t in pts],
        y=[t['metrics'][y] for t in pts],
        mode='markers',
        name=name,
        marker=dict(size=size, color=colour, opacity=0.8),
        customdata=[[t['number'], plain(t['design'])] for t in pts],
        hovertemplate='<b>trial %{customdata[0]}</b> (click: open in Compose)<br>%{customdata[1]}<br>'
        f'{x} %{{x:.4g}}, {y} %{{y:.4g}}<extra></extra>',
    )
