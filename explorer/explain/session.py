"""One explanation request, start to end, for the app and the CLI alike: a loaded model (spec, weights, data
config) checked against the resource guard, and the runs that explain one image with it (attribution with its
faithfulness score, effective receptive fields). The app adds caching and per-model locks; the CLI adds its
argument parsing; neither repeats what is here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from explorer.core.catalog import pretrained_name
from explorer.core.spec import ArchSpec
from explorer.explain.attribute import DeletionCurve, attribute
from explorer.explain.faithfulness import Faithfulness, faithfulness
from explorer.explain.methods import METHODS
from explorer.explain.mixing import ERF, effective_receptive_fields
from explorer.explain.predict import class_names, data_config, preprocess, to_display
from explorer.explain.weights import WeightsInfo, load_model
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


def open_model(spec: ArchSpec, weights: str | None = None, *, label: str | None = None) -> Loaded:
    """Check the cost against the guard, then build `spec` and load `weights` ('pretrained', 'random' or a
    checkpoint path; None: default_weights). `label`, when given, is what messages say the weights came from
    in place of a file's location (a server never shows its paths)."""
    check_request(spec, batch_size=GUARD_BATCH, training=True)
    model, info = load_model(spec, weights or default_weights(spec))
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

    @property
    def title(self) -> str:
        return METHODS[self.method] + (' + SmoothGrad' if self.smoothgrad else '')

    @property
    def curve(self) -> DeletionCurve | None:
        return self.faithfulness.deletion if self.faithfulness else None


IG_TOLERANCE = 0.01  # relative completeness gap IG aims for
IG_MAX_STEPS = 256  # where it stops doubling the steps


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


def explain(
    m: Loaded,
    image,
    method: str,
    *,
    target: int | None = None,
    stage: int = -1,
    smoothgrad: bool = False,
    n_steps: int = 32,
    batch: int = GUARD_BATCH,
    deletion: bool = True,
    progress: Callable | None = None,
) -> Explanation:
    """Attribute `image` (a PIL image) to `target` (None: the predicted class) with `method` from a black
    baseline, and score the map's faithfulness (deletion and insertion beside random orders; `deletion=False`
    skips it). Integrated Gradients doubles its steps from `n_steps` until complete (see _ig)."""
    x = preprocess(image, m.cfg)
    blank = black(m.cfg)
    with torch.no_grad():
        probs = m.model(x).softmax(1)[0]
    t = int(probs.argmax()) if target is None else target
    completeness = None
    if method == 'ig' and not smoothgrad:
        amap, completeness = _ig(m, x, t, n_steps, batch, progress, blank)
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
            progress=progress,
            baseline=blank,
        )
    faith = faithfulness(m.model, x, amap, t, batch_size=batch, baseline=blank) if deletion else None
    label = class_names(m.spec.num_classes, m.info.label_names)[t]
    return Explanation(method, smoothgrad, to_display(x, m.cfg), amap, t, label, float(probs[t]), faith, completeness)


def _ig(m: Loaded, x: torch.Tensor, t: int, n_steps: int, batch: int, progress, blank) -> tuple:
    """Integrated Gradients with the steps doubled (from `n_steps`, up to IG_MAX_STEPS) until the completeness gap
    is under IG_TOLERANCE of f(x) - f(baseline). Returns (map, completeness: the steps used, the gap, whether it
    got there)."""
    steps = n_steps
    while True:
        amap = attribute(
            m.model, x, t, 'ig', n_steps=steps, internal_batch_size=batch, progress=progress, baseline=blank
        )
        check = ig_completeness(m.model, x, amap, t, blank)
        rel = check['relative_gap']
        converged = check['gap'] < 1e-4 if rel is None else rel <= IG_TOLERANCE
        if converged or steps >= IG_MAX_STEPS:
            break
        steps = min(2 * steps, IG_MAX_STEPS)
    return amap, {**check, 'steps': steps, 'converged': converged, 'tolerance': IG_TOLERANCE, 'max_steps': IG_MAX_STEPS}


def completeness_text(c: dict) -> str:
    """One sentence for people: the steps, the completeness gap and whether IG converged."""
    gap = 'n/a' if c['relative_gap'] is None else f'{100 * c["relative_gap"]:.2f}%'
    verdict = 'converged' if c['converged'] else f'not converged at the {c["max_steps"]}-step cap'
    return (
        f'Integrated Gradients: {c["steps"]} steps, completeness gap {gap} of f(x) - f(baseline) '
        f'({verdict}; target under {100 * c["tolerance"]:g}%)'
    )


def receptive_fields(m: Loaded, images: list) -> list[dict]:
    """Effective receptive field of every stage, averaged over `images` (PIL images). Each row: stage
    (0-based), mixer, map and area (fraction of the image holding 20/50/90% of the centre token's
    |gradient|)."""
    x = torch.cat([preprocess(img, m.cfg) for img in images])
    erfs: list[ERF] = effective_receptive_fields(m.model, x)
    return [{**e.to_dict(), 'map': e.map, 'mixer': m.spec.stages[e.stage].mixer} for e in erfs]
