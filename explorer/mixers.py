"""Token mixers: the one part of a MetaFormer block that differs between PoolFormer, ConvFormer, CAFormer, ...

`MIXERS` maps a spec name to a `MixerInfo` (class + the schema of its `mixer_args`). Adding a mixer is a class
and a `@register_mixer(...)`. Every mixer takes `dim` plus its own keyword arguments and ignores the rest
(timm's `MetaFormerBlock` passes `proj_drop`, `device`, `dtype`). A mixer that subclasses timm's `Attention`
runs in token layout (B, N, C); all others see NCHW tensors, as in timm.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp
from timm.models.metaformer import Attention as TimmAttention
from timm.models.metaformer import Pooling as TimmPooling
from timm.models.metaformer import SepConv as TimmSepConv


@dataclass(frozen=True)
class Arg:
    """One mixer argument: its type, default and allowed values (a range or a tuple of choices)."""
    kind: type
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    nullable: bool = False
    help: str = ''

    def check(self, v) -> str | None:
        if v is None:
            return None if self.nullable else 'must not be null'
        if self.kind is bool:
            return None if isinstance(v, bool) else f'{v!r} must be true or false'
        ok_type = isinstance(v, (int, float)) if self.kind is float else isinstance(v, int)
        if isinstance(v, bool) or not ok_type:
            return f'{v!r} must be {"a number" if self.kind is float else "an integer"}'
        if self.choices is not None and v not in self.choices:
            return f'{v} is not allowed; choose from {", ".join(map(str, self.choices))}'
        if self.low is not None and not self.low <= v <= self.high:
            return f'{v} is out of range; allowed [{self.low}, {self.high}]'
        return None


@dataclass(frozen=True)
class MixerInfo:
    name: str
    cls: type
    args: dict = field(default_factory=dict)
    fixed_tokens: bool = False  # mixes with a dense (N x N) matrix: N comes from img_size
    description: str = ''
    check_dim: Callable | None = None  # (dim, args) -> error message or None

    def defaults(self) -> dict:
        return {k: a.default for k, a in self.args.items()}

    def check_args(self, err, path: str, mixer_args: dict, dim) -> None:
        for k, v in mixer_args.items():
            if k not in self.args:
                allowed = ', '.join(self.args) or 'none'
                err(f'{path}.mixer_args.{k}', f'unknown argument for {self.name}; allowed: {allowed}')
                continue
            msg = self.args[k].check(v)
            if msg:
                err(f'{path}.mixer_args.{k}', msg)
        if self.check_dim is not None and isinstance(dim, int) and not isinstance(dim, bool):
            msg = self.check_dim(dim, {**self.defaults(), **mixer_args})
            if msg:
                err(f'{path}.dim', msg)


MIXERS: dict[str, MixerInfo] = {}


def register_mixer(name: str, args: dict | None = None, fixed_tokens: bool = False, description: str = '',
                   check_dim: Callable | None = None):
    def wrap(cls):
        MIXERS[name] = MixerInfo(name, cls, dict(args or {}), fixed_tokens, description, check_dim)
        cls.mixer_name = name
        return cls
    return wrap


class TokenCountError(RuntimeError):
    pass


class FixedTokenMixer(nn.Module):
    """Base for mixers that multiply by a dense (N x N)-shaped matrix over tokens (NCHW in and out)."""

    def __init__(self, grid_size: tuple[int, int]):
        super().__init__()
        self.grid_size = tuple(grid_size)
        self.num_tokens = self.grid_size[0] * self.grid_size[1]

    def flat_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, N), with a clear error when the grid is not the one this was built for."""
        if tuple(x.shape[-2:]) != self.grid_size:
            h, w = self.grid_size
            raise TokenCountError(
                f'{self.mixer_name} mixer was built for a {h}x{w} token grid ({self.num_tokens} tokens) but got '
                f'{x.shape[-2]}x{x.shape[-1]}; it mixes a fixed token count, so rebuild the model with the '
                f'img_size you want to run at')
        return x.flatten(2)


@register_mixer('identity', description='IdentityFormer: no token mixing at all')
class IdentityMixer(nn.Identity):
    def __init__(self, dim: int = 0, **kwargs):
        super().__init__()


@register_mixer('pooling', {'pool_size': Arg(int, 3, choices=(1, 3, 5, 7, 9, 11), help='average-pool window')},
                description='PoolFormer: pool(x) - x, average pooling without padded zeros')
class PoolingMixer(TimmPooling):
    def __init__(self, dim: int = 0, pool_size: int = 3, **kwargs):
        super().__init__(pool_size=pool_size)


@register_mixer('random', fixed_tokens=True,
                description='RandFormer: a frozen random row-stochastic token-mixing matrix')
class RandomMixer(FixedTokenMixer):
    def __init__(self, dim: int = 0, grid_size: tuple[int, int] = (14, 14), **kwargs):
        super().__init__(grid_size)
        n = self.num_tokens
        # softmax of uniform noise, as in MetaFormer Baselines; frozen (counted, never trained)
        self.random_matrix = nn.Parameter(torch.softmax(torch.rand(n, n), dim=-1), requires_grad=False)

    def forward(self, x):
        y = self.flat_tokens(x) @ self.random_matrix.t()  # y[b, c, m] = sum_n R[m, n] x[b, c, n]
        return y.reshape(x.shape)


