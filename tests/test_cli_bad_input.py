"""Bad input to the command line gets one clear line naming what is wrong, exit status 2, and no traceback, before
any work is lost (found by a sweep of every command: each case here was a traceback, an out-of-memory kill, a
silent overwrite or a wrong message before)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from explorer.train.checkpoints import ASSET_DIR, read_metadata

from .conftest import run_cli, tiny_spec

CHECKPOINT = ASSET_DIR / 'fmnist_hybrid.safetensors'
IMAGE = ASSET_DIR.parent / 'images' / 'camera_gray.png'
SPECS = ASSET_DIR / 'specs'
HUGE = {
    'name': 'huge',
    'img_size': 32,
    'in_chans': 1,
    'num_classes': 10,
    'stages': [{'mixer': 'pooling', 'depth': 64, 'dim': 2048, 'mlp_ratio': 16}] * 3,
}  # 26 G params in a 1.6 MB checkpoint (in the sweep: 58 G)


def refused(*argv, within: float = 30.0) -> str:
    """Run `explorer ARGV`; assert the clear refusal; its stderr."""
    t0 = time.perf_counter()
    rc, out, err = run_cli(*argv)
    assert rc == 2 and err.startswith(('error:', 'usage:')) and 'Traceback' not in err, (rc, out, err)
    assert time.perf_counter() - t0 < within, err
    return err


def tampered(tmp_path: Path, name: str = 'ck', tensors=None, **metadata) -> str:
    """A copy of a shipped checkpoint with some metadata fields replaced (None: removed) or tensors changed."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(CHECKPOINT), framework='numpy') as f:
        meta = dict(f.metadata())
    for k, v in metadata.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v if isinstance(v, str) else json.dumps(v)
    state = load_file(str(CHECKPOINT))
    if tensors:
        state = tensors(state)
    path = tmp_path / f'{name}.safetensors'
    save_file(state, str(path), metadata=meta)
    return str(path)


def test_a_small_checkpoint_or_spec_naming_a_huge_model_is_refused_before_it_is_built(tmp_path):
    """A 1.6 MB checkpoint whose spec is 26 G params (in the sweep, 58 G): `evaluate` and `export` were
    OOM-killed; `show` and `profile` built such specs whole."""
    ck = tampered(tmp_path, spec=HUGE)
    assert 'params' in refused('evaluate', ck)
    assert 'params' in refused('export', ck, '--to', str(tmp_path / 'ex'))
    spec = tmp_path / 'huge.json'
    spec.write_text(json.dumps(HUGE))
    assert 'params' in refused('show', str(spec))
    att = tmp_path / 'att.json'  # 333 k params, 2.8 TMACs at 1536 px: fvcore ran past a minute
    att.write_text(
        json.dumps({'name': 'att', 'img_size': 1536, 'stages': [{'mixer': 'attention', 'depth': 1, 'dim': 64}]})
    )
    assert '--method analytic' in refused('profile', str(att), '--method', 'fvcore')
    rc, out, err = run_cli('profile', str(att), '--json')  # the default (both): the analytic counts, said so
    assert rc == 0 and 'fvcore not run' in err
    d = json.loads(out)
    assert d['verified'] is None and d['method'] == 'analytic' and d['macs'] > 2e12


@pytest.mark.parametrize(
    'change, message',
    [
        ({'spec': None}, "its metadata has no 'spec'"),
        ({'history': '{not json'}, "metadata 'history' is not readable JSON"),
        ({'history': '[' * 100_000 + ']' * 100_000}, "metadata 'history' is not readable JSON"),
        ({'metrics': [1]}, "metadata 'metrics' is a list, not a dict"),
        ({'preprocessing': [1, 2, 3]}, "metadata 'preprocessing' is a list"),
        ({'preprocessing': {'img_size': 32, 'foo': 1}}, 'its preprocessing does not read'),
        ({'preprocessing': {'img_size': 1_000_000}}, "img_size 1000000 is not the spec's 32"),
        ({'preprocessing': {'img_size': 32, 'std': 0}}, 'std 0 is not positive'),
    ],
)
def test_evaluate_names_what_is_damaged_in_a_checkpoint(tmp_path, change, message):
    assert message in refused('evaluate', tampered(tmp_path, **change))


