"""A design space to search, as data: what may vary per stage and globally, the constraints, the objectives.

A space is a JSON object (presets/spaces/*.json ship three):

    {"name": "metaformer_hybrid", "description": "...",
     "base": "caformer_s18",                      # a preset name or a spec dict: everything the space leaves fixed
     "stages": [{"mixers": ["sepconv", "attention"], "depth": [2, 4], "dim": [64], "mlp_ratio": [4]}, ...],
     "choices": {"mlp_act": ["star_relu", "gelu"], "norm": ["layernorm_nobias"], "img_size": [224]},
     "constraints": {"params_m": {"max": 30}, "gmacs": {"max": 4.5}, "latency_ms": {"max": 25}},
     "objectives": {"gmacs": "maximize", "latency_ms": "minimize"},
     "latency": {"batch_size": 1, "dtype": "float32", "device": "cpu"},
     "training": {"epochs": 1, "train_limit": 10000, "batch_size": 128}}    # only for the accuracy objective

`depth` is an inclusive integer range [low, high]; `dim`, `mlp_ratio` and every `choices` entry are lists of
values to choose from. Metrics (for objectives and constraints): params_m (millions of parameters), gmacs
(billions of multiply-accumulates per image: one MAC = one fused multiply-add), latency_ms (predicted for one
forward call of latency.batch_size images on this device, see explorer.measure.latency; needs a calibration),
act_mib (activation memory of one image's forward pass, float32, MiB) and accuracy (Fashion-MNIST test accuracy
after a short training; maximise only). Scoring a design needs no torch: spec + closed-form counts (+ the latency
model), about 0.1 ms.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field

from explorer.core.registry import MIXERS
from explorer.core.spec import (
    ACTIVATIONS,
    DEPTH_RANGE,
    DIM_RANGE,
    MLP_RATIO_RANGE,
    NORMS,
    ArchSpec,
    DuplicateKey,
    SpecError,
    json_excess,
    json_int,
    name_problem,
    unique_keys,
)
from explorer.measure.latency import DTYPE_NAMES

METRICS = {  # name -> (what it is, unit)
    'params_m': ('parameters', 'M'),
    'gmacs': ('multiply-accumulates per image', 'GMACs'),
    'latency_ms': ('predicted latency per call', 'ms'),
    'act_mib': ('activation memory per image, float32', 'MiB'),
    'accuracy': ('Fashion-MNIST test accuracy after a short training', '%'),
}
DIRECTIONS = ('minimize', 'maximize')
GLOBAL_CHOICES = {'mlp_act': ACTIVATIONS, 'norm': NORMS, 'img_size': None}
MAX_CHOICES = 64  # values in one list
MAX_SPACE_CHARS = 100_000  # as JSON text, however it arrives (text or an object)
MAX_SPACE_DEPTH = 24  # levels of nesting: a space holds its base spec (at most 16 deep) two levels down
MAX_SPACE_ITEMS = 20_000  # values in the whole space
MAX_DESCRIPTION = 2_000  # characters
TRAINING_RANGES = (  # (field, low, high, null allowed): integers, except epochs and time_budget (seconds)
    ('epochs', 0, 1000, False),
    ('train_limit', 1, 60_000, True),
    ('test_limit', 1, 10_000, True),
    ('batch_size', 1, 4096, False),
    ('time_budget', 0, 10**7, True),
    ('seed', 0, 2**31 - 1, False),
    ('min_trials', 1, 100_000, False),
)
TRAINING_FIELDS = ('epochs', 'train_limit', 'test_limit', 'batch_size', 'time_budget', 'seed', 'min_trials', 'amp')
LATENCY_FIELDS = ('batch_size', 'dtype', 'device')
ACT_BYTES = 4  # float32


class SpaceError(ValueError):
    """A space that cannot be searched; the message names each field that is wrong."""


class Uncalibrated(SpaceError):
    """A space that predicts latency where there is no calibration for it; `latency` is its latency settings
    (device, dtype, batch_size) as the fingerprint reads them."""

    def __init__(self, message: str, latency: dict):
        super().__init__(message)
        self.latency = latency


@dataclass
class StageRange:
    mixers: list[str]
    depth: tuple[int, int]
    dims: list[int]
    mlp_ratios: list[float]


@dataclass
class Space:
    name: str
    base: dict  # a spec dict: what the space leaves fixed
    stages: list[StageRange]
    choices: dict[str, list]
    constraints: dict[str, dict]  # metric -> {'min': x, 'max': y}
    objectives: dict[str, str]  # metric -> direction
    latency: dict = field(default_factory=lambda: {'batch_size': 1, 'dtype': 'float32', 'device': 'cpu'})
    training: dict = field(default_factory=dict)
    description: str = ''
    source: dict = field(default_factory=dict)  # the JSON it was read from

    @property
    def key(self) -> str:
        """A short hash of the space's content (40 bits: the name of the studies made before `long_key`; a study
        also stores its whole space, which a search compares)."""
        return hashlib.sha1(json.dumps(self.source, sort_keys=True).encode()).hexdigest()[:10]

    @property
    def long_key(self) -> str:
        """128 bits of a SHA-256 of the space's content: a study's name. With 40 bits, a stranger who found a
        space of the same name and key (about 2^40 hashes) could take a public space's study name for good."""
        return hashlib.sha256(json.dumps(self.source, sort_keys=True).encode()).hexdigest()[:32]

    @property
    def needs_latency(self) -> bool:
        return 'latency_ms' in self.objectives or 'latency_ms' in self.constraints

    @property
    def needs_training(self) -> bool:
        return 'accuracy' in self.objectives or 'accuracy' in self.constraints

    def size(self) -> int:
        """How many distinct designs the space holds."""
        n = 1
        for st in self.stages:
            n *= len(st.mixers) * (st.depth[1] - st.depth[0] + 1) * len(st.dims) * len(st.mlp_ratios)
        for values in self.choices.values():
            n *= len(values)
        return n


