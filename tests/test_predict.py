"""explorer.explain.predict and the `explorer predict/attribute/mixing-map/erf` commands: preprocessing equal to
timm's transform, top-k on a head set so the answer is known, class names, clean CLI errors."""

import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.data import create_transform, resolve_data_config

from explorer.__main__ import main
from explorer.core.build import build_model
from explorer.core.catalog import load_spec
from explorer.core.spec import ArchSpec
from explorer.explain.images import example_images, load_image
from explorer.explain.predict import class_names, data_config, predict, preprocess, to_display, top_k
from explorer.explain.weights import WeightsInfo, load_model
from tests.conftest import tiny_spec


@pytest.fixture(scope='module')
def cat():
    return load_image(next(p for p in example_images() if 'chelsea' in p.name))


@pytest.mark.parametrize('preset', ['poolformer_s12', 'caformer_s18'])
def test_preprocessing_equals_timms_transform(preset, cat):
    spec = load_spec(preset)
    _, info = load_model(spec, 'random')  # random weights still carry the preset's timm data config
    cfg = data_config(spec, info)
    ref_cfg = resolve_data_config({}, model=timm.create_model(spec.meta['timm_name']))
    assert cfg == ref_cfg
    assert cfg['crop_pct'] == (0.9 if preset.startswith('poolformer') else 1.0)
    ours = preprocess(cat, cfg)
    ref = create_transform(**ref_cfg)(cat).unsqueeze(0)
    assert ours.shape == (1, 3, 224, 224)
    assert torch.equal(ours, ref)


def test_checkpoint_config_drives_preprocessing(cat):
    spec = ArchSpec.from_dict(tiny_spec())
    info = WeightsInfo(
        'checkpoint',
        'x',
        {
            'mean': (0.5, 0.5, 0.5),
            'std': (0.25, 0.25, 0.25),
            'crop_pct': 1.0,
            'interpolation': 'bilinear',
            'input_size': (3, 224, 224),
        },
    )
    cfg = data_config(spec, info)
    assert cfg['input_size'] == (3, 32, 32)  # the model's size wins: it is built for it
    assert cfg['mean'] == (0.5, 0.5, 0.5) and cfg['crop_pct'] == 1.0 and cfg['interpolation'] == 'bilinear'
    x = preprocess(cat, cfg)
    ref = create_transform(
        input_size=(3, 32, 32), interpolation='bilinear', mean=(0.5,) * 3, std=(0.25,) * 3, crop_pct=1.0
    )(cat).unsqueeze(0)
    assert torch.equal(x, ref)
    # to_display undoes the normalisation
    img = to_display(x, cfg)
    back = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    assert torch.allclose((back - 0.5) / 0.25, x[0], atol=2 / 255 / 0.25)


def test_grey_padded_preprocessing_of_trained_checkpoints():
    spec = ArchSpec.from_dict({**tiny_spec(), 'in_chans': 1})
    info = WeightsInfo(
        'checkpoint',
        'x',
        {
            'input_size': (1, 32, 32),
            'mean': (0.25,),
            'std': (0.5,),
            'crop_pct': 1.0,
            'interpolation': 'bilinear',
            'pad_from': 28,
        },
    )
    cfg = data_config(spec, info)
    img = Image.new('RGB', (56, 56), (255, 255, 255))
    x = preprocess(img, cfg)
    assert x.shape == (1, 1, 32, 32)
    bg, fg = (0 - 0.25) / 0.5, (1 - 0.25) / 0.5
    assert torch.allclose(x[0, 0, :2], torch.full((2, 32), bg))
    assert torch.allclose(x[0, 0, :, 30:], torch.full((32, 2), bg))
    assert torch.allclose(x[0, 0, 2:30, 2:30], torch.full((28, 28), fg), atol=1e-5)
    # an RGB default config on a grey model: one channel with the average statistics
    cfg = data_config(spec, None)
    assert len(cfg['mean']) == 1 and cfg['mean'][0] == pytest.approx(np.mean([0.485, 0.456, 0.406]))


