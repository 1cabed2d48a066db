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
        labels = _preset_labels(shown, x, y)
        drawn = [t['metrics'] for t in trials] + [p['metrics'] for p in shown]
        box = {k: (min(m[k] for m in drawn), max(m[k] for m in drawn)) for k in (x, y)}
        fig.add_trace(
            go.Scatter(
                x=[p['metrics'][x] for p in shown],
                y=[p['metrics'][y] for p in shown],
                mode='markers+text',
                name='published presets',
                text=labels,
                hovertext=[plain(p['name']) for p in shown],
                textposition=_label_positions(
                    [(p['metrics'][x], p['metrics'][y]) for p in shown], labels, box[x], box[y], height - 118
                ),
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


# where a preset's label may go, in order of preference, and its box's offset from the point in label units:
# (dx in label widths, dy in label heights; y up)
_PLACES = {
    'top center': (-0.5, 0.35),
    'bottom center': (-0.5, -1.35),
    'middle right': (0.03, -0.5),
    'middle left': (-1.03, -0.5),
    'top right': (0.0, 0.35),
    'top left': (-1.0, 0.35),
    'bottom right': (0.0, -1.35),
    'bottom left': (-1.0, -1.35),
}
PLOT_WIDTH_PX = 850  # the plotting area's width assumed for placing labels (the tab is wider on most screens)
CHAR_PX, LINE_PX = 6.0, 13.0  # a 10 px label's character width and line height


def _label_positions(
    points: list[tuple[float, float]], labels: list[str], xr: tuple, yr: tuple, height_px: float
) -> list[str]:
    """A textposition per label so that no two labels overlap where the chart has room: each label, left to
    right, takes the first place (above, below, right, left, corners) whose box clears the labels placed before
    it and the preset markers; where none does, the place that overlaps least. Every label 'top center' put
    convformer_s18 over caformer_s18 and randformer_s24 over identityformer_s24 (close in one axis only)."""

    def px(v: tuple[float, float]) -> tuple[float, float]:
        return (
            (v[0] - xr[0]) / ((xr[1] - xr[0]) or 1.0) * PLOT_WIDTH_PX,
            (v[1] - yr[0]) / ((yr[1] - yr[0]) or 1.0) * height_px,
        )

    marks = [(cx - 5, cy - 5, cx + 5, cy + 5) for cx, cy in map(px, points)]
    placed: list[tuple[float, float, float, float]] = []
    out = ['top center'] * len(labels)

    def overlap(a, b) -> float:
        return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))

    for i in sorted((i for i, t in enumerate(labels) if t), key=lambda i: points[i]):
        cx, cy = px(points[i])
        w, h = CHAR_PX * len(labels[i]), LINE_PX
        best = None
        for place, (dx, dy) in _PLACES.items():
            b = (cx + dx * w, cy + dy * h, cx + dx * w + w, cy + dy * h + h)
            cost = sum(overlap(b, o) for o in placed) + sum(overlap(b, m) for j, m in enumerate(marks) if j != i)
            if best is None or cost < best[0]:
                best = (cost, place, b)
            if cost == 0:
                break
        out[i] = best[1]
        placed.append(best[2])
    return out


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
