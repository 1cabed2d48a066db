"""Weights for a composed model: timm's pretrained files (through the Hugging Face cache), local checkpoints,
or none (random initialisation), with an honest account of which one a model carries.

Checkpoints are read with `safetensors` or `torch.load(weights_only=True)`, never by unpickling arbitrary
objects. A state dict in the official sail-sg layout (PoolFormer v1 `network.*`, MetaFormer Baselines
`downsample_layers.*`) is renamed with timm's own `checkpoint_filter_fn`. Keys that do not fit the model are
listed in a `LoadReport` (missing, unexpected, shape-mismatched) instead of surfacing as a stack trace.

Preprocessing travels with the weights: `WeightsInfo.pretrained_cfg` holds timm-style keys (input_size,
interpolation, crop_pct, mean, std) from timm's pretrained config, or from the checkpoint's own config
(`pretrained_cfg` / `data_config` entry, safetensors metadata, or a timm-style `config.json` beside the file).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import socket
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn as nn

from explorer.core.build import build_model
from explorer.core.catalog import pretrained_name
from explorer.core.registry import show
from explorer.core.spec import IMG_SIZE_RANGE, IN_CHANS_RANGE, NUM_CLASSES_RANGE, ArchSpec
from explorer.explain.methods import RANDOM_WARNING

CHECKPOINT_SUFFIXES = ('.safetensors', '.pth', '.pth.tar', '.pt', '.bin', '.ckpt')
NESTED_KEYS = ('state_dict', 'model', 'state_dict_ema', 'model_ema', 'module')  # first found wins
PREFIXES = ('module.', '_orig_mod.')  # DistributedDataParallel, torch.compile
CONFIG_KEYS = ('pretrained_cfg', 'data_config')
LABEL_KEYS = ('label_names', 'class_names')
METADATA_KEYS = CONFIG_KEYS + LABEL_KEYS + ('classes', 'preprocessing', 'spec')  # JSON values read
CLASSIFIER_WEIGHTS = ('head.fc.weight', 'head.fc.fc2.weight')  # timm's MetaFormer: linear head, MLP head


class WeightsError(ValueError):
    """Weights could not be found, read or fitted to the model; the message says why and what to do."""


@dataclass
class LoadReport:
    """How a state dict fitted a model. `mismatched` rows are (key, checkpoint shape, model shape)."""

    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def to_dict(self) -> dict:
        d = asdict(self)
        d['mismatched'] = [{'key': k, 'checkpoint': list(a), 'model': list(b)} for k, a, b in self.mismatched]
        return d

    def __str__(self) -> str:
        lines = [
            f'{self.loaded} tensors loaded; {len(self.missing)} missing, {len(self.unexpected)} unexpected, '
            f'{len(self.mismatched)} with a different shape'
        ]
        for title, keys in (
            ('missing from the checkpoint', self.missing),
            ('in the checkpoint but not in the model', self.unexpected),
        ):
            if keys:
                lines.append(f'  {title}: {_short_list(keys)}')
        for k, a, b in self.mismatched[:8]:
            lines.append(f'  shape of {k}: checkpoint {tuple(a)} vs model {tuple(b)}')
        if len(self.mismatched) > 8:
            lines.append(f'  ... and {len(self.mismatched) - 8} more shape mismatches')
        # the classifier's last layer only (timm's head.fc, or head.fc.fc2 of the MLP head): an MLP head's hidden
        # layer (head.fc.fc1) differs with the width, and its size is no number of classes
        final = [(a, b) for k, a, b in self.mismatched if k in CLASSIFIER_WEIGHTS and a and b and a[0] != b[0]]
        if final:
            a, b = final[0]
            lines.append(
                f'  hint: the checkpoint head has {a[0]} outputs and the spec {b[0]}; set num_classes to {a[0]}'
            )
        return '\n'.join(lines)


def _short_list(keys: list[str], n: int = 6) -> str:
    return ', '.join(keys[:n]) + (f' ... ({len(keys) - n} more)' if len(keys) > n else '')


@dataclass
class WeightsInfo:
    """Where a model's weights came from. source: 'pretrained' | 'checkpoint' | 'random'."""

    source: str
    where: str
    pretrained_cfg: dict = field(default_factory=dict)
    label_names: list[str] | None = None
    report: LoadReport | None = None
    note: str = ''  # what was set aside while loading, said with the banner

    @property
    def trained(self) -> bool:
        return self.source != 'random'

    def banner(self) -> str:
        """One plain sentence for people: trained from where, or the random-weights warning."""
        if self.source == 'pretrained':
            return f'pretrained weights: {self.where}'
        if self.source == 'checkpoint':
            extra = '' if self.report is None or self.report.ok else ' (partially: see the load report)'
            return f'weights from checkpoint {self.where}{extra}{"; " + self.note if self.note else ""}'
        return f'{RANDOM_WARNING} ({self.where})'

    def to_dict(self) -> dict:
        return {
            'source': self.source,
            'where': self.where,
            'trained': self.trained,
            'banner': self.banner(),
            'pretrained_cfg': _jsonable(self.pretrained_cfg),
            'report': self.report.to_dict() if self.report else None,
        }


