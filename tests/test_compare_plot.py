"""The Compare chart as data (presets by family, the designs a person made, log axis, family filter, CSV of the
plotted points, the diff list) and the Measure tab's honest speed figures (rounds and their spread, what the
memory is, a warning when the machine was busy or unsteady). The handlers are plain functions, called without a
server; the last test calls the new API through the launched app."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from explorer.app import panels
from explorer.core.catalog import get_preset, list_presets
from explorer.core.spec import ArchSpec
from explorer.measure.analytic import analytic_cost
from explorer.measure.profile import profile

FAMILIES = sorted({r['family'] for r in list_presets()})


def _custom(spec: dict, name: str) -> dict:
    """A preset changed so that no published top-1 applies (as the composer keeps it: meta emptied)."""
    return {**spec, 'name': name, 'img_size': spec['img_size'], 'meta': {}, 'stages': spec['stages'][:3]}


@pytest.fixture(scope='module')
def current():
    spec = get_preset('caformer_s18')
    return spec, profile(spec)


PINS = [
    {'name': 'pinned conv', 'spec': {**get_preset('convformer_s18'), 'name': 'pinned conv', 'meta': {}}},
    {'name': 'three stages', 'spec': _custom(get_preset('poolformer_s12'), 'three stages')},
]


def _points(fig) -> dict[str, tuple]:
    """key -> (x, y, trace name) of every point drawn (the frontier line has no points of its own)."""
    out = {}
    for t in fig.data:
        for x, y, c in zip(t.x, t.y, t.customdata if t.customdata is not None else []):
            out[c[0]] = (x, y, t.name)
    return out


def test_presets_are_labelled_by_family_with_their_details(current):
    fig = panels.accuracy_plot(*current, 'MACs', [], PINS)
    names = [t.name for t in fig.data]
    assert set(FAMILIES) <= set(names)  # one legend entry per family
    pts = _points(fig)
    for row in list_presets():  # every preset is a point of its own family's trace, x = its counted GMACs
        x, y, trace = pts[f'preset:{row["name"]}']
        assert trace == row['family']
        assert x == pytest.approx(analytic_cost(ArchSpec.from_dict(get_preset(row['name']))).macs / 1e9)
        if row['top1'] is not None:
            assert y == row['top1']
    # the hover carries name, counted params and MACs, top-1 and source
    caf = next(t for t in fig.data if t.name == 'CAFormer')
    detail = next(c for c in caf.customdata if c[0] == 'preset:caformer_s18')
    assert detail[1:5] == ['CAFormer-S18', '26.3M', '4.12G', '83.6%'] and 'sail-sg/metaformer' in detail[5]
    assert '%{customdata[5]}' in caf.hovertemplate and '%{customdata[2]} params' in caf.hovertemplate


def test_pins_and_the_current_design_are_labelled_points(current):
    fig = panels.accuracy_plot(*current, 'MACs', [], PINS)
    pinned = next(t for t in fig.data if t.name == 'pinned designs')
    assert list(pinned.text) == ['pinned conv', 'three stages']  # drawn next to the points
    assert [c[0] for c in pinned.customdata] == ['pin:0', 'pin:1']
    conv = analytic_cost(ArchSpec.from_dict(PINS[0]['spec'])).macs
    assert pinned.x[0] == pytest.approx(conv / 1e9)
    # no published top-1 for a pinned design: it sits on the 'unknown' row, named by a tick
    ticks = dict(zip(fig.layout.yaxis.ticktext, fig.layout.yaxis.tickvals))
    assert list(pinned.y) == [ticks['unknown']] * 2
    assert ticks['unknown'] < min(r['top1'] for r in list_presets() if r['top1'])
    yours = next(t for t in fig.data if t.name == 'your design')
    assert list(yours.y) == [83.6] and [c[0] for c in yours.customdata] == ['current']
    assert any(a.text == 'yours: caformer_s18' for a in fig.layout.annotations)
    # a pin whose spec does not parse is left out, never an error
    broken = PINS + [{'name': 'bad', 'spec': {'stages': 'x'}}]
    assert (
        len(next(t for t in panels.accuracy_plot(*current, 'MACs', [], broken).data if t.name == 'pinned designs').x)
        == 2
    )


def test_log_axis_is_a_toggle(current):
    assert panels.accuracy_plot(*current, 'MACs', [], [], None, log_x=True).layout.xaxis.type == 'log'
    assert panels.accuracy_plot(*current, 'params', [], [], None, log_x=False).layout.xaxis.type == 'linear'
    # the label of the current design follows the axis: annotations on a log axis take log10(x)
    fig = panels.accuracy_plot(*current, 'MACs', [], [], None, log_x=True)
    label = next(a for a in fig.layout.annotations if a.text.startswith('yours'))
    assert 10**label.x == pytest.approx(current[1]['macs'] / 1e9)


def test_the_family_filter_removes_a_family_and_its_frontier_points(current):
    kept = [f for f in FAMILIES if f != 'CAFormer']
    fig = panels.accuracy_plot(*current, 'MACs', [], PINS, kept)
    assert 'CAFormer' not in [t.name for t in fig.data]
    keys = set(_points(fig))
    assert not any(k.startswith('preset:caformer') for k in keys)
    assert {'current', 'pin:0', 'pin:1'} <= keys  # your own designs are never filtered out
    rows, front = panels.compare_rows(*current, 'MACs', [], PINS, kept)
    assert front and not any('caformer' in k for k in front)
    assert 'preset:convformer_s18' in front  # without CAFormer, ConvFormer-S18 leads at its cost
    everything, _ = panels.compare_rows(*current, 'MACs', [], PINS, None)
    assert len(everything) - len(rows) == sum(r['family'] == 'CAFormer' for r in list_presets())


def test_the_csv_holds_exactly_the_plotted_points(current):
    kept = [f for f in FAMILIES if f != 'RandFormer']
    fig, path = panels.compare_view(*current, 'params', [], PINS, kept, True, 'svg')
    data = json.loads(fig.plot)
    assert data['config']['toImageButtonOptions'] == {'format': 'svg', 'filename': 'compare-params', 'scale': 1}
    assert data['layout']['xaxis']['type'] == 'log'
    with open(path, encoding='utf-8', newline='') as f:
        table = list(csv.DictReader(f))
    assert Path(path).suffix == '.csv' and tuple(table[0]) == panels.CSV_COLUMNS
    drawn = {}
    for t in data['data']:
        for x, y, c in zip(t['x'], t['y'], t.get('customdata') or []):
            drawn[c[0]] = (x, y, c[1])
    assert {r['key'] for r in table} == set(drawn)  # the same points, no more, no fewer
    for r in table:
        x, y, name = drawn[r['key']]
        assert float(r['x']) == pytest.approx(x) and r['name'] == name
        assert r['x_measure'].startswith('parameters (millions')
        if r['top1']:
            assert float(r['top1']) == y
    assert {r['kind'] for r in table} == {'preset', 'current', 'pin'}


def test_csv_cells_are_never_formulas():
    rows = [dict(kind='pin', key='pin:0', name='=HYPERLINK("http://x")', family='pinned', x=1.0, top1=None)]
    text = panels.rows_csv(rows, 'MACs')
    assert "'=HYPERLINK" in text and '\n=' not in text and ',=' not in text


def test_any_two_designs_resolve_for_the_diff(current):
    spec, _ = current
    choices = panels.design_choices(spec, PINS)
    keys = [k for _, k in choices]
    assert keys[:3] == ['current', 'pin:0', 'pin:1'] and 'preset:poolformer_s12' in keys
    assert choices[1][0] == 'Pinned › pinned conv'
    assert panels.design_spec('pin:1', spec, PINS) == PINS[1]['spec']
    assert panels.design_spec('preset:convformer_s18#7', spec, PINS) == get_preset('convformer_s18')  # a click
    assert panels.design_spec('current', spec, PINS) is spec
    for bad in ('pin:5', 'preset:nope', '../etc/passwd', 'upload'):
        with pytest.raises(ValueError):
            panels.design_spec(bad, spec, PINS)
    html = panels.diff_html(panels.cmp.diff(get_preset('poolformer_s12'), get_preset('convformer_s18')))
    assert 'A: poolformer_s12' in html and 'B: convformer_s18' in html


def test_api_compare_points_gives_the_chart_data():
    out = panels.api_compare_points('MACs', [get_preset('poolformer_s12'), {'name': 'x', 'spec': 'convformer_s18'}])
    pins = [r for r in out['rows'] if r['kind'] == 'pin']
    assert [r['name'] for r in pins] == ['poolformer_s12', 'x'] and pins[0]['top1'] == 77.2
    assert out['csv'].count('\n') == len(out['rows']) + 1
    assert panels.api_compare_points('params', None, ['MLP'])['rows'][0]['family'] == 'MLP'
    for bad in (dict(axis='gmacs'), dict(designs='x'), dict(designs=[3]), dict(families='MLP')):
        with pytest.raises(ValueError):
            panels.api_compare_points(**{'axis': 'MACs', **bad})


# ---- the Measure tab ------------------------------------------------------------------------------------
def _row(rounds, load=(0.2, 0.2), cpu_count=2, device='cpu'):
    return {
        'name': 'x',
        'throughput': 1084.26,
        'round_throughputs': rounds,
        'latency_ms_median': 7.38,
        'latency_ms_p10': 7.1,
        'latency_ms_p90': 8.0,
        'peak_mem_bytes': 31 * 2**20,
        'peak_fraction': 0.1,
        'stamp': {'device': device, 'cpu_count': cpu_count, 'loadavg_before': [load[0]], 'loadavg_after': [load[1]]},
    }


def test_speed_rows_show_the_spread_of_their_rounds_in_plain_numbers():
    cells = panels.history_cells(0, _row([1001.2, 1084.26, 1120.0]))
    assert cells[7] == '1,084.3 (1,001.2–1,120.0, 3 rounds)'  # never 1.08e+03
    assert cells[9] == '31 MiB CPU RSS growth' and 'busy' not in cells[11] and 'rounds differ' not in cells[11]
    shaky = panels.history_cells(0, _row([500.0, 1084.26, 1120.0]))
    assert 'rounds differ 2.2×' in shaky[11]
    busy = panels.history_cells(0, _row([1001.2, 1084.26, 1120.0], load=(3.1, 2.5)))
    assert 'busy CPU: load 3.1 on 2 cores' in busy[11]
    gpu = panels.history_cells(0, _row([1084.26], device='cuda:0'))
    assert gpu[7] == '1,084.3' and gpu[9] == '31 MiB CUDA peak allocated'
    msg = panels.measure_message(_row([500.0, 1084.26, 1120.0], load=(3.1, 2.5)))
    assert '1,084.3 (500.0–1,120.0, 3 rounds) images/s' in msg and 'busy CPU' in msg and 'rounds differ' in msg
    head = panels.history_html([_row([1.0, 2.0])])
    assert 'slowest–fastest round' in head and 'CPU RSS growth' in head and 'max_memory_allocated' in head


def test_bench_times_in_rounds_and_reports_each(tiny):
    from explorer.measure.speed import BenchError, bench

    spec = ArchSpec.from_dict(tiny(depths=(1, 1, 1)))
    r = bench(spec, device='cpu', batch_size=2, warmup=1, iters=4, repeats=3)
    assert len(r.round_throughputs) == 3 and r.iters == 12 and r.stamp['rounds'] == 3
    # the pooled median lies between the rounds' medians
    assert min(r.round_throughputs) * 0.9999 <= r.throughput <= max(r.round_throughputs) * 1.0001
    assert all(v > 0 for v in r.round_throughputs)
    assert bench(spec, device='cpu', batch_size=2, warmup=1, iters=3).round_throughputs.__len__() == 1
    with pytest.raises(BenchError, match='repeats'):
        bench(spec, device='cpu', batch_size=2, iters=1, repeats=0)
    fig = panels.bench_figure([{**r.to_dict(), 'name': 'tiny'}])
    bar = fig.data[0]
    assert bar.error_y.arrayminus[0] == pytest.approx(r.throughput - min(r.round_throughputs))
    assert bar.error_y.array[0] == pytest.approx(max(r.round_throughputs) - r.throughput)
    assert ':,.4r' in bar.hovertemplate  # 12,340 images/s, never 1.234e+04


# ---- through the API ------------------------------------------------------------------------------------
def test_compare_points_and_bench_rounds_through_the_api(client, tiny):
    from gradio_client.exceptions import AppError

    out = client.predict(axis='params', designs=[tiny()], families=['CAFormer'], api_name='/compare_points')
    assert {r['family'] for r in out['rows'] if r['kind'] == 'preset'} == {'CAFormer'}
    assert [r['name'] for r in out['rows'] if r['kind'] == 'pin'] == ['tiny']
    assert out['frontier'][0] == 'preset:caformer_s18'
    for junk in ({'axis': 'gmacs'}, {'designs': [{'stages': 'x'}]}, {'designs': [7]}, {'families': 3}):
        with pytest.raises(AppError, match='axis|designs|families|stages'):
            client.predict(api_name='/compare_points', **{'axis': 'MACs', **junk})
    r = client.predict(spec=tiny(), device='cpu', batch_size=1, repeats=2, api_name='/bench')
    assert len(r['round_throughputs']) == 2 and r['stamp']['rounds'] == 2
    with pytest.raises(AppError, match='repeats'):
        client.predict(spec=tiny(), device='cpu', batch_size=1, repeats=0, api_name='/bench')


def test_the_macs_axis_does_not_claim_224_pixels_for_a_design_counted_at_its_own_size():
    """UX review: after adapting a design to 32 px, its star sat on an axis titled 'GMACs at 224²'."""
    from explorer.measure.compare import X_AXES

    title = X_AXES['gmacs']
    assert 'at 224²' not in title and 'own input size' in title and 'presets: 224²' in title


def test_a_single_point_without_a_top1_is_drawn_on_the_unknown_row():
    """One design without a published top-1 and no presets: its y was None (not drawn) on invented 0 and 1 ticks."""
    s = get_preset('poolformer_s12')
    s['stages'][0]['depth'] = 3
    s['name'] = 'poolformer_s12-mod1'
    s['meta'] = {}
    fig = panels.accuracy_plot(s, profile(s), 'MACs', [], [], families=[])
    mine = next(t for t in fig.data if t.name == 'your design')
    assert list(mine.y) == [0.0] and list(fig.layout.yaxis.ticktext) == ['unknown']


def test_compare_points_draws_a_design_by_the_name_it_is_given_and_takes_each_family_once():
    """{'name', 'spec'} designs (as the README describes them) were drawn under the spec's own name; a families
    list of 20,000 copies was checked copy by copy."""
    r = panels.api_compare_points('MACs', [{'name': 'mine', 'spec': 'caformer_s18'}], ['CAFormer'] * 20_000)
    assert [x['name'] for x in r['rows'] if x['kind'] == 'pin'] == ['mine']
    assert {x['family'] for x in r['rows'] if x['kind'] == 'preset'} == {'CAFormer'}
    with pytest.raises(ValueError, match=r'designs\[0\]\.name: .* holds control, invisible'):
        panels.api_compare_points('MACs', [{'name': 'a\u202eb', 'spec': 'caformer_s18'}])


def test_names_reach_hover_texts_as_data_never_as_template_text():
    """A design or run name was pasted into plotly's hovertemplate, where '%{y:.0f}' is a variable: a design named
    'net %{y:.0f}' showed as 'net 2'. Names go in as meta/customdata, which plotly does not fill in again."""
    from explorer.measure import compare as cmp
    from explorer.viz.plots import diff_figure, scaling_figure
    from explorer.viz.training import runs_figure

    s = get_preset('poolformer_s12')
    s['name'] = 'net %{y:.0f}<b>x</b>'
    figs = (
        scaling_figure(cmp.scaling({'yours: ' + s['name']: s}, [224])),
        diff_figure(cmp.diff('caformer_s18', s)),
        runs_figure([{'name': 'run %{x}', 'history': [{'epoch': 1, 'test_accuracy': 0.5}]}]),
    )
    for fig in figs:
        for t in fig.data:
            assert '%{y:.0f}' not in t.hovertemplate and 'run %{x}' not in t.hovertemplate, t.hovertemplate
    assert figs[0].data[0].meta == 'yours: net %{y:.0f}&lt;b&gt;x&lt;/b&gt;'
    assert list(figs[2].data[0].customdata) == ['run %{x}']


def test_an_empty_scaling_chart_says_why_and_cost_ticks_keep_digits():
    from explorer.measure import compare as cmp
    from explorer.viz.costchart import _fmt
    from explorer.viz.plots import scaling_figure

    fig = scaling_figure(cmp.scaling({'p': 'poolformer_s12'}, [100, 130]))  # neither divides by 32
    assert not fig.data and 'none of these input sizes fits' in fig.layout.annotations[0].text
    assert [_fmt(v) for v in (0, 2.5, 999, 1000, 3000)] == ['0', '2.5', '999', '1,000', '3,000']


def test_every_scaling_curve_has_its_own_line_style():
    """The scaling chart's lines took 8 colours in turn, so with the composer's design and 8 presets the ninth
    curve was drawn exactly like the first, and the composer's design looked like any preset. Every preset now
    gets its own colour and dash, and the composer's design a thick dark line no preset has."""
    from explorer.core.catalog import preset_names
    from explorer.measure import compare as cmp
    from explorer.viz.plots import scaling_figure

    specs = {'yours: mine': get_preset('poolformer_s12'), **{n: n for n in preset_names()}}
    fig = scaling_figure(cmp.scaling(specs, [224]), highlight='yours: mine')
    legend = [t for t in fig.data if t.showlegend is not False]
    styles = [(t.line.color, t.line.dash) for t in legend]
    assert len(styles) == len(specs) > 9
    assert len(set(styles)) == len(styles)
    assert legend[0].name == 'yours: mine' and legend[0].line.width == 4
    assert all(t.line.width < 4 and t.line.color != legend[0].line.color for t in legend[1:])


