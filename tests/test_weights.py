"""explorer.explain.weights: checkpoint round trips in every format, the sail-sg layout, the mismatch report, safe
loading, and timm pretrained weights through an offline Hugging Face cache written by the test."""

import json
import os
import re

import pytest
import timm
import torch
from safetensors.torch import save_file

from explorer.core.build import build_model
from explorer.core.catalog import load_spec
from explorer.core.spec import ArchSpec
from explorer.explain.weights import (
    RANDOM_WARNING,
    WeightsError,
    checkpoint_spec,
    load_checkpoint,
    load_model,
    read_checkpoint,
)
from tests.conftest import tiny_spec


def _spec(**kw):
    return ArchSpec.from_dict(tiny_spec(**kw))


def _same_outputs(a, b, size=32):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.allclose(a.eval()(x), b.eval()(x), atol=1e-6)


def _sd(model):
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    'fmt', ['safetensors', 'pth', 'pth.tar-state_dict', 'pth-model', 'pth-module-prefix', 'pt-nested-twice']
)
def test_checkpoint_round_trip(tmp_path, fmt):
    spec = _spec()
    src = build_model(spec, seed=1)
    sd = _sd(src)
    if fmt == 'safetensors':
        path = tmp_path / 'w.safetensors'
        save_file(sd, str(path))
    elif fmt == 'pth':
        path = tmp_path / 'w.pth'
        torch.save(sd, path)
    elif fmt == 'pth.tar-state_dict':  # timm's train.py layout: epoch, arch, state_dict, optimizer, ...
        path = tmp_path / 'checkpoint.pth.tar'
        torch.save({'epoch': 3, 'arch': 'tiny', 'state_dict': sd, 'optimizer': {'lr': 0.1}}, path)
    elif fmt == 'pth-model':  # the sail-sg / DeiT layout
        path = tmp_path / 'w.pth'
        torch.save({'model': sd, 'epoch': 300}, path)
    elif fmt == 'pth-module-prefix':  # saved from DistributedDataParallel
        path = tmp_path / 'w.pth'
        torch.save({'state_dict': {f'module.{k}': v for k, v in sd.items()}}, path)
    else:
        path = tmp_path / 'w.pt'
        torch.save({'checkpoint': 1, 'model': {'state_dict': sd}}, path)
    model, info = load_model(spec, path)
    assert info.source == 'checkpoint' and info.report.ok and info.report.loaded == len(sd)
    assert _same_outputs(model, src)
    assert not _same_outputs(build_model(spec, seed=2), src)  # the weights really changed the model


def test_code_running_pickle_is_refused(tmp_path):
    flag = tmp_path / 'pwned'

    class Evil:
        def __reduce__(self):
            return (os.makedirs, (str(flag),))

    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'stem.conv.weight': torch.zeros(1)}, 'payload': Evil()}, path)
    with pytest.raises(WeightsError, match='refused to load .*unpickling them could run arbitrary code'):
        read_checkpoint(path)
    assert not flag.exists()


def test_a_protocol_4_pickle_is_named_as_such_without_torchs_warning(tmp_path):
    """A state dict saved with pickle_protocol=4 cannot be read by torch's weights-only reader: it printed torch's
    two-line UserWarning, then 'not a readable PyTorch file (Unsupported operand 149)' (a review). The refusal now
    says what the file is and what to do, and torch's warning is not passed on."""
    import warnings

    path = tmp_path / 'p4.pth'
    torch.save({'stem.conv.weight': torch.zeros(1)}, path, pickle_protocol=4)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter('always')
        with pytest.raises(WeightsError, match="saved with pickle protocol 4, .* save it again with torch.save's"):
            read_checkpoint(path)
    assert not [w for w in seen if 'pickle protocol' in str(w.message)]


def test_mismatch_report_lists_missing_unexpected_and_shapes(tmp_path):
    src = build_model(_spec(), seed=1)  # 10 classes
    sd = _sd(src)
    sd.pop('stem.conv.bias')
    sd['extra.weight'] = torch.zeros(3)
    path = tmp_path / 'w.safetensors'
    save_file(sd, str(path))
    spec5 = ArchSpec.from_dict({**tiny_spec(), 'num_classes': 5})
    with pytest.raises(WeightsError) as e:
        load_model(spec5, path)
    msg = str(e.value)
    assert 'does not fit this model' in msg
    assert 'missing from the checkpoint: stem.conv.bias' in msg
    assert 'in the checkpoint but not in the model: extra.weight' in msg
    assert 'shape of head.fc.fc2.weight: checkpoint (10, 256) vs model (5, 256)' in msg
    assert 'set num_classes to 10' in msg
    # not strict: everything that fits is loaded, the report says what did not
    model = build_model(spec5, seed=0)
    info = load_checkpoint(model, path, strict=False)
    rep = info.report
    assert rep.missing == ['stem.conv.bias'] and rep.unexpected == ['extra.weight']
    assert sorted(k for k, _, _ in rep.mismatched) == ['head.fc.fc2.bias', 'head.fc.fc2.weight']
    assert torch.equal(model.stem.conv.weight, src.stem.conv.weight)
    assert rep.loaded == len(model.state_dict()) - 3
    assert json.dumps(info.to_dict())  # JSON-able for the CLI