def _jsonable(d: dict) -> dict:
    return {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in d.items()
        if isinstance(v, (str, int, float, bool, tuple, list, type(None)))
    }


# ---- reading checkpoints -------------------------------------------------------------------------------
def max_checkpoint_mb() -> int:
    """Largest checkpoint file read, MiB: EXPLORER_MAX_CHECKPOINT_MB, default 2048 (caformer_b36 in fp32 is
    about 380 MiB)."""
    raw = os.environ.get('EXPLORER_MAX_CHECKPOINT_MB', '2048')
    try:
        value = int(raw)
    except ValueError:
        raise WeightsError(f'EXPLORER_MAX_CHECKPOINT_MB={raw!r} is not an integer') from None
    if value <= 0:
        raise WeightsError(f'EXPLORER_MAX_CHECKPOINT_MB={raw!r} must be positive')
    return value


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint file safely. Returns (state dict, extras) where extras may hold `pretrained_cfg`
    (timm data-config keys) and `label_names` found in the file or in a `config.json` beside it."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(
            f'checkpoint {str(p)!r} does not exist' if not p.exists() else f'checkpoint {str(p)!r} is not a file'
        )
    size = p.stat().st_size
    if size == 0:
        raise WeightsError(f'checkpoint {str(p)!r} is empty (0 bytes)')
    limit_mb = max_checkpoint_mb()
    if size > limit_mb * 2**20:
        raise WeightsError(
            f'checkpoint {str(p)!r} is {size / 2**20:,.0f} MiB, over the {limit_mb:,} MiB limit '
            f'(set EXPLORER_MAX_CHECKPOINT_MB to change it)'
        )
    if p.name.endswith('.safetensors'):
        sd, extras = _read_safetensors(p)
    elif p.name.endswith(CHECKPOINT_SUFFIXES):
        sd, extras = _read_torch(p)
    else:
        raise WeightsError(f'checkpoint {str(p)!r}: unknown file type; use one of {", ".join(CHECKPOINT_SUFFIXES)}')
    extras.update({k: v for k, v in _sidecar_config(p).items() if k not in extras})
    if not sd:
        raise WeightsError(f'checkpoint {str(p)!r} holds no tensors')
    if 'pretrained_cfg' in extras:
        _check_pretrained_cfg(extras['pretrained_cfg'])
    if 'label_names' in extras:
        _check_label_names(extras['label_names'])
    return sd, extras


def _check_pretrained_cfg(cfg) -> None:
    """The types of the data-config keys a checkpoint brings (its metadata, a pickled dict, config.json), before
    timm reads them: explorer.explain.predict.check_data_config then checks their values."""
    if not isinstance(cfg, dict):
        raise WeightsError(f'checkpoint pretrained_cfg: {_show(cfg)} is not allowed; allowed a JSON object')
    for key in ('mean', 'std'):
        v = cfg.get(key)
        if v is not None and (
            not isinstance(v, (list, tuple)) or not 1 <= len(v) <= IN_CHANS_RANGE[1] or not all(map(_finite, v))
        ):
            raise WeightsError(
                f'checkpoint pretrained_cfg.{key}: {_show(v)} is not allowed; allowed a list of 1 to '
                f'{IN_CHANS_RANGE[1]} finite numbers (one per input channel)'
            )
    crop = cfg.get('crop_pct')
    if crop is not None and not _finite(crop):
        raise WeightsError(f'checkpoint pretrained_cfg.crop_pct: {_show(crop)} is not allowed; allowed [0.25, 1]')
    for key, choices in (('interpolation', INTERPOLATIONS), ('crop_mode', CROP_MODES)):
        if cfg.get(key) is not None:
            _pre_choice(key, cfg[key], choices, 'pretrained_cfg')


