"""The Train tab's runs table, its overlaid curves, the live run and "Use in Predict" (explorer.app.train,
explorer.viz.training): handlers tested without a server, on small checkpoints written for the test."""

from __future__ import annotations

import os
import time
from pathlib import Path

import gradio as gr
import pytest

from tests.conftest import TINY

# two runs' recorded per-epoch curves (as explorer.train.loop writes them) and their final metrics
HISTORY_A = [
    {'epoch': 1.0, 'step': 10, 'train_loss': 2.1, 'train_time': 1.0, 'test_accuracy': 0.31, 'test_loss': 1.9},
    {'epoch': 2.0, 'step': 20, 'train_loss': 1.7, 'train_time': 2.0, 'test_accuracy': 0.42, 'test_loss': 1.6},
    {'epoch': 3.0, 'step': 30, 'train_loss': 1.5, 'train_time': 3.0, 'test_accuracy': 0.47, 'test_loss': 1.4},
]
HISTORY_B = [
    {'epoch': 1.0, 'step': 10, 'train_loss': 2.2, 'train_time': 1.0, 'test_accuracy': 0.25, 'test_loss': 2.0},
    {'epoch': 2.0, 'step': 20, 'train_loss': 1.9, 'train_time': 2.0, 'test_accuracy': 0.36, 'test_loss': 1.7},
]


def write_run(folder: Path, name: str, history: list[dict], params: int, mtime: float) -> Path:
    """A real Fashion-MNIST checkpoint of the TINY spec in `folder`, whose metrics say `params` and the last
    history row, dated `mtime`."""
    from explorer.core.build import build_model
    from explorer.core.spec import ArchSpec
    from explorer.train.checkpoints import save_checkpoint
    from explorer.train.data import Preprocessing

    spec = ArchSpec.from_dict({**TINY, 'name': name})
    last = history[-1]
    metrics = {
        'test_accuracy': last['test_accuracy'],
        'test_loss': last['test_loss'],
        'epochs': last['epoch'],
        'params': params,
        'dataset': 'fashion-mnist',
    }
    path = Path(
        save_checkpoint(folder / f'{name}.safetensors', build_model(spec), spec, Preprocessing(), metrics, history)
    )
    os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    """The runs folder (checkpoints.USER_DIR) with an older run A (1,080,738 params) and a newer run B (2,458)."""
    from explorer.train import checkpoints

    monkeypatch.setattr(checkpoints, 'USER_DIR', tmp_path)
    now = time.time()
    write_run(tmp_path, 'run_a', HISTORY_A, 1_080_738, now - 3600)
    write_run(tmp_path, 'run_b', HISTORY_B, 2_458, now - 60)
    return tmp_path


def test_runs_rows_are_newest_first_in_plain_units_without_paths(runs_dir):
    from explorer.app.train import RUN_HEADERS, runs_rows, trained_runs

    runs = trained_runs()
    rows = runs_rows(runs)
    mine = [r for r in rows if r[-1] == 'trained here']
    assert [r[1] for r in mine] == ['run_b', 'run_a']  # newest first
    assert rows[:2] == mine  # the user's runs above the shipped ones
    b, a = mine
    assert a[RUN_HEADERS.index('params')] == '1.08 M' and b[RUN_HEADERS.index('params')] == '2.46 k'
    assert a[RUN_HEADERS.index('test acc.')] == '47.00 %' and b[RUN_HEADERS.index('epochs')] == '2'
    assert a[2] == 'pooling ×1 (8) → sepconv ×1 (16), 32 px'
    assert a[RUN_HEADERS.index('trained')] == time.strftime('%Y-%m-%d %H:%M', time.localtime(runs[1]['time']))
    assert [r[0] for r in rows] == [True] + [False] * (len(rows) - 1)  # the newest run is ticked at first
    for row in rows:
        text = ' '.join(map(str, row))
        assert '/' not in text and str(runs_dir) not in text and 'safetensors' not in text
    assert runs_rows(runs, ['run_a'])[1][0] is True and runs_rows(runs, ['run_a'])[0][0] is False


def test_plain_units_and_epochs():
    from explorer.app.train import epochs_text, plain_count

    assert [plain_count(n) for n in (1_080_738, 429_766, 2_458, 980, None)] == ['1.08 M', '430 k', '2.46 k', '980', '—']
    assert [epochs_text(n) for n in (30.002, 2.295, 1.0, 0.05, None)] == ['30', '2.3', '1', '0.05', '—']


def test_overlay_has_one_trace_per_run_per_metric_equal_to_the_recorded_curves(runs_dir):
    from explorer.app.train import overlay_figure, shown_names, trained_runs
    from explorer.viz.training import RUN_METRICS

    runs = trained_runs()
    table = [[True, 'run_b', '', '', '', '', '', ''], [True, 'run_a', '', '', '', '', '', ''], [False, 'x']]
    assert shown_names(table) == ['run_b', 'run_a']
    fig = overlay_figure(runs, shown_names(table))
    assert len(fig.data) == 2 * len(RUN_METRICS) == 6
    for name, history in (('run_a', HISTORY_A), ('run_b', HISTORY_B)):
        traces = {t.meta: t for t in fig.data if t.name == name}
        assert set(traces) == {'test_accuracy', 'test_loss', 'train_loss'}
        for key, scale in (('test_accuracy', 100), ('test_loss', 1), ('train_loss', 1)):
            assert list(traces[key].x) == [r['epoch'] for r in history]
            assert list(traces[key].y) == pytest.approx([scale * r[key] for r in history])
    # one legend entry per run; each run has its own colour on all its traces
    assert sorted(t.name for t in fig.data if t.showlegend) == ['run_a', 'run_b']
    colours = [{t.line.color for t in fig.data if t.name == name} for name in ('run_a', 'run_b')]
    assert [len(c) for c in colours] == [1, 1] and colours[0] != colours[1]
    assert len(overlay_figure(runs, []).data) == 0


