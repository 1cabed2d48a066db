"""Safe image loading: any file, bytes or PIL image a person might hand us becomes an 8-bit RGB PIL image,
or an `ImageError` that says what was wrong with it.

Conversions are done by hand where PIL's own `convert('RGB')` is wrong: transparent pixels are composited
over white (their colour values are often garbage), 16-bit and 32-bit greyscale is rescaled instead of
clipped at 255, and the EXIF orientation is applied so phone photos are upright.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from explorer.core.resources import data_path

MAX_PIXELS = 40_000_000  # ~ a 7700 x 5200 photo; bigger files are refused before decoding (bombs)
ASSET_DIR = data_path('assets') / 'images'
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.webp', '.bmp', '.gif', '.tif', '.tiff')
# the decoders a request may reach: PIL would otherwise try all of its ~40 (EPS runs Ghostscript on the bytes)
IMAGE_FORMATS = ('PNG', 'JPEG', 'WEBP', 'BMP', 'GIF', 'TIFF')  # JPEG's opener also reads MPO (phone photos)


class ImageError(ValueError):
    """The input is not a usable image; the message names the file and the reason."""


def fmnist_examples() -> list[Path]:
    """The 20 Fashion-MNIST test images shipped for the trained models (licence: assets/fmnist/LICENSES.md)."""
    return sorted((ASSET_DIR.parent / 'fmnist' / 'images').glob('*.png'))


def example_images() -> list[Path]:
    """The example images shipped in assets/images (licences in assets/images/LICENSES.md)."""
    return sorted(p for p in ASSET_DIR.glob('*') if p.suffix.lower() in IMAGE_SUFFIXES)


def examples_for(in_chans: int) -> list[Path]:
    """The shipped examples a model of `in_chans` channels was made for: the Fashion-MNIST test images for
    grayscale models, the photos otherwise (a receptive field measured on photos says little of a model that
    only ever saw 28x28 clothing)."""
    return fmnist_examples() if in_chans == 1 else example_images()


def example_path(name: str) -> Path | None:
    """The shipped example image (Fashion-MNIST or photo) whose file name is `name`, or None."""
    return next((p for p in fmnist_examples() + example_images() if p.name == name), None)


def load_image(source: str | Path | bytes | Image.Image, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open, check and convert an image. Returns an 8-bit RGB PIL image.

    Raises ImageError for a missing, empty, truncated, corrupt or over-large file, or one that is not an image.
    """
    if isinstance(source, Image.Image):
        return to_rgb(source)
    name = 'the uploaded image' if isinstance(source, (bytes, bytearray)) else f'image file {str(source)!r}'
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        path = Path(source)
        if not path.exists():
            raise ImageError(f'{name} does not exist')
        if not path.is_file():
            raise ImageError(f'{name} is not a file')
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ImageError(f'cannot read {name}: {e.strerror or e}') from None
    if not data:
        raise ImageError(f'{name} is empty (0 bytes)')
    with warnings.catch_warnings():
        warnings.simplefilter('error', Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
            w, h = img.size
            if w * h > max_pixels:
                raise ImageError(
                    f'{name} is {w}x{h} = {w * h:,} pixels, above the {max_pixels:,} limit '
                    f'(a decompression bomb or a huge scan); resize it first'
                )
            if w < 1 or h < 1:
                raise ImageError(f'{name} has no pixels ({w}x{h})')
            img.seek(0)  # first frame of an animation
            img.load()
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError(
                f'{name} is too large to decode safely (decompression bomb guard); '
                f'resize it below {max_pixels:,} pixels'
            ) from None
        except UnidentifiedImageError:
            raise ImageError(
                f'{name} is not an image format PIL can read (use PNG, JPEG, WebP, BMP, GIF or TIFF)'
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            reason = 'it is truncated' if 'truncated' in str(e) else f'it is corrupt ({e})'
            raise ImageError(f'cannot decode {name}: {reason}') from None
    return to_rgb(img)


def to_rgb(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Any PIL mode -> 8-bit RGB. Alpha is composited over `background`; high-bit-depth grey is rescaled."""
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not make a readable image unreadable
        pass
    mode = img.mode
    if mode == 'RGB':
        return img.copy()
    if mode in ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I', 'F'):
        return Image.fromarray(_grey_to_uint8(np.asarray(img), mode), 'L').convert('RGB')
    if mode == 'P':
        img = img.convert('RGBA' if 'transparency' in img.info else 'RGB')
    elif mode in ('RGBa', 'La', 'PA'):
        img = img.convert('RGBA')
    elif mode == 'LA':
        img = img.convert('RGBA')
    if img.mode == 'RGBA':
        canvas = Image.new('RGB', img.size, background)
        canvas.paste(img, mask=img.getchannel('A'))
        return canvas
    return img.convert('RGB')  # L, 1, CMYK, YCbCr, LAB, HSV: PIL's conversions are right for these


def _grey_to_uint8(a: np.ndarray, mode: str) -> np.ndarray:
    """16-bit grey spans 0..65535; 32-bit int is read as 16-bit when it exceeds 255; float as 0..1 (or 0..255).
    One float32 copy, worked in place: float64 temporaries took 24 bytes per pixel (about 1 GB for an allowed
    40 M-pixel image that compresses to 120 kB); float32 rounds every 16-bit value to the same byte."""
    a = a.astype(np.float32)
    if mode.startswith('I;16') or (mode == 'I' and a.max(initial=0) > 255):
        a *= np.float32(255.0 / 65535.0)
    elif mode == 'F':
        np.nan_to_num(a, copy=False)
        if a.max(initial=0) <= 1.0:
            a *= np.float32(255.0)
    np.rint(a, out=a)
    np.clip(a, 0, 255, out=a)
    return a.astype(np.uint8)
