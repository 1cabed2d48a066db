"""Explanation times (issue 15): every attribution method on a 224x224 S12-class preset, the path before the
faster settings and the path after, measured side by side in one run.

Before (`explain(..., fast=False)`, today's settings until this change): captum's Integrated Gradients
(Gauss-Legendre, 32 steps) restarted at each doubling until the completeness gap is under 1% (at most 256),
full-resolution Occlusion (window H/14, stride half of it, captum), fp32, contiguous layout, fp32 faithfulness
curves. After (`fast=True`): IG on nested Clenshaw-Curtis nodes from 16 steps (a doubling reuses every gradient),
Occlusion coarse (2x window, no overlap) then full resolution on the top quarter of coarse cells, channels_last,
bf16 autocast for the faithfulness curves where the CPU has native bf16 (gradients and Occlusion stay fp32).
The map alone is timed per method (before and after back to back, the order alternating), then the whole answer
after (map + deletion/insertion beside 8 random orders), first with the random orders computed, then cached.

The CPU is shared: the load average is printed before and after each measurement; read the ratios.

    python benchmarks/bench_explain.py                     # poolformer_s12, random weights, 2 threads
    python benchmarks/bench_explain.py --methods ig occlusion --rounds 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from _common import conditions

FLAGS = ('avx512f', 'avx512_bf16', 'amx_tile', 'amx_bf16', 'amx_int8', 'avx2', 'fma')


def cpu_flags() -> str:
    try:
        text = open('/proc/cpuinfo').read()
    except OSError:
        return 'n/a'
    line = next((ln for ln in text.splitlines() if ln.startswith('flags')), '')
    have = set(line.split(':', 1)[-1].split())
    return ' '.join(f'{f}:{"yes" if f in have else "no"}' for f in FLAGS)


def load() -> str:
    return '/'.join(f'{v:.1f}' for v in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--model', default='poolformer_s12')
    ap.add_argument('--weights', default='random', help='random (default), pretrained or a checkpoint path')
    ap.add_argument('--image', default='astronaut.jpg', help="a shipped example's name or an image file")
    ap.add_argument('--methods', nargs='+', default=['saliency', 'gradcam', 'gradshap', 'ig', 'occlusion'])
    ap.add_argument('--rounds', type=int, default=1, help='before/after pairs per method (default 1)')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--no-before', action='store_true', help='time the faster path only')
    args = ap.parse_args()

    import torch

    from explorer.core.catalog import load_spec
    from explorer.explain.images import example_path, load_image
    from explorer.explain.session import explain, fast_settings, open_model

    torch.set_num_threads(args.threads)
    m = open_model(load_spec(args.model), args.weights)
    image = load_image(example_path(args.image) or args.image)
    print('# explanation times, before and after the faster settings:', conditions())
    print(f'# CPU flags: {cpu_flags()}; torch threads {torch.get_num_threads()}')
    print(f'# {args.model} ({args.weights} weights), input {tuple(m.cfg["input_size"])}, image {args.image}')
    print(f'# after = {fast_settings(tuple(m.cfg["input_size"]))}; before = fp32, contiguous, captum IG and Occlusion')
    print(f'{"method":<10} {"before s":>9} {"after s":>8} {"ratio":>6}  load (1/5/15 min)  detail')
    results = {}
    for i, method in enumerate(args.methods):
        before, after, detail = [], [], ''
        for r in range(args.rounds):
            order = ['before', 'after'] if (i + r) % 2 == 0 else ['after', 'before']
            for which in order:
                if which == 'before' and args.no_before:
                    continue
                fast = which == 'after'
                t = time.perf_counter()
                e = explain(m, image, method, fast=fast, n_steps=16 if fast else 32, deletion=False)
                (after if fast else before).append(time.perf_counter() - t)
                if method == 'ig':
                    c = e.completeness
                    detail += (
                        f' {which}: {c["steps"]} steps, {c.get("evaluations")} evals, gap {c["relative_gap"]:.2%};'
                    )
                if method == 'occlusion':
                    occ = e.settings.get('occlusion', {})
                    detail += f' {which}: {occ.get("windows", "all")} windows;'
        b = statistics.median(before) if before else float('nan')
        a = statistics.median(after)
        results[method] = a
        print(f'{method:<10} {b:9.1f} {a:8.1f} {b / a:6.2f}  {load():<17} {detail.strip()}')
    print('# the whole answer after (map + deletion/insertion beside 8 random orders):')
    for method in args.methods:
        t = time.perf_counter()
        e = explain(m, image, method, fast=True)
        total = time.perf_counter() - t
        f = e.faithfulness
        print(
            f'{method:<10} {total:8.1f} s (random orders cached after the first), load {load()}; deletion '
            f'{f.deletion.auc:.3f} vs {f.random_deletion[0]:.3f} random, insertion {f.insertion.auc:.3f} vs '
            f'{f.random_insertion[0]:.3f}'
        )
    slowest = max(results.values())
    print(f'# slowest map after: {slowest:.1f} s ({"under" if slowest < 15 else "over"} 15 s at load {load()})')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
