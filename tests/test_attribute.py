"""explorer.explain.attribute: every method gives a finite (H, W) map; IG completeness; bounded batches; progress;
clear errors; deletion AUC in [0, 1] with an oracle map beating a random one on a constructed model."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from explorer.core.build import build_model
from explorer.explain.attribute import attribute, deletion_curve
from explorer.explain.methods import METHODS, NOISE_TUNNEL_METHODS
from tests.conftest import tiny_spec

FAST = dict(n_steps=8, n_samples=4, nt_samples=2, window=8, stride=8)


@pytest.fixture(scope='module')
def model():
    m = build_model(tiny_spec(), seed=0).eval()  # pooling, sepconv, attention; 32x32 input
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-zero biases: a freshly initialised model is scale-invariant after its first
        for p in m.parameters():  # norm, so f(a x) is a step at a ~ 0 and IG's path integral is ill-posed
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return m


@pytest.fixture(scope='module')
def x():
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize('method', list(METHODS))
@pytest.mark.parametrize('smoothgrad', [False, True])
def test_every_method_gives_a_finite_map_of_the_image_size(model, x, method, smoothgrad):
    if smoothgrad and method not in NOISE_TUNNEL_METHODS:
        with pytest.raises(ValueError, match='smoothgrad: not available for occlusion'):
            attribute(model, x, 3, method, smoothgrad=True, **FAST)
        return
    amap = attribute(model, x, 3, method, smoothgrad=smoothgrad, **FAST)
    assert amap.shape == (32, 32) and amap.dtype == np.float32
    assert np.isfinite(amap).all() and np.abs(amap).max() > 0
    if method in ('saliency', 'gradcam'):
        assert amap.min() >= 0


def test_integrated_gradients_completeness(model, x):
    with torch.no_grad():
        expected = float(model(x)[0, 5] - model(torch.zeros_like(x))[0, 5])
    amap = attribute(model, x, 5, 'ig', n_steps=256)  # enough steps that the path integral converges here
    assert abs(expected) > 0.05  # a difference worth checking
    assert float(amap.sum()) == pytest.approx(expected, rel=1e-3, abs=1e-4)


def test_gradcam_at_every_stage_and_default_target(model, x):
    for stage in (0, 1, 2, -1):
        assert attribute(model, x, None, 'gradcam', stage=stage).shape == (32, 32)
    with pytest.raises(ValueError, match=r'stage: 3 is out of range; the model has 3 stages'):
        attribute(model, x, 0, 'gradcam', stage=3)


def test_internal_batch_size_bounds_every_forward_pass(model, x):
    rows = []
    hook = model.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    try:
        for method, kw in (
            ('ig', dict(n_steps=12)),
            ('occlusion', dict(window=4, stride=4)),
            ('gradshap', dict(n_samples=10)),
            ('saliency', dict(smoothgrad=True, nt_samples=9)),
            ('ig', dict(n_steps=6, smoothgrad=True, nt_samples=2)),
        ):
            rows.clear()
            attribute(model, x, 1, method, internal_batch_size=4, **kw)
            assert 1 < len(rows) and max(rows) <= 4, (method, rows)
    finally:
        hook.remove()


def test_progress_reports_reach_the_total(model, x):
    calls = []
    attribute(
        model,
        x,
        1,
        'occlusion',
        window=8,
        stride=8,
        internal_batch_size=4,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls[-1] == (17, 17)  # 16 windows + the unperturbed input
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_bad_arguments_name_the_field(model, x):
    with pytest.raises(ValueError, match="method: 'lime' is not an attribution method; choose from ig"):
        attribute(model, x, 0, 'lime')
    with pytest.raises(ValueError, match=r'target: 10 is out of range; the model has 10 classes \(0 to 9\)'):
        attribute(model, x, 10, 'saliency')
    with pytest.raises(ValueError, match="target: 'cat' must be a class index"):
        attribute(model, x, 'cat', 'saliency')
    with pytest.raises(ValueError, match='internal_batch_size: 0 must be a positive integer'):
        attribute(model, x, 0, 'ig', internal_batch_size=0)
    with pytest.raises(ValueError, match=r'x: expected one image shaped \(1, C, H, W\)'):
        attribute(model, x.repeat(2, 1, 1, 1), 0, 'ig')


# ---- deletion curve on a model whose evidence is known ----------------------------------------------------
class PatchModel(nn.Module):
    """Class 0's logit is a weighted sum of the pixels of one 8x8 patch minus 4; class 1's logit is 0."""

    num_classes = 2

    def __init__(self):
        super().__init__()
        w = torch.zeros(3, 16, 16)
        w[:, 4:12, 2:10] = torch.linspace(0.05, 0.2, 64).view(8, 8)
        self.register_buffer('w', w)

    def forward(self, x):
        z0 = (x * self.w).flatten(1).sum(1) - 4
        return torch.stack([z0, torch.zeros_like(z0)], 1)


def test_deletion_oracle_beats_random_and_auc_in_unit_interval():
    model = PatchModel()
    x = torch.ones(1, 3, 16, 16)
    oracle = (model.w * x[0]).sum(0).numpy()  # the exact contribution of every pixel
    rand = np.random.default_rng(0).random((16, 16))
    c_oracle = deletion_curve(model, x, oracle, 0, steps=16)
    c_random = deletion_curve(model, x, rand, 0, steps=16)
    for c in (c_oracle, c_random):
        assert 0 <= c.auc <= 1 and len(c.probs) == 17
        assert c.probs[0] == pytest.approx(float(torch.sigmoid(torch.tensor(3 * 0.125 * 64 - 4.0))), abs=1e-6)
        assert c.probs[-1] == pytest.approx(float(torch.sigmoid(torch.tensor(-4.0))), abs=1e-6)
    assert c_oracle.auc < c_random.auc - 0.2
    # IG on a linear model is the oracle (up to the sign-free channel sum), so it scores the same
    ig = attribute(model, x, 0, 'ig', n_steps=4)
    assert np.allclose(ig, oracle, atol=1e-5)
    assert deletion_curve(model, x, ig, 0, steps=16).auc == pytest.approx(c_oracle.auc, abs=1e-6)


def test_deletion_curve_checks_its_inputs():
    model = PatchModel()
    x = torch.ones(1, 3, 16, 16)
    with pytest.raises(ValueError, match=r'amap: shape \(8, 8\) must equal the input size \(16, 16\)'):
        deletion_curve(model, x, np.zeros((8, 8)), 0)
    with pytest.raises(ValueError, match='target: 2 is out of range'):
        deletion_curve(model, x, np.zeros((16, 16)), 2)


def test_ig_answers_say_how_complete_they_are():
    """IG doubles its steps until the map sums to f(x) - f(baseline) within 1% (or a cap), and says so."""
    from pathlib import Path

    from explorer.explain.images import load_image
    from explorer.explain.session import IG_TOLERANCE, black, explain, open_model
    from explorer.explain.weights import checkpoint_spec

    path = Path(__file__).resolve().parent.parent / 'assets' / 'fmnist' / 'fmnist_hybrid.safetensors'
    m = open_model(checkpoint_spec(path), str(path))
    image = load_image(Path(__file__).resolve().parent.parent / 'assets/fmnist/images/00000_ankle_boot.png')
    e = explain(m, image, 'ig', n_steps=8, deletion=False)
    c = e.completeness
    assert c['steps'] >= 8 and c['max_steps'] == 256
    from explorer.explain.predict import preprocess

    x = preprocess(image, m.cfg)
    with torch.no_grad():
        blank = black(m.cfg).expand_as(x)  # the baseline explain() uses: a black image
        delta = float(m.model(x)[0, e.target] - m.model(blank)[0, e.target])
    assert c['delta'] == pytest.approx(delta, rel=1e-6)
    assert c['relative_gap'] == pytest.approx(abs(float(e.map.sum()) - delta) / abs(delta), rel=1e-6)
    assert c['converged'] == (c['relative_gap'] <= IG_TOLERANCE)
    if c['steps'] < 256:
        assert c['converged']  # it only stops early once the gap is under the tolerance
    assert explain(m, image, 'saliency', deletion=False).completeness is None  # a gradient map has no such sum


@pytest.mark.slow  # 20 images x two methods with their curves: about a minute on 2 cores
@pytest.mark.parametrize('method', ['ig', 'occlusion'])
def test_ig_and_occlusion_beat_random_orders_on_the_shipped_model(method):
    """On fmnist_hybrid_large over its 20 example images, the map's deletion area is below, and its insertion area
    above, what random pixel orders give, on average and for most images."""
    from pathlib import Path

    from explorer.explain.images import fmnist_examples, load_image
    from explorer.explain.session import explain, open_model
    from explorer.explain.weights import checkpoint_spec

    path = Path(__file__).resolve().parent.parent / 'assets' / 'fmnist' / 'fmnist_hybrid_large.safetensors'
    m = open_model(checkpoint_spec(path), str(path))
    results = [explain(m, load_image(p), method).faithfulness for p in fmnist_examples()]
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    assert mean([f.deletion.auc for f in results]) < mean([f.random_deletion[0] for f in results])
    assert mean([f.insertion.auc for f in results]) > mean([f.random_insertion[0] for f in results])
    assert sum(f.beats_random_deletion for f in results) >= 15 and sum(f.beats_random_insertion for f in results) >= 15
