"""Trained checkpoints: one .safetensors file holding the weights and, as metadata, the spec, preprocessing,
class names, metrics and history; and the trained models on this machine (the shipped Fashion-MNIST ones and
the user's own)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import safe_open

from explorer.core.files import atomic_write  # noqa: F401 - where the training code has always taken it
from explorer.core.resources import data_path
from explorer.core.spec import ArchSpec
from explorer.train.data import CLASSES, Preprocessing

if TYPE_CHECKING:  # listing and reading metadata need no torch; weights are loaded where they are used
    import torch.nn as nn

FORMAT = 'metaformer-explorer/trained-v1'
ASSET_DIR = data_path('assets') / 'fmnist'
USER_DIR = Path.home() / '.cache' / 'metaformer-explorer' / 'trained'


def save_state(path: str | Path, state: dict) -> None:
    """A resumable training state (explorer.train.loop: weights, optimiser, generators, position), atomically."""
    import torch

    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: str | Path) -> dict:
    """A state written by save_state (tensors and plain containers only: nothing in it can run code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'no training state to resume at {str(path)!r} (it is written after each epoch)')
    import pickle

    import torch

    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        raise ValueError(f'{path} is not a readable training state ({type(e).__name__})') from None
    except pickle.UnpicklingError:  # torch's message suggests weights_only=False: never for a file from anywhere
        raise ValueError(f'{path} is not a training state this program wrote (it holds other objects)') from None
    if not isinstance(state, dict):
        raise ValueError(f'{path} is not a training state this program wrote (it holds a {type(state).__name__})')
    return state


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    spec: ArchSpec,
    pre: Preprocessing | dict,
    metrics: dict,
    history: list,
    cfg=None,
    classes: list[str] | None = None,
) -> str:
    """Write weights + metadata (all str -> str, JSON where structured) to one .safetensors file.

    pre: the Fashion-MNIST preprocessing, or for an image folder timm's data config tagged {'kind': 'timm', ...}.
    classes: the class names in label order (default: Fashion-MNIST's)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {
        'format': FORMAT,
        'dataset': metrics.get('dataset', 'fashion-mnist'),
        'spec': json.dumps(spec.to_dict()),
        'preprocessing': json.dumps(pre if isinstance(pre, dict) else pre.to_dict()),
        'classes': json.dumps(list(classes or CLASSES)),
        'metrics': json.dumps(metrics),
        'history': json.dumps(history),
    }
    from safetensors.torch import save_file

    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return str(path)


MAX_METADATA_CHARS = 1_000_000  # one metadata field (a spec is at most explorer.core.spec's 1,000,000 too)


def read_metadata(path: str | Path) -> dict:
    """The checkpoint's metadata with JSON fields decoded (spec, preprocessing, classes, metrics, history)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint {str(path)!r} does not exist')
    try:
        with safe_open(str(path), framework='numpy') as f:  # the header only: no tensor is read
            raw = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise ValueError(f'{path} is not a safetensors checkpoint: {e}') from None
    if raw.get('format') != FORMAT:
        raise ValueError(
            f'{path} is not a MetaFormer Explorer trained checkpoint '
            f'(metadata format {raw.get("format")!r}, expected {FORMAT!r})'
        )
    info = dict(raw)
    for k, kind in (('spec', dict), ('preprocessing', dict), ('classes', list), ('metrics', dict), ('history', None)):
        if k not in raw:
            raise ValueError(f'{path} is a damaged checkpoint: its metadata has no {k!r}')
        if len(raw[k]) > MAX_METADATA_CHARS:
            raise ValueError(
                f'{path}: metadata {k!r} holds {len(raw[k]):,} characters (at most {MAX_METADATA_CHARS:,})'
            )
        try:
            info[k] = json.loads(raw[k])
        except (ValueError, RecursionError):
            raise ValueError(f'{path} is a damaged checkpoint: its metadata {k!r} is not readable JSON') from None
        if kind is not None and not isinstance(info[k], kind):
            raise ValueError(
                f'{path} is a damaged checkpoint: its metadata {k!r} is a {type(info[k]).__name__}, not a '
                f'{kind.__name__}'
            )
    return info


