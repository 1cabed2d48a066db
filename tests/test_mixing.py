"""explorer.explain.mixing: exact maps against hand-computed windows, frozen rows and a manual softmax; Jacobian maps
equal the exact ones for linear mixers; effective receptive fields and their area fractions."""

import numpy as np
import pytest
import torch

from explorer.core.build import build_model
from explorer.explain.mixing import (
    area_fractions,
    attention_weights,
    effective_receptive_fields,
    mixer_input,
    mixing_map,
    pooling_weights,
)
from tests.conftest import tiny_spec

# stride-2 stem: 32x32 input -> 16x16, 8x8, 4x4 tokens
STEM2 = dict(stem=dict(kernel_size=3, stride=2, padding=1))


def _model(mixers, dims=(16, 32, 64), seed=0, **kw):
    d = tiny_spec(mixers=mixers, dims=dims[: len(mixers)], depths=(2,) * len(mixers), **STEM2, **kw)
    return build_model(d, seed=seed).eval()


@pytest.fixture(scope='module')
def x():
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def test_pooling_window_by_hand():
    w = pooling_weights(3, (8, 8), (4, 4))  # interior: pool(x) - x = mean of 9 minus the centre
    expected = np.zeros((8, 8))
    expected[3:6, 3:6] = 1 / 9
    expected[4, 4] = 1 / 9 - 1
    assert np.allclose(w, expected) and w[4, 4] == pytest.approx(-8 / 9)
    corner = pooling_weights(3, (8, 8), (0, 0))  # count_include_pad=False: 4 valid cells
    assert np.allclose(corner[:2, :2], [[-3 / 4, 1 / 4], [1 / 4, 1 / 4]]) and corner.sum() == pytest.approx(0)
    edge = pooling_weights(3, (8, 8), (0, 5))  # 6 valid cells
    assert edge[1, 4] == pytest.approx(1 / 6) and edge[0, 5] == pytest.approx(1 / 6 - 1)
    big = pooling_weights(5, (8, 8), (4, 4))
    assert big[2, 2] == pytest.approx(1 / 25) and big[4, 4] == pytest.approx(-24 / 25) and big[1, 4] == 0


@pytest.mark.parametrize('pool, query', [(3, (8, 8)), (3, (0, 0)), (5, (15, 2)), (7, (3, 12))])
def test_pooling_exact_map_and_jacobian_agree(x, pool, query):
    model = build_model(tiny_spec(mixers=('pooling',), dims=(16,), depths=(2,), **STEM2), seed=0).eval()
    model.stages[0].blocks[1].token_mixer.pool.kernel_size = pool  # the mixer reads its own window
    model.stages[0].blocks[1].token_mixer.pool.padding = pool // 2
    exact = mixing_map(model, 0, 1, query)
    assert exact.method == 'exact' and exact.mixer == 'pooling' and exact.grid == (16, 16)
    assert np.allclose(exact.mean, pooling_weights(pool, (16, 16), query))
    for inp in (x, None):  # at an image's mixer input and at a random one: a linear map does not care
        jac = mixing_map(model, 0, 1, query, inp, method='jacobian')
        assert jac.method == 'jacobian'
        assert np.allclose(jac.mean, exact.mean, atol=1e-5)


def test_random_mixer_map_is_the_frozen_row(x):
    model = _model(('identity', 'random'))
    mixer = model.stages[1].blocks[0].token_mixer
    mm = mixing_map(model, 1, 0, (2, 5), x)
    row = mixer.random_matrix[2 * 8 + 5].view(8, 8).double().numpy()
    assert mm.method == 'exact' and np.array_equal(mm.mean, row)
    assert mm.mean.sum() == pytest.approx(1.0) and (mm.mean > 0).all()
    assert np.allclose(mixing_map(model, 1, 0, (2, 5), x, method='jacobian').mean, row, atol=1e-6)
    ident = mixing_map(model, 0, 1, (3, 3))
    assert ident.mean[3, 3] == 1 and ident.mean.sum() == 1
    assert np.allclose(mixing_map(model, 0, 1, (3, 3), x, method='jacobian').mean, ident.mean, atol=1e-6)