def test_evaluate_names_weights_that_do_not_match_and_image_folder_runs(tmp_path):
    def drop_one(state):
        state.pop(next(iter(state)))
        return state

    assert 'its weights do not match its spec' in refused('evaluate', tampered(tmp_path, tensors=drop_one))
    ck = tampered(tmp_path, 'folder', preprocessing={'kind': 'timm', 'input_size': [1, 32, 32]})
    assert 'trained on an image folder' in refused('evaluate', ck)


def test_attribute_options_are_bounded_and_its_output_checked_first(tmp_path):
    image = str(IMAGE)
    args = ('attribute', str(CHECKPOINT), image, '--method', 'saliency', '--no-deletion')
    png = str(tmp_path / 'a.png')
    assert '--steps' in refused(*args, '--out', png, '--steps', '1000000000')  # a list of 10**9 nodes
    assert '--batch' in refused(*args, '--out', png, '--batch', '-1')  # KeyError
    assert '--seed' in refused(*args, '--out', png, '--seed', str(10**20))  # "Overflow when unpacking long long"
    blocker = tmp_path / 'regular'
    blocker.write_text('x')
    assert 'is a file' in refused(*args, '--out', str(blocker / 'x.png'))  # FileExistsError after the work
    folder = tmp_path / 'd.png'
    folder.mkdir()
    assert 'is a folder' in refused(*args, '--out', str(folder))
    victim = tmp_path / 'victim.png'
    victim.write_bytes(Path(image).read_bytes())
    before = victim.read_bytes()
    assert 'would replace it' in refused(*args[:2], str(victim), *args[3:], '--out', str(victim))
    assert victim.read_bytes() == before
    assert 'must end in .png' in refused('mixing-map', str(CHECKPOINT), '--out', str(tmp_path / 'm.txt'))


def test_the_explanation_bounds_its_own_numbers():
    """The library checks what the CLI's options check, for every caller."""
    from PIL import Image

    from explorer.core.catalog import load_spec
    from explorer.explain.session import explain, open_model

    m = open_model(load_spec(SPECS / 'fmnist_hybrid.json'), 'random')
    image = Image.new('L', (28, 28))
    for kwargs, name in (({'n_steps': 10**9}, 'steps'), ({'batch': 0}, 'batch'), ({'seed': -1}, 'seed')):
        with pytest.raises(ValueError, match=rf'^{name}: .* must be an integer in'):
            explain(m, image, 'ig', deletion=False, **kwargs)


def test_outputs_that_cannot_be_written_are_named_before_the_work(tmp_path, monkeypatch):
    blocker = tmp_path / 'regular'
    blocker.write_text('x')
    assert "'--to'" not in refused('export', str(CHECKPOINT), '--to', str(blocker / 'sub'))
    assert 'is a file' in refused('export', str(CHECKPOINT), '--to', str(blocker / 'sub'))
    space = str(Path(__file__).parents[1] / 'presets' / 'spaces' / 'metaformer_hybrid.json')
    db = f'sqlite:///{tmp_path}/s.db'
    assert 'is a file, not a folder' in refused(
        'search', space, '--trials', '2', '--storage', db, '--out', str(blocker)
    )
    monkeypatch.setenv('EXPLORER_LATENCY_DIR', str(blocker))
    assert 'EXPLORER_LATENCY_DIR' in refused('calibrate', '--designs', '2', '--holdout', '0', '--rounds', '1')
    spec = tmp_path / 'victim.json'
    spec.write_text((Path(__file__).parents[1] / 'presets' / 'poolformer_s12.json').read_text())
    before = spec.read_text()
    assert 'would replace it' in refused('train', str(spec), '--out', str(spec))
    assert spec.read_text() == before
    ck = tmp_path / 'victim.safetensors'  # a checkpoint as SPEC: its architecture is read from the --out file
    ck.write_bytes(CHECKPOINT.read_bytes())
    assert 'would replace it' in refused('train', str(ck), '--out', str(ck), '--overwrite')
    assert ck.read_bytes() == CHECKPOINT.read_bytes()


