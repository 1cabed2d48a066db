"""How each token mixer moves information: token-mixing maps and effective receptive fields.

A token-mixing map answers, for one block and one output (query) token: with which weights does the mixer
combine the input tokens into it? It is drawn on the block's token grid.

- Exact where the mixer is a fixed linear map or exposes its weights:
  pooling `pool(x) - x`: 1/count on the averaging window (count excludes padding) minus 1 at the query;
  random: the frozen matrix row R[q, :]; identity: 1 at the query; attention: softmax(q k^T * scale) per
  head, computed from the mixer's own qkv projection (never from the fused SDPA kernel), plus their mean.
- From the mixer's Jacobian otherwise (sepconv, spatial_mlp, cross_patch, cycle, or any mixer on request),
  at the mixer's actual input for an image (or a seeded random input without one). J[q, n] is a C x C block;
  reduce='diag' takes the mean of its diagonal (channel c's input at token n -> channel c's output at q;
  signed, equal to the exact weight for channel-wise mixers such as pooling), reduce='norm' its Frobenius
  norm (all channel paths, unsigned).

The effective receptive field of a stage (Luo et al., 2016) is |d(sum over channels of the centre output
token) / d(input pixels)|, summed over input channels and averaged over images, normalised to sum 1; with it
the fractions of the image area that hold 20 %, 50 % and 90 % of that contribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from timm.models.metaformer import Attention as TimmAttention
from timm.models.metaformer import Pooling as TimmPooling

from explorer.explain.attribute import resolve_stage

EXACT_MIXERS = ('pooling', 'random', 'identity', 'attention')
REDUCTIONS = ('diag', 'norm')
ERF_LEVELS = (0.2, 0.5, 0.9)


@dataclass
class MixingMap:
    """weights: (heads, h, w) over the block's input token grid (heads = 1 unless attention)."""

    mixer: str
    stage: int
    block: int
    query: tuple[int, int]
    grid: tuple[int, int]
    weights: np.ndarray
    method: str  # 'exact' | 'jacobian'
    reduce: str | None = None

    @property
    def mean(self) -> np.ndarray:
        """(h, w): the head average (attention) or the only map."""
        return self.weights.mean(0)

    @property
    def depends_on_input(self) -> bool:
        """False only for the exact maps of linear mixers (pooling, identity, random): attention weights and every
        Jacobian change with what the mixer sees."""
        return not (self.method == 'exact' and self.mixer in ('pooling', 'identity', 'random'))

    def to_dict(self) -> dict:
        return {
            'mixer': self.mixer,
            'stage': self.stage,
            'block': self.block,
            'query': list(self.query),
            'grid': list(self.grid),
            'method': self.method,
            'reduce': self.reduce,
            'depends_on_input': self.depends_on_input,
            'heads': int(self.weights.shape[0]),
            'weights': self.weights.round(6).tolist(),
            'mean': self.mean.round(6).tolist(),
        }


def mixer_kind(mixer: nn.Module) -> str:
    name = getattr(mixer, 'mixer_name', None)
    if name:
        return name
    if isinstance(mixer, TimmPooling):
        return 'pooling'
    if isinstance(mixer, TimmAttention):
        return 'attention'
    if isinstance(mixer, nn.Identity):
        return 'identity'
    return type(mixer).__name__


# ---- exact maps -------------------------------------------------------------------------------------------
def pooling_weights(pool_size: int, grid: tuple[int, int], query: tuple[int, int]) -> np.ndarray:
    """(h, w) weights of `AvgPool2d(pool_size, 1, pool_size // 2, count_include_pad=False)(x) - x` at query."""
    h, w = grid
    r, c = query
    p = pool_size // 2
    r0, r1, c0, c1 = max(0, r - p), min(h, r + p + 1), max(0, c - p), min(w, c + p + 1)
    out = np.zeros((h, w), np.float64)
    out[r0:r1, c0:c1] = 1.0 / ((r1 - r0) * (c1 - c0))
    out[r, c] -= 1.0
    return out


@torch.no_grad()
def attention_weights(mixer: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T * scale) from the mixer's qkv projection. tokens: (1, N, C). Returns (heads, N, N)."""
    B, N, _ = tokens.shape
    qkv = mixer.qkv(tokens).reshape(B, N, 3, mixer.num_heads, mixer.head_dim).permute(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]
    return ((q @ k.transpose(-2, -1)) * mixer.scale).softmax(-1)[0]


