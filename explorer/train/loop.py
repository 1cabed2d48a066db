"""Train a composed design on Fashion-MNIST; checkpoints that carry everything needed to use them offline.

The recipe (what worked on 2 CPU cores, see assets/fmnist/RESULTS.md): AdamW (no weight decay on norms,
biases and scales), linear warm-up then cosine decay to zero, label smoothing 0.1, and light augmentation:
random crop from the image padded by 2 pixels, and horizontal flips. Images are centred on a 32x32 canvas
(28 + 2 pixels of background each side) so that strides of 2, 4 and 8 divide the input.

A checkpoint is one `.safetensors` file: the weights (float32) plus string metadata holding the spec JSON,
the preprocessing rule, the class names, the metrics (test accuracy, epochs, wall time, seed, budget, device,
threads) and the per-epoch history. `load_trained(path)` rebuilds the model from that file alone.

Precision: by default (amp 'auto', `resolve_amp`) a run trains under bf16 autocast where the hardware has bf16
(CPUs with AVX512-BF16 or AMX, recent GPUs) and in fp32 elsewhere; the checkpoint records which (`amp`). The
weights are fp32 either way, and the test set is always evaluated in fp32, so the recorded accuracy is the one
`load_trained` / `explorer evaluate` reproduce. `amp='none'` trains in fp32 anywhere.

Compiling (`compile=True`, off by default): the training step's forward and backward run through torch.compile
(inductor), which fuses the element-wise work (norms, activations, scales, residual adds) that bf16 does not
speed up. The first step compiles (about a minute on 2 cores; recorded as `first_step_s`; inductor keeps its
kernels in an on-disk cache, so a second run of the same design compiles faster). It pays on wide models and
costs on narrow ones (benchmarks/README.md, "Training by precision"). Evaluation runs the model uncompiled.

Determinism: for a given seed, epoch count, batch size, thread count and precision, two runs on one machine give
the same weights bit for bit (initialisation, data order, augmentation and drop-path all come from the seed). A run
stopped by `time_budget` depends on the machine's speed at the time: how many steps fit is measured, so
its step count (recorded) can differ between runs.
"""

from __future__ import annotations

import math
import platform
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.metaformer import Scale, StarReLU

from explorer.core.build import build_model
from explorer.core.mixers import AttentionMixer
from explorer.core.spec import ArchSpec
from explorer.measure.guard import check_request, largest_batch
from explorer.measure.speed import compile_model, cpu_native_bf16
from explorer.train.checkpoints import load_state, load_trained, save_checkpoint, save_state
from explorer.train.data import Dataset, Preprocessing, load_dataset
from explorer.train.distributed import Dist
from explorer.train.fit import batch_norm_problem, check_trainable
from explorer.train.folder import check_layout, open_folder, training_data_config
from explorer.train.sources import (  # noqa: F401 (augment, make_batch: used from here by tests and scripts)
    FolderSource,
    MemorySource,
    augment,
    autocast,
    counts_to_metrics,
    eval_counts,
    make_batch,
)

DATASETS = ('fashion-mnist', 'imagefolder')
AMP = ('auto', None, 'none', 'bf16', 'fp16')  # 'none' is None (fp32); 'auto' is resolved by `resolve_amp`
LATER = {'compile': False}  # recipe fields added after states were first written: what an older state ran with
# A time limit fits the schedule's length at step 3, then every REFIT_EVERY steps and at each epoch's end, at the
# speed of the steps since the WINDOW-th last fit (about 20 steps; the first step's one-time costs left out)
REFIT_EVERY, WINDOW = 5, 4


@dataclass
class TrainConfig:
    """The recipe. Every field is recorded in the checkpoint."""

    epochs: float = 5
    time_budget: float | None = None  # seconds of training (evaluation excluded); None: run all epochs
    batch_size: int = 128
    lr: float = 2e-3  # peak learning rate, for batch 128
    weight_decay: float = 0.05
    warmup_epochs: float = 0.25
    label_smoothing: float = 0.1
    crop_pad: int = 2  # random crop from the image padded by this many pixels each side; 0: no crop
    hflip: bool = True
    erase_prob: float = 0.0  # random erasing (Zhong et al. 2020): chance per image of blanking one rectangle
    seed: int = 0
    threads: int | None = None  # torch threads during the run; None: leave torch's setting
    eval_batch_size: int = 1000
    eval_every_epoch: bool = True  # test accuracy after every epoch (for the plot; never used to pick weights)
    # mixed precision: 'auto' (see resolve_amp), None (fp32), 'bf16' (CPU or GPU) or 'fp16' (GPU, loss scaling)
    amp: str | None = 'auto'
    auto_augment: str | None = None  # image folders: a timm policy, e.g. 'rand-m9-mstd0.5-inc1' (RandAugment)
    compile: bool = False  # torch.compile the training step's model (inductor); see the module's docstring