# ---- reading a space -------------------------------------------------------------------------------------
def space_json(text: str | bytes):
    """The JSON value of a space's text; SpaceError for text that is not JSON, including what Python's parser
    refuses as ValueError (an integer of over 4,300 digits) or RecursionError (deep nesting)."""
    try:
        return json.loads(text, parse_int=json_int, object_pairs_hook=unique_keys)
    except DuplicateKey as e:
        raise SpaceError(f'the space: {e}') from None
    except (ValueError, RecursionError) as e:
        why = 'nested too deeply' if isinstance(e, RecursionError) else e
        raise SpaceError(f'the space is not valid JSON: {why}') from None


DEFAULT_OBJECTIVES = {'gmacs': 'maximize', 'params_m': 'minimize'}  # a space that names none


def parse_space(data) -> Space:
    """A Space from its JSON object (dict or JSON text); raises SpaceError naming every field that is wrong."""
    from explorer.core.catalog import get_preset, preset_names

    if isinstance(data, (str, bytes)):
        if len(data) > MAX_SPACE_CHARS:
            raise SpaceError(f'the space is {len(data):,} characters; at most {MAX_SPACE_CHARS:,}')
        data = space_json(data)
    if not isinstance(data, dict):
        raise SpaceError(f'a space is a JSON object, not {type(data).__name__}')
    _check_shape(data)
    errors: list[str] = []
    unknown = sorted(set(data) - ({*Space.__dataclass_fields__, 'stages'} - {'source'}))  # source: ours, not a field
    if unknown:
        errors.append(f'unknown field(s) {unknown}')
    base = data.get('base', 'caformer_s18')
    if isinstance(base, str):
        if base not in preset_names():
            raise SpaceError(f'base: {base[:80]!r} is not a preset (see `explorer presets`)')
        base = get_preset(base)
    try:
        base = ArchSpec.from_dict(base).to_dict()
    except SpecError as e:
        raise SpaceError(f'base: {e}') from None
    stages = _stages(data.get('stages'), base['stages'], errors)
    choices = _choices(data.get('choices', {}), errors)
    objectives = _objectives(data.get('objectives', DEFAULT_OBJECTIVES), errors)
    constraints = _constraints(data.get('constraints', {}), errors)
    latency = {'batch_size': 1, 'dtype': 'float32', 'device': 'cpu', **_dict(data, 'latency', errors)}
    _known(latency, 'latency', LATENCY_FIELDS, errors)
    if not _int_in(latency['batch_size'], 1, 1024):
        errors.append(f'latency.batch_size: {json.dumps(latency["batch_size"])[:40]} is not an integer from 1 to 1024')
    if not isinstance(latency['dtype'], str) or latency['dtype'] not in DTYPE_NAMES:
        errors.append(
            f'latency.dtype: {json.dumps(latency["dtype"])[:40]} not allowed; choose {", ".join(DTYPE_NAMES)}'
        )
    if latency['device'] not in ('cpu', 'cuda'):
        errors.append(f'latency.device: {json.dumps(latency["device"])[:40]} not allowed; choose cpu or cuda')
    training = _dict(data, 'training', errors)
    _known(training, 'training', TRAINING_FIELDS, errors)
    errors += training_errors(training)  # in every space: a study stores them, whether it trains or not
    name = data.get('name', 'space')
    if not isinstance(name, str) or not name or len(name) > 80:
        errors.append('name: a non-empty string of at most 80 characters')
    elif problem := name_problem(name):  # it names the study and every design's spec
        errors.append(f'name: {problem}')
    description = data.get('description', '')
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        errors.append(f'description: a string of at most {MAX_DESCRIPTION:,} characters')
    if errors:
        raise SpaceError('; '.join(errors))
    space = Space(name, base, stages, choices, constraints, objectives, latency, training, description, data)
    design(space, first_choices(space))  # the first design of the space must be a valid spec
    return space