def test_poolformer_and_its_v2_are_told_apart_on_the_compare_chart():
    """PoolFormer-M36/M48 (82.1/82.5%) sat under PoolFormerV2's points (82.2/82.6%) in two close blues."""
    from explorer.viz.plots import FAMILY_SYMBOL, family_colour

    assert family_colour('PoolFormer') != family_colour('PoolFormerV2')
    assert FAMILY_SYMBOL.get('PoolFormerV2', 'circle') != FAMILY_SYMBOL.get('PoolFormer', 'circle')
    rows, front = panels.compare_rows(None, None, 'MACs', families=['PoolFormer', 'PoolFormerV2'])
    fig = panels.accuracy_figure(rows, 'MACs', front)
    symbols = {t.name: set(t.marker.symbol) for t in fig.data if t.name in ('PoolFormer', 'PoolFormerV2')}
    assert symbols == {'PoolFormer': {'circle'}, 'PoolFormerV2': {'square'}}


def test_two_networks_measured_under_one_name_are_told_apart():
    """The Measure table and chart showed a changed caformer_s18 and the preset under the same name; rows of one
    name and different networks now say which is the preset and tag the others with their network; a name with
    one network stays as it is."""
    from explorer.measure.profile import network_id

    changed = get_preset('caformer_s18')
    changed['stages'][0]['depth'] = 2
    a, b = network_id('caformer_s18'), network_id(changed)
    history = [
        {**_row([1.0]), 'name': 'caformer_s18', 'network': a, 'preset': 'caformer_s18'},
        {**_row([1.0]), 'name': 'caformer_s18', 'network': b, 'preset': None},
        {**_row([1.0]), 'name': 'other', 'network': b, 'preset': None},
        {**_row([1.0]), 'name': 'caformer_s18', 'network': a, 'preset': 'caformer_s18'},
    ]
    html = panels.history_html(history)
    assert html.count('caformer_s18 (the preset)') == 2 and html.count(f'caformer_s18 (network {b[:6]})') == 1
    assert '>other<' in html
    labels = list(panels.bench_figure(history).data[0].x)
    assert labels == [
        '#1 caformer_s18 (the preset)',
        f'#2 caformer_s18 (network {b[:6]})',
        '#3 other',
        '#4 caformer_s18 (the preset)',
    ]


