"""Speed measurement: `bench` on CPU for a tiny spec gives positive, finite numbers with the stamp filled
in; bad requests are clear errors (CLI exit 2); the CLI's JSON round-trips."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from explorer.core.spec import ArchSpec
from explorer.measure import speed
from explorer.measure.analytic import analytic_cost
from tests.conftest import run_cli


def tiny() -> ArchSpec:
    return ArchSpec.from_dict(
        {
            'name': 'tiny_bench',
            'img_size': 32,
            'num_classes': 10,
            'stem': {'kernel_size': 4, 'stride': 4, 'padding': 0},
            'stages': [
                {'mixer': 'pooling', 'depth': 1, 'dim': 16},
                {'mixer': 'attention', 'depth': 1, 'dim': 32, 'mixer_args': {'head_dim': 16}},
            ],
        }
    )


STAMP_KEYS = (
    'device',
    'device_name',
    'threads',
    'torch',
    'dtype',
    'batch_size',
    'channels_last',
    'memory_format',
    'compile',
    'warmup_iters',
    'timed_iters',
    'img_size',
    'timer',
    'peak_mem_rule',
)


def check_result(r: speed.BenchResult, batch: int) -> None:
    for name in (
        'throughput',
        'latency_ms_median',
        'latency_ms_p10',
        'latency_ms_p90',
        'latency_ms_mean',
        'achieved_macs_per_s',
        'matmul_peak_macs_per_s',
        'peak_fraction',
    ):
        v = getattr(r, name)
        assert isinstance(v, float) and math.isfinite(v) and v > 0, (name, v)
    assert r.latency_ms_p10 <= r.latency_ms_median <= r.latency_ms_p90
    assert r.latency_ms_iqr >= 0
    assert r.throughput == pytest.approx(batch / (r.latency_ms_median / 1e3))
    assert r.achieved_macs_per_s == pytest.approx(r.macs_per_image * r.throughput)
    assert r.peak_fraction == pytest.approx(r.achieved_macs_per_s / r.matmul_peak_macs_per_s)
    assert isinstance(r.peak_mem_bytes, int) and r.peak_mem_bytes >= 0
    assert r.iters == len(r.latencies_ms) >= 1
    for key in STAMP_KEYS:
        assert r.stamp.get(key) not in (None, ''), key
    assert r.stamp['batch_size'] == batch


def test_bench_cpu_tiny_spec():
    spec = tiny()
    calls = []
    r = speed.bench(
        spec, device='cpu', batch_size=2, warmup=1, iters=5, progress=lambda frac, desc=None: calls.append((frac, desc))
    )
    check_result(r, 2)
    assert r.iters == 5 and r.stamp['warmup_iters'] == 1
    assert r.macs_per_image == analytic_cost(spec).macs
    assert r.stamp['device'] == 'cpu' and r.stamp['timer'] == 'time.perf_counter'
    assert r.stamp['torch'] == torch.__version__ and r.stamp['threads'] == torch.get_num_threads()
    assert calls and calls[-1][0] == 1.0 and all(0 <= f <= 1 for f, _ in calls)
    d = r.to_dict()
    assert json.loads(json.dumps(d))['throughput'] == r.throughput


def test_bench_by_time_and_channels_last():
    r = speed.bench(tiny(), device='cpu', batch_size=1, channels_last=True, min_time_s=0.2)
    check_result(r, 1)
    assert r.iters >= 5 and r.stamp['channels_last'] and r.stamp['memory_format'] == 'channels_last'


def test_bench_bf16_where_supported():
    if speed.cpu_native_bf16():
        r = speed.bench(tiny(), device='cpu', batch_size=1, dtype='bf16', warmup=1, iters=3)
        check_result(r, 1)
        assert r.stamp['autocast'] and r.stamp['dtype'] == 'bf16'
    else:
        with pytest.raises(speed.BenchError, match='bf16'):
            speed.bench(tiny(), device='cpu', dtype='bf16')


def test_matmul_peak_is_cached():
    a = speed.matmul_peak('cpu', 'fp32')
    assert a > 0 and math.isfinite(a)
    assert speed.matmul_peak('cpu', 'fp32') == a


@pytest.mark.parametrize(
    'kwargs,match',
    [
        ({'batch_size': 0}, 'batch size'),
        ({'batch_size': 2.5}, 'batch size'),
        ({'dtype': 'int8'}, 'dtype'),
        ({'device': 'tpu'}, 'device'),
        ({'iters': 0}, 'iters'),
        ({'iters': 10**12}, r'iters 1000000000000 must be an integer in \[1, 100,000\]'),
        ({'warmup': 10**6}, r'warmup 1000000 must be an integer in \[0, 100,000\]'),
    ],
)
def test_bad_requests(kwargs, match):
    with pytest.raises(speed.BenchError, match=match):
        speed.bench(tiny(), **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without CUDA')
def test_cuda_without_gpu_is_an_error():
    with pytest.raises(speed.BenchError, match='no CUDA GPU'):
        speed.bench(tiny(), device='cuda')


def test_fp16_on_cpu_without_support_is_an_error():
    if speed.cpu_native_fp16():
        pytest.skip('this CPU has AMX-FP16')
    with pytest.raises(speed.BenchError, match='fp16'):
        speed.bench(tiny(), device='cpu', dtype='fp16')


def test_fast_path_settings():
    fp = speed.fast_path('cpu')
    assert fp['channels_last'] is True
    assert fp['dtype'] == ('bf16' if speed.cpu_native_bf16() else 'fp32')


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_bench_cuda_tiny_spec():
    r = speed.bench(tiny(), device='cuda', batch_size=4, dtype='fp16', channels_last=True, warmup=2, iters=5)
    check_result(r, 4)
    assert r.stamp['timer'] == 'CUDA events + synchronize' and r.peak_mem_bytes > 0


# ---- CLI ------------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_file(tmp_path):
    path = tmp_path / 'tiny.json'
    path.write_text(tiny().to_json())
    return str(path)


def test_cli_bench_json_round_trip(tiny_file):
    rc, out, err = run_cli(
        'bench', tiny_file, '--device', 'cpu', '--batch-size', '2', '--warmup', '1', '--iters', '3', '--json'
    )
    assert rc == 0, err
    d = json.loads(out)
    assert d['iters'] == 3 and d['stamp']['batch_size'] == 2 and d['throughput'] > 0
    assert d['macs_per_image'] == analytic_cost(tiny()).macs
    # on the CPU: the host memory line is a CPU run's (the default device picked CUDA on a GPU machine)
    rc, out, err = run_cli('bench', tiny_file, '--fast', '--device', 'cpu', '--iters', '2', '--warmup', '0')
    assert rc == 0, err
    assert 'img/s' in out and 'channels_last' in out and 'matmul peak' in out
    assert f'host memory: {speed.host_allocator()}' in out


def test_cli_bench_takes_threads_and_sets_them_back(tiny_file):
    """`explorer latency --threads N` predicts for N threads; bench had no way to measure at N (a review)."""
    import torch

    before = torch.get_num_threads()
    want = 1 if before > 1 else 2
    rc, out, err = run_cli('bench', tiny_file, '--device', 'cpu', '--threads', str(want), '--iters', '2', '--json')
    assert rc == 0, err
    assert json.loads(out)['stamp']['threads'] == want and torch.get_num_threads() == before
    rc, out, err = run_cli('bench', tiny_file, '--threads', '0')
    assert rc == 2 and '--threads' in err


def test_a_speed_run_says_how_host_memory_was_served():
    """The latency model is calibrated with memory reused between calls; a speed run leaves glibc's defaults
    (fresh mmaps for large tensors), so its stamp says so, for anyone comparing the two."""
    from explorer.measure.latency import reused_memory

    r = speed.bench(tiny(), device='cpu', batch_size=1, warmup=0, iters=2)
    assert r.stamp['allocator'] == speed.host_allocator()
    with reused_memory() as regime:
        pass
    if regime == 'default':  # not glibc: nothing to say about mmaps
        assert speed.host_allocator() == 'not glibc'
    else:
        assert speed.host_allocator() == speed.ALLOCATOR_GLIBC and 'mmap' in r.stamp['allocator']


@pytest.mark.parametrize(
    'argv,match',
    [
        (['--batch-size', '0'], 'at least 1'),
        (['--dtype', 'fp64'], 'invalid choice'),
        (['--device', 'tpu'], 'device'),
        (['--min-time', '0'], 'min-time'),
    ],
)
def test_cli_bench_errors(tiny_file, argv, match):
    rc, _, err = run_cli('bench', tiny_file, *argv)
    assert rc == 2 and match in err


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without CUDA')
def test_cli_bench_cuda_without_gpu(tiny_file):
    rc, _, err = run_cli('bench', tiny_file, '--device', 'cuda')
    assert rc == 2 and 'no CUDA GPU' in err


@pytest.mark.slow
def test_compiled_bench_is_kept_for_the_next_run_and_matches_eager():
    """torch.compile (inductor, freezing): the first run compiles and reports it, a second run of the same design
    reuses the compiled model (no compile), and its logits match the eager fp32 model's. On a CPU with native
    bf16 the compiled bf16 path casts the whole model (no autocast)."""
    from explorer.core.build import build_model

    spec = tiny()
    dtype = 'bf16' if speed.cpu_native_bf16() else 'fp32'
    first = speed.bench(spec, device='cpu', batch_size=2, dtype=dtype, compile=True, warmup=1, iters=3)
    assert first.stamp['compile'] is True and first.stamp['compile_s'] > 0
    assert first.stamp['compile_cache'] != 'compiled model reused (this process)'
    again = speed.bench(spec, device='cpu', batch_size=2, dtype=dtype, compile=True, warmup=1, iters=3)
    assert again.stamp['compile_cache'] == 'compiled model reused (this process)'
    assert again.stamp['compile_s'] < first.stamp['compile_s']
    # another batch size is another compiled model
    other = speed.bench(spec, device='cpu', batch_size=3, dtype=dtype, compile=True, warmup=1, iters=2)
    assert other.stamp['compile_cache'] != 'compiled model reused (this process)'
    assert first.stamp['autocast'] is False
    assert (first.stamp['cast'] is not None) == (dtype == 'bf16')

    step, x, model = speed.prepare(spec, 'cpu', 2, dtype, True, True)
    assert x.dtype == (torch.bfloat16 if dtype == 'bf16' else torch.float32)
    with torch.inference_mode():
        out = step().float()
        ref = build_model(spec, seed=0).eval()(x.float())
    tol = 0.05 if dtype == 'bf16' else 1e-4
    assert out.shape == ref.shape and (out - ref).abs().max().item() < tol * max(1.0, ref.abs().max().item())


def test_whole_model_cast_only_for_compiled_bf16_on_cpu():
    assert speed.whole_model_cast('cpu', 'bf16', True)
    assert not speed.whole_model_cast('cpu', 'bf16', False)  # eager: autocast (norms in fp32)
    assert not speed.whole_model_cast('cpu', 'fp32', True)
    assert not speed.whole_model_cast('cuda', 'fp16', True)  # GPUs keep AMP


@pytest.mark.slow
def test_a_compiled_run_compiles_after_dynamo_has_compiled_its_limit_of_designs():
    """Dynamo stops compiling a code object after `recompile_limit` entries and runs it eagerly, silently; every
    MetaFormer shares timm's `forward`, so a server's ninth compiled design ran uncompiled while its speed was
    reported as compiled. Each compiled model now has a code object of its own."""
    from torch._dynamo.utils import counters

    from tests.conftest import fill_dynamo_cache, tiny_spec

    fill_dynamo_cache()
    spec = ArchSpec.from_dict(tiny_spec(dims=(24, 40, 72)))  # a design no earlier test compiled
    before = counters['stats']['unique_graphs']
    res = speed.bench(spec, device='cpu', batch_size=2, dtype='fp32', compile=True, warmup=1, iters=2)
    assert counters['stats']['unique_graphs'] > before and res.stamp['compile'] is True


def test_compile_model_keeps_each_design_apart_past_dynamos_limit():
    from torch._dynamo.utils import counters

    from explorer.core.build import build_model
    from tests.conftest import tiny_spec

    for i in range(torch._dynamo.config.recompile_limit + 2):
        spec = ArchSpec.from_dict(tiny_spec(mixers=('pooling',), dims=(12 + 4 * i,), depths=(1,)))
        fn = speed.compile_model(build_model(spec, seed=0).eval(), backend='eager')
        before = counters['stats']['unique_graphs']
        assert fn(torch.randn(1, 3, 32, 32)).shape == (1, 10)
        assert counters['stats']['unique_graphs'] == before + 1, f'design {i + 1} was not compiled'


class Slow(torch.nn.Module):
    """A model whose every call takes `seconds` (sleeping: no CPU), counting its calls."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds, self.calls = seconds, 0

    def forward(self, x):
        import time

        self.calls += 1
        time.sleep(self.seconds)
        return x.mean()