def _check_label_names(names) -> None:
    """Class names a checkpoint brings: a list of text (or numbers), at most one per class a spec can have."""
    top = NUM_CLASSES_RANGE[1]
    if not isinstance(names, list) or len(names) > top or not all(isinstance(n, (str, int, float)) for n in names):
        raise WeightsError(
            f'checkpoint class names (classes / label_names): {_show(names)} is not allowed; allowed a list of at '
            f'most {top:,} names (text)'
        )


def _read_safetensors(p: Path) -> tuple[dict, dict]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(p), framework='pt') as f:
            sd = {k: f.get_tensor(k) for k in f.keys()}
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f'checkpoint {str(p)!r} is not a valid safetensors file ({e})') from None
    decoded = {k: _metadata_json(k, meta[k]) for k in METADATA_KEYS if k in meta}
    decoded = {k: v for k, v in decoded.items() if v is not None}
    extras = {}
    for key, value in decoded.items():
        if key == 'classes':
            extras['label_names'] = value
        elif key == 'preprocessing' and isinstance(value, dict):
            spec = decoded.get('spec')
            extras['pretrained_cfg'] = explorer_preprocessing_cfg(value, spec if isinstance(spec, dict) else None)
        elif key == 'spec':
            extras['spec'] = value
        else:
            extras[_extra_name(key)] = value
    return _strip_prefixes(sd), extras


def _metadata_json(key: str, raw: str):
    """One safetensors metadata value decoded from JSON; None when it is not JSON (foreign metadata is skipped)."""
    try:
        return json.loads(raw)
    except ValueError:  # not JSON, or an integer of more than 4,300 digits (Python's limit)
        return None
    except RecursionError:  # valid JSON nested thousands deep: the decoder gives up
        raise WeightsError(
            f'checkpoint metadata {key}: nested too deeply to read; allowed: the JSON that save_checkpoint writes'
        ) from None


PREPROCESSING_RESIZES = ('pad', 'none', 'bilinear')
# the resampling filters a data config may name (explorer.explain.predict checks configs against these too)
INTERPOLATIONS = ('nearest', 'bilinear', 'bicubic', 'lanczos', 'box', 'hamming')
CROP_MODES = ('center', 'squash', 'border')


def explorer_preprocessing_cfg(pre: dict, spec: dict | None = None) -> dict:
    """A MetaFormer Explorer trained checkpoint's preprocessing (explorer.train.data.Preprocessing: img_size, resize
    'pad'|'none'|'bilinear', mean, std, in_chans, source_size) as timm data-config keys. 'pad' becomes
    `pad_from`: resize to source_size, then centre on a background canvas of img_size. An image-folder run's
    ({'kind': 'timm', ...}) is timm's data config already: its keys are checked and kept.

    Anyone can upload a checkpoint, so every field is checked before anything is sized by it: integers within the
    spec's limits (in_chans and img_size equal to `spec`'s, the checkpoint's own spec dict, where it states
    them), finite numbers, one mean and one std (positive) per channel. Raises WeightsError naming the field."""
    c_rng, c_note = _spec_int(spec, 'in_chans', IN_CHANS_RANGE)
    size_rng, size_note = _spec_int(spec, 'img_size', IMG_SIZE_RANGE)
    if pre.get('kind') == 'timm':
        shape = pre.get('input_size')
        if not isinstance(shape, list) or len(shape) != 3:
            raise WeightsError(
                f'checkpoint preprocessing.input_size: {_show(shape)} is not allowed; allowed [channels, height, width]'
            )
        c = _pre_int('input_size[0]', shape[0], c_rng, c_note)
        size = _pre_int('input_size[1]', shape[1], size_rng, size_note)
        _pre_int('input_size[2]', shape[2], (size, size), ' (square: equal to input_size[1])')
        crop = pre.get('crop_pct', 1.0)
        if not _finite(crop) or not 0.25 <= crop <= 1.0:
            raise WeightsError(f'checkpoint preprocessing.crop_pct: {_show(crop)} is not allowed; allowed [0.25, 1]')
        cfg = {
            'input_size': (c, size, size),
            'mean': _per_channel('mean', pre.get('mean', 0.0), c),
            'std': _per_channel('std', pre.get('std', 1.0), c),
            'interpolation': _pre_choice('interpolation', pre.get('interpolation', 'bilinear'), INTERPOLATIONS),
            'crop_pct': float(crop),
        }
        if 'crop_mode' in pre:
            cfg['crop_mode'] = _pre_choice('crop_mode', pre['crop_mode'], CROP_MODES)
        return cfg
    # a field left out: the spec's value where the checkpoint's spec states one, else Preprocessing's default
    c = _pre_int('in_chans', pre.get('in_chans', c_rng[0] if c_note else 1), c_rng, c_note)
    size = _pre_int('img_size', pre.get('img_size', size_rng[0] if size_note else 32), size_rng, size_note)
    resize = _pre_choice('resize', pre.get('resize', 'pad'), PREPROCESSING_RESIZES)
    pad = resize == 'pad'  # only then is the source image placed on the canvas (a smaller img_size resizes)
    source = _pre_int(
        'source_size', pre.get('source_size', 28), (1, size if pad else IMG_SIZE_RANGE[1]), ' with resize pad' * pad
    )
    cfg = {
        'input_size': (c, size, size),
        'mean': _per_channel('mean', pre.get('mean', 0.0), c),
        'std': _per_channel('std', pre.get('std', 1.0), c),
        'interpolation': 'bilinear',
        'crop_pct': 1.0,
    }
    if pad:
        cfg['pad_from'] = source
    elif resize == 'bilinear':  # training's F.interpolate from the source size, not PIL's antialiased resize
        cfg['resize_from'] = source
    return cfg


