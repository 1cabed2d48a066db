"""The Predict & explain API functions (what gradio_client calls): models, images and clear refusals."""

import base64
import io

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from explorer.app import predict as up


def _png_b64(size=(40, 30), colour=(200, 30, 30)) -> str:
    buf = io.BytesIO()
    Image.new('RGB', size, colour).save(buf, format='PNG')
    return base64.b64encode(buf.getvalue()).decode()


def test_examples_and_models_listed():
    names = up.api_examples()
    assert '00000_ankle_boot.png' in names and 'chelsea_cat.jpg' in names
    models = up.api_list_models()
    assert 'caformer_s18' in models


def test_predict_with_example_and_with_base64_bytes():
    a = up.api_predict('poolformer_s12', 'chelsea_cat.jpg', weights='random', topk=3)
    assert len(a['top']) == 3 and a['weights']['source'] == 'random'
    probs = [t['prob'] for t in a['top']]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
    b = up.api_predict('poolformer_s12', 'data:image/png;base64,' + _png_b64(), weights='random', topk=1)
    assert b['data_cfg']['input_size'] == [3, 224, 224]
    again = up.api_predict('poolformer_s12', 'chelsea_cat.jpg', weights='random', topk=3)
    assert again['top'] == a['top']  # the cached model gives the same answer


@pytest.mark.skipif(not up.trained_choices(), reason='no trained Fashion-MNIST checkpoints in assets/fmnist')
def test_offline_default_is_a_shipped_trained_model():
    from pathlib import Path

    from explorer.train.checkpoints import read_metadata

    choice = up.default_choice()
    assert choice.startswith(up.TRAINED)
    name = choice[len(up.TRAINED) :]
    shipped = {
        p.stem: read_metadata(p)['metrics']['test_accuracy']
        for p in (Path(__file__).parent.parent / 'assets' / 'fmnist').glob('*.safetensors')
    }
    assert name == max(shipped, key=shipped.get)  # the most accurate shipped model
    out = up.api_predict(name, '00000_ankle_boot.png', topk=1)
    assert out['weights']['trained'] and out['weights']['source'] == 'checkpoint'
    assert out['top'][0]['label'] in ('Ankle boot', 'Sneaker', 'Sandal')  # footwear, by any sane model


@pytest.mark.parametrize(
    'args,pattern',
    [
        (('poolformer_s12', '/etc/passwd'), 'neither an example name'),
        (('poolformer_s12', ''), 'image: give an example name'),
        (('poolformer_s12', base64.b64encode(b'not an image').decode()), 'not an image|cannot identify|not a'),
        (('no_such_model', 'chelsea_cat.jpg'), "unknown model 'no_such_model'; known models: trained ones"),
        (('', 'chelsea_cat.jpg'), 'model: a preset name'),
    ],
)
def test_bad_requests_are_clear_errors(args, pattern):
    with pytest.raises(gr.Error, match=pattern):
        up.api_predict(*args, weights='random')


def test_bad_topk_and_weights():
    with pytest.raises(gr.Error, match=r'topk: 0 must be an integer in \[1, 100\]'):
        up.api_predict('poolformer_s12', 'chelsea_cat.jpg', weights='random', topk=0)
    with pytest.raises(gr.Error, match="weights: 'imagenet' is not allowed; choose pretrained .* or random"):
        up.api_predict('poolformer_s12', 'chelsea_cat.jpg', weights='imagenet')


def test_weights_offered_to_api_clients_are_the_ones_the_api_takes():
    """The review: 'checkpoint' on a preset said "upload a checkpoint", which the API cannot do, and was listed
    among the allowed values."""
    with pytest.raises(gr.Error) as e:
        up.api_predict('poolformer_s12', 'chelsea_cat.jpg', weights='checkpoint')
    assert 'upload' not in e.value.message and 'checkpoint' not in e.value.message.split('allowed')[1]
    out = up.api_predict('fmnist_pooling', '00000_ankle_boot.png', weights='checkpoint', topk=1)  # its own
    assert out == up.api_predict('fmnist_pooling', '00000_ankle_boot.png', weights='pretrained', topk=1)


