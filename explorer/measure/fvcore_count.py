"""fvcore's count of a built model: fvcore's tracing engine (the one behind `FlopCountAnalysis`) plus the
operator handles below, MACs and activations in one trace, split per stage and component exactly as
`explorer.measure.analytic` splits its closed-form count, so the two can be compared integer for integer.

fvcore alone gets MetaFormers wrong: it has no handle for `aten::avg_pool2d` (PoolFormer's mixer) or
`aten::scaled_dot_product_attention` (timm's fused attention), so both count 0. Here both are counted, the
attention matmuls the same way whether timm built the fused or the explicit path. The rules are the
analytic counter's (`CONVENTION`, `RULES` there).
"""

from __future__ import annotations

import math

from explorer.core.spec import ArchSpec, SpecError
from explorer.measure.analytic import (
    BATCHNORM_EVAL_MACS,
    COMPONENTS,
    MEAN_MACS_PER_INPUT,
    NORM_STAT_MACS,
    NORM_WEIGHT_MACS,
    POOL_MACS_PER_OUTPUT,
    CostReport,
    StageCost,
    fixed_size_parts,
    spec_at,
)

# ---- fvcore counter --------------------------------------------------------------------------------------
# Element-wise and data-movement operators: 0 MACs by the convention. fvcore reports them as unsupported
# unless told; listing them here is the "0-MAC handle" (fvcore's way to say: seen, counted as nothing).
ZERO_MAC_OPS = (
    'aten::add',
    'aten::add_',
    'aten::sub',
    'aten::sub_',
    'aten::rsub',
    'aten::mul',
    'aten::mul_',
    'aten::div',
    'aten::div_',
    'aten::pow',
    'aten::square',
    'aten::sqrt',
    'aten::rsqrt',
    'aten::neg',
    'aten::exp',
    'aten::tanh',
    'aten::sigmoid',
    'aten::gelu',
    'aten::silu',
    'aten::silu_',
    'aten::relu',
    'aten::relu_',
    'aten::hardtanh',
    'aten::softmax',
    'aten::_softmax',
    'aten::pad',
    'aten::constant_pad_nd',
    'aten::gather',
    'aten::clone',
    'aten::dropout',
    'aten::feature_dropout',
    'aten::expand_as',
    'aten::unbind',
    'aten::transpose',
    'aten::permute',
    'aten::reshape',
    'aten::view',
    'aten::flatten',
    'aten::contiguous',
    'aten::to',
    'aten::type_as',
    'aten::unsqueeze',
    'aten::squeeze',
    'aten::select',
    'aten::slice',
    'aten::expand',
    'aten::arange',
    'aten::size',
    'aten::numpy_T',
    'aten::t',
)


def _shape(v) -> list[int] | None:
    from fvcore.nn.jit_handles import get_shape

    return get_shape(v)


def _prod(xs) -> int:
    return int(math.prod(xs))


def _norm_handle(weight_index: int):
    def handle(inputs, outputs):
        has_weight = _shape(inputs[weight_index]) is not None
        return _prod(_shape(inputs[0])) * (NORM_STAT_MACS + (NORM_WEIGHT_MACS if has_weight else 0))

    return handle


def _batch_norm_handle(inputs, outputs):
    if inputs[5].toIValue():  # training: statistics are computed, as a LayerNorm
        return _norm_handle(1)(inputs, outputs)
    has_weight = _shape(inputs[1]) is not None
    return _prod(_shape(inputs[0])) * (BATCHNORM_EVAL_MACS + (1 if has_weight else 0))


def _avg_pool_handle(inputs, outputs):
    return _prod(_shape(outputs[0])) * POOL_MACS_PER_OUTPUT


def _mean_handle(inputs, outputs):
    return _prod(_shape(inputs[0])) * MEAN_MACS_PER_INPUT


