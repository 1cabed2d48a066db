"""The architecture spec: the one data type everything in MetaFormer Explorer stands on.

An `ArchSpec` is plain data (JSON in, JSON out). `build_model(spec)` derives the network from it; the
counters, the app and the CLI all read it. Every field but `stages` has a default, and the defaults are
the MetaFormer-Baselines ones (timm's `MetaFormer`): StarReLU MLPs without bias, channel LayerNorm
without bias, an MLP head, a 7x7/4 stem, 3x3/2 downsampling and res-scale on the second half of stages.
"""

from __future__ import annotations

import copy
import json
import math
import unicodedata
from dataclasses import dataclass, field, fields
from typing import Any

from explorer.core.registry import MIXERS, show

ACTIVATIONS = ('gelu', 'relu', 'silu', 'squared_relu', 'star_relu')
# layernorm*: over channels at each token (eps 1e-6, timm's); layernorm_channel: the same with eps 1e-5, as
# PoolFormer's LayerNormChannel and torch's nn.LayerNorm default (CycleMLP); mln: GroupNorm with one group
NORMS = ('layernorm_nobias', 'layernorm', 'layernorm_channel', 'mln', 'mln_nobias', 'batchnorm', 'affine')
HEADS = ('mlp', 'linear')
# the head: global average pool then norm (MetaFormer, timm), or norm every token then pool (MLP-Mixer, ResMLP,
# CycleMLP and the PoolFormer paper's hybrids normalise all tokens first)
HEAD_ORDERS = ('pool_norm', 'norm_pool')
DATA_CFG_KEYS = ('crop_pct', 'interpolation', 'mean', 'std')  # meta.data_cfg: the authors' preprocessing
META_KEYS = (
    'family',
    'display_name',
    'timm_name',
    'pretrained_tag',
    'top1',
    'params_m',
    'frozen_params_m',
    'gmacs',  # published: ImageNet-1k top-1 %, params (millions), GMACs
    'resolution',
    'source',
    'notes',
    'differs_from_original',
    'data_cfg',  # preprocessing of the original where timm has no pretrained config (timm's keys)
)
# meta's values: text, or published figures in a plausible range (answers echo meta: a 2**64 there is more than a
# JSON response can carry, and a made-up figure must not pass for a published one); None: not given
META_TEXT_KEYS = ('family', 'display_name', 'timm_name', 'pretrained_tag', 'source', 'notes', 'differs_from_original')
MAX_META_TEXT = 4000
META_NUMBER_RANGES = {
    'top1': (0.0, 100.0),
    'params_m': (0.0, 1e6),
    'frozen_params_m': (0.0, 1e6),
    'gmacs': (0.0, 1e7),
    'resolution': (1, 8192),
}

# Limits that keep a laptop alive; the resource guard checks actual cost on top of these.
MAX_STAGES = 6
DEPTH_RANGE = (1, 64)
DIM_RANGE = (4, 2048)
IMG_SIZE_RANGE = (8, 1536)
IN_CHANS_RANGE = (1, 16)
NUM_CLASSES_RANGE = (0, 100_000)
MLP_RATIO_RANGE = (0.25, 16)
RATE_RANGE = (0.0, 0.9)
CONV_RANGES = {'kernel_size': (1, 32), 'stride': (1, 32), 'padding': (0, 16)}


MAX_JSON_DEPTH = 16  # a spec nests 4 deep (stages -> stage -> mixer_args -> value); meta a little more
MAX_JSON_ITEMS = 20_000  # values in one spec, all levels together
MAX_JSON_CHARS = 1_000_000  # a spec's JSON text


def network_key(spec) -> str:
    """What makes two designs the same network: the spec (a dict or an ArchSpec) without its name and its
    published metadata, as canonical JSON."""
    import json

    d = spec.to_dict() if hasattr(spec, 'to_dict') else spec
    return json.dumps({k: v for k, v in d.items() if k not in ('name', 'meta')}, sort_keys=True, default=str)


MAX_ERRORS = 50  # errors a SpecError names


class SpecError(ValueError):
    """Invalid spec. `errors` is a list of (field path, message); str() lists them one per line."""

    def __init__(self, errors: list[tuple[str, str]], omitted: int = 0):
        errors = list(errors)
        # a request may hold 20,000 values, each one wrong: the first MAX_ERRORS are named (`named`), the rest
        # counted (`omitted`, which a copy of this error made from `named` passes on); `errors` ends with the count
        self.named = errors[:MAX_ERRORS]
        self.omitted = int(omitted) + max(0, len(errors) - MAX_ERRORS)
        self.errors = self.named + ([('', f'… and {self.omitted:,} more errors')] if self.omitted else [])
        super().__init__('\n'.join(f'{path}: {msg}' if path else msg for path, msg in self.errors))

    def __reduce__(self):  # picklable (a helper process raises it back to the server), subclasses too
        return type(self), (self.named, self.omitted)


