"""Training beyond one process: torchrun with DistributedDataParallel (gloo, 2 CPU processes) gives the weights a
single process gets with the same global batch; a run stopped on one rank stops on all and resumes in one
process; image folders in ImageNet's layout train through timm's data pipeline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from explorer.train.checkpoints import load_trained, read_metadata
from explorer.train.data import DatasetNotFound, find_dataset
from explorer.train.folder import FolderError, check_layout
from explorer.train.loop import train

from .conftest import tiny_spec

pytestmark = pytest.mark.train
ROOT = Path(__file__).resolve().parents[1]


def _fmnist():
    try:
        find_dataset('fashion-mnist', split='train')
    except DatasetNotFound:
        pytest.skip('Fashion-MNIST is not installed here (apt install dataset-fashion-mnist)')


def _spec_file(tmp_path: Path, **kw) -> Path:
    # LayerNorm everywhere and no drop-path: nothing in the model depends on which process saw which example
    spec = tiny_spec(in_chans=kw.pop('in_chans', 1), dims=(8, 16, 32), **kw)
    path = tmp_path / 'tiny.json'
    path.write_text(json.dumps(spec))
    return path


def _torchrun(*args, nproc: int = 2, **popen) -> subprocess.Popen:
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}']
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    return subprocess.Popen([*cmd, '-m', 'explorer', 'train', *map(str, args)], env=env, text=True, **popen)


def _explorer(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    cmd = [sys.executable, '-m', 'explorer', 'train', *map(str, args)]
    return subprocess.run(cmd, env=env, text=True, capture_output=True, timeout=300)


def _close(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


# fp32: the equalities below hold to summation order in fp32; under bf16 (the default on CPUs with bf16 in
# hardware) rounding moves the weights about 2e-3 after 32 steps
COMMON = ['--train-limit', 512, '--test-limit', 200, '--seed', 5, '--amp', 'none', '--quiet']  # [:-1]: not quiet


def test_two_processes_train_the_weights_of_one_with_the_same_global_batch(tmp_path):
    _fmnist()
    spec = _spec_file(tmp_path)
    run = _torchrun(spec, *COMMON, '--epochs', 2, '--batch-size', 16, '--out', tmp_path / 'two.safetensors')
    assert run.wait(timeout=300) == 0
    one = _explorer(spec, *COMMON, '--epochs', 2, '--batch-size', 32, '--out', tmp_path / 'one.safetensors')
    assert one.returncode == 0, one.stderr
    two_w, one_w = load_file(tmp_path / 'two.safetensors'), load_file(tmp_path / 'one.safetensors')
    assert _close(two_w, one_w) < 1e-4  # 32 AdamW steps; only summation order differs
    meta = read_metadata(tmp_path / 'two.safetensors')['metrics']
    assert (meta['processes'], meta['global_batch'], meta['steps']) == (2, 32, 32)
    # a 16-per-process run is not the same as a 16-image single run (the global batch is what counts)
    other = _explorer(spec, *COMMON, '--epochs', 2, '--batch-size', 16, '--out', tmp_path / 'small.safetensors')
    assert other.returncode == 0
    assert _close(load_file(tmp_path / 'small.safetensors'), one_w) > 1e-3


def _pid_of_rank(parent: int, rank: int) -> int | None:
    for child in Path(f'/proc/{parent}/task/{parent}/children').read_text().split():
        env = Path(f'/proc/{child}/environ').read_bytes().split(b'\0')
        if f'RANK={rank}'.encode() in env:
            return int(child)
    return None


def test_a_stop_on_one_rank_stops_all_and_the_state_resumes_in_one_process(tmp_path):
    _fmnist()
    spec = _spec_file(tmp_path)
    args = [*COMMON[:-1], '--train-limit', 2048, '--epochs', 6]
    out = tmp_path / 'run.safetensors'
    run = _torchrun(spec, *args, '--batch-size', 16, '--out', out, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    for line in run.stdout:  # rank 0 prints one line per epoch
        if line.startswith('epoch 1:'):
            break
    rank1 = _pid_of_rank(run.pid, 1)
    assert rank1 is not None
    os.kill(rank1, signal.SIGTERM)  # only rank 1 is asked to stop
    assert run.wait(timeout=120) != 0  # stopped, not finished (torchrun reports the workers' status 130)
    state = torch.load(tmp_path / 'run.safetensors.state', weights_only=True)
    stopped_at = state['position']['step']
    assert 64 <= stopped_at < 6 * 64, stopped_at  # after epoch 1, before the end
    assert read_metadata(out)['metrics']['stopped_by'] == 'user'

    resumed = _explorer(spec, *args, '--batch-size', 32, '--out', out, '--resume')
    assert resumed.returncode == 0, resumed.stderr
    assert not (tmp_path / 'run.safetensors.state').exists()
    whole = _explorer(spec, *args, '--batch-size', 32, '--out', tmp_path / 'whole.safetensors')
    assert whole.returncode == 0
    assert _close(load_file(out), load_file(tmp_path / 'whole.safetensors')) < 1e-4
    assert read_metadata(out)['metrics']['steps'] == 6 * 64

    again = _explorer(spec, *args, '--batch-size', 16, '--out', out, '--resume')
    assert again.returncode == 2 and 'no interrupted run' in again.stderr


# ---- image folders ---------------------------------------------------------------------------------------
COLOURS = {'red': (200, 30, 30), 'green': (30, 200, 30), 'blue': (30, 30, 200)}


def make_folder(root: Path, train: int = 12, val: int = 4) -> Path:
    """A tiny ImageFolder tree: one class per colour, noisy 40x40 PNGs."""
    gen = torch.Generator().manual_seed(0)
    for split, n in (('train', train), ('val', val)):
        for name, rgb in COLOURS.items():
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                noise = torch.randint(-30, 30, (40, 40, 3), generator=gen)
                px = (torch.tensor(rgb) + noise).clamp(0, 255).to(torch.uint8).numpy()
                Image.fromarray(px).save(d / f'{i}.png')
    return root


def test_an_image_folder_trains_with_timms_pipeline_and_records_it(tmp_path):
    root = make_folder(tmp_path / 'data')
    spec = tiny_spec(in_chans=3, dims=(8, 16, 32))  # num_classes 10: set to the 3 class folders
    res = train(
        spec,
        'imagefolder',
        epochs=4,
        batch_size=6,
        data_dir=root,
        out=tmp_path / 'c.safetensors',
        workers=0,
        lr=5e-3,
        warmup_epochs=0.5,
    )
    info = read_metadata(res.checkpoint)
    assert info['dataset'] == 'imagefolder' and info['classes'] == ['blue', 'green', 'red']
    pre = info['preprocessing']
    assert pre['kind'] == 'timm' and pre['input_size'] == [3, 32, 32] and pre['crop_pct'] == 0.875
    assert pre['mean'] == pytest.approx([0.485, 0.456, 0.406])  # timm's ImageNet default for a new design
    assert res.metrics['test_n'] == 12 and res.metrics['steps'] == 4 * 6
    assert res.metrics['test_accuracy'] > 0.5  # three flat colours: learnt in 24 steps
    model, spec2, info2 = load_trained(res.checkpoint)
    assert spec2.num_classes == 3 and info2['preprocessing']['kind'] == 'timm'
    from explorer.train.checkpoints import list_trained

    assert not list_trained([tmp_path])  # the app lists Fashion-MNIST runs only

    # and out as a timm model: the folder run's data config becomes its pretrained_cfg, the weights load offline
    import importlib.util

    import timm

    from explorer.train.export import export_design

    exported = export_design(res.checkpoint, tmp_path / 'out', name='colours_t0', onnx=True)
    assert exported.onnx.ok, exported.onnx.error
    found = importlib.util.spec_from_file_location('colours_t0', exported.files['module'])
    sys.modules['colours_t0'] = module = importlib.util.module_from_spec(found)  # timm's registry looks it up
    found.loader.exec_module(module)
    net = timm.create_model('colours_t0', pretrained=True).eval()
    cfg = timm.data.resolve_data_config(model=net)
    assert (
        cfg['input_size'] == (3, 32, 32)
        and cfg['crop_pct'] == 0.875
        and cfg['mean'] == pytest.approx((0.485, 0.456, 0.406))
    )
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), model(x))


def test_an_image_folder_trains_in_two_processes(tmp_path):
    root = make_folder(tmp_path / 'data')
    spec = _spec_file(tmp_path, in_chans=3)
    out = tmp_path / 'f.safetensors'
    run = _torchrun(
        spec, '--dataset', 'imagefolder', '--data-dir', root, '--epochs', 1, '--batch-size', 3, '--workers', 0,
        '--quiet', '--out', out,
    )  # fmt: skip
    assert run.wait(timeout=300) == 0
    m = read_metadata(out)['metrics']
    assert (m['processes'], m['global_batch'], m['steps'], m['test_n']) == (2, 6, 6, 12)


def test_image_folder_problems_are_named(tmp_path):
    with pytest.raises(FolderError, match='does not exist'):
        check_layout(tmp_path / 'nowhere')
    (tmp_path / 'a' / 'train' / 'x').mkdir(parents=True)
    with pytest.raises(FolderError, match='no val/ folder'):
        check_layout(tmp_path / 'a')
    root = make_folder(tmp_path / 'b')
    (root / 'val' / 'red').rename(root / 'val' / 'rouge')
    with pytest.raises(FolderError, match="only in train/: \\['red'\\].*only in val/: \\['rouge'\\]"):
        check_layout(root)
    good = make_folder(tmp_path / 'c')
    with pytest.raises(ValueError, match='in_chans is 1; image folders are read as RGB'):
        train(tiny_spec(in_chans=1), 'imagefolder', data_dir=good, workers=0)
    with pytest.raises(ValueError, match='amp fp16 needs a CUDA device'):
        train(tiny_spec(in_chans=3), 'imagefolder', data_dir=good, amp='fp16', device='cpu')
    with pytest.raises(ValueError, match="amp 'fp8' is not known"):
        train(tiny_spec(in_chans=3), 'imagefolder', data_dir=good, amp='fp8')
    with pytest.raises(ValueError, match='fewer than one global batch'):
        train(tiny_spec(in_chans=3), 'imagefolder', data_dir=good, batch_size=64, workers=0)


def test_bf16_autocast_trains_on_the_cpu(tmp_path):
    _fmnist()
    res = train(tiny_spec(in_chans=1), epochs=1, batch_size=32, train_limit=64, test_limit=64, amp='bf16')
    assert res.metrics['amp'] == 'bf16' and res.metrics['steps'] == 2
    assert all(p.dtype == torch.float32 for p in res.model.parameters())  # autocast: fp32 master weights
    assert torch.isfinite(torch.tensor(res.metrics['test_loss']))


def test_the_cli_tells_how_to_run_at_scale():
    out = subprocess.run([sys.executable, '-m', 'explorer', 'train', '--help'], capture_output=True, text=True)
    assert 'torchrun --nproc_per_node N -m explorer train' in ' '.join(out.stdout.split())


@pytest.mark.parametrize('preset', ['caformer_s18', 'fmnist'])
def test_the_train_tabs_scale_commands_parse_as_the_cli_reads_them(preset):
    import shlex

    from explorer.app.train import scale_values
    from explorer.cli import build_parser
    from explorer.core.catalog import get_preset
    from explorer.core.spec import ArchSpec

    spec = get_preset('caformer_s18') if preset == 'caformer_s18' else tiny_spec(in_chans=1)
    text, path = scale_values(spec)
    assert Path(path).is_file() and ArchSpec.from_dict(json.loads(Path(path).read_text())) == ArchSpec.from_dict(
        spec
    )  # the file the commands name
    first = text.split('torchrun --nproc_per_node 8 ')[1].split('\n#')[0].replace('\\\n', ' ')
    argv = shlex.split(first)
    assert argv[:3] == ['-m', 'explorer', 'train'] and argv[3] == Path(path).name
    args = build_parser().parse_args(argv[2:])
    assert args.dataset == ('imagefolder' if preset == 'caformer_s18' else 'fashion-mnist')
    if preset == 'caformer_s18':
        assert (args.batch_size, args.lr, args.amp, args.epochs) == (128, 0.001, 'bf16', 300)