def test_model_endpoints_title_a_bad_request_invalid_request():
    """The review: /predict, /mixing_map and /attribute refused with the generic title 'Error'."""
    calls = [
        lambda: up.api_predict('fmnist_hybrid', ''),
        lambda: up.api_predict('poolformer_s12', 'chelsea_cat.jpg', weights='random', topk=0),
        lambda: up.api_mixing_map('poolformer_s12', '', 'random', stage=9),
        lambda: up.api_attribute('fmnist_pooling', '00000_ankle_boot.png', method='foo'),
    ]
    for call in calls:
        with pytest.raises(gr.Error) as e:
            call()
        assert e.value.title == 'Invalid request', e.value.message


def test_whole_numbers_sent_as_floats_are_taken():
    """The review: topk=3.0, stage=1.0 and the like were refused ('must be an integer'); 3.5 still is."""
    top = up.api_predict('fmnist_pooling', '00000_ankle_boot.png', topk=3.0)
    assert len(top['top']) == 3
    mix = up.api_mixing_map('poolformer_s12', '', 'random', stage=1.0, block=0.0, row=-1.0, col=-1.0)
    assert mix['stage'] == 1 and mix['block'] == 0
    attr = up.api_attribute(
        'fmnist_pooling', '00000_ankle_boot.png', method='saliency', target=2.0, stage=-1.0, seed=0.0
    )
    assert attr['target'] == 2
    with pytest.raises(gr.Error, match=r'topk: 3\.5 must be an integer'):
        up.api_predict('fmnist_pooling', '00000_ankle_boot.png', topk=3.5)
    with pytest.raises(gr.Error, match=r'stage: 1\.5 must be an integer'):
        up.api_mixing_map('poolformer_s12', '', 'random', stage=1.5)
    with pytest.raises(gr.Error, match=r'seed: 0\.5 must be an integer'):
        up.api_attribute('fmnist_pooling', '00000_ankle_boot.png', method='saliency', seed=0.5)


def test_mixing_map_of_pooling_is_the_window_minus_identity():
    out = up.api_mixing_map('poolformer_s12', '', 'random', stage=0, block=0, row=10, col=10)
    w = np.array(out['weights'])
    assert out['grid'] == [56, 56] and out['method'] == 'exact'
    window = w[9:12, 9:12]
    np.testing.assert_allclose(window, np.full((3, 3), 1 / 9) - np.eye(3)[1][:, None] * np.eye(3)[1], atol=1e-6)
    assert np.abs(w).sum() == pytest.approx(np.abs(window).sum())
    assert out['depends_on_input'] is False and out['input'] == 'seeded random mixer input'


def test_mixing_map_bad_stage():
    with pytest.raises(gr.Error, match='stage'):
        up.api_mixing_map('poolformer_s12', '', 'random', stage=9)


def test_models_trained_after_start_up_are_offered_when_the_tab_opens(monkeypatch, tmp_path):
    import shutil
    from pathlib import Path

    import explorer.train.checkpoints

    monkeypatch.setattr(explorer.train.checkpoints, 'USER_DIR', tmp_path)
    before = up.model_choices()
    shutil.copy(
        Path(__file__).parent.parent / 'assets' / 'fmnist' / 'fmnist_identity.safetensors',
        tmp_path / 'mine.safetensors',
    )  # as the Train tab writes one
    a, b = up.refresh_pickers('caformer_s18', f'{up.TRAINED}fmnist_pooling')
    offered = [c[1] if isinstance(c, tuple) else c for c in a.choices]
    assert f'{up.TRAINED}mine' in offered and f'{up.TRAINED}mine' not in before
    assert (a.value, b.value) == ('caformer_s18', f'{up.TRAINED}fmnist_pooling')  # selections kept
    assert up.get_model(f'{up.TRAINED}mine', None, 'pretrained', None).spec.name == 'fmnist_identity'