def default_res_scale(num_stages: int) -> list[float | None]:
    """timm's default is [None, None, 1.0, 1.0] for 4 stages: res-scale on the second half of the stages.
    Other stage counts follow the same rule: stage i gets 1.0 when i >= num_stages / 2, else None."""
    return [1.0 if i >= num_stages / 2 else None for i in range(num_stages)]


@dataclass
class ConvSpec:
    kernel_size: int
    stride: int
    padding: int

    def out_size(self, size: int) -> int:
        return (size + 2 * self.padding - self.kernel_size) // self.stride + 1


@dataclass
class StageSpec:
    mixer: str
    depth: int
    dim: int
    mlp_ratio: float = 4
    mixer_args: dict = field(default_factory=dict)
    downsample: bool = True  # stages >= 1: a strided conv before the blocks (timm skips it when dims are equal)
    pos_embed: bool = False  # a learned position embedding (dim x H x W, zeros at init) added before the blocks


DEFAULT_RES_SCALE = type('DefaultResScale', (), {'__repr__': lambda self: '<default res-scale>'})()


@dataclass
class ArchSpec:
    stages: list[StageSpec]
    name: str = 'custom'
    img_size: int = 224
    in_chans: int = 3
    num_classes: int = 1000
    mlp_act: str = 'star_relu'
    mlp_bias: bool = False
    norm: str = 'layernorm_nobias'
    downsample_norm: str | None = 'layernorm_nobias'  # norm after the stem conv and before each downsample conv
    head: str = 'mlp'
    head_norm: str = 'layernorm'  # the head's norm (timm's MetaFormer: LayerNorm2d, eps 1e-6)
    head_order: str = 'pool_norm'  # HEAD_ORDERS
    stem: ConvSpec = field(default_factory=lambda: ConvSpec(7, 4, 2))
    downsample: ConvSpec = field(default_factory=lambda: ConvSpec(3, 2, 1))
    layer_scale_init: Any = None  # number, null, or one (number | null) per stage
    # as above; when not given (absent from JSON, or not passed to the constructor): default_res_scale(len(stages))
    res_scale_init: Any = DEFAULT_RES_SCALE
    drop_path_rate: float = 0.0
    drop_rate: float = 0.0
    meta: dict = field(default_factory=dict)  # published figures and provenance; never affects the model

    def __post_init__(self):
        if self.res_scale_init is DEFAULT_RES_SCALE:  # ArchSpec(stages=...) builds what the same JSON builds
            staged = isinstance(self.stages, (list, tuple))
            self.res_scale_init = default_res_scale(len(self.stages)) if staged else None

    # ---- derived quantities --------------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def per_stage(self, value: Any) -> list:
        """Expand a number-or-list field (layer_scale_init / res_scale_init) to one value per stage."""
        return list(value) if isinstance(value, list) else [value] * self.num_stages

    def grid_sizes(self, img_size: int | None = None) -> list[tuple[int, int]]:
        """Token grid (H, W) of each stage for a square input of `img_size` (default: the spec's)."""
        size = self.img_size if img_size is None else img_size
        size = self.stem.out_size(size)
        out = []
        for i, st in enumerate(self.stages):
            if i > 0 and st.downsample:
                size = self.downsample.out_size(size)
            out.append((size, size))
        return out

    def total_stride(self) -> int:
        n_down = sum(1 for st in self.stages[1:] if st.downsample)
        return self.stem.stride * self.downsample.stride**n_down

    def mixer_kwargs(self, i: int) -> dict:
        """Constructor arguments of stage i's token mixer: the registry defaults, the spec's mixer_args, and
        the token grid for mixers that need a fixed token count."""
        st = self.stages[i]
        info = MIXERS[st.mixer]
        kwargs = {**info.defaults(), **st.mixer_args}
        if info.fixed_tokens:
            kwargs['grid_size'] = self.grid_sizes()[i]
        return kwargs

    # ---- JSON ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == 'stages':
                v = [{sf.name: copy.deepcopy(getattr(st, sf.name)) for sf in fields(StageSpec)} for st in v]
            elif isinstance(v, ConvSpec):
                v = {cf.name: getattr(v, cf.name) for cf in fields(ConvSpec)}
            else:
                v = copy.deepcopy(v)
            d[f.name] = v
        # 'stages' reads best last, after the global settings
        d['stages'] = d.pop('stages')
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + '\n'

    @classmethod
    def from_dict(cls, data: Any) -> ArchSpec:
        """Parse and validate. Raises SpecError naming every bad field path, value and what is allowed."""
        spec = _parse(data)
        spec.validate()
        return spec

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        if len(text) > MAX_JSON_CHARS:
            raise SpecError(
                [('', f'{len(text):,} characters is over the {MAX_JSON_CHARS:,}-character limit for a spec')]
            )
        try:
            data = json.loads(text, parse_int=json_int, object_pairs_hook=unique_keys)
        except DuplicateKey as e:
            raise SpecError([('', str(e))]) from None
        except json.JSONDecodeError as e:
            raise SpecError([('', f'not valid JSON: {e.msg} at line {e.lineno} column {e.colno}')]) from None
        except ValueError as e:  # json_int's: an integer of over 4,300 digits
            raise SpecError([('', f'not valid JSON: {e}')]) from None
        except RecursionError:
            raise SpecError([('', f'the spec is nested more than {MAX_JSON_DEPTH} levels deep')]) from None
        return cls.from_dict(data)

    def replace(self, **changes) -> ArchSpec:
        """A validated copy with top-level fields changed (dict values are parsed like JSON)."""
        d = self.to_dict()
        d.update(changes)
        return ArchSpec.from_dict(d)

    # ---- validation ---------------------------------------------------------------------------------
    def validate(self) -> None:
        errors: list[tuple[str, str]] = []
        err = lambda path, msg: errors.append((path, msg))  # noqa: E731

        _check_int(err, 'img_size', self.img_size, IMG_SIZE_RANGE)
        _check_int(err, 'in_chans', self.in_chans, IN_CHANS_RANGE)
        _check_int(err, 'num_classes', self.num_classes, NUM_CLASSES_RANGE)
        _check_choice(err, 'mlp_act', self.mlp_act, ACTIVATIONS)
        _check_choice(err, 'norm', self.norm, NORMS)
        if self.downsample_norm is not None:
            _check_choice(err, 'downsample_norm', self.downsample_norm, NORMS)
        _check_choice(err, 'head', self.head, HEADS)
        _check_choice(err, 'head_norm', self.head_norm, NORMS)
        _check_choice(err, 'head_order', self.head_order, HEAD_ORDERS)
        if self.head_order == 'norm_pool' and self.head_norm == 'batchnorm':
            err('head_norm', 'batchnorm is allowed only with head_order pool_norm (it normalises pooled features)')
        _check_bool(err, 'mlp_bias', self.mlp_bias)
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > 100:
            err('name', f'{show(self.name)} must be a non-empty string of at most 100 characters')
        elif problem := name_problem(self.name):
            err('name', f'{show(self.name)} {problem}')
        for key in ('drop_path_rate', 'drop_rate'):
            _check_number(err, key, getattr(self, key), RATE_RANGE)
        for key, conv in (('stem', self.stem), ('downsample', self.downsample)):
            for cf in fields(ConvSpec):
                _check_int(err, f'{key}.{cf.name}', getattr(conv, cf.name), CONV_RANGES[cf.name])
        for k in self.meta:
            if k not in META_KEYS:
                err(f'meta.{k}', f'unknown key; allowed: {", ".join(META_KEYS)}')
        _check_meta_values(err, self.meta)
        _check_data_cfg(err, self.meta.get('data_cfg'))

        n = len(self.stages)
        if not 1 <= n <= MAX_STAGES:
            err('stages', f'{n} stages; a spec has 1 to {MAX_STAGES} stages')
        for key in ('layer_scale_init', 'res_scale_init'):
            value = getattr(self, key)
            if isinstance(value, list):
                if len(value) != n:
                    entries, stages = ('entry' if len(value) == 1 else 'entries'), ('stage' if n == 1 else 'stages')
                    err(key, f'{value} has {len(value)} {entries} but the spec has {n} {stages}')
                for j, v in enumerate(value):
                    _check_scale(err, f'{key}[{j}]', v)
            else:
                _check_scale(err, key, value)

        for i, st in enumerate(self.stages):
            p = f'stages[{i}]'
            known_mixer = isinstance(st.mixer, str) and st.mixer in MIXERS
            if not known_mixer:
                err(f'{p}.mixer', f'{show(st.mixer)} is not a registered mixer; choose from {", ".join(MIXERS)}')
            _check_int(err, f'{p}.depth', st.depth, DEPTH_RANGE)
            _check_int(err, f'{p}.dim', st.dim, DIM_RANGE)
            _check_number(err, f'{p}.mlp_ratio', st.mlp_ratio, MLP_RATIO_RANGE)
            _check_bool(err, f'{p}.downsample', st.downsample)
            _check_bool(err, f'{p}.pos_embed', st.pos_embed)
            if i == 0 and st.downsample is False:
                err(
                    f'{p}.downsample',
                    'false is not allowed for the first stage: the stem always runs '
                    '(set stem.stride to 1 for no downsampling)',
                )
            if i > 0 and st.downsample is False and isinstance(st.dim, int) and st.dim != self.stages[i - 1].dim:
                err(
                    f'{p}.downsample',
                    f'false needs dim equal to stages[{i - 1}].dim '
                    f'({self.stages[i - 1].dim}), got {st.dim}: the downsample conv is what changes the width',
                )
            if not isinstance(st.mixer_args, dict):
                err(f'{p}.mixer_args', f'{show(st.mixer_args)} must be an object')
            elif known_mixer:
                MIXERS[st.mixer].check_args(err, p, st.mixer_args, st.dim)

        if errors:  # geometry below needs sane numbers
            raise SpecError(errors)

        stride = self.total_stride()
        if self.img_size % stride:
            err(
                'img_size',
                f'{self.img_size} is not divisible by the total stride {stride} '
                f'(stem {self.stem.stride} x downsample {self.downsample.stride} per downsampling stage); '
                + (
                    f'try {max(stride, self.img_size // stride * stride)}'
                    if stride <= IMG_SIZE_RANGE[1]
                    else f'no allowed img_size (at most {IMG_SIZE_RANGE[1]}) is: lower the strides'
                ),
            )
        else:
            grids = self.grid_sizes()
            for i, (h, _) in enumerate(grids):
                if h < 1:
                    err(f'stages[{i}]', f'img_size {self.img_size} leaves no tokens at this stage')
            for i, st in enumerate(self.stages):
                if st.pos_embed is True and st.dim * grids[i][0] * grids[i][1] > 2**24:
                    err(
                        f'stages[{i}].pos_embed',
                        f'a position embedding of {st.dim}x{grids[i][0]}x{grids[i][1]} values is over the '
                        f'{2**24:,}-value limit',
                    )
                if MIXERS[st.mixer].fixed_tokens and grids[i][0] * grids[i][1] > 4096:
                    err(
                        f'stages[{i}].mixer',
                        f'{st.mixer} mixes all tokens with a dense matrix; '
                        f'{grids[i][0]}x{grids[i][1]} tokens is above the 4096 limit',
                    )
        if errors:
            raise SpecError(errors)


