"""build_model: every mixer x norm x activation works; timm presets are timm's models; published param counts."""

import math

import pytest
import timm
import torch

from explorer.core.build import build_model
from explorer.core.catalog import load_spec, preset_names
from explorer.core.mixers import TokenCountError
from explorer.core.registry import MIXERS
from explorer.core.spec import ACTIVATIONS, NORMS, ArchSpec
from tests.conftest import tiny_spec

TIMM_PRESETS = [n for n in preset_names() if load_spec(n).meta.get('timm_name')]
# timm ships these as MetaFormers (same keys); MLP-Mixer and ResMLP are timm's MlpMixer class (keys mapped on load)
TIMM_MLP_PRESETS = [n for n in TIMM_PRESETS if load_spec(n).meta['timm_name'].startswith(('mixer_', 'resmlp_'))]
TIMM_METAFORMER_PRESETS = [n for n in TIMM_PRESETS if n not in TIMM_MLP_PRESETS]


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize('mixer', sorted(MIXERS))
@pytest.mark.parametrize('norm', NORMS)
@pytest.mark.parametrize('act', ACTIVATIONS)
def test_every_mixer_norm_activation_builds_runs_and_trains(mixer, norm, act):
    d = tiny_spec(mixers=(mixer, mixer), dims=(8, 16), depths=(1, 1), mlp_act=act, norm=norm)
    for st in d['stages']:
        if mixer == 'attention':
            st['mixer_args'] = {'head_dim': 8}
    model = build_model(d, seed=0)
    x = torch.randn(2, 3, 32, 32)
    y = model(x)
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    y.square().mean().backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    mixer_params = [(n, p) for n, p in trainable if '.token_mixer.' in n]
    assert all(p.grad is not None for _, p in trainable), [n for n, p in trainable if p.grad is None]
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)
    if mixer_params:  # the token mixer is really in the gradient path
        assert any(p.grad.abs().sum() > 0 for _, p in mixer_params)


def test_random_mixer_matrix_is_frozen_and_row_stochastic():
    model = build_model(tiny_spec(mixers=('random',), dims=(8,), depths=(2,)), seed=0)
    mats = [b.token_mixer.random_matrix for b in model.stages[0].blocks]
    assert all(not m.requires_grad for m in mats)
    assert mats[0].shape == (64, 64)
    torch.testing.assert_close(mats[0].sum(-1), torch.ones(64))


@pytest.mark.parametrize('mixer', ['random', 'spatial_mlp', 'cross_patch'])
def test_fixed_token_mixers_refuse_other_resolutions(mixer):
    model = build_model(tiny_spec(mixers=(mixer,), dims=(8,), depths=(1,)), seed=0)
    with pytest.raises(TokenCountError, match=r'built for a 8x8 token grid \(64 tokens\) but got 16x16'):
        model(torch.randn(1, 3, 64, 64))


def test_equal_dims_still_downsample_unless_told():
    d = tiny_spec(mixers=('pooling', 'pooling'), dims=(16, 16), depths=(1, 1))
    model = build_model(d)
    assert model.stages[1].downsample.conv.stride == (2, 2)  # timm would have used nn.Identity here
    assert [o.shape[-1] for o in model.forward_intermediates(torch.randn(1, 3, 32, 32), intermediates_only=True)] == [
        8,
        4,
    ]
    d['stages'][1]['downsample'] = False
    model = build_model(d)
    assert isinstance(model.stages[1].downsample, torch.nn.Identity)
    assert model.feature_info[1]['reduction'] == 4


def test_timm_contract():
    spec = ArchSpec.from_dict(tiny_spec())
    model = build_model(spec).eval()
    x = torch.randn(2, 3, 32, 32)
    feats = model.forward_features(x)
    assert feats.shape == (2, 64, 2, 2)
    torch.testing.assert_close(model.forward_head(feats), model(x))
    assert [f['reduction'] for f in model.feature_info] == [4, 8, 16]
    assert [f['num_chs'] for f in model.feature_info] == [16, 32, 64]
    assert type(model.stages[2].blocks[0].token_mixer).mixer_name == 'attention'
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)