@dataclass
class TrainResult:
    checkpoint: str | None
    metrics: dict
    history: list = field(default_factory=list)
    model: nn.Module | None = field(default=None, repr=False)  # the trained model, eval mode

    def to_dict(self) -> dict:
        return {'checkpoint': self.checkpoint, 'metrics': self.metrics, 'history': self.history}


class Stopped(Exception):
    """Raised by a progress callback to stop training early; the weights so far are kept."""


class Diverged(ValueError):
    """The training loss became NaN or infinite: the run ends there and writes no checkpoint (its weights would
    predict nothing). fp16 runs are left to their loss scaler, which skips such steps by design."""


# ---- evaluation -----------------------------------------------------------------------------------------
@torch.inference_mode()
def predict_logits(model: nn.Module, images: torch.Tensor, pre: Preprocessing, batch_size: int = 1000) -> torch.Tensor:
    """Logits (N, num_classes) for uint8 images (N, 28, 28), in eval mode, batched."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = [model(make_batch(images[i : i + batch_size], pre)) for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(out)


def accuracy_on(model: nn.Module, ds: Dataset, pre: Preprocessing, batch_size: int = 1000) -> dict:
    """{'accuracy' (fraction), 'n', 'correct', 'loss' (mean cross-entropy), 'per_class'} on a split, eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chunks = (
        (make_batch(ds.images[i : i + batch_size], pre), ds.labels[i : i + batch_size])
        for i in range(0, len(ds), batch_size)
    )
    counts = eval_counts(model, chunks, len(ds.classes), device)
    model.train(was_training)
    return counts_to_metrics(counts, list(ds.classes))


# ---- training -------------------------------------------------------------------------------------------
def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue  # RandFormer's frozen matrices
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{'params': decay, 'weight_decay': weight_decay}, {'params': no_decay, 'weight_decay': 0.0}]


def _lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def train(
    spec: ArchSpec | dict,
    dataset: str = 'fashion-mnist',
    epochs: float = 5,
    time_budget: float | None = None,
    batch_size: int = 128,
    seed: int = 0,
    out: str | Path | None = None,
    progress: Callable[[dict], None] | None = None,
    *,
    data_dir: str | Path | None = None,
    download: bool = False,
    train_limit: int | None = None,
    test_limit: int | None = None,
    state_file: str | Path | None = None,
    resume: bool = False,
    device: str | None = 'cpu',
    should_stop: Callable[[], bool] | None = None,
    workers: int = 4,
    deadline: float | None = None,
    **recipe,
) -> TrainResult:
    """Train `spec` from scratch on the training set, evaluate on the test set, write a checkpoint to `out`.

    dataset: 'fashion-mnist' (found offline, see explorer.train.data) or 'imagefolder' (data_dir = ROOT holding
    train/ and val/ in ImageNet's layout; the spec's num_classes is set to the number of class folders).
    recipe: other TrainConfig fields (lr, weight_decay, warmup_epochs, label_smoothing, crop_pad, hflip,
    erase_prob, amp, auto_augment, compile, threads, eval_batch_size, eval_every_epoch). train_limit / test_limit: use N
    examples only (quick runs, tests). progress(event) is called on rank 0 with dicts: {'kind': 'step', 'step',
    'total_steps', 'epoch', 'loss', 'lr', 'elapsed', 'images'} every few steps, {'kind': 'epoch', ...,
    'train_loss', 'test_accuracy'} after each epoch; it may raise `Stopped` to end training early (the
    checkpoint is still written). should_stop(), asked after every step on every rank, does the same for all
    ranks at once. device: 'cpu', 'cuda' or None (CUDA when there is one); under torchrun, one process per rank.
    batch_size is per process: the global batch is batch_size x processes.
    Returns TrainResult(checkpoint path, metrics, per-epoch history).

    state_file: where to keep a resumable state (after every epoch and when stopped; removed when the run
    completes). resume: continue the run that state_file holds (same spec and recipe); without a time budget,
    in one process, the result is the same, bit for bit, as a run never interrupted.

    deadline: a `time.monotonic()` by which the whole run, evaluations included, must be over (a server's limit
    on one run). Unlike time_budget (seconds of training) it is not part of the recipe. The schedule is fitted
    to end before it, with time left for the evaluations still to come; training ends when it comes
    (stopped_by 'time_limit') and, when no fit of the schedule falls short of the plan, the run is the one it
    would be without it.
    """
    spec = spec if isinstance(spec, ArchSpec) else ArchSpec.from_dict(spec)
    cfg = TrainConfig(epochs=epochs, time_budget=time_budget, batch_size=batch_size, seed=seed, **recipe)
    _check_config(cfg)
    if dataset not in DATASETS:
        raise ValueError(f'dataset {dataset!r} is not supported; choose from {", ".join(DATASETS)}')
    if dataset != 'imagefolder' and cfg.auto_augment is not None:  # else recorded in the recipe, never applied
        raise ValueError(f'auto_augment {cfg.auto_augment!r} applies to image folders only, not to {dataset}')
    dist = Dist.from_env(device)
    cfg = replace(cfg, amp=resolve_amp(cfg.amp, dist.device))  # recorded as resolved: a resume compares it
    if cfg.amp == 'fp16' and dist.device.type != 'cuda':
        raise ValueError('amp fp16 needs a CUDA device (its loss scaling is for GPUs); use amp bf16 on CPU')
    try:
        if dataset == 'fashion-mnist':
            check_trainable(spec)
        problem = batch_norm_problem(spec, batch_size)
        if problem:
            raise ValueError(problem)
        check_request(spec, batch_size=batch_size, training=True)  # before building: refuse what would not fit
        cfg = replace(cfg, eval_batch_size=largest_batch(spec, cfg.eval_batch_size))  # evaluation fits too
        spec, pre, source = _open_data(spec, dataset, cfg, dist, data_dir, download, train_limit, test_limit, workers)
        data = {
            'dataset': dataset,
            'train_limit': train_limit,
            'test_limit': test_limit,
            'steps_per_epoch': source.steps_per_epoch,
        }
        state, keep_state = _resumable(spec, cfg, dist, state_file, resume, data)
        prev_threads = torch.get_num_threads()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + dist.rank)  # drop-path and dropout draw from the global generator
                clock = _Clock(cfg.time_budget, deadline, source.test_n / (cfg.batch_size * dist.world))
                model, history, metrics = _run(spec, cfg, source, dist, progress, should_stop, state, keep_state, clock)
        except Diverged as e:  # resuming replays the same steps to the same NaN: the saved state is of no use
            if dist.main and state_file is not None and Path(state_file).exists():
                Path(state_file).unlink(missing_ok=True)
                raise Diverged(
                    f'{e} (nor is the state of its last epoch kept: resumed, it would diverge again)'
                ) from None
            raise
        finally:
            torch.set_num_threads(prev_threads)
        metrics.update(dataset=dataset, train_examples=source.n)
        path = None
        if out is not None:
            if dist.main:
                save_checkpoint(out, model, spec, pre, metrics, history, cfg, classes=source.classes)
            path = str(out)
        if dist.main and state_file is not None and metrics['stopped_by'] != 'user':
            Path(state_file).unlink(missing_ok=True)  # finished: nothing left to resume
        return TrainResult(path, metrics, history, model)
    finally:
        dist.close()