# ---- parsing helpers ----------------------------------------------------------------------------------
def json_excess(data: Any, max_depth: int, max_items: int) -> tuple[str, Any] | None:
    """Walk JSON-like data without recursion: ('depth', top-level key) for the first value nested deeper than
    max_depth levels (the data itself is level 1; the key is None when the data is not an object), ('items', None)
    once it holds more than max_items values, else None. Stops at the first excess: bounded work on any input."""
    top = data.items() if isinstance(data, dict) else [(None, data)]
    stack = [(v, 2 if isinstance(data, dict) else 1, k) for k, v in top]
    items = 1 if isinstance(data, dict) else 0
    while stack:
        value, depth, key = stack.pop()
        items += 1
        if depth > max_depth:
            return 'depth', key
        if items > max_items:
            return 'items', None
        if isinstance(value, dict):
            stack.extend((v, depth + 1, key) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1, key) for v in value)
    return None


def check_size(data: Any) -> None:
    """Refuse data nested deeper than MAX_JSON_DEPTH or holding more than MAX_JSON_ITEMS values, before anything
    walks it recursively (no RecursionError, no minute spent on a million stages)."""
    excess = json_excess(data, MAX_JSON_DEPTH, MAX_JSON_ITEMS)
    if excess and excess[0] == 'depth':
        raise SpecError([('', f'the spec is nested more than {MAX_JSON_DEPTH} levels deep')])
    if excess:
        raise SpecError([('', f'the spec holds more than {MAX_JSON_ITEMS:,} values')])


