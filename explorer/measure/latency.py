"""Predicted latency of a spec on this machine, from a per-component model calibrated by measurement.

MACs do not predict speed: pooling, norms, attention scores and small layers cost time that MACs hide, and how
much depends on the device. `calibrate` measures random designs that span the space (stages, mixers, widths,
resolutions), fits a non-negative linear model on kernel-level features computed from the spec alone
(`features`: fixed per-block and per-call overheads, MACs by kind of kernel, elements moved by element-wise
work, attention scores, pooling windows, calls split across the thread pool), scaled per prediction by the fit's
residuals on the calibration designs most alike (`LatencyModel.local_factor`), and saves it as JSON, one file
per device fingerprint (processor, threads, torch version, dtype, device, batch size) under `latency_dir()`.
`predict_latency(spec)` loads the file for this machine (cached in memory) and answers in about 0.2 ms: no
model is built and no torch is imported (`explorer.measure.analytic` is torch-free; the torch version is read
from package metadata).

Rules (also in each saved model's `measure`):
- All designs are built and warmed up, then timed in interleaved rounds: every design once per round, in a fresh
  random order each round (seeded). A design's turn is the median of back-to-back forward calls lasting
  ~20 ms (one call when it is longer), under `torch.inference_mode()`, timed with `time.perf_counter` (CUDA:
  CUDA events, `explorer.measure.speed.time_steps`). Threads are fixed for the whole run.
- On Linux with glibc, host memory is reused between calls while measuring (`reused_memory`): the steady state
  of a process that runs one model over and over, not glibc's default of a fresh mmap (page faults) for every
  tensor of 32 MiB or more, which made large-batch designs up to 2.5x slower and their timings unstable.
- The machine's own speed drifts: on a shared host whole stretches of seconds run 10-30% slower for every design
  timed in them. With 20 designs or more, each turn is divided by the speed at its time, read from the other
  designs' turns just before and after it (`drift_corrected`); the fresh order each round is what tells a slow
  stretch from a slow group of designs (with the order only rotated, neighbours in time stayed neighbours).
- A design's latency is the mean of the faster half of its *quiet* turns: those during which tasks waited for
  a CPU less than 5% of the time (Linux pressure stall information, /proc/pressure/cpu). A shared CPU only adds
  time, hence the faster half; the fastest turn alone was a noisier figure (benchmarks/README.md, issue 16: 3-20
  points fewer unseen designs within +-10% on three quiet sets). Designs without two quiet turns within 3% of each
  other get up to as many rounds again.
- The fit minimises the squared *relative* error (each design weighted by 1 / its latency) with every
  coefficient >= 0 (Lawson-Hanson NNLS in numpy), so each coefficient is a cost per unit of one component.
- The baseline is latency proportional to MACs: one scale factor fitted on the same designs, same objective.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from explorer.core.files import atomic_write
from explorer.core.registry import MIXERS
from explorer.core.spec import ArchSpec, SpecError, is_finite_number
from explorer.measure.analytic import MIXER_COSTS, analytic_cost

FORMAT = 'metaformer-explorer/latency-v1'
ENV_DIR = 'EXPLORER_LATENCY_DIR'
# dtype names the user may give -> the canonical name in a fingerprint, and explorer.measure.speed's name
DTYPE_NAMES = {
    'float32': 'float32',
    'fp32': 'float32',
    'bfloat16': 'bfloat16',
    'bf16': 'bfloat16',
    'float16': 'float16',
    'fp16': 'float16',
}
SPEED_DTYPE = {'float32': 'fp32', 'bfloat16': 'bf16', 'float16': 'fp16'}
TURN_S = 0.02  # each design's turn in a round lasts about this long (several calls when one is shorter)
SETTLED = 0.03  # a design's latency is settled when its two fastest quiet turns are within 3%
QUIET = 0.05  # a turn is quiet when tasks waited for a CPU during at most 5% of it (Linux PSI)
DRIFT_NEIGHBOURS = 10  # the machine's speed at a turn: other designs' turns this many on each side of it in time
DRIFT_MIN_DESIGNS = 20  # fewer designs in one measurement: too few neighbours to tell drift from the design


MAX_COEF = 60.0  # seconds per unit of any feature: the largest unit is a whole call ('calls')
MAX_MODEL_BYTES = 4 << 20  # a saved latency model: a few kB of coefficients, ~100 kB of local table (400 designs)
# The local correction (LatencyModel.local): a prediction is multiplied by exp(LOCAL_WEIGHT x the mean log residual
# of the fit on the LOCAL_NEIGHBOURS calibration designs whose time splits across the features (shares) are
# nearest (L1). Kernel quirks the features miss (one avg_pool2d shape, one GEMM shape) leave residuals that similar
# designs share. Cross-validated (fit 400, score 30 others, 40 splits) on four measured 430-design sets, batch 1 and
# 32: within +-10% 88.2 -> 91.1%, 86.9 -> 88.6%, 86.5 -> 88.0%, 84.6 -> 85.8% (benchmarks/README.md)
LOCAL_NEIGHBOURS = 7
LOCAL_WEIGHT = 0.75
MAX_LOCAL_RESIDUAL = 2.0  # |log(measured / fitted)| of a calibration design: e^2 = 7.4x; more is a damaged file
MAX_LOCAL_DESIGNS = 10_000


class LatencyError(ValueError):
    """A latency request that cannot be honoured (unknown dtype or device, bad counts)."""


def latency_dir() -> Path:
    """Where calibrations are saved: $EXPLORER_LATENCY_DIR, else ~/.cache/metaformer-explorer/latency."""
    env = os.environ.get(ENV_DIR)
    return Path(env) if env else Path.home() / '.cache' / 'metaformer-explorer' / 'latency'


def canonical_dtype(dtype: str) -> str:
    if not isinstance(dtype, str) or dtype not in DTYPE_NAMES:
        raise LatencyError(f'dtype {dtype!r} is not allowed; choose float32, bfloat16 or float16')
    return DTYPE_NAMES[dtype]


def canonical_device(device: str) -> str:
    from explorer.measure.speed import cuda_index  # no torch at import

    if device in ('cpu', 'cuda') or cuda_index(device) is not None:
        return device
    raise LatencyError(f'device {device!r} is not allowed; choose cpu or cuda[:N]')


# ---- fingerprint ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fingerprint:
    """What a latency model is valid for. `key()` (a hash) names its file, so no path is built from input."""

    device: str  # 'cpu' or 'cuda[:N]'
    device_name: str  # processor model name or GPU name
    threads: int  # torch intra-op threads (CPU); 0 on CUDA, where it does not matter
    torch: str  # torch version (package metadata)
    dtype: str  # float32 | bfloat16 | float16
    batch_size: int

    def key(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def file_name(self) -> str:
        return f'latency-{self.key()}.json'

    def label(self) -> str:
        """'<processor> (cpu, 2 threads, torch 2.14.1, float32, batch 1)'"""
        threads = f', {self.threads} threads' if self.device == 'cpu' else ''
        return f'{self.device_name} ({self.device}{threads}, torch {self.torch}, {self.dtype}, batch {self.batch_size})'


@functools.lru_cache(maxsize=1)
def _torch_version() -> str:
    """torch's version from its package metadata (importing torch takes seconds), without a local tag."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version('torch').split('+')[0]
    except PackageNotFoundError:
        return 'none'


@functools.lru_cache(maxsize=1)
def _cpu_name() -> str:
    """The processor as a fingerprint names it; with ATen's kernel level when ATEN_CPU_CAPABILITY sets it (other
    kernels, other speeds: AVX512 vs DEFAULT measured 2.08 vs 2.38 ms for one design)."""
    from explorer.measure.speed import cpu_name

    capability = os.environ.get('ATEN_CPU_CAPABILITY', '').strip()
    return cpu_name() + (f', ATen {capability}' if capability else '')


def current_threads() -> int:
    """torch's intra-op thread count, without importing torch when it is not loaded yet (the composer's latency
    card, before the server has imported torch in the background): torch's own default, `default_threads`."""
    get = getattr(sys.modules.get('torch'), 'get_num_threads', None)  # None while another thread imports torch
    if get is not None:
        return get()
    return default_threads()


