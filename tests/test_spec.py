"""The spec: defaults, JSON round trip, and validation messages that name the field, the value and what is allowed."""

import json

import pytest

from explorer.core.catalog import PRESET_DIR, load_spec, preset_names
from explorer.core.spec import ArchSpec, SpecError, default_res_scale
from tests.conftest import tiny_spec


def test_defaults_are_metaformer_baselines():
    spec = ArchSpec.from_dict({'stages': [{'mixer': 'pooling', 'depth': 2, 'dim': d} for d in (64, 128, 320, 512)]})
    assert spec.mlp_act == 'star_relu' and spec.mlp_bias is False
    assert spec.norm == 'layernorm_nobias' and spec.downsample_norm == 'layernorm_nobias'
    assert spec.head == 'mlp' and spec.img_size == 224 and spec.num_classes == 1000
    assert (spec.stem.kernel_size, spec.stem.stride, spec.stem.padding) == (7, 4, 2)
    assert (spec.downsample.kernel_size, spec.downsample.stride, spec.downsample.padding) == (3, 2, 1)
    assert spec.res_scale_init == [None, None, 1.0, 1.0]
    assert spec.grid_sizes() == [(56, 56), (28, 28), (14, 14), (7, 7)]


def test_default_res_scale_other_stage_counts():
    assert default_res_scale(1) == [None]
    assert default_res_scale(3) == [None, None, 1.0]
    assert default_res_scale(6) == [None, None, None, 1.0, 1.0, 1.0]


@pytest.mark.parametrize('name', preset_names())
def test_preset_round_trip_is_identical(name):
    text = (PRESET_DIR / f'{name}.json').read_text()
    assert ArchSpec.from_json(text).to_json() == text


def test_round_trip_of_a_user_file(tmp_path):
    d = tiny_spec(layer_scale_init=[1e-5, None, 0.1], mlp_act='gelu')
    text = ArchSpec.from_dict(d).to_json()
    p = tmp_path / 'mine.json'
    p.write_text(text)
    assert load_spec(p).to_json() == text
    assert json.loads(text)['stages'][2]['mixer_args'] == {'head_dim': 8}


def test_there_are_presets_of_every_published_family():
    names = set(preset_names())
    for family in ('poolformer', 'poolformerv2', 'identityformer', 'randformer'):
        assert {f'{family}_{s}' for s in ('s12', 's24', 's36', 'm36', 'm48')} <= names
    for family in ('convformer', 'caformer'):
        assert {f'{family}_{s}' for s in ('s18', 's36', 'm36', 'b36')} <= names
    assert {'poolformer_hybrid_ppaa_s12', 'deit_small', 'mixer_b16', 'resmlp_s12', 'cyclemlp_b1'} <= names


def _errors(d):
    with pytest.raises(SpecError) as e:
        ArchSpec.from_dict(d)
    return str(e.value)


def _with_stage(i, **changes):
    d = tiny_spec()
    d['stages'][i].update(changes)
    return d


