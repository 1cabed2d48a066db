"""The app's handlers, compare, diagram and plots as plain functions: no server, no browser."""

from __future__ import annotations

import base64
import copy
import json
import math

import pytest

from explorer.app import compose, panels
from explorer.app import form as spec_form
from explorer.core import catalog, share
from explorer.core.catalog import preset_names
from explorer.core.registry import MIXERS
from explorer.core.spec import ArchSpec, SpecError, default_res_scale
from explorer.measure import compare as cmp
from explorer.measure import profile as prof
from explorer.measure import units
from explorer.measure.analytic import analytic_cost
from explorer.viz.diagram import network_svg
from tests.conftest import TWO_STAGE


def tiny(**changes) -> dict:
    """A 2-stage spec at 32x32 (stem /4 -> 8x8, then 4x4): builds in milliseconds."""
    d = {**copy.deepcopy(TWO_STAGE), **changes}
    return ArchSpec.from_dict(d).to_dict()


def form_of(spec: dict):
    values, n, rows = spec_form.spec_to_form(spec)
    return values, n, rows


# ---- presets ------------------------------------------------------------------------------------------
def test_list_presets_has_every_preset_grouped_by_family():
    rows = catalog.list_presets()
    assert sorted(r['name'] for r in rows) == preset_names()
    families = [r['family'].lower() for r in rows]
    assert families == sorted(families)  # grouped: one family's presets are adjacent
    caf = next(r for r in rows if r['name'] == 'caformer_s18')
    assert (caf['top1'], caf['params_m'], caf['gmacs']) == (83.6, 26, 4.1)
    assert 'sail-sg/metaformer' in caf['source']
    labels = {v: k for k, v in catalog.preset_choices()}
    assert labels['caformer_s18'] == 'CAFormer › CAFormer-S18 (caformer_s18) · 83.6%'


def test_get_preset_unknown_name_is_a_spec_error():
    with pytest.raises(SpecError) as e:
        catalog.get_preset('caformer_s99')
    assert e.value.errors[0][0] == 'preset' and 'caformer_s18' in str(e.value)


def test_scratch_spec_is_valid_and_unpublished():
    s = catalog.parse_spec(catalog.scratch_spec())
    assert [st.mixer for st in s.stages] == ['pooling'] * 4 and s.meta == {}
    assert catalog.matching_preset(s) is None


# ---- the form <-> spec mapping --------------------------------------------------------------------------
def test_option_slots_cover_every_mixer_argument_from_the_registry():
    slot_names = {name for _, name, _ in spec_form.option_slots()}
    assert slot_names == {a for m in MIXERS.values() for a in m.args}
    for mixer, info in MIXERS.items():
        keys = spec_form.slots_for(mixer)
        assert len(keys) == len(info.args)
    assert spec_form.slots_for('attention') == ['head_dim', 'qkv_bias', 'proj_bias']
    assert spec_form.slots_for('identity') == [] and spec_form.slots_for('nonsense') == []


@pytest.mark.parametrize('name', preset_names())
def test_form_round_trip_gives_back_the_preset(name):
    preset = catalog.get_preset(name)
    values, n, rows = form_of(preset)
    assert n == len(preset['stages']) and len(rows) == 6
    raw = spec_form.form_to_spec(preset, values, n, rows)
    expected = dict(preset)
    expected.pop('meta')
    assert raw == expected
    assert catalog.matching_preset(raw) == name


def test_form_change_drops_published_figures_and_keeps_options():
    preset = catalog.get_preset('caformer_s18')
    values, n, rows = form_of(preset)
    rows[2]['mixer'] = 'pooling'
    rows[2]['options']['pool_size'] = 5
    rows[1]['options']['kernel_size'] = 7  # the registry default: not written into mixer_args
    raw = spec_form.form_to_spec(preset, values, n, rows)
    assert raw['stages'][2]['mixer'] == 'pooling' and raw['stages'][2]['mixer_args'] == {'pool_size': 5}
    assert raw['stages'][1]['mixer_args'] == {}
    spec = catalog.with_published_meta(catalog.parse_spec(raw))
    assert spec.meta == {} and catalog.matching_preset(spec) is None
    # the same form set back to the preset's values recognises the preset again
    rows[2]['mixer'] = 'attention'
    again = catalog.with_published_meta(catalog.parse_spec(spec_form.form_to_spec(preset, values, n, rows)))
    assert again.meta['top1'] == 83.6