def _open_data(spec, dataset, cfg, dist, data_dir, download, train_limit, test_limit, workers):
    """(spec, preprocessing to record, batch source). An image folder sets the spec's num_classes to its own."""
    if dataset == 'fashion-mnist':
        pre = Preprocessing.for_spec(spec)
        train_ds = load_dataset(dataset, 'train', data_dir, download)
        test_ds = load_dataset(dataset, 'test', data_dir, download)
        if train_limit:
            train_ds = train_ds.subset(train_limit)
        if test_limit:
            test_ds = test_ds.subset(test_limit)
        return spec, pre, MemorySource(train_ds, test_ds, pre, cfg, dist)
    if data_dir is None:
        raise ValueError('dataset imagefolder: give the folder holding train/ and val/ (--data-dir)')
    if spec.in_chans != 3:
        raise ValueError(f'in_chans is {spec.in_chans}; image folders are read as RGB: set in_chans to 3')
    classes = check_layout(data_dir)
    if spec.num_classes != len(classes):
        spec = ArchSpec.from_dict({**spec.to_dict(), 'num_classes': len(classes)})
    pre = training_data_config(build_model(spec, init=False), spec.in_chans, spec.img_size)
    data = open_folder(
        data_dir,
        pre,
        hflip=cfg.hflip,
        auto_augment=cfg.auto_augment,
        erase_prob=cfg.erase_prob,
        train_limit=train_limit,
        val_limit=test_limit,
    )
    return spec, {'kind': 'timm', **pre}, FolderSource(data, cfg, dist, workers)


def _resumable(spec, cfg, dist, state_file, resume, data: dict | None = None):
    """(state to continue from or None, function saving a state or None). Rank 0 reads and writes the file;
    the other ranks get its state by broadcast (on many machines only rank 0's needs to see it). `data`: what
    the run trains on (dataset, limits, steps per epoch); a state saved for other data is refused (its epoch order
    indexes that data: another --train-limit trained extra epochs or ended in an IndexError)."""
    state, keep_state = None, None
    if resume:
        if state_file is None:
            raise ValueError('resume: give the state file to continue from')
        state = dist.broadcast(load_state(state_file) if dist.main else None)
        skip = ('threads', 'eval_batch_size', 'batch_size')  # any process count with the same global batch
        theirs = (
            state.get('spec'),
            state.get('global_batch', state.get('recipe', {}).get('batch_size')),
            {k: v for k, v in {**LATER, **state.get('recipe', {})}.items() if k not in skip},
        )
        ours = (spec.to_dict(), cfg.batch_size * dist.world, {k: v for k, v in asdict(cfg).items() if k not in skip})
        if theirs != ours:
            if theirs[0] != ours[0]:
                what = 'spec'
            elif theirs[1] != ours[1]:
                what = f'global batch ({theirs[1]} there, {ours[1]} here)'
            else:  # name the fields, e.g. a run started in fp32 before the default precision became auto
                keys = sorted(set(theirs[2]) | set(ours[2]), key=str)
                diff = [
                    f'{k}: {theirs[2].get(k)!r} there, {ours[2].get(k)!r} here'
                    for k in keys
                    if theirs[2].get(k) != ours[2].get(k)
                ]
                what = f'recipe ({"; ".join(diff)})'
            raise ValueError(
                f'resume: {state_file} was written for another {what}; resume with the same options, or start a '
                'new run instead'
            )
        saved = state.get('data')
        if data is not None and saved is not None and saved != data:  # states written before this say nothing
            diff = [f'{k}: {saved.get(k)!r} there, {data.get(k)!r} here' for k in data if saved.get(k) != data.get(k)]
            raise ValueError(
                f'resume: {state_file} was written for other data ({"; ".join(diff)}); resume with the same '
                'options, or start a new run instead'
            )
    if state_file is not None and dist.main:
        tagged = {'spec': spec.to_dict(), 'recipe': asdict(cfg), 'global_batch': cfg.batch_size * dist.world}
        if data is not None:
            tagged['data'] = data

        def keep_state(s: dict) -> None:
            save_state(state_file, {**tagged, **s})

    return state, keep_state


