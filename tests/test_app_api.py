"""The app's named endpoints through gradio_client, against the app launched on 127.0.0.1 (random free port)."""

from __future__ import annotations

import json

import pytest

from explorer.core.catalog import PRESET_DIR, get_preset
from explorer.core.share import encode_share
from explorer.core.spec import ArchSpec
from explorer.measure.analytic import analytic_cost
from tests.conftest import TWO_STAGE

pytest.importorskip('gradio_client')


TINY = TWO_STAGE


def test_named_endpoints_are_listed(client):
    """The public API is exactly the endpoints README.md documents: the panels', the predict tab's, /search,
    /train and /list_runs (the listing used to check the panels' only, so a predict endpoint made private, or a
    UI event made public, went unnoticed)."""
    from explorer.app import panels, predict

    names = set(client.view_api(print_info=False, return_format='dict')['named_endpoints'])
    documented = {f'/{n}' for n in [*panels.API, *predict.API, 'search', 'train', 'list_runs']}
    assert names == documented
    assert {'/list_presets', '/profile', '/predict', '/attribute', '/mixing_map', '/examples'} <= names


def test_lists_answer_through_the_server(client):
    """/list_models, /examples and /list_runs were only called as Python functions."""
    models = client.predict(api_name='/list_models')
    assert 'caformer_s18' in models and 'trained: fmnist_pooling' in models
    examples = client.predict(api_name='/examples')
    assert '00000_ankle_boot.png' in examples and all('/' not in e for e in examples)
    runs = client.predict(api_name='/list_runs')
    shipped = {r['name']: r for r in runs if r['origin'] == 'shipped'}
    assert 'fmnist_pooling' in shipped and 0 < shipped['fmnist_pooling']['test_accuracy'] < 1


def test_profile_a_preset_equals_explorer_profile(client, capsys):
    from explorer.__main__ import main

    assert main(['profile', 'caformer_s18', '--json']) == 0
    cli = json.loads(capsys.readouterr().out)
    api = client.predict(spec=get_preset('caformer_s18'), api_name='/profile')
    ref = analytic_cost(ArchSpec.from_dict(get_preset('caformer_s18')))
    assert api['params'] == ref.params == 26_341_656
    assert api['macs'] == ref.macs
    assert api['preset'] == 'caformer_s18'
    assert [s['macs'] for s in api['stages']] == [s.macs for s in ref.stages]
    assert (cli['params'], cli['macs']) == (api['params'], api['macs'])  # `explorer profile` prints the same
    by_name = client.predict(spec='caformer_s18', api_name='/profile')  # a preset name works as a spec
    assert by_name['macs'] == api['macs']


def test_invalid_spec_is_a_clean_error(client):
    from gradio_client.exceptions import AppError

    bad = json.loads(json.dumps(TINY))
    bad['stages'][1]['dim'] = 33
    with pytest.raises(AppError, match=r'stages\[1\]\.dim'):
        client.predict(spec=bad, api_name='/profile')
    assert client.predict(spec=bad, api_name='/validate') == [
        ['stages[1].dim', '33 is not divisible by head_dim 16 (attention)']
    ]
    assert client.predict(spec=TINY, api_name='/validate') == []


def test_presets_diff_share_and_verify(client):
    rows = client.predict(api_name='/list_presets')
    assert len(rows) == len(list(PRESET_DIR.glob('*.json'))) and {'name', 'family', 'top1', 'source'} <= set(rows[0])
    pooled = get_preset('caformer_s18')
    pooled['stages'][2]['mixer'] = 'pooling'
    d = client.predict(spec_a='caformer_s18', spec_b=pooled, api_name='/diff')
    a, b = (analytic_cost(ArchSpec.from_dict(s)).macs for s in (get_preset('caformer_s18'), pooled))
    assert d['total']['d_macs'] == b - a and d['rows'][2]['d_macs'] == b - a
    token = client.predict(spec=pooled, api_name='/share')
    assert token == encode_share(pooled)
    back = client.predict(token=token, api_name='/unshare')
    assert back['stages'][2]['mixer'] == 'pooling' and back['meta'] == {}
    v = client.predict(spec=TINY, api_name='/verify')
    p = client.predict(spec=TINY, api_name='/profile')
    assert (v['params'], v['macs']) == (p['params'], p['macs'])
    front = client.predict(axis='gmacs', api_name='/compare')['frontier']
    assert 'caformer_b36' in front
    assert client.predict(spec=TINY, api_name='/snippet').startswith('from explorer import ArchSpec, build_model')
    assert '16 ch' in client.predict(spec=TINY, api_name='/diagram')
    three = client.predict(spec=TINY, api_name='/add_stage')
    assert [st['dim'] for st in three['stages']] == [16, 32, 64]
    assert len(client.predict(spec=three, index=0, api_name='/remove_stage')['stages']) == 2