def test_a_run_that_cannot_finish_in_its_budget_stops_after_its_first_call():
    """A design few MACs make look cheap (64 blocks of 11x11 pooling at 1024 px) took 75 s a call: the speed run
    warmed up twice before it looked at the clock, and ended after 227 s of a 60 s budget. The budget is now
    checked after every warm-up call, from the first."""
    slow = Slow(1.2)
    with pytest.raises(speed.BenchError, match=r'building and warming up took 1\.\d s of the 2 s'):
        speed.bench(tiny(), device='cpu', batch_size=1, model=slow, time_budget_s=2.0)
    assert slow.calls == 1  # was 2
    quick = Slow(0.01)  # the same budget lets a quick model through
    r = speed.bench(tiny(), device='cpu', batch_size=1, model=quick, time_budget_s=2.0, min_time_s=0.1)
    assert r.iters >= 5 and quick.calls == r.iters + r.stamp['warmup_iters']


def test_a_compile_that_outruns_the_budget_says_so_not_use_a_smaller_batch(monkeypatch):
    """A compiled run of a tiny design took 32.7 s of a 5 s budget, all of it compiling, and was refused with
    "use a smaller batch size", which does nothing for compile time. The first call is made to last 0.5 s here."""
    import time

    real = speed.time_steps
    calls = []

    def slow_first(step, device, n):
        calls.append(n)
        if len(calls) == 1:
            time.sleep(0.5)  # the compiling first call
            return [0.5]
        return real(step, device, n)

    monkeypatch.setattr(speed, 'time_steps', slow_first)
    monkeypatch.setattr(speed, 'compile_model', lambda model, **kw: model)  # the compile itself: not under test
    spec = ArchSpec.from_dict({'img_size': 32, 'stages': [{'mixer': 'pooling', 'depth': 1, 'dim': 16}]})
    with pytest.raises(speed.BenchError, match=r'compiling took 0\.[5-9] s of it; run it again .compiled now. or'):
        speed.bench(spec, device='cpu', batch_size=1, compile=True, time_budget_s=0.6)