def test_files_that_are_not_what_they_claim_are_named(tmp_path):
    text_pt = tmp_path / 'w.pt'
    text_pt.write_text('hello')
    image = str(IMAGE)
    assert 'is not a readable PyTorch file' in refused(
        'predict', str(SPECS / 'fmnist_hybrid.json'), image, '--weights', str(text_pt)
    )
    binary = tmp_path / 'space.json'
    binary.write_bytes(b'\xff\xfe\x00garbage')
    assert 'cannot read it as a text file' in refused('search', str(binary), '--trials', '1')
    space = json.loads((Path(__file__).parents[1] / 'presets' / 'spaces' / 'fmnist_small_budget.json').read_text())
    space['training'] = {'epochs': 1e9, 'train_limit': -1}
    bad = tmp_path / 'train_space.json'
    bad.write_text(json.dumps(space))
    err = refused('search', str(bad), '--trials', '1')
    assert 'training.epochs: 1000000000.0 is not a number in (0, 1,000]' in err and 'training.train_limit' in err
    folder = tmp_path / 'dir.json'
    folder.mkdir()
    assert 'is a folder, not a spec file' in refused('show', str(folder))
    sparse = tmp_path / 'big.json'
    with open(sparse, 'wb') as f:
        f.truncate(2**30)  # 1 GiB, read whole before its length was checked (2.8 GB of memory)
    assert 'over the limit for a spec' in refused('show', str(sparse), within=5)


def test_a_spec_with_other_than_one_or_three_channels_cannot_take_an_image(tmp_path):
    spec = tmp_path / 'c16.json'
    spec.write_text(json.dumps({'name': 'c16', 'img_size': 32, 'in_chans': 16, 'num_classes': 10,
                                'stages': [{'mixer': 'pooling', 'depth': 1, 'dim': 16}]}))  # fmt: skip
    image = str(IMAGE)
    assert '16-channel input' in refused('predict', str(spec), image, '--weights', 'random')


def test_a_damaged_training_state_is_named_without_advice_to_unpickle_it(tmp_path):
    out = tmp_path / 'r.safetensors'
    for content in (b'hello', b'\x80\x04\x95garbage'):
        (tmp_path / 'r.safetensors.state').write_bytes(content)
        err = refused('train', str(SPECS / 'fmnist_identity.json'), '--out', str(out), '--resume', '--epochs', '1')
        assert 'is not a' in err and 'weights_only' not in err, err


def test_an_image_folder_with_the_wrong_layout_is_named(tmp_path):
    root = tmp_path / 'data'
    (root / 'train' / 'a').mkdir(parents=True)
    spec = tmp_path / 'rgb.json'  # image folders are read as RGB
    spec.write_text(json.dumps({**json.loads((SPECS / 'fmnist_identity.json').read_text()), 'in_chans': 3}))
    err = refused('train', str(spec), '--dataset', 'imagefolder', '--data-dir', str(root), '--workers', '0',
                  '--out', str(tmp_path / 'x.safetensors'))  # fmt: skip
    assert 'val' in err


def test_a_calibration_file_of_the_wrong_shape_reads_as_not_calibrated(tmp_path, monkeypatch):
    from explorer.measure import latency as lat

    monkeypatch.setenv(lat.ENV_DIR, str(tmp_path))
    fp = lat.fingerprint('cpu', 'float32', 1)
    path = lat.model_path(fp)
    bad = {'format': lat.FORMAT, 'fingerprint': fp.__dict__, 'coef': [1, 2], 'baseline_s_per_mac': 1e-10}
    path.write_text(json.dumps(bad))
    rc, out, err = run_cli('latency', 'caformer_s18')
    assert rc == 0 and 'not calibrated for this device' in out, err