def _check_shape(data: dict) -> None:
    """Refuse a space nested more than MAX_SPACE_DEPTH levels, holding more than MAX_SPACE_ITEMS values or longer
    than MAX_SPACE_CHARS as JSON, naming its field, before anything walks it recursively or stores it (an object
    from the API arrives parsed: the length of its text was never checked)."""
    excess = json_excess(data, MAX_SPACE_DEPTH, MAX_SPACE_ITEMS)
    if excess and excess[0] == 'depth':
        raise SpaceError(f'{str(excess[1])[:40]}: nested more than {MAX_SPACE_DEPTH} levels deep')
    if excess:
        raise SpaceError(f'the space holds more than {MAX_SPACE_ITEMS:,} values')
    try:
        n = len(json.dumps(data))
    except (TypeError, ValueError) as e:  # not JSON values (a Python caller's object)
        raise SpaceError(f'the space is not JSON: {e}') from None
    if n > MAX_SPACE_CHARS:
        raise SpaceError(f'the space is {n:,} characters as JSON; at most {MAX_SPACE_CHARS:,}')


def _known(d: dict, where: str, fields: tuple, errors: list) -> None:
    unknown = sorted(str(k)[:40] for k in set(d) - set(fields))
    if unknown:
        errors.append(f'{where}: unknown field(s) {unknown}; allowed {", ".join(fields)}')


def _dict(data: dict, key: str, errors: list) -> dict:
    v = data.get(key, {})
    if not isinstance(v, dict):
        errors.append(f'{key}: an object, got {type(v).__name__}')
        return {}
    return v


TRAINING_AMPS = ('auto', 'bf16', 'none')  # trials train on the CPU, where fp16 (loss scaling for GPUs) is refused


def training_errors(training: dict) -> list[str]:
    """What is wrong with a space's "training" values for the training loop (TRAINING_RANGES), one message a
    field. A server bounds them further and names its own limits (explorer.app.search.check_training)."""
    errors = []
    if 'amp' in training and training['amp'] not in TRAINING_AMPS:
        amp = json.dumps(training['amp'])[:40]
        errors.append(f'training.amp: {amp} not allowed; choose {", ".join(TRAINING_AMPS)} (trials train on the CPU)')
    for key, low, high, none_ok in TRAINING_RANGES:
        if key not in training or (none_ok and training[key] is None):
            continue
        v = training[key]
        whole = key != 'epochs' and key != 'time_budget'
        ok = _int_in(v, low, high) if whole else _number(v) and low < v <= high
        if not ok:
            kind = 'an integer from' if whole else 'a number in'
            span = f'{low} to {high:,}' if whole else f'({low}, {high:,}]'
            null = ' or null' if none_ok else ''
            errors.append(f'training.{key}: {json.dumps(v)[:40]} is not {kind} {span}{null}')
    return errors


