"""Honest speed measurement of a spec: warm-up, repeated timed runs, spread, peak memory, and how far the
achieved MAC/s is from the device's own measured matmul peak.

Rules (also in each result's `stamp`):
- Each timed iteration is one forward pass of a batch under `torch.inference_mode()`. CPU iterations are
  timed with `time.perf_counter`; CUDA iterations with CUDA events recorded around the forward and a
  `torch.cuda.synchronize()` before they are read (as timm's benchmark.py synchronises).
- Throughput is batch / median latency (the median resists the other processes sharing a CPU); the spread
  is reported as p10, p25, p75 and p90 latency.
- Peak memory: on CUDA `torch.cuda.max_memory_allocated()` over warm-up and timed runs (weights included);
  on CPU the growth of the process's peak resident set (VmHWM, reset through /proc/self/clear_refs where
  Linux allows, otherwise `getrusage` ru_maxrss growth) from just before the model is built, after the
  runtime's one-time set-up and with the heap earlier work freed handed back (`_settle_cpu_memory`), so it
  counts the run's own allocations.
- Achieved MAC/s = analytic MACs per image x throughput; `peak_fraction` divides it by `matmul_peak(device,
  dtype)`, a large GEMM timed once per process in the same dtype.
- The fast path (`fast_path(device)`): channels_last plus bf16 autocast on CPUs with native bf16 (AVX512-BF16
  or AMX), channels_last alone on other CPUs, channels_last plus fp16 autocast (AMP) on CUDA.
- `compile`: torch.compile with inductor and freezing (weights folded as constants, oneDNN weights prepacked);
  the compile time is reported, the compiled model kept for the next run of the same design in this process,
  and inductor's on-disk FX graph cache shortens compiling in a new one. Compiled bf16 on a CPU casts the
  whole model and input to bf16 instead of autocasting (`whole_model_cast`).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import platform
import resource
import statistics
import sys
import threading
import time
import types
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from explorer.core.registry import show

DTYPES = ('fp32', 'bf16', 'fp16')
# what serves host memory in a process left to glibc's defaults (a speed run does not change them)
ALLOCATOR_GLIBC = 'glibc defaults: a tensor of 32 MiB or more is a fresh mmap (page faults) on every call'


class BenchError(ValueError):
    """A benchmark request this machine cannot honour (no GPU, unsupported dtype, bad batch size)."""


@dataclass
class BenchResult:
    throughput: float  # images / s (batch / median latency)
    latency_ms_median: float
    latency_ms_p10: float
    latency_ms_p90: float
    latency_ms_p25: float
    latency_ms_p75: float
    latency_ms_mean: float
    iters: int
    peak_mem_bytes: int | None
    macs_per_image: int
    achieved_macs_per_s: float
    matmul_peak_macs_per_s: float
    peak_fraction: float  # achieved / matmul peak
    stamp: dict = field(default_factory=dict)
    latencies_ms: list = field(default_factory=list)
    round_throughputs: list = field(default_factory=list)  # images / s of each round (batch / its median latency)

    @property
    def latency_ms_iqr(self) -> float:
        return self.latency_ms_p75 - self.latency_ms_p25

    def to_dict(self) -> dict:
        d = asdict(self)
        d['latency_ms_iqr'] = self.latency_ms_iqr
        return d


# ---- device facts ----------------------------------------------------------------------------------------
def cpu_name() -> str:
    """The processor's model name (`cpu_label` of /proc/cpuinfo), else what `platform` says."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            name = cpu_label(f.read())
    except OSError:
        name = None
    return name or platform.processor() or platform.machine()


