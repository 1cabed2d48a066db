"""Figures and images of the "Predict & explain" tab: data in, plotly Figure (or RGB array) out.

Colour conventions: signed maps (IG, GradientShap, Occlusion, pooling/Jacobian mixing weights) use a diverging
blue-white-red scale centred on 0 with symmetric limits; non-negative maps (Saliency, GradCAM, attention,
ERF) use a sequential scale from 0 to the maximum.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw
from plotly.subplots import make_subplots

from explorer.viz.text import plain

_LAYOUT = dict(template='plotly_white', margin=dict(l=10, r=10, t=40, b=10), font=dict(size=12))
DIVERGING = [[0.0, '#2166ac'], [0.25, '#92c5de'], [0.5, '#f7f7f7'], [0.75, '#f4a582'], [1.0, '#b2182b']]
SEQUENTIAL = [[0.0, '#000004'], [0.25, '#57106e'], [0.5, '#bc3754'], [0.75, '#f98e09'], [1.0, '#fcffa4']]


def is_signed(a: np.ndarray) -> bool:
    return bool(np.nanmin(a) < 0)


def _limits(a: np.ndarray) -> tuple[float, float]:
    if is_signed(a):
        m = float(np.nanmax(np.abs(a))) or 1.0
        return -m, m
    return 0.0, float(np.nanmax(a)) or 1.0


def topk_figure(top: list[dict], title: str = 'top-k', height: int = 300) -> go.Figure:
    """Horizontal bars of softmax probability; `top` rows are Prediction dicts (index, label, prob). Taller than
    `height` when the bars would be thinner than 22 px, so every label stays readable."""
    rows = list(reversed(top))
    height = max(height, 80 + 22 * len(rows))
    labels = [f'{plain(clip_text(r["label"], 38))} ({r["index"]})' for r in rows]
    fig = go.Figure(
        go.Bar(
            x=[r['prob'] for r in rows],
            y=labels,
            orientation='h',
            marker_color='#2563eb',
            text=[f'{r["prob"]:.1%}' for r in rows],
            textposition='outside',
            cliponaxis=False,
            hovertemplate='%{y}<br>p = %{x:.4f}<extra></extra>',
        )
    )
    fig.update_layout(
        **_LAYOUT,
        title=dict(text=plain(title), font=dict(size=13)),
        height=height,
        xaxis=dict(range=[0, 1], title='softmax probability', tickformat='.0%'),
    )
    fig.update_layout(margin=dict(l=10, r=10, t=40, b=40))
    return fig


def clip_text(s: str, n: int) -> str:
    """s cut to n characters with an ellipsis."""
    return s if len(s) <= n else s[: n - 1] + '…'


def _image_axes(fig: go.Figure, h: int, w: int, row=None, col=None) -> None:
    """Square pixels: the y axis scaled to its own subplot's x axis (in a row of subplots 'x2', 'x3', ...)."""
    kw = dict(row=row, col=col) if row else {}
    x = fig.get_subplot(row, col).yaxis.anchor if row else 'x'
    fig.update_xaxes(visible=False, range=[-0.5, w - 0.5], constrain='domain', **kw)
    fig.update_yaxes(visible=False, range=[h - 0.5, -0.5], scaleanchor=x, **kw)


def overlay_figure(
    image: np.ndarray,
    amap: np.ndarray,
    title: str = '',
    opacity: float = 0.55,
    colorbar_title: str = 'attribution',
    height: int = 380,
) -> go.Figure:
    """The (H, W, 3) uint8 image with the (H, W) map on top, and its colour scale."""
    fig = go.Figure()
    _add_overlay(fig, image, amap, opacity, colorbar_title)
    h, w = amap.shape
    fig.update_layout(**_LAYOUT, title=dict(text=plain(title), font=dict(size=13)), height=height)
    _image_axes(fig, h, w)
    return fig


def _add_overlay(fig, image, amap, opacity, colorbar_title, row=None, col=None, colorbar_x=None):
    lo, hi = _limits(amap)
    kw = dict(row=row, col=col) if row else {}
    fig.add_trace(go.Image(z=image, hoverinfo='skip'), **kw)
    cb = dict(title=dict(text=colorbar_title, side='right'), thickness=12, len=0.85)
    if colorbar_x is not None:
        cb['x'] = colorbar_x
    fig.add_trace(
        go.Heatmap(
            z=amap,
            zmin=lo,
            zmax=hi,
            opacity=opacity,
            colorscale=DIVERGING if lo < 0 else SEQUENTIAL,
            colorbar=cb,
            hovertemplate='x %{x}, y %{y}: %{z:.3g}<extra></extra>',
        ),
        **kw,
    )