BAD_SPECS = [
    # (spec dict, substring expected in the message)
    (_with_stage(2, dim=60), 'stages[2].dim: 60 is not divisible by head_dim 8 (attention)'),
    (_with_stage(1, mixer='convolution'), "stages[1].mixer: 'convolution' is not a registered mixer"),
    (_with_stage(0, depth=0), 'stages[0].depth: 0 is out of range; allowed [1, 64]'),
    (_with_stage(0, depth=2.5), 'stages[0].depth: 2.5 must be an integer'),
    (_with_stage(0, dim=True), 'stages[0].dim: True must be an integer'),
    (
        _with_stage(0, mixer_args={'pool_size': 4}),
        'stages[0].mixer_args.pool_size: 4 is not allowed; choose from 1, 3, 5',
    ),
    (
        _with_stage(0, mixer_args={'kernel': 3}),
        'stages[0].mixer_args.kernel: unknown argument for pooling; allowed: pool_size',
    ),
    (_with_stage(1, mixer_args={'kernel_size': 4}), 'stages[1].mixer_args.kernel_size: 4 is not allowed'),
    (_with_stage(1, mlp_ratio=-1), 'stages[1].mlp_ratio: -1 is out of range'),
    (_with_stage(1, colour='red'), 'stages[1].colour: unknown key'),
    (_with_stage(1, downsample=False), 'stages[1].downsample: false needs dim equal to stages[0].dim (16), got 32'),
    (_with_stage(0, downsample=False), 'stages[0].downsample: false is not allowed for the first stage'),
    ({**tiny_spec(), 'img_size': 36}, 'img_size: 36 is not divisible by the total stride 16'),
    (
        {**tiny_spec(), 'mlp_act': 'tanh'},
        "mlp_act: 'tanh' is not allowed; choose from gelu, relu, silu, squared_relu, star_relu",
    ),
    ({**tiny_spec(), 'norm': 'rmsnorm'}, "norm: 'rmsnorm' is not allowed"),
    ({**tiny_spec(), 'head': 'conv'}, "head: 'conv' is not allowed; choose from mlp, linear"),
    ({**tiny_spec(), 'depths': [1, 2]}, 'depths: unknown key'),
    ({**tiny_spec(), 'res_scale_init': [1.0]}, 'res_scale_init: [1.0] has 1 entry but the spec has 3 stages'),
    (
        {**tiny_spec(), 'stages': tiny_spec()['stages'][:1], 'res_scale_init': [1.0, 1.0]},
        'res_scale_init: [1.0, 1.0] has 2 entries but the spec has 1 stage',
    ),
    ({**tiny_spec(), 'layer_scale_init': -1}, 'layer_scale_init: -1 must be null or a number in (0, 10]'),
    (
        {**tiny_spec(), 'stem': {'kernel_size': 7}},
        "stem: {'kernel_size': 7} must be an object with exactly kernel_size, stride, padding",
    ),
    ({**tiny_spec(), 'img_size': 4096}, 'img_size: 4096 is out of range; allowed [8, 1536]'),
    ({**tiny_spec(), 'stages': []}, 'stages: 0 stages; a spec has 1 to 6 stages'),
    ({**tiny_spec(), 'stages': [dict(mixer='identity', depth=1, dim=8)] * 7}, 'stages: 7 stages'),
    ({'name': 'x'}, 'stages: missing'),
    ({**tiny_spec(), 'stages': [{'mixer': 'pooling', 'depth': 1}]}, 'stages[0].dim: missing (required)'),
    ([1, 2], 'a spec is a JSON object, got list'),
    ({**tiny_spec(), 'meta': {'top5': 90}}, 'meta.top5: unknown key'),
]


@pytest.mark.parametrize('d,expected', BAD_SPECS, ids=[e[:40] for _, e in BAD_SPECS])
def test_validation_messages(d, expected):
    assert expected in _errors(d)


def test_all_errors_reported_at_once():
    d = tiny_spec(mlp_act='tanh')
    d['stages'][0]['depth'] = 0
    d['stages'][2]['dim'] = 60
    msg = _errors(d)
    assert 'mlp_act' in msg and 'stages[0].depth' in msg and 'stages[2].dim' in msg


def test_fixed_token_mixer_grid_limit():
    d = dict(img_size=512, stem=dict(kernel_size=4, stride=4, padding=0), stages=[dict(mixer='random', depth=1, dim=8)])
    assert 'above the 4096 limit' in _errors(d)


def test_invalid_json_text():
    with pytest.raises(SpecError, match='not valid JSON'):
        ArchSpec.from_json('{"stages": [}')


def test_a_key_twice_in_one_object_is_refused_by_name():
    """json keeps the last of two equal keys: a spec file with two "stages" (an edit pasted beside the old one)
    was read as its second list without a word."""
    text = '{"name": "a", "stages": [{"mixer": "pooling", "depth": 1, "dim": 8}], "stages": []}'
    with pytest.raises(SpecError, match="the key 'stages' appears twice in one object"):
        ArchSpec.from_json(text)
    one = '{"name": "a", "stages": [{"mixer": "pooling", "depth": 1, "dim": 8, "depth": 2}]}'
    with pytest.raises(SpecError, match="the key 'depth' appears twice"):
        ArchSpec.from_json(one)
    ok = ArchSpec.from_json('{"name": "a", "stages": [{"mixer": "pooling", "depth": 1, "dim": 8}]}')
    assert ok.stages[0].depth == 1  # different objects may hold the same key


