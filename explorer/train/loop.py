"""Train a composed design on Fashion-MNIST; checkpoints that carry everything needed to use them offline.

The recipe (what worked on 2 CPU cores, see assets/fmnist/RESULTS.md): AdamW (no weight decay on norms,
biases and scales), linear warm-up then cosine decay to zero, label smoothing 0.1, and light augmentation:
random crop from the image padded by 2 pixels, and horizontal flips. Images are centred on a 32x32 canvas
(28 + 2 pixels of background each side) so that strides of 2, 4 and 8 divide the input.

A checkpoint is one `.safetensors` file: the weights (float32) plus string metadata holding the spec JSON,
the preprocessing rule, the class names, the metrics (test accuracy, epochs, wall time, seed, budget, device,
threads) and the per-epoch history. `load_trained(path)` rebuilds the model from that file alone.

Determinism: for a given seed, epoch count, batch size and thread count, two runs on one machine give the same
weights bit for bit (initialisation, data order, augmentation and drop-path all come from the seed). A run
stopped by `time_budget` depends on the machine's speed at the time: how many steps fit is measured, so
its step count (recorded) can differ between runs.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from explorer.core.build import build_model
from explorer.core.spec import ArchSpec
from explorer.measure.guard import check_request
from explorer.train.checkpoints import load_state, load_trained, save_checkpoint, save_state
from explorer.train.data import Dataset, Preprocessing, load_dataset, preprocess
from explorer.train.fit import check_trainable

CALIBRATION_STEPS = 20  # steps timed before a time budget fixes the schedule length


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


# ---- batches -------------------------------------------------------------------------------------------
def augment(x: torch.Tensor, pad: int, hflip: bool, gen: torch.Generator, erase_prob: float = 0.0) -> torch.Tensor:
    """Random crop (zero-padded by `pad`), random horizontal flip and random erasing of a batch (B, C, H, W).

    Run before normalisation, so the padding and the erased rectangles are background (pixel value 0).
    Erasing blanks, with probability `erase_prob` per image, one rectangle of 2% to 25% of the image with an
    aspect ratio between 0.3 and 3.3 (log-uniform), at a uniform position.
    """
    B, C, H, W = x.shape
    if pad > 0:
        xp = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (B,), generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (B,), generator=gen)
        rows = (dy[:, None] + torch.arange(H))[:, None, :, None].expand(B, C, H, W + 2 * pad)
        x = xp.gather(2, rows)
        cols = (dx[:, None] + torch.arange(W))[:, None, None, :].expand(B, C, H, W)
        x = x.gather(3, cols)
    if hflip:
        flip = torch.rand(B, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if erase_prob > 0:
        x = _erase(x, erase_prob, gen)
    return x


def _erase(x: torch.Tensor, prob: float, gen: torch.Generator) -> torch.Tensor:
    B, C, H, W = x.shape
    on = torch.rand(B, generator=gen) < prob
    area = (0.02 + 0.23 * torch.rand(B, generator=gen)) * H * W
    aspect = torch.exp(math.log(0.3) + (math.log(3.3) - math.log(0.3)) * torch.rand(B, generator=gen))
    h = (area * aspect).sqrt().round().clamp(1, H).long()
    w = (area / aspect).sqrt().round().clamp(1, W).long()
    y0 = (torch.rand(B, generator=gen) * (H - h + 1)).long()
    x0 = (torch.rand(B, generator=gen) * (W - w + 1)).long()
    rows, cols = torch.arange(H), torch.arange(W)
    in_rows = (rows >= y0[:, None]) & (rows < (y0 + h)[:, None])  # (B, H)
    in_cols = (cols >= x0[:, None]) & (cols < (x0 + w)[:, None])  # (B, W)
    mask = on[:, None, None] & in_rows[:, :, None] & in_cols[:, None, :]
    return x.masked_fill(mask[:, None], 0.0)


def make_batch(
    images: torch.Tensor, pre: Preprocessing, cfg: TrainConfig | None = None, gen: torch.Generator | None = None
) -> torch.Tensor:
    """uint8 (B, 28, 28) -> model input; augmented when `cfg` and `gen` are given."""
    if cfg is None:
        return preprocess(images, pre)
    raw = Preprocessing(img_size=pre.img_size, resize=pre.resize, mean=0.0, std=1.0, in_chans=1)
    x = augment(preprocess(images, raw), cfg.crop_pad, cfg.hflip, gen, cfg.erase_prob)
    x = (x - pre.mean) / pre.std
    return x.expand(-1, pre.in_chans, -1, -1).contiguous() if pre.in_chans > 1 else x


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
    logits = predict_logits(model, ds.images, pre, batch_size)
    pred = logits.argmax(1)
    correct = pred == ds.labels
    per_class = {
        ds.classes[c]: round(float(correct[ds.labels == c].float().mean()), 4)
        for c in range(len(ds.classes))
        if (ds.labels == c).any()
    }
    return {
        'accuracy': int(correct.sum()) / len(ds),
        'n': len(ds),
        'correct': int(correct.sum()),
        'loss': float(F.cross_entropy(logits, ds.labels)),
        'per_class': per_class,
    }


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
    **recipe,
) -> TrainResult:
    """Train `spec` from scratch on the training set, evaluate on the test set, write a checkpoint to `out`.

    recipe: other TrainConfig fields (lr, weight_decay, warmup_epochs, label_smoothing, crop_pad, hflip,
    erase_prob, threads, eval_batch_size, eval_every_epoch). train_limit / test_limit: use the first N examples only
    (quick runs, tests). progress(event) is called with dicts: {'kind': 'step', 'step', 'total_steps',
    'epoch', 'loss', 'lr', 'elapsed'} every few steps, {'kind': 'epoch', ..., 'train_loss', 'test_accuracy'}
    after each epoch; it may raise `Stopped` to end training early (the checkpoint is still written).
    Returns TrainResult(checkpoint path, metrics, per-epoch history).

    state_file: where to keep a resumable state (after every epoch and when stopped; removed when the run
    completes). resume: continue the run that state_file holds (same spec and recipe); without a time budget
    the result is the same, bit for bit, as a run never interrupted.
    """
    spec = spec if isinstance(spec, ArchSpec) else ArchSpec.from_dict(spec)
    cfg = TrainConfig(epochs=epochs, time_budget=time_budget, batch_size=batch_size, seed=seed, **recipe)
    _check_config(cfg)
    check_trainable(spec)
    check_request(spec, batch_size=batch_size, training=True)  # before building: refuse what would not fit
    pre = Preprocessing.for_spec(spec)
    train_ds = load_dataset(dataset, 'train', data_dir, download)
    test_ds = load_dataset(dataset, 'test', data_dir, download)
    if train_limit:
        train_ds = train_ds.subset(train_limit)
    if test_limit:
        test_ds = test_ds.subset(test_limit)

    state, keep_state = None, None
    if resume:
        if state_file is None:
            raise ValueError('resume: give the state file to continue from')
        state = load_state(state_file)
        theirs = (state.get('spec'), {k: v for k, v in state.get('recipe', {}).items() if k != 'threads'})
        ours = (spec.to_dict(), {k: v for k, v in asdict(cfg).items() if k != 'threads'})
        if theirs != ours:
            raise ValueError(f'resume: {state_file} was written for another spec or recipe; start a new run instead')
    if state_file is not None:
        tagged = {'spec': spec.to_dict(), 'recipe': asdict(cfg)}

        def keep_state(s: dict) -> None:
            save_state(state_file, {**tagged, **s})

    prev_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # drop-path and dropout draw from the global generator
            model, history, metrics = _run(spec, cfg, pre, train_ds, test_ds, progress, state, keep_state)
    finally:
        torch.set_num_threads(prev_threads)
    metrics.update(dataset=dataset, train_examples=len(train_ds))
    path = None
    if out is not None:
        path = save_checkpoint(out, model, spec, pre, metrics, history, cfg)
    if state_file is not None and metrics['stopped_by'] != 'user':
        Path(state_file).unlink(missing_ok=True)  # finished: nothing left to resume
    return TrainResult(path, metrics, history, model)


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
    if not integer(cfg.eval_batch_size) or cfg.eval_batch_size < 1:
        raise ValueError(f'eval_batch_size {cfg.eval_batch_size!r} must be a positive integer')


def _run(spec, cfg: TrainConfig, pre, train_ds, test_ds, progress, state=None, save_state=None):
    """The training loop. `state` (from a `save_state` call of an earlier run of the same spec and recipe)
    continues that run where it stopped; `save_state(state)` is called at the end of every epoch and when the
    run is stopped, with everything needed to continue it (weights, optimiser, both random generators and the
    position in the epoch), so a resumed run ends with the same weights as one never interrupted."""
    model = build_model(spec, seed=cfg.seed)
    model.train()
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))
    n = len(train_ds)
    steps_per_epoch = max(1, n // cfg.batch_size)  # drop the last partial batch: every step the same size
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
        torch.set_rng_state(state['global_rng'])
        pos.update(state['position'])

    def snapshot() -> dict:
        return {
            'model': model.state_dict(),
            'optimizer': opt.state_dict(),
            'generator': gen.get_state(),
            'global_rng': torch.get_rng_state(),
            'position': dict(pos),
        }

    t0, stopped_by = time.perf_counter(), 'epochs'
    try:
        while pos['step'] < pos['total']:
            if pos['perm'] is None:
                pos.update(perm=torch.randperm(n, generator=gen), batch=0, losses=[])
            tick = time.perf_counter()
            _train_epoch(model, opt, gen, pos, cfg, pre, train_ds, steps_per_epoch, planned, tick, progress)
            pos['train_time'] += time.perf_counter() - tick
            row = {
                'epoch': round(pos['step'] / steps_per_epoch, 3),
                'step': pos['step'],
                'train_loss': sum(pos['losses']) / max(1, len(pos['losses'])),
                'train_time': round(pos['train_time'], 2),
            }
            pos['perm'] = None  # the epoch is done: the next one draws its order
            if cfg.eval_every_epoch or pos['step'] >= pos['total']:
                ev = accuracy_on(model, test_ds, pre, cfg.eval_batch_size)
                row.update(test_accuracy=ev['accuracy'], test_loss=ev['loss'])
            pos['history'] = [*pos['history'], row]
            if save_state:
                save_state(snapshot())
            if progress:
                progress({'kind': 'epoch', 'total_steps': pos['total'], **row})
    except Stopped:
        stopped_by = 'user'
        if save_state:
            save_state(snapshot())  # mid-epoch: the position says which batch comes next
    step, total, history, train_time = pos['step'], pos['total'], pos['history'], pos['train_time']
    if stopped_by == 'epochs' and total < planned:  # the budget shortened or cut the schedule: it ended training
        stopped_by = 'time_budget'
    model.eval()
    final = accuracy_on(model, test_ds, pre, cfg.eval_batch_size)
    if history:
        history[-1].update(test_accuracy=final['accuracy'], test_loss=final['loss'])
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
        'device': 'cpu',
        'threads': torch.get_num_threads(),
        'torch': torch.__version__,
        'machine': platform.machine(),
        'recipe': asdict(cfg),
        'params': sum(p.numel() for p in model.parameters()),
        'trainable_params': sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    return model, history, metrics


def _train_epoch(
    model, opt, gen, pos: dict, cfg, pre, train_ds, steps_per_epoch: int, planned: int, tick: float, progress
) -> None:
    """The steps of one epoch from pos['batch'] on (or up to pos['total']), updating `pos` after each step; a
    time budget refits the schedule as it goes. `tick`: when this epoch's timing started."""
    report_every = max(1, steps_per_epoch // 20)
    for b in range(pos['batch'], steps_per_epoch):
        step, total = pos['step'], pos['total']
        if step >= total:
            break
        idx = pos['perm'][b * cfg.batch_size : (b + 1) * cfg.batch_size]
        x = make_batch(train_ds.images[idx], pre, cfg, gen)
        lr = _lr_at(step, total, pos['warmup'], cfg.lr)
        for g in opt.param_groups:
            g['lr'] = lr
        loss = F.cross_entropy(model(x), train_ds.labels[idx], label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        pos['losses'].append(loss.item())
        pos['step'] = step = step + 1
        pos['batch'] = b + 1
        elapsed = pos['train_time'] + time.perf_counter() - tick
        if cfg.time_budget is not None:
            if step == CALIBRATION_STEPS or (b == steps_per_epoch - 1 and step > CALIBRATION_STEPS):
                # fit the cosine schedule to the steps the rest of the budget allows at the speed so far
                fit = step + int((cfg.time_budget - elapsed) / (elapsed / step))
                pos['total'] = total = min(planned, max(step + 1, fit))  # never past the plan
                pos['warmup'] = max(1, min(pos['warmup'], total // 5))
            if elapsed >= cfg.time_budget:
                pos['total'] = total = step
        if progress and (step % report_every == 0 or step == total):
            progress(
                {
                    'kind': 'step',
                    'step': step,
                    'total_steps': total,
                    'epoch': step / steps_per_epoch,
                    'loss': pos['losses'][-1],
                    'lr': lr,
                    'elapsed': elapsed,
                }
            )


def evaluate(
    checkpoint: str | Path,
    dataset: str = 'fashion-mnist',
    data_dir: str | Path | None = None,
    batch_size: int = 1000,
    limit: int | None = None,
) -> dict:
    """Re-evaluate a checkpoint on the test set: {'accuracy', 'n', 'correct', 'loss', 'per_class',
    'recorded_accuracy', 'checkpoint', 'name'}. accuracy is a fraction in [0, 1]."""
    model, spec, info = load_trained(checkpoint)
    ds = load_dataset(dataset, 'test', data_dir)
    if limit:
        ds = ds.subset(limit)
    out = accuracy_on(model, ds, info['preprocessing'], batch_size)
    out.update(
        recorded_accuracy=info['metrics'].get('test_accuracy'),
        checkpoint=str(checkpoint),
        name=spec.name,
        dataset=dataset,
    )
    return out
