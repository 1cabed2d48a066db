"""Plain functions behind the app: a spec dict in, plain values out.

No gradio and no plotly here, so every action of the app (and of its API) is testable without a server.
The app keeps the composition as a spec dict (JSON data, deep-copyable), never as a model; the composer
form maps to that dict with `form_to_spec` / `spec_to_form`.
"""
from __future__ import annotations

import base64
import binascii
import copy
import functools
import json
import pprint
from dataclasses import fields

from .mixers import MIXERS, Arg
from .spec import MAX_STAGES, ArchSpec, SpecError, StageSpec, default_res_scale, load_spec, preset_names

DEFAULT_PRESET = 'caformer_s18'
GLOBAL_FIELDS = ('name', 'img_size', 'in_chans', 'num_classes', 'mlp_act', 'norm', 'head')
STAGE_FIELDS = ('mixer', 'depth', 'dim', 'mlp_ratio', 'downsample')
MAX_SHARE_CHARS = 20_000  # a share token longer than this is not a spec anybody composed


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
        rows.append({'name': name, 'family': m.get('family', 'other'), 'display_name': m.get('display_name', name),
                     'top1': m.get('top1'), 'params_m': m.get('params_m'), 'gmacs': m.get('gmacs'),
                     'resolution': m.get('resolution', d['img_size']), 'source': m.get('source', ''),
                     'timm_name': m.get('timm_name'), 'pretrained_tag': m.get('pretrained_tag')})
    return sorted(rows, key=lambda r: (r['family'].lower(), r['params_m'] or 0, r['name']))


def preset_choices() -> list[tuple[str, str]]:
    """(label, name) pairs for a dropdown, grouped by family (families in alphabetical order, small to big)."""
    out = []
    for r in list_presets():
        top1 = f' · {r["top1"]:g}%' if r['top1'] is not None else ''
        out.append((f'{r["family"]} › {r["display_name"]}{top1}', r['name']))
    return out


def get_preset(name: str) -> dict:
    """The spec dict of a preset (published figures in `meta`)."""
    specs = _preset_specs()
    if name not in specs:
        raise SpecError([('preset', f'{name!r} is not a preset; choose from {", ".join(specs)}')])
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
    """What defines the network (not its name or metadata), with mixer arguments made explicit."""
    d = spec.to_dict()
    d.pop('name'), d.pop('meta')
    for i, st in enumerate(d['stages']):
        st['mixer_args'] = {k: v for k, v in spec.mixer_kwargs(i).items() if k != 'grid_size'}
        st['mlp_ratio'] = float(st['mlp_ratio'])
    return json.dumps(d, sort_keys=True)


@functools.lru_cache(maxsize=1)
def _preset_by_arch() -> dict[str, str]:
    return {_arch_key(ArchSpec.from_dict(d)): name for name, d in _preset_specs().items()}


def matching_preset(spec: dict | ArchSpec) -> str | None:
    """The preset with exactly this architecture (name and metadata aside), or None."""
    try:
        return _preset_by_arch().get(_arch_key(parse_spec(spec)))
    except SpecError:
        return None


def with_published_meta(spec: ArchSpec) -> ArchSpec:
    """Published figures belong to an architecture: keep `meta` only while the spec matches a preset."""
    name = matching_preset(spec)
    spec = copy.deepcopy(spec)
    spec.meta = copy.deepcopy(_preset_specs()[name]['meta']) if name else {}
    return spec


# ---- the composer form ----------------------------------------------------------------------------------
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
    info = MIXERS.get(mixer)
    if info is None:
        return []
    return [key for key, name, arg in option_slots() if name in info.args and _schema(info.args[name]) == _schema(arg)]


