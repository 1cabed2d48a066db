"""Trainings: one at a time for real, stopped when nobody listens or at the server's limit, and `explorer
train` loses nothing when stopped: it saves atomically and resumes to the same weights, bit for bit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from explorer.train.loop import Stopped, train
from explorer.train.runner import training_events
from tests.conftest import QUICK, TINY, run_cli

pytestmark = pytest.mark.train
ROOT = Path(__file__).resolve().parents[2]


def wait_until(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def training_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith('train-')]


def test_one_training_at_a_time_and_an_abandoned_one_stops(tmp_path, fake_dir):
    first = training_events(TINY, 50, None, 32, 0, None, 'first', out_dir=tmp_path, data_dir=fake_dir)
    assert next(first)['kind'] in ('step', 'epoch')
    second = list(training_events(TINY, 1, None, 32, 0, None, 'second', out_dir=tmp_path, data_dir=fake_dir))
    assert second == [{'kind': 'error', 'message': second[0]['message'], 'busy': True}]  # the app says 'Busy'
    assert 'another training is running' in second[0]['message']
    first.close()  # the browser tab closed: gradio closes the generator
    assert wait_until(lambda: not training_threads(), 30), 'the abandoned training kept running'
    third = list(training_events(TINY, 0.1, None, 32, 0, 64, 'third', out_dir=tmp_path, data_dir=fake_dir))
    assert third[-1]['kind'] == 'done'  # the slot is free again


def test_the_server_time_limit_stops_a_training(tmp_path, fake_dir, monkeypatch):
    monkeypatch.setenv('EXPLORER_MAX_TRAIN_S', '1')
    t0 = time.monotonic()
    events = list(training_events(TINY, 500, None, 32, 0, None, 'limited', out_dir=tmp_path, data_dir=fake_dir))
    assert events[-1]['kind'] == 'done' and time.monotonic() - t0 < 30
    # the limit is the run's deadline: its schedule ends there, and the result says which limit ended it (it
    # said 'user', a stop nobody asked for)
    assert events[-1]['result'].metrics['stopped_by'] == 'time_limit'
    assert events[-1]['result'].metrics['time_budget_s'] is None


def weights(path) -> dict:
    return load_file(str(path))


def test_stop_mid_epoch_and_resume_gives_the_same_weights_bitwise(tmp_path, fake_dir):
    recipe = dict(epochs=3, seed=0, data_dir=fake_dir, **QUICK)
    whole = train(TINY, out=tmp_path / 'whole.safetensors', **recipe)
    state = tmp_path / 'part.safetensors.state'
    seen = []

    def stop_at_step_14(ev):
        seen.append(ev)
        if ev['kind'] == 'step' and ev['step'] >= 14:  # in the middle of the second epoch (10 steps each)
            raise Stopped

    part = train(TINY, out=tmp_path / 'part.safetensors', progress=stop_at_step_14, state_file=state, **recipe)
    assert part.metrics['stopped_by'] == 'user' and state.is_file()
    resumed = train(TINY, out=tmp_path / 'part.safetensors', state_file=state, resume=True, **recipe)
    assert resumed.metrics['steps'] == whole.metrics['steps'] == 30 and not state.exists()
    a, b = weights(whole.checkpoint), weights(resumed.checkpoint)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_another_recipe(tmp_path, fake_dir):
    state = tmp_path / 'r.state'

    def stop(ev):
        raise Stopped

    train(TINY, epochs=1, seed=0, data_dir=fake_dir, progress=stop, state_file=state, amp='none', **QUICK)
    with pytest.raises(ValueError, match=r'another recipe \(seed: 0 there, 1 here\)'):
        train(TINY, epochs=1, seed=1, data_dir=fake_dir, state_file=state, resume=True, amp='none', **QUICK)
    # a run started in fp32 and resumed with another precision: the message names it
    with pytest.raises(ValueError, match=r"another recipe \(amp: None there, 'bf16' here\)"):
        train(TINY, epochs=1, seed=0, data_dir=fake_dir, state_file=state, resume=True, amp='bf16', **QUICK)
    with pytest.raises(ValueError, match='another spec;'):
        other = {**TINY, 'name': 'other'}
        train(other, epochs=1, seed=0, data_dir=fake_dir, state_file=state, resume=True, amp='none', **QUICK)


def test_sigterm_saves_and_resume_finishes_like_an_uninterrupted_run(tmp_path, fake_dir):
    """The real command: killed with SIGTERM after its first epoch, then --resume; the weights equal those of a
    run that was never stopped."""
    base = [
        'train',
        str(ROOT / 'assets/fmnist/specs/fmnist_identity.json'),
        '--data-dir',
        str(fake_dir),
        '--epochs',
        '4',
        '--batch-size',
        '32',
        '--threads',
        '1',
        '--seed',
        '0',
    ]
    rc, out, err = run_cli(*base, '--out', str(tmp_path / 'whole.safetensors'))
    assert rc == 0, err
    cut = tmp_path / 'cut.safetensors'
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, '-m', 'explorer', *base, '--out', str(cut)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = proc.stdout.readline()  # 'epoch 1: ...' once the first epoch is done (and its state saved)
    assert line.startswith('epoch 1'), line + proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert 'continue with the same command and --resume' in err
    assert cut.is_file() and cut.with_name(cut.name + '.state').is_file()
    rc, out, err = run_cli(*base, '--out', str(cut), '--resume')
    assert rc == 0, err
    a, b = weights(tmp_path / 'whole.safetensors'), weights(cut)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list(tmp_path.glob('.*.tmp-*'))  # atomic writes leave no temporary files


@pytest.mark.parametrize(
    'args, message',
    [
        (['--epochs', 'inf'], "argument --epochs: 'inf' is not a finite number"),
        (['--epochs', 'nan'], "argument --epochs: 'nan' is not a finite number"),
        (['--threads', '-1'], 'argument --threads: -1 is out of range'),
        (['--train-limit', '-5'], 'argument --train-limit: -5 must be at least 1'),
        (['--time-budget', 'nan'], "argument --time-budget: 'nan' is not a finite number"),
        (['--erase', '1.5'], 'argument --erase: 1.5 is out of range; allowed [0, 1]'),
        (['--lr', '0'], 'argument --lr: 0 is out of range'),
    ],
)
def test_cli_numbers_are_checked_by_flag(tmp_path, args, message):
    rc, out, err = run_cli('train', 'poolformer_s12', *args, '--out', str(tmp_path / 'x.safetensors'))
    assert rc == 2 and message in err, err


def test_out_is_checked_before_any_work(tmp_path):
    locked = tmp_path / 'locked'
    locked.mkdir()
    locked.chmod(0o500)
    cases = [
        (str(tmp_path), 'is a folder'),
        (str(tmp_path / 'missing' / 'x.safetensors'), 'does not exist; create it first'),
    ]
    if os.geteuid() != 0:  # root writes anywhere
        cases.append((str(locked / 'x.safetensors'), 'permission denied'))
    for out, message in cases:
        t0 = time.perf_counter()
        rc, _, err = run_cli('train', 'poolformer_s12', '--out', out)
        assert rc == 2 and message in err and time.perf_counter() - t0 < 5, err


def test_a_cancelled_api_training_stops(client, tmp_path, monkeypatch):
    """/train through gradio_client, cancelled as a visitor closing the tab would: the worker ends."""
    import json

    import explorer.train.checkpoints as checkpoints
    from explorer.train.data import DatasetNotFound, find_dataset

    try:
        find_dataset('fashion-mnist', split='train')
    except DatasetNotFound:
        pytest.skip('Fashion-MNIST is not installed here (apt install dataset-fashion-mnist)')
    monkeypatch.setattr(checkpoints, 'USER_DIR', tmp_path)  # the runs folder: the checkpoint goes there
    spec = json.loads((ROOT / 'assets/fmnist/specs/fmnist_identity.json').read_text())
    job = client.submit(spec=spec, epochs=20, batch_size=64, seed=0, train_limit=0, api_name='/train')
    assert wait_until(lambda: len(job.outputs()) >= 2, 120), job.status()
    assert any(t for t in training_threads())
    job.cancel()
    assert wait_until(lambda: not training_threads(), 60), 'the cancelled training kept running'


def test_a_training_that_would_pass_the_runs_quota_is_refused_before_it_starts(tmp_path, fake_dir, monkeypatch):
    from explorer.train.runner import checkpoint_bytes

    # the checkpoint a training writes is the size checkpoint_bytes says, or less
    done = list(training_events(TINY, 0.1, None, 32, 0, 64, 'sized', out_dir=tmp_path, data_dir=fake_dir))
    written = Path(done[-1]['result'].checkpoint)
    from explorer.core.spec import ArchSpec

    need = checkpoint_bytes(ArchSpec.from_dict(TINY))
    assert written.stat().st_size <= need < written.stat().st_size + 2**20 + 2**16
    # a quota just under what the folder holds plus one more checkpoint: refused, nothing written or started
    quota_gib = (written.stat().st_size + need - 1) / 2**30
    monkeypatch.setenv('EXPLORER_MAX_RUNS_GB', repr(quota_gib))
    before = sorted(tmp_path.iterdir())
    refused = list(training_events(TINY, 0.1, None, 32, 0, 64, 'over', out_dir=tmp_path, data_dir=fake_dir))
    assert [e['kind'] for e in refused] == ['error']
    msg = refused[0]['message']
    assert 'runs:' in msg and "server's limit of" in msg and 'EXPLORER_MAX_RUNS_GB' in msg
    assert str(tmp_path) not in msg  # names the limit, never the server's path
    assert sorted(tmp_path.iterdir()) == before and not training_threads()
    # the slot was given back: with room for one more, the next training runs
    monkeypatch.setenv('EXPLORER_MAX_RUNS_GB', repr((written.stat().st_size + need) / 2**30))
    again = list(training_events(TINY, 0.1, None, 32, 0, 64, 'fits', out_dir=tmp_path, data_dir=fake_dir))
    assert again[-1]['kind'] == 'done'


def test_a_training_that_would_fill_the_disk_is_refused(tmp_path, fake_dir, monkeypatch):
    import shutil as sh

    from explorer.train import runner

    real = sh.disk_usage
    monkeypatch.setattr(runner.shutil, 'disk_usage', lambda p: real(p)._replace(free=runner.DISK_RESERVE_BYTES))
    refused = list(training_events(TINY, 0.1, None, 32, 0, 64, 'full', out_dir=tmp_path / 'new', data_dir=fake_dir))
    assert [e['kind'] for e in refused] == ['error']
    assert 'disk:' in refused[0]['message'] and 'must leave free' in refused[0]['message']
    assert not (tmp_path / 'new').exists()


def test_api_training_past_the_runs_quota_gets_a_clear_error(client, tmp_path, monkeypatch):
    """/train as a stranger calls it, into the app's default runs folder: refused by the quota, named."""
    import json

    import explorer.train.checkpoints as checkpoints

    monkeypatch.setattr(checkpoints, 'USER_DIR', tmp_path / 'trained')
    monkeypatch.setenv('EXPLORER_MAX_RUNS_GB', '0.0005')  # 0.5 MiB: less than any checkpoint
    spec = json.loads((ROOT / 'assets/fmnist/specs/fmnist_identity.json').read_text())
    with pytest.raises(Exception) as info:
        client.predict(spec=spec, epochs=1, batch_size=64, seed=0, train_limit=64, api_name='/train')
    assert "server's limit of 0.0005 GiB" in str(info.value) and 'EXPLORER_MAX_RUNS_GB' in str(info.value)
    assert not (tmp_path / 'trained').exists() and not training_threads()


