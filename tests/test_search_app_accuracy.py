"""The app's trained-accuracy search (Search tab and /search): each trial trains on (fake) Fashion-MNIST in a
background job with per-trial progress; Stop ends the trial in training at its next step and keeps the completed
trials; the bounds refuse before anything is loaded, naming the field; one training at a time, shared with the
Train tab. Fashion-MNIST here is the idx files of tests/conftest.py's `fake_dir` (320 training images)."""

from __future__ import annotations

import threading
import time

import pytest

from explorer.search.accuracy import precision
from explorer.search.space import SpaceError, parse_space
from explorer.search.study import open_study

from .conftest import TINY

pytestmark = pytest.mark.train


def tiny_space(name: str, **training) -> dict:
    """Two 2-stage designs of 8 or 16 channels in stage 1, trained 1 epoch on 256 images by default."""
    return {
        'name': name,
        'base': TINY,
        'stages': [
            {'mixers': ['pooling'], 'depth': [1, 1], 'dim': [8, 16]},
            {'mixers': ['sepconv'], 'depth': [1, 1], 'dim': [16]},
        ],
        'objectives': {'accuracy': 'maximize', 'gmacs': 'minimize'},
        'training': {'epochs': 1, 'train_limit': 256, 'test_limit': 100, 'batch_size': 32, **training},
    }


@pytest.fixture
def fmnist(fake_dir, tmp_path, monkeypatch):
    """The fake Fashion-MNIST found first, and this test's own study storage."""
    monkeypatch.setenv('FASHION_MNIST_DIR', str(fake_dir))
    monkeypatch.setenv('EXPLORER_SEARCH_DIR', str(tmp_path / 'studies'))
    return fake_dir


def drain(events, on_event=None) -> list[dict]:
    out = []
    for ev in events:
        out.append(ev)
        if on_event:
            on_event(ev)
    return out


def test_a_training_search_trains_every_trial_with_progress_and_the_study_holds_them(fmnist):
    from explorer.app.search import TrainingProgress, search_events, study_view

    sp = parse_space(tiny_space('acc_three'))
    events = drain(search_events(sp, 3, threading.Event()))
    assert events[-1]['kind'] == 'done', events[-1]
    trials = [e for e in events if e['kind'] == 'trial']
    assert [(e['done'], e['total']) for e in trials] == [(1, 3), (2, 3), (3, 3)]
    assert {e['state'] for e in trials} == {'COMPLETE'}  # pruning needs 3 completed trials first (min_trials)
    epochs = [e for e in events if e['kind'] == 'train' and e['accuracy'] is not None]
    assert sorted(e['number'] for e in epochs) == [0, 1, 2] and all(e['epoch'] == 1 for e in epochs)
    assert all(0 <= e['accuracy'] <= 1 for e in epochs)
    assert any(e['kind'] == 'train' and e['accuracy'] is None and 0 < e['epoch'] < 1 for e in events)  # mid-epoch

    front = events[-1]['result']['frontier']
    assert events[-1]['result']['stopped_by'] is None
    assert len(front.trials) == 3 and front.frontier
    for t in front.trials:
        assert 0 <= t['metrics']['accuracy'] <= 100  # percent
    study = open_study(sp)
    assert [t.state.name for t in study.trials] == ['COMPLETE'] * 3
    for t in study.trials:  # the study's accuracy is the one the last epoch reported
        last = [e['accuracy'] for e in epochs if e['number'] == t.number][-1]
        assert t.values[0] == pytest.approx(100 * last)

    follow = TrainingProgress(3)
    for ev in events[:-1]:
        follow.add(ev)
    text = follow.text(events[-1]['result']['stopped_by'], finished=True)
    assert text.startswith('Training search finished: 3 of 3 trials.')
    assert f'0: complete, {100 * epochs[0]["accuracy"]:.1f} %' in text
    status = study_view(sp)[-1]
    assert '3 trials' in status and 'on the frontier' in status
    assert f'Trials trained in {precision("auto")}.' in status  # bf16 on a CPU with it in hardware, else fp32