def test_form_numbers_arrive_as_floats_and_are_cleaned():
    preset = catalog.get_preset('poolformer_s12')
    values, n, rows = form_of(preset)
    values['img_size'] = 224.0
    rows[0]['mlp_ratio'] = 4.0
    rows[0]['depth'] = 2.0
    raw = spec_form.form_to_spec(preset, values, n, rows)
    assert raw['img_size'] == 224 and isinstance(raw['img_size'], int)
    assert raw['stages'][0]['mlp_ratio'] == 4 and isinstance(raw['stages'][0]['depth'], int)


def test_invalid_form_names_the_field():
    preset = catalog.get_preset('caformer_s18')
    values, n, rows = form_of(preset)
    rows[2]['dim'] = 321  # attention, head_dim 32
    with pytest.raises(SpecError) as e:
        catalog.parse_spec(spec_form.form_to_spec(preset, values, n, rows))
    assert e.value.errors == [('stages[2].dim', '321 is not divisible by head_dim 32 (attention)')]
    rows[2]['dim'] = None  # an emptied number box
    assert catalog.validate(spec_form.form_to_spec(preset, values, n, rows))[0][0] == 'stages[2].dim'


def test_add_and_remove_stages_keep_per_stage_lists_consistent():
    d = tiny()
    assert d['res_scale_init'] == default_res_scale(2) == [None, 1.0]
    d3 = spec_form.add_stage(d)
    assert [s['dim'] for s in d3['stages']] == [16, 32, 64] and d3['stages'][2]['mixer'] == 'attention'
    assert d3['res_scale_init'] == default_res_scale(3) == [None, None, 1.0]  # the default rule follows
    catalog.parse_spec(d3)
    custom = tiny(layer_scale_init=[1e-5, 1e-6], res_scale_init=[0.5, 2.0])
    c3 = spec_form.add_stage(custom)
    assert c3['layer_scale_init'] == [1e-5, 1e-6, 1e-6] and c3['res_scale_init'] == [0.5, 2.0, 2.0]
    c1 = spec_form.remove_stage(c3, 0)
    assert c1['layer_scale_init'] == [1e-6, 1e-6] and c1['res_scale_init'] == [2.0, 2.0]
    assert c1['stages'][0]['downsample'] is True  # the new first stage always follows the stem
    catalog.parse_spec(c1)
    with pytest.raises(SpecError):
        spec_form.remove_stage(spec_form.remove_stage(d, 1), 0)
    full = d
    for _ in range(4):
        full = spec_form.add_stage(full)
    assert len(full['stages']) == 6
    with pytest.raises(SpecError, match='at most 6'):
        spec_form.add_stage(full)


# ---- cost -----------------------------------------------------------------------------------------------
def test_profile_is_the_analytic_counter_plus_the_matching_preset():
    spec = catalog.get_preset('caformer_s18')
    out = prof.profile(spec)
    ref = analytic_cost(ArchSpec.from_dict(spec))
    assert (out['params'], out['macs']) == (ref.params, ref.macs)
    assert out['params'] == 26_341_656  # timm's caformer_s18, published 26M
    assert out['preset'] == 'caformer_s18'
    assert prof.profile('caformer_s18')['macs'] == ref.macs  # a preset name works too
    assert prof.profile(json.dumps(spec))['macs'] == ref.macs  # and JSON text