def _bench_row(name: str, preset: str | None, throughput: float) -> dict:
    """A bench result as explorer.measure.profile.bench returns it (fields of speed.BenchResult.to_dict())."""
    from explorer.measure.profile import network_id

    return {
        'name': name,
        'preset': preset,
        'network': network_id(get_preset(preset)) if preset else None,
        'throughput': throughput,
        'latency_ms_median': 8000 / throughput,
        'latency_ms_p10': 7000 / throughput,
        'latency_ms_p90': 9000 / throughput,
        'peak_mem_bytes': 2**27,
        'peak_fraction': 0.25,
        'stamp': {
            'device': 'cpu',
            'device_name': 'test cpu',
            'threads': 2,
            'torch': '2.x',
            'dtype': 'fp32',
            'batch_size': 8,
            'channels_last': False,
            'compile': False,
        },
    }


def test_throughput_points_are_matched_by_network_and_settings():
    """Measurements were matched to designs by name: a changed caformer_s18 that kept its name was drawn at the
    preset's speed (25 images/s, not its own 40); rows measured under other settings were mixed on one axis; and
    the frontier's steps claimed 83.6% at 300 images/s (drawn as for MACs, where lower is better)."""
    import copy

    from explorer.app.panels import accuracy_plot
    from explorer.measure.profile import network_id, profile

    mine = copy.deepcopy(get_preset('caformer_s18'))
    mine['stages'][2]['depth'] = 3  # another network, the preset's name
    own = {**_bench_row('caformer_s18', None, 40.0), 'network': network_id(mine)}
    history = [own, _bench_row('caformer_s18', 'caformer_s18', 25.0)]
    fig = accuracy_plot(mine, profile(mine), 'throughput', history)
    assert list(next(t for t in fig.data if t.name == 'your design').x) == [40.0]
    assert 'this session: cpu, batch 8, fp32' in fig.layout.xaxis.title.text
    other = _bench_row('poolformer_s12', 'poolformer_s12', 300.0)
    other['stamp'] = {**other['stamp'], 'batch_size': 64}  # the latest: only it compares with itself
    fig = accuracy_plot(mine, profile(mine), 'throughput', history + [other])
    assert sorted(x for t in fig.data if t.mode == 'markers' for x in t.x) == [300.0]
    assert 'batch 64' in fig.layout.xaxis.title.text
    fast = _bench_row('poolformer_s12', 'poolformer_s12', 300.0)
    fig = accuracy_plot(None, None, 'throughput', [_bench_row('caformer_s18', 'caformer_s18', 100.0), fast])
    frontier = next(t for t in fig.data if t.name == 'Pareto frontier')
    assert list(frontier.x) == [100.0, 300.0] and frontier.line.shape == 'vh'  # down at 100, then along


def test_throughput_scatter_and_history_table_from_measurements():
    from explorer.app.panels import accuracy_plot, history_html

    spec, report = get_preset('poolformer_s12'), None
    assert len(accuracy_plot(spec, report, 'throughput', []).data) == 0  # nothing measured: a message
    history = [_bench_row('poolformer_s12', 'poolformer_s12', 30.0), _bench_row('caformer_s18', 'caformer_s18', 9.0)]
    from explorer.measure.profile import profile

    fig = accuracy_plot(spec, profile(spec), 'throughput', history)
    xs = sorted(x for t in fig.data if t.mode == 'markers' for x in t.x)
    assert xs == [9.0, 30.0, 30.0]  # two presets plus the composer's model (it is poolformer_s12, measured)
    frontier = next(t for t in fig.data if t.name == 'Pareto frontier')
    assert list(frontier.x) == [9.0, 30.0]  # higher throughput is better: both are on the frontier
    html = history_html(history)
    assert html.count('<tr>') == 3 and '30' in html and '25.0%' in html and 'test cpu, 2 threads' in html


def test_search_takes_a_whole_number_of_trials_sent_as_a_float():
    """The review: /search refused trials=5.0 ('must be an integer') where /memory and /train take 2.0."""
    import gradio as gr

    from explorer.app.search import api_search

    out = list(api_search('metaformer_hybrid', 2.0))[-1]
    assert out['trials'] >= 2 and 'frontier' in out
    with pytest.raises(gr.Error, match=r'trials 2\.5 must be an integer'):
        list(api_search('metaformer_hybrid', 2.5))