@pytest.mark.parametrize('size', [16, 24, 48])
def test_a_resized_checkpoint_sees_at_prediction_the_inputs_it_was_trained_on(size):
    """Training resizes 28x28 images with torch's bilinear (no antialiasing); prediction resized them with PIL's,
    which antialiases when it shrinks: up to 0.36 apart in normalised units at img_size 16 (0.13 of the range)."""
    from explorer.explain.weights import explorer_preprocessing_cfg
    from explorer.train.data import Preprocessing
    from explorer.train.data import preprocess as train_preprocess

    pixels = np.random.default_rng(size).integers(0, 256, (28, 28), dtype=np.uint8)
    pre = Preprocessing(img_size=size, resize='bilinear')
    trained = train_preprocess(torch.from_numpy(pixels), pre)
    spec = ArchSpec.from_dict({**tiny_spec(('pooling',), (8,), (1,), img_size=size), 'in_chans': 1})
    cfg = data_config(spec, WeightsInfo('checkpoint', 'x', explorer_preprocessing_cfg(pre.to_dict())))
    assert cfg['resize_from'] == 28 and 'pad_from' not in cfg
    seen = preprocess(Image.fromarray(pixels, 'L'), cfg)
    assert seen.shape == trained.shape == (1, 1, size, size)
    assert torch.allclose(seen, trained, atol=1e-5), (seen - trained).abs().max()


def _known_head_model():
    """Linear head with zero weights: logits = bias whatever the image, so top-k is known exactly."""
    spec = ArchSpec.from_dict({**tiny_spec(), 'head': 'linear'})
    model = build_model(spec, seed=0).eval()
    bias = torch.tensor([0.0, 3.0, -1.0, 2.0, 1.0, 0.5, -2.0, 2.5, 0.0, -0.5])
    with torch.no_grad():
        model.head.fc.weight.zero_()
        model.head.fc.bias.copy_(bias)
    return spec, model, bias


def test_top_k_on_a_head_with_a_known_answer(cat):
    spec, model, bias = _known_head_model()
    res = predict(model, cat, data_config(spec), topk=3)
    probs = bias.softmax(0)
    assert [p.index for p in res.top] == [1, 7, 3]
    assert [p.label for p in res.top] == ['class 1', 'class 7', 'class 3']
    assert [p.prob for p in res.top] == pytest.approx(probs[[1, 7, 3]].tolist(), abs=1e-6)
    assert [p.logit for p in res.top] == pytest.approx([3.0, 2.5, 2.0])
    names = [f'item {i}' for i in range(10)]
    res = predict(model, cat, data_config(spec), topk=50, label_names=names)
    assert len(res.top) == 10 and res.top[0].label == 'item 1'
    assert sum(p.prob for p in res.top) == pytest.approx(1.0, abs=1e-5)
    assert json.dumps(res.to_dict())
    with pytest.raises(ValueError, match='topk: 0 must be a positive integer'):
        top_k(bias, 0, names)


def test_imagenet_class_names_ship_with_timm():
    names = class_names(1000)
    assert len(names) == 1000
    assert names[281] == 'tabby, tabby cat' and names[967] == 'espresso'
    assert class_names(3) == ['class 0', 'class 1', 'class 2']
    assert class_names(2, ['a', 'b']) == ['a', 'b']


# ---- CLI --------------------------------------------------------------------------------------------------
@pytest.fixture
def tiny_files(tmp_path):
    spec = ArchSpec.from_dict(tiny_spec(mixers=('pooling', 'random', 'attention')))
    spec_path = tmp_path / 'tiny.json'
    spec_path.write_text(spec.to_json())
    model = build_model(spec, seed=7)
    ckpt = tmp_path / 'tiny.safetensors'
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    return spec_path, ckpt, str(example_images()[0])


def test_cli_predict_json(tiny_files, capsys):
    spec_path, ckpt, image = tiny_files
    assert main(['predict', str(spec_path), image, '--weights', str(ckpt), '--topk', '3', '--json']) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out['top']) == 3 and out['weights']['source'] == 'checkpoint'
    assert out['data_cfg']['input_size'] == [3, 32, 32]
    assert main(['predict', str(spec_path), image]) == 0  # no weights: random, and says so
    assert 'predictions are meaningless' in capsys.readouterr().out