def _parse(data: Any) -> ArchSpec:
    errors: list[tuple[str, str]] = []
    if not isinstance(data, dict):
        raise SpecError([('', f'a spec is a JSON object, got {type(data).__name__}')])
    if isinstance(data.get('stages'), list) and len(data['stages']) > MAX_STAGES:
        raise SpecError([('stages', f'{len(data["stages"]):,} stages; a spec has 1 to {MAX_STAGES} stages')])
    check_size(data)
    known = {f.name for f in fields(ArchSpec)}
    for k in data:
        if k not in known:
            errors.append((str(k), f'unknown key; allowed: {", ".join(sorted(known))}'))
    if 'stages' not in data:
        errors.append(('stages', 'missing; a spec needs at least one stage'))
    elif not isinstance(data['stages'], list):
        errors.append(('stages', f'{show(data["stages"])} must be a list of stage objects'))
    stages = []
    for i, s in enumerate(data.get('stages') or [] if isinstance(data.get('stages'), list) else []):
        p = f'stages[{i}]'
        if not isinstance(s, dict):
            errors.append((p, f'{show(s)} must be an object with mixer, depth and dim'))
            continue
        sknown = {f.name for f in fields(StageSpec)}
        for k in s:
            if k not in sknown:
                errors.append((f'{p}.{k}', f'unknown key; allowed: {", ".join(sorted(sknown))}'))
        for k in ('mixer', 'depth', 'dim'):
            if k not in s:
                errors.append((f'{p}.{k}', 'missing (required)'))
        if all(k in s for k in ('mixer', 'depth', 'dim')):
            stages.append(StageSpec(**{k: copy.deepcopy(v) for k, v in s.items() if k in sknown}))
    kwargs = {k: copy.deepcopy(v) for k, v in data.items() if k in known and k != 'stages'}
    for key in ('stem', 'downsample'):
        if key in kwargs:
            v = kwargs[key]
            cnames = [f.name for f in fields(ConvSpec)]
            if not isinstance(v, dict) or set(v) != set(cnames):
                errors.append((key, f'{show(v)} must be an object with exactly {", ".join(cnames)}'))
                kwargs.pop(key)
            else:
                kwargs[key] = ConvSpec(**v)
    if 'meta' in kwargs and not isinstance(kwargs['meta'], dict):
        errors.append(('meta', f'{show(kwargs["meta"])} must be an object'))
        kwargs.pop('meta')
    if errors:
        raise SpecError(errors)
    return ArchSpec(stages=stages, **kwargs)  # res_scale_init absent: the default (__post_init__)


