"""Figures of the "Train" tab: training curves (data in, plotly Figure out)."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.viz.text import plain

_LAYOUT = dict(
    template='plotly_white',
    margin=dict(l=50, r=50, t=36, b=40),
    font=dict(size=12),
    legend=dict(orientation='h', yanchor='bottom', y=1.02, xanchor='left', x=0),
)


def training_figure(steps: list[dict], epochs: list[dict], title: str = '', height: int = 320) -> go.Figure:
    """Training loss per logged step (left axis) and test accuracy per epoch in % (right axis).

    steps: dicts with 'epoch' (fractional) and 'loss'; epochs: dicts with 'epoch' and optionally 'test_accuracy'
    (a fraction) and 'train_loss', as explorer.train.loop's progress events and history give them."""
    fig = make_subplots(specs=[[{'secondary_y': True}]])
    fig.add_trace(
        go.Scatter(
            x=[s['epoch'] for s in steps],
            y=[s['loss'] for s in steps],
            mode='lines',
            name='training loss (batch)',
            line=dict(color='#94a3b8', width=1),
        ),
        secondary_y=False,
    )
    done = [e for e in epochs if e.get('train_loss') is not None]
    if done:
        fig.add_trace(
            go.Scatter(
                x=[e['epoch'] for e in done],
                y=[e['train_loss'] for e in done],
                mode='lines+markers',
                name='training loss (epoch mean)',
                line=dict(color='#2563eb'),
            ),
            secondary_y=False,
        )
    acc = [e for e in epochs if e.get('test_accuracy') is not None]
    if acc:
        fig.add_trace(
            go.Scatter(
                x=[e['epoch'] for e in acc],
                y=[100 * e['test_accuracy'] for e in acc],
                mode='lines+markers+text',
                name='test accuracy (%)',
                text=[f'{100 * e["test_accuracy"]:.1f}' for e in acc],
                textposition='top center',
                line=dict(color='#16a34a'),
            ),
            secondary_y=True,
        )
    fig.update_layout(**_LAYOUT, height=height, title=dict(text=plain(title), font=dict(size=13)))
    fig.update_xaxes(title_text='epoch', rangemode='tozero')
    fig.update_yaxes(title_text='training loss (label-smoothed cross-entropy)', rangemode='tozero', secondary_y=False)
    fig.update_yaxes(title_text='test accuracy (%)', range=[0, 100], secondary_y=True)
    return fig


# the per-epoch curves a run records (explorer.train.loop's history rows): key, subplot column, legend text, dash
RUN_METRICS = (
    ('test_accuracy', 1, 'test accuracy (%)', 'solid'),
    ('test_loss', 2, 'test loss', 'solid'),
    ('train_loss', 2, 'training loss (label-smoothed, augmented images, epoch mean)', 'dot'),
)
RUN_COLOURS = ('#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#db2777', '#65a30d', '#475569')


def run_curve(history: list[dict], metrics: dict | None, key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of one metric over a run: its history rows that hold `key`, then the final evaluation
    from `metrics` when the run stopped after its last recorded row (stopped mid-epoch). test_accuracy in %."""
    rows = [(r['epoch'], r[key]) for r in history if r.get(key) is not None]
    final_key = {'test_accuracy': 'test_accuracy', 'test_loss': 'test_loss'}.get(key)
    m = metrics or {}
    if final_key and m.get(final_key) is not None and m.get('epochs') is not None:
        if not rows or m['epochs'] > rows[-1][0]:
            rows.append((m['epochs'], m[final_key]))
    scale = 100 if key == 'test_accuracy' else 1
    return [e for e, _ in rows], [scale * v for _, v in rows]


def runs_figure(runs: list[dict], height: int = 340) -> go.Figure:
    """The per-epoch curves of several runs overlaid: test accuracy (%) on the left, test and training loss on
    the right; one trace per run per metric (RUN_METRICS), one colour per run.

    runs: dicts with 'name', 'history' (rows with 'epoch' and any of the RUN_METRICS keys), optionally 'metrics'
    (the checkpoint's final evaluation) and 'live' (True for the run in progress: dashed, named "... (training)").
    """
    # what the dotted curve is goes in the loss plot's title: on its axis (about 45 characters) it was cut at both
    # ends of a 340 px chart
    titles = ('test accuracy (%)', 'loss (dotted: training, label-smoothed)')
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles, horizontal_spacing=0.1)
    for i, run in enumerate(runs):
        colour = RUN_COLOURS[i % len(RUN_COLOURS)]
        name = plain(run['name']) + (' (training)' if run.get('live') else '')
        for key, col, label, dash in RUN_METRICS:
            x, y = run_curve(run.get('history') or [], run.get('metrics'), key)
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode='lines+markers',
                    name=name,
                    legendgroup=name,
                    showlegend=key == 'test_accuracy',
                    meta=key,
                    line=dict(color=colour, dash='dash' if run.get('live') and dash == 'solid' else dash, width=2),
                    marker=dict(size=5),
                    customdata=[name] * len(x),  # the run's name as data, never as template text
                    hovertemplate=f'%{{customdata}}<br>{label}: %{{y:.4g}} after epoch %{{x:.3g}}<extra></extra>',
                ),
                row=1,
                col=col,
            )
    layout = dict(_LAYOUT, margin=dict(l=50, r=20, t=56, b=40))
    layout['legend'] = dict(orientation='h', yanchor='bottom', y=1.12, xanchor='left', x=0)
    fig.update_layout(**layout, height=height)
    if not runs:
        fig.add_annotation(
            text='tick runs in the table to overlay their curves',
            showarrow=False,
            x=0.5,
            y=0.5,
            xref='paper',
            yref='paper',
            font=dict(color='#64748b'),
        )
    fig.update_xaxes(title_text='epoch', rangemode='tozero')
    fig.update_yaxes(rangemode='tozero', row=1, col=1)
    fig.update_yaxes(title_text='cross-entropy (solid: test)', rangemode='tozero', row=1, col=2)
    return fig
