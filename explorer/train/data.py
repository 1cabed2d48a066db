"""Datasets for training: Fashion-MNIST, found offline first.

Where the data comes from, in order: a directory the user names (`data_dir`), the `FASHION_MNIST_DIR`
environment variable, Debian's `dataset-fashion-mnist` package (`/usr/share/datasets/fashion-mnist/`),
`~/.cache/metaformer-explorer/fashion-mnist`, and only when the caller allows it, torchvision's download.
A directory qualifies when it holds the four idx files, gzipped (`*-ubyte.gz`, as Zalando ships them) or not,
or torchvision's `FashionMNIST/raw/` layout below it.

Images stay uint8 (N, 28, 28) in memory (47 MB for the training set); `preprocess` turns them into the
float tensors a model sees, with the rule recorded in every checkpoint (`Preprocessing`).
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where tensors are made: finding the data needs none
    import torch

DATASETS = ('fashion-mnist',)
DEBIAN_DIR = Path('/usr/share/datasets/fashion-mnist')
CACHE_DIR = Path.home() / '.cache' / 'metaformer-explorer' / 'fashion-mnist'
FILES = {
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}
CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot')
# Mean and std of the 60,000 training images' pixels scaled to [0, 1] (computed with `pixel_stats`).
MEAN, STD = 0.2860, 0.3530


class DatasetNotFound(FileNotFoundError):
    """No copy of the dataset could be found (or downloaded); the message says where we looked and what to do."""


@dataclass
class Dataset:
    """A split held in memory. images: (N, H, W) uint8; labels: (N,) int64."""

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    source: str
    classes: tuple = CLASSES

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int) -> Dataset:
        """The first n examples (a stable subset for quick runs and tests)."""
        return Dataset(self.name, self.split, self.images[:n], self.labels[:n], self.source, self.classes)


@dataclass
class Preprocessing:
    """How a 28x28 uint8 image becomes the model's input; stored in checkpoints so predictions match training.

    resize: 'pad' centres the image on a zero (background) canvas of img_size (28 -> 32 adds 2 pixels each
    side); 'none' needs img_size 28; 'bilinear' resizes. Then x = (pixel / 255 - mean) / std.
    """

    img_size: int = 32
    resize: str = 'pad'
    mean: float = MEAN
    std: float = STD
    in_chans: int = 1
    source_size: int = 28

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def for_spec(cls, spec) -> Preprocessing:
        """The rule for a spec's img_size: pad when it is larger than 28, resize when smaller."""
        size = spec.img_size
        resize = 'none' if size == 28 else 'pad' if size > 28 and (size - 28) % 2 == 0 else 'bilinear'
        return cls(img_size=size, resize=resize, in_chans=spec.in_chans)


