"""explorer.explain.images: every PIL mode becomes correct 8-bit RGB; bad files are refused with clear messages."""

import io
import re

import numpy as np
import pytest
from PIL import Image

from explorer.explain.images import ASSET_DIR, ImageError, example_images, load_image, to_rgb


def _png_bytes(img: Image.Image, fmt: str = 'PNG') -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def _px(img, xy=(0, 0)):
    return img.convert('RGB').getpixel(xy) if img.mode != 'RGB' else img.getpixel(xy)


def test_rgba_is_composited_over_white():
    a = np.zeros((2, 2, 4), np.uint8)
    a[0, 0] = (255, 0, 0, 255)  # opaque red
    a[0, 1] = (0, 0, 255, 0)  # transparent blue: its colour must not show
    a[1, 0] = (0, 0, 0, 128)  # half-transparent black over white -> mid grey
    out = load_image(_png_bytes(Image.fromarray(a, 'RGBA')))
    assert out.mode == 'RGB'
    assert out.getpixel((0, 0)) == (255, 0, 0)
    assert out.getpixel((1, 0)) == (255, 255, 255)
    assert all(abs(v - 127) <= 1 for v in out.getpixel((0, 1)))


def test_la_and_palette_with_transparency():
    la = Image.fromarray(np.array([[[40, 255], [200, 0]]], np.uint8), 'LA')
    out = load_image(_png_bytes(la))
    assert out.getpixel((0, 0)) == (40, 40, 40) and out.getpixel((1, 0)) == (255, 255, 255)
    p = Image.new('P', (2, 1))
    p.putpalette([10, 20, 30, 0, 255, 0] + [0] * 762)
    p.putpixel((0, 0), 0)
    p.putpixel((1, 0), 1)
    p.info['transparency'] = 1
    out = load_image(_png_bytes(p))
    assert out.getpixel((0, 0)) == (10, 20, 30)
    assert out.getpixel((1, 0)) == (255, 255, 255)  # the transparent palette entry is background, not green


def test_palette_without_transparency_and_grey():
    p = Image.new('P', (1, 1))
    p.putpalette([9, 99, 199] + [0] * 765)
    assert load_image(_png_bytes(p)).getpixel((0, 0)) == (9, 99, 199)
    assert load_image(_png_bytes(Image.new('L', (3, 3), 77))).getpixel((1, 1)) == (77, 77, 77)
    assert load_image(_png_bytes(Image.new('1', (3, 3), 1))).getpixel((0, 0)) == (255, 255, 255)


def test_cmyk():
    white = load_image(_png_bytes(Image.new('CMYK', (1, 1), (0, 0, 0, 0)), 'JPEG'))
    assert all(v >= 250 for v in white.getpixel((0, 0)))
    black = to_rgb(Image.new('CMYK', (1, 1), (0, 0, 0, 255)))
    assert black.getpixel((0, 0)) == (0, 0, 0)
    cyan = to_rgb(Image.new('CMYK', (1, 1), (255, 0, 0, 0)))
    assert cyan.getpixel((0, 0)) == (0, 255, 255)


def test_sixteen_bit_grey_is_rescaled_not_clipped():
    a = np.array([[0, 32768, 65535]], np.uint16)
    img = Image.fromarray(a)
    assert img.mode.startswith('I;16')
    out = to_rgb(img)
    assert [out.getpixel((i, 0))[0] for i in range(3)] == [0, 128, 255]
    # through a 16-bit PNG file (PIL reads it back as I;16 or I)
    out = load_image(_png_bytes(img))
    assert [out.getpixel((i, 0))[0] for i in range(3)] == [0, 128, 255]
    # 32-bit float in [0, 1]
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), 'F')
    assert [to_rgb(f).getpixel((i, 0))[0] for i in range(3)] == [0, 128, 255]