def cpu_label(cpuinfo: str) -> str | None:
    """The first processor's model name from /proc/cpuinfo text; where a hypervisor reports one without a model
    number ('AMD EPYC'), with its family, model and stepping, which tell its generations apart."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip() and fields:  # the first processor's block is enough
            break
        key, _, value = line.partition(':')
        key = key.strip()
        if key in ('model name', 'cpu family', 'model', 'stepping') and key not in fields:
            fields[key] = value.strip()
    name = fields.get('model name')
    if not name:
        return None
    if not any(c.isdigit() for c in name) and 'cpu family' in fields:
        model, stepping = fields.get('model', '?'), fields.get('stepping', '?')
        name += f' (family {fields["cpu family"]}, model {model}, stepping {stepping})'
    return name


def cpu_native_bf16() -> bool:
    """True on CPUs with bf16 arithmetic in hardware (AVX512-BF16 or AMX); elsewhere bf16 is emulated."""
    import torch

    cpu = getattr(torch, 'cpu', None)
    for probe in ('_is_avx512_bf16_supported', '_is_amx_tile_supported'):
        fn = getattr(cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # noqa: BLE001 - a probe that fails means "unknown": treat as unsupported
            pass
    return False


def cpu_native_fp16() -> bool:
    import torch

    fn = getattr(getattr(torch, 'cpu', None), '_is_amx_fp16_supported', None)
    try:
        return bool(fn and fn())
    except Exception:  # noqa: BLE001
        return False


@functools.lru_cache(maxsize=1)
def glibc():
    """glibc through ctypes (for mallopt), or None on other platforms and C libraries."""
    if not sys.platform.startswith('linux') or platform.libc_ver()[0] != 'glibc':
        return None
    import ctypes

    try:
        libc = ctypes.CDLL('libc.so.6')
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):
        return None
    return libc


def host_allocator() -> str:
    """How this process's host memory behaves in a speed run: ALLOCATOR_GLIBC, or 'not glibc' (musl, macOS,
    Windows). The latency model is calibrated with memory reused instead (explorer.measure.latency.reused_memory),
    so for large tensors a speed run here can be slower than the predicted latency."""
    return ALLOCATOR_GLIBC if glibc() is not None else 'not glibc'


def cuda_index(device: str) -> int | None:
    """N of a 'cuda:N' device name, or None when N is not 1-4 ASCII digits (str.isdigit() is also true of '²'
    and of 5,000 nines, which int() or torch then refuse)."""
    index = device[5:] if isinstance(device, str) and device.startswith('cuda:') else ''
    return int(index) if index.isascii() and index.isdigit() and len(index) <= 4 else None


def resolve_device(device: str = 'auto') -> str:
    import torch

    if not isinstance(device, str):
        raise BenchError(f'device {device!r} must be auto, cpu or cuda')
    if device == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cpu':
        return 'cpu'
    if device == 'cuda' or device.startswith('cuda:'):
        if not torch.cuda.is_available():
            raise BenchError(
                f'device {device!r} requested but no CUDA GPU is available '
                f'(torch {torch.__version__}); use --device cpu or auto'
            )
        if ':' in device:
            idx = cuda_index(device)
            if idx is None or idx >= torch.cuda.device_count():
                raise BenchError(f'device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)')
        return device
    raise BenchError(f'device {device!r} is not allowed; choose auto, cpu or cuda')


def check_dtype(device: str, dtype: str) -> None:
    import torch

    if dtype not in DTYPES:
        raise BenchError(f'dtype {dtype!r} is not allowed; choose from {", ".join(DTYPES)}')
    if device == 'cpu':
        if dtype == 'fp16' and not cpu_native_fp16():
            raise BenchError(
                'fp16 on this CPU has no hardware support (needs AMX-FP16) and would only measure '
                'emulation; use --dtype fp32, or bf16 on a CPU with AVX512-BF16/AMX'
            )
        if dtype == 'bf16' and not cpu_native_bf16():
            raise BenchError(
                f'bf16 on this CPU ({cpu_name()}) has no hardware support (needs AVX512-BF16 or '
                f'AMX) and would only measure emulation; use --dtype fp32'
            )
    elif dtype == 'bf16' and not torch.cuda.is_bf16_supported():
        raise BenchError(f'bf16 is not supported on {torch.cuda.get_device_name(device)}; use fp16 or fp32')


def fast_path(device: str = 'auto') -> dict:
    """Settings of the fast path on `device`: dict(dtype=..., channels_last=True)."""
    device = resolve_device(device)
    if device == 'cpu':
        return {'dtype': 'bf16' if cpu_native_bf16() else 'fp32', 'channels_last': True}
    return {'dtype': 'fp16', 'channels_last': True}


def _torch_dtype(dtype: str):
    import torch

    return {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}[dtype]


# ---- matmul peak -----------------------------------------------------------------------------------------
_PEAK_CACHE: dict = {}


def matmul_peak(device: str = 'cpu', dtype: str = 'fp32') -> float:
    """MAC/s of a large square GEMM on `device` in `dtype` (best of several runs), measured once per process
    (per device, dtype, thread count and TF32 setting). CPU: 2048^3, best of 5; CUDA: 8192^3, best of 20."""
    import torch

    device = resolve_device(device)
    key = (device, dtype, torch.get_num_threads(), torch.backends.cuda.matmul.allow_tf32)
    if key in _PEAK_CACHE:
        return _PEAK_CACHE[key]
    tdt = _torch_dtype(dtype)
    if device == 'cpu':
        n, reps = 2048, 5
    else:
        n, reps = 8192, 20
    gen = torch.Generator(device='cpu').manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=tdt)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=tdt)
    best = math.inf
    with torch.inference_mode():
        torch.mm(a, b)  # warm-up: allocation, kernel selection
        if device == 'cpu':
            for _ in range(reps):
                t0 = time.perf_counter()
                torch.mm(a, b)
                best = min(best, time.perf_counter() - t0)
        else:
            torch.cuda.synchronize(device)
            for _ in range(reps):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                torch.mm(a, b)
                end.record()
                torch.cuda.synchronize(device)
                best = min(best, start.elapsed_time(end) / 1e3)
    peak = n**3 / best
    _PEAK_CACHE[key] = peak
    return peak


# ---- CPU peak resident memory ------------------------------------------------------------------------------
def _status_kb(field_name: str) -> int | None:
    try:
        with open('/proc/self/status', encoding='utf-8') as f:
            for line in f:
                if line.startswith(field_name + ':'):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


_RUNTIME_READY: set = set()  # dtypes whose kernels this process has run once (`_settle_cpu_memory`)


def _settle_cpu_memory(dtype: str) -> None:
    """Before a CPU run's memory is read: the runtime's one-time set-up done (the model code imported; a first
    convolution, matmul, pooling and norm: oneDNN's and the thread pool's allocations are kept for good), and the
    heap that earlier work freed handed back (glibc's malloc_trim), so that the growth counts this run's own
    allocations. Without it the same run read 188 MiB first in a process and 9 MiB after (a design of 22 MiB of
    weights and activations); with it 47 and 34 MiB."""

    import torch
    import torch.nn.functional as F

    if dtype not in _RUNTIME_READY:
        import explorer.core.build  # noqa: F401  (timm and torchvision: about 200 MB of code the first build loads)

        g = torch.Generator().manual_seed(0)  # not torch's global stream: a training beside it draws from that
        x = torch.randn(2, 16, 16, 16, generator=g)
        dt = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(dtype, torch.float32)
        with torch.inference_mode():
            for t in {x, x.to(dt)}:
                F.conv2d(t, torch.ones(16, 1, 3, 3, dtype=t.dtype), padding=1, groups=16)
                F.conv2d(t, torch.ones(32, 16, 1, 1, dtype=t.dtype))
                F.avg_pool2d(t, 3, 1, 1)
                F.layer_norm(t.permute(0, 2, 3, 1), (16,))
                t.flatten(1) @ torch.ones(4096, 8, dtype=t.dtype)
        _RUNTIME_READY.add(dtype)
    give_back_memory()


def give_back_memory() -> None:
    """Collect what earlier work left and hand the freed heap back to the OS (glibc's malloc_trim)."""
    import gc

    gc.collect()
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)


class _CpuPeak:
    """Peak resident-set growth of this process over a `with` block."""

    def __enter__(self):
        self.exact = False
        try:  # Linux >= 4.0: writing 5 resets VmHWM to the current RSS
            with open('/proc/self/clear_refs', 'w', encoding='ascii') as f:
                f.write('5')
            self.exact = _status_kb('VmHWM') is not None
        except OSError:
            pass
        self.base_kb = _status_kb('VmRSS') if self.exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc):
        end = _status_kb('VmHWM') if self.exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.growth_bytes = max(0, (end or 0) - (self.base_kb or 0)) * 1024
        self.rule = (
            'peak RSS growth (VmHWM after reset - RSS before; runtime set up and freed heap handed back first)'
            if self.exact
            else 'ru_maxrss growth (lower bound: the process may have peaked higher before)'
        )
        return False


