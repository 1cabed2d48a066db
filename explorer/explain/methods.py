"""The attribution methods and baselines by name (what the app lists and the CLI accepts) and the warnings every
explanation of random weights carries. No torch: the app's layout reads this."""

from __future__ import annotations

METHODS = {
    'ig': 'Integrated Gradients',
    'saliency': 'Saliency (max |gradient| over channels)',
    'gradshap': 'GradientShap',
    'occlusion': 'Occlusion (sliding window)',
    'gradcam': 'LayerGradCam at a stage output',
}
ALIASES = {
    'integrated_gradients': 'ig',
    'gradient_shap': 'gradshap',
    'grad_cam': 'gradcam',
    'layergradcam': 'gradcam',
    'smoothgrad': 'saliency',
}
NOISE_TUNNEL_METHODS = ('ig', 'saliency', 'gradshap', 'gradcam')


def resolve_method(method: str) -> tuple[str, bool]:
    """Canonical name and whether the name itself asks for SmoothGrad ('smoothgrad' = SmoothGrad saliency)."""
    m = str(method).strip().lower().replace('-', '_')
    if m in METHODS:
        return m, False
    if m in ALIASES:
        return ALIASES[m], m == 'smoothgrad'
    raise ValueError(
        f'method: {method!r} is not an attribution method; choose from {", ".join(list(METHODS) + ["smoothgrad"])}'
    )


# what every explanation of a model with random weights says
RANDOM_WARNING = "randomly initialised: predictions are meaningless; maps show the architecture's structure only"


# what an attribution map of a model with random weights is flagged with, next to the map
RANDOM_ATTRIBUTION_WARNING = (
    'Random weights: this model has learned nothing, so there is nothing to attribute. The map shows how the '
    'architecture routes gradients or occlusions, not evidence for a class; load trained weights to explain a '
    'prediction.'
)

# the 'absent' input that Integrated Gradients starts from, Occlusion paints and GradientShap samples beside
BASELINES = {
    'black': 'a black image (0 before normalisation)',
    'blurred': 'the input blurred (Gaussian, sigma 1/16 of the image side), same mean colour',
    'noise': 'uniform random pixels in [0, 1] before normalisation (seeded: the same seed, the same image)',
}
BASELINE_METHODS = ('ig', 'gradshap', 'occlusion')  # the others (gradients, GradCAM) have no baseline


def resolve_baseline(baseline: str) -> str:
    """The baseline's canonical name; ValueError naming the allowed ones."""
    b = str(baseline).strip().lower()
    b = {'blur': 'blurred', 'zeros': 'black', 'zero': 'black', 'uniform': 'noise'}.get(b, b)
    if b not in BASELINES:
        raise ValueError(f'baseline: {baseline!r} is not a baseline; choose from {", ".join(BASELINES)}')
    return b


def baseline_text(method: str, baseline: str | None, seed: int = 0) -> str:
    """What an answer says about its baseline, e.g. 'baseline: noise (uniform random pixels ..., seed 0)'."""
    if method not in BASELINE_METHODS or baseline is None:
        return 'baseline: none (this method reads gradients, it compares with no reference image)'
    extra = f', seed {seed}' if baseline == 'noise' else ''
    also = '; GradientShap also samples the blurred input' if method == 'gradshap' and baseline != 'blurred' else ''
    return f'baseline: {baseline} ({BASELINES[baseline]}{extra}{also})'