def default_threads() -> int:
    """The intra-op threads torch starts with: MKL_NUM_THREADS, else OMP_NUM_THREADS, else one per physical
    core (a hyper-threaded laptop's 8 CPUs are 4 cores: 4 threads). Counting CPUs instead made a calibration
    saved by `explorer calibrate` (torch loaded: 4) read as "not calibrated" in the app until torch loaded (8)."""
    for var in ('MKL_NUM_THREADS', 'OMP_NUM_THREADS'):
        env = os.environ.get(var, '')
        if env.isdigit() and int(env) > 0:
            return int(env)
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        topo = Path(f'/sys/devices/system/cpu/cpu{cpu}/topology')
        try:
            cores.add(tuple((topo / f).read_text().strip() for f in ('physical_package_id', 'core_id')))
        except OSError:  # no topology here: count CPUs
            return len(cpus)
    return len(cores) or len(cpus)


def fingerprint(
    device: str = 'cpu', dtype: str = 'float32', batch_size: int = 1, threads: int | None = None
) -> Fingerprint:
    """This machine's fingerprint for `device` (CUDA: imports torch for the GPU's name)."""
    device, dtype = canonical_device(device), canonical_dtype(dtype)
    if device == 'cpu':
        name, threads = _cpu_name(), threads or current_threads()
    else:
        import torch

        if not torch.cuda.is_available():
            raise LatencyError(f'device {device!r}: no CUDA GPU is available here')
        count = torch.cuda.device_count()
        index = torch.cuda.current_device() if device == 'cuda' else int(device[5:])
        if index >= count:  # torch asserts 'Invalid device id': a traceback
            raise LatencyError(f'device {device!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}')
        device = f'cuda:{index}'  # 'cuda' and 'cuda:0' are one GPU: one calibration
        name, threads = torch.cuda.get_device_name(device), 0
    return Fingerprint(device, name, int(threads), _torch_version(), dtype, int(batch_size))


# ---- features -------------------------------------------------------------------------------------------------
NORM_KINDS = ('layernorm_nobias', 'layernorm', 'mln', 'mln_nobias', 'batchnorm', 'affine')
ACT_KINDS = ('gelu', 'relu', 'silu', 'squared_relu', 'star_relu')
# Memory sweeps (read + write of the tensor) of one call, as the eager kernels run them: StarReLU is relu, pow,
# mul, add; a channel LayerNorm on NCHW permutes to a contiguous copy first; GroupNorm on tokens transposes twice.
ACT_PASSES = {'gelu': 1, 'relu': 1, 'silu': 1, 'squared_relu': 2, 'star_relu': 4}
NORM_PASSES = {'layernorm_nobias': 3, 'layernorm': 3, 'mln': 2, 'mln_nobias': 2, 'batchnorm': 1, 'affine': 2}
NORM_TOKEN_PASSES = {'layernorm_nobias': 2, 'layernorm': 2, 'mln': 4, 'mln_nobias': 4, 'batchnorm': 3, 'affine': 2}
# Every sweep (a kernel's output written, element-wise work) also counts in sweeps.<i> by the tensor's size (bytes,
# one call): below 128 KiB (32768 fp32 elements, torch's grain size: one thread), then up to 1 MiB and 4 MiB
# (caches), 32 MiB, and above (glibc serves such allocations with fresh pages from mmap: page faults every call)
SWEEP_BYTES = (1 << 17, 1 << 20, 1 << 22, 1 << 25)
# torch's at::internal::GRAIN_SIZE: an element-wise loop over at least this many elements runs on all intra-op
# threads, and each such call pays a fork and join of the thread pool (`parallel_calls`)
GRAIN = 32768
# GEMM kernels work on channels in whole vector registers (AVX-512: 64 bytes, 16 fp32): a layer of 24 channels
# costs about what one of 32 does. `macs.pad` counts the MACs of that padding (channel-mixing layers only)
VECTOR_BYTES = 64


def feature_names() -> tuple[str, ...]:
    """The features, with every mixer registered now (a mixer declared after import has its own)."""
    return (
        'calls',
        'downsamples',
        'head.mlp',
        'head.linear',
        *(f'blocks.{m}' for m in MIXERS),
        *(f'norms.{k}' for k in NORM_KINDS),
        *(f'acts.{k}' for k in ACT_KINDS),
        'scales',
        'weights',
        'macs.conv1x1',
        'macs.conv1x1_nchw',
        'elems.conv1x1_nchw',
        'macs.linear',
        'macs.token',
        'macs.depthwise',
        'macs.depthwise_nchw',
        'depthwise_fallback',
        'macs.stem',
        'macs.conv',
        'macs.pad',
        'macs.pad_heads',
        *(f'elems.mixer.{m}' for m in MIXERS),
        *(f'elems.norm.{k}' for k in NORM_KINDS),
        'elems.norm_tokens',
        'rows.layernorm',
        *(f'elems.act.{k}' for k in ACT_KINDS),
        'elems.residual',
        'elems.residual_nchw',
        'elems.mixed_layout',
        'elems.scores',
        'elems.window',
        'elems.window_nchw',
        'elems.window_rows',
        'elems.window_rows_nchw',
        'elems.input',
        *(f'sweeps.{i}' for i in range(len(SWEEP_BYTES) + 1)),
        'parallel_calls',
    )


