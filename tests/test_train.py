"""Training, checkpoints and the shipped Fashion-MNIST models.

Most tests train a tiny spec on a synthetic Fashion-MNIST-shaped dataset written as idx files to a temp dir
(so they run anywhere, and exercise the idx reader); the shipped-checkpoint test needs the real test set and
is skipped, saying why, only where no copy of Fashion-MNIST is installed.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from explorer.__main__ import main as cli_main
from explorer.core.spec import ArchSpec
from explorer.train.checkpoints import load_trained, read_metadata
from explorer.train.data import (
    CLASSES,
    DatasetNotFound,
    Preprocessing,
    find_dataset,
    load_dataset,
    preprocess,
    read_idx,
)
from explorer.train.loop import Stopped, accuracy_on, augment, evaluate, predict_logits, train

ASSETS = Path(__file__).resolve().parent.parent / 'assets' / 'fmnist'
SHIPPED = sorted(ASSETS.glob('*.safetensors'))
FAMILIES = ('identity', 'random', 'randformer', 'pooling', 'sepconv', 'attention', 'spatial_mlp', 'hybrid')
pytestmark = pytest.mark.train  # trains, or evaluates on Fashion-MNIST

from tests.conftest import QUICK, TINY, tiny_spec, write_idx  # noqa: E402  (shared with tests/security)


def real_test_set_or_skip():
    try:
        return load_dataset('fashion-mnist', 'test')
    except DatasetNotFound as e:
        pytest.skip(f'Fashion-MNIST is not installed here (apt install dataset-fashion-mnist): {e}')


# ---- data ----------------------------------------------------------------------------------------------
def test_idx_reader_round_trip_and_bad_header(tmp_path):
    a = torch.arange(2 * 3 * 4, dtype=torch.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / 'a.gz', a)
    assert torch.equal(read_idx(tmp_path / 'a.gz'), a)
    (tmp_path / 'bad').write_bytes(b'\x00\x00\x0d\x01\x00\x00\x00\x01\x00\x00\x00\x00')  # float32 type code
    with pytest.raises(ValueError, match='not an idx file of unsigned bytes'):
        read_idx(tmp_path / 'bad')


def test_synthetic_dataset_loads_from_user_dir(fake_dir):
    ds = load_dataset('fashion-mnist', 'train', data_dir=fake_dir)
    assert ds.images.shape == (320, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.labels[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert ds.source == str(fake_dir)


def test_missing_dataset_gives_clear_message(tmp_path, capsys):
    empty = tmp_path / 'nothing_here'
    with pytest.raises(DatasetNotFound) as e:
        find_dataset('fashion-mnist', data_dir=empty)
    msg = str(e.value)
    assert str(empty) in msg and 'train-images-idx3-ubyte' in msg
    assert 'dataset-fashion-mnist' in msg and '--data-dir' in msg and '--download' in msg
    spec = tmp_path / 'tiny.json'
    spec.write_text(json.dumps(TINY))
    rc = cli_main(
        ['train', str(spec), '--data-dir', str(empty), '--epochs', '1', '--out', str(tmp_path / 'x.safetensors')]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith('error: Fashion-MNIST (train split) not found') and str(empty) in err


def test_unknown_dataset_name_is_refused():
    with pytest.raises(ValueError, match="dataset 'cifar10' is not supported; choose from fashion-mnist"):
        find_dataset('cifar10')


def test_preprocess_pads_28_to_32_with_background():
    img = torch.full((28, 28), 255, dtype=torch.uint8)
    pre = Preprocessing(img_size=32, resize='pad', mean=0.25, std=0.5)
    x = preprocess(img, pre)
    assert x.shape == (1, 1, 32, 32)
    assert torch.all(x[0, 0, 2:30, 2:30] == (1 - 0.25) / 0.5)  # pixel 255 -> 1.0 -> normalised
    assert torch.all(x[0, 0, :2] == -0.25 / 0.5) and torch.all(x[0, 0, :, 30:] == -0.25 / 0.5)
    assert (
        Preprocessing.for_spec(
            ArchSpec.from_dict({**TINY, 'img_size': 28, 'stem': {'kernel_size': 2, 'stride': 2, 'padding': 0}})
        ).resize
        == 'none'
    )


def test_augment_crops_are_shifted_copies_and_flip_mirrors():
    x = torch.zeros(64, 1, 8, 8)
    x[:, 0, 3, 2] = 1.0  # one bright pixel, 2 away from the left border
    gen = torch.Generator().manual_seed(0)
    y = augment(x, pad=2, hflip=False, gen=gen)
    assert y.shape == x.shape and torch.all(y.sum((1, 2, 3)) == 1)  # a shift of <= 2 keeps the pixel
    rows, cols = y[:, 0].flatten(1).argmax(1).div(8, rounding_mode='floor'), y[:, 0].flatten(1).argmax(1) % 8
    assert set(rows.tolist()) == {1, 2, 3, 4, 5} and set(cols.tolist()) == {0, 1, 2, 3, 4}
    z = augment(x, pad=0, hflip=True, gen=gen)
    assert torch.all((z[:, 0, 3, 2] == 1) ^ (z[:, 0, 3, 5] == 1))  # each image either kept or mirrored
    assert 0 < int((z[:, 0, 3, 5] == 1).sum()) < 64


def test_random_erasing_blanks_one_rectangle_of_the_stated_size_in_the_stated_share():
    x = torch.ones(2000, 1, 32, 32)
    y = augment(x, pad=0, hflip=False, gen=torch.Generator().manual_seed(0), erase_prob=0.25)
    blank = y[:, 0] == 0
    erased = blank.flatten(1).any(1)
    assert 0.22 < float(erased.float().mean()) < 0.28  # 500 expected of 2000
    for img in blank[erased][:200]:  # the blanked pixels form one axis-aligned rectangle of 2% to 25% area
        rows, cols = img.any(1).nonzero().flatten(), img.any(0).nonzero().flatten()
        h, w = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
        assert int(img.sum()) == h * w and len(rows) == h and len(cols) == w
        assert 0.02 * 1024 - 20 <= h * w <= 0.25 * 1024 + 20  # rounding h and w moves the area <= 20 px
    again = augment(x, pad=0, hflip=False, gen=torch.Generator().manual_seed(0), erase_prob=0.25)
    assert torch.equal(y, again)  # seeded: deterministic
    g_off, g_ref = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(augment(x, 2, True, g_off, erase_prob=0.0), augment(x, 2, True, g_ref))
    assert torch.equal(g_off.get_state(), g_ref.get_state())  # erasing off draws nothing: old recipes reproduce


def test_erase_probability_outside_0_1_is_refused(tmp_path):
    with pytest.raises(ValueError, match='erase_prob 1.5 must be a probability between 0 and 1'):
        train(TINY, epochs=1, data_dir=tmp_path, erase_prob=1.5, **QUICK)


# ---- training ------------------------------------------------------------------------------------------
def test_short_run_lowers_the_loss_and_learns(fake_dir):
    # 10 epochs: at 6 the loss ratio over seeds 0-4 spreads 0.56-0.84 (initialisation decides); at 10 seed 0
    # lands at 0.53, a margin under the bound rather than on it
    res = train(TINY, epochs=10, seed=0, data_dir=fake_dir, lr=1e-2, **QUICK)
    losses = [h['train_loss'] for h in res.history]
    assert len(losses) == 10 and res.metrics['steps'] == 10 * (320 // 32)
    assert losses[-1] < 0.6 * losses[0], losses
    assert res.metrics['test_accuracy'] >= 0.3  # chance is 0.1
    assert res.metrics['test_n'] == 200 and res.metrics['threads'] == 1 and res.metrics['stopped_by'] == 'epochs'


def test_checkpoint_reloads_and_reproduces_predictions_exactly(fake_dir, tmp_path):
    out = tmp_path / 'tiny.safetensors'
    res = train(TINY, epochs=2, seed=3, data_dir=fake_dir, out=out, **QUICK)
    model, spec, info = load_trained(out)
    assert spec.to_dict() == ArchSpec.from_dict(TINY).to_dict()
    assert info['classes'] == list(CLASSES) and info['preprocessing'].img_size == 32
    assert info['metrics']['seed'] == 3 and info['metrics']['epochs'] == 2
    assert info['metrics']['recipe']['batch_size'] == 32 and len(info['history']) == 2
    test = load_dataset('fashion-mnist', 'test', data_dir=fake_dir)
    pre = info['preprocessing']
    assert torch.equal(predict_logits(model, test.images, pre), predict_logits(res.model, test.images, pre))
    ev = evaluate(out, data_dir=fake_dir)
    assert ev['accuracy'] == res.metrics['test_accuracy'] == ev['recorded_accuracy']
    assert ev['n'] == 200 and ev['correct'] == res.metrics['test_correct']


def test_same_seed_same_weights_other_seed_differs(fake_dir):
    runs = [train(TINY, epochs=1, seed=s, data_dir=fake_dir, **QUICK).model.state_dict() for s in (7, 7, 8)]
    assert runs[0].keys() == runs[1].keys()
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_time_budget_and_stop_end_training_early(fake_dir):
    res = train(TINY, epochs=500, time_budget=0.5, seed=0, data_dir=fake_dir, **QUICK)
    assert res.metrics['stopped_by'] == 'time_budget' and res.metrics['steps'] < 500 * 10
    assert res.metrics['time_budget_s'] == 0.5

    # a budget that is never reached trains exactly the planned steps (the refit at step 20, the end of the
    # second epoch, once added one step past the plan)
    res = train(TINY, epochs=2, time_budget=1e6, seed=0, data_dir=fake_dir, **QUICK)
    assert res.metrics['steps'] == 20 and res.metrics['epochs'] == 2 and res.metrics['stopped_by'] == 'epochs'
    assert len(res.history) == 2

    def stop_after_first_epoch(ev):
        if ev['kind'] == 'epoch':
            raise Stopped

    res = train(TINY, epochs=5, seed=0, data_dir=fake_dir, progress=stop_after_first_epoch, **QUICK)
    assert res.metrics['stopped_by'] == 'user' and res.metrics['steps'] == 10


def test_the_test_set_is_evaluated_once_per_epoch_not_twice_at_the_end(fake_dir, monkeypatch):
    """The last epoch's evaluation is the final one: a 2,000-image run used to spend two full test-set passes at
    its end (minutes on 10,000 images), the second recomputing the first."""
    from explorer.train import sources

    calls = []
    real = sources.MemorySource.evaluate

    def counted(self, *a, **k):
        calls.append(1)
        return real(self, *a, **k)

    monkeypatch.setattr(sources.MemorySource, 'evaluate', counted)
    res = train(TINY, epochs=2, seed=0, data_dir=fake_dir, **{**QUICK, 'eval_every_epoch': True})
    assert len(calls) == 2  # one per epoch; the final metrics are the second epoch's evaluation
    assert res.metrics['test_accuracy'] == res.history[-1]['test_accuracy']
    calls.clear()
    res = train(TINY, epochs=2, seed=0, data_dir=fake_dir, **QUICK)  # eval_every_epoch False: the end only
    assert len(calls) == 1 and res.history[-1]['test_accuracy'] == res.metrics['test_accuracy']


def test_untrainable_spec_names_the_field(fake_dir):
    with pytest.raises(ValueError, match='in_chans is 3; Fashion-MNIST images are grayscale'):
        train({**TINY, 'in_chans': 3}, epochs=1, data_dir=fake_dir, **QUICK)
    with pytest.raises(ValueError, match='num_classes is 1000; Fashion-MNIST has 10 classes'):
        train({**TINY, 'num_classes': 1000}, epochs=1, data_dir=fake_dir, **QUICK)


def test_cli_train_and_evaluate_json(fake_dir, tmp_path, capsys):
    spec = tmp_path / 'tiny.json'
    spec.write_text(json.dumps(TINY))
    out = tmp_path / 'cli.safetensors'
    rc = cli_main(
        [
            'train',
            str(spec),
            '--data-dir',
            str(fake_dir),
            '--epochs',
            '1',
            '--batch-size',
            '64',
            '--seed',
            '1',
            '--threads',
            '1',
            '--erase',
            '0.25',
            '--out',
            str(out),
        ]
    )
    assert rc == 0 and out.is_file()
    assert read_metadata(out)['metrics']['recipe']['erase_prob'] == 0.25
    assert 'test accuracy' in capsys.readouterr().out
    assert cli_main(['evaluate', str(out), '--data-dir', str(fake_dir), '--json']) == 0
    r = json.loads(capsys.readouterr().out)
    assert r['n'] == 200 and r['accuracy'] == r['recorded_accuracy'] and r['recorded_n'] == 200
    # the text says on how many images the recorded figure was measured (a --test-limit run: fewer than here)
    assert cli_main(['evaluate', str(out), '--data-dir', str(fake_dir)]) == 0
    assert '% on 200 images; test loss' in capsys.readouterr().out.splitlines()[0]
    assert cli_main(['evaluate', str(tmp_path / 'missing.safetensors')]) == 2


def test_normalisation_constants_are_the_training_set_statistics():
    from explorer.train.data import MEAN, STD, pixel_stats

    try:
        ds = load_dataset('fashion-mnist', 'train')
    except DatasetNotFound as e:
        pytest.skip(f'Fashion-MNIST is not installed here (apt install dataset-fashion-mnist): {e}')
    mean, std = pixel_stats(ds)
    assert (round(mean, 4), round(std, 4)) == (MEAN, STD)


# ---- shipped checkpoints -------------------------------------------------------------------------------
def test_every_family_has_a_spec_and_a_checkpoint():
    for family in FAMILIES:
        spec = ArchSpec.from_json((ASSETS / 'specs' / f'fmnist_{family}.json').read_text())
        assert spec.in_chans == 1 and spec.num_classes == 10
        assert (ASSETS / f'fmnist_{family}.safetensors').is_file(), family


def test_example_images_are_the_test_set_images_their_names_and_licence_say():
    """Each shipped example `<index>_<class>.png` is test image <index>, of that class, pixel for pixel, and
    the licence file lists exactly the files that ship."""
    import re

    import numpy as np
    from PIL import Image

    files = sorted((ASSETS / 'images').glob('*.png'))
    listed = re.findall(r'`(\d{5}_\w+\.png)`', (ASSETS / 'LICENSES.md').read_text())
    assert files and sorted(listed) == [p.name for p in files]
    test = real_test_set_or_skip()
    for p in files:
        index, cls = int(p.stem[:5]), p.stem[6:]
        assert CLASSES[int(test.labels[index])].lower().replace('/', '_').replace(' ', '_').replace('-', '_') == cls
        assert np.array_equal(np.asarray(Image.open(p)), test.images[index].numpy()), p.name


@pytest.mark.parametrize('path', SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_checkpoint_loads_and_matches_its_recorded_accuracy(path):
    assert path.stat().st_size <= 5 * 2**20, f'{path.name} is over 5 MB'
    meta = read_metadata(path)
    assert meta['dataset'] == 'fashion-mnist' and meta['metrics']['test_n'] == 10_000
    test = real_test_set_or_skip()
    model, spec, info = load_trained(path)
    got = accuracy_on(model, test, info['preprocessing'], batch_size=1000)
    # same weights, same batches: exact on the machine that trained it; other CPUs may flip a near-tie
    assert abs(got['accuracy'] - info['metrics']['test_accuracy']) <= 2e-4, (got['accuracy'], info['metrics'])


def test_best_shipped_model_meets_the_93_percent_goal_on_the_test_set():
    """Re-measured, not read back: the most accurate shipped model classifies at least 9,300 of the 10,000
    Fashion-MNIST test images correctly here."""
    recorded = {p: read_metadata(p)['metrics']['test_accuracy'] for p in SHIPPED}
    best = max(recorded, key=recorded.get)
    test = real_test_set_or_skip()
    model, spec, info = load_trained(best)
    got = accuracy_on(model, test, info['preprocessing'], batch_size=1000)
    assert got['n'] == 10_000 and got['correct'] >= 9_300, (best.stem, got['correct'])
    assert (ASSETS / 'specs' / f'{best.stem}.json').is_file()  # its spec ships beside it, for `explorer train`


# ---- app: adapting, the training stream, the trained-model list ------------------------------------------
def test_adapt_makes_a_preset_trainable_and_says_what_changed():
    from explorer.core.catalog import load_spec
    from explorer.train.fit import adapt_for_fmnist, check_trainable

    spec, notes = adapt_for_fmnist(load_spec('poolformer_s12'))
    check_trainable(spec)
    assert (spec.in_chans, spec.num_classes, spec.img_size) == (1, 10, 32)
    assert spec.grid_sizes() == [(16, 16), (8, 8), (4, 4), (2, 2)]
    assert notes == [
        'in_chans 3 -> 1',
        'num_classes 1000 -> 10',
        'img_size 224 -> 32',
        'stem 7x7/4 -> 3x3/2',
        'token grids 16x16 -> 8x8 -> 4x4 -> 2x2',
    ]
    assert 'top1' not in spec.meta and [st.dim for st in spec.stages] == [64, 128, 320, 512]
    iso, _ = adapt_for_fmnist(load_spec('deit_small'))
    assert iso.grid_sizes() == [(8, 8)] and iso.stem.kernel_size == 4  # patchify, like 16x16/16 at 224
    with pytest.raises(ValueError, match='do not divide a 28x28 input'):
        adapt_for_fmnist(load_spec('poolformer_s12'), img_size=28)


def test_training_stream_yields_steps_epochs_and_a_listed_checkpoint(fake_dir, tmp_path):
    from explorer.train.checkpoints import list_trained
    from explorer.train.runner import training_events

    events = list(
        training_events(TINY, 2, None, 32, 0, None, 'test-run', out_dir=tmp_path, data_dir=fake_dir, erase_prob=0.25)
    )
    kinds = [e['kind'] for e in events]
    assert kinds[-1] == 'done' and kinds.count('epoch') == 2 and 'step' in kinds
    res = events[-1]['result']
    assert Path(res.checkpoint).parent == tmp_path and res.metrics['recipe']['erase_prob'] == 0.25
    listed = list_trained([tmp_path])
    assert [t['path'] for t in listed] == [res.checkpoint] and listed[0]['accuracy'] == res.metrics['test_accuracy']
    bad = list(training_events({**TINY, 'in_chans': 3}, 1, None, 32, 0, None, 'bad', tmp_path, fake_dir))
    assert bad[-1]['kind'] == 'error' and 'in_chans is 3' in bad[-1]['message']


def test_results_table_script_reads_checkpoints_and_names_recipe_changes(fake_dir, tmp_path):
    import importlib.util

    spec_ = importlib.util.spec_from_file_location(
        'fmnist_table', Path(__file__).parent.parent / 'scripts' / 'fmnist_results_table.py'
    )
    mod = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(mod)
    train(TINY, epochs=1, seed=0, data_dir=fake_dir, out=tmp_path / 'fmnist_tiny.safetensors', erase_prob=0.25, **QUICK)
    md = mod.table(tmp_path)
    row = md.splitlines()[2]
    metrics = read_metadata(tmp_path / 'fmnist_tiny.safetensors')['metrics']
    acc = 100 * metrics['test_accuracy']
    # QUICK changes batch 128 -> 32 and crop padding 2 -> 0 besides the erasing; bf16 (the default where the CPU
    # has it) is named, fp32 is not; then the seed (0) and the threads (1)
    changes = 'batch 32, crop padding 0, random erasing 0.25' + (', amp bf16' if metrics['amp'] == 'bf16' else '')
    assert f'| {acc:.2f} |' in row and f'| {changes} | 0 | 1 |' in row, row
    assert md.count('\n| ') == 1  # one checkpoint, one row
    # the same family with another seed, in seed1/: a second row and the spread between the seeds
    (tmp_path / 'seed1').mkdir()
    train(TINY, epochs=1, seed=1, data_dir=fake_dir, out=tmp_path / 'seed1' / 'fmnist_tiny.safetensors', **QUICK)
    md = mod.table(tmp_path)
    assert md.count('\n| ') == 2 and '`seed1/fmnist_tiny.safetensors`' in md
    assert 'tiny_fmnist: seed 0: ' not in md  # 'tiny' is not one of the ablation's families: no spread line


def test_bf16_training_on_cpu_unfuses_attention_with_the_same_function():
    """bf16 training on a CPU uses attention as explicit matmuls (the fused kernel's bf16 backward was slow there);
    the function is the same up to rounding, and fp32 training keeps the fused kernel."""
    import torch

    from explorer.core.build import build_model
    from explorer.core.spec import ArchSpec
    from explorer.train.loop import unfuse_attention

    spec = ArchSpec.from_dict(json.loads((ASSETS / 'specs' / 'fmnist_hybrid.json').read_text(encoding='utf-8')))
    fused, plain = build_model(spec, seed=0).eval(), build_model(spec, seed=0).eval()
    assert unfuse_attention(plain) == spec.stages[-1].depth  # one per attention block
    assert unfuse_attention(plain) == 0  # already unfused
    x = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(plain(x), fused(x), rtol=1e-5, atol=1e-5)


def _shipped_spec(name: str) -> ArchSpec:
    return ArchSpec.from_dict(json.loads((ASSETS / 'specs' / f'{name}.json').read_text(encoding='utf-8')))


def test_prepare_bf16_cpu_keeps_the_function_and_the_state_dict():
    """fmnist_hybrid has every kind the preparation changes: 7x7 depthwise convs, residual scales, StarReLU and
    attention. In fp32 the prepared model is the same function (the casts are no-ops) with the same gradients,
    and its parameters keep their names and values."""
    from explorer.core.build import build_model
    from explorer.train.loop import prepare_bf16_cpu

    spec = _shipped_spec('fmnist_hybrid')
    plain, prepared = build_model(spec, seed=0), build_model(spec, seed=0)
    # stages sepconv 2 blocks, sepconv 2, attention 2: a 7x7 depthwise conv per sepconv block; two residual
    # scales per block where res_scale_init is set (the third stage only); StarReLU in every MLP (6) and sepconv
    # (4); attention 2
    counts = prepare_bf16_cpu(prepared)
    assert counts == {'attention': 2, 'scale': 4, 'star_relu': 10, 'depthwise_conv': 4}
    assert prepare_bf16_cpu(prepared) == {'attention': 0, 'scale': 0, 'star_relu': 0, 'depthwise_conv': 0}
    assert list(prepared.state_dict()) == list(plain.state_dict())
    x = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    for m in (plain, prepared):
        m(x).square().sum().backward()
    torch.testing.assert_close(prepared(x), plain(x), rtol=1e-5, atol=1e-5)
    for (name, p), q in zip(prepared.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_prepare_bf16_cpu_keeps_the_residual_stream_in_bf16():
    """Under bf16 autocast timm's residual scales and StarReLU multiply by fp32 parameters, which promotes the
    activations back to fp32 (so every norm and element-wise op after them ran in fp32: bf16 training was 1.2x
    fp32 on fmnist_hybrid_large instead of 1.5x). Prepared, every block hands on bf16 and the gradients still
    reach the fp32 parameters."""
    from explorer.core.build import Block, build_model
    from explorer.train.loop import prepare_bf16_cpu

    spec = _shipped_spec('fmnist_hybrid_large')

    def block_dtypes(model):
        seen = []
        hooks = [
            m.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
            for m in model.modules()
            if isinstance(m, Block)
        ]
        x = torch.randn(2, 1, 32, 32)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = model(x)
        for h in hooks:
            h.remove()
        return seen, out

    plain = build_model(spec, seed=0)
    seen, _ = block_dtypes(plain)
    assert torch.float32 in seen  # the promotion this fixes (res_scale from the second stage on)
    prepare_bf16_cpu(model := build_model(spec, seed=0))
    seen, out = block_dtypes(model)
    assert seen == [torch.bfloat16] * sum(st.depth for st in spec.stages)
    out.float().sum().backward()
    scales = [p for n, p in model.named_parameters() if n.endswith('res_scale.scale') or n.endswith('act.scale')]
    assert scales and all(p.dtype == torch.float32 and p.grad is not None and p.grad.abs().sum() > 0 for p in scales)


def test_bf16_cpu_training_runs_the_prepared_model(fake_dir):
    """The loop prepares the model for bf16 on a CPU (the trained model it returns shows it), and not for fp32."""
    from timm.models.metaformer import StarReLU

    from explorer.train.loop import prepare_bf16_cpu

    spec = _shipped_spec('fmnist_hybrid')
    kw = dict(epochs=1, batch_size=32, train_limit=32, test_limit=32, data_dir=fake_dir, threads=1)
    acts = {amp: [type(m) for m in train(spec, amp=amp, **kw).model.modules()] for amp in (None, 'bf16')}
    assert StarReLU in acts[None] and StarReLU not in acts['bf16']
    fp32_model = train(spec, **kw).model
    prepare_bf16_cpu(fp32_model)
    assert acts['bf16'] == [type(m) for m in fp32_model.modules()]


def test_auto_precision_is_bf16_where_the_hardware_has_it(monkeypatch):
    import explorer.train.loop as loop

    cpu = torch.device('cpu')
    for native, expected in ((True, 'bf16'), (False, None)):
        monkeypatch.setattr(loop, 'cpu_native_bf16', lambda native=native: native)
        assert loop.resolve_amp('auto', cpu) == expected
    assert loop.resolve_amp('none', cpu) is None and loop.resolve_amp(None, cpu) is None
    assert loop.resolve_amp('bf16', cpu) == 'bf16'
    assert loop.TrainConfig().amp == 'auto'
    for bf16, expected in ((True, 'bf16'), (False, 'fp16')):  # GPUs: bf16 from Ampere on, else fp16 + scaling
        monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda bf16=bf16: bf16)
        assert loop.resolve_amp('auto', torch.device('cuda')) == expected


def test_default_training_records_its_precision_and_the_accuracy_reload_gives(fake_dir, tmp_path):
    """A run with the default precision trains in bf16 on this machine if its CPU has bf16 (else fp32) and says
    so; its test metrics are measured in fp32, so `explorer evaluate` of the checkpoint gives them exactly (under
    bf16 evaluation the recorded loss differed from the reloaded model's)."""
    from explorer.measure.speed import cpu_native_bf16

    out = tmp_path / 'tiny.safetensors'
    res = train(TINY, epochs=1, seed=0, data_dir=fake_dir, out=out, **QUICK)
    assert res.metrics['amp'] == ('bf16' if cpu_native_bf16() else None)
    assert read_metadata(out)['metrics']['recipe']['amp'] == res.metrics['amp']
    bf16 = train(TINY, epochs=1, seed=0, data_dir=fake_dir, out=tmp_path / 'bf16.safetensors', amp='bf16', **QUICK)
    for r in (res, bf16):
        ev = evaluate(r.checkpoint, data_dir=fake_dir)
        assert (ev['accuracy'], ev['loss']) == (r.metrics['test_accuracy'], r.metrics['test_loss'])


def test_cli_train_takes_auto_and_none_and_names_the_precision(fake_dir, tmp_path, capsys):
    spec = tmp_path / 'tiny.json'
    spec.write_text(json.dumps(TINY))
    common = ['train', str(spec), '--epochs', '0.1', '--batch-size', '32', '--data-dir', str(fake_dir)]
    assert cli_main([*common, '--amp', 'none', '--threads', '1', '--out', str(tmp_path / 'a.safetensors')]) == 0
    assert ', fp32; ' in capsys.readouterr().out
    assert read_metadata(tmp_path / 'a.safetensors')['metrics']['amp'] is None
    assert cli_main([*common, '--amp', 'bf16', '--threads', '1', '--out', str(tmp_path / 'b.safetensors')]) == 0
    assert ', bf16; ' in capsys.readouterr().out


def test_precision_curves_script_compares_two_runs_of_one_design(fake_dir, tmp_path, monkeypatch, capsys):
    import importlib.util

    path = Path(__file__).parent.parent / 'scripts' / 'fmnist_precision_curves.py'
    spec_ = importlib.util.spec_from_file_location('fmnist_precision_curves', path)
    mod = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(mod)
    outs = [tmp_path / f'{amp}.safetensors' for amp in ('none', 'bf16')]
    quick = {**QUICK, 'eval_every_epoch': True}
    res = [train(TINY, epochs=2, seed=0, data_dir=fake_dir, out=o, amp=o.stem, **quick) for o in outs]
    text = mod.report(mod.runs(outs))
    assert text.startswith('# tiny_fmnist: fp32 vs bf16\n')  # trained specs are named for their dataset
    h = [r.history for r in res]
    rates = [[], []]
    for e in range(2):
        a, b = 100 * h[0][e]['test_accuracy'], 100 * h[1][e]['test_accuracy']
        for i in (0, 1):  # 10 steps of 32 images per epoch, over the epoch's training time
            rates[i].append(320 / (h[i][e]['train_time'] - (h[i][e - 1]['train_time'] if e else 0)))
        assert f'| {e + 1} | {a:.2f} | {b:.2f} | {b - a:+.2f} | {rates[0][e]:.0f} | {rates[1][e]:.0f} |' in text
    median = [max(r) for r in rates]  # of two epochs, the upper median
    assert f'speed bf16 / fp32 (median epochs): {median[1] / median[0]:.2f}x' in text
    other = tmp_path / 'other.safetensors'
    train(TINY, epochs=2, seed=1, data_dir=fake_dir, out=other, amp='bf16', **quick)
    with pytest.raises(SystemExit, match='more than precision'):
        mod.report(mod.runs([outs[0], other]))
    # a pair per seed: the summary sets the precisions' difference beside the seeds'
    other_fp32 = tmp_path / 'other_fp32.safetensors'
    fp32_1 = train(TINY, epochs=2, seed=1, data_dir=fake_dir, out=other_fp32, amp='none', **quick)
    acc = [
        [100 * r.metrics['test_accuracy'] for r in res],
        [100 * fp32_1.metrics['test_accuracy'], 100 * read_metadata(other)['metrics']['test_accuracy']],
    ]
    text = mod.summary([mod.runs(outs), mod.runs([other_fp32, other])])
    for seed, (a, b) in enumerate(acc):
        assert f'| {seed} | {a:.2f} | {b:.2f} | {b - a:+.2f} |' in text
    diffs = [b - a for a, b in acc]
    mean, sd = sum(diffs) / 2, abs(diffs[0] - diffs[1]) / 2**0.5
    assert f'mean difference bf16 - fp32: {mean:+.2f} points (sd {sd:.2f}, n 2)' in text
    # Student's t with 1 degree of freedom: 12.706 (two-sided 95%) and 6.314 (one-sided), from the tables
    t2, t1 = mod.t_quantile(0.975, 1), mod.t_quantile(0.95, 1)
    assert abs(t2 - 12.706) < 5e-4 and abs(t1 - 6.314) < 5e-4
    lo, hi, below = mean - t2 * sd / 2**0.5, mean + t2 * sd / 2**0.5, -(mean - t1 * sd / 2**0.5)
    assert f'95% interval of the mean difference: [{lo:+.2f}, {hi:+.2f}] points (t 12.706, 1 df)' in text
    assert f'one-sided 95%: bf16 at most {max(0.0, below):.2f} points below fp32 (t 6.314)' in text
    for q, df, t in ((0.975, 2, 4.303), (0.95, 3, 2.353), (0.975, 4, 2.776), (0.95, 30, 1.697)):
        assert abs(mod.t_quantile(q, df) - t) < 5e-4
    with pytest.raises(SystemExit, match='same two precisions'):
        mod.summary([mod.runs(outs), mod.runs([other, other_fp32])])
    monkeypatch.setattr(sys, 'argv', ['fmnist_precision_curves.py', *map(str, outs), str(other)])
    with pytest.raises(SystemExit):
        mod.main()
    assert 'give them in pairs (fp32, bf16)' in capsys.readouterr().err


def test_bf16_cpu_attention_runs_many_tokens_fused_in_fp32_and_few_as_bf16_matmuls(monkeypatch):
    """Measured on this CPU class: over 256 tokens the fp32 fused kernel was 1.3-2.7x faster than bf16, over
    16-64 tokens bf16 explicit matmuls were 1.3-3x faster than anything else (explorer.train.loop)."""
    import torch.nn.functional as F

    from explorer.core.mixers import AttentionMixer
    from explorer.train.loop import FP32_ATTENTION_TOKENS, prepare_bf16_cpu

    fused = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        fused.append(q.dtype)
        return real(q, k, v, **kw)

    monkeypatch.setattr(F, 'scaled_dot_product_attention', spy)
    plain = AttentionMixer(32, head_dim=8)
    prepared = AttentionMixer(32, head_dim=8)
    prepared.load_state_dict(plain.state_dict())
    assert prepare_bf16_cpu(prepared)['attention'] == 1
    for tokens, kernel in ((256, [torch.float32]), (64, []), (FP32_ATTENTION_TOKENS, [])):
        fused.clear()
        x = torch.randn(2, tokens, 32, generator=torch.Generator().manual_seed(tokens))
        with torch.autocast('cpu', dtype=torch.bfloat16):
            y = prepared(x.bfloat16())
        assert y.dtype == torch.bfloat16 and fused == kernel, tokens
        with torch.no_grad():
            torch.testing.assert_close(y.float(), plain(x), rtol=0.05, atol=0.05)


def test_compiled_training_runs_compiled_and_learns_what_eager_learns(fake_dir, tmp_path, capsys):
    """`explorer train --compile`: the step's model goes through torch.compile (dynamo captures graphs), the
    compile time is reported, and the checkpoint holds the same weights, under the same names, as an eager run
    of the same seed (fp32, so only the kernels' rounding differs: 10 AdamW steps stay within 1e-4)."""
    from torch._dynamo.utils import counters

    from tests.conftest import fill_dynamo_cache

    spec = tmp_path / 'tiny.json'
    spec.write_text(json.dumps(TINY))
    common = ['train', str(spec), '--epochs', '1', '--batch-size', '32', '--train-limit', '320', '--test-limit', '64']
    common += ['--data-dir', str(fake_dir), '--amp', 'none', '--threads', '1', '--quiet']
    fill_dynamo_cache()  # a server that compiled other designs before: this one still compiles
    before = counters['stats']['unique_graphs']
    assert cli_main([*common, '--compile', '--out', str(tmp_path / 'c.safetensors')]) == 0
    assert counters['stats']['unique_graphs'] > before  # dynamo compiled the model
    out = capsys.readouterr().out
    m = read_metadata(tmp_path / 'c.safetensors')['metrics']
    assert m['compile'] is True and m['recipe']['compile'] is True and m['first_step_s'] > 0
    assert f', fp32, compiled (first step {m["first_step_s"]:.0f} s); ' in out
    assert cli_main([*common, '--out', str(tmp_path / 'e.safetensors')]) == 0
    assert ', compiled (' not in capsys.readouterr().out
    eager = read_metadata(tmp_path / 'e.safetensors')['metrics']
    assert eager['compile'] is False and eager['first_step_s'] > 0
    a, b = (
        load_trained(tmp_path / 'c.safetensors')[0].state_dict(),
        load_trained(tmp_path / 'e.safetensors')[0].state_dict(),
    )
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4


def test_compile_must_be_a_boolean_and_a_resume_names_a_change_of_it(fake_dir, tmp_path):
    from explorer.train.checkpoints import load_state, save_state

    with pytest.raises(ValueError, match="compile 'yes' must be true or false"):
        train(TINY, epochs=1, data_dir=fake_dir, compile='yes', **QUICK)
    state = tmp_path / 'r.state'

    def stop(ev):
        raise Stopped

    train(TINY, epochs=1, seed=0, data_dir=fake_dir, progress=stop, state_file=state, amp='none', **QUICK)
    with pytest.raises(ValueError, match=r'another recipe \(compile: False there, True here\)'):
        train(
            TINY, epochs=1, seed=0, data_dir=fake_dir, state_file=state, resume=True, amp='none', compile=True, **QUICK
        )
    # a state written before `compile` was a recipe field ran uncompiled: it resumes without it
    old = load_state(state)
    del old['recipe']['compile']
    save_state(state, old)
    res = train(TINY, epochs=1, seed=0, data_dir=fake_dir, state_file=state, resume=True, amp='none', **QUICK)
    assert res.metrics['steps'] == 10 and res.metrics['compile'] is False


def test_the_train_api_and_tab_pass_compile_through(monkeypatch, tmp_path):
    """/train's `compile` reaches the training (its metrics say compiled and the done text names the compile
    time), a string is refused rather than read as true, and the Train tab's checkbox is an input of Train."""
    import gradio as gr

    import explorer.train.checkpoints as checkpoints
    from explorer.app.main import build_demo
    from explorer.app.train import _result_text, api_train
    from explorer.train.loop import TrainResult

    real_test_set_or_skip()
    monkeypatch.setattr(checkpoints, 'USER_DIR', tmp_path)  # the runs folder
    with pytest.raises(gr.Error, match="compile: 'false' must be true or false"):
        next(api_train(TINY, epochs=1, batch_size=32, train_limit=64, compile='false'))
    done = list(api_train(TINY, epochs=1, batch_size=32, train_limit=64, compile=True))[-1]
    assert done['kind'] == 'done' and done['metrics']['compile'] is True and done['metrics']['steps'] == 2
    text = _result_text(TrainResult(str(tmp_path / f'{done["model"]}.safetensors'), done['metrics']))
    assert f', compiled (first step {done["metrics"]["first_step_s"]:.0f} s). ' in text
    assert ' after 1 epoch (2 steps, ' in text  # not "1 epochs"

    demo = build_demo()
    box = next(b for b in demo.blocks.values() if getattr(b, 'elem_id', None) == 'mfx-train-compile')
    trains = [f for f in demo.fns.values() if box in f.inputs]
    assert len(trains) == 1 and trains[0].inputs[-1] is box


def fake_clock(monkeypatch, seconds) -> list:
    """The training loop's clocks (perf_counter, monotonic) replaced by one that moves only when a step runs (step
    n, from 1, takes seconds(n)) or when the returned list's value is moved by hand."""
    import types

    import explorer.train.loop as loop

    clock, count = [0.0], [0]
    monkeypatch.setattr(loop, 'time', types.SimpleNamespace(perf_counter=lambda: clock[0], monotonic=lambda: clock[0]))
    real_step = loop._Step._step

    def step(self, *a):
        count[0] += 1
        clock[0] += seconds(count[0])
        return real_step(self, *a)

    monkeypatch.setattr(loop._Step, '_step', step)
    return clock


def last_lr_of(events: list) -> float:
    return [ev for ev in events if ev['kind'] == 'step'][-1]['lr']


def test_a_time_budget_fits_the_schedule_to_the_steps_after_the_first(fake_dir, monkeypatch):
    """The first step carries one-time costs (torch.compile compiles in it; oneDNN builds bf16 kernels): 10 s on
    a clock where every later step takes 0.1 s. A 20 s budget then holds the first step and 100 more. Timing the
    first 20 steps with the first included (0.6 s a step) fitted 33 steps and left most of the budget unused."""
    fake_clock(monkeypatch, lambda n: 10.0 if n == 1 else 0.1)
    # batch 2: an epoch of 160 steps outlasts the budget, as a Fashion-MNIST epoch (468 steps) outlasts a short one
    res = train(TINY, epochs=500, time_budget=20.0, seed=0, data_dir=fake_dir, **{**QUICK, 'batch_size': 2})
    assert res.metrics['first_step_s'] == 10.0 and res.metrics['stopped_by'] == 'time_budget'
    assert res.metrics['steps'] == 101, res.metrics['steps']


def test_a_budget_shorter_than_twenty_steps_still_anneals_the_learning_rate(fake_dir, monkeypatch):
    """The schedule was first fitted at step 20: a budget that held fewer steps (a big model, a short budget)
    ended training at the peak learning rate. Steps of 1/8 s after a first of 1 s: a 3 s budget holds 17."""
    fake_clock(monkeypatch, lambda n: 1.0 if n == 1 else 0.125)
    events = []
    res = train(TINY, epochs=500, time_budget=3.0, seed=0, data_dir=fake_dir, progress=events.append, **QUICK)
    assert res.metrics['stopped_by'] == 'time_budget' and res.metrics['steps'] == 17
    assert last_lr_of(events) < 0.02 * 2e-3, last_lr_of(events)  # was 2e-3, the peak


def test_a_cpu_that_slows_down_mid_epoch_shortens_the_schedule_before_the_budget_cuts_it(fake_dir, monkeypatch):
    """Another job on the machine triples the step time after step 40, inside an epoch of 160 steps: the
    schedule fitted at step 20 (and next at the epoch's end) was cut by the budget at a quarter of the peak
    learning rate. Refitted every few steps at the latest steps' speed, it ends near zero."""
    fake_clock(monkeypatch, lambda n: 0.125 if n <= 40 else 0.375)
    events = []
    kw = {**QUICK, 'batch_size': 2}
    res = train(TINY, epochs=500, time_budget=10.0, seed=0, data_dir=fake_dir, progress=events.append, **kw)
    assert res.metrics['stopped_by'] == 'time_budget' and 50 <= res.metrics['steps'] <= 54, res.metrics['steps']
    assert last_lr_of(events) < 0.1 * 2e-3, last_lr_of(events)


def test_a_deadline_fits_the_schedule_to_the_time_left_with_the_evaluations_counted(fake_dir, monkeypatch):
    """The app's time limit counted the whole run (loading, every epoch's evaluation) while the schedule was
    fitted to training time only: the limit stopped runs before their learning rate decayed, reported as
    stopped by the user. A deadline now fits the schedule with the evaluations counted, and says it ended it."""
    from explorer.train import sources

    clock = fake_clock(monkeypatch, lambda n: 0.125)
    real = sources.MemorySource.evaluate

    def slow_evaluate(self, *a, **k):
        clock[0] += 0.5
        return real(self, *a, **k)

    monkeypatch.setattr(sources.MemorySource, 'evaluate', slow_evaluate)
    events = []
    kw = {**QUICK, 'eval_every_epoch': True}
    res = train(TINY, epochs=500, deadline=20.0, seed=0, data_dir=fake_dir, progress=events.append, **kw)
    # each epoch: 10 steps of 1/8 s and a 1/2 s evaluation; the final evaluation must fit before 20 s
    assert res.metrics['stopped_by'] == 'time_limit' and res.metrics['time_budget_s'] is None
    assert clock[0] <= 20.0 + 0.125 and res.metrics['steps'] >= 100, (clock[0], res.metrics['steps'])
    assert last_lr_of(events) < 0.1 * 2e-3, last_lr_of(events)
    # a deadline that does not bind changes nothing: the same weights as a run without one
    clock[0] = 0.0
    plain = train(TINY, epochs=2, seed=0, data_dir=fake_dir, **kw).model.state_dict()
    clock[0] = 0.0
    timed = train(TINY, epochs=2, seed=0, data_dir=fake_dir, deadline=1e6, **kw)
    assert timed.metrics['stopped_by'] == 'epochs' and timed.metrics['steps'] == 20
    assert all(torch.equal(plain[k], v) for k, v in timed.model.state_dict().items())


def test_a_stop_mid_epoch_keeps_its_training_time_and_gives_the_partial_epoch_its_own_row(
    fake_dir, tmp_path, monkeypatch
):
    """Stopped in the middle of an epoch, a run recorded none of that epoch's training time (0 s for a first
    epoch; a resumed budget started again from the old figure) and wrote its final evaluation over the last
    whole epoch's row, whose own step then disagreed with it."""
    from explorer.train.checkpoints import load_state

    fake_clock(monkeypatch, lambda n: 0.125)
    events, state = [], tmp_path / 'r.state'

    def stop_at_step_12(ev):
        events.append(ev)
        if ev['kind'] == 'step' and ev['step'] == 12:
            raise Stopped

    kw = {**QUICK, 'eval_every_epoch': True}
    res = train(TINY, epochs=3, seed=0, data_dir=fake_dir, progress=stop_at_step_12, state_file=state, **kw)
    assert res.metrics['stopped_by'] == 'user' and res.metrics['steps'] == 12
    assert res.metrics['train_time_s'] == 1.5 and load_state(state)['position']['train_time'] == 1.5  # was 1.25
    epoch_1 = next(ev for ev in events if ev['kind'] == 'epoch')
    first, second = res.history
    assert (first['step'], first['test_accuracy'], first['test_loss']) == (
        10,
        epoch_1['test_accuracy'],
        epoch_1['test_loss'],
    )
    assert (second['epoch'], second['step'], second['train_time']) == (1.2, 12, 1.5)
    assert (second['test_accuracy'], second['test_loss']) == (res.metrics['test_accuracy'], res.metrics['test_loss'])
    assert len(load_state(state)['position']['history']) == 1  # the resumed run writes epoch 2's row itself


def test_the_train_tab_says_on_the_first_page_why_the_design_on_screen_is_not_trainable():
    """A fresh page shows the default preset in Compose; the Train tab said "Compose a valid network first." until
    the first edit, instead of what stops this design (3 channels, 1000 classes, 224 px) and what to press."""
    from explorer.app.main import build_demo

    demo = build_demo()
    texts = [b.value for b in demo.blocks.values() if type(b).__name__ == 'Markdown' and isinstance(b.value, str)]
    ready = [t for t in texts if 'trainable' in t or 'Compose a valid network' in t]
    assert len(ready) == 1 and ready[0].startswith('**Not trainable as it is:**'), ready
    assert 'in\\_chans is 3' in ready[0] and 'Press *Adapt to Fashion-MNIST*' in ready[0]


def _diverging_at(monkeypatch, n: int) -> None:
    """The step function returns a NaN loss from its n-th call on (as a run with an exploding loss does)."""
    from explorer.train import loop

    real, calls = loop._Step._step, []

    def step(self, *a):
        out = real(self, *a)
        calls.append(1)
        return (float('nan'), *out[1:]) if len(calls) >= n else out

    monkeypatch.setattr(loop._Step, '_step', step)


def test_a_run_whose_loss_becomes_nan_stops_there_and_writes_no_checkpoint(fake_dir, tmp_path, monkeypatch):
    from explorer.train.loop import Diverged

    _diverging_at(monkeypatch, 4)
    out, state = tmp_path / 'x.safetensors', tmp_path / 'x.safetensors.state'
    seen = []
    with pytest.raises(Diverged, match=r'training diverged at step 4 of 20 \(epoch 0.40\): the loss became nan; '
                                       r'try a lower learning rate \(this run: 0.002\)') as e:  # fmt: skip
        train(TINY, epochs=2, seed=0, data_dir=fake_dir, out=out, state_file=state, progress=seen.append, **QUICK)
    assert 'No checkpoint was written' in str(e.value)
    assert not out.exists() and not state.exists()
    assert all(ev['kind'] != 'step' or ev['step'] < 4 for ev in seen)  # the NaN step was never reported


def test_a_run_that_diverges_after_an_epoch_leaves_no_state_to_resume(fake_dir, tmp_path, monkeypatch):
    """Review: the state saved after epoch 1 stayed behind when epoch 2 diverged, so the next run with a lower
    learning rate, as the error advises, was refused ('an interrupted run is saved'), and resuming it (same
    recipe) diverges again."""
    from explorer.train.loop import Diverged

    _diverging_at(monkeypatch, 14)  # 10 steps an epoch: the state of epoch 1 was written
    out, state = tmp_path / 'x.safetensors', tmp_path / 'x.safetensors.state'
    with pytest.raises(Diverged, match=r'step 14 of 20 .*written \(nor is the state of its last epoch kept'):
        train(TINY, epochs=2, seed=0, data_dir=fake_dir, out=out, state_file=state, **QUICK)
    assert not out.exists() and not state.exists()


def test_the_cli_names_a_diverged_run_in_one_line(fake_dir, tmp_path, monkeypatch, capsys):
    _diverging_at(monkeypatch, 2)
    spec = tmp_path / 'tiny.json'
    spec.write_text(json.dumps(TINY))
    out = tmp_path / 'x.safetensors'
    rc = cli_main(['train', str(spec), '--epochs', '1', '--batch-size', '32', '--data-dir', str(fake_dir), '--quiet',
                   '--threads', '1', '--out', str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and 'error: training diverged at step 2 of 10' in err and 'Traceback' not in err, err
    assert not out.exists()


def test_train_takes_a_trained_checkpoint_as_spec_and_trains_its_architecture_from_scratch(fake_dir, tmp_path):
    from explorer.train.checkpoints import ASSET_DIR

    shipped = ASSET_DIR / 'fmnist_hybrid.safetensors'
    out = tmp_path / 'again.safetensors'
    rc = cli_main(['train', str(shipped), '--epochs', '0.1', '--batch-size', '32', '--data-dir', str(fake_dir),
                   '--quiet', '--threads', '1', '--out', str(out)])  # fmt: skip
    assert rc == 0
    assert read_metadata(out)['spec'] == read_metadata(shipped)['spec']
    assert read_metadata(out)['metrics']['steps'] == 1  # 320 images x 0.1 epoch / 32


def test_the_evaluation_batch_is_sized_within_the_limits(monkeypatch):
    """Evaluation ran 1000 test images at a time whatever the design: a 64 px stride-1 design that trains within the
    8 GiB activation limit at batch 128 needed about 17 GiB for one evaluation batch (a /train request could take
    the server down). The evaluation batch is now the largest within the limits."""
    from explorer.core.spec import ArchSpec
    from explorer.measure.analytic import analytic_cost
    from explorer.measure.guard import Limits, largest_batch
    from explorer.train import loop

    spec = ArchSpec.from_dict(
        {
            'name': 'wide_grid',
            'img_size': 64,
            'num_classes': 10,
            'in_chans': 1,
            'stem': {'kernel_size': 3, 'stride': 1, 'padding': 1},
            'stages': [{'mixer': 'pooling', 'depth': 1, 'dim': 96}],
        }
    )
    per_image_gib = analytic_cost(spec).act_elements * 4 / 2**30
    b = largest_batch(spec, 1000)
    assert 1 <= b < 1000 and b * per_image_gib <= 8 < (b + 1) * per_image_gib
    assert largest_batch(spec, 10) == 10 and largest_batch(spec, 1000, limits=Limits(max_act_gib=1e-6)) == 1
    seen = {}

    def stop(spec, dataset, cfg, *args):
        seen['eval'] = cfg.eval_batch_size
        raise RuntimeError('stop here')

    monkeypatch.setattr(loop, '_open_data', stop)
    with pytest.raises(RuntimeError, match='stop here'):
        loop.train(spec, epochs=1, batch_size=1)
    assert seen['eval'] == b


def test_a_resume_on_other_data_is_refused_naming_what_changed(fake_dir, tmp_path):
    """The state's epoch order indexes the data it was written for: resumed with another --train-limit, a run
    trained extra epochs and recorded them, or ended in an IndexError traceback."""
    from explorer.train.checkpoints import load_state, save_state

    state = tmp_path / 'r.state'

    def stop(ev):
        raise Stopped

    kw = dict(epochs=1, seed=0, data_dir=fake_dir, state_file=state, amp='none', **QUICK)
    train(TINY, progress=stop, **kw)
    with pytest.raises(
        ValueError, match=r'other data \(train_limit: None there, 128 here; steps_per_epoch: 10 there, 4 here\)'
    ):
        train(TINY, resume=True, **{**kw, 'train_limit': 128})
    # a state written before the data was recorded resumes as before
    old = load_state(state)
    del old['data']
    save_state(state, old)
    assert train(TINY, resume=True, **kw).metrics['steps'] == 10


def test_an_early_fit_on_slow_steps_does_not_shorten_the_warm_up_for_good(fake_dir, monkeypatch):
    """The fit at step 3 times two steps; when they are slow (one-time costs, a burst of other work) it shortened
    the warm-up, and nothing restored it when later fits gave the schedule its planned length back. Steps 1-3 of
    1 s, then 10 ms: a 60 s deadline never binds, and from step 20 on the learning rate is the recipe's again."""
    clock = fake_clock(monkeypatch, lambda n: 1.0 if n <= 3 else 0.01)
    kw = {**QUICK, 'warmup_epochs': 5}  # 50 steps of warm-up
    plain, timed = [], []
    res_t = train(TINY, epochs=30, seed=0, data_dir=fake_dir, deadline=60.0, progress=timed.append, **kw)
    assert clock[0] < 10  # (the fake clock's steps 1-3 were this run's)
    res = train(TINY, epochs=30, seed=0, data_dir=fake_dir, progress=plain.append, **kw)
    assert res.metrics['steps'] == res_t.metrics['steps'] == 300 and res_t.metrics['stopped_by'] == 'epochs'
    lrs = [{ev['step']: ev['lr'] for ev in events if ev['kind'] == 'step'} for events in (plain, timed)]
    assert all(lrs[0][s] == lrs[1][s] for s in range(20, 301)), [(s, lrs[0][s], lrs[1][s]) for s in (20, 40)]


def test_a_deadline_found_spent_before_a_step_ends_the_run_there(fake_dir, monkeypatch):
    """The step ran anyway and then needed an evaluation of its own: with steps of 1/8 s and evaluations of 2 s,
    a run with a 4 s deadline ended at 5.4 s (the first epoch's evaluation, at 3.25 s, could have been the last)."""
    from explorer.train import sources

    clock = fake_clock(monkeypatch, lambda n: 0.125)
    real, ends = sources.MemorySource.evaluate, []

    def slow_evaluate(self, *a, **k):
        clock[0] += 2.0
        ends.append(clock[0])
        return real(self, *a, **k)

    monkeypatch.setattr(sources.MemorySource, 'evaluate', slow_evaluate)
    kw = {**QUICK, 'eval_every_epoch': True}
    res = train(TINY, epochs=500, seed=0, data_dir=fake_dir, deadline=4.0, **kw)
    assert ends == [3.25] and clock[0] == 3.25 and res.metrics['steps'] == 10
    assert res.metrics['stopped_by'] == 'time_limit' and len(res.history) == 1
    # a deadline already past: no step is trained (one was, then evaluated on its own); an infinite one is none
    clock[0], ends[:] = 10.0, []
    res = train(TINY, epochs=1, seed=0, data_dir=fake_dir, deadline=5.0, **kw)
    assert res.metrics['steps'] == 0 and res.metrics['stopped_by'] == 'time_limit' and len(ends) == 1
    clock[0] = 0.0
    assert train(TINY, epochs=1, seed=0, data_dir=fake_dir, deadline=math.inf, **kw).metrics['steps'] == 10


def test_a_batch_of_one_through_a_batchnorm_of_one_value_is_refused_before_any_data():
    """`explorer train --batch-size 1` (and /train, which allows 1) of a spec with a BatchNorm head after the
    pooling failed at the first step with torch's 'Expected more than 1 value per channel when training'."""
    from explorer.train.fit import batch_norm_problem

    s = {**tiny_spec(mixers=('pooling', 'pooling'), dims=(8, 16), depths=(1, 1)), 'in_chans': 1}
    head = ArchSpec.from_dict({**s, 'head_norm': 'batchnorm'})
    with pytest.raises(ValueError, match=r'^batch_size 1: the BatchNorm of the head would see one value per channel'):
        train(head, epochs=1, batch_size=1, train_limit=4, test_limit=4, workers=0)
    assert batch_norm_problem(head, 2) is None
    tiny = ArchSpec.from_dict({**s, 'img_size': 8, 'norm': 'batchnorm'})  # 8 px: S2 is a 1x1 grid
    assert batch_norm_problem(tiny, 1).startswith('batch_size 1: the BatchNorm of S2 blocks')
    assert batch_norm_problem(ArchSpec.from_dict({**s, 'norm': 'batchnorm'}), 1) is None


def test_evaluation_counts_give_the_hand_computed_accuracy_loss_and_per_class():
    """A model that always answers class 3 with logit ln 2 (all others 0) on two examples of each of 10 classes:
    accuracy 2/20, class 3 right every time and the others never, and cross-entropy -ln(2/11) on the class-3
    examples, ln 11 on the rest. (Accuracy was only ever compared with the same code's own re-evaluation.)"""
    import math

    from explorer.train.sources import counts_to_metrics, eval_counts

    class Constant(torch.nn.Module):
        def forward(self, x):
            out = torch.zeros(x.shape[0], 10)
            out[:, 3] = math.log(2)
            return out

    y = torch.arange(10).repeat(2)
    batches = [(torch.zeros(10, 1, 4, 4), y[:10]), (torch.zeros(10, 1, 4, 4), y[10:])]
    classes = [f'c{i}' for i in range(10)]
    m = counts_to_metrics(eval_counts(Constant(), batches, 10, torch.device('cpu')), classes)
    assert (m['n'], m['correct'], m['accuracy']) == (20, 2, 0.1)
    assert m['per_class'] == {c: (1.0 if c == 'c3' else 0.0) for c in classes}
    assert m['loss'] == pytest.approx((2 * math.log(11 / 2) + 18 * math.log(11)) / 20, rel=1e-6)


def _cli_train(fake_dir, tmp_path, *extra) -> tuple[int, str, str]:
    from tests.conftest import run_cli

    spec = tmp_path / 'tiny.json'
    spec.write_text(json.dumps(TINY))
    return run_cli('train', str(spec), '--data-dir', str(fake_dir), '--batch-size', '32', '--threads', '1', *extra)


def test_cli_train_json_prints_only_json_on_stdout_and_the_epochs_on_stderr(fake_dir, tmp_path):
    """Review s23: `train --json` printed its epoch lines on stdout before the JSON, which no JSON reader took."""
    rc, out, err = _cli_train(fake_dir, tmp_path, '--epochs', '2', '--out', str(tmp_path / 'j.safetensors'), '--json')
    assert rc == 0, err
    assert json.loads(out)['epochs'] == 2
    assert 'epoch 1:' in err and 'epoch 2:' in err


def test_auto_augment_is_refused_for_fashion_mnist_rather_than_recorded_unapplied(fake_dir, tmp_path):
    """Review s23: `train --aa garbage` on Fashion-MNIST trained as without it, and the checkpoint's recipe said
    auto_augment 'garbage'."""
    out = tmp_path / 'aa.safetensors'
    rc, _, err = _cli_train(fake_dir, tmp_path, '--epochs', '0.1', '--quiet', '--aa', 'garbage', '--out', str(out))
    assert rc == 2 and err.startswith('error:') and '--aa' in err and 'image folders only' in err, err
    assert not out.exists()
    with pytest.raises(ValueError, match='auto_augment .* applies to image folders only'):
        train(TINY, epochs=0.1, data_dir=fake_dir, auto_augment='rand-m9-mstd0.5', **QUICK)


def test_cli_train_says_when_the_time_budget_ended_the_run(fake_dir, tmp_path, monkeypatch):
    """Review s23: a run cut by --time-budget read '0.3 epochs (3 steps, ...)' as if 0.3 epochs were the plan."""
    fake_clock(monkeypatch, lambda n: 1.0)
    rc, out, err = _cli_train(
        fake_dir, tmp_path, '--epochs', '1', '--time-budget', '3', '--out', str(tmp_path / 't.safetensors')
    )
    assert rc == 0, err
    assert 'time budget reached; 1 epoch asked for' in out, out
    assert 'with 1 thread,' in out and '1 threads' not in out, out
    rc, out, err = _cli_train(fake_dir, tmp_path, '--epochs', '0.1', '--out', str(tmp_path / 'u.safetensors'))
    assert rc == 0 and '(1 step,' in out and 'asked for' not in out, out