class DuplicateKey(ValueError):
    pass


def unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """A JSON object whose keys are all different: json keeps the last of two, so a file with two 'stages' was
    read as its second without a word."""
    out: dict = {}
    for k, v in pairs:
        if k in out:
            shown = k if len(k) <= 40 else k[:40] + '...'
            raise DuplicateKey(f'the key {shown!r} appears twice in one object (JSON keeps only the last): keep one')
        out[k] = v
    return out


def json_int(text: str) -> int:
    """An integer of a spec's JSON text; one of more digits than Python converts (4,300) is named by its length
    (Python's own message told a visitor to change the server's sys.set_int_max_str_digits)."""
    digits = len(text.lstrip('-'))
    if digits > 4300:
        raise ValueError(f'an integer of {digits:,} digits (a number in a spec has at most 4,300)')
    return int(text)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_finite_number(v) -> bool:
    """An int or a finite float (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and (isinstance(v, int) or math.isfinite(v))


# characters that draw nothing yet are not spaces or formatting (Lo / So): a name of them reads as blank, and one
# after a visible name reads as that name
BLANKS = frozenset('\u115f\u1160\u3164\uffa0\u2800')
MAX_MARKS = 4  # combining marks on one character (more stack into a smear over the neighbouring text)
# combining marks that draw nothing (grapheme joiner, Mongolian free variation selectors, Khmer inherent vowels)
INVISIBLE_MARKS = frozenset('\u034f\u17b4\u17b5\u180b\u180c\u180d\u180f')
KEYCAP = '\u20e3'


def _is_variation_selector(c: str) -> bool:
    return '\ufe00' <= c <= '\ufe0f' or '\U000e0100' <= c <= '\U000e01ef'


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a design, or None. A name is shown beside counts (pins, charts, files), so two names
    must not look alike while differing: a right-to-left override or a zero-width character once made a pin's
    label read as another design's, with other counts."""
    cats = [unicodedata.category(c) for c in name]
    if any(k in ('Cc', 'Cf', 'Co', 'Cs', 'Zl', 'Zp') for k in cats):
        return 'holds control, invisible formatting or line-breaking characters; use visible text'
    if 'Cn' in cats:
        return f'holds characters unknown to Unicode {unicodedata.unidata_version} (as this server knows it)'
    for i, c in enumerate(name):  # a variation selector shows only as an emoji's style (or a keycap): else unseen
        if c in INVISIBLE_MARKS or (
            _is_variation_selector(c)
            and not (i and cats[i - 1] == 'So')
            and not (i + 1 < len(name) and name[i + 1] == KEYCAP)
        ):
            return 'holds a mark that draws nothing (a variation selector or joiner); use visible text'
    if any(c in BLANKS or (k == 'Zs' and c != ' ') for c, k in zip(name, cats)):
        return 'holds blank characters other than the space; use visible text'
    if name != name.strip(' '):
        return 'begins or ends with a space'
    if all(k == 'Zs' or k.startswith('M') for k in cats):
        return 'has no visible character'
    run = 0
    for k in cats:
        run = run + 1 if k in ('Mn', 'Me') else 0
        if run > MAX_MARKS:
            return f'stacks more than {MAX_MARKS} combining marks on one character'
    return None