def _spec_int(spec: dict | None, key: str, rng: tuple[int, int]) -> tuple[tuple[int, int], str]:
    """(allowed range, why) for a preprocessing integer: the value of the checkpoint's own spec where it has a
    valid one (ArchSpec's default where the spec leaves it out; the spec itself is checked, with its own
    messages, when the model is built), else the spec limits."""
    if not isinstance(spec, dict):
        return rng, ''
    v = spec.get(key, getattr(ArchSpec, key))
    if not _int(v) or not rng[0] <= v <= rng[1]:
        return rng, ''
    return (v, v), f" (the checkpoint's spec has {key} {v})"


def _pre_int(name: str, v, rng: tuple[int, int], note: str = '') -> int:
    if not _int(v) or not rng[0] <= v <= rng[1]:
        allowed = str(rng[0]) if rng[0] == rng[1] else f'an integer in [{rng[0]}, {rng[1]}]'
        raise WeightsError(f'checkpoint preprocessing.{name}: {_show(v)} is not allowed; allowed {allowed}{note}')
    return v


def _pre_choice(name: str, v, choices: tuple[str, ...], where: str = 'preprocessing') -> str:
    if not isinstance(v, str) or v not in choices:
        raise WeightsError(f'checkpoint {where}.{name}: {_show(v)} is not allowed; choose from {", ".join(choices)}')
    return v