def test_pooling_in_stage_3_changes_macs_by_the_mixer_difference():
    spec = catalog.get_preset('caformer_s18')
    pooled = json.loads(json.dumps(spec))
    pooled['stages'][2]['mixer'] = 'pooling'
    a, b = prof.profile(spec), prof.profile(pooled)
    d = cmp.diff(spec, pooled)
    assert d['total']['d_macs'] == b['macs'] - a['macs'] < 0
    assert [r['d_macs'] for r in d['rows'][:2] + d['rows'][3:]] == [0, 0, 0, 0]  # only stage 3 changes
    assert d['rows'][2]['d_macs'] == d['total']['d_macs']
    assert d['rows'][2]['d_params'] == b['stages'][2]['params'] - a['stages'][2]['params']


def test_verify_agrees_with_analytic_and_is_cached():
    spec = tiny()
    v = prof.verify(spec)
    a = prof.profile(spec)
    assert (v['params'], v['macs']) == (a['params'], a['macs'])
    info = prof._verified.cache_info()
    prof.verify(dict(spec, meta={'notes': 'metadata does not change the network'}))
    assert prof._verified.cache_info().hits == info.hits + 1


def test_stage_rows_give_output_shapes_and_tokens():
    spec = catalog.get_preset('caformer_s18')
    rows = compose.stage_rows(spec, prof.profile(spec))
    assert [(r[4], r[5], r[6]) for r in rows] == [
        ('56×56', 3136, '64×56×56'),
        ('28×28', 784, '128×28×28'),
        ('14×14', 196, '320×14×14'),
        ('7×7', 49, '512×7×7'),
    ]


def test_fmt_count():
    assert units.fmt_count(26_341_656) == '26.3M'
    assert units.fmt_count(4_125_000_000) == '4.12G'
    assert units.fmt_count(815) == '815'
    assert units.fmt_count(123_456_789_000) == '123G'
    assert units.fmt_bytes(3 * 2**20) == '3 MiB'


# ---- share ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', preset_names())
def test_share_token_round_trip_restores_the_network_and_its_figures(name):
    spec = catalog.get_preset(name)
    token = share.encode_share(spec)
    assert set(token) <= set('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_')
    back = share.decode_share(token)
    assert back == spec  # metadata comes back because the network is the preset's
    assert len(token) < 1000


def test_share_token_of_custom_spec_and_bad_tokens():
    spec = tiny()
    back = share.decode_share(share.encode_share(spec))
    assert back == spec and back['meta'] == {}
    for bad in ('', '!!!', 'x' * 30_000, 'bm90IGpzb24'):  # the last is base64 of 'not json'
        with pytest.raises(SpecError) as e:
            share.decode_share(bad)
        assert e.value.errors[0][0] in ('spec', '')
    token = base64.urlsafe_b64encode(b'{"stages": [{"mixer": "attention", "depth": 1, "dim": 33}]}').decode()
    with pytest.raises(SpecError) as e:
        share.decode_share(token)
    assert e.value.errors[0][0] == 'stages[0].dim'


def test_compact_spec_drops_defaults_only():
    c = share.compact_spec(catalog.get_preset('caformer_s18'))
    assert c == {
        'name': 'caformer_s18',
        'stages': [
            {'mixer': 'sepconv', 'depth': 3, 'dim': 64},
            {'mixer': 'sepconv', 'depth': 3, 'dim': 128},
            {'mixer': 'attention', 'depth': 9, 'dim': 320},
            {'mixer': 'attention', 'depth': 3, 'dim': 512},
        ],
    }
    c = share.compact_spec(tiny(mlp_act='gelu'))
    assert c['mlp_act'] == 'gelu' and c['stages'][1]['mixer_args'] == {'head_dim': 16}


def test_python_snippet_rebuilds_the_model():
    spec = tiny()
    code = share.python_snippet(spec)
    scope = {}
    exec(code, scope)  # noqa: S102 - our own generated code
    model = scope['model']
    assert sum(p.numel() for p in model.parameters()) == prof.profile(spec)['params']
    assert 'load_spec' in share.python_snippet('poolformer_s12')  # a preset's snippet says which preset it is