class _Features:
    """Accumulates one call's features: `count` for fixed overheads, `work` for work that scales with the batch."""

    def __init__(self, batch: int, elem_bytes: int):
        self.f = dict.fromkeys(feature_names(), 0.0)
        self.batch, self.elem_bytes = batch, elem_bytes

    def count(self, key: str, n: float = 1) -> None:
        self.f[key] += n

    def work(self, key: str, per_image: float, times: float = 1, passes: float = 0) -> None:
        """`per_image` units (MACs, or elements of one tensor) done `times` times; `passes`: memory sweeps over
        that tensor each time, which also count in sweeps.<i>, i the tensor's size class (SWEEP_BYTES)."""
        e = self.batch * float(per_image)
        self.f[key] += e * times
        if passes:
            self.sweep(per_image, times * passes)

    def padding(self, tokens: int, c_in: int, c_out: int, times: float = 1) -> None:
        """A channel-mixing layer (c_in -> c_out on `tokens` tokens, `times` times): the MACs its GEMM spends on
        channels padded up to whole vector registers (`macs.pad`)."""
        lanes = max(1, VECTOR_BYTES // self.elem_bytes)
        padded = -(-c_in // lanes) * lanes * -(-c_out // lanes) * lanes
        self.f['macs.pad'] += self.batch * tokens * (padded - c_in * c_out) * times

    def sweep(self, per_image: float, times: float = 1) -> None:
        """`times` memory sweeps over a tensor of `per_image` elements per image, in its size class."""
        e = self.batch * float(per_image)
        self.f[f'sweeps.{sum(e * self.elem_bytes >= limit for limit in SWEEP_BYTES)}'] += e * times
        if e >= GRAIN:
            self.f['parallel_calls'] += times


LAYERNORMS = ('layernorm', 'layernorm_nobias', 'layernorm_channel')
# norms that run the same kernels as another (layernorm_channel is timm's channel LayerNorm with eps 1e-5): they
# share its features, so a calibration covers every norm a spec may name (explorer.core.spec.NORMS)
SAME_KERNELS = {'layernorm_channel': 'layernorm'}


def channels_last(spec: ArchSpec) -> bool:
    """Whether the convolutions of NCHW stages see channels-last tensors: timm's LayerNorm2d (as a block norm or
    after the stem) returns a permuted, channels-last view, and the convolutions keep that layout; with other
    norms everywhere they run on contiguous NCHW, where oneDNN's 1x1 and depthwise kernels are several times
    slower."""
    return spec.norm in LAYERNORMS or spec.downsample_norm in LAYERNORMS


def _mixer_work(acc: _Features, spec: ArchSpec, i: int, c: int, h: int, w: int, d: int) -> None:
    """Stage i's token mixers (d blocks): MACs by kernel, element-wise work, and the mixer's own quirks."""
    st = spec.stages[i]
    args = {**MIXERS[st.mixer].defaults(), **st.mixer_args}
    n, m = h * w, st.mixer
    macs = MIXER_COSTS[m](c, h, w, args).macs
    conv1x1 = 'macs.conv1x1' if channels_last(spec) else 'macs.conv1x1_nchw'
    key = f'elems.mixer.{m}'
    if m == 'attention':
        heads = max(1, c // args['head_dim'])
        adim = heads * args['head_dim']
        token = 2 * heads * n * n * args['head_dim']
        acc.work('elems.scores', heads * n * n, d, passes=2)
        acc.work('macs.token', token, d)
        # q @ k^T and attn @ v run over head_dim in whole vector registers too: 8 fp32 channels cost what 16 do
        lanes = max(1, VECTOR_BYTES // acc.elem_bytes)
        acc.work('macs.pad_heads', 2 * heads * n * n * (-(-args['head_dim'] // lanes) * lanes - args['head_dim']), d)
        acc.work(key, adim * n, d, passes=6)  # q, k, v, their permuted copy, the context, its transpose
        acc.work('macs.linear', macs - token, d)
        acc.padding(n, c, 3 * adim, d)
        acc.padding(n, adim, c, d)
        acc.sweep(c * n, d)  # the projection's output
    elif m == 'pooling':
        window = 'elems.window' if channels_last(spec) else 'elems.window_nchw'  # other avg_pool2d kernels
        acc.work(window, c * n * args['pool_size'] ** 2, d)
        rows = 'elems.window_rows' if channels_last(spec) else 'elems.window_rows_nchw'
        acc.work(rows, c * n * args['pool_size'], d)
        acc.work(key, c * n, d, passes=2)  # pool, subtract
    elif m == 'sepconv':
        med = int(args['expansion_ratio'] * c)
        dw = med * n * args['kernel_size'] ** 2
        acc.work('macs.depthwise' if channels_last(spec) else 'macs.depthwise_nchw', dw, d)
        # padding past the input, in NCHW (a 1x1 grid reads as NCHW too): oneDNN runs a GEMM per channel
        if args['kernel_size'] // 2 > min(h, w) and (h * w == 1 or not channels_last(spec)):
            acc.work('depthwise_fallback', med, d)
        acc.work(key, med * n, d, passes=6)  # pointwise out, StarReLU (4), depthwise out
        acc.work(conv1x1, macs - dw, d)
        acc.padding(n, c, med, d)
        acc.padding(n, med, c, d)
        acc.sweep(c * n, d)  # the second pointwise conv's output
    elif m in ('random', 'spatial_mlp', 'cross_patch'):
        acc.work('macs.token', macs, d)
        acc.work(key, c * n, d, passes=2)  # the matmul's output, its reshaped copy
        if m == 'spatial_mlp':
            hidden = args.get('hidden_dim') or max(1, int(args['hidden_ratio'] * c))
            acc.sweep(c * hidden, 2 * d)  # the token MLP's hidden layer and its GELU
    elif m == 'cycle':
        acc.work(conv1x1, macs, d)
        acc.work(key, c * n, d, passes=12)  # 2 pads and gathers, 3 branches, their sum, 3 weights, the sum
    else:
        acc.work(key, c * n, d)


def features(spec: ArchSpec, batch_size: int = 1, elem_bytes: int = 4) -> dict[str, float]:
    """Kernel-level features of one forward call of `batch_size` images, from the spec alone (no model built).

    Fixed overheads (counts, not scaled by the batch): `calls`, `downsamples`, `head.<kind>`, `blocks.<mixer>`
    (the mixer's kernels and the residual adds), `norms.<kind>` and `acts.<kind>` (calls), `scales` (layer and
    res scales), `weights` (parameters, read once per call).
    MACs x batch, explorer.measure.analytic's counts split by kernel: `macs.conv1x1` (MLPs and channel mixing
    of NCHW stages in channels-last memory; `_nchw`: in contiguous NCHW, see `channels_last`), `macs.linear`
    (the same in attention stages), `macs.token` (matmuls across tokens: q@k^T and attn@v, RandFormer,
    MLP-Mixer, ResMLP), `macs.depthwise` (ConvFormer; `_nchw` as above), `depthwise_fallback` (channels of an
    NCHW or 1x1-grid depthwise conv whose padding is larger than its input: a GEMM per channel), `macs.stem`,
    `macs.conv` (downsampling, head); `macs.pad`: MACs on the channels that the MLPs', ConvFormer's pointwise
    and attention's projection GEMMs pad up to whole vector registers (VECTOR_BYTES); `macs.pad_heads`: the same
    for attention's token matmuls over head_dim (head_dim 8 in fp32: as many MACs again; batch 32, cross-validated
    on two sets of 500 designs on a Zen 5 CPU: 78.3% -> 81.3% and 71.8% -> 75.5% within +-10%, batch 1 unchanged).
    Rows x batch: `rows.layernorm`, the tokens a LayerNorm normalises one by one over the channels (a fixed
    cost per token: 16- and 24-channel stages on large grids ran 3% slower than the elements said; batch 32,
    cross-validated on four sets of 430 designs on a Xeon with AMX: 90.2-93.1% -> 92.0-95.4% within +-10%,
    batch 1 unchanged).
    Elements x batch: `elems.mixer.<mixer>`, `elems.norm.<kind>` (NCHW stages) and `elems.norm_tokens`,
    `elems.act.<kind>` (the MLP's hidden layer), `elems.residual` (adds, scales; `_nchw` as above),
    `elems.mixed_layout` (adds of an NCHW stream and a channels-last branch), `elems.scores` (attention's
    heads x N^2), `elems.window` (pooling: C x N x window; `_nchw` as above), `elems.window_rows` (C x N x the
    window's side: avg_pool2d's loop over window rows, so a 7x7 window costs less than 49/9 of a 3x3 one; `_nchw`
    as above; batch 32, cross-validated on two sets of 500 designs: 81.3% -> 81.4% and 75.5% -> 77.4% within
    +-10%, NCHW pooling designs 63% -> 89%), `elems.input`; `sweeps.<i>`: the
    memory sweeps of all of these (outputs written, element-wise passes) by the tensor's size (SWEEP_BYTES);
    `parallel_calls`: how many of those sweeps cover at least GRAIN elements, so that torch runs them on every
    intra-op thread (a fixed cost each: at batch 1 this feature took designs within +-10% from 85-87% to 89-90%
    in cross-validation on 500 measured designs).
    """
    acc = _Features(batch_size, elem_bytes)
    cost = analytic_cost(spec)
    norm = SAME_KERNELS.get(spec.norm, spec.norm)
    down_norm = SAME_KERNELS.get(spec.downsample_norm, spec.downsample_norm)
    grids = spec.grid_sizes()
    acc.count('calls')
    acc.count(f'head.{spec.head}')
    acc.count('weights', cost.params)
    acc.work('elems.input', spec.in_chans * spec.img_size**2, passes=1)
    comps = cost.components
    acc.work('macs.stem', comps['stem']['macs'])
    acc.sweep(spec.stages[0].dim * grids[0][0] * grids[0][1])
    acc.work('macs.conv', comps['downsample']['macs'] + comps['head']['macs'])
    layer_scales, res_scales = spec.per_stage(spec.layer_scale_init), spec.per_stage(spec.res_scale_init)
    for i, (st, sc) in enumerate(zip(spec.stages, cost.stages)):
        c, h, w = sc.out_shape
        n, d, tokens = h * w, st.depth, st.mixer == 'attention'
        if i and st.downsample:
            acc.count('downsamples')
            acc.sweep(c * n)  # the downsampling conv's output
        if down_norm and (i == 0 or st.downsample):  # after the stem, before a downsampling conv
            k = down_norm
            acc.count(f'norms.{k}')
            rows = grids[i - 1][0] * grids[i - 1][1] if i else n  # the tokens it normalises
            acc.work(f'elems.norm.{k}', (spec.stages[i - 1].dim if i else c) * rows, passes=NORM_PASSES[k])
            if k in LAYERNORMS:
                acc.work('rows.layernorm', rows)
        acc.count(f'blocks.{st.mixer}', d)
        acc.count(f'norms.{norm}', 2 * d)
        acc.count(f'acts.{spec.mlp_act}', d)
        n_scales = 2 * ((layer_scales[i] is not None) + (res_scales[i] is not None))
        acc.count('scales', n_scales * d)
        if norm in LAYERNORMS:
            acc.work('rows.layernorm', n, 2 * d)  # a reduction over the channels per token: narrow ones cost
        if tokens:
            acc.work('elems.norm_tokens', c * n, 2 * d, NORM_TOKEN_PASSES[norm])
        else:
            acc.work(f'elems.norm.{norm}', c * n, 2 * d, NORM_PASSES[norm])
        # the MLP: its first layer's output and the activation's sweeps over it; its second layer's output, the
        # residual adds and the scales over the block's width
        hidden = int(st.mlp_ratio * c)
        acc.work(f'elems.act.{spec.mlp_act}', hidden * n, d, 1 + ACT_PASSES[spec.mlp_act])
        residual = 'elems.residual' if tokens or channels_last(spec) else 'elems.residual_nchw'
        acc.work(residual, c * n, (2 + n_scales) * d, passes=1)
        acc.sweep(c * n, d)
        acc.padding(n, c, hidden, d)
        acc.padding(n, hidden, c, d)
        if tokens:
            acc.work('macs.linear', sc.mlp_macs)
        elif channels_last(spec):
            acc.work('macs.conv1x1', sc.mlp_macs)
        else:  # NCHW 1x1 convs: their inputs and outputs cost beside the MACs
            acc.work('macs.conv1x1_nchw', sc.mlp_macs)
            acc.work('elems.conv1x1_nchw', (c + hidden) * n, 2 * d)
        if not tokens and norm in LAYERNORMS and down_norm not in LAYERNORMS:
            acc.work('elems.mixed_layout', c * n, 2 * d)  # NCHW residual stream + channels-last branch
        _mixer_work(acc, spec, i, c, h, w, d)
    return acc.f


def macs_per_call(spec: ArchSpec, batch_size: int = 1) -> int:
    return analytic_cost(spec).macs * batch_size


# ---- the model -----------------------------------------------------------------------------------------------
@dataclass
class LatencyModel:
    """latency (s) = sum over features of coef[name] x feature, every coefficient >= 0."""

    fingerprint: dict  # Fingerprint as a dict
    coef: dict  # feature name -> seconds per unit
    baseline_s_per_mac: float  # the MACs-proportional baseline fitted on the same designs
    n_designs: int = 0
    evaluation: dict | None = None  # holdout accuracy of the model and of the baseline, if one was measured
    measure: dict = field(default_factory=dict)  # how the designs were measured (rounds, timer, seconds taken)
    created: str = ''
    format: str = FORMAT
    # the local correction's table, None for none (files from before it): {'neighbours': k, 'weight': w,
    # 'features': names, 'shares': per design, each feature's share of its fitted time, 'residuals': per design,
    # log(measured / fitted)}
    local: dict | None = None

    def check(self, mixers) -> None:
        """Refuse mixers declared after this calibration: every feature of theirs would count as free."""
        newer = sorted({m for m in mixers if f'blocks.{m}' not in self.coef})
        if newer:
            raise LatencyError(
                f'mixer {", ".join(map(repr, newer))} is newer than the calibration for {self.label()}: calibrate '
                'again (explorer calibrate) to predict designs that use it'
            )

    def predict(self, spec: ArchSpec) -> float:
        """Predicted seconds of one forward call of the fingerprint's batch."""
        return sum(self.components(spec).values())

    def components(self, spec: ArchSpec) -> dict[str, float]:
        """Predicted seconds per feature (they sum to `predict`), nonzero ones only: the fitted coefficients'
        split, each part scaled by the local correction (`local_factor`)."""
        self.check(st.mixer for st in spec.stages)
        f = features(spec, self.fingerprint['batch_size'])
        out: dict[str, float] = {}
        for k, v in f.items():
            t = self.coef.get(k, 0.0) * v
            if t > 0:
                out[k] = t
        factor = self.local_factor(out)
        return {k: t * factor for k, t in out.items()} if factor != 1.0 else out

    @functools.cached_property
    def _local_table(self):
        import numpy as np

        loc = self.local
        return loc['features'], np.asarray(loc['shares'], dtype=float), np.asarray(loc['residuals'], dtype=float)

    def local_factor(self, fitted: dict[str, float]) -> float:
        """exp(weight x the mean log residual of the `neighbours` calibration designs whose shares are nearest
        (L1, ties to the earlier design)) for a design whose fitted seconds per feature are `fitted`; 1.0 without
        a local table."""
        total = sum(fitted.values())
        if not self.local or total <= 0:
            return 1.0
        import numpy as np

        names, shares, residuals = self._local_table
        mine = np.array([fitted.get(k, 0.0) / total for k in names])
        dist = np.abs(shares - mine).sum(axis=1)
        nearest = np.argsort(dist, kind='stable')[: self.local['neighbours']]
        return math.exp(self.local['weight'] * float(residuals[nearest].mean()))

    def baseline(self, spec: ArchSpec) -> float:
        return self.baseline_s_per_mac * macs_per_call(spec, self.fingerprint['batch_size'])

    def label(self) -> str:
        return Fingerprint(**self.fingerprint).label()

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LatencyModel:
        if not isinstance(d, dict) or d.get('format') != FORMAT:
            raise ValueError(f'not a latency model (format {d.get("format") if isinstance(d, dict) else None!r})')
        fp = Fingerprint(**d['fingerprint'])  # raises TypeError on missing or unknown keys
        kinds = {f.name: f.type for f in fields(Fingerprint)}
        for k, v in asdict(fp).items():  # exact types: batch_size true read as 1, and the status said "batch True"
            if type(v) is not {'str': str, 'int': int}[kinds[k]]:
                raise ValueError(f'a latency model has a fingerprint {k} that is not a {kinds[k]}')
        coef = {str(k): float(v) for k, v in d['coef'].items()}
        if any(not math.isfinite(v) or not 0 <= v <= MAX_COEF for v in coef.values()):
            raise ValueError(f'a latency model has a coefficient that is negative, non-finite or over {MAX_COEF} s')
        baseline = float(d['baseline_s_per_mac'])
        if not math.isfinite(baseline) or baseline <= 0:
            raise ValueError('a latency model has a baseline that is not a positive number')
        evaluation, measure = d.get('evaluation'), d.get('measure') or {}
        if evaluation is not None and not (
            isinstance(evaluation, dict) and all(_scores(evaluation.get(k)) for k in ('model', 'baseline'))
        ):
            raise ValueError("a latency model's evaluation is not the scores of its model and its baseline")
        top = measure.get('max_macs') if isinstance(measure, dict) else None
        if not isinstance(measure, dict) or (top is not None and not (is_finite_number(top) and top > 0)):
            raise ValueError("a latency model's measuring conditions are unreadable")
        return cls(
            fingerprint=asdict(fp),
            coef=coef,
            baseline_s_per_mac=baseline,
            n_designs=int(d.get('n_designs', 0)),
            evaluation=evaluation,
            measure=dict(measure),
            created=_created(d.get('created', '')),
            local=_local(d.get('local'), coef),
        )


def _local(d, coef: dict) -> dict | None:
    """A saved local table, checked: every size and number in range (see LatencyModel.local), or ValueError."""
    if d is None:
        return None
    bad = "a latency model's local table "
    if not isinstance(d, dict) or set(d) != {'neighbours', 'weight', 'features', 'shares', 'residuals'}:
        raise ValueError(bad + 'does not have exactly neighbours, weight, features, shares and residuals')
    k, w, names, shares, residuals = (d[key] for key in ('neighbours', 'weight', 'features', 'shares', 'residuals'))
    if type(k) is not int or not 1 <= k <= 100 or not (is_finite_number(w) and 0 <= w <= 1):
        raise ValueError(bad + 'has neighbours outside 1-100 or a weight outside 0-1')
    if not isinstance(names, list) or len(set(names)) != len(names) or any(n not in coef for n in names):
        raise ValueError(bad + 'names features that are not its coefficients, or one twice')
    if not (isinstance(shares, list) and isinstance(residuals, list) and 1 <= len(shares) == len(residuals)):
        raise ValueError(bad + 'has no designs, or not one residual per design')
    if len(shares) > MAX_LOCAL_DESIGNS:
        raise ValueError(bad + f'has over {MAX_LOCAL_DESIGNS:,} designs')
    for row in shares:
        if not (isinstance(row, list) and len(row) == len(names)):
            raise ValueError(bad + 'has a design whose shares are not one per feature')
        if not all(is_finite_number(v) and 0 <= v <= 1 for v in row):
            raise ValueError(bad + 'has a share that is not a number in [0, 1]')
    if not all(is_finite_number(r) and abs(r) <= MAX_LOCAL_RESIDUAL for r in residuals):
        raise ValueError(bad + f'has a residual that is not a number within +-{MAX_LOCAL_RESIDUAL}')
    return {'neighbours': k, 'weight': float(w), 'features': list(names), 'shares': shares, 'residuals': residuals}


def _created(value) -> str:
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError("a latency model's creation time is not a short string")
    return value


def _scores(d) -> bool:
    """What an evaluation reports for the model or the baseline: numbers in their ranges for every figure shown
    (a within of 1e300 printed a 300-digit percentage, an n of -7 "On -7 designs")."""
    keys = ('n', 'within', 'spearman', 'median_abs_pct')
    if not (isinstance(d, dict) and all(is_finite_number(d.get(k)) for k in keys)):
        return False
    return (
        d['n'] == int(d['n']) and 1 <= d['n'] <= 1e6
        and 0 <= d['within'] <= 1
        and -1 <= d['spearman'] <= 1
        and 0 <= d['median_abs_pct'] <= 1e6
    )  # fmt: skip


# ---- save, load, predict ---------------------------------------------------------------------------------
_LOADED: dict = {}  # path -> (mtime_ns, LatencyModel | None)


def model_path(fp: Fingerprint, folder: str | Path | None = None) -> Path:
    return Path(folder or latency_dir()) / fp.file_name()


def save_model(model: LatencyModel, folder: str | Path | None = None) -> Path:
    """Write the model as JSON (atomically) under `folder` (default `latency_dir()`); returns the path."""
    path = model_path(Fingerprint(**model.fingerprint), folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(model.to_dict(), separators=(',', ':')) + '\n'  # the local table: ~100 kB indented 300
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding='utf-8'))
    _LOADED.pop(str(path), None)
    return path


def load_model(fp: Fingerprint, folder: str | Path | None = None) -> LatencyModel | None:
    """The saved model for `fp`, or None when there is none (or it is unreadable). Cached per file and mtime."""
    path = model_path(fp, folder)
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return None
    hit = _LOADED.get(str(path))
    if hit is not None and hit[0] == mtime:
        return hit[1]
    try:
        if path.stat().st_size > MAX_MODEL_BYTES:  # ours are a few kB: read nothing larger
            raise ValueError(f'a latency model file over {MAX_MODEL_BYTES:,} bytes')
        model = LatencyModel.from_dict(json.loads(path.read_text(encoding='utf-8')))
        if model.fingerprint != asdict(fp):
            model = None
    except (OSError, ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError):
        model = None  # a damaged or tampered file counts as no calibration (`explorer calibrate` writes a new one)
    _LOADED[str(path)] = (mtime, model)
    return model


@dataclass
class Prediction:
    """Predicted latency of one forward call (inference) of `batch_size` images. seconds is None and
    calibrated_on None when this device has no calibration (the UI then says "not calibrated for this device")."""

    seconds: float | None
    calibrated_on: str | None  # the fingerprint's label, e.g. 'Intel(R) Xeon(R) ... (cpu, 2 threads, ...)'
    batch_size: int
    dtype: str
    device: str
    components: dict = field(default_factory=dict)  # feature -> predicted seconds
    holdout: dict | None = None  # the calibration's accuracy on designs it never saw
    fitted_max_macs: float | None = None  # the largest calibration design's MACs an image: beyond it, extrapolated
    macs: int | None = None  # the design's MACs an image
    threads: int = 0  # the fingerprint's (CPU)

    @property
    def extrapolated(self) -> float | None:
        """How many times the largest calibration design's MACs this design has, when it has more: the model
        reads designs past the calibration less well (large presets 9-27% off, benchmarks/README.md)."""
        if self.seconds is None or not self.macs or not self.fitted_max_macs or self.macs <= self.fitted_max_macs:
            return None
        return self.macs / self.fitted_max_macs

    def calibrate_command(self) -> str:
        """The `explorer calibrate` that makes a calibration for these conditions."""
        dtype = SPEED_DTYPE.get(self.dtype, self.dtype)
        threads = f' --threads {self.threads}' if self.device == 'cpu' and self.threads else ''
        return f'explorer calibrate --device {self.device} --dtype {dtype} --batch-size {self.batch_size}{threads}'

    @property
    def ms(self) -> float | None:
        return None if self.seconds is None else self.seconds * 1e3

    def text(self) -> str:
        """'12.3 ms (batch 1, float32), calibrated on <device>' or '... not calibrated for this device'."""
        if self.seconds is None:
            threads = f', {self.threads} threads' if self.device == 'cpu' and self.threads else ''
            return (
                f'latency: not calibrated for this device ({self.device}{threads}, {self.dtype}, batch '
                f'{self.batch_size}); run `{self.calibrate_command()}`'
            )
        beyond = ''
        if self.extrapolated:
            # presets 15-190x past the default designs (120 MMACs) read 9-27% off (benchmarks/README.md); a
            # calibration of far smaller designs has measured nothing like the design asked about
            far = self.extrapolated > FAR_EXTRAPOLATION
            beyond = (
                f'; extrapolated: {self.extrapolated:.0f}x the MACs of the largest calibration design '
                f'({self.fitted_max_macs / 1e6:g} MMACs an image), '
                + (
                    'far past what it measured: it may be off several times over (calibrate with the default '
                    '--max-mmacs)'
                    if far
                    else 'it may be tens of % off'
                )
            )
        return (
            f'latency {_fmt_s(self.seconds)} (batch {self.batch_size}, {self.dtype}), '
            f'calibrated on {self.calibrated_on}{beyond}'
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d['ms'] = self.ms
        d['extrapolated'] = self.extrapolated
        d['text'] = self.text()
        return d


def _fmt_s(s: float) -> str:
    return f'{s * 1e3:.3g} ms' if s < 1 else f'{s:.3g} s'


def predict_latency(
    spec: ArchSpec | dict,
    batch_size: int = 1,
    dtype: str = 'float32',
    device: str = 'cpu',
    threads: int | None = None,
    folder: str | Path | None = None,
) -> Prediction:
    """Predicted latency of one inference call of `spec` at `batch_size` on this machine, from the calibration
    saved for this fingerprint (see `fingerprint`); no model is built and no torch imported (CPU). About
    0.2 ms once the calibration file is cached. `spec`: an ArchSpec or a spec dict (validated)."""
    if not isinstance(spec, ArchSpec):
        spec = ArchSpec.from_dict(spec)  # raises SpecError naming every bad field
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise LatencyError(f'batch size {batch_size!r} must be a positive integer')
    fp = fingerprint(device, dtype, batch_size, threads)
    model = load_model(fp, folder)
    if model is None:
        return Prediction(None, None, batch_size, fp.dtype, fp.device, threads=fp.threads)
    comps = model.components(spec)  # refuses a mixer newer than the calibration: its blocks would count as free
    top, macs = model.measure.get('max_macs'), analytic_cost(spec).macs
    return Prediction(
        sum(comps.values()), fp.label(), batch_size, fp.dtype, fp.device, comps, model.evaluation, top, macs, fp.threads
    )


# ---- designs that span the space ---------------------------------------------------------------------------
DIMS = (16, 24, 32, 48, 64, 96, 128, 160, 192, 256)
# per-image MACs and activation elements of a calibration design: keeps each call short at batch 32 on a CPU
MAX_DESIGN_MACS = 120e6
# past this many times a calibration's largest design, a prediction is no more than a guess (the largest preset,
# 23 GMACs, is 190x the default designs)
FAR_EXTRAPOLATION = 1000
MAX_DESIGN_ACTS = 6e6
# designs drawn in PoolFormer v1's NCHW layout (`channels_last` False) on top of the ~16% the norm choices give:
# NCHW kernels (avg_pool2d above all) cost several times their channels-last ones, and at 16% only 22 of 430
# designs pooled in NCHW memory; the worst-predicted unseen design of every benchmark run was one of them
NCHW_SHARE = 0.2


def random_design(rng: random.Random, max_macs: float = MAX_DESIGN_MACS, name: str = 'design') -> ArchSpec:
    """One random valid design: 1-4 stages, every mixer, depths 1-4, widths 16-256, mixer arguments, MLP ratios,
    norms, activations and heads, at an image size of 32-224 (whatever keeps it under `max_macs` per image)."""
    while True:
        n_stages = rng.choice((1, 2, 3, 3, 4, 4))
        patch = n_stages <= 2 and rng.random() < 0.5
        stem_stride = rng.choice((4, 8)) if patch else 4
        stride = stem_stride * 2 ** (n_stages - 1)
        grid0 = rng.choice((4, 6, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56))
        img = max(stride, grid0 * stem_stride // stride * stride)
        k = rng.randrange(len(DIMS) - 3)
        stages = []
        for i in range(n_stages):
            k = min(len(DIMS) - 1, k + (rng.choice((0, 1, 1, 2)) if i else 0))
            mixer = rng.choice(list(MIXERS))
            stages.append(
                {
                    'mixer': mixer,
                    'depth': rng.choice((1, 1, 2, 2, 3, 4)),
                    'dim': DIMS[k],
                    'mlp_ratio': rng.choice((1, 2, 3, 4, 4)),
                    'mixer_args': _random_args(rng, mixer, DIMS[k]),
                }
            )
        if rng.random() < NCHW_SHARE:  # PoolFormer v1's layout: no LayerNorm anywhere, convolutions on NCHW
            norm = rng.choice(('mln', 'mln', 'mln_nobias', 'batchnorm', 'affine'))
            down_norm = rng.choice((None, None, 'mln', 'batchnorm'))
        else:
            norm = rng.choice(('layernorm_nobias',) * 4 + ('layernorm', 'mln', 'mln_nobias', 'batchnorm', 'affine'))
            down_norm = rng.choice(('layernorm_nobias',) * 5 + (None, None, 'layernorm', 'mln', 'batchnorm'))
        d = {
            'name': name,
            'img_size': img,
            'num_classes': rng.choice((10, 100, 1000)),
            'mlp_act': rng.choice(('star_relu',) * 4 + ('gelu', 'relu', 'squared_relu', 'silu')),
            'norm': norm,
            'downsample_norm': down_norm,
            'head': rng.choice(('mlp', 'mlp', 'linear')),
            'stages': stages,
        }
        if patch:
            d['stem'] = {'kernel_size': stem_stride, 'stride': stem_stride, 'padding': 0}
        try:
            spec = ArchSpec.from_dict(d)
            cost = analytic_cost(spec)
        except SpecError:
            continue
        if cost.macs <= max_macs and cost.act_elements <= MAX_DESIGN_ACTS:
            return spec


def _random_args(rng: random.Random, mixer: str, dim: int) -> dict:
    if mixer == 'pooling':
        return {'pool_size': rng.choice((3, 3, 5, 7))}
    if mixer == 'sepconv':
        return {'kernel_size': rng.choice((3, 5, 7, 7)), 'expansion_ratio': rng.choice((1, 2, 2))}
    if mixer == 'attention':
        return {'head_dim': rng.choice([h for h in (8, 16, 32, 64) if dim % h == 0] or [dim])}
    if mixer == 'spatial_mlp':
        return {'hidden_ratio': rng.choice((0.25, 0.5, 1))}
    return {}


def random_designs(n: int, seed: int = 0, max_macs: float = MAX_DESIGN_MACS) -> list[ArchSpec]:
    """`n` random designs (`random_design`), reproducible from `seed`."""
    rng = random.Random(seed)
    return [random_design(rng, max_macs, name=f'design_{seed}_{i}') for i in range(n)]


# ---- measuring -------------------------------------------------------------------------------------------------
# glibc's mallopt parameters and their defaults
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
DEFAULT_MMAP_MAX = 65536
# where glibc's dynamic thresholds settle in a process that frees large tensors (DEFAULT_MMAP_THRESHOLD_MAX on
# 64-bit, and twice it): what explorer.measure.speed.ALLOCATOR_GLIBC describes
SETTLED_MMAP_THRESHOLD, SETTLED_TRIM_THRESHOLD = 32 * 2**20, 64 * 2**20
ALLOCATOR_REUSED = 'glibc: heap only (M_MMAP_MAX 0), never trimmed: memory reused between calls'


@contextlib.contextmanager
def reused_memory():
    """While measuring on Linux with glibc: serve every allocation from the heap (M_MMAP_MAX 0) and never give
    heap memory back to the OS (M_TRIM_THRESHOLD at its maximum), so each tensor's pages are faulted in once, not
    on every call: the steady state of a process that runs one model over and over, or of jemalloc/tcmalloc.

    With glibc's defaults a tensor of 32 MiB or more is a fresh mmap on every call (page faults), and smaller ones
    go back to the OS whenever the heap's top is trimmed, which depends on what else the process ran. A batch-32
    design measured 50 ms in some rounds of a calibration and 72 ms in others, 89-96 ms in a fresh process, and
    50-52 ms in a fresh process with these settings; over 500 designs, two halves of the same rounds agreed
    within 10% for 88% of the designs of 128 px and more with the defaults, 99% with these.
    Afterwards the process gets the regime its speed runs describe (ALLOCATOR_GLIBC): tensors of 32 MiB or more
    mmapped, smaller ones reused. Any mallopt turns glibc's dynamic thresholds off for good, and they froze where
    they stood: at 128 KiB in a process that had freed no large tensor yet, so after a calibration in a fresh
    server every tensor of 128 KiB or more was a fresh mmap (speed runs 2.5x slower). Elsewhere it changes
    nothing. Yields the regime's description (`allocator_regime`)."""
    from explorer.measure.speed import glibc  # no torch at import

    libc = glibc()
    if libc is None:
        yield 'default'
        return
    try:
        ok = libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
        yield ALLOCATOR_REUSED if ok else 'default'
    finally:
        libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
        libc.mallopt(M_MMAP_THRESHOLD, SETTLED_MMAP_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, SETTLED_TRIM_THRESHOLD)


def allocator_regime(device: str = 'cpu') -> str:
    """How host memory behaves while `measure_rounds` times on `device` (see `reused_memory`)."""
    from explorer.measure.speed import glibc

    return ALLOCATOR_REUSED if device == 'cpu' and glibc() is not None else 'default'


def measure_latencies(
    specs: Sequence[ArchSpec],
    device: str = 'cpu',
    batch_size: int = 1,
    dtype: str = 'float32',
    rounds: int = 9,
    threads: int | None = None,
    progress: Callable | None = None,
) -> list[float]:
    """Seconds per forward call of each spec: the mean of the faster half of its quiet turns (`estimate`)."""
    return [estimate(t) for t in measure_rounds(specs, device, batch_size, dtype, rounds, threads, progress)]


def measure_rounds(
    specs: Sequence[ArchSpec],
    device: str = 'cpu',
    batch_size: int = 1,
    dtype: str = 'float32',
    rounds: int = 9,
    threads: int | None = None,
    progress: Callable | None = None,
) -> list[list[tuple[float, float]]]:
    """Per spec, (seconds per call, contention) of each of its turns. A turn is one untimed call, then the median
    of back-to-back calls lasting about TURN_S (the untimed call puts the allocator back in the state that
    repeated calls of one model reach: right after other models ran, the first call of a batch-32 design took up
    to 2x its steady time, and a turn of one or two calls kept that in its median); contention is the share of
    the turn during which some task on this machine waited for a CPU (Linux pressure stall information,
    /proc/pressure/cpu; 0 where it is not available). All models are built and warmed up first; every round runs
    every spec once, in a fresh random order (seeded); after `rounds`, up to as many again for
    the specs that are not yet `_settled`. With `DRIFT_MIN_DESIGNS` specs or more, each turn is then divided by
    the machine's speed at its time (`drift_corrected`)."""
    import torch

    from explorer.measure.speed import check_dtype, prepare, resolve_device, time_steps

    device, sdt = resolve_device(canonical_device(device)), SPEED_DTYPE[canonical_dtype(dtype)]
    check_dtype(device, sdt)
    report = progress or (lambda frac, text='': None)
    prev = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    memory = reused_memory() if device == 'cpu' else contextlib.nullcontext()
    try:
        with memory:  # memory reused between calls
            steps, reps = [], []
            for i, spec in enumerate(specs):
                report(0.3 * i / len(specs), f'building and warming up {i + 1}/{len(specs)}')
                step = prepare(spec, device, batch_size, sdt)[0]
                time_steps(step, device, 1)  # first call: allocation, kernel selection
                est = min(time_steps(step, device, 2))
                steps.append(step)
                reps.append(max(1, min(50, round(TURN_S / max(est, 1e-6)))))
            turns: list[list[tuple[float, float, float]]] = [[] for _ in specs]  # (s, contention, start)
            shuffle = random.Random(0).shuffle
            for r in range(2 * rounds):
                order = [j for j in range(len(specs)) if r < rounds or not _settled(turns[j])]
                if not order:
                    break
                shuffle(order)  # a fresh order each round (see drift_corrected)
                every = max(1, len(order) // 20)  # about 20 steps a round: a batch-32 round takes minutes
                for n, j in enumerate(order):
                    if n % every == 0:  # the planned rounds to 95%; rounds for unsettled designs the rest
                        part = (r % rounds + n / len(order)) / rounds
                        report(
                            0.3 + 0.65 * part if r < rounds else 0.95 + 0.05 * part,
                            f'timing round {r + 1}: {n}/{len(order)} designs',
                        )
                    time_steps(steps[j], device, 1)  # untimed: the previous design's memory is reused now
                    p0, t0 = _cpu_stall_us(), time.perf_counter()
                    seconds = statistics.median(time_steps(steps[j], device, reps[j]))
                    wall, p1 = time.perf_counter() - t0, _cpu_stall_us()
                    turns[j].append((seconds, min(1.0, (p1 - p0) / 1e6 / wall) if p0 is not None else 0.0, t0))
            report(1.0, 'measured')
            if len(specs) >= DRIFT_MIN_DESIGNS:
                return drift_corrected(turns)
            return [[(t[0], t[1]) for t in ts] for ts in turns]
    finally:
        torch.set_num_threads(prev)


def _cpu_stall_us() -> int | None:
    """Microseconds some task waited for a CPU since boot (PSI 'some' total), or None without PSI."""
    try:
        with open('/proc/pressure/cpu', encoding='ascii') as f:
            return int(f.readline().rsplit('total=', 1)[1])
    except (OSError, ValueError, IndexError):
        return None


def drift_corrected(
    turns: list[list[tuple[float, float, float]]], neighbours: int = DRIFT_NEIGHBOURS, passes: int = 4
) -> list[list[tuple[float, float]]]:
    """Per spec, its turns as (seconds, contention) with each turn's seconds divided by the machine's speed at
    the time it ran. Turns come as (seconds, contention, start time). The speed is shared: on a shared host a
    whole stretch of seconds runs 10-30% slower for every design measured in it (a VM's own CPU pressure does
    not show it). Each design's level is the median of its log-times; a turn's drift is the median, over the
    `neighbours` turns of *other* designs on each side of it in time, of their log-time minus their level; the
    levels are then taken again from the corrected turns (`passes`). It needs designs timed in a fresh order
    each round (`measure_rounds`): with neighbours that stay neighbours, a slow stretch and a slow group of
    designs look alike. Measured (benchmarks/README.md, issue 16): on two 430-design sets, batch 1 and 32, the
    even and odd rounds' estimates agree within +-10% for 95% and 92% of designs, against 83% and 84% raw."""
    flat = sorted((ts[k][2], j, k) for j, ts in enumerate(turns) for k in range(len(ts)))
    owner = [j for _, j, _ in flat]
    logs = [math.log(max(turns[j][k][0], 1e-12)) for _, j, k in flat]
    drift = [0.0] * len(flat)
    for _ in range(passes):
        mine: list[list[float]] = [[] for _ in turns]
        for i, j in enumerate(owner):
            mine[j].append(logs[i] - drift[i])
        level = [statistics.median(v) if v else 0.0 for v in mine]
        off = [logs[i] - level[j] for i, j in enumerate(owner)]
        drift = []
        for i, j in enumerate(owner):
            near = [off[n] for n in range(max(0, i - neighbours), min(len(flat), i + neighbours + 1)) if owner[n] != j]
            drift.append(statistics.median(near) if near else 0.0)
    out: list[list] = [[None] * len(ts) for ts in turns]
    for i, (_, j, k) in enumerate(flat):
        out[j][k] = (turns[j][k][0] / math.exp(drift[i]), turns[j][k][1])
    return out


def _quiet(turns: list[tuple]) -> list[float]:
    """Seconds of the turns during which (almost) nothing else wanted a CPU; all of them if there is none."""
    quiet = [t[0] for t in turns if t[1] <= QUIET]
    return quiet or [t[0] for t in turns]


def estimate(turns: list[tuple[float, float]]) -> float:
    """A design's latency from its turns: the mean of the faster half of the quiet ones (the fastest of one to
    three); other work on a shared CPU only adds time, and the fastest turn alone is a noisier figure."""
    quiet = sorted(_quiet(turns))
    return statistics.fmean(quiet[: max(1, len(quiet) // 2)])


def _settled(turns: list[tuple]) -> bool:
    """Two quiet turns within SETTLED of each other at the bottom."""
    xs = sorted(t[0] for t in turns if t[1] <= QUIET)
    return len(xs) > 1 and xs[1] <= xs[0] * (1 + SETTLED)


# ---- fitting ---------------------------------------------------------------------------------------------------
def nnls(a, b, max_iter: int | None = None):
    """x >= 0 minimising ||a x - b||_2 (Lawson & Hanson's active-set algorithm). a: (m, n), b: (m,) numpy."""
    import numpy as np

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    m, n = a.shape
    x, passive = np.zeros(n), np.zeros(n, dtype=bool)
    tol = 10 * np.finfo(float).eps * np.linalg.norm(a, 1) * max(m, n)
    for _ in range(max_iter or 3 * n):
        grad = a.T @ (b - a @ x)
        if passive.all() or grad[~passive].max(initial=-np.inf) <= tol:
            break
        j = np.where(~passive, grad, -np.inf).argmax()
        passive[j] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            neg = passive & (z <= 0)
            alpha = np.min(x[neg] / (x[neg] - z[neg]))
            x = x + alpha * (z - x)
            passive &= x > tol
            x[~passive] = 0.0
    return x


def fit_latency_model(specs: Sequence[ArchSpec], seconds: Sequence[float], fp: Fingerprint) -> LatencyModel:
    """Non-negative coefficients minimising the squared relative error over the designs, and the MACs baseline."""
    import numpy as np

    if len(specs) != len(seconds) or not specs:
        raise LatencyError(f'{len(specs)} designs and {len(seconds)} latencies: need the same number, at least 1')
    y = np.asarray(seconds, dtype=float)
    names = feature_names()
    rows = (features(s, fp.batch_size) for s in specs)  # once per design: ~0.1 ms each
    x = np.array([[f[k] for k in names] for f in rows])
    scale = x.max(axis=0)
    scale[scale == 0] = 1.0
    w = 1.0 / y  # relative error: row i divided by its own latency
    coef = nnls(x / scale * w[:, None], np.ones_like(y)) / scale
    macs = np.array([macs_per_call(s, fp.batch_size) for s in specs], dtype=float)
    r = macs / y  # baseline: y ~ k * macs, minimising sum ((k macs - y) / y)^2
    k = float(r.sum() / (r * r).sum())
    return LatencyModel(
        fingerprint=asdict(fp),
        coef={name: float(c) for name, c in zip(names, coef)},
        baseline_s_per_mac=k,
        n_designs=len(specs),
        created=time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime()),  # UTC, as the page and the CLI say
        local=_fit_local(x, y, coef, names),
    )


def _fit_local(x, y, coef, names) -> dict | None:
    """The local correction's table (LatencyModel.local) of the designs fitted: each one's time shares over the
    features with a coefficient, and its log residual; None when a design's fit is not positive."""
    import numpy as np

    used = [j for j, c in enumerate(coef) if c > 0]
    parts = x[:, used] * coef[used]
    fitted = parts.sum(axis=1)
    if not len(used) or (fitted <= 0).any():
        return None
    residuals = np.clip(np.log(y / fitted), -MAX_LOCAL_RESIDUAL, MAX_LOCAL_RESIDUAL)
    return {
        'neighbours': LOCAL_NEIGHBOURS,
        'weight': LOCAL_WEIGHT,
        'features': [names[j] for j in used],
        'shares': np.round(parts / fitted[:, None], 4).tolist(),
        'residuals': np.round(residuals, 5).tolist(),
    }


# ---- accuracy ----------------------------------------------------------------------------------------------------
def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""

    def ranks(v):
        order = sorted(range(len(v)), key=v.__getitem__)
        r = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for t in range(i, j + 1):
                r[order[t]] = (i + j) / 2
            i = j + 1
        return r

    ra, rb = ranks(list(a)), ranks(list(b))
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((p - ma) * (q - mb) for p, q in zip(ra, rb))
    den = math.sqrt(sum((p - ma) ** 2 for p in ra) * sum((q - mb) ** 2 for q in rb))
    return cov / den if den else 0.0


def accuracy(predicted: Sequence[float], measured: Sequence[float], tolerance: float = 0.10) -> dict:
    """within (fraction of |predicted / measured - 1| <= tolerance), spearman, median and max abs % error."""
    errs = [abs(p / m - 1) for p, m in zip(predicted, measured)]
    return {
        'n': len(errs),
        'within': sum(e <= tolerance for e in errs) / len(errs),
        'tolerance': tolerance,
        'spearman': spearman(predicted, measured),
        'median_abs_pct': 100 * statistics.median(errs),
        'max_abs_pct': 100 * max(errs),
    }


def evaluate_latency_model(model: LatencyModel, designs: Sequence[ArchSpec], seconds: Sequence[float]) -> dict:
    """Accuracy on designs with measured `seconds`: {'model': accuracy(...), 'baseline': accuracy(...), 'designs':
    [{name, img_size, stages, ms_measured, ms_predicted, ms_baseline}, ...]} where the baseline is latency
    proportional to MACs (fitted on the model's calibration designs); `stages`: e.g. 'pooling 2x64, attention 1x128'."""
    if len(designs) != len(seconds) or not designs:
        raise LatencyError(f'{len(designs)} designs and {len(seconds)} latencies: need the same number, at least 1')
    predicted, baseline = [model.predict(s) for s in designs], [model.baseline(s) for s in designs]
    rows = [
        {
            'name': s.name,
            'img_size': s.img_size,
            'stages': ', '.join(f'{st.mixer} {st.depth}x{st.dim}' for st in s.stages),
            'ms_measured': 1e3 * m,
            'ms_predicted': 1e3 * p,
            'ms_baseline': 1e3 * b,
        }
        for s, m, p, b in zip(designs, seconds, predicted, baseline)
    ]
    return {'model': accuracy(predicted, seconds), 'baseline': accuracy(baseline, seconds), 'designs': rows}


# ---- the whole calibration ----------------------------------------------------------------------------------
@dataclass
class Calibration:
    model: LatencyModel
    path: str | None  # where it was saved
    evaluation: dict | None  # evaluate_latency_model on the holdout designs
    seconds_taken: float
    measured: list[float] = field(default_factory=list)  # seconds per call of every design, calibration then holdout

    def to_dict(self) -> dict:
        """What `explorer calibrate --json` prints: the model without its local table's rows (in the saved file),
        only how many designs it holds."""
        model = self.model.to_dict()
        if model['local']:
            local = model['local']
            model['local'] = {
                'neighbours': local['neighbours'],
                'weight': local['weight'],
                'designs': len(local['residuals']),
            }
        return {'path': self.path, 'seconds_taken': self.seconds_taken, 'evaluation': self.evaluation, 'model': model}


def calibration_problem(model: LatencyModel) -> str | None:
    """Why a finished calibration should not be trusted, or None: it was fitted on fewer designs than it has
    features (`explorer calibrate --designs 2` fits 75 coefficients to 2 numbers: poolformer_s12 predicted 0.4 ms
    against 66.5 ms measured, with nothing said), or on the designs it never saw it predicted no better than
    latency in proportion to MACs (other work timed beside its designs, say). The share of quiet
    turns is no test: a page showing the calibration's progress on the same 2-core machine keeps some task
    waiting for a CPU through nearly every turn (99% in a browser test) while the fit stays good."""
    n_features = len(feature_names())
    if 0 < model.n_designs < n_features:  # 0: a file from before n_designs was kept
        return (
            f'it was fitted on {model.n_designs} designs, fewer than its {n_features} features, so most of its '
            'coefficients could not be told apart (400 designs by default)'
        )
    ev = model.evaluation
    if (
        ev
        and ev['model']['n']
        and (
            ev['model']['median_abs_pct'] >= ev['baseline']['median_abs_pct']
            or ev['model']['within'] < ev['baseline']['within']
        )
    ):
        m, b = ev['model'], ev['baseline']
        return (
            f'on the {m["n"]} designs it never saw it predicted no better than latency in proportion to MACs '
            f'(median error {m["median_abs_pct"]:.1f}% against {b["median_abs_pct"]:.1f}%; within +-10%: '
            f'{100 * m["within"]:.0f}% against {100 * b["within"]:.0f}%)'
        )
    return None


def _check_memory(specs: Sequence[ArchSpec], batch_size: int, dtype: str) -> None:
    """Refuse a calibration whose designs would not fit: `measure_rounds` holds every design's weights and input
    batch at once, plus the activations of one call (the resource guard's EXPLORER_MAX_ACT_GIB bounds the sum)."""
    from explorer.measure.guard import Limits

    size = {'float32': 4, 'bfloat16': 2, 'float16': 2}[dtype]
    costs = [analytic_cost(s) for s in specs]
    held = sum((c.params + batch_size * s.in_chans * s.img_size**2) * size for s, c in zip(specs, costs))
    call = max(c.act_elements for c in costs) * batch_size * size
    limit = Limits.from_env().max_act_gib
    if (held + call) / 2**30 > limit:
        raise LatencyError(
            f"a calibration at batch {batch_size} holds about {(held + call) / 2**30:.1f} GiB ({len(specs)} designs' "
            f"weights and inputs, {held / 2**30:.1f} GiB, and one call's activations), over the limit of "
            f'{limit:g} GiB (set EXPLORER_MAX_ACT_GIB to change it); use a smaller batch size or fewer designs'
        )


def calibrate(
    device: str = 'cpu',
    batch_size: int = 1,
    dtype: str = 'float32',
    designs: int = 400,
    holdout: int = 30,
    threads: int | None = None,
    rounds: int = 9,
    seed: int = 0,
    save: bool = True,
    folder: str | Path | None = None,
    progress: Callable | None = None,
    max_macs: float = MAX_DESIGN_MACS,
) -> Calibration:
    """Measure `designs + holdout` random designs in the same interleaved rounds, fit on the first `designs`,
    report accuracy on the `holdout` ones (never used in the fit), save the model for this fingerprint."""
    if not isinstance(designs, int) or designs < 2:
        raise LatencyError(f'designs {designs!r} must be an integer >= 2')
    if not isinstance(holdout, int) or holdout < 0:
        raise LatencyError(f'holdout {holdout!r} must be a non-negative integer')
    if not isinstance(rounds, int) or rounds < 1:
        raise LatencyError(f'rounds {rounds!r} must be a positive integer')
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 256:
        raise LatencyError(f'batch size {batch_size!r} must be an integer in [1, 256]')
    t0 = time.monotonic()
    fp = fingerprint(device, dtype, batch_size, threads)
    specs = random_designs(designs + holdout, seed, max_macs)
    _check_memory(specs, batch_size, fp.dtype)
    from explorer.measure.speed import give_back_memory  # no torch at import

    turns = measure_rounds(specs, fp.device, batch_size, fp.dtype, rounds, fp.threads or None, progress)
    give_back_memory()  # the ~430 models are gone: a server kept 2.5 GB of heap after one calibration
    secs = [estimate(t) for t in turns]
    model = fit_latency_model(specs[:designs], secs[:designs], fp)
    evaluation = evaluate_latency_model(model, specs[designs:], secs[designs:]) if holdout else None
    model.evaluation = evaluation
    taken = time.monotonic() - t0
    model.measure = {
        'rounds': rounds,
        'seed': seed,
        'max_macs': max_macs,
        'designs': designs,
        'holdout': holdout,
        'timer': 'CUDA events' if fp.device.startswith('cuda') else 'time.perf_counter',
        'estimate': 'mean of the faster half of the quiet turns (PSI contention <= 5%), a turn = median of calls '
        'over ~20 ms'
        + (
            f', divided by the speed of the machine at its time (the median departure from their own level of the '
            f'{DRIFT_NEIGHBOURS} turns of other designs on each side)'
            if len(specs) >= DRIFT_MIN_DESIGNS
            else ''
        ),
        'settled': round(sum(map(_settled, turns)) / len(turns), 3),  # two quiet turns within 3%
        'quiet_turns': round(sum(c <= QUIET for t in turns for _, c in t) / sum(map(len, turns)), 3),
        'seconds_taken': round(taken, 1),
        'loadavg': list(os.getloadavg()) if hasattr(os, 'getloadavg') else None,
        'allocator': allocator_regime(fp.device),
    }
    path = str(save_model(model, folder)) if save else None
    return Calibration(model, path, evaluation, taken, secs)
