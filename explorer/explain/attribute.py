"""Attribution maps with captum, one verb for every method: `attribute(model, x, target, method) -> (H, W)`.

Methods: Integrated Gradients, Saliency, GradientShap, Occlusion and LayerGradCam at any stage's output;
`smoothgrad=True` averages any of them except Occlusion over noisy copies of the input (SmoothGrad, as captum's
NoiseTunnel does, with the noise drawn from the request's own generator, as are GradientShap's draws). Maps
attribute the target's *logit* and are reduced over input channels: a signed sum for IG / GradientShap /
Occlusion (so the map still sums to the total attribution), the channel maximum of |gradient| for Saliency, and
for GradCAM the ReLU'd class map upsampled bilinearly to the input size. Baselines are zeros in the normalised input
space, i.e. the dataset's mean colour.

Memory stays bounded by `internal_batch_size`: at most that many input-sized rows go through the model at
once (IG steps, Occlusion windows, GradientShap samples, SmoothGrad noise samples are all chunked).

`deletion_curve` is the plain deletion curve: the target's softmax probability as the pixels of highest signed
attribution are replaced by `baseline` (0 = the mean colour), and the area under it (in [0, 1]; lower = more
faithful). The app and the CLI score maps with `explorer.explain.faithfulness.faithfulness` instead: pixels by
magnitude, removed to black for every baseline, deletion and insertion beside random orders.

The faster paths the app and the CLI use (explorer.explain.session): `make_baseline` (black, blurred, noise);
`integrated_gradients`, IG on nested Clenshaw-Curtis nodes, so doubling the steps until the completeness gap is
small reuses every gradient already computed; `occlusion_coarse_to_fine`, a coarse pass whose top regions get the
full-resolution windows; `fast_layout`, channels_last while a method runs; forward-only passes (Occlusion,
the faithfulness curves) optionally under bf16 autocast.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from explorer.core.registry import show
from explorer.explain.methods import NOISE_TUNNEL_METHODS, resolve_baseline, resolve_method

Progress = Callable[[int, int], None]  # (forward rows done, rows expected)


def check_target(target, num_classes: int) -> int:
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
        raise ValueError(f'target: {show(target)} must be a class index (integer)')
    if not 0 <= int(target) < num_classes:
        raise ValueError(
            f'target: {show(int(target))} is out of range; the model has {num_classes} classes (0 to {num_classes - 1})'
        )
    return int(target)


def resolve_smoothgrad(method: str, smoothgrad: bool) -> tuple[str, bool]:
    """(canonical method name, whether SmoothGrad applies): the name itself may ask for it ('smoothgrad' is
    SmoothGrad saliency). ValueError for SmoothGrad with a method that has no gradients to average (Occlusion)."""
    method, implied = resolve_method(method)
    smoothgrad = bool(smoothgrad) or implied
    if smoothgrad and method not in NOISE_TUNNEL_METHODS:
        raise ValueError(
            f'smoothgrad: not available for {method}; SmoothGrad averages gradients, use it with '
            f'{", ".join(NOISE_TUNNEL_METHODS)}'
        )
    return method, smoothgrad


def resolve_stage(stage: int, num_stages: int) -> int:
    if isinstance(stage, bool) or not isinstance(stage, int) or not -num_stages <= stage < num_stages:
        raise ValueError(
            f'stage: {show(stage)} is out of range; the model has {num_stages} stages '
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
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion, Saliency

    method, smoothgrad = resolve_smoothgrad(method, smoothgrad)
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

    # SmoothGrad's noise and GradientShap's baselines and path points come from this request's own generator:
    # captum draws them from torch's and numpy's process-wide generators, which a training thread in the same server
    # also seeds and draws from (the same request gave a different map, and rewound the training's draws)
    gen = torch.Generator().manual_seed(int(seed))
    with torch.enable_grad():
        if method == 'ig':
            ig = IntegratedGradients(fwd)
            algo = lambda xb: ig.attribute(  # noqa: E731
                xb, baselines=blank, target=target, n_steps=n_steps, method='gausslegendre',
                internal_batch_size=internal_batch_size,
            )  # fmt: skip
        elif method == 'saliency':
            sal = Saliency(fwd)
            algo = lambda xb: sal.attribute(xb, target=target, abs=True)  # noqa: E731
        elif method == 'gradcam':
            cam = LayerGradCam(fwd, model.stages[resolve_stage(stage, len(model.stages))])
            algo = lambda xb: cam.attribute(xb, target=target, relu_attributions=True)  # noqa: E731
        if method == 'gradshap':
            # GradientShap's own input noise *is* SmoothGrad over its samples (captum builds it on NoiseTunnel)
            attr = gradient_shap(
                fwd, x, torch.cat([blank, _blur(x)]), target, n_samples * nt, nt_stdev if smoothgrad else 0.0,
                internal_batch_size, gen,
            )  # fmt: skip
        elif method == 'occlusion':
            attr = Occlusion(fwd).attribute(
                x,
                target=target,
                sliding_window_shapes=(x.shape[1], window, window),
                strides=(x.shape[1], stride, stride),
                baselines=blank,
                perturbations_per_eval=internal_batch_size,
            )
        elif smoothgrad:  # captum's NoiseTunnel('smoothgrad'): the mean over noisy copies of the input
            attr = _smoothed(algo, x, nt_samples, nt_stdev, 1 if method == 'ig' else internal_batch_size, gen)
        else:
            attr = algo(x.requires_grad_(True))

    if method == 'gradcam':
        attr = LayerAttribution.interpolate(attr.detach(), (H, W), interpolate_mode='bilinear')
        amap = attr[0].sum(0)
    elif method == 'saliency':
        amap = attr.detach()[0].abs().amax(0)
    else:
        amap = attr.detach()[0].sum(0)
    return amap.float().cpu().numpy().astype(np.float32)


def _noisy(x: torch.Tensor, k: int, stdev: float, gen: torch.Generator) -> torch.Tensor:
    """k copies of the one image `x` with Gaussian noise of `stdev` added (drawn from `gen`)."""
    noise = torch.randn((k, *x.shape[1:]), generator=gen).to(device=x.device, dtype=x.dtype)
    return x.detach() + stdev * noise if stdev else x.detach().expand(k, *x.shape[1:]).clone()


def _smoothed(algo: Callable, x: torch.Tensor, n: int, stdev: float, batch: int, gen: torch.Generator):
    """SmoothGrad: the mean of `algo`'s attributions over `n` noisy copies of `x`, `batch` copies per call."""
    total, done = 0.0, 0
    while done < n:
        k = min(batch, n - done)
        total = total + algo(_noisy(x, k, stdev, gen).requires_grad_(True)).detach().sum(0, keepdim=True)
        done += k
    return total / n