def test_mlp_ratio_and_per_stage_scales():
    d = tiny_spec(layer_scale_init=[1e-5, None, 0.5], res_scale_init=None)
    d['stages'][0]['mlp_ratio'] = 2
    d['stages'][1]['mlp_ratio'] = 1.5
    model = build_model(d)
    assert model.stages[0].blocks[0].mlp.fc1.out_channels == 32
    assert model.stages[1].blocks[0].mlp.fc1.out_channels == 48
    assert model.stages[2].blocks[0].mlp.fc1.out_features == 256  # token layout: Linear
    torch.testing.assert_close(model.stages[0].blocks[0].layer_scale1.scale, torch.full((16,), 1e-5))
    assert isinstance(model.stages[1].blocks[0].layer_scale1, torch.nn.Identity)
    assert isinstance(model.stages[2].blocks[0].res_scale1, torch.nn.Identity)


def test_seed_makes_builds_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_model(tiny_spec(mixers=('random', 'sepconv')), seed=7)
    after = torch.rand(1)
    b = build_model(tiny_spec(mixers=('random', 'sepconv')), seed=7)
    assert before == after
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(v, w), k


def test_cycle_fc_matches_its_definition():
    """Cycle FC (1x3 pseudo-kernel): out[o, h, w] = b[o] + sum_c W[o, c] x[c, h, w + ((c + 1) % 3 - 1)], zero
    outside."""
    from explorer.core.mixers import CycleFC

    torch.manual_seed(0)
    fc = CycleFC(5, axis=-1)
    x = torch.randn(1, 5, 3, 4)
    W, b = fc.proj.weight[:, :, 0, 0], fc.proj.bias
    expected = torch.zeros(1, 5, 3, 4)
    for o in range(5):
        for h in range(3):
            for w in range(4):
                acc = b[o].clone()
                for c in range(5):
                    ww = w + (c + 1) % 3 - 1
                    if 0 <= ww < 4:
                        acc = acc + W[o, c] * x[0, c, h, ww]
                expected[0, o, h, w] = acc
    torch.testing.assert_close(fc(x), expected)


@pytest.mark.slow
@pytest.mark.parametrize('name', TIMM_METAFORMER_PRESETS)
def test_timm_presets_equal_timm_models(name):
    spec = load_spec(name)
    ours = build_model(spec).eval()
    ref = timm.create_model(spec.meta['timm_name']).eval()
    sd_ref, sd_ours = ref.state_dict(), ours.state_dict()
    assert list(sd_ours) == list(sd_ref)
    assert all(sd_ours[k].shape == v.shape for k, v in sd_ref.items())
    assert _n_params(ours) == _n_params(ref)
    ours.load_state_dict(sd_ref)
    size = 224 if name in ('poolformer_s12', 'poolformerv2_s12', 'convformer_s18', 'caformer_s18') else 96
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def _published_tolerance(published_m: float) -> float:
    """Published counts are rounded: allow 1%, or half a unit of the last printed digit, whichever is larger
    (ResMLP-S12 is printed as 15M for 15.35M)."""
    decimals = len(repr(float(published_m)).split('.')[1].rstrip('0'))
    return max(0.01 * published_m, 0.5 * 10**-decimals)


@pytest.mark.parametrize('name', [n for n in preset_names() if n not in TIMM_PRESETS])
def test_non_timm_presets_match_published_param_counts(name):
    spec = load_spec(name)
    model = build_model(spec)
    total_m = _n_params(model) / 1e6
    published = spec.meta['params_m'] + spec.meta.get('frozen_params_m', 0)
    assert math.isclose(total_m, published, abs_tol=_published_tolerance(published)), (total_m, published)
    if 'frozen_params_m' in spec.meta:
        frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        assert frozen == 6 * 196**2 + 2 * 49**2 if name == 'randformer_s12' else frozen > 0
