"""Does an attribution map beat chance? Its deletion and insertion curves beside the same curves for random pixel
orders.

Pixels are ordered by the magnitude of their attribution: a pixel matters whichever way it pushes the target
(ordering a signed map by value puts the zero-attributed background between the positive and the negative
pixels, and insertion then does no better than chance). Deletion removes the most important pixels first (a
faithful map makes the target's probability fall fast: low area); insertion starts from the blank image and puts
them back first (a faithful map makes it rise fast: high area). A random order is what a map that knows nothing
achieves; a map beats chance on a curve when its area is better than the random orders' mean by more than their
spread.
"""

from __future__ import annotations

from dataclasses import dataclass

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
        }

    def text(self) -> str:
        """Two clauses for people."""

        def clause(name, auc, stats, beats, better):
            mean, std = stats
            verdict = 'beats chance' if beats else 'no better than chance'
            return f'{name} AUC {auc:.3f} vs {mean:.3f} ± {std:.3f} for random orders ({better}; {verdict})'

        return (
            clause('deletion', self.deletion.auc, self.random_deletion, self.beats_random_deletion, 'lower is better')
            + '; '
            + clause(
                'insertion', self.insertion.auc, self.random_insertion, self.beats_random_insertion, 'higher is better'
            )
        )


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
) -> Faithfulness:
    """Deletion and insertion curves of `amap` for `target` on the (1, C, H, W) input `x`, beside `n_random`
    random pixel orders drawn from a generator seeded with `seed` (the same request gives the same answer)."""
    rank = removal_ranks(np.abs(np.asarray(amap)))  # a pixel matters whichever way it pushes the target
    kw = dict(steps=steps, batch_size=batch_size, baseline=baseline)
    deletion = pixel_curve(model, x, rank, target, **kw)
    insertion = pixel_curve(model, x, rank, target, insertion=True, **kw)
    g = torch.Generator().manual_seed(seed)
    rand_del, rand_ins = [], []
    for _ in range(n_random):
        r = torch.randperm(rank.numel(), generator=g).view(rank.shape)
        rand_del.append(pixel_curve(model, x, r, target, **kw).auc)
        rand_ins.append(pixel_curve(model, x, r, target, insertion=True, **kw).auc)
    stats = lambda v: (float(np.mean(v)), float(np.std(v)))  # noqa: E731
    return Faithfulness(deletion, insertion, stats(rand_del), stats(rand_ins), n_random)