def test_checkpoint_that_shares_nothing_is_an_error(tmp_path):
    path = tmp_path / 'other.safetensors'
    save_file({'fc.weight': torch.zeros(2, 2)}, str(path))
    with pytest.raises(WeightsError, match='shares no tensors'):
        load_checkpoint(build_model(_spec()), path, strict=False)


def _first(t: torch.Tensor, value: float) -> torch.Tensor:
    t.view(-1)[0] = value
    return t


@pytest.mark.parametrize(
    'change, pattern',
    [
        (lambda t: t.fill_(float('nan')), r'holds \d[\d,]* NaN or infinite values \(a training that diverged'),
        (lambda t: _first(t, float('inf')), 'holds 1 NaN or infinite value '),
        (lambda t: t.to(torch.int8), 'is int8 in the file where the model holds float32: quantized'),
        # float8 and complex tensors load as nonsense too, and torch.isfinite has no float8 kernel (a traceback)
        (lambda t: t.to(torch.float8_e4m3fn), 'is float8_e4m3fn in the file where the model holds float32: only'),
        (lambda t: t.to(torch.complex64), 'is complex64 in the file where the model holds float32: only'),
        (lambda t: t.to_sparse(), r'is a sparse_coo tensor: only dense tensors load'),  # a .pth can hold one
    ],
)
def test_weights_that_would_load_as_nonsense_are_refused_and_leave_the_model_alone(tmp_path, change, pattern):
    spec = _spec()
    sd = _sd(build_model(spec, seed=1))
    key = next(k for k, v in sd.items() if k.endswith('.weight') and v.dim() > 1)
    sd[key] = change(sd[key])
    if sd[key].layout == torch.strided:
        path = tmp_path / 'w.safetensors'
        save_file(sd, str(path))
    else:  # safetensors holds dense tensors only
        path = tmp_path / 'w.pth'
        torch.save(sd, path)
    model = build_model(spec, seed=2)
    before = _sd(model)
    with pytest.raises(WeightsError, match=pattern) as e:
        load_checkpoint(model, path)
    assert key in str(e.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched


@pytest.mark.parametrize(
    'name, content, pattern',
    [
        ('missing.pth', None, 'does not exist'),
        ('empty.pth', b'', r'empty \(0 bytes\)'),
        ('weights.npz', b'xx', 'unknown file type'),
        ('bad.safetensors', b'\x08\x00\x00\x00\x00\x00\x00\x00{garbage', 'not a valid safetensors file'),
        ('bad.pth', b'not a zip file at all', 'not a readable PyTorch file'),
    ],
)
def test_unreadable_checkpoints(tmp_path, name, content, pattern):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(WeightsError, match=pattern):
        read_checkpoint(path)


def test_tensor_instead_of_state_dict(tmp_path):
    path = tmp_path / 't.pth'
    torch.save(torch.zeros(3), path)
    with pytest.raises(WeightsError, match='holds a Tensor, not a state dict'):
        read_checkpoint(path)


# ---- the official sail-sg key layouts, renamed by timm's checkpoint_filter_fn ---------------------------
def _to_poolformer_v1_layout(sd):
    """timm poolformer_* keys -> sail-sg/poolformer keys (network.{0,2,4,6} stages, {1,3,5} downsamples)."""
    out = {}
    for k, v in sd.items():
        k = k.replace('stem.conv', 'patch_embed.proj').replace('head.norm', 'norm').replace('head.fc', 'head')
        k = re.sub(r'layer_scale(\d)\.scale', r'layer_scale_\1', k)
        k = re.sub(r'stages\.(\d)\.downsample\.conv', lambda m: f'network.{2 * int(m.group(1)) - 1}.proj', k)
        k = re.sub(r'stages\.(\d)\.blocks\.(\d+)', lambda m: f'network.{2 * int(m.group(1))}.{m.group(2)}', k)
        out[k] = v
    return out


def test_official_poolformer_v1_checkpoint_loads_into_preset(tmp_path):
    ref = timm.create_model('poolformer_s12')
    official = _to_poolformer_v1_layout(_sd(ref))
    assert 'network.0.0.mlp.fc1.weight' in official and 'network.1.proj.weight' in official
    path = tmp_path / 'poolformer_s12.pth.tar'
    torch.save(official, path)
    model, info = load_model(load_spec('poolformer_s12'), path)
    assert info.report.ok
    assert _same_outputs(model, ref, size=64)


def _to_metaformer_baselines_layout(sd):
    """timm keys -> sail-sg/metaformer keys (downsample_layers.*, stages.i.j, Linear pointwise weights)."""
    out = {}
    for k, v in sd.items():
        k = k.replace('stem.conv', 'downsample_layers.0.conv').replace('stem.norm', 'downsample_layers.0.post_norm')
        k = re.sub(r'stages\.(\d)\.downsample\.norm', r'downsample_layers.\1.pre_norm', k)
        k = re.sub(r'stages\.(\d)\.downsample\.conv', r'downsample_layers.\1.conv', k)
        k = re.sub(r'stages\.(\d)\.blocks\.(\d+)', r'stages.\1.\2', k)
        k = k.replace('head.norm', 'norm').replace('head.fc.', 'head.')
        if v.dim() == 4 and v.shape[-2:] == (1, 1) and 'downsample' not in k:
            v = v.flatten(1)  # the original uses nn.Linear for 1x1 projections
        out[k] = v
    return out


def test_official_metaformer_baselines_layout_loads(tmp_path):
    spec = _spec(mixers=('sepconv', 'sepconv', 'attention'))
    src = build_model(spec, seed=3)
    official = _to_metaformer_baselines_layout(_sd(src))
    assert 'downsample_layers.0.post_norm.weight' in official and 'stages.0.0.token_mixer.pwconv1.weight' in official
    assert official['stages.0.0.token_mixer.pwconv1.weight'].dim() == 2
    path = tmp_path / 'convformer.pth'
    torch.save({'model': official}, path)
    model, info = load_model(spec, path)
    assert info.report.ok
    assert _same_outputs(model, src)


# ---- pretrained through the Hugging Face cache, offline ---------------------------------------------------
def _write_hub_cache(cache, repo: str, files: dict):
    folder = cache / f'models--{repo.replace("/", "--")}'
    commit = 'a' * 40
    snap = folder / 'snapshots' / commit
    snap.mkdir(parents=True)
    (folder / 'refs').mkdir()
    (folder / 'refs' / 'main').write_text(commit)
    for name, sd in files.items():
        save_file(sd, str(snap / name))


def test_pretrained_from_offline_cache_matches_timm(tmp_path, monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    ref = timm.create_model('poolformer_s12')  # random weights stand in for the published ones
    _write_hub_cache(tmp_path, 'timm/poolformer_s12.sail_in1k', {'model.safetensors': _sd(ref)})
    model, info = load_model(load_spec('poolformer_s12'), 'pretrained', cache_dir=tmp_path)
    assert info.source == 'pretrained' and info.trained and info.report.ok
    assert 'poolformer_s12.sail_in1k' in info.banner() and str(tmp_path) in info.where
    assert info.pretrained_cfg['crop_pct'] == 0.9 and info.pretrained_cfg['interpolation'] == 'bicubic'
    assert _same_outputs(model, ref, size=64)


def test_pretrained_offline_and_not_cached_says_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(WeightsError) as e:
        load_model(load_spec('caformer_s18'), 'pretrained', cache_dir=tmp_path)
    msg = str(e.value)
    assert 'HF_HUB_OFFLINE=1' in msg
    assert 'missing timm/caformer_s18.sail_in1k/model.safetensors' in msg
    assert 'hf download timm/caformer_s18.sail_in1k model.safetensors' in msg and '--weights PATH' in msg


def test_no_pretrained_weights_for_composed_specs_and_random_is_labelled():
    with pytest.raises(WeightsError, match='has no timm pretrained weights'):
        load_model(_spec(), 'pretrained')
    model, info = load_model(_spec(), 'random', seed=4)
    assert not info.trained and not model.training
    assert RANDOM_WARNING in info.banner() and 'meaningless' in info.banner()


def test_trained_checkpoint_metadata_gives_spec_labels_and_preprocessing(tmp_path):
    spec = ArchSpec.from_dict({**tiny_spec(), 'in_chans': 1})
    src = build_model(spec, seed=5)
    names = [f'item{i}' for i in range(10)]
    meta = {
        'format': 'metaformer-explorer/trained-v1',
        'spec': spec.to_json(),
        'classes': json.dumps(names),
        'preprocessing': json.dumps(
            {'img_size': 32, 'resize': 'pad', 'mean': 0.286, 'std': 0.353, 'in_chans': 1, 'source_size': 28}
        ),
    }
    path = tmp_path / 'fmnist.safetensors'
    save_file(_sd(src), str(path), metadata=meta)
    assert checkpoint_spec(path).to_dict() == spec.to_dict()
    model, info = load_model(spec, path)
    assert info.label_names == names
    cfg = info.pretrained_cfg
    assert cfg['input_size'] == (1, 32, 32) and cfg['mean'] == (0.286,) and cfg['pad_from'] == 28
    assert _same_outputs_1ch(model, src)
    meta['classes'] = json.dumps(names[1:])  # one name short: every name would be off by one
    save_file(_sd(src), str(path), metadata=meta)
    model, info = load_model(spec, path)
    assert info.label_names is None
    assert info.banner().endswith(
        '; its 9 class names were set aside: the model has 10 classes, so they are shown by number'
    )
    assert _same_outputs_1ch(model, src)


def _same_outputs_1ch(a, b):
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        return torch.allclose(a.eval()(x), b.eval()(x), atol=1e-6)


def test_timm_style_config_json_beside_the_weights(tmp_path):
    spec = _spec()
    save_file(_sd(build_model(spec, seed=1)), str(tmp_path / 'model.safetensors'))
    (tmp_path / 'config.json').write_text(
        json.dumps(
            {
                'architecture': 'tiny',
                'num_classes': 10,
                'label_names': list('abcdefghij'),
                'pretrained_cfg': {
                    'input_size': [3, 32, 32],
                    'mean': [0.5, 0.5, 0.5],
                    'std': [0.25, 0.25, 0.25],
                    'crop_pct': 1.0,
                    'interpolation': 'bilinear',
                },
            }
        )
    )
    _, info = load_model(spec, tmp_path / 'model.safetensors')
    assert info.label_names == list('abcdefghij') and info.pretrained_cfg['mean'] == [0.5, 0.5, 0.5]


def test_checkpoint_size_limit(tmp_path, monkeypatch):
    from explorer.explain.weights import WeightsError, read_checkpoint

    p = tmp_path / 'big.safetensors'
    p.write_bytes(b'\0' * (2 * 2**20))
    monkeypatch.setenv('EXPLORER_MAX_CHECKPOINT_MB', '1')
    with pytest.raises(WeightsError, match=r'is 2 MiB, over the 1 MiB limit \(set EXPLORER_MAX_CHECKPOINT_MB'):
        read_checkpoint(p)
    monkeypatch.setenv('EXPLORER_MAX_CHECKPOINT_MB', 'big')
    with pytest.raises(WeightsError, match="EXPLORER_MAX_CHECKPOINT_MB='big' is not an integer"):
        read_checkpoint(p)


def test_the_num_classes_hint_reads_the_classifiers_last_layer_only(tmp_path):
    """Review s23: two 10-class models with MLP heads of other widths were told 'set num_classes to 256': the hint
    read the first mismatched head weight, the MLP head's hidden layer (head.fc.fc1)."""
    path = tmp_path / 'w.safetensors'
    save_file(_sd(build_model(_spec(), seed=1)), str(path))  # 10 classes, last dim 64: hidden width 256
    with pytest.raises(WeightsError) as e:
        load_model(_spec(dims=(16, 32, 48)), path)  # 10 classes, hidden width 192
    msg = str(e.value)
    assert 'shape of head.fc.fc1.weight: checkpoint (256, 64) vs model (192, 48)' in msg
    assert 'hint:' not in msg
    linear = tmp_path / 'linear.safetensors'
    save_file(_sd(build_model(_spec(head='linear'), seed=1)), str(linear))
    with pytest.raises(WeightsError, match='head has 10 outputs and the spec 5; set num_classes to 10'):
        load_model(ArchSpec.from_dict({**tiny_spec(head='linear'), 'num_classes': 5}), linear)


def test_mixing_map_json_keeps_the_weights_provenance_beside_the_mixing_array():
    """Review s23: `mixing-map --json` wrote the banner under 'weights', then the mixing array's own 'weights'
    replaced it: a random model's JSON said nowhere that its weights were random."""
    from tests.conftest import run_cli

    rc, out, err = run_cli(
        'mixing-map', 'fmnist_hybrid', '--stage', '2', '--method', 'exact', '--query', '1,1', '--weights', 'random',
        '--json',
    )  # fmt: skip
    assert rc == 0, err
    d = json.loads(out)
    assert d['weights_info']['source'] == 'random' and d['weights_info']['trained'] is False
    assert RANDOM_WARNING in d['weights_info']['banner']
    assert isinstance(d['weights'], list) and d['input'] == 'seeded random mixer input'
    rc, out, err = run_cli('mixing-map', 'fmnist_hybrid', '00000_ankle_boot.png', '--json')
    assert rc == 0, err
    d = json.loads(out)
    assert d['weights_info']['source'] == 'checkpoint' and d['input'] == 'image'
