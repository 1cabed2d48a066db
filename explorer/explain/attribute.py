"""Attribution maps with captum, one verb for every method: `attribute(model, x, target, method) -> (H, W)`.

Methods: Integrated Gradients, Saliency, GradientShap, Occlusion and LayerGradCam at any stage's output;
`smoothgrad=True` wraps any of them except Occlusion in captum's NoiseTunnel (SmoothGrad). Maps attribute the
target's *logit* and are reduced over input channels: a signed sum for IG / GradientShap / Occlusion (so the
map still sums to the total attribution), the channel maximum of |gradient| for Saliency, and for GradCAM
the ReLU'd class map upsampled bilinearly to the input size. Baselines are zeros in the normalised input
space, i.e. the dataset's mean colour.

Memory stays bounded by `internal_batch_size`: at most that many input-sized rows go through the model at
once (IG steps, Occlusion windows, GradientShap samples, SmoothGrad noise samples are all chunked).

`deletion_curve` scores a map's faithfulness: the target's softmax probability as the most-attributed pixels
are replaced by the baseline, and the area under that curve (in [0, 1]; lower = more faithful).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from explorer.explain.methods import NOISE_TUNNEL_METHODS, resolve_method

_GLOBAL_RNG = threading.Lock()
Progress = Callable[[int, int], None]  # (forward rows done, rows expected)


def check_target(target, num_classes: int) -> int:
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
        raise ValueError(f'target: {target!r} must be a class index (integer)')
    if not 0 <= int(target) < num_classes:
        raise ValueError(
            f'target: {target} is out of range; the model has {num_classes} classes (0 to {num_classes - 1})'
        )
    return int(target)


def resolve_stage(stage: int, num_stages: int) -> int:
    if isinstance(stage, bool) or not isinstance(stage, int) or not -num_stages <= stage < num_stages:
        raise ValueError(
            f'stage: {stage!r} is out of range; the model has {num_stages} stages '
            f'(0 to {num_stages - 1}, or negative from the end)'
        )
    return stage % num_stages


class _Counted(nn.Module):
    """Counts rows through the model and reports progress; captum sees an ordinary module."""

    def __init__(self, model: nn.Module, total: int, progress: Progress | None):
        super().__init__()
        self.model, self.total, self.progress, self.done = model, max(1, total), progress, 0

    def forward(self, x):
        y = self.model(x)
        self.done += x.shape[0]
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total)
        return y


def attribute(
    model: nn.Module,
    x: torch.Tensor,
    target: int | None = None,
    method: str = 'ig',
    *,
    stage: int = -1,
    smoothgrad: bool = False,
    nt_samples: int = 8,
    nt_stdev: float = 0.15,
    n_steps: int = 32,
    n_samples: int = 16,
    window: int | None = None,
    stride: int | None = None,
    internal_batch_size: int = 8,
    seed: int = 0,
    progress: Progress | None = None,
    baseline: float | torch.Tensor = 0.0,
) -> np.ndarray:
    """Attribution of `target`'s logit to the pixels of one input.

    x: (1, C, H, W) normalised model input. target: class index (None: the predicted class).
    method: one of METHODS (or an alias). stage: GradCAM layer (stage output, negative from the end).
    smoothgrad: average over `nt_samples` noisy copies (stdev `nt_stdev` in normalised units).
    n_steps: IG steps. n_samples: GradientShap samples. window/stride: Occlusion patch (pixels).
    baseline: the 'absent' input IG starts from, Occlusion paints and GradientShap samples beside a blurred copy:
    a number in normalised units (0 = the mean colour) or a (1, C, 1, 1) tensor of per-channel values.
    Returns: (H, W) float32 map (signed except Saliency and GradCAM, which are >= 0).
    """
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Occlusion, Saliency

    method, implied_sg = resolve_method(method)
    smoothgrad = smoothgrad or implied_sg
    if smoothgrad and method not in NOISE_TUNNEL_METHODS:
        raise ValueError(
            f'smoothgrad: not available for {method}; SmoothGrad averages gradients, use it with '
            f'{", ".join(NOISE_TUNNEL_METHODS)}'
        )
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f'x: expected one image shaped (1, C, H, W), got {tuple(x.shape)}')
    for name, v in (
        ('internal_batch_size', internal_batch_size),
        ('n_steps', n_steps),
        ('n_samples', n_samples),
        ('nt_samples', nt_samples),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f'{name}: {v!r} must be a positive integer')
    model.eval()
    num_classes = getattr(model, 'num_classes', None) or int(model(x).shape[1])
    H, W = x.shape[-2:]
    x = x.detach().clone()
    blank = torch.as_tensor(baseline, dtype=x.dtype).expand_as(x).contiguous()
    with torch.no_grad():
        logits = model(x)
    target = int(logits.argmax(1)) if target is None else check_target(target, num_classes)

    nt = nt_samples if smoothgrad else 1
    if method == 'occlusion':
        window = window or max(2, H // 14)
        stride = stride or max(1, window // 2)
        total = (math.ceil((H - window) / stride) + 1) * (math.ceil((W - window) / stride) + 1) + 1
    else:
        total = nt * {'ig': n_steps, 'gradshap': n_samples}.get(method, 1)
    fwd = _Counted(model, total, progress)

    # captum's noise (SmoothGrad, GradientSHAP) draws from torch's global generator: one attribution at a time
    # seeds and uses it, so the same request gives the same map beside any other
    with _GLOBAL_RNG, torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(seed)
        if method == 'ig':
            algo = IntegratedGradients(fwd)
            kw = dict(baselines=blank, n_steps=n_steps, method='gausslegendre', internal_batch_size=internal_batch_size)
        elif method == 'saliency':
            algo, kw = Saliency(fwd), dict(abs=True)
        elif method == 'gradshap':
            algo = _ChunkedGradientShap(fwd, internal_batch_size)
            # GradientShap's own input noise *is* SmoothGrad over its samples (captum builds it on NoiseTunnel)
            kw = dict(
                baselines=torch.cat([blank, _blur(x)]), n_samples=n_samples * nt, stdevs=nt_stdev if smoothgrad else 0.0
            )
        elif method == 'gradcam':
            stage_i = resolve_stage(stage, len(model.stages))
            algo, kw = LayerGradCam(fwd, model.stages[stage_i]), dict(relu_attributions=True)
        else:
            algo = Occlusion(fwd)
            kw = dict(
                sliding_window_shapes=(x.shape[1], window, window),
                strides=(x.shape[1], stride, stride),
                baselines=blank,
                perturbations_per_eval=internal_batch_size,
            )
        if smoothgrad and method != 'gradshap':
            algo = NoiseTunnel(algo)
            kw.update(
                nt_type='smoothgrad',
                nt_samples=nt_samples,
                stdevs=nt_stdev,
                nt_samples_batch_size=1 if method == 'ig' else internal_batch_size,
            )
        attr = algo.attribute(x.requires_grad_(True), target=target, **kw)

    if method == 'gradcam':
        attr = LayerAttribution.interpolate(attr.detach(), (H, W), interpolate_mode='bilinear')
        amap = attr[0].sum(0)
    elif method == 'saliency':
        amap = attr.detach()[0].abs().amax(0)
    else:
        amap = attr.detach()[0].sum(0)
    return amap.float().cpu().numpy().astype(np.float32)


class _ChunkedGradientShap:
    """captum's GradientShap has no internal batch size; its result is a mean over samples, so running it in
    chunks of `batch` samples and averaging the chunks (weighted by size) is exact and bounds memory."""

    def __init__(self, forward_func, batch: int):
        from captum.attr import GradientShap

        self.algo, self.batch = GradientShap(forward_func), batch

    def attribute(self, inputs, baselines, target=None, n_samples=16, stdevs=0.0, **kwargs):
        total, done = 0, 0
        while done < n_samples:
            k = min(self.batch, n_samples - done)
            a = self.algo.attribute(inputs, baselines=baselines, target=target, n_samples=k, stdevs=stdevs)
            total = total + a * k
            done += k
        return total / n_samples


def _blur(x: torch.Tensor, factor: int = 8) -> torch.Tensor:
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, h // factor), max(1, w // factor)), mode='area')
    return F.interpolate(small, size=(h, w), mode='bilinear', align_corners=False)


# ---- faithfulness -----------------------------------------------------------------------------------------
@dataclass
class DeletionCurve:
    """Target probability after removing the top `fractions` of pixels (by attribution). auc in [0, 1];
    lower means the map found the pixels the model relies on (more faithful)."""

    fractions: list[float]
    probs: list[float]
    auc: float
    target: int

    def to_dict(self) -> dict:
        return asdict(self)


def removal_ranks(amap: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(H, W) rank of every pixel by decreasing attribution (0 = most attributed; NaN last, ties in order)."""
    amap = torch.as_tensor(np.asarray(amap), dtype=torch.float32)
    n = amap.numel()
    order = torch.argsort(torch.nan_to_num(amap.flatten(), nan=-math.inf), descending=True, stable=True)
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n)
    return rank.view(amap.shape)


