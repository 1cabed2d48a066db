"""Training throughput by precision: fp32 against bf16 autocast (the training loop's own settings) on the shipped
Fashion-MNIST specs, CPU, measured side by side in one run.

Each variant is one optimisation step (forward, cross-entropy, backward, AdamW) of a fresh model built from the
same seed on a fixed random batch of 32x32 grey images, as `explorer train` runs it; the variants take turns
(round-robin, order rotated) so a slow spell on a shared machine hits them alike. Prints images/s per variant
and the ratio to fp32 with a bootstrap interval. Issue 15's target: bf16 >= 1.8x fp32 where the CPU has native
bf16. The loop's bf16 (`prepare_bf16_cpu`) is shown beside plain autocast and the loop as it was (attention
unfused only), so what each change buys is read in one run. `--kernels` also times a depthwise convolution's
forward + backward alone, bf16 against fp32, by kernel size (the rule for which ones the loop keeps in fp32).

    python benchmarks/bench_train_precision.py [--specs fmnist_hybrid ...] [--batch 128] [--rounds 12] [--kernels]
        [--compile]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import conditions, ratio

ROOT = Path(__file__).resolve().parent.parent
TARGET = 1.8  # issue 15: bf16 training images/s over fp32's


def kernel_times(batch: int) -> None:
    """Forward and backward of a depthwise conv (3x3 and 7x7) in the memory layout SepConv passes it
    (channels-last strides), under bf16 autocast against fp32 inside the autocast region, and a LayerNorm."""
    import torch

    def timed(fn, n=10):
        ts = []
        for _ in range(n + 3):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return sorted(ts[3:])[n // 2]

    print(f'## kernels alone, batch {batch}: forward + backward, ms (median of 10)')
    for k in (3, 5, 7):
        for c, hw in ((32, 16), (64, 16), (128, 8), (256, 8)):
            conv = torch.nn.Conv2d(c, c, k, padding=k // 2, groups=c, bias=False)
            x = torch.randn(batch, hw, hw, c, dtype=torch.bfloat16).permute(0, 3, 1, 2).requires_grad_(True)
            g = torch.randn(batch, hw, hw, c, dtype=torch.bfloat16).permute(0, 3, 1, 2)

            def bf16(conv=conv, x=x, g=g):
                with torch.autocast('cpu', dtype=torch.bfloat16):
                    y = conv(x)
                y.backward(g)

            def fp32(conv=conv, x=x, g=g):
                with torch.autocast('cpu', enabled=False):
                    y = conv(x.float()).to(x.dtype)
                y.backward(g)

            b, f = timed(bf16), timed(fp32)
            ms = f'bf16 {1e3 * b:7.2f}  fp32 {1e3 * f:7.2f}  bf16/fp32 {b / f:.2f}'
            print(f'depthwise {k}x{k}, {c:3d} ch, {hw}x{hw}: {ms}')
    for c, hw in ((48, 16), (96, 8)):
        for dtype in (torch.float32, torch.bfloat16):
            ln = torch.nn.LayerNorm(c, bias=False).to(dtype)
            x = torch.randn(batch, hw * hw, c, dtype=dtype, requires_grad=True)
            g = torch.randn(batch, hw * hw, c, dtype=dtype)
            t = timed(lambda ln=ln, x=x, g=g: ln(x).backward(g))
            print(f'LayerNorm over {c} ch, {hw * hw} tokens, {str(dtype)[6:]:8s} {1e3 * t:7.2f}')


def make_step(spec, bf16: bool, prepare: str, channels_last: bool, batch: int, compiled: bool = False):
    """compiled: the model through torch.compile, as the loop runs it with `compile`. prepare: 'loop'
    (`prepare_bf16_cpu`, what the training loop does for bf16 on a CPU), 'unfuse' (attention unfused only: the
    loop before it kept scales, StarReLU and large depthwise convs from bf16) or 'none'."""
    import torch
    import torch.nn.functional as F

    from explorer.core.build import build_model
    from explorer.measure.speed import compile_model
    from explorer.train.loop import prepare_bf16_cpu, unfuse_attention

    model = build_model(spec, seed=0).train()
    if prepare == 'loop':
        prepare_bf16_cpu(model)
    elif prepare == 'unfuse':
        unfuse_attention(model)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, spec.in_chans, spec.img_size, spec.img_size, generator=gen)
    y = torch.randint(0, spec.num_classes, (batch,), generator=gen)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    net = compile_model(model) if compiled else model  # a code object of its own: see compile_model

    def step():
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--specs', nargs='+', default=['fmnist_hybrid', 'fmnist_hybrid_large', 'fmnist_hybrid_wide'])
    ap.add_argument('--batch', type=int, default=128)
    ap.add_argument('--rounds', type=int, default=12)
    ap.add_argument('--kernels', action='store_true', help='also time the depthwise conv and LayerNorm alone')
    ap.add_argument('--compile', action='store_true', help='also the loop with torch.compile, bf16 and fp32')
    args = ap.parse_args()

    from explorer.core.spec import ArchSpec

    print('# training step throughput by precision:', conditions())
    verdicts = []
    for name in args.specs:
        spec = ArchSpec.from_dict(json.loads((ROOT / 'assets' / 'fmnist' / 'specs' / f'{name}.json').read_text()))
        variants = {
            'fp32': make_step(spec, False, 'none', False, args.batch),
            'bf16 autocast (as the loop runs it)': make_step(spec, True, 'loop', False, args.batch),
            'bf16, loop + channels_last': make_step(spec, True, 'loop', True, args.batch),
            'bf16, attention unfused only (before)': make_step(spec, True, 'unfuse', False, args.batch),
            'bf16 autocast alone': make_step(spec, True, 'none', False, args.batch),
        }
        if args.compile:
            variants['bf16, loop + torch.compile'] = make_step(spec, True, 'loop', False, args.batch, compiled=True)
            variants['fp32 + torch.compile'] = make_step(spec, False, 'none', False, args.batch, compiled=True)
        for k, step in variants.items():  # warm-up: allocation, oneDNN kernel choice, compiling
            t0 = time.perf_counter()
            step()
            if 'compile' in k:
                print(f'{name}: {k}: first step (compiling) {time.perf_counter() - t0:.1f} s', flush=True)
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
            if k.startswith('bf16 autocast (as the loop'):
                verdicts.append(f'{name} {r:.2f}x {"PASS" if r >= TARGET else "FAIL"}')
    if args.kernels:
        kernel_times(args.batch)
    print(f"# target: the loop's bf16 >= {TARGET}x fp32 (issue 15): " + ', '.join(verdicts))
    print('# after:', conditions())
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
