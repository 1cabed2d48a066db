"""Training throughput by precision: fp32 against bf16 autocast (the training loop's own settings) on the shipped
Fashion-MNIST specs, CPU, measured side by side in one run.

Each variant is one optimisation step (forward, cross-entropy, backward, AdamW) of a fresh model built from the
same seed on a fixed random batch of 32x32 grey images, as `explorer train` runs it; the variants take turns
(round-robin, order rotated) so a slow spell on a shared machine hits them alike. Prints images/s per variant
and the ratio to fp32 with a bootstrap interval. Issue 15's target: bf16 >= 1.8x fp32 where the CPU has native
bf16. `bf16 fused SDPA` shows what the loop's `unfuse_attention` avoids.

    python benchmarks/bench_train_precision.py [--specs fmnist_hybrid fmnist_hybrid_large] [--batch 256]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import conditions, ratio

ROOT = Path(__file__).resolve().parent.parent


def make_step(spec, bf16: bool, unfuse: bool, channels_last: bool, batch: int):
    import torch
    import torch.nn.functional as F

    from explorer.core.build import build_model
    from explorer.train.loop import unfuse_attention

    model = build_model(spec, seed=0).train()
    if unfuse:
        unfuse_attention(model)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, spec.in_chans, spec.img_size, spec.img_size, generator=gen)
    y = torch.randint(0, spec.num_classes, (batch,), generator=gen)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--specs', nargs='+', default=['fmnist_hybrid', 'fmnist_hybrid_large'])
    ap.add_argument('--batch', type=int, default=256)
    ap.add_argument('--rounds', type=int, default=12)
    args = ap.parse_args()

    from explorer.core.spec import ArchSpec

    print('# training step throughput by precision:', conditions())
    for name in args.specs:
        spec = ArchSpec.from_dict(json.loads((ROOT / 'assets' / 'fmnist' / 'specs' / f'{name}.json').read_text()))
        variants = {
            'fp32': make_step(spec, False, False, False, args.batch),
            'bf16 autocast (as the loop runs it)': make_step(spec, True, True, False, args.batch),
            'bf16 autocast, fused SDPA': make_step(spec, True, False, False, args.batch),
            'bf16 autocast + channels_last': make_step(spec, True, True, True, args.batch),
        }
        for step in variants.values():  # warm-up: allocation, oneDNN kernel choice
            step()
            step()
        lat = {k: [] for k in variants}
        names = list(variants)
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for k in order:
                t0 = time.perf_counter()
                variants[k]()
                lat[k].append(time.perf_counter() - t0)
        print(f'## {name}, batch {args.batch}, {args.rounds} rounds')
        for k, xs in lat.items():
            r, lo, hi = ratio(xs, lat['fp32'])
            med = sorted(xs)[len(xs) // 2]
            print(f'{k:40s} {args.batch / med:8.0f} img/s   x{r:.2f} [{lo:.2f}, {hi:.2f}] vs fp32')
    print('# after:', conditions())
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
