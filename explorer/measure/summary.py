"""Structural summary of a built model: what `explorer show` prints."""

from __future__ import annotations

from explorer.core.build import build_model
from explorer.core.spec import ArchSpec
from explorer.measure.guard import check_request


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def summarize(spec: ArchSpec) -> dict:
    """Per-stage mixer, depth, dim, output shape (C, H, W) and parameter count of the built model.

    Parameters are exact counts of the built module (frozen RandFormer matrices included, reported apart).
    """
    check_request(spec, batch_size=1)  # it builds the model: a small file can name one of any size
    model = build_model(spec)
    grids = spec.grid_sizes()
    stages = []
    for i, (st, stage) in enumerate(zip(spec.stages, model.stages)):
        stages.append(
            {
                'index': i,
                'mixer': st.mixer,
                'depth': st.depth,
                'dim': st.dim,
                'mlp_ratio': st.mlp_ratio,
                'out_shape': [st.dim, *grids[i]],
                'params': _count(stage),
            }
        )
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return {
        'name': spec.name,
        'stages': stages,
        'stem_params': _count(model.stem),
        'head_params': _count(model.head),
        'params': _count(model),
        'frozen_params': frozen,
    }