def test_attention_rows_sum_to_one_and_match_a_manual_softmax(x):
    model = _model(('pooling', 'attention'), dims=(16, 32))  # 32 / head_dim 8 = 4 heads, 8x8 tokens
    mixer = model.stages[1].blocks[1].token_mixer
    tokens = mixer_input(model, 1, 1, x)
    assert tokens.shape == (1, 64, 32)
    attn = attention_weights(mixer, tokens)
    assert attn.shape == (4, 64, 64)
    assert torch.allclose(attn.sum(-1), torch.ones(4, 64), atol=1e-6)
    # manual: q, k from the qkv weight, softmax(q k^T / sqrt(head_dim))
    W = mixer.qkv.weight.view(3, 4, 8, 32)
    q = torch.einsum('nc,hdc->hnd', tokens[0], W[0])
    k = torch.einsum('nc,hdc->hnd', tokens[0], W[1])
    manual = torch.softmax(q @ k.transpose(1, 2) / 8**0.5, -1)
    assert torch.allclose(attn, manual, atol=1e-6)
    # these are the weights the (fused) mixer really uses: attn @ v then the projection gives its output
    v = torch.einsum('nc,hdc->hnd', tokens[0], W[2])
    out = mixer.proj((attn @ v).transpose(0, 1).reshape(64, 32))
    with torch.no_grad():
        assert torch.allclose(out, mixer(tokens)[0], atol=1e-5)
    mm = mixing_map(model, 1, 1, (5, 2), x)
    assert mm.weights.shape == (4, 8, 8) and mm.method == 'exact'
    assert np.allclose(mm.weights.reshape(4, 64), attn[:, 5 * 8 + 2].double().numpy())
    assert np.allclose(mm.weights.sum((1, 2)), 1) and mm.mean.sum() == pytest.approx(1)


def test_jacobian_maps_for_the_other_mixers(x):
    model = _model(('sepconv', 'cross_patch', 'spatial_mlp'), dims=(16, 16, 16))
    sep = mixing_map(model, 0, 0, (8, 8), x)
    assert sep.method == 'jacobian' and sep.reduce == 'diag'
    norm = mixing_map(model, 0, 0, (8, 8), x, reduce='norm')
    # a 7x7 depthwise kernel between pointwise layers: nothing reaches beyond 3 tokens of the query
    outside = np.ones((16, 16), bool)
    outside[5:12, 5:12] = False
    assert (norm.mean[outside] == 0).all() and (norm.mean[~outside] > 0).sum() >= 40
    cp = mixing_map(model, 1, 1, (3, 4), x)  # cross_patch is linear: diag = its weight row
    row = model.stages[1].blocks[1].token_mixer.fc.weight[3 * 8 + 4].detach().view(8, 8).double().numpy()
    assert cp.method == 'jacobian' and np.allclose(cp.mean, row, atol=1e-6)
    mlp = mixing_map(model, 2, 0, (1, 1), x, reduce='norm')
    assert mlp.weights.shape == (1, 4, 4) and np.isfinite(mlp.weights).all() and (mlp.mean > 0).all()
    cyc = mixing_map(_model(('cycle',), dims=(16,)), 0, 0, (4, 4), x)
    assert cyc.mixer == 'cycle' and np.isfinite(cyc.mean).all()


def test_bad_arguments_name_the_field():
    model = _model(('sepconv', 'pooling'), dims=(16, 16))
    with pytest.raises(ValueError, match='method: no exact map for the sepconv mixer'):
        mixing_map(model, 0, 0, method='exact')
    with pytest.raises(ValueError, match=r'query: \(16, 0\) is outside the 16x16 token grid of stage 0'):
        mixing_map(model, 0, 0, (16, 0))
    with pytest.raises(ValueError, match=r'block: 2 is out of range; stage 1 has 2 blocks'):
        mixing_map(model, 1, 2)
    with pytest.raises(ValueError, match='stage: 2 is out of range'):
        mixing_map(model, 2, 0)
    with pytest.raises(ValueError, match="reduce: 'max' is not allowed"):
        mixing_map(model, 0, 0, reduce='max')


def test_area_fractions_known_answers():
    assert area_fractions(np.ones((10, 10))) == pytest.approx({0.2: 0.2, 0.5: 0.5, 0.9: 0.9})
    one = np.zeros((10, 10))
    one[3, 3] = 5
    assert area_fractions(one) == {0.2: 0.01, 0.5: 0.01, 0.9: 0.01}
    half = np.zeros((4, 4))
    half[0, :2] = [3, 1]  # 75% in one pixel, 25% in the next
    assert area_fractions(half) == {0.2: 1 / 16, 0.5: 1 / 16, 0.9: 2 / 16}


