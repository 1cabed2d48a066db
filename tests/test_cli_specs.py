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
