"""Top-k predictions with class names, preprocessing the way the weights were trained.

The data config is timm's (`timm.data.resolve_data_config`) fed with the weights' pretrained config: timm's
for ImageNet presets (resize, crop_pct, interpolation, mean/std), the checkpoint's own otherwise, timm's
defaults when there is none. The input size is always the spec's (the model is built for it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from explorer.core.spec import IMG_SIZE_RANGE, ArchSpec
from explorer.explain.images import MAX_PIXELS, ImageError
from explorer.explain.weights import INTERPOLATIONS, WeightsInfo

DATA_KEYS = ('input_size', 'interpolation', 'mean', 'std', 'crop_pct', 'crop_mode')
# our own keys (Fashion-MNIST checkpoints): pad_from: resize to this size, then centre on a background canvas;
# resize_from: resize to this size, then to the input size as training did (bilinear, no antialiasing)
EXTRA_KEYS = ('pad_from', 'resize_from')


@dataclass
class Prediction:
    index: int
    label: str
    prob: float  # softmax probability in [0, 1]
    logit: float


@dataclass
class PredictResult:
    top: list[Prediction]
    data_cfg: dict
    weights: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in self.data_cfg.items()}
        return {'top': [asdict(p) for p in self.top], 'data_cfg': cfg, 'weights': self.weights}


def data_config(spec: ArchSpec, info: WeightsInfo | None = None) -> dict:
    """timm data config (input_size, interpolation, mean, std, crop_pct, crop_mode) for this model+weights."""
    from timm.data import resolve_data_config

    cfg = {k: v for k, v in (info.pretrained_cfg if info else {}).items() if k in DATA_KEYS and v is not None}
    cfg['input_size'] = (spec.in_chans, spec.img_size, spec.img_size)
    out = resolve_data_config(args={}, pretrained_cfg=cfg)
    for key in ('mean', 'std'):  # a grey model with an RGB default: one channel of the average
        v = tuple(float(a) for a in out[key])
        if len(v) != spec.in_chans:
            v = (float(np.mean(v)),) * spec.in_chans
        out[key] = v
    cfg_in = info.pretrained_cfg if info else {}
    out.update({k: cfg_in[k] for k in EXTRA_KEYS if cfg_in.get(k)})
    check_data_config(out)
    return out


def check_data_config(cfg: dict) -> None:
    """Refuse preprocessing (which a checkpoint may bring) that would make a huge image or divide by zero:
    crop_pct in [0.25, 1] (the resize is at most 4x the input), pad_from in [1, input size], a known
    interpolation, finite mean and positive finite std, one per channel. Raises ValueError naming the key."""
    c, h, w = cfg['input_size']
    crop = cfg.get('crop_pct', 1.0)
    if not isinstance(crop, (int, float)) or isinstance(crop, bool) or not 0.25 <= crop <= 1.0:
        raise ValueError(f'preprocessing: crop_pct {crop!r} is not allowed; allowed [0.25, 1]')
    pad = cfg.get('pad_from')
    if pad is not None and (not isinstance(pad, int) or isinstance(pad, bool) or not 1 <= pad <= min(h, w)):
        raise ValueError(f'preprocessing: pad_from {pad!r} is not allowed; allowed 1 to {min(h, w)}')
    src = cfg.get('resize_from')
    if src is not None and (not isinstance(src, int) or isinstance(src, bool) or not 1 <= src <= IMG_SIZE_RANGE[1]):
        raise ValueError(f'preprocessing: resize_from {src!r} is not allowed; allowed 1 to {IMG_SIZE_RANGE[1]}')
    if pad and src:
        raise ValueError('preprocessing: pad_from and resize_from exclude each other')
    if cfg.get('interpolation', 'bilinear') not in INTERPOLATIONS:
        raise ValueError(
            f'preprocessing: interpolation {cfg.get("interpolation")!r} is not allowed; '
            f'choose from {", ".join(INTERPOLATIONS)}'
        )
    for key in ('mean', 'std'):
        v = cfg[key]
        if len(v) != c or not all(math.isfinite(a) for a in v) or (key == 'std' and min(v) <= 0):
            raise ValueError(
                f'preprocessing: {key} {tuple(v)!r} must be {c} finite numbers'
                + (', all positive' if key == 'std' else '')
            )


def make_transform(cfg: dict):
    """timm's eval transform (resize, centre crop, to tensor, normalise) for a data config."""
    from timm.data import create_transform

    return create_transform(**{k: cfg[k] for k in DATA_KEYS if k in cfg}, is_training=False)