@register_mixer('sepconv', {
    'expansion_ratio': Arg(float, 2, 0.25, 8, help='hidden width / dim'),
    'kernel_size': Arg(int, 7, choices=(3, 5, 7, 9, 11, 13), help='depthwise kernel'),
}, description='ConvFormer: pointwise, StarReLU, depthwise, pointwise')
class SepConvMixer(TimmSepConv):
    def __init__(self, dim: int, expansion_ratio: float = 2, kernel_size: int = 7, **kwargs):
        super().__init__(dim, expansion_ratio=expansion_ratio, kernel_size=kernel_size, padding=kernel_size // 2,
                         device=kwargs.get('device'), dtype=kwargs.get('dtype'))


def _check_heads(dim: int, args: dict) -> str | None:
    hd = args['head_dim']
    if isinstance(hd, int) and hd > 0 and dim % hd:
        return f'{dim} is not divisible by head_dim {hd} (attention)'
    return None


@register_mixer('attention', {
    'head_dim': Arg(int, 32, 4, 256, help='channels per head; heads = dim // head_dim'),
    'qkv_bias': Arg(bool, False),
    'proj_bias': Arg(bool, False),
}, description='Transformer: multi-head self-attention over all tokens', check_dim=_check_heads)
class AttentionMixer(TimmAttention):
    """timm's MetaFormer attention; being a subclass, its stage runs in (B, N, C) token layout."""

    def __init__(self, dim: int, head_dim: int = 32, qkv_bias: bool = False, proj_bias: bool = False, **kwargs):
        super().__init__(dim, head_dim=head_dim, qkv_bias=qkv_bias, proj_bias=proj_bias,
                         proj_drop=kwargs.get('proj_drop', 0.), device=kwargs.get('device'),
                         dtype=kwargs.get('dtype'))


@register_mixer('spatial_mlp', {
    'hidden_ratio': Arg(float, 0.5, 0.125, 8, help='token-MLP hidden width / token count'),
    'hidden_dim': Arg(int, None, 1, 8192, nullable=True, help='token-MLP hidden width (overrides hidden_ratio)'),
}, fixed_tokens=True, description='MLP-Mixer: an MLP across all tokens, shared over channels')
class SpatialMlpMixer(FixedTokenMixer):
    def __init__(self, dim: int = 0, grid_size=(14, 14), hidden_ratio: float = 0.5, hidden_dim: int | None = None,
                 **kwargs):
        super().__init__(grid_size)
        hidden = hidden_dim or max(1, int(hidden_ratio * self.num_tokens))
        self.mlp = Mlp(self.num_tokens, hidden, act_layer=nn.GELU)

    def forward(self, x):
        return self.mlp(self.flat_tokens(x)).reshape(x.shape)


@register_mixer('cross_patch', fixed_tokens=True,
                description='ResMLP: one linear layer across tokens, shared over channels')
class CrossPatchMixer(FixedTokenMixer):
    def __init__(self, dim: int = 0, grid_size=(14, 14), **kwargs):
        super().__init__(grid_size)
        self.fc = nn.Linear(self.num_tokens, self.num_tokens)

    def forward(self, x):
        return self.fc(self.flat_tokens(x)).reshape(x.shape)


class CycleFC(nn.Module):
    """CycleMLP's Cycle FC with a 1x3 (or 3x1) pseudo-kernel: channel c reads the pixel shifted by
    (c + 1) % 3 - 1 along one axis (zeros past the border), then a 1x1 conv mixes channels. This is what the
    original's deform_conv2d with fixed offsets computes, written as a gather and a 1x1 conv."""

    def __init__(self, dim: int, axis: int):
        super().__init__()
        self.axis = axis  # -1: along W (kernel 1x3), -2: along H (kernel 3x1)
        self.register_buffer('shift', (torch.arange(dim) + 1) % 3 - 1, persistent=False)
        self.proj = nn.Conv2d(dim, dim, 1)

    def shifted(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        if self.axis == -1:
            idx = torch.arange(W, device=x.device) + 1 + self.shift[:, None]  # (C, W), into the padded tensor
            return F.pad(x, (1, 1)).gather(3, idx[None, :, None, :].expand(B, C, H, W))
        idx = torch.arange(H, device=x.device) + 1 + self.shift[:, None]  # (C, H)
        return F.pad(x, (0, 0, 1, 1)).gather(2, idx[None, :, :, None].expand(B, C, H, W))

    def forward(self, x):
        return self.proj(self.shifted(x))


@register_mixer('cycle', {'qkv_bias': Arg(bool, False, help='bias of the channel FC')},
                description='CycleMLP: Cycle FC along H and W plus a channel FC, re-weighted')
class CycleMixer(nn.Module):
    def __init__(self, dim: int, qkv_bias: bool = False, **kwargs):
        super().__init__()
        self.mlp_c = nn.Conv2d(dim, dim, 1, bias=qkv_bias)
        self.sfc_h = CycleFC(dim, axis=-1)  # original naming: sfc_h has the (1, 3) kernel
        self.sfc_w = CycleFC(dim, axis=-2)
        self.reweight = Mlp(dim, dim // 4, dim * 3)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        B, C, H, W = x.shape
        h, w, c = self.sfc_h(x), self.sfc_w(x), self.mlp_c(x)
        a = (h + w + c).mean(dim=(2, 3))  # (B, C)
        a = self.reweight(a).reshape(B, C, 3).permute(2, 0, 1).softmax(dim=0)[..., None, None]
        return self.proj(h * a[0] + w * a[1] + c * a[2])