def test_stop_ends_the_trial_in_training_at_its_next_step_and_keeps_the_completed_ones(fmnist):
    """A first search completes one trial; a second one is stopped in its first trial's first epoch: that trial is
    pruned after a few steps of its 5 epochs, no further trial starts, and the completed one stays. While it trains,
    the Train tab's trainings are refused (one training at a time, server-wide)."""
    from explorer.app.search import TrainingProgress, search_events
    from explorer.train.runner import training_events

    sp = parse_space(tiny_space('acc_stop', epochs=5, train_limit=320))
    first = drain(search_events(sp, 1, threading.Event()))
    assert first[-1]['kind'] == 'done' and len(first[-1]['result']['frontier'].trials) == 1

    stop, refused = threading.Event(), []

    def on_event(ev):
        if ev['kind'] == 'train' and not stop.is_set():
            refused.append(next(training_events(TINY, 1, None, 32, 0, 64, 'x')))
            stop.set()

    t0 = time.monotonic()
    events = drain(search_events(sp, 3, stop), on_event)
    assert time.monotonic() - t0 < 60
    assert refused[0]['kind'] == 'error' and 'a training search is running' in refused[0]['message']
    assert events[-1]['kind'] == 'done' and events[-1]['result']['stopped_by'] == 'user'
    trials = [e for e in events if e['kind'] == 'trial']
    assert [(e['number'], e['state']) for e in trials] == [(1, 'PRUNED')]
    steps = [e['epoch'] for e in events if e['kind'] == 'train']
    assert max(steps) < 5  # stopped long before its 5 epochs
    study = open_study(sp)
    assert [t.state.name for t in study.trials] == ['COMPLETE', 'PRUNED']
    assert [t['number'] for t in events[-1]['result']['frontier'].trials] == [0]
    follow = TrainingProgress(3)
    for ev in events[:-1]:
        follow.add(ev)
    assert (
        follow.text('user', finished=True)
        == 'Training search finished (stopped): 1 of 3 trials. Trials: 1: stopped (not counted).'
    )
    # the slot is free again: the next training search runs
    assert drain(search_events(sp, 1, threading.Event()))[-1]['kind'] == 'done'


@pytest.mark.parametrize(
    'training, trials, env, named',
    [
        ({}, 21, {}, 'trials: 21 is not allowed for a search that trains every trial; allowed 1 to 20'),
        ({}, 3, {'EXPLORER_MAX_TRAINED_TRIALS': '2'}, 'allowed 1 to 2 (EXPLORER_MAX_TRAINED_TRIALS)'),
        ({'epochs': 50}, 2, {}, 'training.epochs: 50 is not allowed; allowed (0, 5] (EXPLORER_MAX_TRIAL_EPOCHS)'),
        ({'batch_size': 4096}, 2, {}, 'training.batch_size: 4096 is not allowed; allowed [1, 256] (whole) (EXPLORER'),
        (
            {'batch_size': 64},
            2,
            {'EXPLORER_MAX_BATCH': '32'},
            'training.batch_size: 64 is not allowed; allowed [1, 32]',
        ),
        ({'time_budget': 120}, 2, {'EXPLORER_MAX_TRAIN_S': '60'}, 'training.time_budget: 120 is not allowed'),
        ({'time_budget': 40}, 2, {'EXPLORER_MAX_TRAIN_S': '60'}, 'trials x training.time_budget: 2 x 40 s = 80 s'),
    ],
)
def test_the_bounds_refuse_before_anything_runs_naming_the_field(fmnist, monkeypatch, training, trials, env, named):
    from explorer.app.search import search_events
    from explorer.train.runner import TRAINING_SLOT

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    sp = parse_space(tiny_space('acc_bounds', **training))
    events = list(search_events(sp, trials, threading.Event()))
    assert [e['kind'] for e in events] == ['error'] and named in events[0]['message']
    assert not TRAINING_SLOT.locked()
    assert open_study(sp).trials == []  # nothing ran


@pytest.mark.parametrize(
    'training, named',
    [
        ({'epochs': 0}, 'training.epochs: 0 is not a number in (0, 1,000]'),
        ({'train_limit': 100_000}, 'training.train_limit: 100000 is not an integer from 1 to 60,000 or null'),
        ({'test_limit': 2.5}, 'training.test_limit: 2.5 is not an integer from 1 to 10,000 or null'),
    ],
)
def test_values_the_training_loop_refuses_are_refused_with_the_space(training, named):
    """Before a study is opened (and stored): the space itself is refused, naming the field."""
    with pytest.raises(SpaceError) as info:
        parse_space(tiny_space('acc_bounds', **training))
    assert named in str(info.value)


def test_the_time_limit_for_one_training_ends_the_search(fmnist, monkeypatch):
    from explorer.app.search import TrainingProgress, search_events

    monkeypatch.setenv('EXPLORER_MAX_TRAIN_S', '0.5')
    sp = parse_space(tiny_space('acc_deadline', epochs=5, train_limit=320))
    events = drain(search_events(sp, 3, threading.Event()))
    assert events[-1]['kind'] == 'done' and events[-1]['result']['stopped_by'] == 'time limit'
    assert len([e for e in events if e['kind'] == 'trial']) < 3
    follow = TrainingProgress(3)
    for ev in events[:-1]:
        follow.add(ev)
    assert "stopped at this server's time limit, EXPLORER_MAX_TRAIN_S" in follow.text('time limit', finished=True)