def test_a_run_stopped_mid_epoch_ends_at_its_final_evaluation():
    from explorer.viz.training import run_curve

    history = [{'epoch': 1.0, 'train_loss': 1.0, 'test_accuracy': 0.5, 'test_loss': 1.2}]
    x, y = run_curve(history, {'epochs': 1.4, 'test_accuracy': 0.6, 'test_loss': 1.1}, 'test_accuracy')
    assert x == [1.0, 1.4] and y == pytest.approx([50, 60])
    assert run_curve(history, {'epochs': 1.4, 'test_loss': 1.1}, 'train_loss') == ([1.0], [1.0])


def test_the_run_in_progress_is_drawn_live_and_ends_in_the_table(runs_dir):
    from explorer.app.train import LIVE, overlay_figure, runs_view, tracked, trained_runs

    v0, f0, live = LIVE.snapshot()
    assert live is None

    def events():
        yield {'kind': 'step', 'step': 1, 'total_steps': 20, 'epoch': 0.1, 'loss': 2.3}
        yield {'kind': 'epoch', 'epoch': 1.0, 'train_loss': 2.0, 'test_accuracy': 0.3, 'test_loss': 1.8}
        yield {'kind': 'epoch', 'epoch': 2.0, 'train_loss': 1.6, 'test_accuracy': 0.4, 'test_loss': 1.5}

    seen = []
    for _ev in tracked(events(), 'rid-1', 'my<b>net'):
        version, finished, live = LIVE.snapshot()
        seen.append((version, len(live['history'])))
        fig = overlay_figure(trained_runs(), ['run_a'], live)
        live_acc = [t for t in fig.data if t.name == 'my&lt;b&gt;net (training)' and t.meta == 'test_accuracy']
        assert len(live_acc) == 1 and live_acc[0].line.dash == 'dash'
        assert list(live_acc[0].y) == pytest.approx([100 * r['test_accuracy'] for r in live['history']])
    assert [n for _, n in seen] == [0, 1, 2]  # the curve grows as epochs finish
    assert seen[0][0] < seen[1][0] < seen[2][0]
    version, finished, live = LIVE.snapshot()
    assert live is None and finished == f0 + 1 and version > seen[-1][0]
    # another run's events do not touch the record of the run in progress
    LIVE.event('rid-2', 'a', {'kind': 'step'})
    LIVE.event('rid-3', 'b', {'kind': 'error', 'message': 'busy'})
    LIVE.end('rid-3')
    assert LIVE.snapshot()[2]['name'] == 'a'
    LIVE.end('rid-2')
    rows, fig, pick = runs_view(['run_a'])
    assert [r[1] for r in rows if r[0]] == ['run_a'] and pick['value'] == 'run_a'
    assert pick['choices'][:2] == ['run_b', 'run_a']


def test_use_in_predict_switches_tab_and_picks_the_run(runs_dir):
    from explorer.app.train import PREDICT_TAB, use_in_predict

    tabs, model = use_in_predict('run_a')
    assert tabs.selected == PREDICT_TAB == 'predict'
    assert model.value == 'trained: run_a'
    assert 'trained: run_a' in [c[0] for c in model.choices]
    with pytest.raises(gr.Error):
        use_in_predict('../../etc/passwd')


def test_list_runs_api_has_names_curves_and_no_paths(runs_dir):
    from explorer.app.train import api_list_runs

    runs = {r['name']: r for r in api_list_runs()}
    a = runs['run_a']
    assert a['params'] == 1_080_738 and a['test_accuracy'] == 0.47 and a['origin'] == 'trained here'
    assert [r['test_accuracy'] for r in a['history']] == [0.31, 0.42, 0.47]
    assert 'path' not in a and str(runs_dir) not in repr(runs)


def test_the_loss_axis_says_what_makes_training_loss_higher():
    """The runs chart's axis said 'dotted: training, smoothed': a researcher read curve smoothing, and training loss
    above test loss looked like a bug. It is the label-smoothed loss (0.1) on augmented images."""
    from explorer.viz.training import runs_figure

    fig = runs_figure([{'name': 'r', 'history': [{'epoch': 1, 'test_loss': 0.3, 'train_loss': 0.6}]}])
    titles = [a.text for a in fig.layout.annotations]
    assert 'loss (dotted: training, label-smoothed)' in titles and fig.layout.yaxis2.title.text.endswith(
        '(solid: test)'
    )
    # short enough for the 340 px chart: the axis title (about 45 characters) was cut at both ends (a review)
    assert len(fig.layout.yaxis2.title.text) <= 30
    hover = next(t.hovertemplate for t in fig.data if t.meta == 'train_loss')
    assert 'training loss (label-smoothed, augmented images, epoch mean)' in hover