def test_load_spec_unknown_name():
    with pytest.raises(SpecError, match='neither a preset nor a spec file'):
        load_spec('caformer_s99')


def test_load_spec_missing_file(tmp_path):
    with pytest.raises(SpecError, match='does not exist'):
        load_spec(tmp_path / 'nope.json')


def test_spec_errors_survive_pickling():
    """A helper process (the app's fvcore verification) raises SpecError back to the server through pickle."""
    import pickle

    from explorer.measure.guard import ResourceError

    for cls in (SpecError, ResourceError):
        e = pickle.loads(pickle.dumps(cls([('stages.0.dim', 'must be positive'), ('', 'and more')])))
        assert type(e) is cls and e.errors == [('stages.0.dim', 'must be positive'), ('', 'and more')]
        assert str(e) == 'stages.0.dim: must be positive\nand more'


@pytest.mark.parametrize(
    'meta, expected',
    [
        ({'gmacs': 2**64}, 'meta.gmacs: 18446744073709551616 must be a number in [0, 1e+07]'),
        ({'top1': 'abc'}, "meta.top1: 'abc' must be a number in [0, 100]"),
        ({'top1': float('nan')}, 'meta.top1: nan must be a number in [0, 100]'),
        ({'resolution': 224.5}, 'meta.resolution: 224.5 must be an integer in [1, 8192]'),
        ({'notes': ['x']}, "meta.notes: ['x'] must be text of at most 4,000 characters"),
        ({'display_name': 'x' * 4001}, 'meta.display_name: '),
    ],
)
def test_meta_values_are_checked(meta, expected):
    """meta never changes the model, but answers echo it: a 2**64 there broke Gradio's JSON response, and a
    made-up top-1 must not read as a published one."""
    with pytest.raises(SpecError) as info:
        ArchSpec.from_dict({**tiny_spec(), 'meta': meta})
    assert str(info.value).startswith(expected)
    ok = {'top1': 83.6, 'gmacs': 4.1, 'resolution': 224, 'notes': 'x' * 4000, 'source': None}
    assert ArchSpec.from_dict({**tiny_spec(), 'meta': ok}).meta == ok


def test_a_name_with_control_or_invisible_formatting_characters_is_refused():
    """A right-to-left override reversed a pin's label, so its counts could be shown as another design's."""
    import pytest

    from explorer.core.spec import ArchSpec, SpecError

    base = {'name': 'ok', 'img_size': 32, 'stages': [{'mixer': 'pooling', 'depth': 1, 'dim': 16}]}
    ArchSpec.from_dict({**base, 'name': 'caformer_s18 · ünïcode 模型'})
    for name in ('a\u202eb', 'zero\u200bwidth', 'new\nline', 'tab\there'):
        with pytest.raises(SpecError, match='control, invisible formatting'):
            ArchSpec.from_dict({**base, 'name': name})


def test_a_name_that_reads_blank_or_as_another_name_is_refused():
    """Found by a red-team pass: 'poolformer_s12' and 'poolformer_s12' + U+3164 (HANGUL FILLER, drawn as nothing)
    were two pins that read the same with different counts; U+2028 broke a label; a stack of 90 combining
    marks smeared over its neighbours."""
    import pytest

    from explorer.core.spec import ArchSpec, SpecError

    base = {'name': 'ok', 'img_size': 32, 'stages': [{'mixer': 'pooling', 'depth': 1, 'dim': 16}]}
    for name in ('café', 'cafe\u0301', 'a b', 'Ünïcode ✓ 模型', 'x\u0338\u0338'):  # accents, a few marks: fine
        ArchSpec.from_dict({**base, 'name': name})
    cases = {
        'a\u2028b': 'line-breaking',
        'a\u2029b': 'line-breaking',
        'poolformer_s12\u3164': 'blank characters other than the space',
        '\u2800': 'blank characters',
        'no\u00a0break': 'blank characters',
        ' padded': 'begins or ends with a space',
        'padded ': 'begins or ends with a space',
        '\u0301\u0301': 'has no visible character',
        'a' + '\u0338' * 90: 'stacks more than 4 combining marks',
        'private\ue000use': 'control, invisible',
    }
    for name, message in cases.items():
        with pytest.raises(SpecError, match=message):
            ArchSpec.from_dict({**base, 'name': name})


