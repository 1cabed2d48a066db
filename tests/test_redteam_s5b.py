"""Red-team checks of the named endpoints other than /search, as a stranger on the network would call them: a
value of the wrong JSON type where a choice, a flag or a token position is expected, an image in a format the
server should never decode, a CUDA device index that str.isdigit() accepts but int() does not. Each request must
get a clear error naming the argument (or the right answer), never an internal error or a silent wrong answer."""

from __future__ import annotations

import base64
import io

import pytest

from explorer.core.spec import SpecError

from .conftest import TINY

MODEL = 'fmnist_pooling'  # a shipped trained model: works offline, loads in a second
IMAGE = '00000_ankle_boot.png'  # a shipped Fashion-MNIST example


def panel_error(name: str, *args, **kwargs) -> str:
    """The message a panels endpoint answers with (through `endpoint`, as gr.api serves it)."""
    import gradio as gr

    from explorer.app.context import endpoint
    from explorer.app.panels import API

    with pytest.raises(gr.Error) as info:
        endpoint(API[name])(*args, **kwargs)
    return info.value.message


def predict_error(name: str, *args, **kwargs) -> str:
    """The message a Predict endpoint answers with (served by gr.api as it is)."""
    import gradio as gr

    from explorer.app.predict import API

    with pytest.raises(gr.Error) as info:
        API[name](*args, **kwargs)
    return info.value.message


# ---- /memory ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('dtype', [['fp32'], {'fp32': 1}])
def test_memory_with_a_dtype_of_the_wrong_json_type_names_dtype(dtype):
    """Was: TypeError (unhashable type: 'list') from `dtype in BYTES_PER_ELEMENT`, answered as 'memory: could not
    handle this request'."""
    msg = panel_error('memory', TINY, batch_size=1, dtype=dtype)
    assert msg == f'dtype: {dtype!r} is not allowed; choose from fp32, bf16, fp16'


def test_the_resource_guard_refuses_an_unhashable_dtype_naming_it():
    from explorer.core.spec import ArchSpec
    from explorer.measure.guard import ResourceError, check_request

    with pytest.raises(ResourceError) as info:
        check_request(ArchSpec.from_dict(TINY), batch_size=1, dtype=['fp32'])
    assert info.value.errors == [('dtype', "['fp32'] is not allowed; choose from fp32, bf16, fp16")]


# ---- /add_stage, /remove_stage, /compare_points: what a spec's meta carries ---------------------------------
BIG = 2**64  # valid JSON, a Python int, and over the 64-bit range orjson (Gradio's response encoder) can write


def test_add_stage_drops_the_published_figures_of_the_preset_it_no_longer_is():
    """Was: /add_stage on caformer_s18 answered a 5-stage design still carrying caformer_s18's meta (top-1 83.6,
    26 M params, its timm pretrained tag), figures of another network."""
    from explorer.app.panels import API
    from explorer.core.catalog import get_preset

    five = API['add_stage']('caformer_s18')
    assert len(five['stages']) == 5 and five['meta'] == {}
    assert API['remove_stage'](five, 4) == get_preset('caformer_s18')  # the preset again: its figures again


@pytest.mark.parametrize('name, args', [('add_stage', ()), ('remove_stage', (0,))])
def test_stage_edits_refuse_a_meta_value_the_response_cannot_carry(name, args):
    """Was: meta {'gmacs': 2**64} came back as it was sent; Gradio's orjson raised 'Integer exceeds 64-bit
    range' while streaming the answer and the client saw its connection dropped (CancelledError), no message.
    meta's values are now checked with the spec; a custom design's valid meta is not echoed either."""
    from explorer.app.panels import API

    three = {**TINY, 'stages': TINY['stages'] + [TINY['stages'][1]]}
    with pytest.raises(SpecError, match=r'meta.gmacs: 18446744073709551616 must be a number in \[0, 1e\+07\]'):
        API[name]({**three, 'meta': {'gmacs': BIG}}, *args)
    out = API[name]({**three, 'meta': {'gmacs': 1.5, 'top1': 99.9}}, *args)
    assert out['meta'] == {} and len(out['stages']) == (4 if name == 'add_stage' else 2)