def test_a_run_that_disagrees_with_an_earlier_run_of_the_same_network_is_flagged():
    """Three runs of one preset with the same settings gave 17.0, 22.7 and 22.3 images/s, each run's own rounds
    agreeing, and nothing said the machine had changed speed between them. The table and the line under the
    button now name the earlier run; other networks, image sizes or settings are not compared."""

    def run(thr, network='n1', img=224, batch=1):
        r = {**_row([thr, thr]), 'throughput': thr, 'network': network, 'name': 'p'}
        r['stamp'] = {**r['stamp'], 'img_size': img, 'batch_size': batch}
        return r

    history = [run(17.0), run(22.7), run(22.3), run(30.0, network='n2'), run(30.0, img=256), run(30.0, batch=8)]
    notes = [panels.history_cells(i, r, None, history[:i])[11] for i, r in enumerate(history)]
    assert 'run #' not in notes[0]
    assert 'run #1 of this network and settings gave 17 images/s (1.3× apart)' in notes[1]
    assert 'run #' not in notes[2]  # within 1.25x of run #2, the nearest earlier one
    assert all('run #' not in n for n in notes[3:])
    assert panels.history_cells(4, history[4], None, history[:4])[4] == '1 × 256²'
    unnamed = [{**r, 'network': None} for r in history[:2]] + [history[1]]
    assert panels.prof.run_names(unnamed)[0] == 'p (network unknown)'  # it read '(network unknow)'
    msg = panels.measure_message(history[1], history[:1])
    assert msg.startswith('<div class="mfx-note" id="mfx-measured">Measured: <b>p</b>') and 'run #1 of' in msg
    two = [{**history[0], 'network': 'a'}, {**history[1], 'network': 'b'}]
    assert 'Measured: <b>p (network b)</b>' in panels.measure_message(two[1], two[:1])  # as the table names it


