"""Comparisons: every preset as a point (counted cost + published accuracy), the Pareto frontier, the scaling
of cost with resolution, and a per-stage diff of two specs. Plain data out; explorer.viz.plots draws it."""

from __future__ import annotations

import functools

from explorer.core.catalog import list_presets, parse_spec
from explorer.core.spec import ArchSpec
from explorer.measure.units import whole_number

# x axes of the accuracy scatter: key in a point -> axis title (with its convention)
X_AXES = {
    # each model at its own input size: the presets are all 224², a composed design is counted at its own
    'gmacs': 'GMACs per image, each model at its own input size (presets: 224²; analytic, 1 MAC = 1 multiply-add)',
    'params_m': 'parameters (millions, frozen included)',
    'throughput': 'measured throughput (images/s, this session)',
}


@functools.lru_cache(maxsize=1)
def _preset_points() -> tuple[dict, ...]:
    from explorer.core.catalog import get_preset
    from explorer.measure.analytic import analytic_cost

    out = []
    for row in list_presets():
        report = analytic_cost(ArchSpec.from_dict(get_preset(row['name'])))
        out.append(
            {
                **row,
                'params': report.params,
                'macs': report.macs,
                'params_m_counted': report.params / 1e6,
                'gmacs_counted': report.macs / 1e9,
            }
        )
    return tuple(out)


def preset_points(throughput: dict[str, float] | None = None) -> list[dict]:
    """All presets: published figures (top1, params_m, gmacs, source) and this package's analytic count
    (params, macs) at the preset's resolution; `throughput` (images/s) where a measurement of that preset is
    given in `throughput` (preset name -> images/s). The scatter's x values are the counted ones, so the
    composer's model (counted the same way) sits on the same scale."""
    throughput = throughput or {}
    return [
        {
            **p,
            'x_gmacs': p['gmacs_counted'],
            'x_params_m': p['params_m_counted'],
            'x_throughput': throughput.get(p['name']),
        }
        for p in _preset_points()
    ]


def pareto_front(points: list[dict], x: str, y: str = 'top1', lower_x_better: bool = True) -> list[int]:
    """Indices of the points no other point beats: better or equal y at better or equal x, strictly better in
    one. Points missing x or y are left out. Returned in increasing x."""
    pts = [(i, p[x], p[y]) for i, p in enumerate(points) if p.get(x) is not None and p.get(y) is not None]
    sign = 1 if lower_x_better else -1
    pts.sort(key=lambda t: (sign * t[1], -t[2]))
    front, best_y = [], float('-inf')
    for i, _, yv in pts:
        if yv > best_y:
            front.append(i)
            best_y = yv
    return sorted(front, key=lambda i: points[i][x])


def scaling(specs: dict[str, dict | str], sizes: list[int]) -> dict[str, list[dict]]:
    """name -> [{img_size, params, macs, act_bytes, note}, ...] for each spec at each input size it accepts
    (explorer.measure.analytic.scaling_curve; sizes a spec cannot take are left out, not errors). Fixed-token mixers
    are costed as rebuilt for each size (their params grow; `note` says so). Activation bytes: batch 1, fp32."""
    from explorer.measure.analytic import scaling_curve

    sizes = sorted({int(v) for v in sizes})
    return {name: [r for r in scaling_curve(parse_spec(spec), sizes) if r['valid']] for name, spec in specs.items()}


def diff(spec_a: dict | str, spec_b: dict | str, img_size: int | None = None) -> dict:
    """Per-stage difference B − A of analytic params and MACs, stages matched by index.

    Returns {'a': name, 'b': name, 'rows': [...], 'total': {...}}; each row has stage (1-based, or 'stem+head'),
    mixer/depth/dim of both sides ('—' where a side has no such stage), params_a, params_b, d_params, macs_a,
    macs_b, d_macs. MACs: one multiply-accumulate = 1, batch 1, at each spec's own img_size unless given."""
    from explorer.measure.analytic import analytic_cost

    a, b, img_size = parse_spec(spec_a), parse_spec(spec_b), whole_number(img_size)  # 256.0 from JSON clients
    ra, rb = analytic_cost(a, img_size=img_size), analytic_cost(b, img_size=img_size)
    rows = []
    for i in range(max(a.num_stages, b.num_stages)):
        sa = ra.stages[i] if i < a.num_stages else None
        sb = rb.stages[i] if i < b.num_stages else None
        row = {'stage': i + 1}
        for side, spec, sc in (('a', a, sa), ('b', b, sb)):
            st = spec.stages[i] if sc is not None else None
            row[f'mixer_{side}'] = st.mixer if st else '—'
            row[f'depth_{side}'] = st.depth if st else 0
            row[f'dim_{side}'] = st.dim if st else 0
            row[f'params_{side}'] = sc.params if sc else 0
            row[f'macs_{side}'] = sc.macs if sc else 0
        rows.append(row)
    other = {}
    for side, rep in (('a', ra), ('b', rb)):
        other[f'params_{side}'] = rep.params - sum(s.params for s in rep.stages)
        other[f'macs_{side}'] = rep.macs - sum(s.macs for s in rep.stages)
    rows.append(
        {
            'stage': 'stem+head',
            'mixer_a': '',
            'mixer_b': '',
            'depth_a': 0,
            'depth_b': 0,
            'dim_a': 0,
            'dim_b': 0,
            **other,
        }
    )
    for row in rows:
        row['d_params'] = row['params_b'] - row['params_a']
        row['d_macs'] = row['macs_b'] - row['macs_a']
    total = {
        'params_a': ra.params,
        'params_b': rb.params,
        'd_params': rb.params - ra.params,
        'macs_a': ra.macs,
        'macs_b': rb.macs,
        'd_macs': rb.macs - ra.macs,
    }
    return {'a': a.name, 'b': b.name, 'rows': rows, 'total': total, 'convention': ra.convention}
