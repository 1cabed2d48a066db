"""A design leaves the explorer as a timm model: `export_design` writes, into one folder, a Python module that
registers it with timm (`timm.create_model(name)`), its spec, its trained weights when it has any, and on request
an ONNX file checked against PyTorch with onnxruntime.

The written module holds no layer code: it embeds the spec and builds through `build_timm_model` below (timm's
`build_model_with_cfg` around `explorer.core.build.build_model`), so it needs the `explorer` package installed.
Files are named `<name>.py`, `<name>.json`, `<name>.safetensors`, `<name>.onnx` in the folder given, where
`name` is a checked Python identifier: no other path is ever built from the input.
"""

from __future__ import annotations

import importlib.util
import keyword
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from explorer.core.errors import UserError
from explorer.core.spec import ArchSpec
from explorer.measure.guard import check_request
from explorer.train.checkpoints import atomic_write
from explorer.train.onnx_check import ONNX_ATOL, ONNX_RTOL, OnnxCheck, export_onnx

if TYPE_CHECKING:  # naming, resolving and writing need no torch; building and ONNX import it where they run
    import torch.nn as nn

FORMAT = 1  # EXPLORER_EXPORT in written modules: the layout of this file's output
MAX_NAME = 100  # characters of a model name
# create_model arguments that change the spec, and those timm's builder consumes itself
SPEC_KWARGS = ('num_classes', 'in_chans', 'img_size', 'drop_rate', 'drop_path_rate')
OTHER_KWARGS = ('global_pool', 'device', 'dtype')
TIMM_KWARGS = ('pretrained_cfg', 'pretrained_cfg_overlay', 'cache_dir', 'features_only', 'out_indices', 'feature_cls')