def _sdpa_dims(inputs):
    q, k, v = (_shape(inputs[i]) for i in range(3))
    batch = _prod(q[:-2])
    return batch, q[-2], k[-2], q[-1], v[-1]  # batch x heads, L, S, E, Ev


def _sdpa_handle(inputs, outputs):
    b, lq, s, e, ev = _sdpa_dims(inputs)
    return b * lq * s * e + b * lq * s * ev  # q @ k^T, then attn @ v


def _sdpa_act_handle(inputs, outputs):
    b, lq, s, e, ev = _sdpa_dims(inputs)
    return b * lq * s + b * lq * ev  # the scores and the context, as the unfused matmuls' outputs


def _out_numel_handle(inputs, outputs):
    return _prod(_shape(outputs[0]))


def _total(v) -> int:
    return int(sum(v.values())) if isinstance(v, dict) else int(v)


def _handle_tables() -> tuple[dict, dict]:
    """(MAC handles, activation handles) by operator: fvcore's defaults plus this module's rules."""
    # fvcore has no public getter for its default handles (FlopCountAnalysis and ActivationCountAnalysis load
    # these two tables in their constructors); counting MACs and activations in one trace needs both as tables
    from fvcore.nn.activation_count import _DEFAULT_SUPPORTED_OPS as fv_acts
    from fvcore.nn.flop_count import _DEFAULT_SUPPORTED_OPS as fv_macs

    macs = dict(fv_macs)
    macs.update(
        {
            'aten::avg_pool2d': _avg_pool_handle,
            'aten::scaled_dot_product_attention': _sdpa_handle,
            'aten::layer_norm': _norm_handle(2),
            'aten::group_norm': _norm_handle(2),
            'aten::batch_norm': _batch_norm_handle,
            'aten::mean': _mean_handle,
            'aten::adaptive_avg_pool2d': _mean_handle,
        }
    )
    acts = dict(fv_acts)
    acts.update({'aten::avg_pool2d': _out_numel_handle, 'aten::scaled_dot_product_attention': _sdpa_act_handle})
    return macs, acts


def cost_analysis(model, inputs):
    """One fvcore trace counting MACs and activations together: a `JitModelAnalysis` whose per-module,
    per-operator counters hold 'macs' and 'acts' (read them with `.by_module_and_operator()`). Every
    operator of every buildable spec is either counted by RULES or explicitly 0 (ZERO_MAC_OPS); anything else
    shows in `.unsupported_ops()`."""
    from collections import Counter

    from fvcore.nn.jit_analysis import JitModelAnalysis

    mac_handles, act_handles = _handle_tables()

    def both(mh, ah):
        def handle(inputs, outputs):
            c = Counter()
            if mh is not None:
                c['macs'] = _total(mh(inputs, outputs))
            if ah is not None:
                c['acts'] = _total(ah(inputs, outputs))
            return c

        return handle

    ja = JitModelAnalysis(model, inputs)
    ja.set_op_handle(
        **{op: both(mac_handles.get(op), act_handles.get(op)) for op in set(mac_handles) | set(act_handles)}
    )
    ja.set_op_handle(**dict.fromkeys(ZERO_MAC_OPS))
    ja.unsupported_ops_warnings(False)
    ja.uncalled_modules_warnings(False)
    return ja


def _numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_for_counting(spec: ArchSpec):
    """`build_model(spec)` with every weight zero (no initialisation): the same modules and shapes, several
    times faster to build, for counting only."""
    from explorer.core.build import build_model

    return build_model(spec, init=False)