def gradient_shap(
    forward: Callable, x: torch.Tensor, baselines: torch.Tensor, target: int, n_samples: int, stdev: float,
    batch: int, gen: torch.Generator,
) -> torch.Tensor:  # fmt: skip
    """GradientShap as captum defines it: for each of `n_samples` samples, the input with Gaussian noise of `stdev`,
    a baseline drawn uniformly from `baselines` (B, C, H, W) and a point drawn uniformly on the line between them;
    the attribution is the mean over samples of (noisy input - baseline) x the target's gradient at that point.
    Every draw comes from `gen` (captum's own draws come from numpy's and torch's process-wide generators), and at
    most `batch` samples go through the model at once (captum has no internal batch size). (1, C, H, W)."""
    from captum._utils.gradient import compute_gradients

    total, done = 0.0, 0
    while done < n_samples:
        k = min(batch, n_samples - done)
        noisy = _noisy(x, k, stdev, gen)
        base = baselines[torch.randint(len(baselines), (k,), generator=gen)].to(x)
        alpha = torch.rand(k, generator=gen).to(x).view(-1, 1, 1, 1)
        point = (base + alpha * (noisy - base)).requires_grad_(True)
        (grad,) = compute_gradients(forward, (point,), target_ind=target)
        total = total + ((noisy - base) * grad).detach().sum(0, keepdim=True)
        done += k
    return total / n_samples