# ---- the entry point a written module calls ------------------------------------------------------------
def build_timm_model(variant: str, spec: dict, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build an exported design the way timm builds its own models (`build_model_with_cfg`): pretrained_cfg
    from the registry, `pretrained=True` loading the weights its `file` names (offline), features_only wrapping.

    kwargs: num_classes, in_chans, img_size (square: an int or (n, n)), drop_rate and drop_path_rate override the
    spec; global_pool must be 'avg' (the only pooling a composed head has); device and dtype move the model;
    pretrained_cfg, pretrained_cfg_overlay, cache_dir, features_only, out_indices and feature_cls are timm's.
    None means "not given" (timm's create_model drops those too). Anything else raises TypeError naming it.
    Random weights come from torch's global generator, so `torch.manual_seed` makes them reproducible.
    """
    from functools import partial

    from timm.models import build_model_with_cfg

    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    unknown = sorted(set(kwargs) - set(SPEC_KWARGS + OTHER_KWARGS + TIMM_KWARGS))
    if unknown:
        raise TypeError(
            f'{variant}() got unexpected keyword argument(s) {", ".join(unknown)}; a MetaFormer Explorer design '
            f"takes {', '.join(SPEC_KWARGS + OTHER_KWARGS)} and timm's {', '.join(TIMM_KWARGS)}"
        )
    base = ArchSpec.from_dict(spec)
    out_indices = kwargs.pop('out_indices', tuple(range(base.num_stages)))
    return build_model_with_cfg(
        partial(_build, base, pretrained_of=variant if pretrained else None),
        variant,
        pretrained,
        feature_cfg=dict(flatten_sequential=True, out_indices=out_indices),
        **kwargs,
    )


def _check_pretrained_size(variant: str, base: ArchSpec, size: Any) -> None:
    """Weights sized by the token grid (a fixed-token mixer's, a position embedding) load only at the spec's
    img_size: another one is refused naming the stage (timm's state-dict loading would fail on a size mismatch)."""
    n = size[0] if isinstance(size, (tuple, list)) and size else size
    if n is None or n == base.img_size:
        return
    from explorer.core.registry import MIXERS

    grids = base.grid_sizes()
    for i, st in enumerate(base.stages):
        what = f"'{st.mixer}' token mixer" if MIXERS[st.mixer].fixed_tokens else ''
        what = what or ('position embedding' if st.pos_embed else '')
        if what:
            h, w = grids[i]
            raise ValueError(
                f"{variant}: pretrained weights cannot load at img_size {n}: stage S{i + 1}'s {what} has weights for "
                f'its {h}x{w} token grid at img_size {base.img_size}; use img_size {base.img_size}, or pretrained=False'
            )


def _build(
    base: ArchSpec, *, pretrained_of: str | None = None, global_pool: str = 'avg', device=None, dtype=None, **changes
) -> nn.Module:
    """The model of `base` with timm's create_model arguments (SPEC_KWARGS) written into the spec; `pretrained_of`:
    the variant whose weights will load (its img_size is then checked as timm passes it: an `img_size` argument,
    or the input size of a `pretrained_cfg_overlay`)."""
    import torch

    from explorer.core.build import build_model

    if pretrained_of:
        _check_pretrained_size(pretrained_of, base, changes.get('img_size'))
    if global_pool != 'avg':
        raise ValueError(f"global_pool {global_pool!r} is not supported; a composed MetaFormer head pools 'avg'")
    size = changes.get('img_size')
    if isinstance(size, (tuple, list)):
        if len(size) != 2 or size[0] != size[1]:
            raise ValueError(f'img_size {tuple(size)!r}: an explorer design takes square inputs, (n, n) or n')
        changes['img_size'] = int(size[0])
    changes = {k: v for k, v in changes.items() if getattr(base, k) != v}
    spec = base.replace(**changes) if changes else base
    # the seed from torch's generator (torch.manual_seed makes it reproducible), drawn on the CPU: under a
    # `with torch.device('meta')` block, as timm's own models allow, the shapes are built and nothing is drawn
    on_meta = torch.empty(()).device.type == 'meta'
    model = build_model(spec, seed=int(torch.randint(2**62, (), device='cpu').item()), init=not on_meta)
    return model.to(device=device, dtype=dtype) if device is not None or dtype is not None else model


# ---- names and sources ---------------------------------------------------------------------------------
def check_name(name: Any, out_dir: Path | None = None) -> str:
    """`name` if it can be a timm model and a module file: a Python identifier, no keyword, at most MAX_NAME
    characters, not a timm model already (an earlier export of the explorer may be replaced), and not the name of
    a module Python finds elsewhere (the written `<name>.py` would shadow it, or it would shadow ours; the one in
    `out_dir` itself does not count). Raises UserError saying which rule the name breaks."""
    # ASCII: Python reads other identifiers in NFKC form, so a fullwidth 'ｒｅｓｎｅｔ５０' would define timm's
    # resnet50 and the module could not be imported under its own name
    if (
        not isinstance(name, str)
        or not name.isascii()
        or not name.isidentifier()
        or keyword.iskeyword(name)
        or len(name) > MAX_NAME
    ):
        raise UserError(
            f'model name {name!r} is not allowed: a model name must be a Python identifier (ASCII letters, digits '
            f'and _, not starting with a digit, not a keyword) of at most {MAX_NAME} characters; choose one with '
            f'--name / name='
        )
    import timm.models

    if timm.models.is_model(name) and not _is_export(timm.models.model_entrypoint(name).__module__):
        raise UserError(
            f'model name {name!r} is already a timm model ({timm.models.model_entrypoint(name).__module__}); '
            f'choose another name (--name / name=), e.g. {name}_explorer'
        )
    if name in sys.stdlib_module_names:
        where = 'the Python standard library'
    elif _is_export(name):
        return name
    else:
        try:
            found = importlib.util.find_spec(name)
        except (ImportError, ValueError):  # a half-imported module: it exists, and it is not ours
            found = True
        origin = getattr(found, 'origin', None)
        own = out_dir is not None and origin and Path(origin).resolve() == (out_dir / f'{name}.py').resolve()
        if found is None or own:
            return name
        where = origin or 'a package on sys.path'
    raise UserError(
        f'model name {name!r} is the name of an importable module ({where}): the written {name}.py would shadow it '
        f'or be shadowed; choose another name (--name / name=)'
    )


def _is_export(module_name: str) -> bool:
    """Whether `module_name` is imported and is a module written by export_design."""
    return bool(getattr(sys.modules.get(module_name), 'EXPLORER_EXPORT', None))


@dataclass
class Source:
    """What is exported: the spec and, for a trained checkpoint, its path and metadata (read_metadata)."""

    spec: ArchSpec
    label: str  # for people: 'preset caformer_s18', 'checkpoint fmnist_hybrid.safetensors', ...
    default_name: str
    checkpoint: Path | None = None
    info: dict = field(default_factory=dict)
    spec_file: Path | None = None  # a JSON spec file it was read from

    def inputs(self) -> list[Path]:
        return [p for p in (self.checkpoint, self.spec_file) if p is not None]


def resolve_source(source: ArchSpec | dict | str | Path) -> Source:
    """A spec, a spec dict, a preset name, a JSON spec file, a trained `.safetensors` checkpoint (written by
    `explorer train`) or a trained model's name. Raises UserError / SpecError naming what was wrong."""
    from explorer.core.catalog import load_spec, preset_names
    from explorer.train.checkpoints import read_metadata, trained_path

    if isinstance(source, (ArchSpec, dict)):
        spec = source if isinstance(source, ArchSpec) else ArchSpec.from_dict(source)
        return Source(spec, f'spec {spec.name!r}', spec.name)
    text = str(source)
    if text not in preset_names() and not text.endswith(('.json', '.safetensors')):
        text = trained_path(text) or text
    if not text.endswith('.safetensors'):
        spec = load_spec(text)
        if text in preset_names():
            return Source(spec, f'preset {text}', spec.name)
        return Source(spec, f'spec file {Path(text).name}', spec.name, spec_file=Path(text))
    path = Path(text)
    try:
        info = read_metadata(path)
    except ValueError as e:
        raise UserError(
            f'{e}; export takes checkpoints written by `explorer train` (they carry spec and preprocessing)'
        ) from None
    spec = ArchSpec.from_dict(info['spec'])
    return Source(spec, f'checkpoint {path.name}', path.stem, path, info)


# ---- timm's pretrained_cfg -----------------------------------------------------------------------------
def data_config_for(src: Source) -> dict:
    """timm data config (input_size, interpolation, mean, std, crop_pct, crop_mode, and the explorer's pad_from or
    resize_from) the model expects: a checkpoint's recorded preprocessing, else what `explorer predict` uses for
    the spec (timm's config for presets with timm weights, timm's defaults otherwise)."""
    from explorer.explain.predict import DATA_KEYS, data_config
    from explorer.explain.weights import WeightsInfo, explorer_preprocessing_cfg, spec_pretrained_cfg

    try:
        if src.checkpoint is not None:
            pre = src.info['preprocessing']
            timm_kind = pre.get('kind') == 'timm'  # an image-folder run keeps timm's data config
            cfg = {k: pre[k] for k in DATA_KEYS if k in pre} if timm_kind else explorer_preprocessing_cfg(pre)
        else:
            cfg = spec_pretrained_cfg(src.spec)
        return data_config(src.spec, WeightsInfo('checkpoint' if src.checkpoint else 'random', src.label, cfg))
    except ValueError as e:  # a damaged checkpoint's preprocessing (WeightsError is a ValueError)
        raise UserError(f'{src.label}: {e}') from None


def pretrained_cfg_for(src: Source, data_cfg: dict) -> dict:
    """timm pretrained_cfg keys (PretrainedCfg fields) for the written module; the weights' `file` is added there.

    A Fashion-MNIST checkpoint is grayscale: input_size (1, H, W), one mean and one std (the training set's pixel
    statistics), bilinear, crop_pct 1. Its images were padded 28 -> H with black, not resized: a note says so,
    since timm's config has no key for it."""
    spec = src.spec
    h, w = spec.grid_sizes()[-1]
    cfg = {
        'input_size': tuple(data_cfg['input_size']),
        'interpolation': data_cfg['interpolation'],
        'mean': tuple(data_cfg['mean']),
        'std': tuple(data_cfg['std']),
        'crop_pct': data_cfg['crop_pct'],
        'crop_mode': data_cfg.get('crop_mode', 'center'),
        'num_classes': spec.num_classes,
        'pool_size': (h, w),
        'first_conv': 'stem.conv',
        'classifier': 'head.fc.fc2' if spec.head == 'mlp' else 'head.fc',  # the layer sized by num_classes
        'fixed_input_size': any(spec.mixer_kwargs(i).get('grid_size') for i in range(spec.num_stages)),
        'description': spec.meta.get('display_name', spec.name),
    }
    notes = [f'MetaFormer Explorer design, exported from {src.label}']
    if src.checkpoint is not None:
        classes = src.info.get('classes')
        if classes and len(classes) == spec.num_classes:
            cfg['label_names'] = tuple(classes)
        acc = src.info['metrics'].get('test_accuracy')
        known = isinstance(acc, (int, float)) and not isinstance(acc, bool) and 0 <= acc <= 1
        dataset = src.info.get('dataset', 'fashion-mnist')
        notes.append(f'trained on {dataset}' + (f', test accuracy {acc * 100:.2f}%' if known else ''))
    pad = data_cfg.get('pad_from')
    if pad:
        size = data_cfg['input_size'][-1]
        notes.append(
            f'inputs were {pad}x{pad} images centred on a {size}x{size} canvas of pixel value 0 (pad '
            f'{(size - pad) // 2} each side), not resized; timm transforms from this config resize instead'
        )
    src = data_cfg.get('resize_from')
    if src:
        size = data_cfg['input_size'][-1]
        notes.append(
            f'inputs were {src}x{src} images resized to {size}x{size} with torch.nn.functional.interpolate '
            "(bilinear, align_corners=False, no antialiasing); timm's transforms from this config antialias"
        )
    cfg['notes'] = tuple(notes)
    return cfg


# ---- the written module --------------------------------------------------------------------------------
MODULE = """\"\"\"{name}: a MetaFormer design exported as a timm model by MetaFormer Explorer (`explorer export`).

{description}, exported from {label}.

Needs the `explorer` package (MetaFormer Explorer; `pip install -e .` in its repository) and timm: the model is
built by `explorer.core.build.build_model` from SPEC below (a timm `MetaFormer` subclass: forward_features,
forward_head, feature_info). With this file's folder on sys.path:

    import {name}  # registers '{name}' with timm
    model = timm.create_model('{name}'{pretrained_arg})

{weights}
create_model's num_classes, in_chans, img_size, drop_rate and drop_path_rate override the spec; features_only
works. Preprocessing is in PRETRAINED_CFG (timm.data.resolve_data_config(model=model) reads it).
\"\"\"
{imports}
from timm.models import generate_default_cfgs, register_model

from explorer.train.export import build_timm_model

EXPLORER_EXPORT = {format}  # written by MetaFormer Explorer; the layout version of this file

SPEC = {spec}

PRETRAINED_CFG = {cfg}
{file}
default_cfgs = generate_default_cfgs({{'{name}': PRETRAINED_CFG}})


@register_model
def {name}(pretrained: bool = False, **kwargs):
    \"\"\"{description}; kwargs: see explorer.train.export.build_timm_model.\"\"\"
    return build_timm_model('{name}', SPEC, pretrained=pretrained, **kwargs)
"""


def module_source(name: str, src: Source, cfg: dict, has_weights: bool) -> str:
    """The text of `<name>.py`. `name` is a checked identifier; text from the spec or a file name reaches the
    docstring only through _plain, and values only as Python literals, so no input can become code."""
    weights = (
        f'pretrained=True loads {name}.safetensors from beside this file (offline); without it the weights are\n'
        'random (torch.manual_seed makes them reproducible).'
        if has_weights
        else 'The weights are random (torch.manual_seed makes them reproducible): the design was exported without\n'
        'trained weights, so pretrained=True has nothing to load.'
    )
    file = f"PRETRAINED_CFG['file'] = str(Path(__file__).with_name('{name}.safetensors'))  # weights beside this\n"
    return MODULE.format(
        name=name,
        description=_plain(cfg['description']),
        label=_plain(src.label),
        pretrained_arg=', pretrained=True' if has_weights else '',
        weights=weights,
        imports='\nfrom pathlib import Path\n' if has_weights else '',
        format=FORMAT,
        spec=_literal(src.spec.to_dict()),
        cfg=_literal(cfg),
        file=file if has_weights else '',
    )


def _plain(text: str, limit: int = 120) -> str:
    """Text safe inside a docstring: printable, no quotes or backslashes, clipped."""
    text = ''.join(c for c in str(text) if c.isprintable() and c not in '"\\')
    return text if len(text) <= limit else text[:limit] + '...'


def _literal(value: Any) -> str:
    """JSON-like data as a Python literal laid out like ruff formats code; data a literal cannot hold exactly
    (inf or nan in meta) goes through json.loads of its JSON text instead."""
    import ast
    import json

    text = _layout(value, 0, len('PRETRAINED_CFG = '))
    try:
        exact = ast.literal_eval(text) == value
    except (ValueError, SyntaxError):
        exact = False
    return text if exact else f'__import__("json").loads({json.dumps(value)!r})'


def _layout(value: Any, level: int, lead: int = 0) -> str:
    """One line when it fits in 120 characters with its indent (4 * level), what leads it on its line (`lead`
    characters: a key) and a trailing comma; else one item per line with trailing commas."""
    flat = repr(value)
    if not isinstance(value, (dict, list, tuple)) or not value or 4 * level + lead + len(flat) + 1 <= 120:
        return flat
    pad, end = '    ' * (level + 1), '    ' * level
    if isinstance(value, dict):
        items = [f'{pad}{k!r}: {_layout(v, level + 1, len(repr(k)) + 2)},' for k, v in value.items()]
    else:
        items = [f'{pad}{_layout(v, level + 1)},' for v in value]
    left, right = {dict: '{}', list: '[]', tuple: '()'}[type(value)]
    return left + '\n' + '\n'.join(items) + '\n' + end + right


# ---- the verb ----------------------------------------------------------------------------------------------
@dataclass
class ExportResult:
    """What `export_design` wrote. files: kind ('module', 'spec', 'weights', 'onnx') -> path."""

    name: str
    out_dir: str
    source: str
    files: dict[str, str]
    weights: str  # where the weights in the files come from
    pretrained_cfg: dict
    onnx: OnnxCheck | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d['pretrained_cfg'] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.pretrained_cfg.items()}
        return d


def export_design(
    source: ArchSpec | dict | str | Path,
    out_dir: str | Path,
    *,
    name: str | None = None,
    onnx: bool = False,
    overwrite: bool = False,
    rtol: float = ONNX_RTOL,
    atol: float = ONNX_ATOL,
) -> ExportResult:
    """Write `source` (see resolve_source) into `out_dir` (created if missing) as a timm model:

    - `<name>.py`: registers `name` with timm (`@register_model`) and its pretrained_cfg (preprocessing,
      num_classes, first_conv, classifier; for a checkpoint `file=` the weights beside it);
    - `<name>.json`: the spec; `<name>.safetensors` (checkpoints): the weights, keys as the model's state_dict;
    - `<name>.onnx` with `onnx=True`: the model (a checkpoint's weights, else random ones drawn with seed 0),
      batch axis dynamic, compared with PyTorch through onnxruntime within rtol/atol (`result.onnx`).

    name: default the checkpoint's file stem or the spec's name. Existing files are refused unless `overwrite`;
    every file is written atomically. Raises UserError / SpecError naming what was wrong.
    """
    src = resolve_source(source)
    out = Path(out_dir)
    name, files, stale = _target_files(src, out, name, onnx, overwrite)
    data_cfg = data_config_for(src)  # everything read and checked before anything is written
    cfg = pretrained_cfg_for(src, data_cfg)
    if src.checkpoint or onnx:  # a model is built: the server's limits first, as for every command that builds
        check_request(src.spec, batch_size=1)
    model = _model(src) if src.checkpoint or onnx else None
    out.mkdir(parents=True, exist_ok=True)
    if src.checkpoint:
        _write_weights(model, files['weights'])
    for path in stale:  # an earlier export's ONNX or weights (overwrite): they would pass for this design's
        path.unlink(missing_ok=True)
    atomic_write(files['spec'], lambda tmp: tmp.write_text(src.spec.to_json(), encoding='utf-8'))
    text = module_source(name, src, cfg, has_weights=src.checkpoint is not None)
    atomic_write(files['module'], lambda tmp: tmp.write_text(text, encoding='utf-8'))
    check = export_onnx(model, files['onnx'], data_cfg, rtol, atol) if onnx else None
    if check is not None and check.path is None:
        files.pop('onnx').unlink(missing_ok=True)  # an older export's file (overwrite) must not pass for this one
    if src.checkpoint:
        weights = f'trained, from {src.label}'
    else:
        weights = 'none: random initialisation'
        weights += '; the ONNX file holds random weights drawn with seed 0' if onnx else ''
    return ExportResult(name, str(out), src.label, {k: str(p) for k, p in files.items()}, weights, cfg, check)


def _target_files(src: Source, out: Path, name: str | None, onnx: bool, overwrite: bool) -> tuple[str, dict, list]:
    """(checked name, kind -> path of the files to write, the earlier export's files this one does not write);
    refuses a clash with what exists unless `overwrite`, and always a file that is the export's own input."""
    if out.exists() and not out.is_dir():
        raise UserError(f'output folder {str(out)!r} (--to) is a file, not a folder')
    try:
        name = check_name(src.default_name if name is None else name, out)
    except UserError as e:
        raise UserError(e.args[0] if name is not None else f'{e} (the name comes from the {src.label})') from None
    kinds = ['module', 'spec'] + (['weights'] if src.checkpoint else []) + (['onnx'] if onnx else [])
    suffix = {'module': '.py', 'spec': '.json', 'weights': '.safetensors', 'onnx': '.onnx'}
    files = {k: out / f'{name}{suffix[k]}' for k in kinds}
    for path in files.values():
        for source in src.inputs():
            if path.exists() and path.resolve() == source.resolve():
                raise UserError(
                    f'{path} is the {src.label} being exported; it is never replaced: choose another --name or --to'
                )
    stale = [out / f'{name}{suffix[k]}' for k in suffix if k not in files and k in ('weights', 'onnx')]
    stale = [p for p in stale if p.exists()]
    for path in stale:  # removed with --overwrite only when an earlier export wrote it: never a trained checkpoint
        if not _earlier_export(path, out / f'{name}.py'):
            raise UserError(
                f'{path} is in the way and no export wrote it (a trained checkpoint?); it is never replaced: move '
                'it, or choose another --name or --to'
            )
    existing = [str(p) for p in [*files.values(), *stale] if p.exists()]
    if existing and not overwrite:
        also = " (and remove the earlier export's files this one does not write)" if stale else ''
        raise UserError(f'{", ".join(existing)} already exist(s); pass --overwrite / overwrite=True to replace{also}')
    return name, files, stale


def _earlier_export(path: Path, module: Path) -> bool:
    """Whether `path` (NAME.onnx or NAME.safetensors) is an earlier export's: its NAME.py is an export module
    beside it, and a .safetensors holds a plain state dict (an explorer checkpoint carries its spec)."""
    try:
        if 'EXPLORER_EXPORT = ' not in module.read_text(encoding='utf-8', errors='replace')[:20_000]:
            return False
        if path.suffix == '.safetensors':
            from safetensors import safe_open

            with safe_open(str(path), 'pt') as f:
                return 'spec' not in (f.metadata() or {})
    except (OSError, ValueError, RuntimeError):  # no module beside it, or not a safetensors file
        return False
    return True


def _model(src: Source) -> nn.Module:
    """The model in eval mode: the checkpoint's weights, else random ones drawn with seed 0."""
    from explorer.core.build import build_model
    from explorer.train.checkpoints import load_trained

    if src.checkpoint is None:
        return build_model(src.spec, seed=0).eval()
    try:
        model, _, _ = load_trained(src.checkpoint)
    except ValueError as e:  # weights that do not match the spec, damaged metadata
        raise UserError(str(e)) from None
    return model


def _write_weights(model: nn.Module, path: Path) -> None:
    """The weights as a plain state dict, the keys timm's create_model gives."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={'format': 'pt'}))
