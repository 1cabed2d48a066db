"""build_model(spec): an ArchSpec becomes a timm-contract MetaFormer.

The model *is* a `timm.models.metaformer.MetaFormer` (subclass): timm's stages, blocks, downsampling, heads
and forward methods, so `forward_features`, `forward_head`, `feature_info`, `forward_intermediates` and
`stages[i].blocks[j].token_mixer` work as in timm, and timm's state dicts load into composed presets.
What timm cannot express is added here: any stem, per-stage mixer arguments and MLP ratio, downsampling
between stages of equal width, norms other than its defaults, and the mixers of `explorer.mixers`.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
from timm.layers import GroupNorm1, LayerNorm, LayerNorm2d, Mlp, SelectAdaptivePool2d, calculate_drop_path_rates
from timm.models.metaformer import (
    Downsampling, GroupNorm1NoBias, LayerNorm2dNoBias, LayerNormNoBias, MetaFormer, MetaFormerBlock,
    MetaFormerStage, MlpHead, SquaredReLU, StarReLU,
)

from .mixers import MIXERS
from .spec import ArchSpec


# ---- norms: (NCHW class, token-layout class) per spec name ---------------------------------------------
class GroupNorm1Tokens(GroupNorm1):
    """GroupNorm with one group (MLN) for (B, N, C) tokens: normalises over all tokens and channels."""

    def forward(self, x):
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class GroupNorm1NoBiasTokens(GroupNorm1NoBias):
    def forward(self, x):
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class BatchNormTokens(nn.BatchNorm1d):
    def forward(self, x):
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class Affine(nn.Module):
    """ResMLP's Aff: a per-channel scale and shift, no statistics. Token layout (B, N, C)."""
    channel_dim = -1

    def __init__(self, num_channels: int, **kwargs):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x):
        shape = (-1,) + (1,) * (-self.channel_dim - 1)
        return x * self.weight.view(shape) + self.bias.view(shape)


class Affine2d(Affine):
    channel_dim = -3


NORM_LAYERS = {
    'layernorm_nobias': (LayerNorm2dNoBias, LayerNormNoBias),
    'layernorm': (LayerNorm2d, LayerNorm),
    'mln': (GroupNorm1, GroupNorm1Tokens),
    'mln_nobias': (GroupNorm1NoBias, GroupNorm1NoBiasTokens),
    'batchnorm': (nn.BatchNorm2d, BatchNormTokens),
    'affine': (Affine2d, Affine),
}
ACT_LAYERS = {'gelu': nn.GELU, 'relu': nn.ReLU, 'silu': nn.SiLU, 'squared_relu': SquaredReLU,
              'star_relu': StarReLU}


class Stem(nn.Module):
    """timm's Stem (conv then norm, same keys) with any kernel, stride and padding."""

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int, stride: int, padding: int, norm_layer=None):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding)
        self.norm = norm_layer(out_chans) if norm_layer else nn.Identity()

    def forward(self, x):
        return self.norm(self.conv(x))


class Block(MetaFormerBlock):
    """timm's MetaFormerBlock with the MLP expansion as an argument (timm fixes it at 4)."""

    def __init__(self, dim: int, mlp_ratio: float = 4, **kwargs):
        super().__init__(dim, **kwargs)
        if mlp_ratio != 4:
            use_nchw = kwargs.get('use_nchw', True)
            self.mlp = Mlp(dim, int(mlp_ratio * dim), act_layer=kwargs['mlp_act'], bias=kwargs['mlp_bias'],
                           drop=kwargs.get('proj_drop', 0.), use_conv=use_nchw)


class ComposedMetaFormer(MetaFormer):
    """A MetaFormer built from an ArchSpec. Inherits timm's forward, head and feature methods."""

    def __init__(self, spec: ArchSpec):
        nn.Module.__init__(self)
        self.spec = spec
        dims = [st.dim for st in spec.stages]
        self.num_classes = spec.num_classes
        self.in_chans = spec.in_chans
        self.num_features = self.head_hidden_size = dims[-1]
        self.drop_rate = spec.drop_rate
        self.use_mlp_head = spec.head == 'mlp'
        self.num_stages = spec.num_stages
        self.grad_checkpointing = False

        ds_norm = NORM_LAYERS[spec.downsample_norm][0] if spec.downsample_norm else None
        self.stem = Stem(spec.in_chans, dims[0], spec.stem.kernel_size, spec.stem.stride, spec.stem.padding, ds_norm)
        act = ACT_LAYERS[spec.mlp_act]
        layer_scales = spec.per_stage(spec.layer_scale_init)
        res_scales = spec.per_stage(spec.res_scale_init)
        dp_rates = calculate_drop_path_rates(spec.drop_path_rate, [st.depth for st in spec.stages], stagewise=True)

        stages, self.feature_info = [], []
        prev_dim, reduction = dims[0], spec.stem.stride
        for i, st in enumerate(spec.stages):
            mixer_cls = MIXERS[st.mixer].cls
            # depth 0 builds timm's stage shell (layout handling, checkpointing) without blocks
            stage = MetaFormerStage(prev_dim, st.dim, depth=0, token_mixer=mixer_cls)
            use_nchw = stage.use_nchw
            if i > 0 and st.downsample:
                ds = spec.downsample
                stage.downsample = Downsampling(prev_dim, st.dim, ds.kernel_size, ds.stride, ds.padding, ds_norm)
                reduction *= ds.stride
            else:
                stage.downsample = nn.Identity()
            norm = NORM_LAYERS[spec.norm][0 if use_nchw else 1]
            stage.blocks = nn.Sequential(*[Block(
                st.dim, mlp_ratio=st.mlp_ratio, token_mixer=mixer_cls, mlp_act=act, mlp_bias=spec.mlp_bias,
                norm_layer=norm, drop_path=dp_rates[i][j], use_nchw=use_nchw,
                layer_scale_init_value=layer_scales[i], res_scale_init_value=res_scales[i],
                **spec.mixer_kwargs(i),
            ) for j in range(st.depth)])
            stages.append(stage)
            prev_dim = st.dim
            self.feature_info.append(dict(num_chs=st.dim, reduction=reduction, module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)

        if spec.num_classes > 0:
            final = MlpHead(dims[-1], spec.num_classes) if self.use_mlp_head else nn.Linear(dims[-1], spec.num_classes)
        else:
            final = nn.Identity()
        self.head = nn.Sequential(OrderedDict([
            ('global_pool', SelectAdaptivePool2d(pool_type='avg')),
            ('norm', LayerNorm2d(dims[-1])),
            ('flatten', nn.Flatten(1)),
            ('drop', nn.Dropout(spec.drop_rate)),
            ('fc', final),
        ]))
        self.apply(self._init_weights)
        self.pretrained_cfg = {
            'input_size': (spec.in_chans, spec.img_size, spec.img_size), 'num_classes': spec.num_classes,
            'first_conv': 'stem.conv', 'classifier': 'head.fc',
        }


def build_model(spec: ArchSpec | dict, *, seed: int | None = None) -> ComposedMetaFormer:
    """Build the model a spec describes (randomly initialised, eval mode off: as nn.Module leaves it).

    `seed` makes the initialisation (and RandFormer's frozen matrices) reproducible without touching the
    global RNG state of the caller.
    """
    if isinstance(spec, dict):
        spec = ArchSpec.from_dict(spec)
    if seed is None:
        return ComposedMetaFormer(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ComposedMetaFormer(spec)