def _per_channel(name: str, v, c: int) -> tuple[float, ...]:
    """One number for every channel, or a list of `c` numbers; all finite (std: positive)."""
    values = list(v) if isinstance(v, list) else [v] * c
    if len(values) != c or not all(_finite(a) and (name != 'std' or a > 0) for a in values):
        what = 'positive finite numbers' if name == 'std' else 'finite numbers'
        raise WeightsError(
            f'checkpoint preprocessing.{name}: {_show(v)} is not allowed; allowed a number or a list of {c} {what} '
            f'(one per input channel)'
        )
    return tuple(float(a) for a in values)


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _finite(v) -> bool:
    """A real number (not a bool) that is finite as a float: JSON allows NaN, Infinity and 400-digit integers."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:
        return False


def _show(v) -> str:
    """A request-supplied value for a message, at most 60 characters of it (a container holding more than a few
    plain numbers is named by its length, never printed)."""
    if isinstance(v, (list, dict)) and (len(v) > 8 or not all(isinstance(a, (int, float)) for a in v)):
        return f'a {type(v).__name__} of {len(v):,} value{"" if len(v) == 1 else "s"}'
    return show(v[:61] if isinstance(v, str) else v, 60)


def _read_torch(p: Path) -> tuple[dict, dict]:
    _check_zip_size(p)
    import warnings

    with warnings.catch_warnings(record=True) as said:  # torch's note on the pickle protocol: a reason, not noise
        warnings.simplefilter('always')
        try:
            obj = torch.load(str(p), map_location='cpu', weights_only=True)
        except pickle.UnpicklingError as e:
            error = e
        except (RuntimeError, OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
            # KeyError and the like: bytes the weights-only unpickler reads as an unknown opcode (a text file)
            raise WeightsError(f'checkpoint {str(p)!r} is not a readable PyTorch file ({str(e)[:200]})') from None
        else:
            error = None
    if error is not None:
        lines = str(error).splitlines()
        glob = next((ln.strip() for ln in lines if 'GLOBAL' in ln or 'global' in ln.split(':')[0]), None)
        protocol = next((m[1] for w in said if (m := re.search(r'pickle protocol (\d+)', str(w.message)))), None)
        if glob is None and protocol is not None:  # torch.save(..., pickle_protocol=4): FRAME opcodes
            raise WeightsError(
                f'checkpoint {str(p)!r} was saved with pickle protocol {protocol}, which the safe (weights-only) '
                "reader cannot read: save it again with torch.save's default protocol, or as .safetensors"
            ) from None
        if glob is None:  # the weights-only unpickler met bytes that are not a pickle at all
            raise WeightsError(
                f'checkpoint {str(p)!r} is not a readable PyTorch file '
                f'({next((ln for ln in lines if "Unsupported" in ln), "not a pickle")})'
            ) from None
        raise WeightsError(
            f'refused to load {str(p)!r}: it contains Python objects other than tensors and plain containers, '
            f'and unpickling them could run arbitrary code ({glob[:160]}). Re-save just the state dict '
            f'(torch.save(model.state_dict(), path)) or convert it to .safetensors'
        ) from None
    if not isinstance(obj, dict):
        raise WeightsError(f'checkpoint {str(p)!r} holds a {type(obj).__name__}, not a state dict')
    extras = {}
    for key in CONFIG_KEYS + LABEL_KEYS:
        if isinstance(obj.get(key), (dict, list)):
            extras[_extra_name(key)] = obj[key]
    sd = obj
    for _ in range(3):  # nested wrappers: {'state_dict': {...}}, {'model': {...}}, even two deep
        inner = next((sd[k] for k in NESTED_KEYS if isinstance(sd.get(k), dict) and sd[k]), None)
        if inner is None:
            break
        sd = inner
    sd = {k: v for k, v in sd.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    return _strip_prefixes(sd), extras


def _check_zip_size(p: Path) -> None:
    """A .pth saved by torch.save is a zip: refuse one that would unpack to more than the checkpoint limit,
    reading only its directory (a 1 MB file can claim gigabytes)."""
    if not zipfile.is_zipfile(p):
        return
    try:
        with zipfile.ZipFile(p) as z:
            total = sum(info.file_size for info in z.infolist())
    except (zipfile.BadZipFile, OSError) as e:
        raise WeightsError(f'checkpoint {str(p)!r} is not a readable PyTorch file ({e})') from None
    limit_mb = max_checkpoint_mb()
    if total > limit_mb * 2**20:
        raise WeightsError(
            f'checkpoint {str(p)!r} unpacks to {total / 2**20:,.0f} MiB, over the {limit_mb:,} MiB limit '
            f'(set EXPLORER_MAX_CHECKPOINT_MB to change it)'
        )


def _extra_name(key: str) -> str:
    return 'label_names' if key in LABEL_KEYS else 'pretrained_cfg'


def _strip_prefixes(sd: dict) -> dict:
    for prefix in PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def _sidecar_config(p: Path) -> dict:
    """timm's Hugging Face layout: config.json next to the weights with pretrained_cfg and label_names."""
    cfg_file = p.parent / 'config.json'
    if not cfg_file.is_file():
        return {}
    try:
        cfg = json.loads(cfg_file.read_text(encoding='utf-8'))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    out = {}
    if isinstance(cfg, dict) and isinstance(cfg.get('pretrained_cfg'), dict):
        out['pretrained_cfg'] = cfg['pretrained_cfg']
    if isinstance(cfg, dict) and isinstance(cfg.get('label_names'), list):
        out['label_names'] = cfg['label_names']
    return out