def preprocess(images: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """(N, 28, 28) uint8 (or (28, 28)) -> (N, in_chans, img_size, img_size) float32, normalised."""
    import torch.nn.functional as F

    if images.dim() == 2:
        images = images[None]
    x = images.float().div_(255).unsqueeze(1)
    if pre.resize == 'pad':
        p = (pre.img_size - x.shape[-1]) // 2
        x = F.pad(x, (p, p, p, p))
    elif pre.resize == 'bilinear':
        x = F.interpolate(x, size=(pre.img_size, pre.img_size), mode='bilinear', align_corners=False)
    elif x.shape[-1] != pre.img_size:
        raise ValueError(
            f'preprocessing resize "none" needs {pre.img_size}x{pre.img_size} images, got {x.shape[-2]}x{x.shape[-1]}'
        )
    x = (x - pre.mean) / pre.std
    if pre.in_chans > 1:
        x = x.expand(-1, pre.in_chans, -1, -1).contiguous()
    return x


# ---- idx files ---------------------------------------------------------------------------------------
def read_idx(path: Path) -> torch.Tensor:
    """One idx file (gzipped or not) -> uint8 tensor of the shape its header gives."""
    import torch

    opener = gzip.open if path.suffix == '.gz' else open
    with opener(path, 'rb') as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack('>HBB', data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f'{path} is not an idx file of unsigned bytes (header {data[:4].hex()})')
    shape = struct.unpack(f'>{ndim}I', data[4 : 4 + 4 * ndim])
    body = data[4 + 4 * ndim :]
    n = 1
    for s in shape:
        n *= s
    if len(body) != n:
        raise ValueError(f'{path}: header says {shape} ({n} bytes) but the file holds {len(body)} bytes')
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(shape)


def _find_file(directory: Path, stem: str) -> Path | None:
    for sub in ('', 'FashionMNIST/raw', 'raw'):
        for name in (stem, stem + '.gz'):
            p = directory / sub / name
            if p.is_file():
                return p
    return None


def _has_split(directory: Path, split: str) -> bool:
    return all(_find_file(directory, stem) for stem in FILES[split])


def candidate_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """Where `find_dataset` looks, in order."""
    dirs = []
    if data_dir:
        dirs.append(Path(data_dir).expanduser())
    env = os.environ.get('FASHION_MNIST_DIR')
    if env:
        dirs.append(Path(env).expanduser())
    dirs += [DEBIAN_DIR, CACHE_DIR]
    return dirs


def find_dataset(
    name: str = 'fashion-mnist', data_dir: str | Path | None = None, split: str = 'train', download: bool = False
) -> Path:
    """The directory holding the split's idx files. Raises DatasetNotFound with what was tried and how to fix it.

    When `data_dir` is given, only that directory is used (a user's explicit choice is never silently replaced).
    """
    _check_name(name)
    dirs = candidate_dirs(data_dir)[:1] if data_dir else candidate_dirs()
    for d in dirs:
        if _has_split(d, split):
            return d
    if download:
        target = Path(data_dir).expanduser() if data_dir else CACHE_DIR
        _download(target)
        if _has_split(target, split):
            return target
    files = ', '.join(f'{s}[.gz]' for s in FILES[split])
    where = '\n'.join(f'  {d}' for d in dirs)
    raise DatasetNotFound(
        f'Fashion-MNIST ({split} split) not found. Looked for {files} in:\n{where}\n'
        f"Fix: install Debian's package (apt install dataset-fashion-mnist), pass --data-dir DIR holding the "
        f'idx files (from https://github.com/zalandoresearch/fashion-mnist), or pass --download to fetch it '
        f'with torchvision.'
    )


def _download(target: Path) -> None:
    try:
        from torchvision.datasets import FashionMNIST
    except ImportError:
        raise DatasetNotFound('--download needs torchvision (pip install torchvision); it is not installed') from None
    target.mkdir(parents=True, exist_ok=True)
    try:
        for train in (True, False):
            FashionMNIST(str(target), train=train, download=True)
    except Exception as e:  # network errors come in many types
        raise DatasetNotFound(f'downloading Fashion-MNIST into {target} failed: {e}') from None


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f'dataset {name!r} is not supported; choose from {", ".join(DATASETS)}')


_CACHE: dict[tuple, Dataset] = {}


def load_dataset(
    name: str = 'fashion-mnist', split: str = 'train', data_dir: str | Path | None = None, download: bool = False
) -> Dataset:
    """Load a split into memory (cached per process). split: 'train' (60,000) or 'test' (10,000)."""
    if split not in FILES:
        raise ValueError(f'split {split!r} is not known; choose train or test')
    directory = find_dataset(name, data_dir, split, download)
    key = (name, split, str(directory.resolve()))
    if key not in _CACHE:
        img_stem, lbl_stem = FILES[split]
        images = read_idx(_find_file(directory, img_stem))
        labels = read_idx(_find_file(directory, lbl_stem)).long()
        if images.dim() != 3 or len(images) != len(labels):
            raise ValueError(f'{directory}: {tuple(images.shape)} images do not match {len(labels)} labels')
        _CACHE[key] = Dataset(name, split, images, labels, str(directory))
    return _CACHE[key]


def pixel_stats(ds: Dataset) -> tuple[float, float]:
    """Mean and std of all pixels scaled to [0, 1]."""
    x = ds.images.double() / 255
    return float(x.mean()), float(x.std())