def test_the_runs_folder_holds_at_most_max_runs_and_each_header_is_read_once(tmp_path, fake_dir, monkeypatch):
    """A stranger could add about 5 tiny runs a second (8 KB each: the byte quota allows millions), and every model
    call read every run's header: 400 runs made /predict and /list_runs 0.1 s slower each. The folder holds at most
    EXPLORER_MAX_RUNS files, and a header is read once per version of its file."""
    import shutil as sh

    from explorer.train import checkpoints

    done = list(training_events(TINY, 0.1, None, 32, 0, 64, 'one', out_dir=tmp_path, data_dir=fake_dir))
    first = Path(done[-1]['result'].checkpoint)
    for i in range(3):
        sh.copy(first, tmp_path / f'copy{i}.safetensors')
    monkeypatch.setenv('EXPLORER_MAX_RUNS', '4')
    refused = list(training_events(TINY, 0.1, None, 32, 0, 64, 'fifth', out_dir=tmp_path, data_dir=fake_dir))
    assert [e['kind'] for e in refused] == ['error']
    assert "holds 4 files, the server's limit is 4 trained models" in refused[0]['message']
    assert 'EXPLORER_MAX_RUNS' in refused[0]['message'] and len(list(tmp_path.iterdir())) == 4
    reads = []
    real = checkpoints.read_metadata
    monkeypatch.setattr(checkpoints, 'read_metadata', lambda p: reads.append(p) or real(p))
    listed = checkpoints.list_trained([tmp_path])
    assert len(listed) == 4 and len(reads) <= 4
    reads.clear()
    assert checkpoints.list_trained([tmp_path]) == listed and reads == []  # nothing read again
    (tmp_path / 'copy0.safetensors').unlink()
    sh.copy(first, tmp_path / 'copy0.safetensors')  # a new version of a file is read again, alone
    os.utime(tmp_path / 'copy0.safetensors', ns=(1, 1))
    assert len(checkpoints.list_trained([tmp_path])) == 4 and [Path(p).name for p in reads] == ['copy0.safetensors']
