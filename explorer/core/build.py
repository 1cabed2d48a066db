"""build_model(spec): an ArchSpec becomes a timm-contract MetaFormer.

The model *is* a `timm.models.metaformer.MetaFormer` (subclass): timm's stages, blocks, downsampling, heads
and forward methods, so `forward_features`, `forward_head`, `feature_info`, `forward_intermediates` and
`stages[i].blocks[j].token_mixer` work as in timm, and timm's state dicts load into composed presets.
What timm cannot express is added here: any stem, per-stage mixer arguments and MLP ratio, downsampling
between stages of equal width, norms other than its defaults, and the mixers of `explorer.core.mixers`.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
import torch.nn as nn
from timm.layers import (
    DropPath,
    GroupNorm1,
    LayerNorm,
    LayerNorm2d,
    Mlp,
    SelectAdaptivePool2d,
    calculate_drop_path_rates,
)
from timm.models.metaformer import Attention as TimmAttention
from timm.models.metaformer import (
    Downsampling,
    GroupNorm1NoBias,
    LayerNorm2dNoBias,
    LayerNormNoBias,
    MetaFormer,
    MetaFormerBlock,
    MetaFormerStage,
    MlpHead,
    Scale,
    SquaredReLU,
    StarReLU,
)
from torch.utils._python_dispatch import TorchDispatchMode  # torch's only home of dispatch modes

from explorer.core.mixers import TokenCountError, mixer_class
from explorer.core.spec import ArchSpec


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


class LayerNorm2dEps5(LayerNorm2d):
    """PoolFormer's LayerNormChannel: LayerNorm over the channels of each token, with weight and bias and eps 1e-5
    (timm's LayerNorm2d with torch's default eps; the biased variance, as F.layer_norm and the original)."""

    def __init__(self, num_channels: int, eps: float = 1e-5, **kwargs):
        super().__init__(num_channels, eps=eps, **kwargs)


class LayerNormEps5(LayerNorm):
    def __init__(self, num_channels: int, eps: float = 1e-5, **kwargs):
        super().__init__(num_channels, eps=eps, **kwargs)


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
    'layernorm_channel': (LayerNorm2dEps5, LayerNormEps5),
    'mln': (GroupNorm1, GroupNorm1Tokens),
    'mln_nobias': (GroupNorm1NoBias, GroupNorm1NoBiasTokens),
    'batchnorm': (nn.BatchNorm2d, BatchNormTokens),
    'affine': (Affine2d, Affine),
}
ACT_LAYERS = {'gelu': nn.GELU, 'relu': nn.ReLU, 'silu': nn.SiLU, 'squared_relu': SquaredReLU, 'star_relu': StarReLU}


class Stem(nn.Module):
    """timm's Stem (conv then norm, same keys) with any kernel, stride and padding."""

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int, stride: int, padding: int, norm_layer=None):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding)
        self.norm = norm_layer(out_chans) if norm_layer else nn.Identity()

    def forward(self, x):
        return self.norm(self.conv(x))


class Block(nn.Module):
    """timm's MetaFormerBlock (same sub-module names, same forward) with the MLP expansion as an argument:
    timm's block fixes it at 4, so it is composed here from the same timm layers instead of subclassed."""

    def __init__(
        self,
        dim: int,
        token_mixer: type,
        mlp_ratio: float,
        mlp_act: type,
        mlp_bias: bool,
        norm_layer: type,
        drop_path: float,
        use_nchw: bool,
        layer_scale_init_value: float | None,
        res_scale_init_value: float | None,
        proj_drop: float = 0.0,
        **mixer_kwargs,
    ):
        super().__init__()
        ls_layer = partial(Scale, dim=dim, init_value=layer_scale_init_value, use_nchw=use_nchw)
        rs_layer = partial(Scale, dim=dim, init_value=res_scale_init_value, use_nchw=use_nchw)
        self.norm1 = norm_layer(dim)
        self.token_mixer = token_mixer(dim=dim, proj_drop=proj_drop, **mixer_kwargs)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.layer_scale1 = ls_layer() if layer_scale_init_value is not None else nn.Identity()
        self.res_scale1 = rs_layer() if res_scale_init_value is not None else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(mlp_ratio * dim), act_layer=mlp_act, bias=mlp_bias, drop=proj_drop, use_conv=use_nchw)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.layer_scale2 = ls_layer() if layer_scale_init_value is not None else nn.Identity()
        self.res_scale2 = rs_layer() if res_scale_init_value is not None else nn.Identity()

    forward = MetaFormerBlock.forward  # x + mixer(norm(x)), then x + mlp(norm(x)), with the scales


class PositionEmbedding(nn.Module):
    """A learned position embedding added to a stage's input (C, H, W), zeros at init: the PoolFormer paper's
    AddPositionEmb before its attention stages. It takes the downsampling's place in the stage (`downsample.0` is
    the downsampling, `downsample.1` this), so the stage's forward is timm's."""

    def __init__(self, dim: int, grid: tuple[int, int]):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, dim, *grid))

    def forward(self, x):
        if x.shape[-2:] != self.pos_embed.shape[-2:]:
            h, w = self.pos_embed.shape[-2:]
            raise TokenCountError(
                f'the position embedding was built for a {h}x{w} token grid but got {x.shape[-2]}x{x.shape[-1]}; '
                'rebuild the model with the img_size you want to run at'
            )
        return x + self.pos_embed


