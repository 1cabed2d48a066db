"""One explanation request, start to end, for the app and the CLI alike: a loaded model (spec, weights, data
config) checked against the resource guard, and the runs that explain one image with it (attribution with its
faithfulness score, effective receptive fields). The app adds caching and per-model locks; the CLI adds its
argument parsing; neither repeats what is here.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from explorer.core.catalog import pretrained_name
from explorer.core.spec import ArchSpec
from explorer.explain.attribute import (
    DeletionCurve,
    attribute,
    check_target,
    fast_layout,
    integrated_gradients,
    make_baseline,
    occlusion_map,
    resolve_smoothgrad,
    resolve_stage,
)
from explorer.explain.faithfulness import Faithfulness, faithfulness
from explorer.explain.methods import (
    BASELINE_METHODS,
    METHODS,
    RANDOM_ATTRIBUTION_WARNING,
    baseline_text,
    resolve_baseline,
)
from explorer.explain.mixing import ERF, erf_over_batches, erf_stages
from explorer.explain.predict import check_classes, class_names, data_config, preprocess, to_display
from explorer.explain.weights import WeightsInfo, checkpoint_preprocessing, load_model
from explorer.measure.guard import check_request

# attribute()'s default internal batch: the most rows one forward+backward pass holds, so the guard checks a
# training-style pass (activations kept for backward) of this batch before a model is built
GUARD_BATCH = 8


@dataclass
class Loaded:
    """A model ready to explain: its spec, the module (eval mode), where its weights came from and the data
    config its inputs are preprocessed with (timm's keys: input_size, interpolation, mean, std, crop_pct)."""

    spec: ArchSpec
    model: nn.Module
    info: WeightsInfo
    cfg: dict


def default_weights(spec: ArchSpec) -> str:
    """'pretrained' where timm has weights for this spec, else 'random'."""
    return 'pretrained' if pretrained_name(spec) else 'random'


def open_model(
    spec: ArchSpec, weights: str | None = None, *, label: str | None = None, preprocessing_of: str | None = None
) -> Loaded:
    """Check the cost against the guard, then build `spec` and load `weights` ('pretrained', 'random' or a
    checkpoint path; None: default_weights). `label`, when given, is what messages say the weights came from
    in place of a file's location (a server never shows its paths). `preprocessing_of`: the checkpoint the spec
    came from; random weights are then given its preprocessing (timm's ImageNet defaults cropped and resized a
    Fashion-MNIST model's input, so trained and random maps of one model did not line up)."""
    check_request(spec, batch_size=GUARD_BATCH, training=True)
    model, info = load_model(spec, weights or default_weights(spec))
    if preprocessing_of and info.source == 'random':
        info.pretrained_cfg = checkpoint_preprocessing(preprocessing_of) or info.pretrained_cfg
    if label is not None and info.source != 'random':
        info.where = label
    return Loaded(spec, model, info, data_config(spec, info))


@dataclass
class Explanation:
    """An attribution map of one image and how far it can be trusted: its deletion and insertion curves beside
    random pixel orders, and for Integrated Gradients its completeness."""

    method: str
    smoothgrad: bool
    image: object  # (H, W, 3) uint8, the preprocessed input as displayed
    map: object  # (H, W) float32 attribution
    target: int
    label: str
    prob: float  # softmax probability of `target`
    faithfulness: Faithfulness | None
    completeness: dict | None = None  # Integrated Gradients only: see ig_completeness
    baseline: str | None = None  # black | blurred | noise for the methods that take one, else None
    seed: int = 0  # the noise baseline's seed, and GradientShap's and SmoothGrad's
    warning: str | None = None  # RANDOM_ATTRIBUTION_WARNING for a model with random weights
    settings: dict = field(default_factory=dict)  # how it was computed: layout, dtypes, occlusion windows
    seconds: float = 0.0  # wall time of the map and its faithfulness curves

    @property
    def baseline_text(self) -> str:
        return baseline_text(self.method, self.baseline, self.seed)

    @property
    def title(self) -> str:
        name = METHODS[self.method]
        if self.method == 'gradcam' and 'stage' in self.settings:  # which stage's output: S1, S2, ...
            name = name.replace('a stage output', str(self.settings['stage']))
        return name + (' + SmoothGrad' if self.smoothgrad else '')

    @property
    def curve(self) -> DeletionCurve | None:
        return self.faithfulness.deletion if self.faithfulness else None


IG_TOLERANCE = 0.01  # relative completeness gap IG aims for
IG_MAX_STEPS = 256  # where it stops doubling the steps
MAX_BATCH = 256  # rows of one forward pass (larger ones are also checked against the guard's memory limit)


def black(cfg: dict) -> torch.Tensor:
    """The input's 'absent' value: a black pixel (0 before normalisation) in normalised units, (1, C, 1, 1).
    IG starts from it, Occlusion paints it, the faithfulness curves remove pixels to it. The mean colour (0 after
    normalisation) is the other common choice; on Fashion-MNIST, whose background is black, it paints the
    background grey, and a random order of such removals then drops the prediction as fast as any map."""
    mean, std = torch.tensor(cfg['mean']), torch.tensor(cfg['std'])
    return ((0 - mean) / std).view(1, -1, 1, 1)


def ig_completeness(model, x: torch.Tensor, amap, target: int, baseline: torch.Tensor) -> dict:
    """How far an Integrated Gradients map can be trusted: its sum should equal f(x) - f(baseline) for the target
    logit (completeness). Returns {'gap': |sum - delta|, 'relative_gap': gap / |delta| (None when delta is ~0),
    'delta': f(x) - f(baseline)}."""
    with torch.no_grad():
        delta = float(model(x)[0, target] - model(baseline.expand_as(x))[0, target])
    gap = abs(float(amap.sum()) - delta)
    return {'gap': gap, 'relative_gap': gap / abs(delta) if abs(delta) > 1e-6 else None, 'delta': delta}


# Occlusion refines this fraction of its coarse cells (those with the largest |drop|) at full resolution, on
# images of at least OCCLUSION_REFINE_MIN_PIXELS; smaller ones (Fashion-MNIST's 32x32) get every full-resolution
# window: they are cheap there, and the coarse pass cost the shipped model's maps insertion area (0.721 vs 0.766
# over its 20 examples, 14 instead of 16 images beating chance)
OCCLUSION_REFINE = 0.15
OCCLUSION_REFINE_MIN_PIXELS = 128 * 128


BF16_MIN_PIXELS = 128 * 128  # below this, bf16 autocast's casts cost more than its matrix products save


def fast_settings(input_size: tuple | None = None) -> dict:
    """The faster path's settings for a (C, H, W) input on this machine. channels_last for the batched passes
    (IG's nodes, Occlusion's windows, the faithfulness curves: 1.3-1.4x at batch 8 on poolformer_s12), not for
    captum's one-image passes (Saliency, GradCAM, GradientShap), where it was slower (1.45x at batch 1),
    measured side by side. bf16 autocast for the faithfulness curves (softmax probabilities, whose areas move by
    about 1e-3) where the CPU has native bf16 (AVX512-BF16 or AMX) and the input has at least 128x128 pixels (on
    a 32x32 Fashion-MNIST model bf16 was 2x slower than fp32). Gradient methods and Occlusion stay fp32:
    Integrated Gradients' completeness gap is checked to 1%, and an occlusion map is a difference of two logits
    that bf16 rounding blurs (26% relative L2 change measured on poolformer_s12 with random weights)."""
    from explorer.measure.speed import cpu_native_bf16

    big = input_size is None or input_size[-1] * input_size[-2] >= BF16_MIN_PIXELS
    curves = 'bf16' if cpu_native_bf16() and big else 'fp32'
    return {'layout': 'channels_last', 'gradients': 'fp32', 'occlusion_dtype': 'fp32', 'curves': curves}


def explain(
    m: Loaded,
    image,
    method: str,
    *,
    target: int | None = None,
    stage: int = -1,
    smoothgrad: bool = False,
    n_steps: int = 16,
    batch: int = GUARD_BATCH,
    deletion: bool = True,
    progress: Callable | None = None,
    baseline: str = 'black',
    seed: int = 0,
    fast: bool = True,
) -> Explanation:
    """Attribute `image` (a PIL image) to `target` (None: the predicted class) with `method` from `baseline`
    (black, blurred or noise; for IG, GradientShap and Occlusion), and score the map's faithfulness (deletion
    and insertion beside random orders, removing pixels to black for every baseline so that scores compare;
    `deletion=False` skips it). Integrated Gradients doubles its steps from `n_steps` until complete.
    smoothgrad: average over noisy copies (every method but Occlusion, which has no gradients: ValueError).

    fast: the faster path (fast_settings(); nested IG nodes; coarse-to-fine Occlusion); False: the path before
    it (captum's IG restarted at each doubling, full-resolution Occlusion, fp32, contiguous layout).
    progress(done, total, phase): phase 'attribution' then 'faithfulness'.
    """
    t0 = time.perf_counter()
    for name, value, low, high in (
        ('steps', n_steps, 1, IG_MAX_STEPS),
        ('batch', batch, 1, MAX_BATCH),
        ('seed', seed, 0, 2**31 - 1),
    ):  # before any allocation: steps 10**9 asked for a list of 10**9 nodes, batch -1 a KeyError
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f'{name}: {value!r} must be an integer in [{low}, {high}]')
    if batch > GUARD_BATCH:  # open_model checked the model at GUARD_BATCH rows a pass
        check_request(m.spec, batch_size=batch, training=True)
    check_classes(m.spec.num_classes, 'attribute')  # before the attribution, not after it
    method, smoothgrad = resolve_smoothgrad(method, smoothgrad)  # before any branch: Occlusion has no SmoothGrad
    baseline = resolve_baseline(baseline)
    x = preprocess(image, m.cfg)
    blank = black(m.cfg)
    base = make_baseline(baseline, x, m.cfg['mean'], m.cfg['std'], seed=seed)
    with torch.no_grad():
        probs = m.model(x).softmax(1)[0]
    t = int(probs.argmax()) if target is None else check_target(target, probs.numel())
    settings = (
        fast_settings(tuple(x.shape[1:]))
        if fast
        else {'layout': 'contiguous', 'gradients': 'fp32', 'occlusion_dtype': 'fp32', 'curves': 'fp32'}
    )
    bf16 = settings['curves'] == 'bf16'
    phase = (lambda name: lambda d, n: progress(d, n, name)) if progress else (lambda name: None)  # noqa: E731
    completeness = None
    if method == 'gradcam':
        settings['stage'] = f'S{resolve_stage(stage, m.spec.num_stages) + 1}'
    batched = fast and method in ('ig', 'occlusion') and not smoothgrad  # captum's one-row passes: contiguous
    settings = {**settings, 'layout': 'channels_last' if batched else 'contiguous'}
    with fast_layout(m.model, batched):
        if method == 'ig' and not smoothgrad:
            if fast:
                amap, completeness = integrated_gradients(
                    m.model, x, t, base, steps=n_steps, max_steps=IG_MAX_STEPS, tolerance=IG_TOLERANCE,
                    batch=batch, progress=phase('attribution'),
                )  # fmt: skip
            else:
                amap, completeness = _ig(m, x, t, n_steps, batch, phase('attribution'), base)
        elif method == 'occlusion' and fast:
            H = x.shape[-1]
            window = max(2, H // 14)
            refine = OCCLUSION_REFINE if x.shape[-2] * x.shape[-1] >= OCCLUSION_REFINE_MIN_PIXELS else None
            amap, occ = occlusion_map(
                m.model, x, t, base, window=window, stride=max(1, window // 2), refine=refine,
                batch=batch, progress=phase('attribution'),
            )  # fmt: skip
            settings = {**settings, 'occlusion': {'window': window, 'stride': max(1, window // 2), **occ}}
        else:
            amap = attribute(
                m.model,
                x,
                t,
                method,
                stage=stage,
                smoothgrad=smoothgrad,
                n_steps=n_steps,
                internal_batch_size=batch,
                progress=phase('attribution'),
                baseline=base,
                seed=seed,  # GradientShap's and SmoothGrad's draws: they followed seed 0 whatever was asked
            )
    faith = None
    if deletion:
        settings['curves_layout'] = 'channels_last' if fast else 'contiguous'
        with fast_layout(m.model, fast):
            faith = faithfulness(
                m.model, x, amap, t, batch_size=batch, baseline=blank, bf16=bf16, progress=phase('faithfulness')
            )
    label = class_names(m.spec.num_classes, m.info.label_names)[t]
    return Explanation(
        method,
        smoothgrad,
        to_display(x, m.cfg),
        amap,
        t,
        label,
        float(probs[t]),
        faith,
        completeness,
        baseline=baseline if method in BASELINE_METHODS else None,
        seed=seed,
        warning=None if m.info.trained else RANDOM_ATTRIBUTION_WARNING,
        settings=settings,
        seconds=time.perf_counter() - t0,
    )


def _ig(m: Loaded, x: torch.Tensor, t: int, n_steps: int, batch: int, progress, blank) -> tuple:
    """The path before the nested nodes: captum's Integrated Gradients (Gauss-Legendre) restarted with the steps
    doubled (from `n_steps`, up to IG_MAX_STEPS) until the completeness gap is under IG_TOLERANCE of
    f(x) - f(baseline). Returns (map, completeness: the steps used, the gap, whether it got there)."""
    steps, evaluations = n_steps, 0
    while True:
        amap = attribute(
            m.model, x, t, 'ig', n_steps=steps, internal_batch_size=batch, progress=progress, baseline=blank
        )
        evaluations += steps
        check = ig_completeness(m.model, x, amap, t, blank)
        rel = check['relative_gap']
        converged = check['gap'] < 1e-4 if rel is None else rel <= IG_TOLERANCE
        if converged or steps >= IG_MAX_STEPS:
            break
        steps = min(2 * steps, IG_MAX_STEPS)
    return amap, {
        **check,
        'steps': steps,
        'evaluations': evaluations,
        'converged': converged,
        'tolerance': IG_TOLERANCE,
        'max_steps': IG_MAX_STEPS,
    }


def completeness_text(c: dict, baseline: str | None = None) -> str:
    """One sentence for people: the baseline, the steps, the completeness gap and whether IG converged."""
    gap = 'n/a' if c['relative_gap'] is None else f'{100 * c["relative_gap"]:.2f}%'
    verdict = 'converged' if c['converged'] else f'not converged at the {c["max_steps"]}-step cap'
    start = f' from the {baseline} baseline' if baseline else ''
    evals = f' ({c["evaluations"]} gradient evaluations)' if c.get('evaluations') else ''
    return (
        f'Integrated Gradients{start}: {c["steps"]} steps{evals}, completeness gap {gap} of f(x) - f(baseline) '
        f'({verdict}; target under {100 * c["tolerance"]:g}%)'
    )


def receptive_fields(m: Loaded, images: Iterable) -> list[dict]:
    """Effective receptive field of every stage, averaged over `images` (PIL images; an iterator is read
    GUARD_BATCH at a time, so thousands of files are never all decoded at once). Each row: stage (0-based),
    mixer, map and area (fraction of the image holding 20/50/90% of the centre token's |gradient|)."""
    it = iter(images)
    m.model.eval()
    chunks = iter(lambda: list(itertools.islice(it, GUARD_BATCH)), [])  # the batch open_model checked the guard at
    batches = (torch.cat([preprocess(img, m.cfg) for img in chunk]) for chunk in chunks)
    erfs: list[ERF] = erf_over_batches(m.model, batches, erf_stages(m.model, None))
    return [{**e.to_dict(), 'map': e.map, 'mixer': m.spec.stages[e.stage].mixer} for e in erfs]


def token_at(image_size: tuple[int, int], cfg: dict, grid: tuple[int, int], xy: tuple[float, float]) -> tuple[int, int]:
    """The token (row, col) of a (h, w) `grid` that covers pixel `xy` = (x, y) of the original image of
    `image_size` = (width, height), following the preprocessing in `cfg` (resize the shorter side to
    input / crop_pct and take the centre crop; 'squash': both sides; 'border': the longer side, then crop or
    pad; or for Fashion-MNIST-style `pad_from`, resize to pad_from and centre on the canvas, and `resize_from`,
    resize to resize_from, then to the input size). A point outside the crop goes to the nearest token."""
    W0, H0 = image_size
    _, H, W = cfg['input_size']
    pad, src = cfg.get('pad_from'), cfg.get('resize_from')
    inner = pad or src or H
    crop = 1.0 if pad or src else float(cfg.get('crop_pct') or 1.0)
    scale_size = math.floor(inner / crop)
    if cfg.get('crop_mode') == 'squash':
        sx, sy = scale_size / W0, scale_size / H0
    elif cfg.get('crop_mode') == 'border':  # timm: the longer side to scale_size, then centre-cropped or padded
        sx = sy = scale_size / max(W0, H0)
    else:
        sx = sy = scale_size / min(W0, H0)
    x = xy[0] * sx - (W0 * sx - inner) / 2
    y = xy[1] * sy - (H0 * sy - inner) / 2
    if pad:
        x, y = x + (W - pad) // 2, y + (H - pad) // 2
    elif src:  # then resized from src x src to the input size
        x, y = x * W / src, y * H / src
    h, w = grid
    row = min(h - 1, max(0, math.floor(y / (H / h))))
    col = min(w - 1, max(0, math.floor(x / (W / w))))
    return row, col