# ---- fitting a state dict to a model -----------------------------------------------------------------
class _ShapeTable(dict):
    """A model's state dict for timm's filter: unknown keys answer an empty tensor instead of KeyError, so
    the filter renames everything and the mismatch report can say what did not fit."""

    def __missing__(self, key):
        return torch.empty(0)


class _FilterTarget:
    def __init__(self, model: nn.Module):
        self._table = _ShapeTable(model.state_dict())

    def state_dict(self):
        return self._table


def is_sail_layout(sd: dict) -> bool:
    """State dict from the official sail-sg repositories (not yet renamed to timm's layout)?"""
    return 'stem.conv.weight' not in sd and any(
        k.startswith(('network.', 'downsample_layers.', 'patch_embed.')) for k in sd
    )


def is_timm_mixer_layout(sd: dict) -> bool:
    """State dict of timm's MlpMixer class (MLP-Mixer `mixer_*`, ResMLP `resmlp_*`): one flat `blocks` list."""
    return 'stem.proj.weight' in sd and ('blocks.0.norm1.weight' in sd or 'blocks.0.norm1.alpha' in sd)


# timm MlpMixer/ResMLP key -> this package's key (one stage: `stages.0`); {j} is the block index
_MIXER_KEYS = (
    (r'stem\.proj\.', 'stem.conv.'),
    (r'blocks\.(\d+)\.mlp_tokens\.', r'stages.0.blocks.\1.token_mixer.mlp.'),  # MLP-Mixer's token MLP
    (r'blocks\.(\d+)\.linear_tokens\.', r'stages.0.blocks.\1.token_mixer.fc.'),  # ResMLP's cross-patch layer
    (r'blocks\.(\d+)\.mlp_channels\.', r'stages.0.blocks.\1.mlp.'),
    (r'blocks\.(\d+)\.ls(\d)$', r'stages.0.blocks.\1.layer_scale\2.scale'),
    (r'blocks\.(\d+)\.(norm\d)\.', r'stages.0.blocks.\1.\2.'),
    (r'^head\.', 'head.fc.'),  # before the next rule makes head.norm
    (r'^norm\.', 'head.norm.'),
    (r'\.alpha$', '.weight'),  # ResMLP's Affine: alpha, beta -> weight, bias
    (r'\.beta$', '.bias'),
)