def compare_figure(panels: list[dict], height: int = 380) -> go.Figure:
    """Side by side overlays. panels: dicts with image (H, W, 3), map (H, W), title."""
    n = len(panels)
    fig = make_subplots(rows=1, cols=n, subplot_titles=[plain(p['title']) for p in panels], horizontal_spacing=0.12)
    for i, p in enumerate(panels, start=1):
        _add_overlay(fig, p['image'], p['map'], 0.55, '', row=1, col=i, colorbar_x=i / n - 0.02 if n > 1 else None)
        h, w = p['map'].shape
        _image_axes(fig, h, w, row=1, col=i)
    fig.update_layout(**_LAYOUT, height=height)
    fig.update_annotations(font_size=12)
    return fig


def mixing_figure(
    image: np.ndarray | None,
    weights: np.ndarray,
    query: tuple[int, int],
    title: str = '',
    height: int = 380,
    zoom: bool = True,
) -> go.Figure:
    """A (h, w) token-mixing map drawn over the image (each token covers its patch), query token outlined.
    Tokens with weight exactly 0 are left transparent; with `zoom`, a local map (pooling, sepconv) is shown
    around its support (at least 9 tokens wide) instead of the whole grid."""
    h, w = weights.shape
    H, W = image.shape[:2] if image is not None else (h, w)
    sy, sx = H / h, W / w
    lo, hi = _limits(weights)
    z = np.where(weights == 0, np.nan, weights)
    fig = go.Figure()
    if image is not None:
        fig.add_trace(go.Image(z=image, hoverinfo='skip'))
    fig.add_trace(
        go.Heatmap(
            z=z,
            x0=(sx - 1) / 2,
            dx=sx,
            y0=(sy - 1) / 2,
            dy=sy,
            zmin=lo,
            zmax=hi,
            hoverongaps=False,
            opacity=0.7 if image is not None else 1.0,
            colorscale=DIVERGING if lo < 0 else SEQUENTIAL,
            colorbar=dict(title=dict(text='weight', side='right'), thickness=12, len=0.85),
            customdata=np.stack(np.meshgrid(np.arange(w), np.arange(h)), -1),
            hovertemplate='token (%{customdata[1]}, %{customdata[0]}): %{z:.4g}<extra></extra>',
        )
    )
    r, c = query
    fig.add_shape(
        type='rect',
        x0=c * sx - 0.5,
        x1=(c + 1) * sx - 0.5,
        y0=r * sy - 0.5,
        y1=(r + 1) * sy - 0.5,
        line=dict(color='#16a34a', width=2),
    )
    fig.update_layout(**_LAYOUT, title=dict(text=plain(title), font=dict(size=13)), height=height)
    _image_axes(fig, H, W)
    rows, cols = np.nonzero(weights)
    if zoom and rows.size and max(h, w) > 9:
        r0, r1 = _window(rows.min(), rows.max(), h)
        c0, c1 = _window(cols.min(), cols.max(), w)
        if (r1 - r0) * (c1 - c0) < 0.5 * h * w:
            fig.update_xaxes(range=[c0 * sx - 0.5, c1 * sx - 0.5])
            fig.update_yaxes(range=[r1 * sy - 0.5, r0 * sy - 0.5])
    return fig


def _window(lo: int, hi: int, n: int, margin: int = 2, least: int = 9) -> tuple[int, int]:
    """[start, stop) token range around lo..hi with a margin, at least `least` wide, inside [0, n)."""
    a, b = lo - margin, hi + 1 + margin
    if b - a < least:
        a, b = a - (least - (b - a)) // 2, a - (least - (b - a)) // 2 + least
    a, b = max(0, a), min(n, b)
    return a, b


def erf_figure(erfs: list[dict], height: int = 300) -> go.Figure:
    """One heatmap per stage: ERF maps (H, W) on a log10 scale, titled with the 20/50/90 % area fractions.
    erfs: dicts with stage (0-based), map, area ({'20%': f, '50%': f, '90%': f}) and mixer."""
    titles = [
        f'S{e["stage"] + 1} {e.get("mixer", "")}<br>20/50/90% of the gradient in '
        + '/'.join(f'{100 * e["area"][k]:.1f}' for k in ('20%', '50%', '90%'))
        + '% of pixels'
        for e in erfs
    ]
    fig = make_subplots(rows=1, cols=len(erfs), subplot_titles=titles, horizontal_spacing=0.03)
    for i, e in enumerate(erfs, start=1):
        m = np.asarray(e['map'], np.float64)
        z = np.log10(m / (m.max() or 1.0) + 1e-4)
        fig.add_trace(
            go.Heatmap(
                z=z,
                zmin=-4,
                zmax=0,
                colorscale=SEQUENTIAL,
                showscale=i == len(erfs),
                colorbar=dict(title=dict(text='log10 rel.', side='right'), thickness=10),
                hovertemplate='x %{x}, y %{y}: %{z:.2f}<extra></extra>',
            ),
            row=1,
            col=i,
        )
        _image_axes(fig, *m.shape, row=1, col=i)
    fig.update_layout(**_LAYOUT, height=height)
    fig.update_layout(margin=dict(l=10, r=10, t=60, b=10))
    fig.update_annotations(font_size=11)
    return fig