@torch.no_grad()
def pixel_curve(
    model: nn.Module,
    x: torch.Tensor,
    rank: torch.Tensor,
    target: int,
    *,
    insertion: bool = False,
    steps: int = 20,
    batch_size: int = 8,
    baseline: float | torch.Tensor = 0.0,
) -> DeletionCurve:
    """softmax(model(x))[target] as pixels are removed (set to `baseline`: a number, 0 = the mean colour, or a
    (1, C, 1, 1) tensor of per-channel values), or, with
    `insertion`, put back into an all-baseline image, in the order of `rank` (0 first), in `steps` equal slices;
    the curve and its trapezoid area over the fraction in [0, 1]."""
    model.eval()
    if tuple(rank.shape) != tuple(x.shape[-2:]):
        raise ValueError(f'amap: shape {tuple(rank.shape)} must equal the input size {tuple(x.shape[-2:])}')
    num_classes = getattr(model, 'num_classes', None) or int(model(x).shape[1])
    target = check_target(target, num_classes)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f'steps: {steps!r} must be a positive integer')
    n = rank.numel()
    rank = rank.view(1, 1, *rank.shape).to(x.device)
    fractions = [i / steps for i in range(steps + 1)]
    probs = []
    for start in range(0, len(fractions), batch_size):
        fr = fractions[start : start + batch_size]
        counts = torch.tensor([round(f * n) for f in fr], device=x.device).view(-1, 1, 1, 1)
        chosen = rank < counts  # (b, 1, H, W): the pixels removed (deletion) or put back (insertion) so far
        keep = chosen if insertion else ~chosen
        blank = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
        xb = torch.where(keep, x.expand(len(fr), -1, -1, -1), blank)
        probs += model(xb).float().softmax(1)[:, target].tolist()
    auc = float(np.trapezoid(probs, fractions)) if hasattr(np, 'trapezoid') else float(np.trapz(probs, fractions))
    return DeletionCurve(fractions, probs, auc, target)


def deletion_curve(
    model: nn.Module,
    x: torch.Tensor,
    amap: np.ndarray | torch.Tensor,
    target: int,
    *,
    steps: int = 20,
    batch_size: int = 8,
    baseline: float = 0.0,
) -> DeletionCurve:
    """Remove pixels (all channels set to `baseline`, 0 = the mean colour) in order of decreasing attribution,
    in `steps` equal slices, and record softmax(model(x))[target] after each slice (and before the first).
    Returns the curve and its trapezoid area over the removed fraction in [0, 1]."""
    amap = torch.as_tensor(np.asarray(amap), dtype=torch.float32)
    if tuple(amap.shape) != tuple(x.shape[-2:]):
        raise ValueError(f'amap: shape {tuple(amap.shape)} must equal the input size {tuple(x.shape[-2:])}')
    return pixel_curve(model, x, removal_ranks(amap), target, steps=steps, batch_size=batch_size, baseline=baseline)
