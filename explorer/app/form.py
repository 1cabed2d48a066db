"""The composer form <-> spec dict: which fields a stage row shows, and adding or removing a stage.

Pure functions on spec dicts (no gradio), so the form logic is tested without a server.
"""

from __future__ import annotations

import copy
import functools
import re

from explorer.core.registry import MIXERS, Arg
from explorer.core.spec import MAX_STAGES, ArchSpec, SpecError, default_res_scale
from explorer.measure.units import whole_number

GLOBAL_FIELDS = ('name', 'img_size', 'in_chans', 'num_classes', 'mlp_act', 'norm', 'head')
STAGE_FIELDS = ('mixer', 'depth', 'dim', 'mlp_ratio', 'downsample')


@functools.lru_cache(maxsize=1)
def option_slots() -> tuple[tuple[str, str, Arg], ...]:
    """One form field per distinct mixer argument in the registry: (slot key, argument name, Arg).

    Mixers that share an argument of the same type and range (`qkv_bias` of attention and cycle) share
    a field; a same-named argument with another schema gets its own slot, keyed `mixer.arg`.
    """
    slots: dict[str, tuple[str, str, Arg]] = {}
    for mixer, info in MIXERS.items():
        for arg_name, arg in info.args.items():
            key = arg_name
            if key in slots and _schema(slots[key][2]) != _schema(arg):
                key = f'{mixer}.{arg_name}'
            slots.setdefault(key, (key, arg_name, arg))
    return tuple(slots.values())


def _schema(arg: Arg) -> tuple:
    return arg.kind, arg.low, arg.high, arg.choices, arg.nullable


def slots_for(mixer: str) -> list[str]:
    """Keys of the option slots that belong to `mixer` (the fields a stage row shows for it)."""
    info = MIXERS.get(mixer) if isinstance(mixer, str) else None  # a crafted request may send a list
    if info is None:
        return []
    return [key for key, name, arg in option_slots() if name in info.args and _schema(info.args[name]) == _schema(arg)]


def _clean_number(v):
    """Form numbers arrive as floats; 4.0 becomes 4 so a composed spec equals its preset file."""
    return whole_number(v)


def form_to_spec(base: dict, values: dict, n_stages: int, rows: list[dict]) -> dict:
    """The raw (unvalidated) spec dict the form describes.

    base: the last valid spec dict, for the fields the form does not show (stem, scales, ...).
    values: GLOBAL_FIELDS -> value. rows: per stage, STAGE_FIELDS plus 'options' (slot key -> value);
    only the first `n_stages` rows count. Mixer options equal to the registry default are left out.
    """
    d = copy.deepcopy(base)
    for k in GLOBAL_FIELDS:
        if k in values:
            d[k] = _clean_number(values[k])
    stages = []
    old = base.get('stages') if isinstance(base.get('stages'), list) else []
    for i, row in enumerate(rows[:n_stages]):
        # what the form does not show of this stage (pos_embed) stays as it was
        kept = old[i] if i < len(old) and isinstance(old[i], dict) else {}
        st = {k: v for k, v in kept.items() if k not in STAGE_FIELDS and k != 'mixer_args'}
        st.update({k: _clean_number(row.get(k)) for k in STAGE_FIELDS})
        info = MIXERS.get(st['mixer']) if isinstance(st['mixer'], str) else None
        args = {}
        if info is not None:
            opts = row.get('options', {})
            for key in slots_for(st['mixer']):
                name = next(n for k, n, _ in option_slots() if k == key)
                v = _clean_number(opts.get(key, info.args[name].default))
                if v != info.args[name].default:
                    args[name] = v
        st['mixer_args'] = args
        stages.append(st)
    d['stages'] = stages
    _fit_per_stage(d)
    d.pop('meta', None)
    return d


def spec_to_form(spec: dict) -> tuple[dict, int, list[dict]]:
    """(global values, number of stages, MAX_STAGES rows) for the form; rows past the spec's repeat its last
    stage (what "add stage" would start from)."""
    values = {k: spec.get(k) for k in GLOBAL_FIELDS}
    rows = []
    for i in range(MAX_STAGES):
        st = spec['stages'][min(i, len(spec['stages']) - 1)]
        info = MIXERS.get(st['mixer']) if isinstance(st['mixer'], str) else None
        opts = {key: arg.default for key, _, arg in option_slots()}
        if info is not None:
            for key in slots_for(st['mixer']):
                name = next(n for k, n, _ in option_slots() if k == key)
                opts[key] = st.get('mixer_args', {}).get(name, info.args[name].default)
        rows.append({**{k: st.get(k) for k in STAGE_FIELDS}, 'options': opts})
    return values, len(spec['stages']), rows