def load_trained(path: str | Path) -> tuple[nn.Module, ArchSpec, dict]:
    """(model in eval mode, spec, info) from a checkpoint alone.

    info: 'preprocessing' (a Preprocessing; for an image-folder run, timm's data config as a dict with 'kind':
    'timm'), 'classes' (list of names), 'metrics', 'history', 'dataset', 'path'.
    Turn uint8 28x28 images into inputs with `explorer.train.data.preprocess(images, info['preprocessing'])`.
    """
    from safetensors.torch import load_file

    from explorer.core.build import build_model
    from explorer.measure.guard import check_request

    info = read_metadata(path)
    spec = ArchSpec.from_dict(info['spec'])
    if info['preprocessing'].get('kind') != 'timm':  # image folders keep timm's data config as a dict
        try:
            info['preprocessing'] = Preprocessing(**info['preprocessing'])
        except TypeError as e:
            raise ValueError(f'{path} is a damaged checkpoint: its preprocessing does not read ({e})') from None
        _check_preprocessing(path, info['preprocessing'], spec)
    check_request(spec, batch_size=1)  # before building: a few-MB file can name a model of any size
    model = build_model(spec, seed=0)
    try:
        model.load_state_dict(load_file(str(path)), strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise ValueError(
            f'{path}: its weights do not match its spec ({first[1].strip() if len(first) > 1 else first[0]})'
        ) from None
    model.eval()
    info['path'] = str(path)
    return model, spec, info


def _check_preprocessing(path, pre: Preprocessing, spec: ArchSpec) -> None:
    """The preprocessing fits the spec and is sane (its values size what is allocated)."""
    import math

    numbers = (pre.mean, pre.std)
    bad = (
        (pre.img_size != spec.img_size and f"img_size {pre.img_size!r} is not the spec's {spec.img_size}")
        or (pre.in_chans != spec.in_chans and f"in_chans {pre.in_chans!r} is not the spec's {spec.in_chans}")
        or (pre.resize not in ('pad', 'none', 'bilinear') and f'resize {pre.resize!r} is not pad, none or bilinear')
        or (pre.source_size != 28 and f'source_size {pre.source_size!r} is not 28 (Fashion-MNIST)')
        or (
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers)
            and f'mean and std {numbers!r} are not finite numbers'
        )
        or (pre.std <= 0 and f'std {pre.std!r} is not positive')
    )
    if bad:
        raise ValueError(f'{path} is a damaged checkpoint: its preprocessing {bad}')


def list_trained(dirs: list[str | Path] | None = None) -> list[dict]:
    """Trained checkpoints on this machine: the shipped ones (assets/fmnist) and the user's (USER_DIR, where
    the app's Train tab writes). Each: {'path', 'name' (file stem), 'spec_name', 'accuracy', 'params', 'epochs',
    'shipped', 'dataset'},
    shipped first, then newest first. Unreadable files, and runs on other datasets than Fashion-MNIST (the app's
    examples and predictions are Fashion-MNIST's), are left out."""
    out = []
    for d in dirs or [ASSET_DIR, USER_DIR]:
        d = Path(d)
        stats = []
        for p in d.glob('*.safetensors') if d.is_dir() else []:
            try:
                stats.append((p, p.stat()))
            except OSError:  # removed while we looked
                continue
        stats.sort(key=lambda ps: (-ps[1].st_mtime, ps[0].name))
        shipped = d.resolve() == ASSET_DIR.resolve()
        for p, st in stats:
            entry = _listed(p, st)
            if entry is not None:
                out.append({**entry, 'shipped': shipped})
    return out


_LISTED: dict = {}  # (path, mtime_ns, size) -> list_trained's entry or None: each header is read once
_LISTED_LOCK = threading.Lock()
MAX_LISTED = 100_000


def _listed(p: Path, st) -> dict | None:
    """list_trained's entry for one file (None: unreadable, or another dataset), read from its header once per
    version of the file (every model call lists the runs: 400 runs made each 0.1 s slower)."""
    key = (str(p), st.st_mtime_ns, st.st_size)
    with _LISTED_LOCK:
        if key in _LISTED:
            return _LISTED[key]
    try:
        info = read_metadata(p)
    except (ValueError, OSError, KeyError):
        info = None
    entry = None
    if info is not None and info.get('dataset', 'fashion-mnist') == 'fashion-mnist':
        m = info['metrics']
        entry = {
            'path': str(p),
            'name': p.stem,
            'spec_name': info['spec'].get('name', p.stem),
            'accuracy': m.get('test_accuracy'),
            'params': m.get('params'),
            'epochs': m.get('epochs'),
            'dataset': info.get('dataset'),
        }
    with _LISTED_LOCK:
        if len(_LISTED) >= MAX_LISTED:
            _LISTED.clear()
        _LISTED[key] = entry
    return entry


def trained_path(name: str) -> str | None:
    """The checkpoint of the trained model called `name` (a file stem from list_trained), or None."""
    return next((t['path'] for t in list_trained() if t['name'] == name), None)