def _clean_number(v):
    """Form numbers arrive as floats; 4.0 stays 4 so a composed spec equals its preset file."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


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
    for row in rows[:n_stages]:
        st = {k: _clean_number(row.get(k)) for k in STAGE_FIELDS}
        info = MIXERS.get(st['mixer'])
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
        info = MIXERS.get(st['mixer'])
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
    """A copy with one more stage at the end: the last stage's mixer, depth 2, twice its width (max 2048)."""
    d = copy.deepcopy(spec)
    if len(d['stages']) >= MAX_STAGES:
        raise SpecError([('stages', f'a spec has at most {MAX_STAGES} stages')])
    last = d['stages'][-1]
    dim = last.get('dim')
    new = {**copy.deepcopy(last), 'depth': 2, 'downsample': True,
           'dim': min(2 * dim, 2048) if isinstance(dim, int) else dim}
    d['stages'].append(new)
    _fit_per_stage(d)
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


# ---- cost ------------------------------------------------------------------------------------------------
def profile(spec: dict | str, img_size: int | None = None) -> dict:
    """Analytic params and MACs (no model is built): the counter's report plus `preset`, the preset this
    spec matches (published figures apply) or None. MACs: one multiply-accumulate = 1, batch 1."""
    from .counting import analytic_cost
    s = parse_spec(spec)
    out = analytic_cost(s, img_size=img_size).to_dict()
    out['preset'] = matching_preset(s)
    return out


@functools.lru_cache(maxsize=64)
def _verified(key: str, img_size: int | None) -> str:
    from .counting import fvcore_cost
    return json.dumps(fvcore_cost(ArchSpec.from_json(key), img_size=img_size).to_dict())


def verify(spec: dict | str, img_size: int | None = None) -> dict:
    """fvcore's count of the built model (slower: builds it). Cached by spec, so asking twice is free."""
    from .guard import check_request
    s = parse_spec(spec)
    check_request(s, batch_size=1, img_size=img_size)  # before building: refuse what would not fit
    d = s.to_dict()
    d['meta'] = {}
    return json.loads(_verified(json.dumps(d, sort_keys=True), img_size))


def memory(spec: dict | str, batch_size: int = 1, dtype: str = 'fp32', img_size: int | None = None) -> dict:
    """Activation memory per stage and in total (bytes) for a forward pass, as explorer.counting estimates it."""
    from .counting import activation_memory
    return activation_memory(parse_spec(spec), batch_size=batch_size, dtype=dtype, img_size=img_size)


def stage_rows(spec: dict | str, report: dict) -> list[list]:
    """Table rows: stage, mixer, depth, dim, token grid, tokens, output (C, H, W), params, MACs."""
    s = parse_spec(spec)
    rows = []
    for st, sc in zip(s.stages, report['stages']):
        c, h, w = sc['out_shape']
        rows.append([sc['index'] + 1, st.mixer, st.depth, st.dim, f'{h}×{w}', h * w, f'{c}×{h}×{w}',
                     fmt_count(sc['params']), fmt_count(sc['macs'])])
    return rows


def fmt_count(n: int | float | None, unit: str = '') -> str:
    """12.3 M, 4.13 G, 815 k: three significant figures."""
    if n is None:
        return '—'
    for div, suffix in ((1e9, 'G'), (1e6, 'M'), (1e3, 'k')):
        if abs(n) >= div:
            v = n / div
            return f'{v:.3g}{suffix}{unit}' if abs(v) < 100 else f'{v:.0f}{suffix}{unit}'
    return f'{n:g}{unit}'


def fmt_bytes(n: int | float) -> str:
    for div, suffix in ((2 ** 30, 'GiB'), (2 ** 20, 'MiB'), (2 ** 10, 'KiB')):
        if n >= div:
            return f'{n / div:.3g} {suffix}'
    return f'{n:g} B'