@pytest.mark.parametrize('top1', [BIG, 'abc'])
def test_compare_points_refuses_a_top1_that_is_no_percentage(top1):
    from explorer.app.panels import API

    with pytest.raises(SpecError, match=r'designs\[0\].meta.top1: .* must be a number in \[0, 100\]'):
        API['compare_points']('MACs', [{'name': 'mine', 'spec': {**TINY, 'meta': {'top1': top1}}}], [])


def test_compare_points_shows_no_top1_a_client_wrote_into_a_custom_design():
    """Was: a pinned design's meta.top1 was plotted and labelled 'published for this architecture'."""
    from explorer.app.panels import API

    out = API['compare_points']('MACs', [{'name': 'mine', 'spec': {**TINY, 'meta': {'top1': 99.9}}}], [])
    assert [(r['top1'], r['source']) for r in out['rows']] == [(None, 'not trained on ImageNet-1k here')]


def test_compare_points_names_a_family_that_does_not_exist():
    """Was: families=['convformer'] (the family is 'ConvFormer') answered with no presets and no error."""
    import gradio as gr

    from explorer.app.context import endpoint
    from explorer.app.panels import API, preset_families

    with pytest.raises(gr.Error, match="families: 'convformer' not known; choose from CAFormer, ConvFormer,"):
        endpoint(API['compare_points'])('MACs', None, ['convformer'])
    family = preset_families()[0]
    rows = API['compare_points']('MACs', None, [family])['rows']
    assert rows and {r['family'] for r in rows} == {family}


# ---- a float the client sent is named as sent -------------------------------------------------------------
@pytest.mark.parametrize(
    'name, args, kwargs, message',
    [
        ('scaling', (TINY, [1e308]), {}, 'sizes[0]: 1e+308 must be an integer in [8, 1536]'),
        ('remove_stage', (TINY, 1e308), {}, 'index: 1e+308 must be an integer in [0, 5]'),
        (
            'bench',
            (TINY,),
            dict(device='cpu', batch_size=1, repeats=1e20),
            'repeats: 1e+20 must be an integer in [1, 10]',
        ),
        ('bench', (TINY,), dict(device='cpu', batch_size=1e308), 'batch size 1e+308 must be an integer in [1, 4096]'),
    ],
)
def test_a_huge_float_is_quoted_as_the_client_wrote_it(name, args, kwargs, message):
    """Was: 1e308 is integer-valued, so it was turned into int(1e308) first and the message quoted a 309-digit
    number (1000000000000000010979063629...) that the client never sent."""
    assert panel_error(name, *args, **kwargs) == message


# ---- /attribute ------------------------------------------------------------------------------------------
@pytest.mark.parametrize('flag', ['false', 'no', 1, 0.0, [False]])
def test_attribute_smoothgrad_must_be_a_boolean(flag):
    """Was: bool('false') is True, so the string 'false' ran SmoothGrad (16 noisy passes) and the answer said
    smoothgrad: true."""
    msg = predict_error('attribute', MODEL, IMAGE, method='saliency', smoothgrad=flag)
    assert msg.startswith('smoothgrad: ') and msg.endswith('must be true or false')


def test_attribute_smoothgrad_false_and_true_still_work():
    from explorer.app.predict import API

    for flag in (False, True):
        assert API['attribute'](MODEL, IMAGE, method='saliency', smoothgrad=flag)['smoothgrad'] is flag


# ---- /mixing_map -----------------------------------------------------------------------------------------
@pytest.mark.parametrize('row, col', [(10**30, -1), (3, -1), (-1, 5), (-7, -7)])
def test_mixing_map_with_one_coordinate_off_the_grid_is_refused_not_centred(row, col):
    """Was: any negative row or col meant 'the centre', so row=10**30 (col left at -1) or (3, -1) silently
    answered with the centre token's map, a map of another token than the one asked for."""
    msg = predict_error('mixing_map', MODEL, '', 'pretrained', stage=0, row=row, col=col)
    assert msg.startswith(
        f'query: ({row}, {col}) is outside the 16x16 token grid of stage 0 (row 0 to 15, column 0 to 15)'
    )