# ---- Jacobian maps ----------------------------------------------------------------------------------------
def jacobian_weights(
    mixer: nn.Module,
    inp: torch.Tensor,
    query: tuple[int, int],
    grid: tuple[int, int],
    reduce: str = 'diag',
    chunk: int = 32,
) -> np.ndarray:
    """(h, w) map from the Jacobian of output token `query` w.r.t. all input tokens, at input `inp`
    ((1, C, h, w) NCHW or (1, N, C) token layout)."""
    if reduce not in REDUCTIONS:
        raise ValueError(f'reduce: {reduce!r} is not allowed; choose from {", ".join(REDUCTIONS)}')
    tokens = inp.dim() == 3
    h, w = grid
    qi = query[0] * w + query[1]
    inp = inp.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        y = mixer(inp)
        out_q = y[0, qi, :] if tokens else y[0, :, query[0], query[1]]  # (C,)
        C = out_q.numel()
        acc = torch.zeros(h * w, dtype=torch.float64)
        for start in range(0, C, chunk):
            idx = torch.arange(start, min(C, start + chunk))
            grads = _batched_grads(out_q, inp, idx)  # (k, *inp.shape[1:])
            g = grads if tokens else grads.flatten(2).transpose(1, 2)  # (k, N, C_in)
            if reduce == 'diag':
                acc += g[torch.arange(len(idx)), :, idx].sum(0).double()
            else:
                acc += g.double().pow(2).sum((0, 2))
    acc = acc / C if reduce == 'diag' else acc.sqrt()
    return acc.view(h, w).numpy()