def _blur(x: torch.Tensor, factor: int = 8) -> torch.Tensor:
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, h // factor), max(1, w // factor)), mode='area')
    return F.interpolate(small, size=(h, w), mode='bilinear', align_corners=False)


# ---- baselines --------------------------------------------------------------------------------------------
def make_baseline(kind: str, x: torch.Tensor, mean, std, *, seed: int = 0) -> torch.Tensor:
    """The 'absent' input for `x` (1, C, H, W) normalised with per-channel `mean`, `std` (pixel units in [0, 1]).

    black: a black pixel everywhere, (0 - mean) / std. blurred: `x` under a Gaussian blur (sigma = 1/16 of the
    longer side, reflected edges) with each channel's mean restored to x's. noise: uniform pixels in [0, 1],
    normalised, drawn from a generator seeded with `seed`. Returns: (1, C, H, W) float tensor like x.
    """
    kind = resolve_baseline(kind)
    mean = torch.as_tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    if kind == 'black':
        return ((0 - mean) / std).expand_as(x).clone()
    if kind == 'blurred':
        return gaussian_blur(x)
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(int(seed)), dtype=x.dtype)
    return (u - mean) / std


def gaussian_blur(x: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) with reflected edges; each channel keeps its mean exactly."""
    h, w = x.shape[-2:]
    sigma = sigma or max(h, w) / 16
    out = x
    for dim, size in ((-1, w), (-2, h)):
        r = max(1, min(math.ceil(3 * sigma), size - 1))
        t = torch.arange(-r, r + 1, dtype=x.dtype)
        k = torch.exp(-0.5 * (t / sigma) ** 2)
        k = (k / k.sum()).view(1, 1, 1, -1) if dim == -1 else (k / k.sum()).view(1, 1, -1, 1)
        pad = (r, r, 0, 0) if dim == -1 else (0, 0, r, r)
        out = F.conv2d(F.pad(out, pad, mode='reflect'), k.expand(x.shape[1], 1, *k.shape[-2:]), groups=x.shape[1])
    return out + (x.mean((-2, -1), keepdim=True) - out.mean((-2, -1), keepdim=True))


# ---- the faster paths ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def fast_layout(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """channels_last while the block runs (about 1.4x faster convolutions and norms on CPU, same numbers to
    float rounding); the model goes back to the contiguous layout afterwards, for every other user."""
    if not enabled:
        yield
        return
    model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        model.to(memory_format=torch.contiguous_format)


def autocast(x: torch.Tensor, bf16: bool):
    """bf16 autocast on x's device type when asked, else a no-op context."""
    return torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bool(bf16))