def check_resize(image: Image.Image, cfg: dict, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse an image that the eval transform would blow up: it scales the short side to the crop's size over
    crop_pct, keeping the aspect ratio, so a 119-byte 12,000 x 1 PNG became 2,976,000 x 248 pixels (2.8 GB)
    before the crop. Bounds the resized image by what any crop mode resizes to (the larger side of the input
    over crop_pct, on the image's short side) before anything is resized."""
    w, h = image.size
    scale = math.ceil(max(cfg['input_size'][1:]) / min(float(cfg.get('crop_pct') or 1.0), 1.0)) / min(w, h)
    if scale > 1 and w * h * scale * scale > max_pixels:
        rw, rh = round(w * scale), round(h * scale)
        raise ImageError(
            f'the image is {w:,} x {h:,} pixels: resizing its short side for this model would make it {rw:,} x '
            f'{rh:,} ({rw * rh / 1e6:,.0f} M pixels; at most {max_pixels / 1e6:,.0f} M): crop it to a less '
            'elongated shape'
        )


def preprocess(image: Image.Image, cfg: dict) -> torch.Tensor:
    """PIL image -> (1, C, H, W) float32 normalised model input. Images are grey (1 channel) or RGB (3): a model
    that takes another number of channels cannot be given one (ImageError naming it)."""
    if cfg['input_size'][0] not in (1, 3):
        raise ImageError(
            f'this model takes {cfg["input_size"][0]}-channel input (in_chans); an image gives 1 (grey) or 3 (RGB) '
            'channels, so it cannot be run on images here'
        )
    mode = 'L' if cfg['input_size'][0] == 1 else 'RGB'
    src = cfg.get('resize_from')
    if src:  # as training resized its 28x28 images: torch's bilinear (PIL's antialiases: up to 0.13 of the range)
        c, h, w = cfg['input_size']
        inner = {**cfg, 'input_size': (c, src, src), 'crop_pct': 1.0}
        check_resize(image, inner)
        x = make_transform(inner)(image.convert(mode)).unsqueeze(0)  # normalising commutes with the resize
        return torch.nn.functional.interpolate(x, size=(h, w), mode='bilinear', align_corners=False)
    pad_from = cfg.get('pad_from')
    if not pad_from:
        check_resize(image, cfg)
        return make_transform(cfg)(image.convert(mode)).unsqueeze(0)
    c, h, w = cfg['input_size']
    inner = {**cfg, 'input_size': (c, pad_from, pad_from), 'crop_pct': 1.0}
    check_resize(image, inner)
    x = make_transform(inner)(image.convert(mode))
    mean, std = torch.tensor(cfg['mean']).view(-1, 1, 1), torch.tensor(cfg['std']).view(-1, 1, 1)
    canvas = ((0 - mean) / std).expand(c, h, w).clone()  # background = pixel value 0
    top, left = (h - pad_from) // 2, (w - pad_from) // 2
    canvas[:, top : top + pad_from, left : left + pad_from] = x
    return canvas.unsqueeze(0)


def to_display(x: torch.Tensor, cfg: dict) -> np.ndarray:
    """Undo normalisation of a (1, C, H, W) or (C, H, W) input: (H, W, 3) uint8 for drawing overlays."""
    x = x.detach().float().reshape(-1, *x.shape[-2:]).cpu()
    mean = torch.tensor(cfg['mean']).view(-1, 1, 1)
    std = torch.tensor(cfg['std']).view(-1, 1, 1)
    a = (x * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return (a[:, :, :3] * 255 + 0.5).astype(np.uint8)


def class_names(num_classes: int, label_names: list[str] | None = None) -> list[str]:
    """The checkpoint's names if it has them, ImageNet-1k's (shipped with timm) for 1000 classes, else 'class i'."""
    if label_names and len(label_names) == num_classes:
        return [str(n) for n in label_names]
    if num_classes == 1000:
        from timm.data import ImageNetInfo

        info = ImageNetInfo('imagenet-1k')
        return [info.index_to_description(i) for i in range(1000)]
    return [f'class {i}' for i in range(num_classes)]


def top_k(logits: torch.Tensor, k: int, names: list[str]) -> list[Prediction]:
    """logits: (num_classes,). The k most probable classes, most probable first."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f'topk: {k!r} must be a positive integer')
    logits = logits.detach().float().flatten()
    probs = logits.softmax(0)
    p, idx = probs.topk(min(k, logits.numel()))
    return [Prediction(int(i), names[int(i)], float(pi), float(logits[i])) for pi, i in zip(p, idx)]


def check_classes(num_classes: int, action: str) -> None:
    """Refuse a model whose head gives no class probabilities: none (0 classes) or a single logit, whose softmax
    is 1 for every image (every prediction would read 100%, and no attribution could move it)."""
    if not num_classes:
        raise ValueError(f'num_classes: the model has no classifier head (num_classes 0); nothing to {action}')
    if num_classes == 1:
        raise ValueError(
            f'num_classes: the model has a single output (num_classes 1), whose softmax is 1 for every image; '
            f'nothing to {action} (give the head 2 or more classes)'
        )


@torch.no_grad()
def predict(
    model: nn.Module,
    image: Image.Image,
    cfg: dict,
    *,
    topk: int = 5,
    label_names: list[str] | None = None,
    weights: WeightsInfo | None = None,
) -> PredictResult:
    """Classify one RGB PIL image. `cfg` from `data_config`. Runs in eval mode, fp32, on the model's device."""
    model.eval()
    num_classes = getattr(model, 'num_classes', 0)
    check_classes(num_classes, 'predict')
    device = next(model.parameters()).device
    logits = model(preprocess(image, cfg).to(device))[0]
    names = class_names(
        num_classes, label_names if label_names is not None else (weights.label_names if weights else None)
    )
    return PredictResult(top_k(logits, topk, names), cfg, weights.to_dict() if weights else {})