def test_train_does_not_replace_a_checkpoint_or_an_interrupted_run_unless_told(fake_dir, tmp_path):
    spec = tmp_path / 'tiny.json'
    spec.write_text(json.dumps({**json.loads((SPECS / 'fmnist_identity.json').read_text()), 'name': 'tiny'}))
    out = tmp_path / 'done.safetensors'
    common = ['train', str(spec), '--epochs', '0.1', '--batch-size', '32', '--data-dir', str(fake_dir), '--quiet']
    out.write_bytes(b'five hours of training')
    err = refused(*common, '--out', str(out))
    assert 'already exists' in err and '--overwrite' in err, err
    assert out.read_bytes() == b'five hours of training'  # untouched
    state = tmp_path / 'done.safetensors.state'
    state.write_bytes(b'an interrupted run')
    err = refused(*common, '--out', str(out))
    assert 'interrupted run' in err and '--resume' in err, err
    assert (out.read_bytes(), state.read_bytes()) == (b'five hours of training', b'an interrupted run')
    assert 'give one of them' in refused(*common, '--out', str(out), '--resume', '--overwrite')
    state.unlink()
    rc, stdout, err = run_cli(*common, '--threads', '1', '--out', str(out), '--overwrite')
    assert rc == 0, err
    assert read_metadata(out)['spec']['name'] == 'tiny'  # the new run's checkpoint
    assert 'wrote' in stdout


def test_bench_iteration_counts_are_bounded():
    assert '--iters' in refused('bench', 'poolformer_s12', '--iters', str(10**12))
    assert '--warmup' in refused('bench', 'poolformer_s12', '--warmup', str(10**7))


def test_serve_names_a_host_that_is_not_here_and_a_port_in_use_before_building_the_app():
    import socket

    assert "--host 'foo.invalid' does not resolve" in refused('serve', '--host', 'foo.invalid', within=10)
    assert 'is not an address of this machine' in refused('serve', '--host', '192.0.2.1', within=10)  # TEST-NET-1
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        s.listen()
        port = s.getsockname()[1]
        assert f'--port {port}: 127.0.0.1:{port} is in use' in refused('serve', '--port', str(port), within=10)


def test_serve_takes_a_bracketed_ipv6_address_and_names_a_port_that_needs_privileges(monkeypatch):
    """Review: '--host [::1]' (as gradio takes it, and as a browser writes it) was refused as not resolving, and
    port 80 for a user without rights was called 'not an address of this machine'."""
    import errno
    import socket

    from explorer.app.serve import check_address
    from explorer.core.errors import UserError

    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(('::1', 0))
            port = s.getsockname()[1]
    except OSError:
        pytest.skip('no IPv6 loopback here')
    check_address('[::1]', port)  # no error
    check_address('::1', port)

    def refuse(self, addr):
        raise PermissionError(errno.EACCES, 'Permission denied')

    monkeypatch.setattr(socket.socket, 'bind', refuse)
    with pytest.raises(UserError, match='--port 80: ports below 1024 need administrator rights here'):
        check_address('127.0.0.1', 80)


def test_a_folder_named_like_a_preset_does_not_hide_the_preset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'poolformer_s12').mkdir()  # e.g. the outputs of a run named after its preset
    rc, out, err = run_cli('show', 'poolformer_s12')
    assert rc == 0 and 'poolformer_s12' in out, err
    (tmp_path / 'not_a_preset').mkdir()
    assert 'is a folder, not a spec file' in refused('show', 'not_a_preset')