def deletion_figure(curves: dict[str, dict], height: int = 260) -> go.Figure:
    """Deletion curves (DeletionCurve dicts) by name; the legend shows each AUC (lower = more faithful)."""
    fig = go.Figure()
    for name, c in curves.items():
        fig.add_trace(
            go.Scatter(
                x=c['fractions'],
                y=c['probs'],
                mode='lines+markers',
                marker=dict(size=4),
                name=f'{plain(name)}: AUC {c["auc"]:.3f}',
            )
        )
    fig.update_layout(
        **_LAYOUT,
        height=height,
        title=dict(text='deletion curve (lower AUC = more faithful)', font=dict(size=13)),
        xaxis=dict(title='fraction of pixels removed', range=[0, 1]),
        yaxis=dict(title='target probability', range=[0, 1]),
    )
    fig.update_layout(margin=dict(l=50, r=10, t=40, b=40))
    return fig


def faithfulness_figure(curves: dict[str, dict], height: int = 280) -> go.Figure:
    """Deletion and insertion curves side by side, each map's curve beside the mean curve of random pixel orders
    (dotted, same colour). curves: name -> Faithfulness.to_dict(). Legends give the areas and the random orders'
    mean ± spread; lower deletion and higher insertion areas are more faithful."""
    palette = ['#2563eb', '#dc2626', '#059669', '#9333ea']
    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.1,
        subplot_titles=['deletion (lower AUC = more faithful)', 'insertion (higher AUC = more faithful)'],
    )
    for i, (name, f) in enumerate(curves.items()):
        colour = palette[i % len(palette)]
        for col, kind in ((1, 'deletion'), (2, 'insertion')):
            c, r = f[kind], f[f'random_{kind}_auc']
            fig.add_trace(
                go.Scatter(
                    x=c['fractions'],
                    y=c['probs'],
                    mode='lines',
                    line=dict(color=colour, width=2),
                    name=f'{plain(name)} {kind}: AUC {c["auc"]:.3f}',
                    legendgroup=f'{i}',
                ),
                row=1,
                col=col,
            )
            if f.get(f'random_{kind}_curve'):
                fig.add_trace(
                    go.Scatter(
                        x=c['fractions'],
                        y=f[f'random_{kind}_curve'],
                        mode='lines',
                        line=dict(color=colour, width=1, dash='dot'),
                        name=f'random orders: {r["mean"]:.3f} ± {r["std"]:.3f}',
                        legendgroup=f'{i}',
                    ),
                    row=1,
                    col=col,
                )
    fig.update_xaxes(title='fraction of pixels', range=[0, 1])
    fig.update_yaxes(range=[0, 1])
    fig.update_yaxes(title='target probability', row=1, col=1)
    fig.update_layout(**_LAYOUT, height=height)
    fig.update_layout(margin=dict(l=50, r=10, t=40, b=40), legend=dict(orientation='h', y=-0.3, font=dict(size=11)))
    fig.update_annotations(font_size=12)
    return fig


# ---- PNG rendering for the CLI (no plotly) ------------------------------------------------------------------
def colormap(a: np.ndarray, lo: float, hi: float, signed: bool) -> np.ndarray:
    """Map values to (..., 3) uint8 with the module's diverging or sequential scale."""
    stops = DIVERGING if signed else SEQUENTIAL
    pos = np.array([s for s, _ in stops])
    rgb = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for _, c in stops], np.float64)
    t = np.clip((np.asarray(a, np.float64) - lo) / ((hi - lo) or 1.0), 0, 1)
    out = np.stack([np.interp(t, pos, rgb[:, k]) for k in range(3)], -1)
    return (out + 0.5).astype(np.uint8)


def overlay_png(
    image: np.ndarray, amap: np.ndarray, title: str = '', alpha: float = 0.55, scale: int | None = None
) -> Image.Image:
    """Input | overlay | colour bar with limits, as one RGB image (nearest-neighbour upscaled when small)."""
    lo, hi = _limits(amap)
    heat = colormap(amap, lo, hi, lo < 0)
    blend = (image.astype(np.float64) * (1 - alpha) + heat * alpha + 0.5).astype(np.uint8)
    h, w = amap.shape
    scale = scale or max(1, 256 // max(h, w))
    left = Image.fromarray(image).resize((w * scale, h * scale), Image.NEAREST)
    mid = Image.fromarray(blend).resize((w * scale, h * scale), Image.NEAREST)
    bar_h = h * scale
    bar = colormap(np.linspace(hi, lo, bar_h)[:, None].repeat(16, 1), lo, hi, lo < 0)
    canvas = Image.new('RGB', (2 * w * scale + 110, bar_h + 28), 'white')
    canvas.paste(left, (0, 24))
    canvas.paste(mid, (w * scale + 8, 24))
    canvas.paste(Image.fromarray(bar), (2 * w * scale + 20, 24))
    d = ImageDraw.Draw(canvas)
    d.text((2, 4), title, fill='black')
    d.text((2 * w * scale + 40, 24), f'{hi:.3g}', fill='black')
    d.text((2 * w * scale + 40, 24 + bar_h - 12), f'{lo:.3g}', fill='black')
    return canvas