class Stage(MetaFormerStage):
    """timm's MetaFormerStage (its token-layout handling and gradient checkpointing) with the downsampling and
    blocks the spec asks for. timm's constructor only downsamples 3x3/2 between different widths and builds
    its own blocks; called with equal widths and no blocks it builds nothing (an Identity and an empty
    Sequential), and the spec's parts take those two places."""

    def __init__(self, dim: int, token_mixer: type, downsample: nn.Module, blocks: list[nn.Module]):
        super().__init__(dim, dim, depth=0, token_mixer=token_mixer)
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)


class ComposedMetaFormer(MetaFormer):
    """A MetaFormer built from an ArchSpec: timm's stem/stage/head layout and module names, and timm's
    forward, head and feature methods (inherited).

    MetaFormer.__init__ is not called: it hard-codes a 7x7/4 stem, 3x3/2 downsampling only where the width
    changes and an MLP ratio of 4, so calling it would build parts that a spec replaces. The attributes its
    methods read are set here instead (the list below matches timm 1.0's constructor).
    """

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
        self.stages = nn.Sequential(*self._stages(spec, ds_norm))
        self.head = self._head(spec)  # weights: build_model initialises them from its own generator
        self.pretrained_cfg = {
            'input_size': (spec.in_chans, spec.img_size, spec.img_size),
            'num_classes': spec.num_classes,
            'first_conv': 'stem.conv',
            'classifier': 'head.fc',
        }

    def _stages(self, spec: ArchSpec, ds_norm) -> list[Stage]:
        act = ACT_LAYERS[spec.mlp_act]
        layer_scales = spec.per_stage(spec.layer_scale_init)
        res_scales = spec.per_stage(spec.res_scale_init)
        dp_rates = calculate_drop_path_rates(spec.drop_path_rate, [st.depth for st in spec.stages], stagewise=True)
        stages, self.feature_info = [], []
        prev_dim, reduction = spec.stages[0].dim, spec.stem.stride
        for i, st in enumerate(spec.stages):
            mixer_cls = mixer_class(st.mixer)
            use_nchw = not issubclass(mixer_cls, TimmAttention)  # timm's rule: attention runs on (B, N, C)
            if i > 0 and st.downsample:
                ds = spec.downsample
                downsample = Downsampling(prev_dim, st.dim, ds.kernel_size, ds.stride, ds.padding, ds_norm)
                reduction *= ds.stride
            else:
                downsample = nn.Identity()
            if st.pos_embed:
                downsample = nn.Sequential(downsample, PositionEmbedding(st.dim, spec.grid_sizes()[i]))
            norm = NORM_LAYERS[spec.norm][0 if use_nchw else 1]
            blocks = [
                Block(
                    st.dim,
                    mixer_cls,
                    st.mlp_ratio,
                    act,
                    spec.mlp_bias,
                    norm,
                    dp_rates[i][j],
                    use_nchw,
                    layer_scales[i],
                    res_scales[i],
                    **spec.mixer_kwargs(i),
                )
                for j in range(st.depth)
            ]
            stages.append(Stage(st.dim, mixer_cls, downsample, blocks))
            prev_dim = st.dim
            self.feature_info.append(dict(num_chs=st.dim, reduction=reduction, module=f'stages.{i}'))
        return stages

    @staticmethod
    def _head(spec: ArchSpec) -> nn.Sequential:
        dim = spec.stages[-1].dim
        if spec.num_classes > 0:
            final = MlpHead(dim, spec.num_classes) if spec.head == 'mlp' else nn.Linear(dim, spec.num_classes)
        else:
            final = nn.Identity()
        return nn.Sequential(
            OrderedDict(
                [
                    ('global_pool', SelectAdaptivePool2d(pool_type='avg')),
                    ('norm', NORM_LAYERS[spec.head_norm][0](dim)),
                    ('flatten', nn.Flatten(1)),
                    ('drop', nn.Dropout(spec.drop_rate)),
                    ('fc', final),
                ]
            )
        )

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False):
        """timm's head; with head_order 'norm_pool' the norm runs on every token before the average pool."""
        if self.spec.head_order == 'pool_norm':
            return super().forward_head(x, pre_logits)
        x = self.head.global_pool(self.head.norm(x))
        x = self.head.drop(self.head.flatten(x))
        return x if pre_logits else self.head.fc(x)


class _SkipRandomInit(TorchDispatchMode):
    """While active (in this thread only: dispatch modes are thread-local), the random draws with which torch's
    layers initialise themselves fill zeros instead: construction touches no random number generator."""

    RANDOM_INIT = frozenset({torch.ops.aten.uniform_.default, torch.ops.aten.normal_.default})

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.RANDOM_INIT:
            return args[0].zero_()
        return func(*args, **(kwargs or {}))


def init_weights(model: nn.Module, generator: torch.Generator) -> None:
    """timm's MetaFormer initialisation (truncated normal, std 0.02, for every convolution and linear layer; zero
    biases) and RandFormer's frozen matrices, drawn from `generator` alone."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02, generator=generator)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif hasattr(m, 'reset_random'):
                m.reset_random(generator)


def build_model(spec: ArchSpec | dict, *, seed: int | None = None, init: bool = True) -> ComposedMetaFormer:
    """Build the model a spec describes (randomly initialised; train mode, as nn.Module leaves it).

    The initialisation draws from its own `torch.Generator` seeded with `seed` (None: a fresh random seed), never
    from torch's global generator: the same spec and seed give the same weights in any thread, beside any other
    work. `init=False` leaves every weight zero (for counting, which needs shapes only).
    """
    if isinstance(spec, dict):
        spec = ArchSpec.from_dict(spec)
    with _SkipRandomInit():
        model = ComposedMetaFormer(spec)
    if init:
        generator = torch.Generator()
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        init_weights(model, generator)
    return model