@pytest.mark.parametrize('size', [(12000, 1), (1, 12000), (4000, 3)])
def test_a_thin_image_is_refused_before_it_is_resized(size):
    """A 119-byte 12,000 x 1 PNG is 12,000 pixels, far under the decoder's limit, but the eval transform scales
    its short side to 248 keeping the aspect ratio: 2,976,000 x 248 pixels, 2.8 GB of the server's memory (a
    100,000 x 1 one would take the whole machine). Refused naming its size, before anything is resized."""
    w, h = size
    with pytest.raises(gr.Error, match=rf'the image is {w:,} x {h:,} pixels: resizing its short side .* at most 40 M'):
        up.api_predict('poolformer_s12', 'data:image/png;base64,' + _png_b64(size), weights='random', topk=1)
    for method in ('saliency', 'occlusion'):
        with pytest.raises(gr.Error, match=rf'the image is {w:,} x {h:,} pixels'):
            up.api_attribute('poolformer_s12', 'data:image/png;base64,' + _png_b64(size), 'random', method)
    wide = up.api_predict('poolformer_s12', 'data:image/png;base64,' + _png_b64((800, 100)), weights='random', topk=1)
    assert wide['data_cfg']['input_size'] == [3, 224, 224]  # an ordinary panorama still works


def test_the_model_cache_loads_a_key_once_and_keeps_a_models_lock_while_it_lives():
    """Two concurrent first requests for one model built it twice; an evicted model's lock was dropped, so a request
    still holding that model got a fresh lock and could run beside the holder of the old one."""
    import threading
    import time

    from explorer.explain.cache import ModelCache

    class Entry:
        def __init__(self):
            self.model = type('Model', (), {})()

    cache, loads = ModelCache(size=1), []

    def slow_load():
        loads.append(1)
        time.sleep(0.3)
        return Entry()

    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.get('a', slow_load))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1 and all(g is got[0] for g in got)
    held = got[0].model
    lock = cache.lock(held)
    cache.get('b', Entry)  # evicts 'a' (size 1)
    assert cache.lock(held) is lock  # the evicted model still in use keeps its lock
    with pytest.raises(RuntimeError):
        cache.get('c', lambda: (_ for _ in ()).throw(RuntimeError('no such weights')))
    assert cache.get('c', Entry).model is not None  # a failed load can be tried again


@pytest.mark.skipif(not up.trained_choices(), reason='no trained Fashion-MNIST checkpoints in assets/fmnist')
def test_a_checkpoint_uploaded_for_a_trained_model_is_used_or_refused(tmp_path):
    """A review: with a shipped trained model, "checkpoint" weights and a file uploaded, Predict ran the trained
    model's own weights and said "weights from checkpoint trained model ...": the upload was never read, and a
    file of random bytes gave normal results. The upload now goes into the trained model's network (or is
    refused by name); without one, "checkpoint" keeps meaning the trained model's own file (as the API has it)."""
    import torch

    choice = list(up.trained_choices())[0]
    own = up.get_model(choice, None, 'checkpoint', None)
    junk = tmp_path / 'junk.pth'
    junk.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ValueError, match="junk.pth' is not a readable"):
        up.get_model(choice, None, 'checkpoint', str(junk))
    mine = up.get_model(choice, None, 'random', None).model
    path = tmp_path / 'mine.pth'
    torch.save(mine.state_dict(), path)
    got = up.get_model(choice, None, 'checkpoint', str(path))
    assert got.info.where == 'the uploaded checkpoint' and got.spec.to_json() == own.spec.to_json()
    for (name, a), b in zip(got.model.state_dict().items(), mine.state_dict().values()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(b, c) for b, c in zip(mine.state_dict().values(), own.model.state_dict().values()))