def test_sixteen_bit_grey_decodes_in_few_bytes_per_pixel_and_rounds_every_value_as_before():
    """float64 temporaries took 24 bytes per pixel: a 40 M-pixel 16-bit PNG of about 120 kB (allowed) made the
    server allocate about 1 GB to decode it."""
    import tracemalloc

    from explorer.explain.images import _grey_to_uint8

    every = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    want = np.clip(np.round(every.astype(np.float64) / 65535.0 * 255.0), 0, 255).astype(np.uint8)
    assert np.array_equal(_grey_to_uint8(every, 'I;16'), want)  # float32 rounds all 65,536 values the same
    big = Image.fromarray(np.full((1000, 2000), 40000, np.uint16))
    data = _png_bytes(big)
    tracemalloc.start()
    try:
        out = load_image(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.getpixel((0, 0)) == (156, 156, 156)
    assert peak / 2e6 < 12, f'{peak / 2e6:.1f} bytes per pixel'


def test_bad_inputs_are_refused_with_clear_messages(tmp_path):
    with pytest.raises(ImageError, match='does not exist'):
        load_image(tmp_path / 'nope.png')
    empty = tmp_path / 'empty.png'
    empty.write_bytes(b'')
    with pytest.raises(ImageError, match=r'empty \(0 bytes\)'):
        load_image(empty)
    text = tmp_path / 'notes.png'
    text.write_text('this is not an image')
    with pytest.raises(ImageError, match='not an image format'):
        load_image(text)
    good = _png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)))
    with pytest.raises(ImageError, match='truncated|corrupt'):
        load_image(good[: len(good) // 2])
    corrupt = bytearray(good)
    corrupt[60:400] = bytes(340)  # signature and header intact, image data destroyed
    with pytest.raises(ImageError, match='cannot decode|corrupt|not an image'):
        load_image(bytes(corrupt))
    with pytest.raises(ImageError, match='is not a file'):
        load_image(tmp_path)


def test_decompression_bombs_are_refused(monkeypatch):
    data = _png_bytes(Image.new('RGB', (200, 100)))
    with pytest.raises(ImageError, match=re.escape('200x100 = 20,000 pixels, above the 10,000 limit')):
        load_image(data, max_pixels=10_000)
    # PIL's own guard (MAX_IMAGE_PIXELS) is turned into the same kind of error, warning level included
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 15_000)
    with pytest.raises(ImageError, match='decompression bomb'):
        load_image(data)


def test_example_images_are_shipped_with_licences():
    paths = example_images()
    assert len(paths) >= 4
    licences = (ASSET_DIR / 'LICENSES.md').read_text(encoding='utf-8')
    for p in paths:
        assert f'`{p.name}`' in licences, f'{p.name} has no licence entry'
        img = load_image(p)
        assert img.mode == 'RGB' and min(img.size) >= 224


def test_the_predict_tab_hands_uploads_to_load_image_unconverted(tmp_path):
    """gradio's gr.Image converts every upload that is not in its `image_mode` (default 'RGB') with PIL's plain
    convert('RGB') and saves a new file before a handler runs: transparent pixels showed the colour under them and
    a 16-bit scan came out near-white, so load_image's own corrections never ran (and a small PNG of 49 M pixels was
    decoded and re-encoded before its size was checked). The tab's image must reach load_image as uploaded."""
    from gradio.data_classes import ImageData

    from explorer.app.main import build_demo

    demo = build_demo()
    (comp,) = [b for b in demo.blocks.values() if getattr(b, 'elem_id', None) == 'mfx-predict-image']
    cases = {
        'transparent.png': Image.new('RGBA', (32, 32), (255, 0, 0, 0)),
        'scan16.png': Image.fromarray(np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)),
    }
    for name, im in cases.items():
        path = tmp_path / name
        im.save(path)
        handed = comp.preprocess(ImageData(path=str(path), orig_name=name))
        assert np.array_equal(np.asarray(load_image(handed)), np.asarray(load_image(path))), name
    assert np.asarray(load_image(comp.preprocess(ImageData(path=str(tmp_path / 'transparent.png'))))).min() == 255
