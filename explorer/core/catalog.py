"""The catalogue of presets (one JSON spec per published model, shipped as package data) and the ways a
request names a spec: a preset name, JSON text or a dict. Plain data: no torch, no gradio.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

from explorer.core.registry import show
from explorer.core.resources import data_path
from explorer.core.spec import MAX_JSON_CHARS, ArchSpec, SpecError, StageSpec, default_res_scale

DEFAULT_PRESET = 'caformer_s18'


PRESET_DIR = data_path('presets')


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob('*.json'))


def load_spec(name_or_path: str | Path, trained: list[str] | None = None) -> ArchSpec:
    """A preset name (file stem in presets/) or a path to a JSON spec file. A preset's name always means the
    preset, whatever the working directory holds under that name (a server's visitors all see the same
    presets); write ./NAME for such a file. trained: the trained models' names the caller also takes (the CLI's
    SPEC), offered beside the presets when the name is unknown."""
    names = preset_names()
    if isinstance(name_or_path, str) and not name_or_path.strip():  # Path('') would read as the folder '.'
        raise SpecError([('', 'empty SPEC: give a preset name or a path to a JSON spec file')])
    if str(name_or_path) in names:
        return ArchSpec.from_json((PRESET_DIR / f'{name_or_path}.json').read_text(encoding='utf-8'))
    p = Path(name_or_path)
    try:
        exists, is_file = p.exists(), p.is_file()
    except OSError:  # a name the file system refuses (a part over 255 bytes) is no file
        exists = is_file = False
    if p.suffix == '.json' or exists:
        if not is_file:
            what = 'is a folder, not a spec file' if exists else 'does not exist'
            raise SpecError([('', f'spec file {str(p)!r} {what}')])
        try:
            size = p.stat().st_size
            if size > MAX_JSON_CHARS * 4:  # UTF-8: at most 4 bytes a character; refused before it is read
                raise SpecError([('', f'spec file {str(p)!r} is {size:,} bytes: over the limit for a spec')])
            text = p.read_text(encoding='utf-8')
        except (OSError, UnicodeDecodeError) as e:
            raise SpecError([('', f'cannot read spec file {str(p)!r}: {e}')]) from None
        return ArchSpec.from_json(text)
    raise SpecError([('', _unknown(str(name_or_path), names, trained))])


def _unknown(name: str, presets: list[str], trained: list[str] | None) -> str:
    """What an unknown spec name gets: the close presets and trained models (case and '-' for '_' folded)."""
    import difflib

    known = {n.lower().replace('-', '_'): n for n in [*(trained or []), *presets]}  # a preset wins a tie
    key = name.lower().replace('-', '_')[:200]  # a long name is compared by its start (difflib is quadratic)
    close = [known[k] for k in difflib.get_close_matches(key, known, n=3, cutoff=0.6)]
    part = [n for n in presets if key and key in n] or presets  # 'pool': the poolformers, as before
    hint = f'presets include: {", ".join(part[:8])}'
    if close:
        hint = f'did you mean {close[0]}?' + (f' (or {", ".join(close[1:])})' if close[1:] else '')
    if trained is not None:
        hint += "; a trained model's name (from `explorer train`, or a shipped fmnist_* model) is taken too"
    return f'{show(name)} is neither a preset nor a spec file; {hint}'


# ---- presets ------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _preset_specs() -> dict[str, dict]:
    return {name: load_spec(name).to_dict() for name in preset_names()}


def list_presets() -> list[dict]:
    """One row per preset: name, family, display name and the published figures with their source.

    Published figures: ImageNet-1k top-1 (%), params (millions), GMACs at `resolution` (MACs: one
    multiply-accumulate = 1), as given by `source`; None where the source has none.
    """
    rows = []
    for name, d in _preset_specs().items():
        m = d['meta']
        rows.append(
            {
                'name': name,
                'family': m.get('family', 'other'),
                'display_name': m.get('display_name', name),
                'top1': m.get('top1'),
                'params_m': m.get('params_m'),
                'gmacs': m.get('gmacs'),
                'resolution': m.get('resolution', d['img_size']),
                'source': m.get('source', ''),
                'timm_name': m.get('timm_name'),
                'pretrained_tag': m.get('pretrained_tag'),
            }
        )
    return sorted(rows, key=lambda r: (r['family'].lower(), r['params_m'] or 0, r['name']))


def preset_choices() -> list[tuple[str, str]]:
    """(label, name) pairs for a dropdown, grouped by family (families in alphabetical order, small to big). The
    label carries the preset's file name (timm's model name where timm has one), so typing either finds it."""
    out = []
    for r in list_presets():
        top1 = f' · {r["top1"]:g}%' if r['top1'] is not None else ''
        out.append((f'{r["family"]} › {r["display_name"]} ({r["name"]}){top1}', r['name']))
    return out


def get_preset(name: str) -> dict:
    """The spec dict of a preset (published figures in `meta`)."""
    specs = _preset_specs()
    if name not in specs:
        raise SpecError([('preset', f'{show(name)} is not a preset; choose from {", ".join(specs)}')])
    return copy.deepcopy(specs[name])


def scratch_spec() -> dict:
    """A plain starting point: four pooling stages at the usual MetaFormer widths, nothing published."""
    stages = [StageSpec('pooling', depth, dim) for depth, dim in zip((2, 2, 6, 2), (64, 128, 320, 512))]
    return ArchSpec(stages=stages, name='my_metaformer', res_scale_init=default_res_scale(4)).to_dict()


# ---- parsing and identity -----------------------------------------------------------------------------
def parse_spec(spec: dict | str | ArchSpec) -> ArchSpec:
    """A validated ArchSpec from a dict, JSON text, a preset name or an ArchSpec. Raises SpecError."""
    if isinstance(spec, ArchSpec):
        return spec
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith('{'):
            return ArchSpec.from_json(text)
        return ArchSpec.from_dict(get_preset(text))
    return ArchSpec.from_dict(spec)


def validate(spec: dict | str) -> list[list[str]]:
    """[[field path, message], ...]; empty when the spec is valid."""
    try:
        parse_spec(spec)
    except SpecError as e:
        return [[p, m] for p, m in e.errors]
    return []


def _arch_key(spec: ArchSpec) -> str:
    """What defines the network a spec builds for inference (not its name, metadata or training-only drop rates),
    with mixer arguments made explicit, the scales given per stage and every number as a float: 1 and 1.0, or a
    scale written once and the same scale per stage, are the same network (they lost a preset's figures)."""
    d = spec.to_dict()
    for k in ('name', 'meta', 'drop_path_rate', 'drop_rate'):
        d.pop(k, None)
    d['layer_scale_init'] = spec.per_stage(spec.layer_scale_init)
    d['res_scale_init'] = spec.per_stage(spec.res_scale_init)
    for i, st in enumerate(d['stages']):
        st['mixer_args'] = {k: v for k, v in spec.mixer_kwargs(i).items() if k != 'grid_size'}
    return json.dumps(_floats(d), sort_keys=True)


def _floats(v):
    """Every int in a JSON-like value as a float (booleans stay booleans)."""
    if isinstance(v, dict):
        return {k: _floats(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_floats(x) for x in v]
    return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


@functools.lru_cache(maxsize=1)
def _preset_by_arch() -> dict[str, str]:
    return {_arch_key(ArchSpec.from_dict(d)): name for name, d in _preset_specs().items()}


def matching_preset(spec: dict | ArchSpec) -> str | None:
    """The preset with exactly this architecture (name and metadata aside), or None."""
    try:
        return _preset_by_arch().get(_arch_key(parse_spec(spec)))
    except SpecError:
        return None


def names_another_preset(name: str, spec: dict | ArchSpec) -> bool:
    """Whether `name` is a preset's name and `spec` another network: the charts would put the preset's name on
    this network's numbers, beside the preset's own point."""
    specs = _preset_specs()
    return name in specs and _arch_key(parse_spec(specs[name])) != _arch_key(parse_spec(spec))


def with_published_meta(spec: ArchSpec) -> ArchSpec:
    """Published figures belong to an architecture: keep `meta` only while the spec matches a preset."""
    name = matching_preset(spec)
    spec = copy.deepcopy(spec)
    spec.meta = copy.deepcopy(_preset_specs()[name]['meta']) if name else {}
    return spec


def pretrained_name(spec: ArchSpec) -> str | None:
    """'poolformer_s12.sail_in1k' for presets with a timm pretrained tag, else None."""
    name, tag = spec.meta.get('timm_name'), spec.meta.get('pretrained_tag')
    return f'{name}.{tag}' if name and tag else None