def test_a_file_named_like_a_preset_neither_replaces_nor_breaks_the_presets(tmp_path, monkeypatch):
    """A file called poolformer_s12 in the working directory (the server's or the CLI's) replaced the preset for
    every visitor of a server, and a broken one made every preset a SpecError: the presets' table read the name
    as a path. A preset's name always means the preset; ./NAME is the file."""
    from explorer.core import catalog

    monkeypatch.chdir(tmp_path)
    (tmp_path / 'poolformer_s12').write_text(json.dumps(tiny_spec()), encoding='utf-8')
    (tmp_path / 'caformer_s18').write_text('not json', encoding='utf-8')
    catalog._preset_specs.cache_clear()
    try:
        assert catalog.get_preset('poolformer_s12')['stages'][0]['dim'] == 64  # the published model, not tiny's 16
        assert catalog.load_spec('caformer_s18').name == 'caformer_s18'
        assert len(catalog.list_presets()) == len(catalog.preset_names())
    finally:
        catalog._preset_specs.cache_clear()
    rc, out, err = run_cli('show', 'poolformer_s12', '--json')
    assert rc == 0 and json.loads(out)['params'] > 11e6, err  # 11.9 M, not the tiny file's
    rc, out, err = run_cli('show', './poolformer_s12', '--json')
    assert rc == 0 and json.loads(out)['params'] < 1e6, err  # a path names the file


def test_json_output_is_strict_json_when_a_number_is_not_finite(tmp_path, fake_dir):
    """A checkpoint of a run that diverged (written before runs stopped at a NaN loss): `evaluate --json` printed
    a bare NaN, which jq and JavaScript refuse; `predict` printed nan% for every class."""
    import torch

    def poison(state):
        key = next(k for k, v in state.items() if k.endswith('weight') and v.dim() > 1)
        state[key] = torch.full_like(state[key], float('nan'))
        return state

    ck = tampered(tmp_path, tensors=poison)
    rc, out, err = run_cli('evaluate', ck, '--data-dir', str(fake_dir), '--json')
    assert rc == 0, err
    d = json.loads(out, parse_constant=lambda c: pytest.fail(f'{c} in the JSON output'))
    assert d['loss'] is None and d['accuracy'] >= 0
    assert 'NaN or infinite values' in refused('predict', ck, '00000_ankle_boot.png')


@pytest.mark.parametrize('classes', [0, 1])
@pytest.mark.parametrize('command', ['attribute', 'predict'])
def test_a_head_without_class_probabilities_is_refused_before_any_work(tmp_path, command, classes):
    """num_classes 0 ran the whole attribution on the pooled features and then ended in an IndexError traceback;
    num_classes 1 read 100% for every image (a softmax over one logit) and no map could beat chance."""
    from explorer.explain.images import example_images

    from .conftest import run_cli, tiny_spec

    spec = tmp_path / 'head.json'
    spec.write_text(json.dumps(tiny_spec() | {'num_classes': classes}))
    extra = (
        ('--method', 'saliency', '--no-deletion', '--out', str(tmp_path / 'map.png')) if command == 'attribute' else ()
    )
    rc, out, err = run_cli(command, str(spec), str(example_images()[0]), '--weights', 'random', *extra)
    assert rc != 0 and 'Traceback' not in err, err
    assert f'num_classes {classes}' in err and 'nothing to' in err, err


@pytest.fixture
def example_copy(tmp_path, monkeypatch):
    """A shipped example image's name resolving to a copy of it (the review's run overwrote the shipped file),
    run from a folder that holds no file of that name."""
    import explorer.explain.images as images

    src = images.fmnist_examples()[0]
    copy = tmp_path / 'examples' / src.name
    copy.parent.mkdir()
    copy.write_bytes(src.read_bytes())
    monkeypatch.setattr(images, 'example_path', lambda name: copy if name == src.name else None)
    (tmp_path / 'elsewhere').mkdir()
    monkeypatch.chdir(tmp_path / 'elsewhere')
    return copy


@pytest.mark.parametrize('command', ['attribute', 'mixing-map'])
def test_an_out_that_is_an_example_image_given_by_name_is_refused(example_copy, command):
    """Review s23: `attribute fmnist_hybrid_large 00000_ankle_boot.png --out .../00000_ankle_boot.png` overwrote the
    shipped example: the guard compared --out with the name, not with the file the name stands for."""
    before = example_copy.read_bytes()
    extra = ('--method', 'saliency', '--no-deletion') if command == 'attribute' else ()
    err = refused(command, 'fmnist_hybrid', example_copy.name, *extra, '--out', str(example_copy))
    assert '--out' in err and 'is the input' in err, err
    assert example_copy.read_bytes() == before


