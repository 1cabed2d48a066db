"""The attribution methods by name (what the app lists and the CLI accepts) and the warning every explanation of
random weights carries. No torch: the app's layout reads this."""

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
