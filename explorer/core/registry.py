"""The token-mixer registry as data: each mixer's name, the schema of its `mixer_args` and whether it mixes a
fixed token count. The spec validates against this table, so it imports no torch; the modules are in
`explorer.core.mixers` (`@implements(name)`), the cost rules in `explorer.measure.analytic` (`@mixer_cost`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def show(v, limit: int = 60) -> str:
    """repr of a value for a message, clipped: an error names the value, it does not echo a megabyte back. None (an
    empty form field, JSON's null) reads '(empty)': 'None must be an integer' was Python speaking to a user."""
    if v is None:
        return '(empty)'
    text = repr(v)
    return text if len(text) <= limit else text[:limit] + f'... ({len(text):,} characters)'


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
            return None if isinstance(v, bool) else f'{show(v)} must be true or false'
        ok_type = isinstance(v, (int, float)) if self.kind is float else isinstance(v, int)
        if isinstance(v, bool) or not ok_type:
            return f'{show(v)} must be {"a number" if self.kind is float else "an integer"}'
        if self.choices is not None and v not in self.choices:
            return f'{show(v)} is not allowed; choose from {", ".join(map(str, self.choices))}'
        if self.low is not None and not self.low <= v <= self.high:
            return f'{show(v)} is out of range; allowed [{self.low}, {self.high}]'
        return None


@dataclass(frozen=True)
class MixerInfo:
    name: str
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


def declare_mixer(
    name: str,
    args: dict | None = None,
    fixed_tokens: bool = False,
    description: str = '',
    check_dim: Callable | None = None,
) -> MixerInfo:
    """Add a mixer's schema to MIXERS. Its module is registered in explorer.core.mixers with `@implements`,
    its cost rule in explorer.measure.analytic with `@mixer_cost`; tests check all three exist."""
    MIXERS[name] = info = MixerInfo(name, dict(args or {}), fixed_tokens, description, check_dim)
    return info


def _check_heads(dim: int, args: dict) -> str | None:
    hd = args['head_dim']
    if isinstance(hd, int) and hd > 0 and dim % hd:
        return f'{show(dim)} is not divisible by head_dim {show(hd)} (attention)'
    return None


declare_mixer('identity', description='IdentityFormer: no token mixing at all')
declare_mixer(
    'pooling',
    {'pool_size': Arg(int, 3, choices=(1, 3, 5, 7, 9, 11), help='average-pool window')},
    description='PoolFormer: pool(x) - x, average pooling without padded zeros',
)
declare_mixer('random', fixed_tokens=True, description='RandFormer: a frozen random row-stochastic token-mixing matrix')
declare_mixer(
    'sepconv',
    {
        'expansion_ratio': Arg(float, 2, 0.25, 8, help='hidden width / dim'),
        'kernel_size': Arg(int, 7, choices=(3, 5, 7, 9, 11, 13), help='depthwise kernel'),
    },
    description='ConvFormer: pointwise, StarReLU, depthwise, pointwise',
)
declare_mixer(
    'attention',
    {
        'head_dim': Arg(int, 32, 4, 256, help='channels per head; heads = dim // head_dim'),
        'qkv_bias': Arg(bool, False),
        'proj_bias': Arg(bool, False),
    },
    description='Transformer: multi-head self-attention over all tokens',
    check_dim=_check_heads,
)
declare_mixer(
    'spatial_mlp',
    {
        'hidden_ratio': Arg(float, 0.5, 0.125, 8, help='token-MLP hidden width / channels (MLP-Mixer: 0.5)'),
        'hidden_dim': Arg(int, None, 1, 8192, nullable=True, help='token-MLP hidden width (overrides hidden_ratio)'),
    },
    fixed_tokens=True,
    description='MLP-Mixer: an MLP across all tokens, shared over channels',
)
declare_mixer(
    'cross_patch', fixed_tokens=True, description='ResMLP: one linear layer across tokens, shared over channels'
)
declare_mixer(
    'cycle',
    {'qkv_bias': Arg(bool, False, help='bias of the channel FC')},
    description='CycleMLP: Cycle FC along H and W plus a channel FC, re-weighted',
)
