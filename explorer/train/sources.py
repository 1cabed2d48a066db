"""Where a training run's batches come from, for one process or many.

Both sources split every global batch (batch_size x world) between the ranks the way `DistributedSampler`
does (rank r takes every world-th example), so the union of the ranks' batches at a step is exactly the batch a
single process with the same global batch would see, and gradients averaged by DDP equal its gradients.

- `MemorySource`: Fashion-MNIST held in memory. The epoch's order comes from the run's generator; each global
  batch is augmented whole on every rank (the same draws everywhere: 28x28 images cost nothing to augment) and
  each rank keeps its share, so augmentation is the same as in a single process too.
- `FolderSource`: an ImageFolder tree in `DistributedSampler`'s order (seed + epoch) through a DataLoader with
  worker processes and timm's transforms (their random draws are the workers' own).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from explorer.train.data import Preprocessing, preprocess
from explorer.train.distributed import Dist


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


def make_batch(images: torch.Tensor, pre: Preprocessing, cfg=None, gen: torch.Generator | None = None) -> torch.Tensor:
    """uint8 (B, 28, 28) -> model input; augmented when `cfg` (a TrainConfig) and `gen` are given."""
    if cfg is None:
        return preprocess(images, pre)
    raw = Preprocessing(img_size=pre.img_size, resize=pre.resize, mean=0.0, std=1.0, in_chans=1)
    x = augment(preprocess(images, raw), cfg.crop_pad, cfg.hflip, gen, cfg.erase_prob)
    x = (x - pre.mean) / pre.std
    return x.expand(-1, pre.in_chans, -1, -1).contiguous() if pre.in_chans > 1 else x


def eval_counts(model, batches, num_classes: int, device: torch.device, amp: str | None = None) -> torch.Tensor:
    """Sums over (x, y) batches: [correct per class (C), examples per class (C), summed cross-entropy], float64."""
    counts = torch.zeros(2 * num_classes + 1, dtype=torch.float64)
    with torch.no_grad(), autocast(device, amp):
        for x, y in batches:
            logits = model(x.to(device, non_blocking=True)).float().cpu()
            right = logits.argmax(1) == y
            counts[:num_classes] += torch.bincount(y[right], minlength=num_classes).double()
            counts[num_classes:-1] += torch.bincount(y, minlength=num_classes).double()
            counts[-1] += float(F.cross_entropy(logits, y, reduction='sum'))
    return counts


def counts_to_metrics(counts: torch.Tensor, classes) -> dict:
    """{'accuracy', 'n', 'correct', 'loss', 'per_class'} from eval_counts' sums (all ranks added)."""
    c = len(classes)
    correct, seen = counts[:c], counts[c:-1]
    n = int(seen.sum())
    return {
        'accuracy': float(correct.sum()) / max(1, n),
        'n': n,
        'correct': int(correct.sum()),
        'loss': float(counts[-1]) / max(1, n),
        'per_class': {classes[i]: round(float(correct[i] / seen[i]), 4) for i in range(c) if seen[i] > 0},
    }


def autocast(device: torch.device, amp: str | None):
    """Mixed precision for forward passes: amp None (fp32), 'bf16' or 'fp16'."""
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(amp or '')
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


class MemorySource:
    def __init__(self, train_ds, test_ds, pre, cfg, dist: Dist):
        self.train_ds, self.test_ds, self.pre, self.cfg, self.dist = train_ds, test_ds, pre, cfg, dist
        self.classes = list(train_ds.classes)
        self.n, self.test_n = len(train_ds), len(test_ds)
        self.steps_per_epoch = max(1, self.n // (cfg.batch_size * dist.world))  # drop the last partial batch

    def order(self, gen: torch.Generator, epoch: int) -> torch.Tensor:
        return torch.randperm(self.n, generator=gen)

    def batches(self, order: torch.Tensor, start: int, gen: torch.Generator) -> Iterator[tuple]:
        """This rank's (x, y) from batch `start` of the epoch on, made as they are asked for (so the generator
        is drawn for exactly the batches trained)."""
        size, r, w = self.cfg.batch_size * self.dist.world, self.dist.rank, self.dist.world
        for b in range(start, self.steps_per_epoch):
            idx = order[b * size : (b + 1) * size]
            x = make_batch(self.train_ds.images[idx], self.pre, self.cfg, gen)
            y = self.train_ds.labels[idx]
            yield (x[r::w], y[r::w]) if w > 1 else (x, y)

    def evaluate(self, model, device: torch.device, amp: str | None = None) -> dict:
        ds, r, w, bs = self.test_ds, self.dist.rank, self.dist.world, self.cfg.eval_batch_size
        mine = torch.arange(r, len(ds), w)
        chunks = (mine[j : j + bs] for j in range(0, len(mine), bs))
        batches = ((make_batch(ds.images[i], self.pre), ds.labels[i]) for i in chunks)
        counts = eval_counts(model, batches, len(self.classes), device, amp)
        return counts_to_metrics(self.dist.sum(counts), self.classes)


class FolderSource:
    def __init__(self, data, cfg, dist: Dist, workers: int):
        self.data, self.cfg, self.dist, self.workers = data, cfg, dist, workers
        self.classes = list(data.classes)
        self.n, self.test_n = len(data.train), len(data.val)
        self.steps_per_epoch = max(1, self.n // (cfg.batch_size * dist.world))
        if self.n < cfg.batch_size * dist.world:
            raise ValueError(
                f'train/ holds {self.n} images, fewer than one global batch ({cfg.batch_size} x {dist.world} '
                f'processes); lower --batch-size'
            )

    def order(self, gen: torch.Generator, epoch: int) -> torch.Tensor:
        """The epoch's order: DistributedSampler's permutation (seed + epoch), the same for any process count, so
        a run can resume with another number of processes and the same global batch."""
        from torch.utils.data import DistributedSampler

        s = DistributedSampler(self.data.train, num_replicas=1, rank=0, shuffle=True, seed=self.cfg.seed)
        s.set_epoch(epoch)
        return torch.tensor(list(s), dtype=torch.long)

    def batches(self, order: torch.Tensor, start: int, gen: torch.Generator) -> Iterator[tuple]:
        """This rank's share of each global batch from `start` on (every world-th example, as DistributedSampler
        deals them), loaded by worker processes."""
        from explorer.train.folder import folder_loader

        size, r, w = self.cfg.batch_size * self.dist.world, self.dist.rank, self.dist.world
        lists = [order[b * size : (b + 1) * size][r::w].tolist() for b in range(start, self.steps_per_epoch)]
        return iter(folder_loader(self.data.train, lists, self.workers, self.dist.device))

    def evaluate(self, model, device: torch.device, amp: str | None = None) -> dict:
        from explorer.train.folder import folder_loader

        r, w, bs = self.dist.rank, self.dist.world, self.cfg.eval_batch_size
        mine = list(range(r, len(self.data.val), w))
        lists = [mine[j : j + bs] for j in range(0, len(mine), bs)]
        loader = folder_loader(self.data.val, lists, self.workers, device)
        counts = eval_counts(model, loader, len(self.classes), device, amp)
        return counts_to_metrics(self.dist.sum(counts), self.classes)