def _fit_per_stage(d: dict, removed: int | None = None) -> None:
    """Keep per-stage lists (res_scale_init, layer_scale_init) as long as the stage list.

    A list that follows the default res-scale rule keeps following it; otherwise the removed stage's entry
    is dropped, or the last entry repeated for a new stage. The first stage always downsamples (the stem).
    """
    n = len(d['stages'])
    for key in ('layer_scale_init', 'res_scale_init'):
        v = d.get(key)
        if not isinstance(v, list) or len(v) == n:
            continue
        if key == 'res_scale_init' and v == default_res_scale(len(v)):
            d[key] = default_res_scale(n)
            continue
        v = list(v)
        if removed is not None and len(v) > n and removed < len(v):
            del v[removed]
        d[key] = v[:n] + [v[-1] if v else None] * (n - len(v))
    if n:
        d['stages'][0]['downsample'] = True


def add_stage(spec: dict) -> dict:
    """A copy with one more stage at the end: the last stage's mixer, depth 2, twice its width (max 2048) after
    one more downsampling, or, when the input size cannot be divided once more (224 at stride 32 already), the
    same width and grid without downsampling, so the design stays valid."""
    d = copy.deepcopy(spec)
    if len(d['stages']) >= MAX_STAGES:
        raise SpecError([('stages', f'a spec has at most {MAX_STAGES} stages')])
    last = d['stages'][-1]
    dim = last.get('dim')
    new = {
        **copy.deepcopy(last),
        'depth': 2,
        'downsample': True,
        'pos_embed': False,  # the form does not show it: a new stage would carry a hidden dim x H x W embedding
        'dim': min(2 * dim, 2048) if isinstance(dim, int) else dim,
    }
    d['stages'].append(new)
    _fit_per_stage(d)
    try:
        ArchSpec.from_dict(d)
    except SpecError as e:
        if any(path == 'img_size' or path.startswith(f'stages[{len(d["stages"]) - 1}]') for path, _ in e.errors):
            new.update(downsample=False, dim=dim)  # no room for another stride: widen nothing, keep the grid
    return d


def remove_stage(spec: dict, index: int) -> dict:
    """A copy without stage `index` (a spec keeps at least one stage)."""
    d = copy.deepcopy(spec)
    n = len(d['stages'])
    if n <= 1:
        raise SpecError([('stages', 'a spec needs at least one stage')])
    if not 0 <= index < n:
        raise SpecError([('stages', f'there is no stage {index}; the spec has {n}')])
    del d['stages'][index]
    _fit_per_stage(d, removed=index)
    return d


# ---- where a spec field sits in the form (for field-level messages) ---------------------------------------
GLOBAL_IDS = {
    'name': 'mfx-name',
    'img_size': 'mfx-img',
    'in_chans': 'mfx-chans',
    'num_classes': 'mfx-classes',
    'mlp_act': 'mfx-act',
    'norm': 'mfx-norm',
    'head': 'mfx-head',
}
_STAGE_IDS = {'mixer': 'mixer', 'depth': 'depth', 'dim': 'dim', 'mlp_ratio': 'mlp', 'downsample': 'down'}
_STAGE_PATH = re.compile(r'stages\[(\d+)\](?:\.(\w+))?(?:\.(\w+))?')


def stage_elem_id(i: int, field: str) -> str:
    """elem_id of stage `i`'s (0-based) field, as the form shows it (S1..S6): stage_elem_id(2, 'dim') ->
    'mfx-s3-dim'."""
    return f'mfx-s{i + 1}-{_STAGE_IDS[field]}'


def option_elem_id(i: int, key: str) -> str:
    """elem_id of stage `i`'s mixer-option field for slot `key` ('mfx-s3-opt-head_dim')."""
    return f'mfx-s{i + 1}-opt-{key.replace(".", "-")}'


def option_label(name: str) -> str:
    """A mixer argument as a field label: 'expansion_ratio' -> 'expansion ratio' (wraps instead of being cut)."""
    return name.replace('_', ' ')


def field_elem_id(path: str, spec: dict) -> str | None:
    """The elem_id of the form field a SpecError path names ('stages[2].dim' -> 'mfx-s3-dim'), the stage row for
    a path inside a stage without a field of its own, None for a field the form does not show (stem, scales)."""
    if path in GLOBAL_IDS:
        return GLOBAL_IDS[path]
    m = _STAGE_PATH.fullmatch(path)
    if m is None:
        return None
    i, field, arg = int(m.group(1)), m.group(2), m.group(3)
    stages = spec.get('stages') if isinstance(spec.get('stages'), list) else []
    if not 0 <= i < min(len(stages), MAX_STAGES):
        return None
    if field in _STAGE_IDS:
        return stage_elem_id(i, field)
    if field == 'mixer_args' and arg and isinstance(stages[i], dict):
        mixer = stages[i].get('mixer')
        for key in slots_for(mixer):
            if next(n for k, n, _ in option_slots() if k == key) == arg:
                return option_elem_id(i, key)
    return f'mfx-stage-{i + 1}'