def test_load_json_text_errors_name_the_field():
    with pytest.raises(SpecError, match='not valid JSON'):
        share.load_json_text('{"stages": ')
    with pytest.raises(SpecError) as e:
        share.load_json_text('{"stages": [{"mixer": "pooling", "depth": 0, "dim": 8}]}')
    assert e.value.errors[0][0] == 'stages[0].depth'


# ---- compare ---------------------------------------------------------------------------------------------
def test_pareto_front_by_hand():
    pts = [
        {'x': 1, 'top1': 70},
        {'x': 2, 'top1': 75},
        {'x': 3, 'top1': 74},
        {'x': 4, 'top1': 80},
        {'x': 2, 'top1': 72},
        {'x': 5, 'top1': None},
        {'x': None, 'top1': 90},
    ]
    assert cmp.pareto_front(pts, 'x') == [0, 1, 3]
    assert cmp.pareto_front(pts, 'x', lower_x_better=False) == [3]
    assert cmp.pareto_front([], 'x') == []


def test_preset_points_and_frontier():
    points = cmp.preset_points({'poolformer_s12': 25.0})
    assert len(points) == len(preset_names())
    by = {p['name']: p for p in points}
    assert by['caformer_s18']['x_params_m'] == pytest.approx(26.341656)
    assert by['poolformer_s12']['x_throughput'] == 25.0 and by['caformer_s18']['x_throughput'] is None
    front = [points[i]['name'] for i in cmp.pareto_front(points, 'x_gmacs')]
    tops = [by[n]['top1'] for n in front]
    assert tops == sorted(tops) and 'caformer_b36' in front  # the most accurate preset is always on it
    best = max(p['top1'] for p in points if p['top1'] is not None)
    assert by[front[-1]]['top1'] == best


def test_diff_with_different_stage_counts():
    a, b = tiny(), spec_form.add_stage(tiny())
    d = cmp.diff(a, b)
    assert [r['stage'] for r in d['rows']] == [1, 2, 3, 'stem+head']
    assert d['rows'][2]['mixer_a'] == '—' and d['rows'][2]['params_a'] == 0
    assert sum(r['d_params'] for r in d['rows']) == d['total']['d_params']
    assert sum(r['d_macs'] for r in d['rows']) == d['total']['d_macs']
    same = cmp.diff(a, a)
    assert all(r['d_params'] == 0 == r['d_macs'] for r in same['rows'])


def test_scaling_skips_sizes_a_spec_cannot_take():
    curves = cmp.scaling({'t': tiny()}, [32, 40, 64, 48, 40])  # total stride 8 divides all of these
    sizes = [r['img_size'] for r in curves['t']]
    assert sizes == [32, 40, 48, 64]
    assert curves['t'][0]['macs'] == analytic_cost(ArchSpec.from_dict(tiny())).macs
    macs = [r['macs'] for r in curves['t']]
    assert macs == sorted(macs)
    odd = cmp.scaling({'t': tiny()}, [36, 30])  # not multiples of 8
    assert odd['t'] == []


# ---- pictures -------------------------------------------------------------------------------------------
def test_diagram_shows_stages_tokens_and_widths():
    svg = network_svg(ArchSpec.from_dict(catalog.get_preset('caformer_s18')))
    assert svg.startswith('<svg') and svg.endswith('</svg>')
    for text in (
        'stage 1',
        'sepconv ×3',
        '64 ch',
        '56×56 = 3,136 tokens',
        'attention ×9',
        '7×7 = 49 tokens',
        '1000 classes',
    ):
        assert text in svg
    evil = network_svg(ArchSpec.from_dict(tiny(name='<script>x</script>')))
    assert '<script>' not in evil