def test_cli_attribute_writes_png(tiny_files, tmp_path, capsys):
    spec_path, ckpt, image = tiny_files
    out_png = tmp_path / 'maps' / 'ig.png'
    assert (
        main(
            [
                'attribute',
                str(spec_path),
                image,
                '--method',
                'saliency',
                '--target',
                '2',
                '--weights',
                str(ckpt),
                '--out',
                str(out_png),
                '--json',
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert res['target'] == 2 and res['map']['shape'] == [32, 32] and 0 <= res['deletion_auc'] <= 1
    assert Image.open(out_png).size[0] > 64


def test_cli_mixing_map_and_erf(tiny_files, capsys):
    spec_path, _, image = tiny_files
    assert main(['mixing-map', str(spec_path), '--stage', '0', '--query', '4,4', '--json']) == 0
    res = json.loads(capsys.readouterr().out)
    assert res['method'] == 'exact' and res['mean'][4][4] == pytest.approx(-8 / 9)
    assert main(['erf', str(spec_path), image, '--json']) == 0
    res = json.loads(capsys.readouterr().out)
    assert [s['stage'] for s in res['stages']] == [0, 1, 2]


@pytest.mark.parametrize(
    'argv, message',
    [
        (['predict', '{spec}', '/no/such/image.png'], "image file '/no/such/image.png' does not exist"),
        (['predict', '{spec}', '{image}', '--weights', '/no/such.pth'], "checkpoint '/no/such.pth' does not exist"),
        (['predict', '{spec}', '{image}', '--weights', '{wrong}'], 'does not fit this model'),
        (['predict', '{spec}', '{image}', '--topk', '0'], 'topk: 0 must be a positive integer'),
        (
            ['attribute', '{spec}', '{image}', '--method', 'magic', '--out', '{tmp}/a.png'],
            "method: 'magic' is not an attribution method",
        ),
        (
            ['attribute', '{spec}', '{image}', '--target', '10', '--out', '{tmp}/a.png'],
            'target: 10 is out of range; the model has 10 classes (0 to 9)',
        ),
        (['attribute', '{spec}', '{image}', '--out', '{tmp}/a.jpg'], 'must end in .png'),
        (['mixing-map', '{spec}', '--stage', '7'], 'stage: 7 is out of range'),
        (['mixing-map', '{spec}', '--query', '99,0'], 'query: (99, 0) is outside the 8x8 token grid'),
        (['mixing-map', '{spec}', '--query', 'centre'], "--query: 'centre' must be ROW,COL"),
        (['predict', 'no_such_preset', '{image}'], 'is neither a preset nor a spec file'),
    ],
)
def test_cli_errors_are_one_clean_message(tiny_files, tmp_path, capsys, argv, message):
    spec_path, ckpt, image = tiny_files
    wrong = tmp_path / 'wrong.safetensors'
    save_file({'stem.conv.weight': torch.zeros(2, 3, 7, 7)}, str(wrong))
    subs = dict(spec=str(spec_path), image=image, wrong=str(wrong), tmp=str(tmp_path))
    assert main([a.format(**subs) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and message in err and 'Traceback' not in err


def test_ui_handlers_run_without_a_server(tiny_files):
    from explorer.app import predict as u

    spec_path, ckpt, image = tiny_files
    spec = json.loads(spec_path.read_text())
    fig, status = u.predict_handler(u.COMPOSER, spec, 'checkpoint', str(ckpt), image, 3)
    assert len(fig.data[0].y) == 3 and 'weights from checkpoint' in status
    fig, status = u.predict_handler(u.COMPOSER, spec, 'random', None, image, 3)
    assert 'predictions are meaningless' in status
    # more than the model has classes: all of them, said in the title, every bar at least 22 px high
    n = spec.get('num_classes', 1000)
    fig, _ = u.predict_handler(u.COMPOSER, spec, 'random', None, image, n + 5)
    assert len(fig.data[0].y) == n and f'top-{n} (all {n} classes; asked for {n + 5})' in fig.layout.title.text
    assert fig.layout.height >= 80 + 22 * n
    fig, status = u.predict_handler(u.COMPOSER, None, 'random', None, image, 3)
    assert fig is None and 'composer has no valid spec' in status
    fig, status = u.mixing_handler(u.COMPOSER, spec, 'random', None, image, 2, 0, -1, -1, 'auto', 'diag', '0')
    assert fig is not None and '8 head(s)' in status
    fig, dfig, status = u.attribute_handler(u.COMPOSER, spec, 'random', None, image, 'gradcam', False, -1, 1)
    assert fig is not None and 'deletion AUC' in status and 'for random orders' in status


@pytest.mark.slow  # builds every timm-registered model once
def test_every_timm_preset_preprocesses_as_timm_does():
    """Input size, crop, interpolation, mean and std of each preset with timm weights equal timm's own data config
    for that model (a different crop changes the top-5 from the third class on)."""
    import timm

    from explorer.core.catalog import load_spec, preset_names, pretrained_name
    from explorer.explain.predict import data_config
    from explorer.explain.weights import WeightsInfo, timm_pretrained_cfg

    checked = 0
    for name in preset_names():
        spec = load_spec(name)
        tag = pretrained_name(spec)
        if not tag:
            continue
        ours = data_config(spec, WeightsInfo('random', 'test', timm_pretrained_cfg(tag)))
        theirs = timm.data.resolve_data_config({}, model=timm.create_model(tag, pretrained=False))
        for key in ('input_size', 'crop_pct', 'interpolation', 'mean', 'std'):
            a, b = ours[key], theirs[key]
            assert (tuple(a) if isinstance(a, (list, tuple)) else a) == (
                tuple(b) if isinstance(b, (list, tuple)) else b
            ), (name, key, a, b)
        checked += 1
    assert checked >= 18  # every timm-registered preset with weights


def test_the_explain_forms_take_cleared_fields_stages_from_1_and_keep_both_models(tiny_files):
    """Review findings in the Predict tab's handlers: a cleared number field (gradio sends None) ended in a
    TypeError (gradio's bare 'Error'), 2.7 was read as class 2; the GradCAM stage counted from 0 beside a mixing
    stage counting from 1 and the map never said which; two models of one name kept one faithfulness curve."""
    from explorer.app import predict as u

    spec_path, ckpt, image = tiny_files
    spec = json.loads(spec_path.read_text())
    fig, _, status = u.attribute_handler(u.COMPOSER, spec, 'random', None, image, 'gradcam', False, None, None)
    assert fig is not None and 'LayerGradCam at S3' in fig.layout.title.text, status  # cleared: predicted, last
    fig, _, _ = u.attribute_handler(u.COMPOSER, spec, 'random', None, image, 'gradcam', False, -1, 1)
    assert 'LayerGradCam at S1' in fig.layout.title.text  # 1 = S1, as the mixing form counts
    for target, stage, words in ((2.7, -1, 'target class: 2.7 is not a whole number'), (-1, 0, 'stages count from 1')):
        fig, _, status = u.attribute_handler(u.COMPOSER, spec, 'random', None, image, 'gradcam', False, target, stage)
        assert fig is None and words in status.replace('\\', ''), status
    fig, status = u.mixing_handler(u.COMPOSER, spec, 'random', None, image, 0, 0, None, None, 'auto', 'diag', 'mean')
    assert fig is not None and 'query (row, col) (4, 4)' in fig.layout.title.text, status  # cleared: the centre
    fig, ffig, _, _ = u.compare_handler(u.COMPOSER, 'random', u.COMPOSER, 'random', spec, None, image, 'saliency')
    names = {t.name or '' for t in ffig.data}
    assert any(n.startswith('A: tiny') for n in names) and any(n.startswith('B: tiny') for n in names), names


def test_a_checkpoints_own_spec_uses_its_own_weights_by_default():
    """'(spec inside checkpoint)' with the weights radio at its default ('pretrained') asked timm for weights of the
    checkpoint's spec (an error for a Fashion-MNIST model, timm's ImageNet weights for a preset's spec), though the
    hint said the uploaded checkpoint's weights are used."""
    from explorer.app import predict as u
    from explorer.train.checkpoints import ASSET_DIR

    ckpt, image = str(ASSET_DIR / 'fmnist_pooling.safetensors'), str(example_images()[0])
    fig, status = u.predict_handler(u.FROM_CHECKPOINT, None, 'pretrained', ckpt, image, 3)
    assert fig is not None and 'weights from checkpoint' in status, status
    assert 'Weights come from the uploaded checkpoint' in u.weights_hint(u.FROM_CHECKPOINT, None)


def test_a_mixing_map_says_when_it_was_computed_on_random_input_though_it_depends_on_the_input(tiny_files):
    """Without an image, attention's 'exact' map was computed on random tokens and the page said exact maps do
    not depend on the input; attention weights do (a review measured a difference of 0.31 in weights of 0.36)."""
    from explorer.app import predict as up

    spec_path, _, image = tiny_files
    spec = json.loads(spec_path.read_text())
    _, status = up.mixing_handler(up.COMPOSER, spec, 'random', None, None, 2, 0, -1, -1, 'auto', 'diag', 'mean')
    assert 'this map depends on the input, so pick an image' in status.replace('\\', '')
    _, status = up.mixing_handler(up.COMPOSER, spec, 'random', None, None, 0, 0, -1, -1, 'auto', 'diag', 'mean')
    assert 'this map does not depend on the input' in status.replace('\\', '')
    _, status = up.mixing_handler(up.COMPOSER, spec, 'random', None, image, 2, 0, -1, -1, 'auto', 'diag', 'mean')
    assert 'No image' not in status


def test_explain_forms_name_fields_in_their_own_numbering(tiny_files, capsys, tmp_path):
    """Review findings: GradCAM stage 4 of 3 read 'stage: 3 is out of range (0 to 2)'; row 2 with col -1 mapped
    the centre token and ignored the row; head 'x' said 'invalid literal for int()'; `attribute --method
    smoothgrad --json` said "smoothgrad": false; mixing-map's picture called the first stage S0."""
    from explorer.app import predict as u

    spec_path, _, image = tiny_files
    spec = json.loads(spec_path.read_text())
    fig, _, status = u.attribute_handler(u.COMPOSER, spec, 'random', None, image, 'gradcam', False, -1, 4)
    status = status.replace('\\', '')
    assert fig is None and 'GradCAM stage: 4 is out of range; the model has 3 stages (1 to 3: S1 to S3' in status
    fig, _, _ = u.attribute_handler(u.COMPOSER, spec, 'random', None, image, 'gradcam', False, -1, -3)
    assert 'LayerGradCam at S1' in fig.layout.title.text  # negative from the end
    fig, _, status = u.attribute_handler(u.COMPOSER, spec, 'random', None, image, 'saliency', False, -1, 4)
    assert fig is not None, status  # the greyed-out GradCAM field keeps 4 from a 4-stage model: not a mistake here
    fig, _, status = u.attribute_handler(u.COMPOSER, spec, 'random', None, image, 'saliency', False, -1, 0)
    assert fig is not None, status
    fig, status = u.mixing_handler(u.COMPOSER, spec, 'random', None, image, 0, 0, 2, -1, 'auto', 'diag', 'mean')
    status = status.replace('\\', '')
    assert fig is None and 'query: row 2, col -1: give both (0 and up), or both -1 for the centre token' in status
    fig, status = u.mixing_handler(u.COMPOSER, spec, 'random', None, image, 2, 0, -1, -1, 'auto', 'diag', 'x')
    assert fig is None and "head: 'x' must be 'mean' or a head index (0 to 7)" in status.replace('\\', '')
    out = tmp_path / 'sg.png'
    argv = ['attribute', str(spec_path), image, '--method', 'smoothgrad', '--no-deletion', '--json', '--out', str(out)]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)['smoothgrad'] is True
    assert main(['mixing-map', str(spec_path), '--stage', '0', '--query', '4,4']) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith('stage 0 block 0 (S1 block 1): pooling')


def test_random_weights_of_a_checkpoints_spec_take_its_preprocessing(capsys):
    """A trained model with weights 'random' was preprocessed with timm's ImageNet defaults (bicubic, crop 0.875,
    no padding): 'trained vs random' of one model compared maps of two differently framed inputs."""
    from pathlib import Path

    from explorer.app import predict as u

    ckpt = Path(__file__).resolve().parent.parent / 'assets' / 'fmnist' / 'fmnist_hybrid.safetensors'
    trained = u.get_model(u.TRAINED + 'fmnist_hybrid', None, 'pretrained', None)
    random = u.get_model(u.TRAINED + 'fmnist_hybrid', None, 'random', None)
    uploaded = u.get_model(u.FROM_CHECKPOINT, None, 'random', str(ckpt))
    assert random.info.source == uploaded.info.source == 'random' and trained.info.source == 'checkpoint'
    assert random.cfg == uploaded.cfg == trained.cfg and trained.cfg['pad_from'] == 28
    composer = u.get_model(u.COMPOSER, random.spec.to_dict(), 'random', None)  # the same spec, no checkpoint
    assert composer.cfg['interpolation'] == 'bicubic' and 'pad_from' not in composer.cfg and composer is not random
    image = str(Path(__file__).resolve().parent.parent / 'assets/fmnist/images/00000_ankle_boot.png')
    assert main(['predict', str(ckpt), image, '--weights', 'random', '--json']) == 0
    assert json.loads(capsys.readouterr().out)['data_cfg']['pad_from'] == 28


def test_the_erf_button_shows_what_explorer_erf_prints():
    """The Predict tab's ERF handler had no test: it must show the figures `explorer erf` gives for the same
    model and example images (one function behind both), growing stage by stage for a pooling network, and a
    bad model choice gives a message, not a figure."""
    from explorer.app.predict import erf_handler
    from tests.conftest import run_cli

    code, out, err = run_cli('erf', 'fmnist_pooling', '--json')
    assert code == 0, err
    cli = json.loads(out)
    fig, text = erf_handler('trained: fmnist_pooling', None, 'pretrained', None)
    assert fig is not None and f'{len(cli["images"])} images' in text
    for r in cli['stages']:
        cells = ' | '.join(f'{100 * r["area"][k]:.1f}%' for k in ('20%', '50%', '90%'))
        assert f'| S{r["stage"] + 1} | {r["mixer"]} | {cells} |' in text
    areas = [r['area']['50%'] for r in cli['stages']]
    assert areas == sorted(areas) and areas[0] < areas[-1]
    fig, text = erf_handler('trained: no_such_run', None, 'pretrained', None)
    assert fig is None and 'is not a trained checkpoint on this machine' in text


def test_an_interrupted_png_leaves_the_file_that_was_there(tiny_files, capsys, tmp_path, monkeypatch):
    """attribute and mixing-map wrote their PNG in place: a run stopped mid-write (Ctrl-C, a full disk) left half a
    PNG where the previous picture was. Now written beside it and renamed; a finished run replaces it."""
    from pathlib import Path

    from PIL import Image

    spec_path, _, image = tiny_files
    real_save = Image.Image.save

    def broken_save(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b'\x89PNG half')  # some bytes reach the file, then the write fails
        raise OSError('No space left on device')

    for argv in (
        ['attribute', str(spec_path), image, '--method', 'saliency', '--no-deletion'],
        ['mixing-map', str(spec_path), image, '--stage', '0'],
    ):
        out = tmp_path / f'{argv[0]}.png'
        out.write_bytes(b'the earlier picture')
        monkeypatch.setattr(Image.Image, 'save', broken_save)
        assert main([*argv, '--out', str(out)]) != 0
        assert 'No space left on device' in capsys.readouterr().err
        assert out.read_bytes() == b'the earlier picture', argv[0]
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith('.')) == []  # no leftover temp file
        monkeypatch.setattr(Image.Image, 'save', real_save)
        assert main([*argv, '--out', str(out)]) == 0
        assert Image.open(out).format == 'PNG', argv[0]
    capsys.readouterr()