def _batched_grads(out: torch.Tensor, inp: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    eye = torch.zeros(len(idx), out.numel(), dtype=out.dtype)
    eye[torch.arange(len(idx)), idx] = 1
    try:
        return torch.autograd.grad(out, inp, eye, retain_graph=True, is_grads_batched=True)[0][:, 0]
    except RuntimeError:  # an op without a batching rule: one backward pass per channel
        return torch.stack([torch.autograd.grad(out, inp, e, retain_graph=True)[0][0] for e in eye])


# ---- the verb ---------------------------------------------------------------------------------------------
def mixer_input(model: nn.Module, stage: int, block: int, x: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
    """What the block's token mixer receives (its norm1 output) for image x; a seeded N(0, 1) input of the
    right shape without one. (1, C, h, w), or (1, N, C) for token-layout (attention) stages."""
    st = model.stages[stage]
    mixer = st.blocks[block].token_mixer
    if x is not None:
        seen = {}
        hook = mixer.register_forward_pre_hook(lambda m, args: seen.setdefault('x', args[0].detach()))
        try:
            with torch.no_grad():
                model(x[:1])
        finally:
            hook.remove()
        return seen['x']
    C = model.feature_info[stage]['num_chs']
    h, w = stage_grid(model, stage)
    g = torch.Generator().manual_seed(seed)
    shape = (1, C, h, w) if st.use_nchw else (1, h * w, C)
    return torch.randn(shape, generator=g)


def stage_grid(model: nn.Module, stage: int) -> tuple[int, int]:
    spec = getattr(model, 'spec', None)
    if spec is not None:
        return spec.grid_sizes()[stage]
    size = model.pretrained_cfg['input_size'][-1] // model.feature_info[stage]['reduction']
    return size, size


@torch.no_grad()
def mixing_map(
    model: nn.Module,
    stage: int,
    block: int = 0,
    query: tuple[int, int] | None = None,
    x: torch.Tensor | None = None,
    *,
    method: str = 'auto',
    reduce: str = 'diag',
    seed: int = 0,
) -> MixingMap:
    """Token-mixing weights of stages[stage].blocks[block] for output token `query` (row, col; default: the
    centre). x: (1, C, H, W) normalised image (None: a seeded random mixer input). method: 'auto' (exact
    where possible, else Jacobian), 'exact' or 'jacobian'."""
    model.eval()
    stage = resolve_stage(stage, len(model.stages))
    blocks = model.stages[stage].blocks
    if isinstance(block, bool) or not isinstance(block, int) or not -len(blocks) <= block < len(blocks):
        raise ValueError(
            f'block: {block!r} is out of range; stage {stage} has {len(blocks)} blocks (0 to {len(blocks) - 1})'
        )
    block %= len(blocks)
    mixer = blocks[block].token_mixer
    kind = mixer_kind(mixer)
    if method not in ('auto', 'exact', 'jacobian'):
        raise ValueError(f'method: {method!r} is not allowed; choose from auto, exact, jacobian')
    if method == 'exact' and kind not in EXACT_MIXERS:
        raise ValueError(f'method: no exact map for the {kind} mixer (exact: {", ".join(EXACT_MIXERS)}); use jacobian')
    h, w = grid = stage_grid(model, stage)
    query = (h // 2, w // 2) if query is None else tuple(int(v) for v in query)
    if len(query) != 2 or not (0 <= query[0] < h and 0 <= query[1] < w):
        raise ValueError(
            f'query: {query} is outside the {h}x{w} token grid of stage {stage} (row 0 to {h - 1}, column 0 to {w - 1})'
        )
    qi = query[0] * w + query[1]
    exact = method == 'exact' or (method == 'auto' and kind in EXACT_MIXERS)
    if exact and kind == 'pooling':
        k = mixer.pool.kernel_size
        weights = pooling_weights(k if isinstance(k, int) else k[0], grid, query)[None]
    elif exact and kind == 'identity':
        weights = np.zeros((1, h, w))
        weights[0, query[0], query[1]] = 1.0
    elif exact and kind == 'random':
        weights = mixer.random_matrix[qi].double().view(1, h, w).numpy()
    elif exact and kind == 'attention':
        tokens = mixer_input(model, stage, block, x, seed)
        weights = attention_weights(mixer, tokens)[:, qi].double().view(-1, h, w).numpy()
    else:
        inp = mixer_input(model, stage, block, x, seed)
        weights = jacobian_weights(mixer, inp, query, grid, reduce)[None]
        return MixingMap(kind, stage, block, query, grid, weights.astype(np.float64), 'jacobian', reduce)
    return MixingMap(kind, stage, block, query, grid, np.asarray(weights, np.float64), 'exact')


# ---- effective receptive field --------------------------------------------------------------------------
@dataclass
class ERF:
    """map: (H, W) float64, sums to 1. area: {level: fraction of the image area holding that share}."""

    stage: int
    map: np.ndarray
    area: dict
    n_images: int

    def to_dict(self) -> dict:
        return {
            'stage': self.stage,
            'n_images': self.n_images,
            'area': {f'{int(k * 100)}%': v for k, v in self.area.items()},
        }


def area_fractions(contrib: np.ndarray, levels=ERF_LEVELS) -> dict:
    """Smallest fraction of pixels (taken in decreasing order of contribution) whose sum reaches each level."""
    v = np.sort(np.abs(np.asarray(contrib, np.float64)).ravel())[::-1]
    total = v.sum()
    if total <= 0:
        return {lv: float('nan') for lv in levels}
    cum = np.cumsum(v) / total
    return {lv: float((np.searchsorted(cum, lv - 1e-12) + 1) / v.size) for lv in levels}


def effective_receptive_fields(
    model: nn.Module,
    images: torch.Tensor | None = None,
    stages: list[int] | None = None,
    *,
    n_random: int = 4,
    seed: int = 0,
    chunk: int = 8,
) -> list[ERF]:
    """ERF of each requested stage (default: all). images: (B, C, H, W) normalised inputs (None: `n_random`
    seeded N(0, 1) images at the spec's size), taken `chunk` at a time (memory: one chunk's graph, whatever B).
    One forward pass and one backward pass per stage for each chunk."""
    model.eval()
    stages = erf_stages(model, stages)
    if images is None:
        size = model.pretrained_cfg['input_size']
        images = torch.randn((n_random, *size), generator=torch.Generator().manual_seed(seed))
    return erf_over_batches(model, (images[i : i + chunk] for i in range(0, len(images), chunk)), stages)


def erf_over_batches(model: nn.Module, batches, stages: list[int]) -> list[ERF]:
    """The ERFs of `stages` averaged over every image of `batches` (an iterable of (b, C, H, W) tensors, read one
    at a time: only one batch's graph is held)."""
    sums, n = None, 0
    for x in batches:
        part = erf_sums(model, x, stages)
        sums, n = (part if sums is None else [a + b for a, b in zip(sums, part)]), n + len(x)
    if not n:
        raise ValueError('no images to average the receptive fields over')
    return erf_results(stages, sums, n)


def erf_stages(model: nn.Module, stages: list[int] | None) -> list[int]:
    n = len(model.stages)
    return list(range(n)) if stages is None else [resolve_stage(s, n) for s in stages]


def erf_sums(model: nn.Module, x: torch.Tensor, stages: list[int]) -> list[torch.Tensor]:
    """Per stage, |d centre token / d input| summed over channels and over the images of `x`: (H, W) float64."""
    x = x.detach().clone().requires_grad_(True)
    out = []
    with torch.enable_grad():
        feats, f = [], model.stem(x)
        for st in model.stages[: max(stages) + 1]:
            f = st(f)
            feats.append(f)
        for s in stages:
            y = feats[s]
            centre = y[:, :, y.shape[2] // 2, y.shape[3] // 2].sum()
            g = torch.autograd.grad(centre, x, retain_graph=True)[0]
            out.append(g.abs().sum(1).double().sum(0))
    return out


def erf_results(stages: list[int], sums: list[torch.Tensor], n_images: int) -> list[ERF]:
    out = []
    for s, total in zip(stages, sums):
        contrib = total / n_images
        contrib = (contrib / contrib.sum()).numpy() if contrib.sum() > 0 else contrib.numpy()
        out.append(ERF(s, contrib, area_fractions(contrib), n_images))
    return out