def test_stage_chart_bars_add_up_to_the_totals():
    """The composer's cost chart (SVG): per panel, the drawn segments' values add up to the report's totals, each
    stage's token-mixer segment is the report's, and the markup is escaped."""
    import re

    from explorer.viz.costchart import nice_step, stage_cost_svg

    report = prof.profile('caformer_s18')
    svg = stage_cost_svg(report)
    for key, scale in (('params', 1e6), ('macs', 1e9)):
        values = [float(v) for v in re.findall(rf'data-panel="{key}" data-part="[^"]+" data-value="([^"]+)"', svg)]
        assert math.isclose(sum(values) * scale, report[key], rel_tol=1e-9)
        mixer = re.findall(rf'data-panel="{key}" data-part="token mixer" data-value="([^"]+)"', svg)
        assert [float(v) * scale for v in mixer] == pytest.approx([s[f'token_mixer_{key}'] for s in report['stages']])
    assert '<title>S3 attention: token mixer' in svg
    assert svg.startswith('<svg') and svg.endswith('</svg>') and '<script' not in svg
    assert [nice_step(v) for v in (8.0, 1.0, 0.3, 26.3)] == [2, 0.25, 0.1, 10]


def test_bench_and_verify_are_guarded_before_building(monkeypatch):
    import explorer.core.build
    import explorer.measure.fvcore_count
    from explorer.measure.guard import ResourceError

    def must_not_run(*args, **kwargs):
        raise AssertionError('built a model before the guard refused')

    monkeypatch.setattr(explorer.core.build, 'build_model', must_not_run)
    monkeypatch.setattr(explorer.measure.fvcore_count, 'build_for_counting', must_not_run)
    with pytest.raises(ResourceError, match='batch_size: 512 is not allowed; allowed 1 to 256'):
        prof.bench('caformer_b36', batch_size=512)
    monkeypatch.setenv('EXPLORER_MAX_PARAMS_M', '50')
    with pytest.raises(ResourceError, match=r'params: 98\.8 M parameters is over the limit of 50 M'):
        prof.verify('caformer_b36')


def test_add_stage_keeps_the_default_design_valid():
    """The default preset at 224 is already at stride 32: another downsampling stage would not divide the input,
    so the new stage keeps the grid and width (it used to make the design invalid at once)."""
    caf = catalog.get_preset(catalog.DEFAULT_PRESET)
    five = ArchSpec.from_dict(spec_form.add_stage(caf))  # valid: no SpecError
    assert five.num_stages == 5 and five.stages[4].downsample is False and five.stages[4].dim == 512
    roomy = {**caf, 'img_size': 448}  # 448 / 64 = 7: room for one more stride 2
    six = ArchSpec.from_dict(spec_form.add_stage(roomy))
    assert six.stages[4].downsample is True and six.stages[4].dim == 1024


def test_trained_model_texts_read_as_a_person_writes():
    from explorer.app import predict as up

    assert [up._epochs(v) for v in (30.002, 2.3, 1, None)] == ['30 epochs', '2.3 epochs', '1 epoch', 'epochs unknown']
    first = up.default_choice()
    second = up.second_choice(first)
    assert second != first and second.startswith(up.TRAINED)  # both work offline


def test_speed_rows_say_what_their_memory_is_and_warn_when_the_cpu_was_busy():
    from explorer.app.panels import history_cells

    row = {
        'name': 'x',
        'throughput': 1084.26,
        'latency_ms_median': 3421.5,
        'latency_ms_p10': 1080.0,
        'latency_ms_p90': 3420.0,
        'peak_mem_bytes': 30 * 2**20,
        'peak_fraction': 0.1,
        'stamp': {'device': 'cpu', 'cpu_count': 2, 'loadavg_before': [3.1, 2, 2], 'loadavg_after': [2.5, 2, 2]},
    }
    cells = history_cells(0, row)
    assert cells[7] == '1,084.3' and cells[8] == '3,421.5 (1,080.0–3,420.0)'  # never 1.08e+03
    assert cells[9] == '30 MiB CPU RSS growth'
    assert 'busy CPU: load 3.1 on 2 cores' in cells[11]
    quiet = {**row, 'stamp': {**row['stamp'], 'device': 'cuda:0', 'loadavg_before': [0.5], 'loadavg_after': [0.4]}}
    cells = history_cells(0, quiet)
    assert cells[9] == '30 MiB CUDA peak allocated' and 'busy' not in cells[11]