def fvcore_cost(spec: ArchSpec, img_size: int | None = None, model=None) -> CostReport:
    """Build the model (or take `model`, built from `spec`) and count it with fvcore plus this module's
    handles (one trace of one image in eval mode: MACs and activation elements). `uncounted_ops` lists
    whatever fvcore saw and could not count: empty for every spec the explorer builds."""
    import warnings

    import torch

    spec = spec_at(spec, img_size)
    if model is None:
        model = build_for_counting(spec)
    else:
        built = getattr(model, 'spec', None)
        fixed = fixed_size_parts(spec)
        if built is not None and built.img_size != spec.img_size and fixed:
            raise SpecError(
                [
                    (
                        'img_size',
                        f'this model has {" and ".join(fixed)} fixed to the token grid of img_size '
                        f'{built.img_size}; build it for {spec.img_size} to count it there',
                    )
                ]
            )
    p0 = next(model.parameters())
    x = torch.zeros(1, spec.in_chans, spec.img_size, spec.img_size, device=p0.device, dtype=p0.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter('ignore')
            ja = cost_analysis(model, x)
            per_module = ja.by_module_and_operator()
            uncounted = {k: int(v) for k, v in ja.unsupported_ops().items()}
    finally:
        model.train(was_training)
    macs = {k: int(v.get('macs', 0)) for k, v in per_module.items()}
    acts = {k: int(v.get('acts', 0)) for k, v in per_module.items()}
    total = macs['']

    def get(d, name):
        return d.get(name, 0)

    comps = {k: {'params': 0, 'macs': 0} for k in COMPONENTS}

    def add(comp, name, module):
        comps[comp]['params'] += _numel(module)
        comps[comp]['macs'] += get(macs, name)

    add('stem', 'stem', model.stem)
    add('head', 'head', model.head)
    grids = spec.grid_sizes()
    stages = []
    for i, (st, stage) in enumerate(zip(spec.stages, model.stages)):
        pre = f'stages.{i}'
        parts = {k: [0, 0] for k in ('token_mixer', 'mlp', 'norm', 'scale', 'downsample')}

        def put(comp, name, module, parts=parts):
            parts[comp][0] += _numel(module)
            parts[comp][1] += get(macs, name)
            add(comp, name, module)

        put('downsample', f'{pre}.downsample', stage.downsample)
        for j, blk in enumerate(stage.blocks):
            b = f'{pre}.blocks.{j}'
            put('token_mixer', f'{b}.token_mixer', blk.token_mixer)
            put('mlp', f'{b}.mlp', blk.mlp)
            for nm in ('norm1', 'norm2'):
                put('norm', f'{b}.{nm}', getattr(blk, nm))
            for nm in ('layer_scale1', 'layer_scale2', 'res_scale1', 'res_scale2'):
                put('scale', f'{b}.{nm}', getattr(blk, nm))
        stage_macs, stage_params = get(macs, pre), _numel(stage)
        attributed = sum(v[1] for v in parts.values())
        if stage_macs != attributed or stage_params != sum(v[0] for v in parts.values()):
            raise RuntimeError(f'stage {i}: {stage_macs - attributed} MACs outside its known sub-modules')
        other = ('norm', 'scale', 'downsample')
        stages.append(
            StageCost(
                index=i,
                mixer=st.mixer,
                depth=st.depth,
                dim=st.dim,
                params=stage_params,
                macs=stage_macs,
                out_shape=(st.dim, *grids[i]),
                token_mixer_params=parts['token_mixer'][0],
                token_mixer_macs=parts['token_mixer'][1],
                mlp_params=parts['mlp'][0],
                mlp_macs=parts['mlp'][1],
                other_params=sum(parts[k][0] for k in other),
                other_macs=sum(parts[k][1] for k in other),
                frozen_params=sum(p.numel() for p in stage.parameters() if not p.requires_grad),
                act_elements=get(acts, pre),
            )
        )
    params = _numel(model)
    if total != sum(c['macs'] for c in comps.values()) or params != sum(c['params'] for c in comps.values()):
        raise RuntimeError('model has MACs or params outside stem, stages and head')
    return CostReport(
        params=params,
        macs=total,
        stages=stages,
        components=comps,
        uncounted_ops=uncounted,
        img_size=spec.img_size,
        method='fvcore',
        name=spec.name,
        frozen_params=sum(p.numel() for p in model.parameters() if not p.requires_grad),
        act_elements=get(acts, ''),
    )
