"""Every command takes the same SPEC: a preset, a JSON file, a trained checkpoint or a trained model's name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from explorer.core.spec import ArchSpec
from explorer.measure.analytic import analytic_cost
from explorer.train.checkpoints import read_metadata
from tests.conftest import run_cli

CHECKPOINT = Path(__file__).resolve().parent.parent / 'assets' / 'fmnist' / 'fmnist_hybrid.safetensors'


@pytest.mark.parametrize('arg', [str(CHECKPOINT), 'fmnist_hybrid'])
def test_show_and_profile_take_a_trained_checkpoint_or_name(arg):
    spec = ArchSpec.from_dict(read_metadata(CHECKPOINT)['spec'])
    rc, out, err = run_cli('profile', arg, '--method', 'analytic', '--json')
    assert rc == 0, err
    assert json.loads(out)['macs'] == analytic_cost(spec).macs == 14_181_504
    rc, out, err = run_cli('show', arg, '--json')
    assert rc == 0, err
    assert (
        json.loads(out)['params'] == json.loads(run_cli('profile', arg, '--method', 'analytic', '--json')[1])['params']
    )


def test_a_checkpoint_without_a_spec_is_refused_by_name(tmp_path):
    import torch
    from safetensors.torch import save_file

    bare = tmp_path / 'bare.safetensors'
    save_file({'w': torch.zeros(2)}, str(bare))
    rc, out, err = run_cli('show', str(bare))
    assert rc == 2 and 'holds no spec in its metadata' in err


def test_erf_of_a_fashion_mnist_model_uses_fashion_mnist_images():
    from explorer.explain.images import fmnist_examples

    rc, out, err = run_cli('erf', 'fmnist_hybrid', '--json')
    assert rc == 0, err
    used = json.loads(out)['images']
    assert used == [str(p) for p in fmnist_examples()] and all('/fmnist/' in p for p in used)


@pytest.mark.parametrize('command', ['show', 'profile', 'bench', 'latency'])
def test_a_missing_or_damaged_checkpoint_as_spec_is_one_error_line(tmp_path, command):
    """Review s23: a typo in a checkpoint's path, or a damaged file, was a WeightsError traceback (exit 1) in these
    four commands, and one `error:` line in the others."""
    garbage = tmp_path / 'garbage.safetensors'
    garbage.write_bytes(b'\0' * 100)
    for path, words in ((tmp_path / 'my_run.safetensors', 'does not exist'), (garbage, 'not a valid safetensors')):
        rc, out, err = run_cli(command, str(path))
        assert rc == 2 and err.startswith('error:') and words in err and 'Traceback' not in err, (rc, err)


def test_an_unknown_spec_gets_the_close_names_and_an_empty_one_says_so(tmp_path, monkeypatch):
    """Review s23: every unknown name got the first 8 presets in alphabetical order, trained models were never
    mentioned, and '' was called the folder '.'."""
    from explorer.train import checkpoints

    monkeypatch.setattr(checkpoints, 'USER_DIR', tmp_path / 'trained')
    (tmp_path / 'trained').mkdir()
    (tmp_path / 'trained' / 'my_run.safetensors').write_bytes(CHECKPOINT.read_bytes())
    monkeypatch.chdir(tmp_path)
    for arg, close in [
        ('poolformer-s12', 'poolformer_s12'),  # '-' for '_'
        ('CAFormer_S18', 'caformer_s18'),  # case
        ('caformer_s81', 'caformer_s18'),
        ('fmnist_hybrid_larg', 'fmnist_hybrid_large'),  # a shipped trained model
        ('my-rnu', 'my_run'),  # the user's own
    ]:
        rc, out, err = run_cli('show', arg)
        assert rc == 2 and 'neither a preset nor a spec file' in err and f'did you mean {close}?' in err, err
        assert "trained model's name" in err, err
    rc, out, err = run_cli('show', '')
    assert rc == 2 and 'empty SPEC' in err and "'.'" not in err, err
    rc, out, err = run_cli('show', 'pool')  # no close name: the presets it is part of, as before (not caformer_*)
    assert rc == 2 and 'presets include: poolformer_' in err and 'caformer' not in err, err


def test_bench_on_a_busy_cpu_says_so(tmp_path, monkeypatch):
    """A review: `explorer bench` beside another job printed 8.6 img/s (7,736 on a quiet CPU) and only the load
    average; the Measure tab says the CPU was busy, and so does the CLI now (on stderr: --json stays JSON)."""
    import os

    spec = tmp_path / 'tiny.json'
    spec.write_text(
        json.dumps(
            {
                'name': 'tiny',
                'img_size': 32,
                'in_chans': 1,
                'num_classes': 10,
                'stages': [{'mixer': 'pooling', 'depth': 1, 'dim': 16}],
            }
        ),
        encoding='utf-8',
    )
    argv = ('bench', str(spec), '--iters', '2', '--warmup', '1', '--min-time', '0.01', '--batch-size', '1')
    monkeypatch.setattr(os, 'getloadavg', lambda: (os.cpu_count() + 3.0, 1.0, 1.0))
    rc, out, err = run_cli(*argv, '--json')
    assert rc == 0, err
    assert f'warning: busy CPU: load {os.cpu_count() + 3.0:.1f} on' in err and json.loads(out)['throughput'] > 0
    monkeypatch.setattr(os, 'getloadavg', lambda: (0.0, 0.0, 0.0))
    rc, out, err = run_cli(*argv)
    assert rc == 0 and 'busy CPU' not in err and 'throughput' in out


def test_an_edited_copy_of_a_preset_file_is_not_called_the_preset(tmp_path):
    """An edited copy of presets/poolformer_s12.json kept the preset's name in every command, so its counts (and
    a run trained from it) carried the published model's name. It is now NAME-edited, with a note; an unedited
    copy keeps the name and prints nothing."""
    from explorer.core.catalog import get_preset

    d = get_preset('poolformer_s12')
    same = tmp_path / 'same.json'
    same.write_text(json.dumps(d), encoding='utf-8')
    d['stages'][0]['depth'] = 3
    edited = tmp_path / 'mine.json'
    edited.write_text(json.dumps(d), encoding='utf-8')

    rc, out, err = run_cli('profile', str(same), '--method', 'analytic', '--json')
    assert rc == 0 and err == '' and json.loads(out)['name'] == 'poolformer_s12'
    rc, out, err = run_cli('profile', str(edited), '--method', 'analytic', '--json')
    assert rc == 0 and json.loads(out)['name'] == 'poolformer_s12-edited', (rc, err)
    assert "names the preset 'poolformer_s12' but holds another network" in err
    assert json.loads(out)['params'] == analytic_cost(ArchSpec.from_dict(d)).params
    rc, out, err = run_cli('profile', 'poolformer_s12', '--method', 'analytic', '--json')
    assert rc == 0 and err == '' and json.loads(out)['name'] == 'poolformer_s12'