def test_speed_rows_show_the_compile_time_and_a_reused_compiled_model():
    from explorer.app.panels import compile_cell

    assert compile_cell({'compile': False}) == 'no'
    assert compile_cell({'compile': True, 'compile_s': 21.24, 'compile_cache': 'compiled afresh'}) == 'yes, 21.2 s'
    hit = {'compile': True, 'compile_s': 4.0, 'compile_cache': 'inductor FX graph cache: 1 hit(s)'}
    assert compile_cell(hit) == 'yes, 4.0 s (cache hit)'
    reused = {'compile': True, 'compile_s': 0.05, 'compile_cache': 'compiled model reused (this process)'}
    assert compile_cell(reused) == 'yes (reused)'


def test_an_uploaded_spec_that_is_gone_or_a_folder_is_named_not_a_generic_error(tmp_path):
    """A raw request can name a cache path that was swept or is a folder: FileNotFoundError and IsADirectoryError
    reached Gradio as its generic "Error" (found by a red-team pass)."""
    import gradio as gr

    from explorer.app.context import read_uploaded_spec

    for path in (tmp_path / 'gone.json', tmp_path):
        with pytest.raises(gr.Error, match='uploaded spec: the file cannot be read'):
            read_uploaded_spec(str(path))


def test_an_uploaded_specs_problems_read_on_one_line_named_as_the_form_names_them(tmp_path):
    """A review: an upload with two problems showed "... cross_patch, cycle stages[0].depth: 0 is out of range"
    in the toast, which shows HTML: the error's lines ran together. They are joined with '; ' and each field is
    named as the form names it (S1 depth)."""
    import gradio as gr

    from explorer.app.context import read_uploaded_spec

    path = tmp_path / 'bad.json'
    path.write_text('{"stages": [{"mixer": "warp", "depth": 0, "dim": 64}]}')
    with pytest.raises(gr.Error) as e:
        read_uploaded_spec(str(path))
    message = e.value.message
    assert message.startswith('uploaded spec: S1 token mixer: ') and '; S1 depth: 0 is out of range' in message, message
    assert '\n' not in message


def test_the_red_summary_names_fields_as_the_form_labels_them():
    """A review: a field said "MLP ratio 100 is out of range" and the summary above the form "S1 mlp_ratio: ...";
    likewise "S3 mixer_args.head_dim" for the "head dim" field and "img_size" for "image size"."""
    from explorer.app.context import error_text

    e = SpecError(
        [('stages[0].mlp_ratio', 'x'), ('stages[2].mixer_args.head_dim', 'y'), ('img_size', 'z'), ('stem.stride', 'w')]
    )
    text = error_text(e)
    for label in ('S1 MLP ratio', 'S3 head dim', 'image size', 'stem.stride'):  # the stem has no field
        assert f'<code>{label}</code>' in text, text


def test_a_training_request_names_a_spec_string_that_is_neither_json_nor_a_preset():
    """/train with spec 'fmnist_hybrid' answered "not valid JSON", naming neither the field nor the presets."""
    import gradio as gr

    from explorer.app.train import training_request

    with pytest.raises(gr.Error, match="preset: 'fmnist_hybrid' is not a preset; choose from caformer_b36"):
        training_request('fmnist_hybrid')
    with pytest.raises(gr.Error, match='Fashion-MNIST images are grayscale'):  # a preset: read, then not trainable
        training_request('poolformer_s12')


def test_an_endpoints_bad_value_is_titled_as_a_bad_request_not_a_bare_error():
    from explorer.app.context import endpoint
    from explorer.app.panels import api_scaling

    with pytest.raises(Exception) as e:
        endpoint(api_scaling)(catalog.get_preset('poolformer_s12'), [10**9])
    assert e.value.title == 'Invalid request' and 'sizes[0]' in str(e.value)


