"""Does an attribution map beat chance? Its deletion and insertion curves beside the same curves for random pixel
orders.

Pixels are ordered by the magnitude of their attribution: a pixel matters whichever way it pushes the target
(ordering a signed map by value puts the zero-attributed background between the positive and the negative
pixels, and insertion then does no better than chance). Deletion removes the most important pixels first (a
faithful map makes the target's probability fall fast: low area); insertion starts from the blank image and puts
them back first (a faithful map makes it rise fast: high area). A random order is what a map that knows nothing
achieves; a map beats chance on a curve when its area is better than the random orders' mean by more than their
spread.

The random orders do not depend on the map, so their curves are computed once per (model, image, target,
removal value) and kept (a small cache): a second method on the same image pays for its own two curves only.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from explorer.explain.attribute import DeletionCurve, pixel_curve, removal_ranks


@dataclass
class Faithfulness:
    """Areas under the curves (softmax probability of the target, fraction of pixels in [0, 1])."""

    deletion: DeletionCurve
    insertion: DeletionCurve
    random_deletion: tuple[float, float]  # mean, standard deviation of the area over `n_random` random orders
    random_insertion: tuple[float, float]
    n_random: int
    # the random orders' mean curves (probability at each fraction): drawn beside the map's curves
    random_deletion_curve: list[float] = field(default_factory=list)
    random_insertion_curve: list[float] = field(default_factory=list)
    tied: float = 0.0  # share of the pixels in the map's largest group of equal magnitudes (ranked at random)
    non_finite: int = 0  # pixels of the map that are NaN or infinite (ranked last)

    @property
    def beats_random_deletion(self) -> bool:
        mean, std = self.random_deletion
        return self.deletion.auc < mean - std

    @property
    def beats_random_insertion(self) -> bool:
        mean, std = self.random_insertion
        return self.insertion.auc > mean + std

    def to_dict(self) -> dict:
        return {
            'deletion_auc': self.deletion.auc,
            'insertion_auc': self.insertion.auc,
            'random_deletion_auc': {'mean': self.random_deletion[0], 'std': self.random_deletion[1]},
            'random_insertion_auc': {'mean': self.random_insertion[0], 'std': self.random_insertion[1]},
            'n_random': self.n_random,
            'beats_random': {'deletion': self.beats_random_deletion, 'insertion': self.beats_random_insertion},
            'deletion': self.deletion.to_dict(),
            'insertion': self.insertion.to_dict(),
            'random_deletion_curve': self.random_deletion_curve,
            'random_insertion_curve': self.random_insertion_curve,
            'tied': self.tied,
            'non_finite': self.non_finite,
        }

    def text(self) -> str:
        """Two clauses for people."""

        def clause(name, auc, stats, sign, better):
            # sign: +1 where higher is better. One standard deviation of the random orders either way, as
            # beats_random_*: a map that far on the wrong side ranks pixels worse than a random order does
            mean, std = stats
            if sign * (auc - mean) > std:
                verdict = 'beats chance'
            elif sign * (mean - auc) > std:
                verdict = 'worse than random orders: do not trust this map'
            else:
                verdict = 'no better than chance'
            return f'{name} AUC {auc:.3f} vs {mean:.3f} ± {std:.3f} for random orders ({better}; {verdict})'

        text = (
            clause('deletion', self.deletion.auc, self.random_deletion, -1, 'lower is better')
            + '; '
            + clause('insertion', self.insertion.auc, self.random_insertion, +1, 'higher is better')
        )
        if self.tied >= 0.999:
            text += '; the map gives every pixel the same weight, so it ranks none: its order is a random one'
        elif self.tied >= 0.1:
            text += f'; {100 * self.tied:.0f}% of its pixels share one value and are ranked at random among themselves'
        if self.non_finite:
            text += f'; {self.non_finite} pixels of the map are not finite numbers (ranked last)'
        return text


_RANDOM: OrderedDict = OrderedDict()  # key -> (weakref to the model, result); the last few requests
_RANDOM_LOCK = threading.Lock()
_RANDOM_SIZE = 16


def _key(model, x, target, baseline, kw, n_random, seed) -> tuple:
    digest = hashlib.sha1(x.detach().float().cpu().numpy().tobytes())
    digest.update(torch.as_tensor(baseline, dtype=torch.float32).cpu().numpy().tobytes())
    return (id(model), digest.hexdigest(), int(target), kw['steps'], kw['bf16'], n_random, seed)


def random_orders(model, x, shape, target, *, n_random, seed, kw, tick=None) -> tuple:
    """Deletion and insertion areas (and mean curves) of `n_random` random pixel orders, cached per model and
    input. Returns ((del mean, std), (ins mean, std), del curve, ins curve)."""
    key = _key(model, x, target, kw['baseline'], kw, n_random, seed)
    with _RANDOM_LOCK:
        hit = _RANDOM.get(key)
        if hit is not None and hit[0]() is model:
            _RANDOM.move_to_end(key)
            return hit[1]
    g = torch.Generator().manual_seed(seed)
    dels, ins = [], []
    for _ in range(n_random):
        r = torch.randperm(int(np.prod(shape)), generator=g).view(shape)
        dels.append(pixel_curve(model, x, r, target, tick=tick, **kw))
        ins.append(pixel_curve(model, x, r, target, insertion=True, tick=tick, **kw))
    stats = lambda v: (float(np.mean([c.auc for c in v])), float(np.std([c.auc for c in v])))  # noqa: E731
    curve = lambda v: np.mean([c.probs for c in v], 0).tolist()  # noqa: E731
    result = (stats(dels), stats(ins), curve(dels), curve(ins))
    with _RANDOM_LOCK:
        _RANDOM[key] = (weakref.ref(model), result)
        while len(_RANDOM) > _RANDOM_SIZE:
            _RANDOM.popitem(last=False)
    return result


def faithfulness(
    model: nn.Module,
    x: torch.Tensor,
    amap: np.ndarray,
    target: int,
    *,
    n_random: int = 8,
    steps: int = 20,
    batch_size: int = 8,
    seed: int = 0,
    baseline: float | torch.Tensor = 0.0,
    bf16: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Faithfulness:
    """Deletion and insertion curves of `amap` for `target` on the (1, C, H, W) input `x`, beside `n_random`
    random pixel orders drawn from a generator seeded with `seed` (the same request gives the same answer; the seed
    also orders the map's tied pixels).
    bf16: forward passes under bf16 autocast (probabilities change by about 1e-2 at most; areas by less).
    progress(done, total): rows through the model so far."""
    magnitude = np.abs(np.asarray(amap, dtype=np.float32))  # a pixel matters whichever way it pushes the target
    rank = removal_ranks(magnitude, seed)
    finite = magnitude[np.isfinite(magnitude)]
    counts = np.unique(finite, return_counts=True)[1]
    tied = float(counts.max()) / magnitude.size if counts.size and counts.max() > 1 else 0.0
    kw = dict(steps=steps, batch_size=batch_size, baseline=baseline, bf16=bf16)
    total, done = (2 + 2 * n_random) * (steps + 1), [0]

    def tick(k):
        done[0] += k
        if progress is not None:
            progress(min(done[0], total), total)

    deletion = pixel_curve(model, x, rank, target, tick=tick, **kw)
    insertion = pixel_curve(model, x, rank, target, insertion=True, tick=tick, **kw)
    rd, ri, cd, ci = random_orders(model, x, rank.shape, target, n_random=n_random, seed=seed, kw=kw, tick=tick)
    if progress is not None:
        progress(total, total)
    return Faithfulness(deletion, insertion, rd, ri, n_random, cd, ci, tied, int(magnitude.size - finite.size))