def test_mixing_map_minus_one_minus_one_is_still_the_centre():
    from explorer.app.predict import API

    out = API['mixing_map'](MODEL, '', 'pretrained', stage=0, row=-1, col=-1)
    assert out['grid'] == [16, 16] and out['query'] == [8, 8]


# ---- images the server must not decode -------------------------------------------------------------------
def eps_bytes() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new('RGB', (8, 8)).save(buf, 'EPS')
    return buf.getvalue()


def test_an_eps_image_is_refused_without_running_ghostscript(monkeypatch):
    """Was: PIL tried every decoder it has; an EPS file reached EpsImagePlugin, which runs Ghostscript (an
    interpreter of the request's PostScript) wherever it is installed. Only the documented formats are decoded."""
    from PIL import EpsImagePlugin

    from explorer.explain.images import ImageError, load_image

    ran = []

    def ghostscript(*args, **kwargs):
        ran.append(args)
        raise OSError('Ghostscript ran')

    monkeypatch.setattr(EpsImagePlugin, 'Ghostscript', ghostscript)
    monkeypatch.setattr(EpsImagePlugin, 'gs_binary', 'gs')  # as where it is installed
    with pytest.raises(ImageError) as info:
        load_image(eps_bytes())
    assert str(info.value) == (
        'the uploaded image is not an image format PIL can read (use PNG, JPEG, WebP, BMP, GIF or TIFF)'
    )
    assert ran == []


@pytest.mark.parametrize('fmt', ['PPM', 'TGA', 'SGI', 'XBM'])
def test_formats_outside_the_documented_list_are_refused_by_the_predict_endpoint(fmt):
    from PIL import Image

    buf = io.BytesIO()
    Image.new('1' if fmt == 'XBM' else 'RGB', (28, 28)).save(buf, fmt)
    msg = predict_error('predict', MODEL, base64.b64encode(buf.getvalue()).decode())
    assert msg == 'the uploaded image is not an image format PIL can read (use PNG, JPEG, WebP, BMP, GIF or TIFF)'


def test_a_png_is_still_predicted():
    from PIL import Image

    from explorer.app.predict import API

    buf = io.BytesIO()
    Image.new('L', (28, 28)).save(buf, 'PNG')
    assert len(API['predict'](MODEL, base64.b64encode(buf.getvalue()).decode(), topk=3)['top']) == 3


# ---- /bench: the CUDA device index ------------------------------------------------------------------------
@pytest.mark.parametrize('index', ['²', '٠', '9' * 5_000])
def test_bench_on_a_gpu_server_names_a_device_index_int_cannot_read(monkeypatch, index):
    """Was (on a server with a GPU): '²'.isdigit() and ('9' * 5000).isdigit() are true, then int() raised
    ValueError, answered as "invalid literal for int() with base 10: '²'" (or the 4,300-digit limit): no field."""
    import torch

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    msg = panel_error('bench', TINY, device=f'cuda:{index}', batch_size=1)
    assert msg == f"device 'cuda:{index}': this machine has 1 CUDA device(s)"[:1000] or (
        msg.startswith("device 'cuda:9999") and msg.endswith('more characters)')  # a long value is clipped
    )


def test_bench_resolves_a_real_cuda_index(monkeypatch):
    import torch

    from explorer.measure.speed import resolve_device

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    assert resolve_device('cuda:1') == 'cuda:1'


# ---- end to end ------------------------------------------------------------------------------------------
def test_the_endpoints_answer_these_requests_with_the_argument_over_the_network(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match='dtype: .* is not allowed; choose from fp32, bf16, fp16'):
        client.predict(spec=TINY, batch_size=1, dtype=['fp32'], img_size=None, api_name='/memory')
    with pytest.raises(AppError, match='meta.gmacs: 18446744073709551616 must be a number'):
        client.predict(spec={**TINY, 'meta': {'gmacs': BIG}}, api_name='/add_stage')
    with pytest.raises(AppError, match='smoothgrad: .* must be true or false'):
        client.predict(
            model=MODEL, image=IMAGE, method='saliency', smoothgrad='false', api_name='/attribute'
        )  # fmt: skip