# ---- the benchmark ---------------------------------------------------------------------------------------
def _quantile(sorted_xs: list[float], q: float) -> float:
    if len(sorted_xs) == 1:
        return sorted_xs[0]
    pos = q * (len(sorted_xs) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def prepare(
    spec,
    device: str = 'cpu',
    batch_size: int = 8,
    dtype: str = 'fp32',
    channels_last: bool = False,
    compile: bool = False,
    model=None,
):
    """(callable running one forward, input, model, autocast context factory) for a spec on `device`.
    Used by `bench` and by the benchmarks in benchmarks/ (which time timm's models the same way)."""
    import torch

    from explorer.core.build import build_model
    from explorer.core.spec import network_key

    key = None
    cached = None
    if compile and model is None:
        key = (network_key(spec), device, batch_size, dtype, bool(channels_last))
        cached = _COMPILED.take(key)
    if cached is not None:
        fn, model = cached
    elif model is None:
        model = build_model(spec, seed=0)
    model = model.eval().to(device)
    x = torch.randn(
        batch_size, spec.in_chans, spec.img_size, spec.img_size, generator=torch.Generator().manual_seed(0)
    ).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    cast = whole_model_cast(device, dtype, compile)
    if cast:  # the compiled CPU path: weights and activations in bf16 (see whole_model_cast)
        model = model.to(torch.bfloat16)
        x = x.to(torch.bfloat16)
    if cached is None:
        fn = model
        if compile:
            try:
                # freezing: weights become constants, so inductor folds them and prepacks the oneDNN
                # convolution/linear weights (inference only: every call here runs under inference_mode)
                fn = compile_model(model, options={'freezing': True})
            except Exception as e:  # noqa: BLE001
                raise BenchError(f'torch.compile is not available here: {e}') from None
    tdt = _torch_dtype(dtype)
    dev_type = 'cuda' if device.startswith('cuda') else 'cpu'

    def autocast():
        if dtype == 'fp32' or cast:
            return contextlib.nullcontext()
        return torch.autocast(device_type=dev_type, dtype=tdt)

    def step():
        with autocast():
            return fn(x)

    step.compile_cached = cached is not None
    if key is not None:
        step.keep = lambda: _COMPILED.put(key, (fn, model))  # hand the compiled model back for the next run
    return step, x, model


_OWN_CODE = itertools.count()


def compile_model(model, **options):
    """`torch.compile(model, **options)`, called through a function with a code object of its own.

    Dynamo keeps compiled code per Python code object and, after `recompile_limit` entries (8) on one, runs it
    uncompiled from then on, with a log line and no error. Every MetaFormer shares one `forward`, so the ninth
    design compiled in a process (a server's speed runs and trainings) ran in eager mode while reported as
    compiled. A code object per compiled model keeps each design's entries apart; they go when it goes."""
    import torch

    def call(*args, **kwargs):
        return model(*args, **kwargs)

    code = call.__code__.replace(co_name=f'compiled_{next(_OWN_CODE)}')
    own = types.FunctionType(code, call.__globals__, code.co_name, call.__defaults__, call.__closure__)
    return torch.compile(own, **options)


def whole_model_cast(device: str, dtype: str, compile: bool) -> bool:
    """Whether a run casts the whole model and its input to `dtype` instead of autocasting: compiled bf16 on a
    CPU. Inductor then fuses every op in bf16 (norms still accumulate in fp32 inside its kernels) and moves half
    the bytes: 4.6x timm eager fp32 on poolformer_s12 (batch 8, AMX) against 3.8x compiled under autocast,
    measured side by side, with the same max logit difference from fp32 (0.011 vs 0.011)."""
    return bool(compile) and dtype == 'bf16' and not device.startswith('cuda')


class _CompiledCache:
    """The last few compiled models of this process (by network, device, batch, dtype, layout), so a second
    speed run of a design does not compile again. A run takes its entry out and puts it back when done: two
    concurrent runs of one design never share a compiled model. Inductor's own on-disk cache (FX graphs) also
    shortens a compile in a fresh process."""

    def __init__(self, size: int = 2):
        self.size, self.items, self.lock = size, {}, threading.Lock()

    def take(self, key):
        with self.lock:
            return self.items.pop(key, None)

    def put(self, key, value) -> None:
        with self.lock:
            self.items.pop(key, None)
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.pop(next(iter(self.items)))


_COMPILED = _CompiledCache()


def time_steps(step: Callable, device: str, n: int) -> list[float]:
    """Latency in seconds of `n` calls of `step` (CUDA: events around each, synchronised before reading)."""
    import torch

    out = []
    with torch.inference_mode():
        if device.startswith('cuda'):
            events = []
            torch.cuda.synchronize(device)
            for _ in range(n):
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                step()
                e.record()
                events.append((s, e))
            torch.cuda.synchronize(device)
            out = [s.elapsed_time(e) / 1e3 for s, e in events]
        else:
            for _ in range(n):
                t0 = time.perf_counter()
                step()
                out.append(time.perf_counter() - t0)
    return out


def bench(
    spec,
    device: str = 'auto',
    batch_size: int = 8,
    dtype: str = 'fp32',
    channels_last: bool = False,
    compile: bool = False,
    warmup: int | None = None,
    iters: int | None = None,
    progress: Callable | None = None,
    min_time_s: float = 2.0,
    max_iters: int = 200,
    model=None,
    time_budget_s: float | None = None,
    repeats: int = 1,
) -> BenchResult:
    """Measure inference speed of `spec` (see the module docstring for the rules).

    `warmup`/`iters` None: warm up for at least 2 iterations and 0.5 s (plus compilation), then time at
    least 5 iterations and `min_time_s` seconds (at most `max_iters`). The first call is never timed, so
    `warmup=0` still runs one untimed call. `progress(fraction, description)` is
    called as it goes (gradio's `gr.Progress` fits). Raises BenchError for what this machine cannot do.

    `time_budget_s` (a server's limit on one run): refused before building when the batch's MACs at this
    device's measured matmul peak already need more than a tenth of it per call, or after the first call
    when that call took more than half of it; timed runs stop when it is spent (at least one is timed).

    `repeats` > 1: the timed runs are made in that many rounds after one warm-up (each round `min_time_s` /
    `repeats` seconds and at least 5 calls, or `iters` calls); `round_throughputs` holds each round's
    batch / median latency, so the spread between rounds shows how steady the machine was. Throughput and the
    latency quantiles are over all timed calls.
    """
    import torch

    from explorer.measure.analytic import analytic_cost

    _check_counts(batch_size, warmup, iters, min_time_s)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or not 1 <= repeats <= 20:
        raise BenchError(f'repeats {repeats!r} must be an integer in [1, 20]')
    device = resolve_device(device)
    check_dtype(device, dtype)
    if model is None:  # the resource guard, before anything is built (limits: explorer.measure.guard)
        from explorer.measure.guard import check_request

        check_request(spec, batch_size=batch_size, dtype=dtype)
    report = progress or (lambda frac, desc=None: None)
    load_before = os.getloadavg() if hasattr(os, 'getloadavg') else None

    report(0.0, 'measuring the matmul peak')
    peak = matmul_peak(device, dtype)
    if device == 'cpu':
        _settle_cpu_memory(dtype)  # before the budget's clock: one-time set-up, not this design's
    report(0.05, 'building the model')
    macs = analytic_cost(spec).macs
    t_start = time.monotonic()
    if time_budget_s is not None and macs * batch_size / peak > time_budget_s / 10:
        raise BenchError(
            f"batch {batch_size} needs at least {macs * batch_size / peak:.2f} s per call at this device's "
            f'measured matmul peak; a speed run here may take {time_budget_s:g} s in all '
            f'(EXPLORER_MAX_BENCH_S): use a smaller batch size'
        )

    if device.startswith('cuda'):
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
    given_model = model is not None
    cpu_peak = _CpuPeak() if device == 'cpu' else None
    if cpu_peak is not None:
        cpu_peak.__enter__()
    step, x, model = prepare(spec, device, batch_size, dtype, channels_last, compile, model)
    if device.startswith('cuda'):
        torch.cuda.reset_peak_memory_stats(device)
        weights_bytes = torch.cuda.memory_allocated(device)

    cached = getattr(step, 'compile_cached', False)
    report(
        0.1, 'warming up (compiled model reused)' if cached else 'compiling and warming up' if compile else 'warming up'
    )
    graph_hits = _fx_graph_cache_hits()

    def within_budget(call_s: float, compile_s: float | None, first: bool) -> None:
        """After each warm-up call, from the first: refuse a run whose warm-up has taken more than its share of
        the budget (a design of 75 s a call was warmed up twice before the clock was read, and ran 227 s of a
        60 s budget). Timed calls then stop at the budget's end."""
        if time_budget_s is None:
            return
        spent = time.monotonic() - t_start
        # compiling is paid once per design: it may take the budget's first half on top of the warm-up's
        allowed = time_budget_s / 2 + (min(compile_s or 0.0, time_budget_s / 2) if compile else 0.0)
        if spent <= allowed:
            return
        again = ''
        if compile and hasattr(step, 'keep'):
            step.keep()  # compiled: the next run of this design reuses it, even when this one runs out of time
            again = ' (it stays compiled: run it again to time it)'
        if compile and compile_s is not None and compile_s > time_budget_s / 2:  # the compile alone ran over
            remedy = f'compiling took {compile_s:.1f} s of it; run it again (compiled now) or without compile'
        else:
            remedy = 'use a smaller batch size'
        raise BenchError(
            f'building{", compiling" if compile else ""} and warming up took {spent:.1f} s of the '
            f'{time_budget_s:g} s a speed run may take here (EXPLORER_MAX_BENCH_S){again}: {remedy}'
        )

    n_warm, compile_s = _warm_up(step, device, warmup, compile, within_budget)
    graph_hits = _fx_graph_cache_hits() - graph_hits
    if compile and hasattr(step, 'keep'):
        step.keep()  # compiled: the next run of this design reuses it, even when this one runs out of time
    deadline = None if time_budget_s is None else t_start + time_budget_s
    rounds = []
    for r in range(repeats):

        def round_report(frac, desc=None, r=r):  # _timed_runs reports 0.2..1.0 for its own round
            report(0.2 + 0.8 * (r + (frac - 0.2) / 0.8) / repeats, desc if repeats == 1 else f'round {r + 1}: {desc}')

        round_iters = max(min(5, max_iters), max_iters // repeats)
        rounds.append(_timed_runs(step, device, iters, min_time_s / repeats, round_iters, round_report, deadline))
        if deadline is not None and time.monotonic() > deadline:
            break
    lat = [v for part in rounds for v in part]

    if device.startswith('cuda'):
        torch.cuda.synchronize(device)
        peak_mem = int(torch.cuda.max_memory_allocated(device))
        mem_rule = f'torch.cuda.max_memory_allocated over warm-up and timed runs (weights {weights_bytes} B included)'
    else:
        cpu_peak.__exit__(None, None, None)
        peak_mem = int(cpu_peak.growth_bytes)
        mem_rule = cpu_peak.rule + (
            ', model passed in (its weights were already resident)'
            if given_model
            else ', from before the model was built (weights included)'
        )
    report(1.0, 'done')

    stamp = _environment(device, load_before) | {
        'dtype': dtype,
        'autocast': dtype != 'fp32' and not whole_model_cast(device, dtype, compile),
        'cast': f'model and input in {dtype} (compiled)' if whole_model_cast(device, dtype, compile) else None,
        'batch_size': batch_size,
        'channels_last': bool(channels_last),
        'memory_format': 'channels_last' if channels_last else 'contiguous (NCHW)',
        'compile': bool(compile),
        'compile_s': compile_s,
        'compile_cache': (
            None
            if not compile
            else 'compiled model reused (this process)'
            if cached
            else f'inductor FX graph cache: {graph_hits} hit(s)'
            if graph_hits
            else 'compiled afresh'
        ),
        'warmup_iters': n_warm,
        'timed_iters': len(lat),
        'rounds': len(rounds),
        'img_size': spec.img_size,
        'model': spec.name,
        'timer': 'CUDA events + synchronize' if device.startswith('cuda') else 'time.perf_counter',
        'peak_mem_rule': mem_rule,
        'allocator': host_allocator() if device == 'cpu' else None,
    }
    result = _result(lat, batch_size, macs, peak, peak_mem, stamp)
    result.round_throughputs = [batch_size / statistics.median(part) for part in rounds]
    return result


MAX_ITERS = 100_000  # calls of one measurement: a bench is minutes, not days (CUDA keeps two events per call)


def _check_counts(batch_size, warmup, iters, min_time_s) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 4096:
        raise BenchError(f'batch size {show(batch_size)} must be an integer in [1, 4096]')
    for name, v in (('warmup', warmup), ('iters', iters)):
        low = 0 if name == 'warmup' else 1
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not low <= v <= MAX_ITERS):
            raise BenchError(f'{name} {show(v)} must be an integer in [{low}, {MAX_ITERS:,}]')
    if not isinstance(min_time_s, (int, float)) or not math.isfinite(min_time_s) or min_time_s <= 0:
        raise BenchError(f'min time {show(min_time_s)} must be a positive number of seconds')


def _environment(device: str, load_before) -> dict:
    """What a measurement ran on: device, threads, versions, CPU capability, load before and after."""
    import timm
    import torch

    cuda = device.startswith('cuda')
    return {
        'device': device,
        'device_name': cpu_name() if device == 'cpu' else torch.cuda.get_device_name(device),
        'threads': torch.get_num_threads(),
        'cpu_count': os.cpu_count(),
        'torch': torch.__version__,
        'timm': timm.__version__,
        'python': platform.python_version(),
        'cpu_capability': _cpu_capability(),
        'native_bf16_cpu': cpu_native_bf16() if device == 'cpu' else None,
        'loadavg_before': list(load_before) if load_before else None,
        'loadavg_after': list(os.getloadavg()) if hasattr(os, 'getloadavg') else None,
        'cudnn_benchmark': bool(torch.backends.cudnn.benchmark) if cuda else None,
        'tf32': bool(torch.backends.cuda.matmul.allow_tf32) if cuda else None,
    }


def _fx_graph_cache_hits() -> int:
    """Inductor's on-disk FX graph cache hits so far in this process (0 where torch does not count them)."""
    try:
        from torch._dynamo.utils import counters

        return int(counters['inductor']['fxgraph_cache_hit'])
    except Exception:  # noqa: BLE001 - a private counter: absent in some torch versions
        return 0


def _warm_up(
    step, device: str, warmup: int | None, compile: bool, check: Callable | None = None
) -> tuple[int, float | None]:
    """Run the untimed calls: the first (which compiles when `compile`), then `warmup` in all, or by time (at
    least 2 calls and 0.5 s past compilation) when None. Returns (calls made, compile seconds or None).
    check(call seconds, compile seconds or None, whether it was the first call) after every call may raise to
    stop (a time budget)."""
    check = check or (lambda call_s, compile_s, first: None)
    t0 = time.perf_counter()
    try:
        first = time_steps(step, device, 1)[0]
    except BenchError:
        raise
    except Exception as e:  # noqa: BLE001 - torch.compile fails at the first call (no C++ compiler, ...)
        if not compile:
            raise
        raise BenchError(f'torch.compile failed on this machine: {type(e).__name__}: {str(e)[:300]}') from None
    compile_s = first if compile else None
    check(first, compile_s, True)
    n_warm = 1
    while n_warm < warmup if warmup is not None else n_warm < 2 or time.perf_counter() - t0 - (compile_s or 0) < 0.5:
        check(time_steps(step, device, 1)[0], compile_s, False)
        n_warm += 1
    return (max(1, warmup) if warmup is not None else n_warm), compile_s


def _timed_runs(
    step, device: str, iters: int | None, min_time_s: float, max_iters: int, report, deadline: float | None = None
) -> list[float]:
    """Latencies (s) of single timed calls: `iters` of them, or by time (at least 5 calls and `min_time_s`
    seconds, at most `max_iters`) when None; fewer when time.monotonic() passes `deadline`."""
    lat: list[float] = []
    t_start = time.perf_counter()
    while True:
        lat += time_steps(step, device, 1)
        if deadline is not None and time.monotonic() > deadline:
            return lat
        elapsed = time.perf_counter() - t_start
        if iters is not None:
            report(0.2 + 0.8 * len(lat) / iters, f'timed run {len(lat)}/{iters}')
            if len(lat) >= iters:
                return lat
        else:
            report(0.2 + 0.8 * min(1.0, elapsed / min_time_s), f'timed run {len(lat)}')
            if (len(lat) >= 5 and elapsed >= min_time_s) or len(lat) >= max_iters:
                return lat


def _result(lat: list[float], batch_size: int, macs: int, peak: float, peak_mem: int, stamp: dict) -> BenchResult:
    xs = sorted(lat)
    med = statistics.median(xs)
    thr = batch_size / med
    achieved = macs * thr
    return BenchResult(
        throughput=thr,
        latency_ms_median=med * 1e3,
        latency_ms_p10=_quantile(xs, 0.1) * 1e3,
        latency_ms_p90=_quantile(xs, 0.9) * 1e3,
        latency_ms_p25=_quantile(xs, 0.25) * 1e3,
        latency_ms_p75=_quantile(xs, 0.75) * 1e3,
        latency_ms_mean=statistics.fmean(xs) * 1e3,
        iters=len(lat),
        peak_mem_bytes=peak_mem,
        macs_per_image=macs,
        achieved_macs_per_s=achieved,
        matmul_peak_macs_per_s=peak,
        peak_fraction=achieved / peak,
        stamp=stamp,
        latencies_ms=[v * 1e3 for v in lat],
    )


def _cpu_capability() -> str | None:
    try:
        import torch

        return torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001
        return None


def busy_note(stamp: dict) -> str | None:
    """'busy CPU: load 3.1 on 2 cores' when the load average around a measurement exceeded the core count (other
    work shared the CPU: the figure is low and noisy), else None. The Measure tab and `explorer bench` say it."""
    cores = stamp.get('cpu_count') or 0
    loads = [v[0] for v in (stamp.get('loadavg_before'), stamp.get('loadavg_after')) if v]
    if cores and loads and max(loads) > cores:
        return f'busy CPU: load {max(loads):.1f} on {cores} cores, so this figure is low and noisy'
    return None
