"""The resource guard refuses oversized requests with the numbers and the limit, before building anything."""

import pytest

from explorer.core.catalog import load_spec
from explorer.core.spec import ArchSpec, SpecError
from explorer.measure.analytic import analytic_cost
from explorer.measure.guard import Limits, ResourceError, check_request
from tests.conftest import tiny_spec


def test_presets_pass_default_limits_at_a_normal_batch():
    for name in ('caformer_b36', 'poolformer_m48', 'mixer_b16'):
        out = check_request(load_spec(name), batch_size=8)
        assert out['params'] == analytic_cost(load_spec(name)).params


def test_refusal_names_figure_and_limit():
    spec = load_spec('caformer_s18')
    per_image = analytic_cost(spec).macs
    limits = Limits(max_gmacs=per_image * 4 / 1e9)  # exactly 4 images fit
    check_request(spec, batch_size=4, limits=limits)
    with pytest.raises(ResourceError) as e:
        check_request(spec, batch_size=5, limits=limits)
    msg = str(e.value)
    assert msg.startswith('macs: ') and 'per call (batch 5) is over the limit of' in msg
    assert 'EXPLORER_MAX_GMACS' in msg
    assert isinstance(e.value, SpecError)


def test_param_and_activation_limits():
    spec = ArchSpec.from_dict(tiny_spec())
    with pytest.raises(ResourceError, match=r'params: 0\.\d M parameters is over the limit of 0\.001 M'):
        check_request(spec, limits=Limits(max_params_m=0.001))
    act = analytic_cost(spec).act_elements * 4 / 2**30
    check_request(spec, batch_size=2, limits=Limits(max_act_gib=act * 2.5))
    with pytest.raises(ResourceError, match='activations: .* training'):
        check_request(spec, batch_size=2, limits=Limits(max_act_gib=act * 2.5), training=True)  # 3x for backward


@pytest.mark.parametrize(
    'kwargs,expected',
    [
        ({'batch_size': 0}, 'batch_size: 0 is not allowed; allowed 1 to 256 (EXPLORER_MAX_BATCH)'),
        ({'batch_size': 1000}, 'batch_size: 1000 is not allowed'),
        ({'batch_size': 2.5}, 'batch_size: 2.5 is not allowed'),
        ({'img_size': 4000}, 'img_size: 4000 is not allowed; allowed 8 to 1024 (EXPLORER_MAX_IMG_SIZE)'),
        ({'dtype': 'int8'}, "dtype: 'int8' is not allowed; choose from fp32, bf16, fp16"),
    ],
)
def test_bad_run_settings(kwargs, expected):
    with pytest.raises(ResourceError, match=expected.replace('(', r'\(').replace(')', r'\)')):
        check_request(ArchSpec.from_dict(tiny_spec()), **kwargs)


def test_limits_from_environment():
    limits = Limits.from_env({'EXPLORER_MAX_BATCH': '8', 'EXPLORER_MAX_GMACS': '1.5'})
    assert limits.max_batch == 8 and limits.max_gmacs == 1.5 and limits.max_act_gib == 8.0
    with pytest.raises(SpecError, match="EXPLORER_MAX_BATCH='lots' is not a number"):
        Limits.from_env({'EXPLORER_MAX_BATCH': 'lots'})
    with pytest.raises(SpecError, match='must be positive'):
        Limits.from_env({'EXPLORER_MAX_ACT_GIB': '-1'})


def test_bench_and_train_refuse_before_building(monkeypatch, tmp_path):
    import explorer.core.build
    import explorer.train.loop
    from explorer.measure.speed import bench
    from explorer.train.loop import train

    def must_not_run(*args, **kwargs):
        raise AssertionError('built a model or loaded data before the guard refused')

    for target, name in (
        (explorer.core.build, 'build_model'),
        (explorer.train.loop, 'build_model'),
        (explorer.train.loop, 'load_dataset'),
    ):
        monkeypatch.setattr(target, name, must_not_run)
    monkeypatch.setenv('EXPLORER_MAX_BATCH', '4')
    with pytest.raises(ResourceError, match='batch_size: 8 is not allowed; allowed 1 to 4'):
        bench(ArchSpec.from_dict(tiny_spec()), device='cpu', batch_size=8)
    spec = tiny_spec(in_chans=1)
    with pytest.raises(ResourceError, match='batch_size: 16 is not allowed; allowed 1 to 4'):
        train(spec, batch_size=16, out=tmp_path / 'x.safetensors')
