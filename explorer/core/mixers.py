"""Token mixers: the one part of a MetaFormer block that differs between PoolFormer, ConvFormer, CAFormer, ...

Each class implements a mixer declared in `explorer.core.registry` (name + argument schema) and is found by
`mixer_class(name)`. Every mixer takes `dim` plus its own keyword arguments and ignores the rest (timm's
`MetaFormerBlock` passes `proj_drop`, `device`, `dtype`). A mixer that subclasses timm's `Attention` runs in
token layout (B, N, C); all others see NCHW tensors, as in timm.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp
from timm.models.metaformer import Attention as TimmAttention
from timm.models.metaformer import Pooling as TimmPooling
from timm.models.metaformer import SepConv as TimmSepConv

from explorer.core.registry import MIXERS

MIXER_CLASSES: dict[str, type] = {}


def implements(name: str):
    """Class decorator: the module for the registry's mixer `name`."""
    if name not in MIXERS:
        raise KeyError(f'mixer {name!r} is not declared in explorer.core.registry')

    def wrap(cls):
        MIXER_CLASSES[name] = cls
        cls.mixer_name = name
        return cls

    return wrap


def mixer_class(name: str) -> type:
    return MIXER_CLASSES[name]


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
                f'img_size you want to run at'
            )
        return x.flatten(2)


@implements('identity')
class IdentityMixer(nn.Identity):
    def __init__(self, dim: int = 0, **kwargs):
        super().__init__()


@implements('pooling')
class PoolingMixer(TimmPooling):
    def __init__(self, dim: int = 0, pool_size: int = 3, **kwargs):
        super().__init__(pool_size=pool_size)


@implements('random')
class RandomMixer(FixedTokenMixer):
    def __init__(self, dim: int = 0, grid_size: tuple[int, int] = (14, 14), **kwargs):
        super().__init__(grid_size)
        n = self.num_tokens
        # frozen (counted, never trained); uniform until reset_random draws it (build_model does)
        self.random_matrix = nn.Parameter(torch.full((n, n), 1.0 / n), requires_grad=False)

    @torch.no_grad()
    def reset_random(self, generator: torch.Generator | None = None) -> None:
        """Draw the mixing matrix: softmax of uniform noise over each row, as in MetaFormer Baselines."""
        n = self.num_tokens
        self.random_matrix.copy_(torch.softmax(torch.rand(n, n, generator=generator), dim=-1))

    def forward(self, x):
        y = self.flat_tokens(x) @ self.random_matrix.t()  # y[b, c, m] = sum_n R[m, n] x[b, c, n]
        return y.reshape(x.shape)


@implements('sepconv')
class SepConvMixer(TimmSepConv):
    def __init__(self, dim: int, expansion_ratio: float = 2, kernel_size: int = 7, **kwargs):
        super().__init__(
            dim,
            expansion_ratio=expansion_ratio,
            kernel_size=kernel_size,
            padding=kernel_size // 2,
            device=kwargs.get('device'),
            dtype=kwargs.get('dtype'),
        )


@implements('attention')
class AttentionMixer(TimmAttention):
    """timm's MetaFormer attention; being a subclass, its stage runs in (B, N, C) token layout."""

    def __init__(self, dim: int, head_dim: int = 32, qkv_bias: bool = False, proj_bias: bool = False, **kwargs):
        super().__init__(
            dim,
            head_dim=head_dim,
            qkv_bias=qkv_bias,
            proj_bias=proj_bias,
            proj_drop=kwargs.get('proj_drop', 0.0),
            device=kwargs.get('device'),
            dtype=kwargs.get('dtype'),
        )


@implements('spatial_mlp')
class SpatialMlpMixer(FixedTokenMixer):
    def __init__(
        self, dim: int = 0, grid_size=(14, 14), hidden_ratio: float = 0.5, hidden_dim: int | None = None, **kwargs
    ):
        super().__init__(grid_size)
        hidden = hidden_dim or max(1, int(hidden_ratio * dim))  # MLP-Mixer's D_S = C / 2 (384 for B/16)
        self.mlp = Mlp(self.num_tokens, hidden, act_layer=nn.GELU)

    def forward(self, x):
        return self.mlp(self.flat_tokens(x)).reshape(x.shape)


@implements('cross_patch')
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


@implements('cycle')
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