def test_the_throughput_chart_says_which_designs_are_not_measured():
    """With four networks measured but not the composer's design, the throughput chart showed one preset and the
    caption's star was nowhere, unexplained. It now says which designs are missing and why."""
    history = [{**_row([1.0]), 'throughput': 22.0, 'network': 'x', 'preset': 'poolformer_s12'}]
    history[0]['stamp'] = {**history[0]['stamp'], 'batch_size': 1, 'dtype': 'fp32'}
    spec = get_preset('caformer_s18')
    report = {'params': 1, 'macs': 1}
    pins = [{'name': 'a', 'spec': get_preset('convformer_s18')}, {'name': 'b', 'spec': get_preset('poolformer_s24')}]
    fig = panels.accuracy_plot(spec, report, 'throughput', history, pins)
    texts = [a.text for a in fig.layout.annotations]
    assert 'Not drawn: your design and 2 pinned designs, not measured with these settings (Measure tab).' in texts
    fig = panels.accuracy_plot(spec, report, 'MACs', history, pins)
    assert not any('Not drawn' in (a.text or '') for a in fig.layout.annotations)
    # only the composer's design measured: one star, and no preset said why (a review)
    mine = [{**history[0], 'network': panels.prof.network_id(spec), 'preset': None}]
    fig = panels.accuracy_plot(spec, report, 'throughput', mine, [])
    texts = [a.text for a in fig.layout.annotations]
    expected = 'Not drawn: the presets, not measured with these settings (Measure tab, "also measure presets").'
    assert expected in texts, texts
    fig = panels.accuracy_plot(spec, report, 'throughput', mine, pins)
    texts = [a.text for a in fig.layout.annotations]
    assert 'Not drawn: the presets and 2 pinned designs, not measured with these settings (Measure tab, ' in str(texts)