def test_a_name_with_a_mark_that_draws_nothing_is_refused_and_an_emojis_style_is_not():
    """Review: marks that draw nothing passed as combining marks, so 'caformer_s18' + U+FE0F (a variation selector
    after a digit) or + U+034F (the grapheme joiner) read as caformer_s18 with other counts. A variation selector
    is seen only as an emoji's style or in a keycap. A character newer than this Python's Unicode was called
    'control or invisible formatting'."""
    import unicodedata

    import pytest

    from explorer.core.spec import ArchSpec, SpecError

    base = {'name': 'ok', 'img_size': 32, 'stages': [{'mixer': 'pooling', 'depth': 1, 'dim': 16}]}
    for name in ('love \u2764\ufe0f', 'text \u2764\ufe0e', 'keycap 1\ufe0f\u20e3', 'mongol \u1820\u1821'):
        ArchSpec.from_dict({**base, 'name': name})
    for mark in ('\ufe0f', '\ufe00', '\U000e0100', '\u034f', '\u180b', '\u180f', '\u17b4'):
        with pytest.raises(SpecError, match='holds a mark that draws nothing'):
            ArchSpec.from_dict({**base, 'name': 'caformer_s18' + mark})
    unknown = next(chr(c) for c in range(0x1FA00, 0x1FB00) if unicodedata.category(chr(c)) == 'Cn')
    with pytest.raises(SpecError, match=f'holds characters unknown to Unicode {unicodedata.unidata_version}'):
        ArchSpec.from_dict({**base, 'name': 'new ' + unknown})


def test_an_out_of_range_number_is_shown_clipped():
    import pytest

    from explorer.core.spec import ArchSpec, SpecError

    spec = {'name': 'ok', 'img_size': 32, 'stages': [{'mixer': 'pooling', 'depth': 1, 'dim': 10**4000}]}
    with pytest.raises(SpecError) as e:
        ArchSpec.from_dict(spec)
    assert len(str(e.value)) < 200 and '(4,001 characters) is out of range; allowed [' in str(e.value)


def test_the_stride_message_suggests_only_sizes_that_are_allowed():
    """It suggested 'try 2048' for a total stride of 2048, which the next check refuses (img_size at most 1536)."""
    big = {**tiny_spec(), 'img_size': 224, 'stem': {'kernel_size': 32, 'stride': 32, 'padding': 0}}
    big['downsample'] = {'kernel_size': 8, 'stride': 8, 'padding': 0}
    with pytest.raises(SpecError) as e:
        ArchSpec.from_dict(big)
    assert 'no allowed img_size (at most 1536) is: lower the strides' in str(e.value) and 'try' not in str(e.value)
    with pytest.raises(SpecError, match='total stride 16 .*; try 96'):
        ArchSpec.from_dict({**tiny_spec(), 'img_size': 100})


def test_the_constructor_gives_the_same_default_res_scale_as_json():
    """ArchSpec(stages=...) left res_scale_init None (no res-scale anywhere): the same stages built 11,197,176
    parameters, against 11,200,504 from JSON, where the field's default is the MetaFormer one."""
    from explorer.core.spec import StageSpec
    from explorer.measure.analytic import analytic_cost

    stages = [StageSpec('pooling', 2, d) for d in (64, 128, 320, 512)]
    direct = ArchSpec(stages=stages)
    parsed = ArchSpec.from_dict({'stages': [{'mixer': 'pooling', 'depth': 2, 'dim': d} for d in (64, 128, 320, 512)]})
    assert direct.res_scale_init == parsed.res_scale_init == [None, None, 1.0, 1.0]
    assert analytic_cost(direct).params == analytic_cost(parsed).params == 11_200_504
    assert ArchSpec(stages=stages, res_scale_init=None).res_scale_init is None  # given: kept
    assert ArchSpec(stages=tuple(stages)).res_scale_init == [None, None, 1.0, 1.0]
    assert ArchSpec.from_dict({**parsed.to_dict(), 'res_scale_init': None}).res_scale_init is None