def mixer_state_dict(sd: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename timm's MlpMixer/ResMLP keys to this package's single-stage MetaFormer keys, and reshape what differs
    only in layout (linear weights used as 1x1 convolutions, Affine's (1, 1, C) vectors)."""
    own = model.state_dict()
    out = {}
    for key, value in sd.items():
        new = key
        for pattern, repl in _MIXER_KEYS:
            new = re.sub(pattern, repl, new)
        if new in own and value.numel() == own[new].numel() and value.shape != own[new].shape:
            value = value.reshape(own[new].shape)
        out[new] = value
    return out


def adapt_state_dict(sd: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an official sail-sg state dict to timm's keys with timm's `checkpoint_filter_fn`, and timm's
    MLP-Mixer / ResMLP state dicts to this package's keys (`mixer_state_dict`)."""
    if is_timm_mixer_layout(sd):
        return mixer_state_dict(sd, model)
    if not is_sail_layout(sd):
        return sd
    from timm.models.metaformer import checkpoint_filter_fn

    return checkpoint_filter_fn(sd, _FilterTarget(model))


def compare_state_dict(model: nn.Module, sd: dict[str, torch.Tensor]) -> LoadReport:
    own = model.state_dict()
    rep = LoadReport()
    rep.missing = [k for k in own if k not in sd]
    rep.unexpected = [k for k in sd if k not in own]
    rep.mismatched = [
        (k, tuple(v.shape), tuple(own[k].shape))
        for k, v in sd.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    rep.loaded = len(own) - len(rep.missing) - len(rep.mismatched)
    return rep


def load_state_dict(
    model: nn.Module, sd: dict[str, torch.Tensor], *, strict: bool = True, name: str = 'checkpoint'
) -> LoadReport:
    """Load what fits. With strict, any missing/unexpected/mismatched key raises WeightsError with the report
    and leaves the model untouched."""
    sd = adapt_state_dict(sd, model)
    rep = compare_state_dict(model, sd)
    if strict and not rep.ok:
        raise WeightsError(f'{name} does not fit this model:\n{rep}')
    if rep.loaded == 0:
        raise WeightsError(f'{name} shares no tensors with this model:\n{rep}')
    bad = {k for k, _, _ in rep.mismatched}
    fits = {k: v for k, v in sd.items() if k not in bad and k not in rep.unexpected}
    _check_values(model.state_dict(), fits, name)
    model.load_state_dict(fits, strict=False)
    return rep


FLOAT_WEIGHTS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # what loads into a float tensor


def _check_values(own: dict[str, torch.Tensor], sd: dict[str, torch.Tensor], name: str) -> None:
    """Refuse what loading would turn into nonsense without a word: sparse tensors, integer (quantized), float8 or
    complex tensors where the model holds floats (load_state_dict casts int8 codes to floats and drops imaginary
    parts; torch.isfinite has no float8 kernel), and NaN or infinite values (a diverged run)."""
    for k, v in sd.items():
        dtype, want = (str(t.dtype).removeprefix('torch.') for t in (v, own[k]))
        if v.layout != torch.strided:
            raise WeightsError(
                f'{name}: {k} is a {str(v.layout).removeprefix("torch.")} tensor: only dense tensors load'
            )
        if own[k].is_floating_point() and v.dtype not in FLOAT_WEIGHTS:
            what = (
                'only float16, bfloat16, float32 and float64 weights load'
                if v.is_floating_point() or v.is_complex()
                else 'quantized or integer weights are not supported'
            )
            raise WeightsError(f'{name}: {k} is {dtype} in the file where the model holds {want}: {what}')
        if v.dtype in FLOAT_WEIGHTS and not bool(torch.isfinite(v).all()):
            n = int((~torch.isfinite(v)).sum())
            raise WeightsError(
                f'{name}: {k} holds {n:,} NaN or infinite value{"s" if n > 1 else ""} (a training that diverged?); '
                'these weights cannot predict'
            )


def checkpoint_spec(path: str | Path) -> ArchSpec | None:
    """The spec stored in a checkpoint's metadata (MetaFormer Explorer trained checkpoints), else None.

    Only .safetensors checkpoints carry one, in their header: only the header is read (no tensors); other
    files are not opened here (they are read once, when their weights are loaded)."""
    p = Path(path)
    if not p.name.endswith('.safetensors'):
        return None
    if p.is_file():
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(p), framework='pt') as f:
                raw = (f.metadata() or {}).get('spec')
            spec = _metadata_json('spec', raw) if raw is not None else None
            return ArchSpec.from_dict(spec) if isinstance(spec, dict) else None
        except (SafetensorError, OSError, ValueError):
            pass  # read_checkpoint gives the full error message
    _, extras = read_checkpoint(path)
    return ArchSpec.from_dict(extras['spec']) if isinstance(extras.get('spec'), dict) else None


def checkpoint_preprocessing(path: str | Path) -> dict:
    """The preprocessing a checkpoint's weights were trained with (timm data-config keys; {} where it records
    none): a model of its spec with random weights is given it too, so that both see the same input."""
    return dict(read_checkpoint(path)[1].get('pretrained_cfg') or {})


def load_checkpoint(model: nn.Module, path: str | Path, *, strict: bool = True) -> WeightsInfo:
    sd, extras = read_checkpoint(path)
    rep = load_state_dict(model, sd, strict=strict, name=f'checkpoint {str(path)!r}')
    return WeightsInfo(
        'checkpoint', str(path), dict(extras.get('pretrained_cfg') or {}), extras.get('label_names'), rep
    )


# ---- timm pretrained weights through the Hugging Face cache ----------------------------------------------
def timm_pretrained_cfg(name: str) -> dict:
    import timm.models

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        raise WeightsError(f'timm has no pretrained config {name!r}')
    return cfg.to_dict()


def spec_pretrained_cfg(spec: ArchSpec) -> dict:
    """The preprocessing a spec's model was published with: timm's pretrained config where timm has its weights,
    else the authors' from the preset's meta.data_cfg (IdentityFormer/RandFormer crop 1.0, ...), else {} (timm's
    defaults then apply)."""
    name = pretrained_name(spec)
    if name:
        return timm_pretrained_cfg(name)
    return dict(spec.meta.get('data_cfg') or {})


def hub_offline() -> bool:
    """HF_HUB_OFFLINE read now (huggingface_hub reads it once at import)."""
    from huggingface_hub import constants

    v = os.environ.get('HF_HUB_OFFLINE')
    return constants.HF_HUB_OFFLINE if v is None else v.strip().lower() in ('1', 'on', 'yes', 'true')


def pretrained_file(name: str, *, cache_dir: str | Path | None = None) -> Path:
    """Path to the cached weights file of timm pretrained model `name`, downloading it when allowed."""
    from huggingface_hub import constants, hf_hub_download

    cfg = timm_pretrained_cfg(name)
    repo = cfg.get('hf_hub_id')
    if not repo:
        raise WeightsError(f'{name} has no Hugging Face Hub id in timm; pass a local checkpoint instead')
    files = [cfg['hf_hub_filename']] if cfg.get('hf_hub_filename') else ['model.safetensors', 'pytorch_model.bin']
    cache = str(cache_dir or os.environ.get('HF_HUB_CACHE') or constants.HF_HUB_CACHE)
    for fname in files:  # the cache first, whatever the network
        try:
            return Path(hf_hub_download(repo, fname, cache_dir=cache, local_files_only=True))
        except Exception:  # not cached (huggingface_hub's LocalEntryNotFoundError and friends)
            continue
    how = (
        f'get it on a machine with network access: `hf download {repo} {files[0]}` (or '
        f'python -c "import timm; timm.create_model(\'{name}\', pretrained=True)") and copy the cache '
        f'folder {cache}; or pass a local checkpoint (--weights PATH / upload)'
    )
    if hub_offline():
        raise WeightsError(
            f'pretrained weights {name} are not in the local Hugging Face cache and downloads are '
            f'off (HF_HUB_OFFLINE=1): missing {repo}/{files[0]} under {cache}. To {how}'
        )
    host = urlparse(constants.ENDPOINT).hostname or 'huggingface.co'
    if not _reachable(host):
        raise WeightsError(
            f'pretrained weights {name} are not in the local Hugging Face cache and {host} cannot '
            f'be reached: missing {repo}/{files[0]} under {cache}. To {how}'
        )
    error = ''
    for fname in files:
        try:
            return Path(hf_hub_download(repo, fname, cache_dir=cache))
        except Exception as e:  # not found: try the next file name; anything else: give up
            error = f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}'
            if 'NotFound' not in type(e).__name__:
                break
    raise WeightsError(f'could not download pretrained weights {name} ({repo}/{files[0]}): {error}. To {how}')


def _reachable(host: str, timeout: float = 3.0) -> bool:
    """A quick TCP check, so that a machine without network fails in seconds, not after retries."""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_pretrained(
    model: nn.Module, spec: ArchSpec, *, cache_dir: str | Path | None = None, strict: bool = True
) -> WeightsInfo:
    name = pretrained_name(spec)
    if name is None:
        raise WeightsError(
            f'{spec.name} has no timm pretrained weights (meta.timm_name / meta.pretrained_tag '
            f'unset): only the timm presets PoolFormer v1/v2, ConvFormer and CAFormer have them; '
            f'use a local checkpoint or random weights'
        )
    path = pretrained_file(name, cache_dir=cache_dir)
    sd, _ = read_checkpoint(path)
    rep = load_state_dict(model, sd, strict=strict, name=f'pretrained {name}')
    cfg = timm_pretrained_cfg(name)
    return WeightsInfo('pretrained', f'timm {name} (Hugging Face: {cfg.get("hf_hub_id")}, file {path})', cfg, None, rep)


def load_model(
    spec: ArchSpec,
    weights: str | Path | None = 'random',
    *,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    strict: bool = True,
) -> tuple[nn.Module, WeightsInfo]:
    """Build `spec` and give it weights: 'pretrained', 'random' (None), or a checkpoint path. Eval mode."""
    model = build_model(spec, seed=seed)
    if weights in (None, '', 'random'):
        info = WeightsInfo('random', f'seed {seed}', spec_pretrained_cfg(spec))
    elif weights == 'pretrained':
        info = load_pretrained(model, spec, cache_dir=cache_dir, strict=strict)
    else:
        info = load_checkpoint(model, weights, strict=strict)
        names = info.label_names
        if names is not None and len(names) != spec.num_classes:  # off by some: no name can be trusted
            info.label_names = None
            info.note = (
                f'its {len(names):,} class names were set aside: the model has {spec.num_classes:,} classes, '
                'so they are shown by number'
            )
    return model.eval(), info