def _int_in(v, low: int, high: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= 1e308  # not NaN, inf or huge


def _list(v, where: str, errors: list, check) -> list:
    if not isinstance(v, list) or not v or len(v) > MAX_CHOICES:
        errors.append(f'{where}: a list of 1 to {MAX_CHOICES} values, got {json.dumps(v)[:60]}')
        return []
    bad = [x for x in v if not check(x)]
    if bad:
        errors.append(f'{where}: {json.dumps(bad)[:80]} not allowed')
    if len({float(x) if _number(x) else json.dumps(x) for x in v}) != len(v):  # 4 and 4.0 are one value
        errors.append(f'{where}: values repeat')
    return list(v)


def _stages(raw, base_stages: list[dict], errors: list) -> list[StageRange]:
    if not isinstance(raw, list) or len(raw) != len(base_stages):
        errors.append(f'stages: a list of {len(base_stages)} stage ranges (as many stages as the base spec has)')
        return []
    out = []
    for i, (st, base) in enumerate(zip(raw, base_stages)):
        where = f'stages[{i}] (S{i + 1})'
        if not isinstance(st, dict):
            errors.append(f'{where}: an object')
            continue
        unknown = sorted(set(st) - {'mixers', 'depth', 'dim', 'mlp_ratio'})
        if unknown:
            errors.append(f'{where}: unknown field(s) {unknown}')
        mixers = _list(st.get('mixers'), f'{where}.mixers', errors, lambda m: isinstance(m, str) and m in MIXERS)
        depth = st.get('depth')
        ok = isinstance(depth, list) and len(depth) == 2 and all(_int_in(d, *DEPTH_RANGE) for d in depth)
        if not ok or depth[0] > depth[1]:
            errors.append(f'{where}.depth: [low, high] with {DEPTH_RANGE[0]} <= low <= high <= {DEPTH_RANGE[1]}')
            depth = [1, 1]
        dims = _list(st.get('dim'), f'{where}.dim', errors, lambda d: _int_in(d, *DIM_RANGE))
        ratios = _list(
            st.get('mlp_ratio', [base['mlp_ratio']]),  # what the space leaves fixed is the base's
            f'{where}.mlp_ratio',
            errors,
            lambda r: _number(r) and MLP_RATIO_RANGE[0] <= r <= MLP_RATIO_RANGE[1],
        )
        out.append(StageRange(mixers, (depth[0], depth[1]), dims, ratios))
    return out


def _choices(raw, errors: list) -> dict[str, list]:
    if not isinstance(raw, dict):
        errors.append('choices: an object')
        return {}
    out = {}
    for key, values in raw.items():
        if key not in GLOBAL_CHOICES:
            errors.append(f'choices: {key[:40]!r} cannot vary; choose from {", ".join(GLOBAL_CHOICES)}')
            continue
        allowed = GLOBAL_CHOICES[key]
        check = (lambda v: _int_in(v, 16, 1024)) if allowed is None else (lambda v, a=allowed: v in a)
        out[key] = _list(values, f'choices.{key}', errors, check)
    return out


def _objectives(raw, errors: list) -> dict[str, str]:
    if not isinstance(raw, dict) or not 1 <= len(raw) <= 3:
        errors.append(f'objectives: an object of 1 to 3 metrics, each "minimize" or "maximize" ({", ".join(METRICS)})')
        return {}
    for k, d in raw.items():
        if k not in METRICS or d not in DIRECTIONS:
            errors.append(
                f'objectives: {str(k)[:40]!r}: {str(d)[:20]!r}; metrics {", ".join(METRICS)}, minimize/maximize'
            )
    if raw.get('accuracy') == 'minimize':
        errors.append('objectives: accuracy can only be maximized')
    return dict(raw)


def _constraints(raw, errors: list) -> dict[str, dict]:
    if not isinstance(raw, dict):
        errors.append('constraints: an object')
        return {}
    out = {}
    for k, bounds in raw.items():
        if k not in METRICS:
            errors.append(f'constraints: {str(k)[:40]!r} is not a metric ({", ".join(METRICS)})')
            continue
        if not isinstance(bounds, dict) or not bounds or set(bounds) - {'min', 'max'}:
            errors.append(f'constraints.{k}: an object with "min" and/or "max"')
            continue
        bad = [b for b, v in bounds.items() if v is not None and not _number(v)]
        if bad:
            errors.append(f'constraints.{k}: {bad} must be finite numbers')
            continue
        kept = {b: v for b, v in bounds.items() if v is not None}
        if 'min' in kept and 'max' in kept and kept['min'] > kept['max']:
            errors.append(f'constraints.{k}: min {kept["min"]:g} is above max {kept["max"]:g}: no design could hold')
            continue
        out[k] = kept
    return out


# ---- designs -----------------------------------------------------------------------------------------------
def first_choices(space: Space) -> dict:
    """The parameters of the space's first design (every list's first value, the lowest depths)."""
    params = {}
    for i, st in enumerate(space.stages):
        params.update({f's{i}.mixer': st.mixers[0], f's{i}.depth': st.depth[0], f's{i}.dim': st.dims[0]})
        params[f's{i}.mlp_ratio'] = st.mlp_ratios[0]
    params.update({k: v[0] for k, v in space.choices.items()})
    return params


def design(space: Space, params: dict, name: str | None = None) -> ArchSpec:
    """The spec for one point of the space: the base with the chosen values. A mixer other than the base's gets
    its default arguments (attention: head_dim 32, or the largest divisor of the width below it)."""
    spec = copy.deepcopy(space.base)
    spec['name'] = name or f'{space.name}_design'
    spec['meta'] = {'family': 'search', 'notes': f'a design of the search space {space.name!r}'}
    for i, st in enumerate(spec['stages']):
        mixer, dim = params[f's{i}.mixer'], params[f's{i}.dim']
        args = st.get('mixer_args', {}) if mixer == st['mixer'] else {}
        if mixer == 'attention':
            args = {**args, 'head_dim': _head_dim(dim, args.get('head_dim', 32))}
        st.update(mixer=mixer, depth=params[f's{i}.depth'], dim=dim, mlp_ratio=params[f's{i}.mlp_ratio'])
        st['mixer_args'] = args
    for k in space.choices:
        spec[k] = params[k]
    if 'norm' in space.choices and spec.get('downsample_norm'):
        spec['downsample_norm'] = params['norm']
    try:
        return ArchSpec.from_dict(spec)
    except SpecError as e:
        raise SpaceError(f'the design {describe(params, len(space.stages))} is not a valid spec: {e}') from None


def _head_dim(dim: int, wanted: int) -> int:
    return next(h for h in range(min(wanted, dim), 0, -1) if dim % h == 0)


MIXER_LETTER = {
    'identity': 'I',
    'pooling': 'P',
    'random': 'R',
    'sepconv': 'C',
    'attention': 'A',
    'spatial_mlp': 'M',
    'cross_patch': 'X',
    'cycle': 'Y',
}


def pattern(params: dict, n_stages: int) -> str:
    """The mixer per stage as letters, e.g. 'CCAA' (P pooling, C sepconv, A attention, ...): the colour key."""
    return ''.join(MIXER_LETTER.get(params[f's{i}.mixer'], '?') for i in range(n_stages))


def describe(params: dict, n_stages: int) -> str:
    """'S1 sepconv x3 @64 r4 | S2 ...' (+ global choices): a design in one line."""
    parts = []
    for i in range(n_stages):
        mixer, depth, dim, ratio = (params[f's{i}.{k}'] for k in ('mixer', 'depth', 'dim', 'mlp_ratio'))
        parts.append(f'S{i + 1} {mixer} x{depth} @{dim} r{ratio:g}')
    extra = [f'{k}={params[k]}' for k in GLOBAL_CHOICES if k in params]
    return ' | '.join(parts + extra)


# ---- scoring -----------------------------------------------------------------------------------------------
class Scorer:
    """Metrics of designs: closed-form counts and, when the space needs it, the latency model of this device
    (loaded once). No torch."""

    def __init__(self, space: Space, latency_folder=None):
        self.space, self.latency_model, self.calibrated_on, self.calibration_id = space, None, None, None
        if space.needs_latency:
            from explorer.measure.latency import LatencyError, fingerprint, load_model

            lat = space.latency
            try:
                fp = fingerprint(lat['device'], lat['dtype'], lat['batch_size'])
            except LatencyError as e:  # e.g. a cuda space on a machine without a GPU
                raise SpaceError(f'latency: {e}; this space predicts latency for a device this machine lacks') from None
            self.latency_model = load_model(fp, latency_folder)
            if self.latency_model is None:
                raise Uncalibrated(
                    f'latency_ms is an objective or constraint, but this device has no latency calibration for '
                    f'{fp.label()}; run `explorer calibrate --device {lat["device"]} --batch-size '
                    f'{lat["batch_size"]} --dtype {lat["dtype"]}` first, or drop latency_ms',
                    {'device': fp.device, 'dtype': fp.dtype, 'batch_size': fp.batch_size},
                )
            try:  # a mixer declared after the calibration would count as free, and win every latency trade-off
                self.latency_model.check(m for st in space.stages for m in st.mixers)
            except LatencyError as e:
                raise SpaceError(f'latency: {e}') from None
            self.calibrated_on = fp.label()
            # what its predictions depend on: the coefficients and, when it has one, the local correction's table
            # (a calibration from before that table keeps its id)
            model = self.latency_model
            fitted = json.dumps(model.coef if model.local is None else [model.coef, model.local], sort_keys=True)
            self.calibration_id = f'{model.created} {hashlib.sha256(fitted.encode()).hexdigest()[:12]}'

    def metrics(self, spec: ArchSpec) -> dict:
        from explorer.measure.analytic import analytic_cost

        cost = analytic_cost(spec)
        out = {
            'params': cost.params,  # exact counts beside the rounded figures the objectives use
            'macs': cost.macs,
            'params_m': cost.params / 1e6,
            'gmacs': cost.macs / 1e9,
            'act_mib': cost.act_elements * ACT_BYTES / 2**20,
        }
        if self.latency_model is not None:
            out['latency_ms'] = self.latency_model.predict(spec) * 1e3
        return out


def violations(space: Space, metrics: dict) -> list[float]:
    """One number per constraint bound: <= 0 where it holds, the relative excess where not (Optuna's
    convention for constraints_func)."""
    out = []
    for k, bounds in space.constraints.items():
        v = metrics.get(k)
        if v is None:
            out.append(0.0)
            continue
        if 'max' in bounds:
            out.append((v - bounds['max']) / max(abs(bounds['max']), 1e-12))
        if 'min' in bounds:
            out.append((bounds['min'] - v) / max(abs(bounds['min']), 1e-12))
    return out


def pareto_front(points: list[dict], objectives: dict[str, str]) -> list[int]:
    """Indices of the points no other point dominates (at least as good in every objective, better in one), each
    trade-off once: of points equal in every objective (designs that differ only where no objective looks, such as
    the activation under MACs and params) the first is kept. points: metric dicts; objectives: metric ->
    'minimize' | 'maximize'. Sorted by the first objective."""
    sign = {k: (1 if d == 'minimize' else -1) for k, d in objectives.items()}
    keys = [tuple(sign[k] * p[k] for k in objectives) for p in points]
    order = sorted(range(len(points)), key=lambda i: keys[i])
    front: list[int] = []
    for i in order:
        if any(all(a <= b for a, b in zip(keys[j], keys[i])) and keys[j] != keys[i] for j in front):
            continue
        if any(keys[j] == keys[i] for j in front):
            continue  # the same trade-off twice: keep the first
        front.append(i)
    return front


# ---- shipped spaces ----------------------------------------------------------------------------------------
def space_dir():
    from explorer.core.catalog import PRESET_DIR

    return PRESET_DIR / 'spaces'


def space_names() -> list[str]:
    """The shipped example spaces (presets/spaces/*.json)."""
    return sorted(p.stem for p in space_dir().glob('*.json'))


def load_space(name_or_path: str) -> Space:
    """A shipped space by name, or a space JSON file (a user's own, from the command line)."""
    from pathlib import Path

    if name_or_path in space_names():
        return parse_space((space_dir() / f'{name_or_path}.json').read_text(encoding='utf-8'))
    path = Path(name_or_path)
    if not path.is_file():
        raise SpaceError(f'{name_or_path[:200]!r} is neither a shipped space ({", ".join(space_names())}) nor a file')
    if path.stat().st_size > MAX_SPACE_CHARS:
        raise SpaceError(f'{path} is over {MAX_SPACE_CHARS:,} bytes; a space is a small JSON file')
    try:
        text = path.read_text(encoding='utf-8')
    except (OSError, UnicodeDecodeError) as e:
        raise SpaceError(f'{path}: cannot read it as a text file ({e})') from None
    return parse_space(text)
