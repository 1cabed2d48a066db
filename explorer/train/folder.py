"""Image folders in ImageNet's layout, read with torchvision's `ImageFolder` and timm's data pipeline.

    ROOT/train/<class name>/<image files>
    ROOT/val/<class name>/<image files>      (the same class folders)

Images are decoded as RGB. The training transform is timm's (`create_transform(is_training=True)`: random
resized crop, horizontal flip, optional RandAugment/AutoAugment and random erasing); the evaluation transform is
timm's resize + centre crop at the data config's crop_pct. The data config comes from
`timm.data.resolve_data_config` for the model, so a design built from a preset with published weights
preprocesses as those weights were trained (mean, std, interpolation, crop); a new design gets timm's defaults
(ImageNet mean/std, bicubic for timm's MetaFormers when set in the preset, crop 0.875 otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

SPLITS = ('train', 'val')


class FolderError(ValueError):
    """The folder is not in the ImageFolder layout; the message says what was found and what is expected."""


@dataclass
class FolderData:
    root: str
    train: torch.utils.data.Dataset
    val: torch.utils.data.Dataset
    classes: list[str]
    data_config: dict  # timm's: input_size, interpolation, mean, std, crop_pct, crop_mode
    train_transform: str  # what the augmentation is, for the record


def _class_dirs(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith('.'))


def check_layout(root: str | Path) -> list[str]:
    """The class names, after checking ROOT/train and ROOT/val hold the same class folders (at least 2)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FolderError(f'image folder {str(root)!r} does not exist')
    missing = [s for s in SPLITS if not (root / s).is_dir()]
    if missing:
        raise FolderError(
            f'{str(root)!r} has no {" or ".join(s + "/" for s in missing)} folder; the layout is '
            f"ROOT/train/<class>/<images> and ROOT/val/<class>/<images> (ImageNet's)"
        )
    train, val = _class_dirs(root / 'train'), _class_dirs(root / 'val')
    if len(train) < 2:
        raise FolderError(f'{str(root / "train")!r} holds {len(train)} class folder(s); at least 2 are needed')
    if train != val:
        only_t, only_v = sorted(set(train) - set(val)), sorted(set(val) - set(train))
        raise FolderError(
            f'train/ and val/ must hold the same class folders: only in train/: {only_t[:5] or "none"}, '
            f'only in val/: {only_v[:5] or "none"}'
        )
    return train


def training_data_config(model: torch.nn.Module, in_chans: int, img_size: int) -> dict:
    """timm's data config for training `model` from scratch at the spec's input size (export.data_config_for is
    the one a trained checkpoint records)."""
    from timm.data import resolve_data_config

    cfg = resolve_data_config({'input_size': (in_chans, img_size, img_size)}, model=model)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}


def _spread(n: int, limit: int | None) -> list[int] | None:
    """`limit` indices spread evenly over n (ImageFolder sorts by class: the first N would be one class)."""
    if not limit or limit >= n:
        return None
    return [i * n // limit for i in range(limit)]


def open_folder(
    root: str | Path,
    data_config: dict,
    *,
    hflip: bool = True,
    auto_augment: str | None = None,
    erase_prob: float = 0.0,
    train_limit: int | None = None,
    val_limit: int | None = None,
) -> FolderData:
    """The train and val splits of an ImageFolder tree with timm's transforms. auto_augment: a timm policy
    string such as 'rand-m9-mstd0.5-inc1' (RandAugment) or 'augmix-m5'; erase_prob: random erasing probability."""
    from timm.data import create_transform
    from torchvision.datasets import ImageFolder

    classes = check_layout(root)
    root = Path(root).expanduser()
    size = tuple(data_config['input_size'])
    common = dict(
        input_size=size,
        interpolation=data_config['interpolation'],
        mean=tuple(data_config['mean']),
        std=tuple(data_config['std']),
    )
    try:
        train_tf = create_transform(
            **common, is_training=True, hflip=0.5 if hflip else 0.0, auto_augment=auto_augment, re_prob=erase_prob
        )
    except (AssertionError, ValueError, KeyError) as e:
        raise FolderError(f'auto augment policy {auto_augment!r} is not one timm knows ({e})') from None
    val_tf = create_transform(**common, is_training=False, crop_pct=data_config['crop_pct'])
    splits = {}
    for split, tf, limit in (('train', train_tf, train_limit), ('val', val_tf, val_limit)):
        try:
            ds = ImageFolder(str(root / split), transform=tf)
        except (FileNotFoundError, RuntimeError) as e:  # a class folder without images
            raise FolderError(f'{split}/: {e}') from None
        if ds.classes != classes:
            raise FolderError(f'{split}/: class folders {ds.classes[:5]} differ from train/ {classes[:5]}')
        keep = _spread(len(ds), limit)
        splits[split] = torch.utils.data.Subset(ds, keep) if keep else ds
    aug = f'random resized crop to {size[1]}x{size[2]}, hflip {0.5 if hflip else 0}'
    aug += f', {auto_augment}' if auto_augment else ''
    aug += f', random erasing {erase_prob}' if erase_prob else ''
    return FolderData(str(root), splits['train'], splits['val'], classes, dict(data_config), aug)


def folder_loader(ds, batches, workers: int, device: torch.device) -> torch.utils.data.DataLoader:
    """A DataLoader over the index lists `batches` (this rank's batches, in order)."""
    return torch.utils.data.DataLoader(
        ds, batch_sampler=batches, num_workers=workers, pin_memory=device.type == 'cuda', persistent_workers=False
    )