MAX_EPOCHS = 1000


def _check_config(cfg: TrainConfig) -> None:
    """Every number of the recipe, checked before any data is loaded: finite and in range, named when not."""

    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    def integer(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not integer(cfg.batch_size) or cfg.batch_size < 1:
        raise ValueError(f'batch_size {cfg.batch_size!r} must be a positive integer')
    if not number(cfg.epochs) or not 0 < cfg.epochs <= MAX_EPOCHS:
        raise ValueError(f'epochs {cfg.epochs!r} must be a number in (0, {MAX_EPOCHS}]')
    if not number(cfg.erase_prob) or not 0.0 <= cfg.erase_prob <= 1.0:
        raise ValueError(f'erase_prob {cfg.erase_prob!r} must be a probability between 0 and 1')
    if cfg.time_budget is not None and (not number(cfg.time_budget) or cfg.time_budget <= 0):
        raise ValueError(f'time_budget {cfg.time_budget!r} must be a positive number of seconds')
    for key in ('lr', 'warmup_epochs', 'weight_decay', 'label_smoothing'):
        v = getattr(cfg, key)
        if not number(v) or v < 0 or (key == 'lr' and v == 0) or (key == 'label_smoothing' and v >= 1):
            raise ValueError(f'{key} {v!r} must be a finite {"positive" if key == "lr" else "non-negative"} number')
    if not integer(cfg.seed) or cfg.seed < 0:
        raise ValueError(f'seed {cfg.seed!r} must be a non-negative integer')
    if cfg.threads is not None and (not integer(cfg.threads) or not 1 <= cfg.threads <= 1024):
        raise ValueError(f'threads {cfg.threads!r} must be an integer in [1, 1024]')
    if not integer(cfg.crop_pad) or not 0 <= cfg.crop_pad <= 16:
        raise ValueError(f'crop_pad {cfg.crop_pad!r} must be an integer in [0, 16]')
    if cfg.amp not in AMP:
        raise ValueError(f'amp {cfg.amp!r} is not known; choose auto, bf16, fp16 or none (fp32)')
    if not isinstance(cfg.compile, bool):
        raise ValueError(f'compile {cfg.compile!r} must be true or false')
    if cfg.auto_augment is not None and not (isinstance(cfg.auto_augment, str) and len(cfg.auto_augment) <= 100):
        raise ValueError(f'auto_augment {cfg.auto_augment!r} must be a timm policy string such as rand-m9-mstd0.5')
    if not integer(cfg.eval_batch_size) or cfg.eval_batch_size < 1:
        raise ValueError(f'eval_batch_size {cfg.eval_batch_size!r} must be a positive integer')


def unfuse_attention(model: nn.Module) -> int:
    """Attention as explicit matmuls + softmax instead of F.scaled_dot_product_attention, for bf16 training on
    a CPU: there the fused kernel's backward took 35 ms per call on a 16-token, 128-channel Fashion-MNIST stage
    (21% of the step; the explicit form's matmuls run on AMX), and bf16 training of fmnist_hybrid_large went from
    443 to 573 img/s (fp32: 565), batch 256, 2 threads. Same function up to rounding. Returns how many modules."""
    n = 0
    for m in model.modules():
        if getattr(m, 'fused_attn', None) is True:
            m.fused_attn = False
            n += 1
    return n


class _ScaleInActivationDtype(Scale):
    """timm's `Scale` (layer and residual scales) with its fp32 factor cast to the activation's dtype. Under bf16
    autocast `x * scale` is otherwise promoted to fp32 (a (dim,) fp32 tensor wins type promotion), which sends the
    residual stream, and every norm and element-wise op after it, back to fp32."""

    def forward(self, x):
        return x * self.scale.view(self.shape).to(x.dtype)


class _StarReLUInActivationDtype(StarReLU):
    """timm's `StarReLU` (s * relu(x)^2 + b) with s and b cast to the activation's dtype, for the same reason."""

    def forward(self, x):
        return self.scale.to(x.dtype) * self.relu(x) ** 2 + self.bias.to(x.dtype)


FP32_ATTENTION_TOKENS = 128  # bf16 CPU training: attention over more tokens than this runs in fp32 (fused kernel)


class _AttentionBf16Cpu(AttentionMixer):
    """Attention for bf16 training on a CPU, by token count (forward + backward alone, batch 128, 2 threads, AMX,
    torch 2.14.1): over 16-64 tokens bf16 as explicit matmuls is fastest (1.3-3x the fp32 fused kernel; the fused
    bf16 kernel's backward is 4-6x slower still), over 256 tokens fp32 with the fused kernel is (1.3-2.7x bf16:
    the explicit form writes the 256x256 score matrix per head, and bf16 gains nothing at head widths 8-32)."""

    def forward(self, x):
        if x.shape[1] > FP32_ATTENTION_TOKENS:
            self.fused_attn = True
            with torch.autocast(x.device.type, enabled=False):
                return super().forward(x.float()).to(x.dtype)
        self.fused_attn = False
        return super().forward(x)


class _DepthwiseConvFp32(nn.Conv2d):
    """A depthwise convolution run in fp32 inside a bf16 autocast region (input cast up, output cast back). On a
    CPU (torch 2.14.1, oneDNN) a 7x7 one's forward + backward takes 2.1-2.5x longer in bf16 than in fp32 (32-256
    channels, 8x8 and 16x16 grids, batch 128, channels-last as SepConv passes it), while a 3x3 one is 1.3-2.7x
    faster in bf16: so only kernels larger than 3x3 are moved (`prepare_bf16_cpu`)."""

    def forward(self, x):
        with torch.autocast('cpu', enabled=False):
            return super().forward(x.float()).to(x.dtype)


def resolve_amp(amp: str | None, device: torch.device) -> str | None:
    """The precision a run trains in. 'auto' (the default): bf16 autocast on a CPU with bf16 in hardware
    (AVX512-BF16 or AMX; with `prepare_bf16_cpu` a training step was 1.02-1.95x fp32 on the eleven shipped
    Fashion-MNIST specs, figures and accuracy in benchmarks/README.md), fp32 on other CPUs (there bf16 is
    emulated, and slower);
    on a GPU bf16 where it has it (Ampere and later), else fp16 with loss scaling. 'none' means fp32 (None)."""
    if amp == 'none':
        return None
    if amp != 'auto':
        return amp
    if device.type == 'cuda':
        return 'bf16' if torch.cuda.is_bf16_supported() else 'fp16'
    return 'bf16' if device.type == 'cpu' and cpu_native_bf16() else None


def prepare_bf16_cpu(model: nn.Module) -> dict:
    """Make a model train fast under bf16 autocast on a CPU, computing the same function (up to rounding; exactly
    the same in fp32): attention over few tokens as explicit bf16 matmuls, over many in fp32 (`_AttentionBf16Cpu`;
    other attention modules: `unfuse_attention`), layer/residual scales and StarReLU kept in the activation's
    dtype, depthwise convolutions larger than 3x3 in fp32. Modules change class in place, so the parameters,
    their names and the state dict stay as they were. Returns how many modules of each kind changed. Measured,
    batch 128, 2 threads, AMX (benchmarks/README.md): fmnist_hybrid_large 0.85x fp32 under plain autocast,
    1.43-1.50x with this; fmnist_attention 0.54x -> 1.07x."""
    counts = {'attention': 0, 'scale': 0, 'star_relu': 0, 'depthwise_conv': 0}
    for m in model.modules():
        if type(m) is AttentionMixer:
            m.__class__, m.fused_attn, kind = _AttentionBf16Cpu, False, 'attention'  # its forward picks the kernel
        elif type(m) is Scale:
            m.__class__, kind = _ScaleInActivationDtype, 'scale'
        elif type(m) is StarReLU:
            m.__class__, kind = _StarReLUInActivationDtype, 'star_relu'
        elif type(m) is nn.Conv2d and m.groups > 1 and m.groups == m.in_channels and math.prod(m.kernel_size) > 9:
            m.__class__, kind = _DepthwiseConvFp32, 'depthwise_conv'
        else:
            continue
        counts[kind] += 1
    counts['attention'] += unfuse_attention(model)  # any other module with timm's fused_attn switch
    return counts


class _Clock:
    """A run's time limits and the speeds measured against them. `budget`: seconds of training
    (TrainConfig.time_budget; evaluations excluded). `deadline`: a time.monotonic() by which the run, its
    evaluations included, must be over. The schedule's length is fitted to whichever allows fewer steps, at the
    speed of the latest steps (`marks`: the step and training seconds at the last WINDOW fits), so a CPU that
    slows down mid-epoch shortens the schedule rather than cutting it at a high learning rate."""

    def __init__(self, budget: float | None, deadline: float | None, eval_steps: float):
        # an infinite deadline is none (inf - now is inf steps, which no integer holds)
        self.budget = budget
        self.deadline = deadline if deadline is not None and math.isfinite(deadline) else None
        self.eval_steps = eval_steps  # test images per global training batch: one evaluation's size in steps
        self.eval_s = None  # seconds of the latest evaluation, once one ran
        self.per_step = None  # training seconds per step in the latest window
        self.marks = deque(maxlen=WINDOW)  # (step, training seconds) after this process's first step and at fits
        self.cut_by = None  # the limit that set the schedule's end: 'time_budget' or 'time_limit'

    @property
    def timed(self) -> bool:
        return self.budget is not None or self.deadline is not None

    def eval_cost(self) -> float:
        """Seconds one evaluation is expected to take: the last one measured, else the test set counted as
        training steps at half a step each (a forward pass is about a third of a training step's work)."""
        if self.eval_s is not None:
            return self.eval_s
        return 0.0 if self.per_step is None else self.per_step * self.eval_steps / 2

    def over(self, elapsed: float) -> str | None:
        """Which limit ends training now, if any: the budget spent, or too little time before the deadline
        for the final evaluation."""
        if self.budget is not None and elapsed >= self.budget:
            return 'time_budget'
        if self.deadline is not None and time.monotonic() >= self.deadline - self.eval_cost():
            return 'time_limit'
        return None

    def steps_left(self, step: int, elapsed: float, steps_per_epoch: int, eval_every_epoch: bool) -> int | None:
        """How many more steps the limits allow at the speed since the last call (None: nothing timed yet)."""
        m_step, m_elapsed = self.marks[0]
        if step <= m_step:
            return None
        self.per_step = per_step = max(elapsed - m_elapsed, 1e-9) / (step - m_step)
        self.marks.append((step, elapsed))
        n, self.cut_by = math.inf, None
        if self.budget is not None:
            n, self.cut_by = (self.budget - elapsed) / per_step, 'time_budget'
        if self.deadline is not None:
            ev = self.eval_cost()  # the final evaluation, and one per epoch when every epoch is evaluated
            per_wall_step = per_step + (ev / steps_per_epoch if eval_every_epoch else 0.0)
            wall = (self.deadline - time.monotonic() - ev) / per_wall_step
            if wall < n:
                n, self.cut_by = wall, 'time_limit'
        return max(0, int(min(n, 2**62) + 1e-6))  # a far limit: more steps than any plan, still an integer


def _run(spec, cfg: TrainConfig, source, dist: Dist, progress, should_stop, state=None, save_state=None, clock=None):
    """The training loop. `state` (from a `save_state` call of an earlier run of the same spec and recipe)
    continues that run where it stopped; `save_state(state)` is called at the end of every epoch and when the
    run is stopped, with everything needed to continue it (weights, optimiser, both random generators and the
    position in the epoch), so a resumed run ends with the same weights as one never interrupted."""
    device = dist.device
    model = build_model(spec, seed=cfg.seed).to(device)
    model.train()
    if cfg.amp == 'bf16' and device.type == 'cpu':
        prepare_bf16_cpu(model)
    net = dist.wrap(model)
    if cfg.compile:
        net = compile_model(net)  # the weights stay `model`'s: checkpoints and evaluation use it uncompiled
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == 'fp16')
    steps_per_epoch = source.steps_per_epoch
    planned = max(1, round(cfg.epochs * steps_per_epoch))
    # where the run is: the step, the epoch's order and next batch, and what was recorded so far
    pos = {
        'step': 0,
        'total': planned,
        'warmup': max(1, min(planned // 5, round(cfg.warmup_epochs * steps_per_epoch))),
        'perm': None,
        'batch': 0,
        'losses': [],
        'history': [],
        'train_time': 0.0,
    }
    if state is not None:
        model.load_state_dict(state['model'])
        opt.load_state_dict(state['optimizer'])
        gen.set_state(state['generator'])
        if dist.main:  # the other ranks' drop-path draws start afresh (seeded by rank)
            torch.set_rng_state(state['global_rng'])
        pos.update(state['position'])

    def snapshot() -> dict:
        return {
            'model': {k: v.cpu() for k, v in model.state_dict().items()},
            'optimizer': opt.state_dict(),
            'generator': gen.get_state(),
            'global_rng': torch.get_rng_state(),
            'position': dict(pos),
        }

    step_fn = _Step(net, opt, scaler, cfg, device, dist, should_stop)
    clock = clock or _Clock(cfg.time_budget, None, 0.0)
    t0, stopped_by = time.perf_counter(), 'epochs'
    last_eval = None  # (step, evaluation) of the latest epoch's evaluation: the final one when nothing followed it
    try:
        while pos['step'] < pos['total']:
            if pos['perm'] is None:
                pos.update(perm=source.order(gen, pos['step'] // steps_per_epoch), batch=0, losses=[])
            tick, start = time.perf_counter(), pos['step']
            try:
                _train_epoch(step_fn, source, gen, pos, cfg, planned, tick, clock, progress if dist.main else None)
            finally:  # a stop mid-epoch keeps that epoch's time: the result says it, a resumed budget counts it
                pos['train_time'] += time.perf_counter() - tick
            if pos['step'] == start and last_eval is not None and last_eval[0] == start:
                pos['perm'] = None  # cut before its first step: the evaluation before it is the final one
                break
            row = {
                'epoch': round(pos['step'] / steps_per_epoch, 3),
                'step': pos['step'],
                'train_loss': sum(pos['losses']) / max(1, len(pos['losses'])),
                'train_time': round(pos['train_time'], 2),
            }
            pos['perm'] = None  # the epoch is done: the next one draws its order
            if cfg.eval_every_epoch or pos['step'] >= pos['total']:
                model.eval()
                tick = time.monotonic()
                ev = source.evaluate(model, device)
                clock.eval_s = time.monotonic() - tick
                last_eval = (pos['step'], ev)
                model.train()
                why = clock.over(pos['train_time']) if clock.timed and dist.world == 1 else None
                if why is not None and pos['step'] < pos['total']:  # no time for another step and its evaluation:
                    pos['total'], clock.cut_by = pos['step'], why  # this evaluation is the final one
                row.update(test_accuracy=ev['accuracy'], test_loss=ev['loss'])
            pos['history'] = [*pos['history'], row]
            if save_state:
                save_state(snapshot())
            if progress and dist.main:
                progress({'kind': 'epoch', 'total_steps': pos['total'], **row})
    except Stopped:
        stopped_by = 'user'
        if save_state:
            save_state(snapshot())  # mid-epoch: the position says which batch comes next
    step, total, history, train_time = pos['step'], pos['total'], pos['history'], pos['train_time']
    if stopped_by == 'epochs' and total < planned:  # a time limit shortened or cut the schedule: it ended training
        stopped_by = clock.cut_by or 'time_budget'
    model.eval()
    # the test set once at the end: the last epoch's evaluation when no step came after it (it used to run twice)
    final = last_eval[1] if last_eval and last_eval[0] == step else source.evaluate(model, device)
    model.cpu()
    if history and history[-1]['step'] == step:
        history[-1].update(test_accuracy=final['accuracy'], test_loss=final['loss'])
    elif step > 0:  # stopped mid-epoch: the steps since the last epoch's row get their own row
        row = {
            'epoch': round(step / steps_per_epoch, 3),
            'step': step,
            'train_loss': sum(pos['losses']) / max(1, len(pos['losses'])),
            'train_time': round(train_time, 2),
            'test_accuracy': final['accuracy'],
            'test_loss': final['loss'],
        }
        history = [*history, row]
    metrics = {
        'test_accuracy': final['accuracy'],
        'test_n': final['n'],
        'test_correct': final['correct'],
        'test_loss': final['loss'],
        'per_class_accuracy': final['per_class'],
        'epochs': round(step / steps_per_epoch, 3),
        'steps': step,
        'stopped_by': stopped_by,
        'train_time_s': round(train_time, 1),
        'wall_time_s': round(time.perf_counter() - t0, 1),
        'seed': cfg.seed,
        'epochs_requested': cfg.epochs,
        'time_budget_s': cfg.time_budget,
        'device': device.type,
        'processes': dist.world,
        'global_batch': cfg.batch_size * dist.world,
        'amp': cfg.amp,
        'compile': cfg.compile,
        'first_step_s': step_fn.first_s,  # compiling included when compile is on
        'threads': torch.get_num_threads(),
        'torch': torch.__version__,
        'machine': platform.machine(),
        'recipe': asdict(cfg),
        'params': sum(p.numel() for p in model.parameters()),
        'trainable_params': sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    return model, history, metrics


class _Step:
    """One optimisation step on this rank's share of a batch; the ranks agree on the mean loss and on stopping."""

    def __init__(self, net, opt, scaler, cfg, device, dist, should_stop):
        self.net, self.opt, self.scaler, self.cfg, self.device, self.dist = net, opt, scaler, cfg, device, dist
        self.should_stop = should_stop or (lambda: False)
        self.first_s = None  # seconds of this process's first step (torch.compile compiles in it)

    def __call__(self, x, y, lr: float, over_budget: bool) -> tuple[float, bool, bool]:
        """(mean loss over ranks, stop asked on any rank, time budget spent on any rank)."""
        if self.first_s is None:
            t0 = time.perf_counter()
            try:
                out = self._step(x, y, lr, over_budget)
            except torch._dynamo.exc.BackendCompilerFailed as e:  # e.g. no C++ compiler for inductor here
                raise RuntimeError(f'torch.compile failed on this machine; train without compile ({e})') from None
            self.first_s = round(time.perf_counter() - t0, 4)  # to 0.1 ms: a small eager step (< 5 ms) read 0.0 s
            return out
        return self._step(x, y, lr, over_budget)

    def _step(self, x, y, lr: float, over_budget: bool) -> tuple[float, bool, bool]:
        for g in self.opt.param_groups:
            g['lr'] = lr
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        with autocast(self.device, self.cfg.amp):
            loss = F.cross_entropy(self.net(x).float(), y, label_smoothing=self.cfg.label_smoothing)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        return self.dist.step_agree(loss, self.should_stop(), over_budget)


def _train_epoch(step_fn: _Step, source, gen, pos: dict, cfg, planned: int, tick: float, clock: _Clock, progress):
    """The steps of one epoch from pos['batch'] on (or up to pos['total']), updating `pos` after each step; a
    time limit (`clock`) refits the schedule as it goes. `tick`: when this epoch's timing started."""
    steps_per_epoch, dist = source.steps_per_epoch, step_fn.dist
    report_every = max(1, steps_per_epoch // 20)
    batches = source.batches(pos['perm'], pos['batch'], gen)
    warmup = max(1, min(planned // 5, round(cfg.warmup_epochs * steps_per_epoch)))  # the recipe's
    for b in range(pos['batch'], steps_per_epoch):
        step, total = pos['step'], pos['total']
        if step >= total:
            break
        elapsed = pos['train_time'] + time.perf_counter() - tick
        why = clock.over(elapsed) if clock.timed else None
        if why is not None and dist.world == 1:  # spent already: this step would overrun it, and need its own
            pos['total'] = step  # evaluation besides (under torchrun the ranks agree on it in the step below)
            clock.cut_by = why
            break
        x, y = next(batches)
        lr = _lr_at(step, total, pos['warmup'], cfg.lr)
        loss, stop, over = step_fn(x, y, lr, why is not None)
        if not math.isfinite(loss) and cfg.amp != 'fp16':  # the ranks agreed on this mean loss: all stop here
            raise Diverged(
                f'training diverged at step {step + 1} of {total} (epoch {(step + 1) / steps_per_epoch:.2f}): the '
                f'loss became {loss}; try a lower learning rate (this run: {cfg.lr:g}). No checkpoint was written'
            )
        pos['losses'].append(loss)
        pos['step'] = step = step + 1
        pos['batch'] = b + 1
        elapsed = pos['train_time'] + time.perf_counter() - tick
        if clock.timed:
            if not clock.marks:  # this process's first step carries one-time costs (compiling, oneDNN building
                clock.marks.append((step, elapsed))  # bf16 kernels): speeds are timed from the step after it
            elif step == 3 or step % REFIT_EVERY == 0 or b == steps_per_epoch - 1:
                # every rank reaches these steps: they agree on the shortest fit (dist.min_int)
                left = clock.steps_left(step, elapsed, steps_per_epoch, cfg.eval_every_epoch)
                fit = dist.min_int(pos['total'] if left is None else step + left)
                pos['total'] = total = min(planned, max(step + 1, fit))  # never past the plan
                if step < pos['warmup']:  # a warm-up already done stays as it was; one in progress follows the
                    # schedule's length both ways (an early fit on two slow steps shortened it for good)
                    pos['warmup'] = max(step, 1, min(warmup, total // 5))
            if not over and dist.world == 1:
                why = clock.over(elapsed)  # the time ran out during this step: no step after it
            if over or why:
                pos['total'] = total = step
                clock.cut_by = why or clock.cut_by or 'time_budget'
        if progress and (step % report_every == 0 or step == total):
            progress(
                {
                    'kind': 'step',
                    'step': step,
                    'total_steps': total,
                    'epoch': step / steps_per_epoch,
                    'loss': loss,
                    'lr': lr,
                    'elapsed': elapsed,
                    'images': step * cfg.batch_size * dist.world,
                }
            )
        if stop:
            raise Stopped


def evaluate(
    checkpoint: str | Path,
    dataset: str = 'fashion-mnist',
    data_dir: str | Path | None = None,
    batch_size: int = 1000,
    limit: int | None = None,
) -> dict:
    """Re-evaluate a checkpoint on the test set: {'accuracy', 'n', 'correct', 'loss', 'per_class',
    'recorded_accuracy', 'recorded_n' (the test images it was measured on), 'checkpoint', 'name'}. accuracy is a
    fraction in [0, 1]."""
    model, spec, info = load_trained(checkpoint)
    if isinstance(info['preprocessing'], dict):  # timm's data config: trained on an image folder
        raise ValueError(
            f'{checkpoint} was trained on an image folder ({info.get("dataset", "imagefolder")}); evaluate re-tests '
            'Fashion-MNIST checkpoints (an image-folder run reports its validation accuracy as it trains)'
        )
    ds = load_dataset(dataset, 'test', data_dir)
    if limit:
        ds = ds.subset(limit)
    out = accuracy_on(model, ds, info['preprocessing'], batch_size)
    out.update(
        recorded_accuracy=info['metrics'].get('test_accuracy'),
        recorded_n=info['metrics'].get('test_n'),  # a run with --test-limit recorded fewer images than this
        checkpoint=str(checkpoint),
        name=spec.name,
        dataset=dataset,
    )
    return out
