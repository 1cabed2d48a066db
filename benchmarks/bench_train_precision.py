"""Training throughput by precision: fp32 against bf16 autocast (the training loop's own settings) on the shipped
Fashion-MNIST specs, CPU, measured side by side in one run.

Each variant is one optimisation step (forward, cross-entropy, backward, AdamW) of a fresh model built from the
same seed on a fixed random batch of 32x32 grey images, as `explorer train` runs it; the variants take turns
(round-robin, order rotated) so a slow spell on a shared machine hits them alike. Prints images/s per variant
and the ratio to fp32 with a bootstrap interval. Issue 15's target: bf16 >= 1.8x fp32 where the CPU has native
bf16. `bf16 fused SDPA` shows what the loop's `unfuse_attention` avoids; `bf16, norms + depthwise in fp32` runs
the two kinds of kernel whose bf16 backward is slower than fp32 on a CPU (LayerNorm, depthwise convolution) in
fp32 inside the autocast region, to show how much of the gap they explain. `--kernels` also times those two
backward passes alone, by dtype and memory layout.

    python benchmarks/bench_train_precision.py [--specs fmnist_hybrid fmnist_hybrid_large] [--batch 256] [--kernels]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import conditions, ratio

ROOT = Path(__file__).resolve().parent.parent


def keep_in_fp32(model) -> None:
    """Run LayerNorm / GroupNorm and depthwise convolutions in fp32 inside an autocast region (input cast up,
    output cast back): an experiment, not what the training loop does."""
    import types

    import torch

    for m in model.modules():
        norm = isinstance(m, (torch.nn.LayerNorm, torch.nn.GroupNorm))
        depthwise = isinstance(m, torch.nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels
        if norm or depthwise:

            def forward(self, x, f=type(m).forward):
                with torch.autocast('cpu', enabled=False):
                    return f(self, x.float()).to(x.dtype)

            m.forward = types.MethodType(forward, m)


def kernel_times(batch: int) -> None:
    """Forward and backward of a 7x7 depthwise conv and a LayerNorm, fp32 vs bf16, NCHW vs channels-last."""
    import torch

    def timed(fn, n=10):
        ts = []
        for _ in range(n + 3):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return sorted(ts[3:])[n // 2]

    print(f'## kernels alone, batch {batch}: forward + backward, ms (median of 10)')
    for c, hw in ((48, 16), (96, 8)):
        for dtype in (torch.float32, torch.bfloat16):
            for cl in (False, True):
                fmt = torch.channels_last if cl else torch.contiguous_format
                conv = torch.nn.Conv2d(c, c, 7, padding=3, groups=c, bias=False).to(dtype).to(memory_format=fmt)
                x = torch.randn(batch, c, hw, hw, dtype=dtype).contiguous(memory_format=fmt).requires_grad_(True)
                g = torch.randn(batch, c, hw, hw, dtype=dtype).contiguous(memory_format=fmt)
                t = timed(lambda conv=conv, x=x, g=g: conv(x).backward(g))
                layout = 'channels_last' if cl else 'NCHW'
                print(f'depthwise 7x7, {c} ch, {hw}x{hw}, {str(dtype)[6:]:8s} {layout:13s} {1e3 * t:7.2f}')
        for dtype in (torch.float32, torch.bfloat16):
            ln = torch.nn.LayerNorm(c, bias=False).to(dtype)
            x = torch.randn(batch, hw * hw, c, dtype=dtype, requires_grad=True)
            g = torch.randn(batch, hw * hw, c, dtype=dtype)
            t = timed(lambda ln=ln, x=x, g=g: ln(x).backward(g))
            print(f'LayerNorm over {c} ch, {hw * hw} tokens, {str(dtype)[6:]:8s}              {1e3 * t:7.2f}')


def make_step(spec, bf16: bool, unfuse: bool, channels_last: bool, batch: int, fp32_kernels: bool = False):
    import torch
    import torch.nn.functional as F

    from explorer.core.build import build_model
    from explorer.train.loop import unfuse_attention

    model = build_model(spec, seed=0).train()
    if unfuse:
        unfuse_attention(model)
    if fp32_kernels:
        keep_in_fp32(model)
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
    ap.add_argument('--kernels', action='store_true', help='also time the depthwise conv and LayerNorm alone')
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
            'bf16, norms + depthwise in fp32': make_step(spec, True, True, False, args.batch, fp32_kernels=True),
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
    if args.kernels:
        kernel_times(args.batch)
    print('# after:', conditions())
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