@pytest.mark.parametrize('command', ['attribute', 'mixing-map'])
def test_a_refused_spec_or_image_leaves_no_out_folders_behind(tmp_path, example_copy, command):
    """Review s23: `attribute nosuchspec IMAGE --out newdir/deep/x.png` exited 2 and left newdir/deep behind."""
    out = tmp_path / 'newdir' / 'deep' / 'x.png'
    assert 'neither a preset nor a spec file' in refused(command, 'nosuchspec', example_copy.name, '--out', str(out))
    assert 'does not exist' in refused(command, 'fmnist_hybrid', 'nosuch.png', '--out', str(out))
    assert not (tmp_path / 'newdir').exists()


def test_train_refuses_an_out_that_is_its_spec_given_as_a_trained_models_name(tmp_path, fake_dir, monkeypatch):
    """Review s23: `train mymodel --out ~/.cache/.../trained/mymodel.safetensors --overwrite` replaced the checkpoint
    its architecture was read from; the same run given the file's path was refused."""
    from explorer.train import checkpoints

    monkeypatch.setattr(checkpoints, 'USER_DIR', tmp_path / 'trained')
    mine = tmp_path / 'trained' / 'mymodel.safetensors'
    mine.parent.mkdir()
    mine.write_bytes(CHECKPOINT.read_bytes())
    err = refused('train', 'mymodel', '--epochs', '0.1', '--batch-size', '32', '--data-dir', str(fake_dir),
                  '--quiet', '--threads', '1', '--out', str(mine), '--overwrite')  # fmt: skip
    assert '--out' in err and 'is the input' in err, err
    assert mine.read_bytes() == CHECKPOINT.read_bytes()


def test_train_out_must_be_a_safetensors_file(tmp_path, fake_dir):
    """Review s23: `train ... --out t.json` wrote a checkpoint that every command then read as a JSON spec."""
    err = refused('train', 'fmnist_hybrid', '--epochs', '0.1', '--batch-size', '32', '--data-dir', str(fake_dir),
                  '--quiet', '--threads', '1', '--out', str(tmp_path / 't.json'))  # fmt: skip
    assert '--out' in err and '.safetensors' in err, err
    assert not (tmp_path / 't.json').exists()
    # a run interrupted before this rule is resumed under its own name: the state file is read (here: damaged)
    (tmp_path / 't.st.state').write_bytes(b'not a state')
    err = refused('train', 'fmnist_hybrid', '--epochs', '0.1', '--batch-size', '32', '--data-dir', str(fake_dir),
                  '--quiet', '--threads', '1', '--out', str(tmp_path / 't.st'), '--resume')  # fmt: skip
    assert 'must end in .safetensors' not in err and 't.st' in err, err


def test_evaluate_takes_a_trained_models_name_and_says_a_preset_is_not_a_checkpoint(fake_dir):
    """Review s23: `evaluate fmnist_hybrid_large` said the checkpoint did not exist, though every other command takes
    a trained model's name; `evaluate poolformer_s12` said the same of a preset."""
    rc, out, err = run_cli('evaluate', 'fmnist_hybrid', '--data-dir', str(fake_dir), '--json')
    assert rc == 0, err
    d = json.loads(out)
    assert d['n'] == 200 and Path(d['checkpoint']).name == 'fmnist_hybrid.safetensors'
    assert 'not a trained checkpoint' in refused('evaluate', 'poolformer_s12')
    assert "trained model's name" in refused('evaluate', 'no_such_model')


def test_a_negative_query_needs_no_equals_sign_and_the_version_is_printed():
    """Review s23: `--query -1,0` was read as an option (`expected one argument`): only `--query=-1,0` reached the
    range check; and `explorer --version` asked for a COMMAND."""
    assert 'outside the 16x16 token grid' in refused('mixing-map', 'fmnist_hybrid', '--query', '-1,0')
    from explorer import __version__

    rc, out, err = run_cli('--version')
    assert rc == 0 and out.strip() == f'explorer {__version__}', (out, err)
