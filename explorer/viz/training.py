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
    fig.update_yaxes(title_text='loss (label-smoothed cross-entropy)', rangemode='tozero', secondary_y=False)
    fig.update_yaxes(title_text='test accuracy (%)', range=[0, 100], secondary_y=True)
    return fig