# ---- share ----------------------------------------------------------------------------------------------
def compact_spec(spec: dict | str) -> dict:
    """The spec without metadata and without fields at their defaults: what ArchSpec.from_dict rebuilds
    into the same network. Shortest form for links and snippets."""
    s = parse_spec(spec)
    full = s.to_dict()
    defaults = ArchSpec(stages=[]).to_dict()
    out = {}
    for k, v in full.items():
        if k in ('meta', 'stages'):
            continue
        if k == 'res_scale_init':
            if v != default_res_scale(s.num_stages):
                out[k] = v
        elif v != defaults[k]:
            out[k] = v
    sdef = {f.name: f.default for f in fields(StageSpec) if f.name in ('mlp_ratio', 'downsample')}
    out['stages'] = [{k: v for k, v in st.items() if not (k in sdef and v == sdef[k])
                      and not (k == 'mixer_args' and not v)} for st in full['stages']]
    return out


def encode_share(spec: dict | str) -> str:
    """URL-safe base64 (no padding) of the compact JSON: the value of the app's `?spec=` query parameter."""
    text = json.dumps(compact_spec(spec), separators=(',', ':'))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip('=')


def decode_share(token: str) -> dict:
    """The spec dict a share token describes (validated; published figures restored if it is a preset)."""
    token = (token or '').strip()
    if not token or len(token) > MAX_SHARE_CHARS:
        raise SpecError([('spec', f'the share link parameter must be 1 to {MAX_SHARE_CHARS} characters, '
                                  f'got {len(token)}')])
    try:
        text = base64.urlsafe_b64decode(token + '=' * (-len(token) % 4)).decode('utf-8')
    except (binascii.Error, ValueError):
        raise SpecError([('spec', 'the share link parameter is not URL-safe base64 of a JSON spec')]) from None
    return with_published_meta(ArchSpec.from_json(text)).to_dict()


def python_snippet(spec: dict | str) -> str:
    """Python that rebuilds the composed model with this package."""
    s = parse_spec(spec)
    preset = matching_preset(s)
    body = pprint.pformat(compact_spec(s), indent=1, width=96, sort_dicts=False)
    lines = ['from explorer.build import build_model', 'from explorer.spec import ArchSpec', '']
    if preset:
        lines += [f'# the preset {preset!r}: explorer.spec.load_spec({preset!r}) also gives it,',
                  '# with its published figures']
    lines += [f'spec = ArchSpec.from_dict({body})', 'model = build_model(spec).eval()',
              f'# input: (batch, {s.in_chans}, {s.img_size}, {s.img_size}) -> logits (batch, {s.num_classes})']
    return '\n'.join(lines) + '\n'


def spec_json(spec: dict | str) -> str:
    """Pretty JSON of the validated spec (published figures kept only while it matches a preset)."""
    return with_published_meta(parse_spec(spec)).to_json()


def load_json_text(text: str) -> dict:
    """An uploaded spec file's text -> validated spec dict."""
    return with_published_meta(ArchSpec.from_json(text)).to_dict()


# ---- speed ----------------------------------------------------------------------------------------------
def available_devices() -> list[str]:
    """'auto' first, then every device this process can time on."""
    import torch
    out = ['auto', 'cpu']
    if torch.cuda.is_available():
        out += [f'cuda:{i}' for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, 'mps', None) is not None and torch.backends.mps.is_available():
        out.append('mps')
    return out


def bench(spec: dict | str, device: str = 'auto', batch_size: int = 8, dtype: str = 'fp32',
          channels_last: bool = False, compile: bool = False, progress=None) -> dict:
    """Measure throughput and latency (explorer.speed.bench) and return its dict plus the spec's name and the
    preset it matches (None when custom)."""
    from .speed import bench as speed_bench  # it runs the resource guard before building
    s = parse_spec(spec)
    if isinstance(batch_size, float) and batch_size.is_integer():  # number fields arrive as floats
        batch_size = int(batch_size)
    result = speed_bench(s, device=device, batch_size=batch_size, dtype=dtype, channels_last=channels_last,
                         compile=compile, progress=progress)
    out = result.to_dict()
    out['name'] = s.name
    out['preset'] = matching_preset(s)
    return out