def test_effective_receptive_field_grows_with_depth(x):
    model = _model(('pooling', 'pooling', 'attention'))
    erfs = effective_receptive_fields(model, torch.cat([x, x.flip(-1)]))
    assert [e.stage for e in erfs] == [0, 1, 2] and all(e.n_images == 2 for e in erfs)
    for e in erfs:
        assert e.map.shape == (32, 32) and e.map.sum() == pytest.approx(1)
        assert 0 < e.area[0.2] <= e.area[0.5] <= e.area[0.9] <= 1
    assert erfs[0].area[0.5] < erfs[1].area[0.5] < erfs[2].area[0.5]
    # stage 0 (stem 3x3/2, two pool-3 blocks) cannot see beyond its theoretical receptive field
    rf = erfs[0].map > 0
    rows, cols = np.nonzero(rf)
    assert rows.max() - rows.min() + 1 <= 11 and cols.max() - cols.min() + 1 <= 11
    one = effective_receptive_fields(model, None, stages=[-1], n_random=2)
    assert len(one) == 1 and one[0].stage == 2


def test_receptive_fields_are_taken_a_few_images_at_a_time_with_the_same_result(monkeypatch):
    """`explorer erf *.png` with thousands of files decoded every image and ran them as one batch, its whole graph
    held for the backward passes; now GUARD_BATCH images at a time (the batch the model was checked at), the
    average the same."""
    from PIL import Image

    from explorer.explain import mixing, session
    from explorer.explain.mixing import erf_sums

    model = _model(('pooling', 'attention'))
    x = torch.randn(11, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    whole = effective_receptive_fields(model, x, chunk=11)
    for chunk in (1, 3, 8):
        for a, b in zip(whole, effective_receptive_fields(model, x, chunk=chunk)):
            assert a.n_images == b.n_images == 11  # float32 gradients: a batch of 1 runs other kernels
            assert np.abs(a.map - b.map).max() < 1e-4 * a.map.max()
            assert a.area == b.area
    spec = tiny_spec(mixers=('pooling', 'attention'), dims=(16, 32), depths=(1, 1))
    m = session.open_model(session.ArchSpec.from_dict(spec), 'random')
    sizes, decoded = [], []

    def images():
        for i in range(20):
            decoded.append(i)
            yield Image.new('RGB', (40, 40), (i * 10, 50, 200 - i * 5))

    def sums(model, x, stages):
        sizes.append((len(x), len(decoded)))
        return erf_sums(model, x, stages)

    monkeypatch.setattr(mixing, 'erf_sums', sums)  # what every batch goes through
    rows = session.receptive_fields(m, images())
    assert [s for s, _ in sizes] == [8, 8, 4] and [d for _, d in sizes] == [8, 16, 20]  # never more decoded
    assert all(r['n_images'] == 20 for r in rows)
    with pytest.raises(ValueError, match='no images'):
        session.receptive_fields(m, iter([]))


def test_receptive_field_and_comparison_maps_keep_square_pixels():
    """In a row of subplots each map's y axis must be scaled to its own x axis: unanchored, a 32x32 map was drawn
    about 1.5 times as wide as high, and a square receptive field looked like a wide rectangle."""
    from explorer.viz.predict import compare_figure, erf_figure

    m = np.ones((32, 32))
    erfs = [
        {'stage': i, 'mixer': 'pooling', 'map': m, 'area': {'20%': 0.004, '50%': 0.012, '90%': 0.04}} for i in range(3)
    ]
    fig = erf_figure(erfs)
    anchors = [fig.layout[f'yaxis{"" if i == 1 else i}'].scaleanchor for i in (1, 2, 3)]
    assert anchors == ['x', 'x2', 'x3']
    assert fig.layout.annotations[0].text == 'S1 pooling<br>20/50/90% of the gradient in 0.4/1.2/4.0% of pixels'
    panels = [{'image': np.zeros((32, 32, 3)), 'map': m, 'title': t} for t in ('a', 'b')]
    cmp = compare_figure(panels)
    assert [cmp.layout.yaxis.scaleanchor, cmp.layout.yaxis2.scaleanchor] == ['x', 'x2']
