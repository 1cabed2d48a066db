"""A picture of the composed network: input, stem, one block per stage, head; as self-contained SVG.

Each stage is drawn as a box whose height follows its token grid (side length, on a square-root scale so
small grids stay visible) and whose width follows its channel width (log scale); the thin slices inside are
its blocks (depth). Colour says which token mixer the stage uses. Pure string building: no plotting library.
"""

from __future__ import annotations

import math
from html import escape

from explorer.core.spec import ArchSpec

MIXER_COLOURS = {
    'identity': '#9ca3af',
    'pooling': '#60a5fa',
    'random': '#a78bfa',
    'sepconv': '#34d399',
    'attention': '#f59e0b',
    'spatial_mlp': '#f472b6',
    'cross_patch': '#fb7185',
    'cycle': '#2dd4bf',
}
_FALLBACK = ('#818cf8', '#facc15', '#4ade80', '#f87171')
MAX_SLICES = 24  # more blocks than this are drawn as 24 slices (the label gives the true depth)


def mixer_colour(mixer: str) -> str:
    return MIXER_COLOURS.get(mixer, _FALLBACK[sum(map(ord, mixer)) % len(_FALLBACK)])


def _box(x, y, w, h, fill, rx=6, stroke='#334155', extra=''):
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="{rx}" fill="{fill}" '
        f'stroke="{stroke}" stroke-width="1.2" {extra}/>'
    )


def _text(x, y, s, size=12, weight='normal', anchor='middle', fill='#0f172a'):
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" font-weight="{weight}" text-anchor="{anchor}" '
        f'fill="{fill}">{escape(str(s))}</text>'
    )


def _arrow(x0, x1, y):
    return (
        f'<line x1="{x0:.1f}" y1="{y:.1f}" x2="{x1 - 4:.1f}" y2="{y:.1f}" stroke="#64748b" stroke-width="1.5" '
        f'marker-end="url(#arrow)"/>'
    )


def network_svg(spec: ArchSpec) -> str:
    """SVG markup of the network (width 100% of its container, aspect kept)."""
    grids = spec.grid_sizes()
    max_side = max(h for h, _ in grids) or 1
    box_h_max, box_h_min = 116.0, 30.0
    top, mid = 46.0, 46.0 + box_h_max / 2
    parts, x = [], 10.0

    def side_h(side):  # square-root scale: a 56x56 grid is not 8x taller than a 7x7 one
        return box_h_min + (box_h_max - box_h_min) * math.sqrt(side / max_side)

    # input image
    in_h = side_h(max_side) * 0.9
    parts.append(_box(x, mid - in_h / 2, 46, in_h, '#e2e8f0'))
    parts.append(_text(x + 23, top - 22, 'input', 12, 'bold'))
    parts.append(_text(x + 23, mid + box_h_max / 2 + 20, f'{spec.in_chans}×{spec.img_size}²', 11))
    x += 46
    # stem
    x0 = x
    x += 26
    parts.append(_arrow(x0, x, mid))
    st = spec.stem
    parts.append(_box(x, mid - 30, 40, 60, '#cbd5e1'))
    parts.append(_text(x + 20, top - 22, 'stem', 12, 'bold'))
    parts.append(_text(x + 20, mid + 4, f'{st.kernel_size}×{st.kernel_size}', 10))
    parts.append(_text(x + 20, mid + box_h_max / 2 + 20, f'/{st.stride}', 11))
    x += 40
    for i, (stage, (h, w)) in enumerate(zip(spec.stages, grids)):
        gap = 40 if (i > 0 and stage.downsample) else 26
        parts.append(_arrow(x, x + gap, mid))
        if i > 0 and stage.downsample:
            parts.append(_text(x + gap / 2, mid - 8, f'/{spec.downsample.stride}', 10, fill='#475569'))
        x += gap
        bw = 70 + 22 * math.log2(max(stage.dim, 4) / 32) if stage.dim >= 32 else 70.0
        bh = side_h(h)
        y = mid - bh / 2
        colour = mixer_colour(stage.mixer)
        parts.append(_box(x, y, bw, bh, colour, extra='fill-opacity="0.85"'))
        n_slices = min(stage.depth, MAX_SLICES)
        for j in range(1, n_slices):
            sx = x + bw * j / n_slices
            parts.append(
                f'<line x1="{sx:.1f}" y1="{y + 3:.1f}" x2="{sx:.1f}" y2="{y + bh - 3:.1f}" '
                f'stroke="#ffffff" stroke-opacity="0.75" stroke-width="1"/>'
            )
        cx = x + bw / 2
        parts.append(_text(cx, top - 24, f'stage {i + 1}', 12, 'bold'))
        parts.append(_text(cx, top - 9, f'{stage.mixer} ×{stage.depth}', 11))
        parts.append(_text(cx, mid + box_h_max / 2 + 18, f'{stage.dim} ch', 11, 'bold'))
        parts.append(_text(cx, mid + box_h_max / 2 + 33, f'{h}×{w} = {h * w:,} tokens', 10.5, fill='#334155'))
        x += bw
    # head
    parts.append(_arrow(x, x + 26, mid))
    x += 26
    parts.append(_box(x, mid - 30, 52, 60, '#cbd5e1'))
    parts.append(_text(x + 26, top - 22, 'head', 12, 'bold'))
    parts.append(_text(x + 26, mid + 4, spec.head, 10))
    parts.append(_text(x + 26, mid + box_h_max / 2 + 20, f'{spec.num_classes} classes', 11))
    x += 52 + 10
    height = mid + box_h_max / 2 + 44
    defs = (
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="8" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#64748b"/></marker></defs>'
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {x:.0f} {height:.0f}" '
        f'style="width:100%;max-width:{x * 1.15:.0f}px;height:auto;font-family:system-ui,sans-serif" '
        f'role="img" aria-label="network diagram of {escape(spec.name)}">{defs}{"".join(parts)}</svg>'
    )


def legend_html(spec: ArchSpec) -> str:
    """Colour key for the mixers the spec uses."""
    seen = list(dict.fromkeys(st.mixer for st in spec.stages))
    items = ''.join(
        f'<span style="display:inline-flex;align-items:center;margin-right:14px">'
        f'<span style="width:12px;height:12px;border-radius:3px;background:{mixer_colour(m)};'
        f'margin-right:5px;display:inline-block"></span>{escape(m)}</span>'
        for m in seen
    )
    return (
        f'<div style="font-size:12px;color:#334155;margin-top:4px">{items}'
        '<span style="color:#64748b">box height: token grid side · width: channels · slices: blocks</span></div>'
    )


def network_html(spec: ArchSpec) -> str:
    return f'<div class="mfx-diagram">{network_svg(spec)}{legend_html(spec)}</div>'