def _check_int(err, path, v, rng):
    if not _is_int(v):
        err(path, f'{show(v)} must be an integer in [{rng[0]}, {rng[1]}]')
    elif not rng[0] <= v <= rng[1]:
        err(path, f'{show(v)} is out of range; allowed [{rng[0]}, {rng[1]}]')


def _check_number(err, path, v, rng):
    if not is_finite_number(v):
        err(path, f'{show(v)} must be a number in [{rng[0]}, {rng[1]}]')
    elif not rng[0] <= v <= rng[1]:
        err(path, f'{show(v)} is out of range; allowed [{rng[0]}, {rng[1]}]')


def _check_bool(err, path, v):
    if not isinstance(v, bool):
        err(path, f'{show(v)} must be true or false')


def _check_choice(err, path, v, choices):
    if v not in choices:
        err(path, f'{show(v)} is not allowed; choose from {", ".join(choices)}')


def _check_meta_values(err, meta: dict) -> None:
    for k in META_TEXT_KEYS:
        v = meta.get(k)
        if v is not None and (not isinstance(v, str) or len(v) > MAX_META_TEXT):
            err(f'meta.{k}', f'{show(v)} must be text of at most {MAX_META_TEXT:,} characters')
    for k, (low, high) in META_NUMBER_RANGES.items():
        v = meta.get(k)
        if v is not None and not (is_finite_number(v) and low <= v <= high and (k != 'resolution' or _is_int(v))):
            kind = 'an integer' if k == 'resolution' else 'a number'
            err(f'meta.{k}', f'{show(v)} must be {kind} in [{low:g}, {high:g}]')


def _check_data_cfg(err, cfg):
    """meta.data_cfg: {crop_pct in [0.25, 1], interpolation, mean and std (lists of 1-16 numbers)}."""
    if cfg is None:
        return
    if not isinstance(cfg, dict):
        err('meta.data_cfg', f'{show(cfg)} must be an object with keys from {", ".join(DATA_CFG_KEYS)}')
        return
    for k, v in cfg.items():
        p = f'meta.data_cfg.{k}'
        if k not in DATA_CFG_KEYS:
            err(p, f'unknown key; allowed: {", ".join(DATA_CFG_KEYS)}')
        elif k == 'crop_pct':
            _check_number(err, p, v, (0.25, 1.0))
        elif k == 'interpolation':
            _check_choice(err, p, v, ('bilinear', 'bicubic', 'nearest'))
        else:  # mean in [0, 1], std in (0, 1]: timm's convention of pixel values scaled to [0, 1]
            low_ok = (lambda a: a >= 0) if k == 'mean' else (lambda a: a > 0)
            if not (
                isinstance(v, list)
                and 1 <= len(v) <= 16
                and all(is_finite_number(a) and low_ok(a) and a <= 1 for a in v)
            ):
                err(p, f'{show(v)} must be a list of 1 to 16 numbers in {"[0, 1]" if k == "mean" else "(0, 1]"}')


def _check_scale(err, path, v):
    if v is not None and not (is_finite_number(v) and 0 < v <= 10):
        err(path, f'{show(v)} must be null or a number in (0, 10]')