def test_a_log_axis_ticks_whole_numbers():
    """On the log MACs axis plotly's own ticks read '... 8 9 10 2', the last 2 meaning 20."""
    from explorer.viz.plots import _log_ticks

    assert _log_ticks(1.8, 23.2) == [1.0, 2.0, 5.0, 10.0, 20.0, 50.0]
    assert _log_ticks(0.0036, 0.02) == [0.002, 0.005, 0.01, 0.02]
    rows, front = panels.compare_rows(None, None, 'MACs')
    fig = panels.accuracy_figure(rows, 'MACs', front, log_x=True)
    assert list(fig.layout.xaxis.ticktext) == ['1', '2', '5', '10', '20', '50'] and fig.layout.xaxis.range is None
    # two designs at 120 and 180 images/s: the only ticks, 100 and 200, are kept in view (a review)
    two = [{**rows[0], 'x': 120.0, 'key': 'a'}, {**rows[1], 'x': 180.0, 'key': 'b'}]
    fig = panels.accuracy_figure(two, 'measured throughput (images/s)', [], log_x=True, higher_x_better=True)
    assert list(fig.layout.xaxis.ticktext) == ['100', '200'] and list(fig.layout.xaxis.range) == pytest.approx(
        [2, 2.30103]
    )
    assert 'images/s: %{x' in fig.data[0].hovertemplate


def test_the_hover_names_the_x_measure():
    """The Compare chart's hover gave the x value as a bare 'x: 3.956'."""
    for axis, name in (('MACs', 'GMACs per image: '), ('params', 'parameters (M): ')):
        rows, front = panels.compare_rows(None, None, axis)
        fig = panels.accuracy_figure(rows, panels.cmp.X_AXES[panels.AXES[axis]], front)
        assert name in fig.data[0].hovertemplate and '<br>x: ' not in fig.data[0].hovertemplate
