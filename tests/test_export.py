"""Export to timm and ONNX (explorer.train.export, `explorer export`): the written module registers a timm model
equal to the explorer's, a trained checkpoint's weights load offline through timm's `pretrained=True`, every
mixer exports to ONNX and matches onnxruntime, and mistakes are refused naming the problem.

timm's registry is global and lives as long as the test process: every test registers its own unique names.
"""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import struct
import sys
import uuid
from pathlib import Path

import pytest
import timm
import torch

from explorer.core.build import build_model
from explorer.core.errors import UserError
from explorer.core.mixers import PoolingMixer
from explorer.core.registry import MIXERS
from explorer.core.spec import ArchSpec, SpecError
from explorer.train.checkpoints import load_trained, save_checkpoint
from explorer.train.data import CLASSES, MEAN, STD, Preprocessing
from explorer.train.export import ONNX_ATOL, ONNX_RTOL, data_config_for, export_design, resolve_source
from explorer.train.onnx_check import onnx_inputs
from tests.conftest import TINY, run_cli, tiny_spec


def unique(prefix: str = 'xt') -> str:
    return f'{prefix}_{uuid.uuid4().hex[:10]}'


@pytest.fixture
def load_module():
    """Import a written `<name>.py` from its file (registering its model with timm); forgotten afterwards."""
    names = []

    def load(path: str):
        path = Path(path)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module  # timm's register_model looks its module up here
        names.append(path.stem)
        spec.loader.exec_module(module)
        return module

    yield load
    for name in names:
        sys.modules.pop(name, None)


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test: loading must be offline."""

    def refuse(*args, **kwargs):
        raise AssertionError(f'network access attempted: {args}')

    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse)


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    """A trained-checkpoint file as `explorer train` writes it (the TINY Fashion-MNIST spec, weights drawn with
    seed 1: the file format, not the training, is under test)."""
    spec = ArchSpec.from_dict(TINY)
    path = tmp_path / 'tiny_fmnist.safetensors'
    metrics = {'test_accuracy': 0.5, 'dataset': 'fashion-mnist'}
    save_checkpoint(path, build_model(spec, seed=1), spec, Preprocessing.for_spec(spec), metrics, [])
    return path


def logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


# ---- (a) the written module builds the explorer's model through timm ----------------------------------------
def test_written_module_registers_the_same_model_with_timm(tmp_path, load_module):
    spec = tiny_spec()
    name = unique()
    res = export_design(spec, tmp_path, name=name)
    assert set(res.files) == {'module', 'spec'} and res.onnx is None
    assert json.loads(Path(res.files['spec']).read_text()) == ArchSpec.from_dict(spec).to_dict()
    load_module(res.files['module'])
    model = timm.create_model(name)
    ref = build_model(spec, seed=0)
    ours, theirs = model.state_dict(), ref.state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)
    ref.load_state_dict(ours)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(logits(model, x), logits(ref, x))
    cfg = model.pretrained_cfg
    assert cfg['input_size'] == (3, 32, 32) and cfg['num_classes'] == 10 and cfg['first_conv'] == 'stem.conv'
    assert cfg['classifier'] == 'head.fc.fc2' and model.get_submodule(cfg['classifier']).out_features == 10
    torch.manual_seed(5)
    a = timm.create_model(name).state_dict()
    torch.manual_seed(5)
    b = timm.create_model(name).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # random weights follow torch's global seed, as timm's do


# ---- (b) a trained checkpoint: pretrained=True loads its weights offline ----------------------------------
def test_checkpoint_weights_load_offline_with_pretrained_true(checkpoint, tmp_path, load_module, no_network):
    name = unique()
    res = export_design(checkpoint, tmp_path / 'out', name=name)
    assert set(res.files) == {'module', 'spec', 'weights'} and res.source == 'checkpoint tiny_fmnist.safetensors'
    load_module(res.files['module'])
    model = timm.create_model(name, pretrained=True)
    ref, _, _ = load_trained(checkpoint)
    x = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(logits(model, x), logits(ref, x))
    cfg = model.pretrained_cfg
    assert cfg['file'] == str(tmp_path / 'out' / f'{name}.safetensors')
    assert cfg['input_size'] == (1, 32, 32) and cfg['mean'] == (MEAN,) and cfg['std'] == (STD,)
    assert cfg['crop_pct'] == 1.0 and cfg['interpolation'] == 'bilinear' and cfg['label_names'] == CLASSES
    assert any('pad 2 each side' in note for note in cfg['notes'])
    assert timm.data.resolve_data_config(model=model)['mean'] == (MEAN,)


# ---- (e) timm's own ways of creating models ----------------------------------------------------------------
def test_create_model_arguments_override_the_spec(checkpoint, tmp_path, load_module):
    name = unique()
    load_module(export_design(checkpoint, tmp_path, name=name).files['module'])
    model = timm.create_model(name, num_classes=5, drop_path_rate=0.1)
    assert model.num_classes == 5 and model.spec.drop_path_rate == 0.1
    assert logits(model, torch.zeros(2, 1, 32, 32)).shape == (2, 5)
    assert any(type(m).__name__ == 'DropPath' for m in model.modules())
    tuned = timm.create_model(name, pretrained=True, num_classes=5)  # timm drops the classifier, keeps the rest
    ref, _, _ = load_trained(checkpoint)
    assert torch.equal(tuned.stem.conv.weight, ref.stem.conv.weight)
    assert timm.create_model(name, in_chans=3).stem.conv.in_channels == 3
    feats = timm.create_model(name, features_only=True)
    assert [f.shape[1] for f in feats(torch.zeros(1, 1, 32, 32))] == [8, 16] == feats.feature_info.channels()
    with pytest.raises(TypeError, match='bn_eps, drop_block_rate'):
        timm.create_model(name, drop_block_rate=0.1, bn_eps=1e-3)
    with pytest.raises(ValueError, match=r'drop_path_rate: 1.5 is out of range; allowed \[0.0, 0.9\]'):
        timm.create_model(name, drop_path_rate=1.5)


def test_fixed_token_mixers_take_timms_img_size(tmp_path, load_module):
    name = unique()
    spec = tiny_spec(mixers=('pooling', 'random'), dims=(8, 16), depths=(1, 1))
    load_module(export_design(spec, tmp_path, name=name).files['module'])
    model = timm.create_model(name)  # timm passes img_size=(32, 32) from input_size: fixed_input_size is set
    assert model.pretrained_cfg['fixed_input_size'] and model.stages[1].blocks[0].token_mixer.grid_size == (4, 4)
    bigger = timm.create_model(name, img_size=64)
    assert bigger.spec.img_size == 64 and bigger.stages[1].blocks[0].token_mixer.grid_size == (8, 8)
    with pytest.raises(ValueError, match=r'img_size \(64, 32\): an explorer design takes square inputs'):
        timm.create_model(name, img_size=(64, 32))


def test_pretrained_weights_at_another_img_size_are_refused_naming_the_fixed_token_stage(tmp_path, load_module):
    """A design whose weights are sized by the token grid (RandFormer's, MLP-Mixer's and ResMLP's token mixing, a
    position embedding) cannot load its weights at another image size: timm failed with its raw
    `RuntimeError: Error(s) in loading state_dict ... size mismatch`. Other designs take the new size."""
    spec = ArchSpec.from_dict(tiny_spec(mixers=('pooling', 'random'), dims=(8, 16), depths=(1, 1)))
    ck = tmp_path / 'rand.safetensors'
    save_checkpoint(ck, build_model(spec, seed=1), spec, Preprocessing.for_spec(spec), {'test_accuracy': 0.5}, [])
    name = unique()
    load_module(export_design(ck, tmp_path / 'out', name=name).files['module'])
    assert timm.create_model(name, pretrained=True, img_size=32).spec.img_size == 32  # its own size: loads
    with pytest.raises(ValueError) as info:
        timm.create_model(name, pretrained=True, img_size=64)
    assert str(info.value) == (
        f"{name}: pretrained weights cannot load at img_size 64: stage S2's 'random' token mixer has weights for "
        f'its 4x4 token grid at img_size 32; use img_size 32, or pretrained=False'
    )
    assert timm.create_model(name, img_size=64).spec.img_size == 64  # random weights: any size
    with pytest.raises(ValueError, match="stage S2's 'random' token mixer has weights for its 4x4 token grid"):
        timm.create_model(name, pretrained=True, pretrained_cfg_overlay={'input_size': (1, 64, 64)})
    pos = tiny_spec(mixers=('pooling',), dims=(8,), depths=(1,))
    pos['stages'][0]['pos_embed'] = True
    pos = ArchSpec.from_dict(pos)
    ck = tmp_path / 'pos.safetensors'
    save_checkpoint(ck, build_model(pos, seed=1), pos, Preprocessing.for_spec(pos), {'test_accuracy': 0.5}, [])
    name = unique()
    load_module(export_design(ck, tmp_path / 'pos', name=name).files['module'])
    with pytest.raises(ValueError, match=r"stage S1's position embedding has weights for its 8x8 token grid"):
        timm.create_model(name, pretrained=True, img_size=(64, 64))


# ---- (c) ONNX for every mixer --------------------------------------------------------------------------------
@pytest.mark.parametrize('mixer', list(MIXERS))
def test_every_mixer_exports_to_onnx_and_matches_onnxruntime(mixer, tmp_path):
    import onnxruntime as ort

    spec = tiny_spec(mixers=(mixer,), dims=(16,), depths=(1,))
    res = export_design(spec, tmp_path, name=unique(mixer), onnx=True)
    check = res.onnx
    assert check.ok, check.error
    assert check.max_abs_diff <= ONNX_ATOL and (check.rtol, check.atol) == (ONNX_RTOL, ONNX_ATOL)
    assert check.inputs.startswith('5 shipped example images') and check.batch == 5
    session = ort.InferenceSession(res.files['onnx'], providers=['CPUExecutionProvider'])
    assert isinstance(session.get_inputs()[0].shape[0], str)  # the batch axis is dynamic (checked on 5, traced on 2)


def test_an_unexportable_mixer_is_named_with_its_operator(tmp_path, monkeypatch):
    def zeta_forward(self, x):  # an op the ONNX translator has no function for
        return torch.special.zeta(x.abs() + 2, torch.ones_like(x)) - x

    monkeypatch.setattr(PoolingMixer, 'forward', zeta_forward)
    spec = tiny_spec(mixers=('sepconv', 'pooling'), dims=(8, 16), depths=(1, 1))
    res = export_design(spec, tmp_path, name=unique(), onnx=True)
    assert not res.onnx.ok and 'onnx' not in res.files and not (tmp_path / f'{res.name}.onnx').exists()
    assert "stage 1 token mixer 'pooling' (PoolingMixer) cannot be exported to ONNX" in res.onnx.error
    assert 'no ONNX translation for operator prims.zeta.default' in res.onnx.error
    assert Path(res.files['module']).is_file()  # the timm files are written all the same
    stale = tmp_path / f'{res.name}.onnx'
    stale.write_bytes(b'an older export')
    res = export_design(spec, tmp_path, name=res.name, onnx=True, overwrite=True)
    assert not res.onnx.ok and not stale.exists()  # an older file must not pass for this export


def test_inputs_without_shipped_examples_are_seeded_random():
    src = resolve_source(tiny_spec(in_chans=2))
    x, what = onnx_inputs(data_config_for(src))
    assert what == '3 seeded random inputs' and x.shape == (3, 2, 32, 32)
    assert torch.equal(x, onnx_inputs(data_config_for(src))[0])


# ---- names, files and the written text -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ('name', 'message'),
    [
        ('1bad', 'must be a Python identifier'),
        ('class', 'must be a Python identifier'),
        ('bad-name', 'must be a Python identifier'),
        ('\uff52\uff45\uff53\uff4e\uff45\uff54\uff15\uff10', 'ASCII letters'),  # fullwidth: Python reads resnet50
        ('mod\u00e8le', 'ASCII letters'),
        ('resnet50', "'resnet50' is already a timm model"),
        ('json', 'the name of an importable module (the Python standard library)'),
        ('torch', 'the name of an importable module'),
    ],
)
def test_unusable_names_are_refused(name, message, tmp_path):
    with pytest.raises(UserError, match=re.escape(message)):
        export_design(tiny_spec(), tmp_path, name=name)
    assert not any(tmp_path.iterdir())


def test_an_export_that_builds_the_model_is_checked_against_the_limits_first(tmp_path, monkeypatch):
    """Review: `export --onnx` built the model without the server's limits (every other command that builds
    checks them first)."""
    from explorer.measure.guard import ResourceError

    monkeypatch.setenv('EXPLORER_MAX_PARAMS_M', '0.001')
    with pytest.raises(ResourceError, match='EXPLORER_MAX_PARAMS_M'):
        export_design(tiny_spec(), tmp_path, name=unique(), onnx=True)
    export_design(tiny_spec(), tmp_path / 'plain', name=unique())  # no model built: nothing to refuse


def test_existing_files_are_kept_unless_overwrite(tmp_path, load_module):
    name = unique()
    export_design(tiny_spec(), tmp_path, name=name)
    with pytest.raises(UserError, match=f'{name}.py, .*{name}.json already exist'):
        export_design({**tiny_spec(), 'num_classes': 7}, tmp_path, name=name)
    load_module(export_design({**tiny_spec(), 'num_classes': 7}, tmp_path, name=name, overwrite=True).files['module'])
    assert timm.create_model(name).num_classes == 7
    export_design(tiny_spec(), tmp_path, name=name, overwrite=True)  # its own registered export is no clash


def test_spec_text_cannot_become_code(tmp_path, load_module):
    name = unique()
    hostile = '"""\nraise SystemExit("injected")\n"""'
    meta = {'display_name': hostile, 'notes': hostile, 'top1': 83.6}  # (an inf top-1 is refused by the spec)
    # a name holds no line break (control characters are refused in names); its quotes still may not break out
    spec = {**tiny_spec(meta=meta), 'name': 'x"""; raise SystemExit("injected"); """'}
    with pytest.raises(SpecError, match='control, invisible formatting'):
        export_design({**spec, 'name': f'x{hostile}'}, tmp_path, name=name)
    module = load_module(export_design(spec, tmp_path, name=name).files['module'])  # imports: nothing was run
    assert module.SPEC['meta'] == meta and '"' not in module.__doc__
    assert timm.create_model(name).spec.meta['display_name'] == hostile


# ---- (d) the command line ------------------------------------------------------------------------------------
def test_cli_exports_a_spec_file(tmp_path, load_module):
    spec_file = tmp_path / 'design.json'
    spec_file.write_text(json.dumps(tiny_spec()))
    name = unique()
    rc, out, err = run_cli('export', str(spec_file), '--to', str(tmp_path / 'out'), '--name', name, '--json')
    assert rc == 0, err
    res = json.loads(out)
    assert res['name'] == name and res['source'] == 'spec file design.json'
    assert sorted(Path(p).name for p in res['files'].values()) == [f'{name}.json', f'{name}.py']
    load_module(res['files']['module'])
    assert timm.create_model(name).num_classes == 10


def test_cli_exports_a_trained_model_by_name_with_onnx(tmp_path):
    name = unique()
    rc, out, err = run_cli('export', 'fmnist_pooling', '--to', str(tmp_path), '--name', name, '--onnx')
    assert rc == 0, err
    for suffix in ('.py', '.json', '.safetensors', '.onnx'):
        assert (tmp_path / f'{name}{suffix}').is_file()
    assert 'onnxruntime and PyTorch match on 8 shipped example images (00000_ankle_boot.png' in out
    assert 'max |diff|' in out and 'pretrained=True' in out


@pytest.mark.parametrize(
    ('args', 'message'),
    [
        (['--name', '2x'], "model name '2x' is not allowed"),
        (['--name', 'convnext_tiny'], "'convnext_tiny' is already a timm model"),
        ([], "model name 'tiny-design' is not allowed"),  # the spec's own name, when no --name is given
        ([], '(the name comes from the spec file design.json)'),
    ],
)
def test_cli_refuses_bad_names(args, message, tmp_path):
    spec_file = tmp_path / 'design.json'
    spec_file.write_text(json.dumps({**tiny_spec(), 'name': 'tiny-design'}))
    rc, _, err = run_cli('export', str(spec_file), '--to', str(tmp_path / 'out'), *args)
    assert rc == 2 and message in err, err
    assert not (tmp_path / 'out').exists()


def test_cli_refuses_existing_files_and_unknown_specs(tmp_path):
    name = unique()
    assert run_cli('export', 'fmnist_identity', '--to', str(tmp_path), '--name', name)[0] == 0
    rc, _, err = run_cli('export', 'fmnist_identity', '--to', str(tmp_path), '--name', name)
    assert rc == 2 and f'{name}.py' in err and 'already exist' in err and '--overwrite' in err
    assert run_cli('export', 'fmnist_identity', '--to', str(tmp_path), '--name', name, '--overwrite')[0] == 0
    rc, _, err = run_cli('export', 'no_such_design', '--to', str(tmp_path))
    assert rc == 2 and "'no_such_design' is neither a preset nor a spec file" in err
    rc, _, err = run_cli('export', 'caformer_s18', '--to', str(tmp_path))
    assert rc == 2 and "'caformer_s18' is already a timm model" in err and '--name' in err


# ---- review: inputs kept, damaged checkpoints named, stale files, meta -------------------------------------
def test_an_export_never_replaces_its_own_input(checkpoint, tmp_path):
    """`explorer export X.safetensors --to <its folder>` was refused only until --overwrite, which the refusal
    suggested: then the trained checkpoint became a plain state dict, its spec, preprocessing and metrics gone.
    The same for a spec file named as its spec."""
    before = checkpoint.read_bytes()
    for overwrite in (False, True):
        with pytest.raises(UserError, match=r'is the checkpoint tiny_fmnist.safetensors being exported; it is never'):
            export_design(checkpoint, checkpoint.parent, overwrite=overwrite)
    assert checkpoint.read_bytes() == before and not (tmp_path / 'tiny_fmnist.py').exists()
    spec_file = tmp_path / 'tiny_fmnist.json'
    spec_file.write_text(json.dumps(TINY))
    rc, _, err = run_cli('export', str(spec_file), '--to', str(tmp_path), '--overwrite')
    assert rc == 2 and 'is the spec file tiny_fmnist.json being exported' in err and '--overwrite' not in err
    assert json.loads(spec_file.read_text()) == TINY


def test_a_damaged_checkpoint_is_named_in_one_line_before_anything_is_written(checkpoint, tmp_path):
    """Weights that do not match the spec, damaged preprocessing or a text accuracy ended in a traceback (exit 1,
    the code for a failed ONNX check), some after files were written."""
    from safetensors.torch import load_file, save_file

    from explorer.train.checkpoints import read_metadata

    raw = load_file(str(checkpoint))
    with open(checkpoint, 'rb') as f:  # the metadata as stored: strings
        header = json.loads(f.read(struct.unpack('<Q', f.read(8))[0]))
    meta = header['__metadata__']
    pre = meta['preprocessing']
    assert '"mean": 0.' in pre
    broken = tmp_path / 'broken'
    broken.mkdir()
    cases = {
        'missing_tensor': (dict(list(raw.items())[1:]), meta, 'its weights do not match its spec'),
        'bad_mean': (raw, {**meta, 'preprocessing': re.sub(r'"mean": [0-9.]+', '"mean": "x"', pre)}, 'mean'),
    }
    for name, (tensors, metadata, message) in cases.items():
        path = broken / f'{name}.safetensors'
        save_file(tensors, str(path), metadata=metadata)
        rc, out, err = run_cli('export', str(path), '--to', str(tmp_path / name))
        assert rc == 2 and err.startswith('error: ') and 'Traceback' not in err and message in err, err
        assert not (tmp_path / name).exists()
    text_acc = broken / 'text_accuracy.safetensors'
    metrics = json.loads(meta['metrics'])
    save_file(raw, str(text_acc), metadata={**meta, 'metrics': json.dumps({**metrics, 'test_accuracy': 'high'})})
    assert read_metadata(text_acc)['metrics']['test_accuracy'] == 'high'
    res = export_design(text_acc, tmp_path / 'acc')
    assert 'test accuracy' not in res.pretrained_cfg.get('notes', '') and Path(res.files['weights']).is_file()


def test_overwrite_removes_the_earlier_exports_onnx_and_weights_it_does_not_write(checkpoint, tmp_path):
    """Exporting design B over design A without --onnx left A's NAME.onnx (and weights) beside B's module."""
    name = unique()
    first = export_design(checkpoint, tmp_path, name=name, onnx=True)
    assert {'weights', 'onnx'} <= first.files.keys()
    with pytest.raises(UserError, match=rf'{name}.safetensors, .*{name}.onnx already exist'):
        export_design(tiny_spec(), tmp_path, name=name, overwrite=False)
    second = export_design(tiny_spec(), tmp_path, name=name, overwrite=True)
    assert sorted(p.name for p in tmp_path.glob(f'{name}.*')) == [f'{name}.json', f'{name}.py']
    assert sorted(second.files) == ['module', 'spec']


def test_an_exported_model_builds_on_the_meta_device(tmp_path, load_module):
    """timm's own models build under `with torch.device('meta')`; an exported one raised (.item() on meta)."""
    name = unique()
    load_module(export_design(tiny_spec(), tmp_path, name=name).files['module'])
    with torch.device('meta'):
        model = timm.create_model(name)
    assert next(model.parameters()).device.type == 'meta'
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in build_model(tiny_spec()).parameters())


def test_overwrite_never_deletes_a_checkpoint_that_no_export_wrote(checkpoint, tmp_path):
    """A spec exported with --overwrite into the folder of its trained checkpoint (NAME.safetensors) deleted it,
    as if an earlier export had written it; the refusal had suggested --overwrite."""
    spec_file = tmp_path / 'design.json'
    spec_file.write_text(json.dumps({**TINY, 'name': 'tiny_fmnist'}))
    before = checkpoint.read_bytes()
    for overwrite in (False, True):
        with pytest.raises(UserError, match='tiny_fmnist.safetensors is in the way and no export wrote it'):
            export_design(spec_file, checkpoint.parent, overwrite=overwrite)
    assert checkpoint.read_bytes() == before