def test_the_same_network_written_differently_keeps_its_presets_figures():
    """1 vs 1.0, a scale once vs per stage, and a training-only drop rate made a spec a different network from its
    preset (a review found each): its published top-1, params and GMACs were dropped from the page and share links."""
    conv, pool = catalog.get_preset('convformer_s18'), catalog.get_preset('poolformer_s12')
    variants = [
        ('convformer_s18', {**conv, 'res_scale_init': [None, None, 1, 1]}),
        ('convformer_s18', {**conv, 'stages': [{**s, 'mixer_args': {'expansion_ratio': 2.0}} for s in conv['stages']]}),  # noqa: E501
        ('poolformer_s12', {**pool, 'layer_scale_init': [1e-5] * 4}),
        ('poolformer_s12', {**pool, 'res_scale_init': [None] * 4}),
        ('poolformer_s12', {**pool, 'drop_path_rate': 0.1}),
    ]
    for name, d in variants:
        assert catalog.matching_preset(d) == name, d
        published = catalog.get_preset(name)['meta']
        assert catalog.with_published_meta(ArchSpec.from_dict({**d, 'meta': {}})).meta == published
    # a real change still loses them
    assert catalog.matching_preset({**pool, 'layer_scale_init': [1e-5, 1e-5, 1e-5, 1e-6]}) is None
    wider = [{**s, 'mixer_args': {'expansion_ratio': 3}} for s in conv['stages']]
    assert catalog.matching_preset({**conv, 'stages': wider}) is None


def test_add_stage_does_not_copy_a_hidden_position_embedding():
    """The form shows no pos_embed field: a stage added after the PoolFormer hybrid's attention stage carried a
    hidden 640 x 7 x 7 embedding (31,360 parameters, tied to img_size) that nothing on the page showed."""
    three = spec_form.remove_stage(catalog.get_preset('poolformer_hybrid_ppaa_s12'), 3)
    four = spec_form.add_stage(three)
    assert [s.get('pos_embed', False) for s in four['stages']] == [False, False, True, False]


def test_errors_name_a_value_clipped_and_at_most_fifty_fields():
    """A mixer argument echoed its whole value (10**4299: a 4,378-character message), and /validate answered a
    249 k request with 19,990 errors (3.8 MB)."""
    big = {'mixer': 'pooling', 'depth': 1, 'dim': 8, 'mixer_args': {'pool_size': 10**4299}}
    with pytest.raises(SpecError) as info:
        ArchSpec.from_dict({**TWO_STAGE, 'stages': [big] * 6})
    assert len(str(info.value)) < 1_500 and '(4,300 characters)' in str(info.value)
    heads = {'mixer': 'attention', 'depth': 1, 'dim': 8, 'mixer_args': {'head_dim': 10**4299}}
    with pytest.raises(SpecError) as info:
        ArchSpec.from_dict({**TWO_STAGE, 'stages': [heads]})
    assert len(str(info.value)) < 500, len(str(info.value))
    errors = catalog.validate(json.dumps({**TWO_STAGE, 'meta': {f'k{i}': 1 for i in range(19_900)}}))
    assert len(errors) == 51 and errors[-1] == ['', '… and 19,850 more errors']
    import pickle  # a helper process raises it back to the server; /compare_points re-raises it with paths

    with pytest.raises(SpecError) as info:
        ArchSpec.from_dict({**TWO_STAGE, 'meta': {f'k{i}': 1 for i in range(180)}})
    back = pickle.loads(pickle.dumps(info.value))
    assert back.errors == info.value.errors and back.errors[-1] == ('', '… and 130 more errors')
    with pytest.raises(SpecError) as wrapped:
        panels.api_compare_points('MACs', [{**TWO_STAGE, 'meta': {f'k{i}': 1 for i in range(180)}}])
    assert wrapped.value.errors[-1] == ('', '… and 130 more errors') and len(wrapped.value.errors) == 51