def test_missing_fashion_mnist_is_said_plainly_without_server_folders(tmp_path, monkeypatch):
    import explorer.train.data as data
    from explorer.app.context import user_error
    from explorer.app.search import search_events

    monkeypatch.delenv('FASHION_MNIST_DIR', raising=False)
    monkeypatch.setattr(data, 'DEBIAN_DIR', tmp_path / 'debian')
    monkeypatch.setattr(data, 'CACHE_DIR', tmp_path / 'cache')
    monkeypatch.setenv('EXPLORER_SEARCH_DIR', str(tmp_path / 'studies'))
    events = list(search_events(parse_space(tiny_space('acc_nodata')), 2, threading.Event()))
    assert [e['kind'] for e in events] == ['error']
    assert 'Fashion-MNIST (train split) not found' in events[0]['message']
    assert 'apt install dataset-fashion-mnist' in events[0]['message']
    shown = user_error(events[0]['message']).message  # what the page shows: no server folder
    assert 'Fashion-MNIST (train split) not found' in shown and str(tmp_path) not in shown


def test_a_training_search_waits_for_no_one_while_a_training_runs(fmnist):
    from explorer.app.search import search_events
    from explorer.train.runner import TRAINING_SLOT

    sp = parse_space(tiny_space('acc_busy'))
    assert TRAINING_SLOT.acquire(blocking=False)  # as a Train tab run holds it
    try:
        events = list(search_events(sp, 2, threading.Event()))
    finally:
        TRAINING_SLOT.release()
    assert [e['kind'] for e in events] == ['error'] and 'another training is running' in events[0]['message']
    assert open_study(sp).trials == []


def test_the_search_api_trains_a_space_and_returns_its_frontier(fmnist, client):
    """/search through gradio_client with a trained space: progress streams, then the frontier in the same format
    as an analytic search's; the bounds refuse with the field named."""
    pytest.importorskip('gradio_client')
    job = client.submit(space=tiny_space('acc_api'), trials=2, api_name='/search')
    d = job.result(timeout=300)
    assert d['trials'] == 2 and d['objectives'] == {'accuracy': 'maximize', 'gmacs': 'minimize'} and 'files' not in d
    for entry in d['frontier']:
        assert 0 <= entry['metrics']['accuracy'] <= 100 and entry['spec']['stages'][1]['mixer'] == 'sepconv'
    kinds = [o.get('kind') for o in job.outputs() if isinstance(o, dict)]
    assert kinds.count('trial') == 2 and 'train' in kinds
    with pytest.raises(Exception, match='EXPLORER_MAX_TRAINED_TRIALS'):
        client.predict(space=tiny_space('acc_api'), trials=21, api_name='/search')
    with pytest.raises(Exception, match='training.batch_size'):
        client.predict(space=tiny_space('acc_api', batch_size=10_000), trials=2, api_name='/search')


def test_cancelling_the_api_job_stops_the_training(fmnist, client):
    """A caller that goes away must not hold the server's training slot: cancelling the /search job stops the
    trial in training at its next step (pruned), and the slot is free again."""
    pytest.importorskip('gradio_client')
    from explorer.train.runner import TRAINING_SLOT

    space = tiny_space('acc_cancel', epochs=5, train_limit=320)
    job = client.submit(space=space, trials=3, api_name='/search')
    t0 = time.monotonic()
    while not any(isinstance(o, dict) and o.get('kind') == 'train' for o in job.outputs()):
        assert time.monotonic() - t0 < 120, 'no progress from /search'
        time.sleep(0.05)
    assert TRAINING_SLOT.locked()
    job.cancel()
    t0 = time.monotonic()
    while TRAINING_SLOT.locked():
        assert time.monotonic() - t0 < 30, 'the training went on after the job was cancelled'
        time.sleep(0.05)
    states = [t.state.name for t in open_study(parse_space(space)).trials]
    assert states and states[-1] == 'PRUNED' and len(states) < 3


@pytest.mark.parametrize('trains', [False, True])
def test_a_storage_that_fails_otherwise_gives_the_slot_back(fmnist, monkeypatch, trains):
    """Review: only a SpaceError from the storage check released the slot; any other failure (SQLite's 'database
    is locked', a mistyped EXPLORER_MAX_STUDY_TRIALS) kept it, and every later search or training was refused as
    busy until the server restarted."""
    from explorer.app import search as appsearch
    from explorer.train.runner import TRAINING_SLOT

    def fails(space, trials):
        raise RuntimeError('database is locked')

    monkeypatch.setattr(appsearch, 'check_store', fails)
    analytic = {**tiny_space('store_fails'), 'objectives': {'gmacs': 'minimize', 'params_m': 'minimize'}}
    sp = parse_space(tiny_space('acc_store_fails') if trains else analytic)
    with pytest.raises(RuntimeError, match='database is locked'):
        list(appsearch.search_events(sp, 2, threading.Event()))
    assert not appsearch._SLOT.locked() and not TRAINING_SLOT.locked()
