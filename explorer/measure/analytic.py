"""Exact parameter and MAC counts of an ArchSpec in closed form, without building anything.

`analytic_cost(spec)` computes params, MACs and activation elements from the spec alone (tens of
microseconds; the app calls it on every slider move). `explorer.measure.fvcore_count.fvcore_cost` counts the
built model with fvcore; the two agree exactly, integer for integer, in total, per stage, per component and in
activation elements (tests/test_counting.py checks every preset and hundreds of random specs).

The counting rules are in `CONVENTION` (a sentence shown to users) and `RULES` (one line per operator kind).
Each mixer's cost rule is registered here with `@mixer_cost(name)`, beside the rules of every other part.
Imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from explorer.core.registry import MIXERS
from explorer.core.spec import ArchSpec, SpecError

# bytes per element of each dtype the explorer runs in: the one table (guard, memory, speed read it)
BYTES_PER_ELEMENT = {'fp32': 4, 'bf16': 2, 'fp16': 2}

# ---- the convention ------------------------------------------------------------------------------------
# Norms that compute statistics (LayerNorm, GroupNorm/MLN) cost, per element: 1 for the mean, 1 for the
# variance, 1 to normalise and 1 more for the weight (a bias rides on that multiply-accumulate). fvcore's
# built-in handle says 5 per element ("a rough estimate" in its source); see RULES for why this differs.
NORM_STAT_MACS = 3
NORM_WEIGHT_MACS = 1
# BatchNorm at inference uses running statistics: 1 to normalise, 1 for the weight (as fvcore counts it).
BATCHNORM_EVAL_MACS = 1
# Average pooling: the window sum is additions (0, like every element-wise add); the division by the window
# count is one multiply per output element.
POOL_MACS_PER_OUTPUT = 1
# A mean over dimensions (CycleMLP's re-weighting, the head's global average pool): 1 per input element,
# fvcore's rule for adaptive_avg_pool2d.
MEAN_MACS_PER_INPUT = 1

CONVENTION = (
    "One MAC is one multiply-accumulate (fvcore's convention, which the MetaFormer papers used): a convolution "
    'or linear layer costs in_channels/groups x out_channels x kernel area per output position; every matmul '
    '(attention q@k^T and attn@v counted alike whether timm runs them fused in scaled_dot_product_attention or '
    "not, RandFormer's token matrix, the spatial/cross-patch token MLPs) costs the product of its dimensions; "
    "LayerNorm and GroupNorm (MLN) cost 3 per element plus 1 with a weight (fvcore's built-in handle says 5, so "
    "timm's fvcore figures run 1 MAC per norm element higher: caformer_s18 4.125 G there, 4.122 G here), "
    'inference BatchNorm 1 plus 1 with a weight; average pooling costs 1 per output element (the window sum is '
    'additions, the division one multiply; the papers counted pooling as 0, which adds at most 0.006 G to a '
    "PoolFormer at 224); a mean over dimensions (global average pool, CycleMLP's re-weighting) costs 1 per "
    'input element; element-wise ops cost 0: activations (GELU, StarReLU, squared ReLU, softmax), residual adds, '
    'learned position embeddings, '
    "layer/res scales, ResMLP's Affine, bias additions, padding, and CycleMLP's fixed gather (pure data "
    'movement). Counts are for one image at inference (eval mode); dropout and drop-path cost 0. Params count '
    'every parameter, frozen (RandFormer) included.'
)

RULES = {
    'conv': 'Cout x Cin/groups x kH x kW per output position (bias free)',
    'linear / matmul / bmm / einsum': 'product of the dimensions (M x K x N x batch)',
    'scaled_dot_product_attention': 'B x heads x L x S x (E + Ev): q@k^T plus attn@v, as the unfused path',
    'layer_norm, group_norm': f'{NORM_STAT_MACS} per element + {NORM_WEIGHT_MACS} with a weight '
    '(fvcore: 5 with weight, 4 without)',
    'batch_norm (eval)': f"{BATCHNORM_EVAL_MACS} per element + 1 with a weight (fvcore's rule)",
    'avg_pool2d': f'{POOL_MACS_PER_OUTPUT} per output element',
    'mean, adaptive_avg_pool2d': f"{MEAN_MACS_PER_INPUT} per input element (fvcore's rule)",
    'element-wise (add, sub, mul, div, pow, square, gelu, silu, relu, sigmoid, softmax, pad, gather, ...)': '0',
}

# Why the norm rule is not fvcore's 5: with fvcore's 5 per element and pooling counted at all,
# poolformerv2_m48 comes to 11.6004 G against the published 11.5 G (the paper's code used a hand-written
# norm fvcore could not see and rounded 11.533); counting the norm as what it computes keeps every
# published figure within its rounding or truncation. Without pooling, our count is fvcore's default count
# minus 1 per LayerNorm/GroupNorm element (tests check this against timm's own models).

# ---- cost records --------------------------------------------------------------------------------------
COMPONENTS = ('stem', 'token_mixer', 'mlp', 'norm', 'scale', 'downsample', 'head')


@dataclass
class StageCost:
    """One stage: its downsampling (if any) plus all its blocks. MACs are per image."""

    index: int
    mixer: str
    depth: int
    dim: int
    params: int
    macs: int
    out_shape: tuple  # (C, H, W)
    token_mixer_params: int = 0
    token_mixer_macs: int = 0
    mlp_params: int = 0
    mlp_macs: int = 0
    other_params: int = 0  # norms, layer/res scales, downsampling
    other_macs: int = 0
    frozen_params: int = 0
    act_elements: int = 0  # per image; see ACTIVATION_RULE

    def to_dict(self) -> dict:
        d = asdict(self)
        d['out_shape'] = list(self.out_shape)
        return d


@dataclass
class CostReport:
    params: int
    macs: int
    stages: list
    components: dict  # name -> {'params': int, 'macs': int}; names in COMPONENTS; they sum to the totals
    uncounted_ops: dict = field(default_factory=dict)  # operator -> calls fvcore saw but could not count
    convention: str = CONVENTION
    img_size: int = 224
    method: str = 'analytic'
    name: str = ''
    frozen_params: int = 0
    act_elements: int = 0  # per image, ACTIVATION_RULE

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    def to_dict(self) -> dict:
        return {
            'name': self.name,
            'method': self.method,
            'img_size': self.img_size,
            'params': self.params,
            'frozen_params': self.frozen_params,
            'macs': self.macs,
            'gmacs': round(self.macs / 1e9, 4),
            'stages': [s.to_dict() for s in self.stages],
            'components': {k: dict(v) for k, v in self.components.items()},
            'act_elements': self.act_elements,
            'uncounted_ops': dict(self.uncounted_ops),
            'convention': self.convention,
        }


# ---- analytic counter -----------------------------------------------------------------------------------
class Cost:
    """params, MACs, counted activation elements and frozen params of one part (per image)."""

    __slots__ = ('params', 'macs', 'acts', 'frozen')

    def __init__(self, params=0, macs=0, acts=0, frozen=0):
        self.params, self.macs, self.acts, self.frozen = params, macs, acts, frozen

    def __add__(self, o: Cost) -> Cost:
        return Cost(self.params + o.params, self.macs + o.macs, self.acts + o.acts, self.frozen + o.frozen)

    def __mul__(self, k: int) -> Cost:
        return Cost(self.params * k, self.macs * k, self.acts * k, self.frozen * k)


def _conv(cin: int, cout: int, k: int, hw: int, bias: bool = True, groups: int = 1) -> Cost:
    w = cout * (cin // groups) * k * k
    return Cost(w + (cout if bias else 0), w * hw, cout * hw)


def _linear(rows: int, cin: int, cout: int, bias: bool = True) -> Cost:
    return Cost(cin * cout + (cout if bias else 0), rows * cin * cout, rows * cout)


def _act_params(act: str) -> int:
    return 2 if act == 'star_relu' else 0  # StarReLU: learnable scale and bias


def _norm(kind: str | None, c: int, numel: int) -> Cost:
    if kind is None:
        return Cost()
    if kind in ('layernorm_nobias', 'mln_nobias'):
        return Cost(c, numel * (NORM_STAT_MACS + NORM_WEIGHT_MACS))
    if kind in ('layernorm', 'layernorm_channel', 'mln'):
        return Cost(2 * c, numel * (NORM_STAT_MACS + NORM_WEIGHT_MACS))
    if kind == 'batchnorm':
        return Cost(2 * c, numel * (BATCHNORM_EVAL_MACS + 1))
    if kind == 'affine':
        return Cost(2 * c, 0)
    raise ValueError(f'no cost rule for norm {kind!r}')


# token-mixer formulas: (dim, H, W, args) -> Cost for ONE block's mixer on one image
MIXER_COSTS: dict[str, Callable[[int, int, int, dict], Cost]] = {}


def mixer_cost(name: str):
    def wrap(fn):
        MIXER_COSTS[name] = fn
        return fn

    return wrap


@mixer_cost('identity')
def _identity_cost(dim, h, w, a):
    return Cost()


@mixer_cost('pooling')
def _pooling_cost(dim, h, w, a):
    n = dim * h * w  # stride 1, padding k//2: output = input shape
    return Cost(0, n * POOL_MACS_PER_OUTPUT, n)


@mixer_cost('sepconv')
def _sepconv_cost(dim, h, w, a):
    med, k, hw = int(a['expansion_ratio'] * dim), a['kernel_size'], h * w
    return (
        _conv(dim, med, 1, hw, bias=False)
        + Cost(_act_params('star_relu'))
        + _conv(med, med, k, hw, bias=False, groups=med)
        + _conv(med, dim, 1, hw, bias=False)
    )


@mixer_cost('attention')
def _attention_cost(dim, h, w, a):
    hd = a['head_dim']
    heads = max(1, dim // hd)
    adim, n = heads * hd, h * w
    scores = heads * n * n
    attn = Cost(0, 2 * scores * hd, scores + n * adim)  # q@k^T and attn@v; outputs: scores and context
    return _linear(n, dim, 3 * adim, a['qkv_bias']) + attn + _linear(n, adim, dim, a['proj_bias'])


@mixer_cost('random')
def _random_cost(dim, h, w, a):
    n = h * w
    return Cost(n * n, dim * n * n, dim * n, frozen=n * n)


@mixer_cost('spatial_mlp')
def _spatial_mlp_cost(dim, h, w, a):
    n = h * w
    hidden = a.get('hidden_dim') or max(1, int(a['hidden_ratio'] * dim))
    return _linear(dim, n, hidden) + _linear(dim, hidden, n)


@mixer_cost('cross_patch')
def _cross_patch_cost(dim, h, w, a):
    n = h * w
    return _linear(dim, n, n)


@mixer_cost('cycle')
def _cycle_cost(dim, h, w, a):
    hw = h * w
    mean = Cost(0, dim * hw * MEAN_MACS_PER_INPUT)  # (h + w + c).mean over H, W
    hidden = dim // 4
    return (
        _conv(dim, dim, 1, hw, bias=a['qkv_bias'])
        + _conv(dim, dim, 1, hw) * 2
        + mean
        + _linear(1, dim, hidden)
        + _linear(1, hidden, 3 * dim)
        + _conv(dim, dim, 1, hw)
    )


def spec_at(spec: ArchSpec, img_size: int | None) -> ArchSpec:
    """The spec at another input size, validated (divisibility, token limits): fixed-token mixers are then
    costed as rebuilt for that size."""
    if img_size is None or img_size == spec.img_size:
        return spec
    return spec.replace(img_size=img_size)


def _breakdown(spec: ArchSpec) -> tuple[Cost, list[dict], Cost]:
    """(stem, per-stage dicts of components, head) for one image at spec.img_size."""
    # a mixer registered without a cost formula: a SpecError, so the UI, CLI and API show it like any other
    missing = [
        (
            f'stages[{i}].mixer',
            f'{st.mixer!r} has no analytic cost formula; register one with '
            f'@mixer_cost({st.mixer!r}) in explorer/measure/analytic.py',
        )
        for i, st in enumerate(spec.stages)
        if st.mixer not in MIXER_COSTS
    ]
    if missing:
        raise SpecError(missing)
    grids = spec.grid_sizes()
    d0 = spec.stages[0].dim
    h0, w0 = grids[0]
    stem = _conv(spec.in_chans, d0, spec.stem.kernel_size, h0 * w0) + _norm(spec.downsample_norm, d0, d0 * h0 * w0)
    layer_scales = spec.per_stage(spec.layer_scale_init)
    res_scales = spec.per_stage(spec.res_scale_init)
    act_p = _act_params(spec.mlp_act)
    stages = []
    prev_dim, (ph, pw) = d0, grids[0]
    for i, st in enumerate(spec.stages):
        h, w = grids[i]
        hw, c = h * w, st.dim
        if i > 0 and st.downsample:
            ds = _norm(spec.downsample_norm, prev_dim, prev_dim * ph * pw) + _conv(
                prev_dim, c, spec.downsample.kernel_size, hw
            )
        else:
            ds = Cost()
        if st.pos_embed:  # a learned (C, H, W) addition: parameters, no multiply-accumulate
            ds = ds + Cost(c * hw)
        args = {**MIXERS[st.mixer].defaults(), **st.mixer_args}
        mixer = MIXER_COSTS[st.mixer](c, h, w, args)
        hidden = int(st.mlp_ratio * c)
        mlp = _linear(hw, c, hidden, spec.mlp_bias) + Cost(act_p) + _linear(hw, hidden, c, spec.mlp_bias)
        norm = _norm(spec.norm, c, c * hw) * 2
        n_scales = 2 * ((layer_scales[i] is not None) + (res_scales[i] is not None))
        scale = Cost(n_scales * c)
        stages.append(
            {
                'downsample': ds,
                'token_mixer': mixer * st.depth,
                'mlp': mlp * st.depth,
                'norm': norm * st.depth,
                'scale': scale * st.depth,
                'shape': (c, h, w),
            }
        )
        prev_dim, ph, pw = c, h, w
    c = spec.stages[-1].dim
    pool = Cost(0, c * ph * pw * MEAN_MACS_PER_INPUT)
    # the head's norm on the pooled vector, or (norm_pool) on every token before the pool
    head = pool + _norm(spec.head_norm, c, c * ph * pw if spec.head_order == 'norm_pool' else c)
    k = spec.num_classes
    if k > 0:
        if spec.head == 'mlp':  # MlpHead: fc1 (4C), squared ReLU, LayerNorm (bias), fc2
            head = head + _linear(1, c, 4 * c) + _norm('layernorm', 4 * c, 4 * c) + _linear(1, 4 * c, k)
        else:
            head = head + _linear(1, c, k)
    return stem, stages, head


def analytic_cost(spec: ArchSpec, img_size: int | None = None) -> CostReport:
    """Closed-form params and MACs (per image) from the spec alone; no model is built.

    `img_size` other than the spec's is validated like the spec (divisible by the total stride; fixed-token
    mixers are costed as rebuilt for that size, within their token limit) and raises SpecError otherwise.
    """
    spec = spec_at(spec, img_size)
    stem, stage_parts, head = _breakdown(spec)
    comps = {k: Cost() for k in COMPONENTS}
    comps['stem'], comps['head'] = stem, head
    stages = []
    for i, (st, part) in enumerate(zip(spec.stages, stage_parts)):
        other = part['norm'] + part['scale'] + part['downsample']
        total = part['token_mixer'] + part['mlp'] + other
        for k in ('token_mixer', 'mlp', 'norm', 'scale', 'downsample'):
            comps[k] = comps[k] + part[k]
        stages.append(
            StageCost(
                index=i,
                mixer=st.mixer,
                depth=st.depth,
                dim=st.dim,
                params=total.params,
                macs=total.macs,
                out_shape=part['shape'],
                token_mixer_params=part['token_mixer'].params,
                token_mixer_macs=part['token_mixer'].macs,
                mlp_params=part['mlp'].params,
                mlp_macs=part['mlp'].macs,
                other_params=other.params,
                other_macs=other.macs,
                frozen_params=total.frozen,
                act_elements=total.acts,
            )
        )
    grand = Cost()
    for v in comps.values():
        grand = grand + v
    return CostReport(
        params=grand.params,
        macs=grand.macs,
        stages=stages,
        components={k: {'params': v.params, 'macs': v.macs} for k, v in comps.items()},
        uncounted_ops={},
        img_size=spec.img_size,
        method='analytic',
        name=spec.name,
        frozen_params=grand.frozen,
        act_elements=grand.acts,
    )


# ---- activation memory and scaling curves -----------------------------------------------------------------
DTYPE_BYTES = BYTES_PER_ELEMENT
ACTIVATION_RULE = (
    'Activation memory = the elements output by every counted op (each convolution, linear layer and matmul, '
    "attention's N x N scores and its context whether fused or not, and average pooling) x batch x bytes per "
    'element: the "activations" of Dollar et al. (fvcore\'s ActivationCountAnalysis, timm\'s MActs) plus '
    "pooling and fused attention. It tracks what a training step keeps for backward, and shows attention's "
    'N^2 growth; outputs of norms and element-wise ops are left out, so real memory is higher.'
)


def activation_memory(spec: ArchSpec, batch_size: int = 1, dtype: str = 'fp32', img_size: int | None = None) -> dict:
    """Per-stage activation bytes by ACTIVATION_RULE for `batch_size` images of `img_size` in `dtype`."""
    if dtype not in DTYPE_BYTES:
        raise ValueError(f'dtype {dtype!r} is not allowed; choose from {", ".join(DTYPE_BYTES)}')
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f'batch size {batch_size!r} must be a positive integer')
    spec = spec_at(spec, img_size)
    stem, stages, head = _breakdown(spec)
    scale = batch_size * DTYPE_BYTES[dtype]
    per_stage = []
    for part in stages:
        elems = sum(part[k].acts for k in ('downsample', 'token_mixer', 'mlp', 'norm', 'scale'))
        per_stage.append(elems * scale)
    out = {
        'img_size': spec.img_size,
        'batch_size': batch_size,
        'dtype': dtype,
        'bytes_per_element': DTYPE_BYTES[dtype],
        'stem': stem.acts * scale,
        'stages': per_stage,
        'head': head.acts * scale,
        'token_mixer': sum(p['token_mixer'].acts for p in stages) * scale,
        'rule': ACTIVATION_RULE,
    }
    out['total'] = out['stem'] + sum(per_stage) + out['head']
    return out


def fixed_size_parts(spec: ArchSpec) -> list[str]:
    """The parts of a spec whose weights are shaped by its token grid, so that a model built for one image size
    cannot run at another: fixed-token mixers (RandFormer, MLP-Mixer, ResMLP) and learned position embeddings."""
    parts = sorted({st.mixer for st in spec.stages if MIXERS[st.mixer].fixed_tokens})
    return parts + ['a position embedding'] * any(st.pos_embed for st in spec.stages)


def scaling_curve(spec: ArchSpec, sizes: list[int]) -> list[dict]:
    """Params, MACs and activation bytes (batch 1, fp32) against input resolution.

    Each entry: img_size, params, macs, act_bytes, valid, note. Sizes the spec cannot take (not divisible by
    the total stride, no tokens left, a fixed-token mixer above its token limit) have valid False, the
    numbers None and the reason in `note`. Specs with fixed-token mixers (RandFormer, MLP-Mixer, ResMLP) or
    position embeddings are costed as rebuilt for each size: their token matrices or embeddings, hence params,
    grow with it (said in `note`).
    """
    fixed = fixed_size_parts(spec)
    out = []
    for n in sizes:
        entry = {'img_size': n, 'params': None, 'macs': None, 'act_bytes': None, 'valid': False, 'note': ''}
        try:
            at = spec_at(spec, int(n))
            r = analytic_cost(at)
            entry.update(params=r.params, macs=r.macs, act_bytes=r.act_elements * DTYPE_BYTES['fp32'], valid=True)
            if fixed and n != spec.img_size:
                entry['note'] = (
                    f'{" and ".join(fixed)} fixed to the token grid: costed as rebuilt for {n}x{n} (params change)'
                )
        except SpecError as e:
            entry['note'] = '; '.join(msg for _, msg in e.errors)
        out.append(entry)
    return out