MEMORY_TWICE = """
from explorer.core.spec import ArchSpec
from explorer.measure import speed
spec = ArchSpec.from_dict({'name': 'mid', 'img_size': 96, 'num_classes': 10,
    'stages': [{'mixer': 'pooling', 'depth': 2, 'dim': 64}, {'mixer': 'sepconv', 'depth': 1, 'dim': 128}]})
for _ in range(2):
    print(speed.bench(spec, device='cpu', batch_size=8, warmup=2, iters=3).peak_mem_bytes)
"""


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='VmHWM: Linux')
def test_a_cpu_runs_peak_memory_counts_its_own_allocations_first_or_later_in_a_process():
    """The same run read 188 MiB first in a process (timm's import and the runtime's set-up counted) and 9 MiB
    after (heap freed by the first run reused without growing RSS), for a design of 1.6 MiB of weights and 20.8
    MiB of activations (batch 8, analytic)."""
    import subprocess

    out = subprocess.run([sys.executable, '-c', MEMORY_TWICE], capture_output=True, text=True, timeout=300, check=True)
    first, second = (int(v) / 2**20 for v in out.stdout.split())
    need = 1.6 + 20.8
    assert need <= first <= 4 * need and need <= second <= 4 * need, (first, second)


def test_readying_the_runtime_for_a_memory_reading_draws_nothing_from_torchs_global_generator(monkeypatch):
    """It drew from the process-wide stream that a training beside it seeds for its drop-path masks."""
    monkeypatch.setattr(speed, '_RUNTIME_READY', set())
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    speed._settle_cpu_memory('fp32')
    assert torch.equal(torch.rand(3), expected)
