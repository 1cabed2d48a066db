"""Red-team checks of checkpoint uploads and of /attribute's SmoothGrad flag, as a stranger would send them: a
.safetensors checkpoint whose preprocessing metadata asks for 10**11 channels, None or text where numbers belong,
or JSON nested too deep to decode; and SmoothGrad asked of Occlusion, which has no gradients to average. Each
must get a clear error naming the field (through the loader, the UI handler and the API), never an internal error,
a server out of memory, or an answer that says a setting was applied when it was not."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from explorer.core.build import build_model
from explorer.core.spec import ArchSpec
from explorer.explain.weights import WeightsError, checkpoint_spec, load_model, read_checkpoint
from tests.conftest import tiny_spec

GREY = ArchSpec.from_dict(tiny_spec(in_chans=1))  # a Fashion-MNIST-style model: 1 channel, 32x32
RGB = ArchSpec.from_dict(tiny_spec())
FMNIST = Path(__file__).resolve().parent.parent / 'assets' / 'fmnist'
IMAGE = FMNIST / 'images' / '00000_ankle_boot.png'
LEGIT = {'img_size': 32, 'resize': 'pad', 'mean': 0.286, 'std': 0.353, 'in_chans': 1, 'source_size': 28}


def _checkpoint(path: Path, pre: dict, spec: ArchSpec | None = GREY, weights_of: ArchSpec | None = None) -> Path:
    """A checkpoint the way save_checkpoint lays it out (weights + JSON metadata) with `pre` as its preprocessing;
    spec None: no spec in the metadata (the weights are `weights_of`'s)."""
    sd = {k: v.detach().clone().contiguous() for k, v in build_model(weights_of or spec, seed=0).state_dict().items()}
    meta = {'format': 'metaformer-explorer/trained-v1', 'preprocessing': json.dumps(pre)}
    if spec is not None:
        meta['spec'] = spec.to_json()
    save_file(sd, str(path), metadata=meta)
    return path


def _refused(path: Path, spec: ArchSpec = GREY) -> str:
    t0 = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        load_model(spec, path)
    assert time.perf_counter() - t0 < 10
    return str(info.value)


# ---- checkpoint preprocessing metadata --------------------------------------------------------------------------
@pytest.mark.parametrize(
    'pre, field, allowed',
    [
        ({'in_chans': 10**11, 'mean': 0.5, 'std': 0.5}, 'in_chans', "allowed 1 (the checkpoint's spec has in_chans 1)"),
        ({'in_chans': None}, 'in_chans', 'allowed 1'),
        ({'in_chans': True}, 'in_chans', 'allowed 1'),
        ({'in_chans': 'x'}, 'in_chans', 'allowed 1'),
        ({**LEGIT, 'in_chans': 3}, 'in_chans', "the checkpoint's spec has in_chans 1"),
        ({**LEGIT, 'img_size': 10**9}, 'img_size', "allowed 32 (the checkpoint's spec has img_size 32)"),
        ({**LEGIT, 'img_size': 32.0}, 'img_size', 'allowed 32'),
        ({**LEGIT, 'mean': 10**400}, 'mean', 'a number or a list of 1 finite numbers'),
        ({**LEGIT, 'mean': 'nan'}, 'mean', 'finite numbers'),
        ({**LEGIT, 'mean': [0.5, 0.5]}, 'mean', 'a list of 1 finite numbers (one per input channel)'),
        ({**LEGIT, 'mean': None}, 'mean', 'finite numbers'),
        ({**LEGIT, 'std': 0}, 'std', 'positive finite numbers'),
        ({**LEGIT, 'std': float('nan')}, 'std', 'positive finite numbers'),
        ({**LEGIT, 'std': [float('inf')]}, 'std', 'positive finite numbers'),
        ({**LEGIT, 'std': list(range(1, 10**5))}, 'std', 'a list of 1 positive finite numbers'),
        ({**LEGIT, 'source_size': 10**6}, 'source_size', 'allowed an integer in [1, 32] with resize pad'),
        ({**LEGIT, 'source_size': None}, 'source_size', 'allowed an integer in [1, 32]'),
        ({**LEGIT, 'resize': 'zoom'}, 'resize', 'choose from pad, none, bilinear'),
        ({**LEGIT, 'resize': ['pad']}, 'resize', 'choose from pad, none, bilinear'),
    ],
)
def test_a_checkpoint_with_bad_preprocessing_is_refused_naming_the_field(tmp_path, pre, field, allowed):
    """Was: in_chans 10**11 raised MemoryError at `(float(mean),) * c` (near 1.5e9 it would take the server's
    memory), None or text a TypeError/ValueError that named nothing, and 'nan' was loaded as a mean."""
    msg = _refused(_checkpoint(tmp_path / 'c.safetensors', pre))
    assert msg.startswith(f'checkpoint preprocessing.{field}: ') and allowed in msg, msg
    assert len(msg) < 300


def test_without_a_spec_in_the_file_in_chans_is_held_to_the_spec_limits(tmp_path):
    msg = _refused(_checkpoint(tmp_path / 'c.safetensors', {**LEGIT, 'in_chans': 17}, None, GREY))
    assert msg.startswith('checkpoint preprocessing.in_chans: 17 is not allowed; allowed an integer in [1, 16]')
    _, info = load_model(RGB, _checkpoint(tmp_path / 'rgb.safetensors', {**LEGIT, 'in_chans': 3}, None, RGB))
    assert info.pretrained_cfg['mean'] == (0.286,) * 3 and info.pretrained_cfg['input_size'] == (3, 32, 32)


def test_request_text_in_a_refusal_is_clipped_to_60_characters(tmp_path):
    msg = _refused(_checkpoint(tmp_path / 'c.safetensors', {**LEGIT, 'resize': 'x' * 100_000}))
    assert msg.startswith('checkpoint preprocessing.resize: ') and 'x' * 61 not in msg and len(msg) < 200
    msg = _refused(_checkpoint(tmp_path / 'd.safetensors', {**LEGIT, 'mean': [[0.5] * 10**5]}))
    assert msg.startswith('checkpoint preprocessing.mean: a list of 1 value is not allowed') and len(msg) < 200


@pytest.mark.parametrize('key', ['preprocessing', 'spec'])
def test_metadata_nested_too_deep_to_decode_is_refused_naming_it(tmp_path, key):
    """Was: json.loads raised RecursionError, an internal error, from checkpoint_spec and read_checkpoint."""
    path = tmp_path / 'deep.safetensors'
    sd = {k: v.contiguous() for k, v in build_model(GREY, seed=0).state_dict().items()}
    meta = {'spec': GREY.to_json(), 'preprocessing': json.dumps(LEGIT), key: '[' * 100_000 + ']' * 100_000}
    save_file(sd, str(path), metadata=meta)
    for fn in (read_checkpoint, checkpoint_spec) if key == 'spec' else (read_checkpoint,):
        with pytest.raises(WeightsError, match=f'^checkpoint metadata {key}: nested too deeply to read; allowed'):
            fn(path)


def test_checkpoints_written_by_training_still_load(tmp_path):
    """What save_checkpoint writes: Fashion-MNIST's Preprocessing (pad 28 -> 32; bilinear below 28), and an image
    folder's timm data config ({'kind': 'timm', ...}), which before this fix raised TypeError (float of a list)."""
    from explorer.train.checkpoints import save_checkpoint
    from explorer.train.data import Preprocessing

    path = tmp_path / 'fm.safetensors'
    save_checkpoint(path, build_model(GREY, seed=0), GREY, Preprocessing.for_spec(GREY), {}, [])
    _, info = load_model(GREY, path)
    assert info.pretrained_cfg['input_size'] == (1, 32, 32) and info.pretrained_cfg['pad_from'] == 28
    small = ArchSpec.from_dict(tiny_spec(in_chans=1, img_size=16))
    path = tmp_path / 'small.safetensors'
    save_checkpoint(path, build_model(small, seed=0), small, Preprocessing.for_spec(small), {}, [])
    _, info = load_model(small, path)  # source_size 28 > img_size 16 is fine: it resizes, it does not pad
    assert info.pretrained_cfg['input_size'] == (1, 16, 16) and 'pad_from' not in info.pretrained_cfg
    folder = {
        'kind': 'timm',
        'input_size': [3, 32, 32],
        'interpolation': 'bicubic',
        'mean': [0.485, 0.456, 0.406],
        'std': [0.229, 0.224, 0.225],
        'crop_pct': 0.875,
        'crop_mode': 'center',
    }
    path = tmp_path / 'folder.safetensors'
    save_checkpoint(path, build_model(RGB, seed=0), RGB, folder, {}, [])
    _, info = load_model(RGB, path)
    cfg = info.pretrained_cfg
    assert cfg['input_size'] == (3, 32, 32) and cfg['mean'] == (0.485, 0.456, 0.406) and cfg['crop_pct'] == 0.875
    assert cfg['interpolation'] == 'bicubic' and cfg['crop_mode'] == 'center'
    msg = _refused(_checkpoint(tmp_path / 'bad.safetensors', {**folder, 'input_size': [10**11, 32, 32]}, RGB), RGB)
    assert msg.startswith('checkpoint preprocessing.input_size[0]: 100000000000 is not allowed; allowed 3')
    msg = _refused(_checkpoint(tmp_path / 'bad2.safetensors', {**folder, 'crop_pct': 0.001}, RGB), RGB)
    assert msg.startswith('checkpoint preprocessing.crop_pct: 0.001 is not allowed; allowed [0.25, 1]')
    msg = _refused(_checkpoint(tmp_path / 'bad3.safetensors', {**folder, 'interpolation': 'sinc'}, RGB), RGB)
    assert msg.startswith("checkpoint preprocessing.interpolation: 'sinc' is not allowed; choose from nearest, ")
    from explorer.explain import predict, weights

    assert weights.INTERPOLATIONS is predict.INTERPOLATIONS  # one list of the names, no copy to drift


def test_the_ui_shows_the_refusal_of_an_uploaded_checkpoint(tmp_path):
    """Was: MemoryError escaped the handler, and Gradio showed a bare 'Error'."""
    from explorer.app import predict as u

    path = _checkpoint(tmp_path / 'upload.safetensors', {'in_chans': 10**11, 'mean': 0.5, 'std': 0.5})
    fig, status = u.predict_handler(u.FROM_CHECKPOINT, None, 'checkpoint', str(path), str(IMAGE), 3)
    text = status.replace('\\', '')  # Markdown escapes
    assert fig is None and text.startswith('**Error:** checkpoint preprocessing.in_chans: 100000000000 is not allowed')


@pytest.mark.parametrize(
    'meta, message',
    [
        (
            {'pretrained_cfg': '{"mean": 5}'},
            'checkpoint pretrained_cfg.mean: 5 is not allowed; allowed a list of 1 to 16',
        ),
        ({'data_config': '{"std": ["a", "b", "c"]}'}, 'checkpoint pretrained_cfg.std: '),
        ({'pretrained_cfg': '{"crop_pct": "big"}'}, "checkpoint pretrained_cfg.crop_pct: 'big' is not allowed"),
        ({'pretrained_cfg': '{"crop_mode": 7}'}, 'checkpoint pretrained_cfg.crop_mode: 7 is not allowed; choose from'),
        ({'pretrained_cfg': '[1, 2]'}, 'checkpoint pretrained_cfg: [1, 2] is not allowed; allowed a JSON object'),
        ({'classes': '5'}, 'checkpoint class names (classes / label_names): 5 is not allowed; allowed a list'),
        ({'label_names': '[{"a": 1}]'}, 'checkpoint class names (classes / label_names): a list of 1 value is not'),
    ],
)
def test_other_metadata_of_the_wrong_type_is_refused_naming_it(tmp_path, meta, message):
    """Was: TypeError ('int' object is not iterable, object of type 'int' has no len()) when the model was used."""
    path = tmp_path / 'c.safetensors'
    sd = {k: v.contiguous() for k, v in build_model(GREY, seed=0).state_dict().items()}
    save_file(sd, str(path), metadata={'spec': GREY.to_json(), **meta})
    assert _refused(path).startswith(message)


# ---- SmoothGrad with Occlusion ----------------------------------------------------------------------------------
OCCLUSION_SG = 'smoothgrad: not available for occlusion; SmoothGrad averages gradients, use it with ig, saliency'


@pytest.fixture(scope='module')
def tiny_model():
    from explorer.explain.images import load_image
    from explorer.explain.session import open_model

    return open_model(GREY, 'random'), load_image(IMAGE)


@pytest.mark.parametrize('fast', [True, False])
def test_the_session_refuses_smoothgrad_with_occlusion_on_every_path(tiny_model, fast):
    """Was: the fast Occlusion branch ignored smoothgrad and the Explanation said SmoothGrad (its map equal to the
    one without it); the slow path reached attribute()'s refusal. Now both refuse with attribute()'s message."""
    from explorer.explain.session import explain

    m, image = tiny_model
    with pytest.raises(ValueError, match=f'^{OCCLUSION_SG}'):
        explain(m, image, 'occlusion', smoothgrad=True, deletion=False, fast=fast)
    e = explain(m, image, 'occlusion', deletion=False, fast=fast)
    assert e.method == 'occlusion' and not e.smoothgrad and e.title == 'Occlusion (sliding window)'


def test_the_smoothgrad_alias_is_smoothgrad_saliency_in_the_session(tiny_model):
    from explorer.explain.session import explain

    m, image = tiny_model
    e = explain(m, image, 'smoothgrad', deletion=False)
    assert e.method == 'saliency' and e.smoothgrad and e.title.endswith('+ SmoothGrad')


def test_the_attribute_endpoint_refuses_smoothgrad_with_occlusion():
    """Was: /attribute answered "smoothgrad": true with a plain occlusion map."""
    import gradio as gr

    from explorer.app.predict import API

    with pytest.raises(gr.Error) as info:
        API['attribute']('fmnist_pooling', IMAGE.name, 'random', method='occlusion', smoothgrad=True)
    assert info.value.message.startswith(OCCLUSION_SG)
    assert API['attribute']('fmnist_pooling', IMAGE.name, 'random', method='saliency', smoothgrad=True)['smoothgrad']


def test_the_ui_shows_the_refusal_of_smoothgrad_with_occlusion():
    from explorer.app import predict as u

    spec = GREY.to_dict()
    fig, ffig, status, warning, trust = u.attribution_view(
        u.COMPOSER, spec, 'random', None, str(IMAGE), 'occlusion', True
    )
    assert fig is None and ffig is None and status.replace('\\', '') == f'**Error:** {OCCLUSION_SG}, gradshap, gradcam'
    fig, ffig, status = u.attribute_handler(u.COMPOSER, spec, 'random', None, str(IMAGE), 'occlusion', False)
    assert fig is not None and 'Error' not in status


def test_a_tensor_checkpoint_reads_fine_alongside(tmp_path):
    """A plain state dict without metadata keeps loading (no preprocessing to check)."""
    path = tmp_path / 'plain.safetensors'
    save_file({k: v.contiguous() for k, v in build_model(GREY, seed=0).state_dict().items()}, str(path))
    model, info = load_model(GREY, path)
    assert info.pretrained_cfg == {} and isinstance(next(model.parameters()), torch.Tensor)


def test_the_smoothgrad_method_name_is_smoothgrad_saliency_through_the_api():
    """'smoothgrad' is offered as a method name (SmoothGrad saliency), but /attribute, the Predict tab and the CLI
    dropped the SmoothGrad it implies: it gave plain saliency and said so."""
    import numpy as np

    from explorer.app.predict import API

    plain = API['attribute']('fmnist_pooling', IMAGE.name, 'random', method='saliency', smoothgrad=False, seed=0)
    named = API['attribute']('fmnist_pooling', IMAGE.name, 'random', method='smoothgrad', smoothgrad=False, seed=0)
    asked = API['attribute']('fmnist_pooling', IMAGE.name, 'random', method='saliency', smoothgrad=True, seed=0)
    assert named['smoothgrad'] is True and named['method'] == 'saliency'
    assert np.allclose(named['map'], asked['map']) and not np.allclose(named['map'], plain['map'])