def clenshaw_curtis(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights of the (n + 1)-point Clenshaw-Curtis rule on [0, 1], n even. Exact for polynomials of
    degree n; the nodes of n are among those of 2n, so a doubling reuses every evaluation."""
    if n < 2 or n % 2:
        raise ValueError(f'n: {n} must be an even number >= 2')
    theta = math.pi * torch.arange(n + 1, dtype=torch.float64) / n
    acc = torch.zeros(n + 1, dtype=torch.float64)
    for j in range(1, n // 2 + 1):
        acc += (1.0 if j == n // 2 else 2.0) / (4 * j * j - 1) * torch.cos(2 * j * theta)
    c = torch.full((n + 1,), 2.0, dtype=torch.float64)
    c[0] = c[-1] = 1.0
    return (1 - torch.cos(theta)) / 2, c / n * (1 - acc) / 2


def integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target: int,
    baseline: torch.Tensor,
    *,
    steps: int = 32,
    max_steps: int = 256,
    tolerance: float = 0.01,
    batch: int = 8,
    progress: Progress | None = None,
) -> tuple[np.ndarray, dict]:
    """Integrated Gradients of `target`'s logit from `baseline` to `x` (both (1, C, H, W)), fp32, on nested
    Clenshaw-Curtis nodes: `steps` intervals, doubled (reusing every gradient) until the map sums to
    f(x) - f(baseline) within `tolerance` of it, or `max_steps` is reached.

    Returns: ((H, W) float32 map, signed channel sum; completeness dict: steps, evaluations, gap, relative_gap
    (None when f(x) - f(baseline) is ~0), delta, converged, tolerance, max_steps, history).
    """
    steps = max(2, steps + steps % 2)
    levels = [steps]
    while levels[-1] * 2 <= max_steps:
        levels.append(levels[-1] * 2)
    top = levels[-1]
    model.eval()
    with torch.no_grad():
        delta = float(model(x)[0, target] - model(baseline)[0, target])
    diff = (x - baseline).detach()
    done: dict[int, torch.Tensor] = {}  # node index on the finest grid -> (H, W) sum over channels of diff * grad
    counted, history = [0], []
    for n in levels:
        need = [k * (top // n) for k in range(n + 1) if k * (top // n) not in done]
        alphas = (1 - torch.cos(math.pi * torch.tensor(need, dtype=torch.float64) / top)) / 2
        for i in range(0, len(need), batch):
            a = alphas[i : i + batch].to(x.dtype).view(-1, 1, 1, 1)
            xs = (baseline + a * diff).requires_grad_(True)
            with torch.enable_grad():
                (g,) = torch.autograd.grad(model(xs)[:, target].sum(), xs)
            for j, key in enumerate(need[i : i + batch]):
                done[key] = (diff[0] * g[j]).sum(0).detach()
            counted[0] += len(a)
            if progress is not None:
                progress(counted[0], top + 1)
        _, w = clenshaw_curtis(n)
        amap = sum(float(w[k]) * done[k * (top // n)] for k in range(n + 1)).float().cpu().numpy()
        gap = abs(float(amap.sum()) - delta)  # summed as a caller sums the map it gets
        rel = gap / abs(delta) if abs(delta) > 1e-6 else None
        converged = gap < 1e-4 if rel is None else rel <= tolerance
        history.append([n, rel if rel is not None else gap])
        if converged:
            break
    info = dict(gap=gap, relative_gap=rel, delta=delta, steps=n, evaluations=len(done), converged=converged)
    info['history'] = history  # [steps, relative gap] at each doubling
    return amap.astype(np.float32), {**info, 'tolerance': tolerance, 'max_steps': top}


def _window_starts(size: int, window: int, stride: int) -> list[int]:
    """Where captum's Occlusion puts its windows along one axis (the last one may hang over the edge)."""
    return [k * stride for k in range(math.ceil((size - window) / stride) + 1)]


@torch.no_grad()
def _occlude(model, x, target, blank, windows, window, batch, bf16, tick) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over `windows` ((top, left) corners) of the target-logit drop when that window of every channel is
    painted with `blank`, spread over the window's pixels, and how many windows covered each pixel."""
    H, W = x.shape[-2:]
    total, count = torch.zeros(H, W), torch.zeros(H, W)
    with autocast(x, bf16):
        ref = float(model(x)[0, target])
    tick(1)
    for i in range(0, len(windows), batch):
        chunk = windows[i : i + batch]
        xb = x.repeat(len(chunk), 1, 1, 1)
        for j, (r, c) in enumerate(chunk):
            xb[j, :, r : r + window, c : c + window] = blank[0, :, r : r + window, c : c + window]
        with autocast(x, bf16):
            drops = ref - model(xb)[:, target].float()
        for j, (r, c) in enumerate(chunk):
            total[r : r + window, c : c + window] += float(drops[j])
            count[r : r + window, c : c + window] += 1
        tick(len(chunk))
    return total, count


def occlusion_map(
    model: nn.Module,
    x: torch.Tensor,
    target: int,
    baseline: torch.Tensor,
    *,
    window: int,
    stride: int,
    refine: float | None = None,
    batch: int = 8,
    bf16: bool = False,
    progress: Progress | None = None,
) -> tuple[np.ndarray, dict]:
    """Occlusion as captum computes it (each pixel: the mean target-logit drop over the windows covering it, times
    the channels), optionally coarse-to-fine.

    refine None: every `window` x `window` patch at `stride`. refine f in (0, 1]: a coarse pass with
    non-overlapping patches twice the window's side, then the full-resolution windows only where the top
    fraction f of coarse cells (by |drop|) lie; there the map equals the full-resolution one exactly, elsewhere
    it is the coarse drop scaled by the area ratio (window / coarse side) ** 2. bf16: the forward passes under
    bf16 autocast. Returns ((H, W) float32 map, dict: windows evaluated, coarse side, refined fraction).
    """
    model.eval()
    C, H, W = x.shape[1:]
    blank = baseline.expand_as(x).to(x.dtype)
    fine = [(r, c) for r in _window_starts(H, window, stride) for c in _window_starts(W, window, stride)]
    coarse_side = min(2 * window, H, W)
    coarse = [
        (r, c) for r in _window_starts(H, coarse_side, coarse_side) for c in _window_starts(W, coarse_side, coarse_side)
    ]
    expected = [1 + (len(fine) if refine is None else len(coarse) + 1)]
    state = [0]

    def tick(k):
        state[0] += k
        if progress is not None:
            progress(min(state[0], expected[0]), expected[0])

    if refine is None:
        total, count = _occlude(model, x, target, blank, fine, window, batch, bf16, tick)
        return (C * total / count).numpy().astype(np.float32), {'windows': len(fine), 'coarse': None, 'refined': 1.0}
    if not 0 < refine <= 1:
        raise ValueError(f'refine: {refine!r} must be in (0, 1]')
    total, count = _occlude(model, x, target, blank, coarse, coarse_side, batch, bf16, tick)
    coarse_map = total / count
    score = torch.tensor([abs(float(coarse_map[r, c])) for r, c in coarse])
    top = torch.argsort(score, descending=True, stable=True)[: max(1, math.ceil(refine * len(coarse)))]
    chosen = torch.zeros(H, W, dtype=torch.bool)
    for i in top.tolist():
        r, c = coarse[i]
        chosen[r : r + coarse_side, c : c + coarse_side] = True
    needed = [(r, c) for r, c in fine if chosen[r : r + window, c : c + window].any()]
    expected[0] = state[0] + 1 + len(needed)
    total, count = _occlude(model, x, target, blank, needed, window, batch, bf16, tick)
    fine_map = total / count.clamp_min(1)
    amap = C * torch.where(chosen, fine_map, coarse_map * (window / coarse_side) ** 2)
    info = {'windows': len(coarse) + len(needed), 'coarse': coarse_side, 'refined': len(top) / len(coarse)}
    return amap.numpy().astype(np.float32), info


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


def removal_ranks(amap: np.ndarray | torch.Tensor, seed: int = 0) -> torch.Tensor:
    """(H, W) rank of every pixel by decreasing attribution (0 = most attributed; NaN and infinities last). Pixels
    of equal attribution come in a random order among themselves, drawn from a generator seeded with `seed`: in
    raster order a map of zeros (or a GradCAM map that is 97% zeros) deleted the top rows first, a structured order
    that beat the random orders on centred objects though the map carried no information."""
    amap = torch.as_tensor(np.asarray(amap), dtype=torch.float32)
    n = amap.numel()
    shuffle = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    # every non-finite value last, as the faithfulness text says (+inf became the largest float: removed first)
    values = torch.nan_to_num(amap.flatten(), nan=-math.inf, posinf=-math.inf, neginf=-math.inf)[shuffle]
    order = shuffle[torch.argsort(values, descending=True, stable=True)]  # ties keep the shuffled order
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
    bf16: bool = False,
    tick: Callable[[int], None] | None = None,
) -> DeletionCurve:
    """softmax(model(x))[target] as pixels are removed (set to `baseline`: a number, 0 = the mean colour, or a
    (1, C, 1, 1) tensor of per-channel values), or, with
    `insertion`, put back into an all-baseline image, in the order of `rank` (0 first), in `steps` equal slices;
    the curve and its trapezoid area over the fraction in [0, 1]. bf16: forward passes under bf16 autocast
    (probabilities in fp32). tick(k): called after each batch of k rows."""
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
        with autocast(x, bf16):
            logits = model(xb)
        probs += logits.float().softmax(1)[:, target].tolist()
        if tick is not None:
            tick(len(fr))
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
